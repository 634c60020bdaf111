"""What the lane is doing, for people: the kiosk screen and the staff status page read it.

The scan loop writes (state changes, finished passages, faults); the kiosk and web threads read
consistent snapshots under one lock. Only what staff need is kept: time, verdict, reasons,
temperature, credential type and colour; never a payload, a name or an ID. Counters are per
local day (the checkpoint's shift), reset at midnight.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

COUNTERS = ("passed", "denied", "red_codes", "fevers", "reviews", "overrides")
PENDING_MAX = 10
FPS_STALE_S = 2.0  # camera_fps is 0 when no frame came for this long (the capture's stall time)


@dataclass
class _Day:
    date: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))


class LaneMonitor:
    """`pending_window_s`: a REVIEW stays on the pending list (and can be overridden) this long
    after it was decided; by then the person has gone and a late click must not pass anybody."""

    def __init__(self, checkpoint_id: str = "", kind: str = "", recent: int = 50,
                 local_now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
                 monotonic: Callable[[], float] = time.monotonic, pending_window_s: float = 60.0) -> None:
        self.checkpoint_id = checkpoint_id
        self.kind = kind
        self._lock = threading.Lock()
        self._local_now = local_now
        self._mono = monotonic
        self.pending_window_s = pending_window_s
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._pending: deque[dict[str, Any]] = deque(maxlen=PENDING_MAX)
        self._day = _Day(local_now().date().isoformat())
        self._state = "READY"
        self._state_since = monotonic()
        self._faults: list[str] = []
        self._prompts: tuple[str, ...] = ()
        self._last: dict[str, Any] | None = None
        self._frame_times: deque[float] = deque(maxlen=30)
        self._preview: tuple[Any, tuple[Any, ...]] = (None, ())
        self._hint: str | None = None
        self.health: dict[str, Any] = {}

    # -- writers (scan loop) -------------------------------------------------------------
    def _roll_day(self) -> None:
        today = self._local_now().date().isoformat()
        if today != self._day.date:
            self._day = _Day(today)

    def set_state(self, state: str, prompts: tuple[str, ...] = ()) -> None:
        with self._lock:
            if state != self._state:
                self._state_since = self._mono()
            self._state = state
            self._prompts = prompts

    def set_faults(self, faults: list[str]) -> None:
        with self._lock:
            self._faults = list(faults)

    def frame(self, image: Any, outlines: tuple[Any, ...] = (), hint: str | None = None) -> None:
        with self._lock:
            self._frame_times.append(self._mono())
            self._preview = (image, tuple(outlines))
            self._hint = hint

    def on_passage(self, row: dict[str, Any]) -> None:
        reasons: list[str] = list(row.get("reasons") or ())
        item: dict[str, Any] = {
            "seq": row.get("seq"), "record_id": row.get("record_id"), "ts_utc": row.get("ts_utc"),
            "verdict": row.get("verdict"), "reasons": reasons,
            "temperature_c": row.get("temperature_c"), "credential_type": row.get("credential_type"),
            "colour": row.get("colour"), "override_by": row.get("override_by"),
            "override_of": row.get("override_of"),
            # when it was decided (the lane's monotonic clock, as the record's mono_s), not when
            # it reached us: a commit that stalled must not make a REVIEW look younger
            "decided_mono": row["mono_s"] if isinstance(row.get("mono_s"), int | float) else self._mono(),
        }
        with self._lock:
            self._roll_day()
            c = self._day.counts
            if item["override_by"]:
                c["overrides"] += 1
                self._pending = deque((p for p in self._pending if p["record_id"] != item["override_of"]),
                                      maxlen=PENDING_MAX)
            verdict = item["verdict"]
            c["passed"] += verdict == "PASS"
            c["denied"] += verdict == "DENY"
            c["reviews"] += verdict == "REVIEW"
            c["red_codes"] += "HEALTH_RED" in reasons
            c["fevers"] += "FEVER" in reasons
            if verdict == "REVIEW" and not item["override_by"]:
                self._pending.append(item)
            self._recent.appendleft(item)
            self._last = item

    # -- readers -------------------------------------------------------------------------
    def _expire_pending(self) -> None:
        now = self._mono()
        if any(not now - p["decided_mono"] <= self.pending_window_s for p in self._pending):
            self._pending = deque((p for p in self._pending if now - p["decided_mono"] <= self.pending_window_s),
                                  maxlen=PENDING_MAX)

    def pending(self, record_id: str) -> dict[str, Any] | None:
        """The pending REVIEW with this record id, while its override window lasts; else None."""
        with self._lock:
            self._expire_pending()
            return next((dict(p) for p in self._pending if p["record_id"] == record_id), None)

    def camera_fps(self) -> float:
        """Frames per second over the last 30 frames seen; 0 once the newest is older than
        FPS_STALE_S (a camera that stopped does not keep showing its last rate)."""
        with self._lock:
            t = list(self._frame_times)
        if len(t) < 2 or t[-1] == t[0] or self._mono() - t[-1] > FPS_STALE_S:
            return 0.0
        return round((len(t) - 1) / (t[-1] - t[0]), 1)

    def preview(self) -> tuple[Any, tuple[Any, ...], str | None]:
        with self._lock:
            return self._preview[0], self._preview[1], self._hint

    def snapshot(self) -> dict[str, Any]:
        fps = self.camera_fps()
        with self._lock:
            self._roll_day()
            self._expire_pending()
            return {
                "checkpoint_id": self.checkpoint_id, "kind": self.kind,
                "state": self._state, "state_for_s": round(self._mono() - self._state_since, 1),
                "prompts": list(self._prompts), "faults": list(self._faults),
                "last": dict(self._last) if self._last else None,
                "recent": [dict(r) for r in self._recent],
                "pending_reviews": [dict(p) for p in reversed(self._pending)],
                "day": self._day.date, "counts": dict(self._day.counts),
                "health": {"camera_fps": fps, "hint": self._hint, **self.health},
            }
