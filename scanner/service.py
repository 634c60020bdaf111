"""The lane: capture thread beside one scan loop, devices opened in order and closed in
reverse, SIGTERM handled, systemd told when the lane is ready and alive.

Scan loop: newest frame -> decode -> verify -> passage <- thermometer -> screening; each
finished passage is committed to the outbox and only then shown on the lights (a person is
never told about a record that was not written). A device that fails shows FAULT and is
retried with back-off; nothing in here waits on the network.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Camera, Indicators, Pattern, Thermometer
from scanner import signals
from scanner.capture import CaptureThread
from scanner.clock import Clock, boot_id
from scanner.config import Config
from scanner.credentials import verify
from scanner.decode import Decoder
from scanner.errors import StoreError
from scanner.models import CredentialSummary, PassageRecord
from scanner.notify import Notifier
from scanner.passage import Outcome, Passage
from scanner.policy import CheckpointRules
from scanner.screening import Screener, ScreeningRules
from scanner.store import Store

log = logging.getLogger("scanner.lane")

@dataclass
class Devices:
    camera: Camera
    thermometer: Thermometer
    indicators: Indicators
    closers: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class LaneStats:
    passages: int = 0
    by_verdict: dict[str, int] = field(default_factory=dict)
    codes_seen: int = 0
    not_credentials: int = 0
    store_failures: int = 0
    frames_decoded: int = 0


def payload_key(payload: bytes) -> str:
    """Identifies a payload in memory and in logs without revealing it."""
    return hashlib.sha256(payload).hexdigest()[:16]


def summarize(v: Any) -> CredentialSummary:
    def hx(b: bytes | None) -> str | None:
        return b.hex() if isinstance(b, (bytes, bytearray)) else None

    return CredentialSummary(kind=v.kind, code=v.code, issuer=v.issuer, kid=hx(v.kid),
                             token_hash=hx(v.token_hash), colour=v.colour,
                             village=getattr(v, "village", None), grid=getattr(v, "grid", None))


class Lane:
    def __init__(self, cfg: Config, devices: Devices, trust: Any, store: Store, clock: Clock, *,
                 on_record: Callable[[dict[str, Any], Outcome, dict[str, bool]], None] | None = None,
                 notifier: Notifier | None = None, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.dev = devices
        self.trust = trust
        self.store = store
        self.clock = clock
        self.on_record = on_record
        self.notifier = notifier or Notifier(None)
        self.stop_event = stop or threading.Event()
        self.rules = CheckpointRules(cfg.checkpoint.kind, frozenset(cfg.checkpoint.villages),
                                     cfg.policy.fever_threshold_c)
        self.passage = Passage(self.rules, cfg.policy.pairing_window_s, cfg.policy.cooldown_s)
        self.screener = Screener(ScreeningRules.from_config(cfg.thermometer))
        self.decoder = Decoder(dedup_window_s=1.5)
        self.capture = CaptureThread(devices.camera, self.stop_event)
        self.stats = LaneStats()
        self.boot_id = boot_id()
        self._pattern: Pattern | None = None
        self._pattern_until = 0.0
        self._last_frame_seq = 0
        self._next_poll = 0.0

    # -- outputs -------------------------------------------------------------------------
    def _show(self, pattern: Pattern, hold_s: float = 0.0) -> None:
        if self._pattern is pattern and hold_s == 0:
            return
        try:
            self.dev.indicators.show(pattern)
        except OSError as e:
            log.error("event=indicator_fault error=%r", str(e))
        self._pattern = pattern
        self._pattern_until = time.monotonic() + hold_s

    def faults(self) -> list[str]:
        out = []
        if self.capture.fault:
            out.append(f"camera: {self.capture.fault}")
        if self.screener.down:
            out.append(f"thermometer: {self.screener.last_error}")
        return out

    def _idle_pattern(self, now: float) -> None:
        if now < self._pattern_until:
            return
        self._show(signals.FAULT if self.faults() else signals.READY)

    # -- inputs --------------------------------------------------------------------------
    def verify(self, payload: bytes) -> Any:
        """The one place the lane checks a credential (trust data, clock, skew)."""
        return verify(payload, self.trust, self.clock.now(), clock_trusted=self.clock.trusted(),
                      skew_s=self.cfg.policy.clock_skew_s)

    def _scan_frame(self, now: float) -> None:
        seq, frame = self.capture.newest()
        if frame is None or seq == self._last_frame_seq:
            return
        self._last_frame_seq = seq
        if now - frame.t_mono > self.cfg.camera.max_frame_age_s:
            return  # stale: never decide on an old picture
        codes = self.decoder.new_codes(frame.image, frame.t_mono)
        self.stats.frames_decoded += 1
        for code in codes:
            self.stats.codes_seen += 1
            key = payload_key(code.payload)
            v = self.verify(code.payload)
            log.info("event=code_seen code_hash=%s kind=%s result=%s", key, v.kind, v.code)
            outcome, accepted = self.passage.on_code(now, key, v)
            if accepted and v.code == "FORMAT_UNSUPPORTED":
                self.stats.not_credentials += 1
                if now >= self._pattern_until:
                    self._show(signals.HINT, hold_s=0.5)
            if outcome:
                self._finish(outcome)

    def _poll_thermometer(self, now: float) -> None:
        if now < self._next_poll:
            return
        self._next_poll = now + self.cfg.thermometer.poll_interval_s
        th = self.dev.thermometer
        try:
            obj, amb = th.object_temperature(), th.ambient_temperature()
        except OSError as e:
            was_down = self.screener.down
            m = self.screener.feed_error(now, str(e))
            if self.screener.down and not was_down:
                log.error("event=thermometer_down error=%r", str(e))
        else:
            m = self.screener.feed(now, obj, amb)
        if m is not None:
            log.info("event=measurement status=%s body_c=%s object_c=%s ambient_c=%s",
                     m.status.value, m.body_c, m.object_c, m.ambient_c)
            outcome, _ = self.passage.on_measurement(now, m)
            if outcome:
                self._finish(outcome)

    # -- a finished passage --------------------------------------------------------------
    def build_record(self, o: Outcome) -> PassageRecord:
        creds = tuple(summarize(v) for v in o.verifications)
        health = next((c for c in creds if c.kind == "health"), None)
        primary = health or next((c for c in creds if c.code != "FORMAT_UNSUPPORTED"), None)
        res = next((c for c in creds if c.kind == "residence"), None)
        m = o.measurement
        trust_version = getattr(self.trust, "version", None)
        return PassageRecord(
            record_id=uuid.uuid4().hex, device_id=self.cfg.checkpoint.device_id,
            checkpoint_id=self.cfg.checkpoint.id, checkpoint_kind=self.cfg.checkpoint.kind,
            ts_utc=self.clock.now().isoformat(timespec="milliseconds"),
            clock_trusted=self.clock.trusted(), boot_id=self.boot_id, mono_s=round(o.decided_mono, 3),
            verdict=o.decision.verdict.value, reasons=o.decision.reasons, credentials=creds,
            credential_type=primary.kind if primary else None, issuer=primary.issuer if primary else None,
            kid=primary.kid if primary else None, token_hash=primary.token_hash if primary else None,
            colour=primary.colour if primary else None,
            temperature_c=m.body_c if m else None, object_c=m.object_c if m else None,
            ambient_c=m.ambient_c if m else None, temp_status=m.status.value if m else None,
            calibration_version=m.calibration_version if m else None,
            residence_village=res.village if res else None, residence_grid=res.grid if res else None,
            trust_version=trust_version, latency_ms=round((time.monotonic() - o.last_input_mono) * 1000, 1))

    def _finish(self, o: Outcome) -> None:
        rec = self.build_record(o)
        try:
            seq = self.store.record(rec)  # commit first: then the person is told
        except StoreError as e:
            self.stats.store_failures += 1
            log.error("event=store_failed error=%r", str(e))
            self._show(signals.FAULT, hold_s=self.cfg.indicators.verdict_hold_s)
            return
        relay = self.cfg.indicators.relay_pulse_s if self.cfg.indicators.relay_pin else None
        self._show(signals.for_verdict(o.decision.verdict, relay), hold_s=self.cfg.indicators.verdict_hold_s)
        self.stats.passages += 1
        v = o.decision.verdict.value
        self.stats.by_verdict[v] = self.stats.by_verdict.get(v, 0) + 1
        log.info("event=passage seq=%d verdict=%s reasons=%s temp_c=%s token=%s latency_ms=%s",
                 seq, v, ",".join(o.decision.reasons), rec.temperature_c, rec.token_hash, rec.latency_ms)
        if self.on_record:
            row = {**rec.__dict__, "seq": seq}
            self.on_record(row, o, self.dev.indicators.states())

    # -- the loop ------------------------------------------------------------------------
    def step(self) -> None:
        now = time.monotonic()
        self._scan_frame(now)
        self._poll_thermometer(now)
        outcome = self.passage.tick(now)
        if outcome:
            self._finish(outcome)
        self._idle_pattern(now)

    def run(self) -> int:
        self.capture.start()
        self._show(signals.READY)
        self.notifier.send(ready=1, status="lane ready")
        log.info("event=lane_ready checkpoint=%s kind=%s", self.cfg.checkpoint.id, self.cfg.checkpoint.kind)
        last_ping = 0.0
        try:
            while not self.stop_event.is_set():
                self.step()
                now = time.monotonic()
                if now - last_ping >= 1.0 and self.capture.is_alive():
                    self.notifier.send(watchdog=1, status="; ".join(self.faults()) or "ok")
                    last_ping = now
                self.stop_event.wait(0.005)
        finally:
            self.notifier.send(stopping=1)
            self.stop_event.set()
            self.capture.join(timeout=3)
        return 0
