"""Run-time health of the outbox, shared inside the daemon process by the writer (scanner/store.py),
the pull API's /healthz and /metrics, the staff page and the maintenance thread.

The state is kept in memory, one object per outbox path (`health_of(path)`): a full or read-only
card cannot record its own failure in the outbox, and every reader of it runs in the process that
writes (`run`). A CLI in another process sees only what its own checks find (file system, files).

What makes the outbox unhealthy (`problems()`, one line each, naming the fix):
- the last commit of a passage failed and none succeeded since (the lane shows FAULT);
- a fault found at run time and not yet repaired (the -wal or the database file unlinked,
  corruption not yet moved aside, a repair that failed);
- the file system is mounted read-only, or has less than FREE_FLOOR_BYTES free for the service
  user (statvfs(3): f_bavail * f_frsize, i.e. without the blocks reserved for root).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FREE_FLOOR_BYTES = 32 << 20  # room for a WAL of journal_size_limit (8 MiB) and then some


@dataclass
class OutboxHealth:
    path: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    write_failures_total: int = 0
    last_write_error: str | None = None
    last_write_error_at: float | None = None
    last_write_ok_at: float | None = None
    faults: dict[str, str] = field(default_factory=dict)  # kind ("files", "corrupt") -> one line
    fault_at: float | None = None
    runtime_recoveries_total: int = 0

    def write_ok(self, now: float | None = None) -> None:
        """A passage was committed: a failing card has recovered (the counter stays)."""
        with self.lock:
            self.last_write_ok_at = time.time() if now is None else now
            self.last_write_error = None

    def write_failed(self, error: str, now: float | None = None) -> None:
        with self.lock:
            self.write_failures_total += 1
            self.last_write_error = error
            self.last_write_error_at = time.time() if now is None else now

    def set_fault(self, kind: str, reason: str, now: float | None = None) -> None:
        """A fault found at run time (`kind`: "files", "corrupt"), kept until `clear_fault`."""
        with self.lock:
            if not self.faults:
                self.fault_at = time.time() if now is None else now
            self.faults[kind] = reason

    def clear_fault(self, kind: str, *, recovered: bool = False) -> None:
        with self.lock:
            if self.faults.pop(kind, None) is not None and recovered:
                self.runtime_recoveries_total += 1
            if not self.faults:
                self.fault_at = None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"write_failures_total": self.write_failures_total, "last_write_error": self.last_write_error,
                    "last_write_error_at": self.last_write_error_at, "last_write_ok_at": self.last_write_ok_at,
                    "faults": dict(self.faults), "fault_at": self.fault_at,
                    "runtime_recoveries_total": self.runtime_recoveries_total}


_REGISTRY: dict[str, OutboxHealth] = {}
_REGISTRY_LOCK = threading.Lock()


def _key(path: str | Path) -> str:
    return os.path.realpath(path)


def health_of(path: str | Path) -> OutboxHealth:
    """The one health object of the outbox at `path` in this process (made on first use)."""
    k = _key(path)
    with _REGISTRY_LOCK:
        h = _REGISTRY.get(k)
        if h is None:
            h = _REGISTRY[k] = OutboxHealth(k)
        return h


@dataclass(frozen=True)
class FsSpace:
    free_bytes: int  # available to an unprivileged user (f_bavail)
    total_bytes: int
    readonly: bool


def fs_space(path: str | Path) -> FsSpace | None:
    """statvfs(3) of the file system holding `path` (its directory when it does not exist yet);
    None when it cannot be read."""
    p = Path(path)
    target = p if p.exists() else p.parent
    try:
        st = os.statvfs(target)
    except OSError:
        return None
    return FsSpace(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, bool(st.f_flag & os.ST_RDONLY))


def capacity_ratio(used_bytes: int, db_bytes: int, max_bytes: int, fs: FsSpace | None) -> float:
    """How full the outbox really is: used pages over what it can still grow to, which is the
    configured cap or the file plus the free space of the file system, whichever is smaller.
    0.0 when neither limit is known."""
    limits = [max_bytes] if max_bytes > 0 else []
    if fs is not None and fs.total_bytes > 0:
        limits.append(db_bytes + fs.free_bytes)
    if not limits:
        return 0.0
    cap = min(limits)
    return used_bytes / cap if cap > 0 else 1.0


def problems(path: str | Path, *, fs: FsSpace | None = None, free_floor: int = FREE_FLOOR_BYTES) -> list[str]:
    """What keeps the outbox at `path` from recording passages now, one line each with the fix
    (empty when healthy). Checks this process's health state and the file system."""
    out: list[str] = []
    snap = health_of(path).snapshot()
    out += [snap["faults"][k] for k in sorted(snap["faults"])]
    if snap["last_write_error"]:
        out.append(f"the last passage could not be recorded ({snap['last_write_error']})")
    fs = fs or fs_space(path)
    if fs is None:
        out.append(f"cannot read the file system of {path}; fix: check that the SD card is mounted")
    elif fs.readonly:
        out.append(f"the file system of {path} is read-only; fix: check the SD card (dmesg), then reboot")
    elif fs.free_bytes < free_floor:
        out.append(f"only {fs.free_bytes >> 20} MiB free on the file system of {path} (floor "
                   f"{free_floor >> 20} MiB); fix: free disk space (df -h)")
    return out
