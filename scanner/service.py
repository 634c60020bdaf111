"""The lane: capture thread beside one scan loop, devices opened in order and closed in
reverse, SIGTERM handled, systemd told when the lane is ready and alive.

Scan loop: newest frame -> decode -> verify -> passage <- thermometer -> screening; each
finished passage is committed to the outbox and only then shown on the lights (a person is
never told about a record that was not written). A device that fails shows FAULT and is
retried with back-off; nothing in here waits on the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Camera, Indicators, Pattern, Thermometer
from scanner import signals
from scanner.capture import CaptureThread
from scanner.clock import Clock, boot_id
from scanner.config import Config
from scanner.credentials.state import TrustState
from scanner.decode import Decoder
from scanner.errors import StoreError
from scanner.models import CredentialSummary, PassageRecord, Verdict
from scanner.monitor import LaneMonitor
from scanner.notify import Notifier
from scanner.passage import Outcome, Passage
from scanner.policy import CheckpointRules
from scanner.screening import Screener, ScreeningRules
from scanner.store import Store, new_record_id

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
                 notifier: Notifier | None = None, stop: threading.Event | None = None,
                 online: Callable[[str], Any] | None = None) -> None:
        self.cfg = cfg
        self.dev = devices
        # Trust list, status list and policy, swapped whole by the sync thread (a bare TrustStore
        # is wrapped); `online` checks provincial codes (scanner.sync.online.OnlineVerifier).
        self.trust = trust if isinstance(trust, TrustState) else TrustState(trust)
        self.online = online
        self.store = store
        self.clock = clock
        self.on_record = on_record
        self.notifier = notifier or Notifier(None)
        self.stop_event = stop or threading.Event()
        self.rules = CheckpointRules(cfg.checkpoint.kind, frozenset(cfg.checkpoint.villages),
                                     cfg.policy.fever_threshold_c)
        self.passage = Passage(self.rules, cfg.policy.pairing_window_s, cfg.policy.cooldown_s)
        self.screener = Screener(ScreeningRules.from_config(cfg.thermometer))
        dc = cfg.decode
        self.decoder = Decoder(dedup_window_s=1.5, engine=dc.engine, budget_ms=dc.budget_ms,
                               motion_gate=dc.motion_gate, gate_max_skip_s=dc.gate_max_skip_s)
        self.capture = CaptureThread(devices.camera, self.stop_event)
        self.stats = LaneStats()
        self.boot_id = boot_id()
        self._pattern: Pattern | None = None
        self._pattern_until = 0.0
        self._last_frame_seq = 0
        self._next_poll = 0.0
        self.monitor = LaneMonitor(cfg.checkpoint.id, cfg.checkpoint.kind)
        self._commands: queue.Queue[tuple[Callable[[], dict[str, Any]], queue.Queue[dict[str, Any]]]] = queue.Queue()

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
        if pattern is not signals.HINT:
            self.monitor.set_state(pattern.name, self._prompts())

    def _prompts(self) -> tuple[str, ...]:
        return tuple(self.passage.needs()) or ("SHOW_CODE", "HOLD_WRIST")

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
        """The one place the lane checks a credential: one trust-data snapshot (trust list, status
        list, the centre's policy over the config), the clock read once, provincial codes online."""
        return self.trust.check(payload, self.clock, self.cfg, self.online)

    def _apply_policy(self) -> None:
        """The centre's fever threshold, read from the trust-data snapshot for every passage."""
        fever = self.trust.thresholds(self.cfg).fever_threshold_c
        if fever != self.passage.rules.fever_threshold_c:
            log.info("event=policy_applied fever_threshold_c=%s", fever)
            self.rules = dataclasses.replace(self.rules, fever_threshold_c=fever)
            self.passage.rules = self.rules

    def _scan_frame(self, now: float) -> None:
        seq, frame = self.capture.newest()
        if frame is None or seq == self._last_frame_seq:
            return
        self._last_frame_seq = seq
        if now - frame.t_mono > self.cfg.camera.max_frame_age_s:
            return  # stale: never decide on an old picture
        codes = self.decoder.new_codes(frame.image, frame.t_mono)
        self.stats.frames_decoded += 1
        self.monitor.frame(frame.image, tuple(c.polygon for c in codes), hint=self.decoder.hint)
        for code in codes:
            self.stats.codes_seen += 1
            key = payload_key(code.data)
            v = self.verify(code.data)
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
        versions = self.trust.snapshot().versions()  # trust list, status list, policy in force
        return PassageRecord(
            record_id=new_record_id(), device_id=self.cfg.checkpoint.device_id,
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
            trust_version=versions.get("trust"), status_version=versions.get("status"),
            policy_version=versions.get("policy"), latency_ms=round((time.monotonic() - o.last_input_mono) * 1000, 1))

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
        row = {**rec.__dict__, "seq": seq}
        self.monitor.on_passage(row)
        if self.on_record:
            self.on_record(row, o, self.dev.indicators.states())

    # -- staff override ------------------------------------------------------------------
    def request_override(self, verdict: str, staff_id: str, record_id: str | None = None,
                         timeout_s: float = 3.0) -> dict[str, Any]:
        """Called from another thread (staff page, override button): staff overrule a REVIEW.
        Runs in the scan loop, so the store and the lights have one writer. Returns
        {"ok": bool, "message": ..., "seq": ...}."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        self._commands.put((lambda: self._override(verdict, staff_id, record_id), reply))
        try:
            return reply.get(timeout=timeout_s)
        except queue.Empty:
            return {"ok": False, "message": "the lane did not answer in time; try again"}

    def _override(self, verdict: str, staff_id: str, record_id: str | None) -> dict[str, Any]:
        if verdict not in ("PASS", "DENY"):
            return {"ok": False, "message": f"verdict must be PASS or DENY (got {verdict!r})"}
        staff_id = staff_id.strip()[:32]
        if not staff_id:
            return {"ok": False, "message": "a staff id is required / 请填写工号"}
        pending = self.monitor.pending(record_id)
        if pending is None:
            return {"ok": False, "message": "no pending REVIEW to override / 没有待核验的通行"}
        seq = int(pending["seq"])
        rows = self.store.rows(after_seq=seq - 1, limit=1)
        if not rows or rows[0]["record_id"] != pending["record_id"]:
            return {"ok": False, "message": "the original record is not in the outbox any more"}
        orig = rows[0]
        creds = tuple(CredentialSummary(**{k: c.get(k) for k in ("kind", "code", "issuer", "kid", "token_hash",
                                                                  "colour", "village", "grid")})
                      for c in orig["credentials"])
        keep = {k: orig[k] for k in ("credential_type", "issuer", "kid", "token_hash", "colour", "temperature_c",
                                     "object_c", "ambient_c", "temp_status", "calibration_version",
                                     "residence_village", "residence_grid", "trust_version", "status_version",
                                     "policy_version")}
        rec = PassageRecord(
            record_id=new_record_id(), device_id=self.cfg.checkpoint.device_id,
            checkpoint_id=self.cfg.checkpoint.id, checkpoint_kind=self.cfg.checkpoint.kind,
            ts_utc=self.clock.now().isoformat(timespec="milliseconds"), clock_trusted=self.clock.trusted(),
            boot_id=self.boot_id, mono_s=round(time.monotonic(), 3), verdict=verdict,
            reasons=("STAFF_OVERRIDE", *[r for r in orig["reasons"] if r != "STAFF_OVERRIDE"]),
            credentials=creds, override_by=staff_id, override_verdict=verdict, override_of=orig["record_id"],
            **keep)
        try:
            new_seq = self.store.record(rec)
        except StoreError as e:
            log.error("event=store_failed error=%r", str(e))
            self._show(signals.FAULT, hold_s=self.cfg.indicators.verdict_hold_s)
            return {"ok": False, "message": f"could not record the override: {e}"}
        relay = self.cfg.indicators.relay_pulse_s if self.cfg.indicators.relay_pin else None
        self._show(signals.for_verdict(Verdict(verdict), relay), hold_s=self.cfg.indicators.verdict_hold_s)
        log.info("event=staff_override seq=%d of_seq=%d verdict=%s staff=%s", new_seq, seq, verdict, staff_id)
        self.monitor.on_passage({**dataclasses.asdict(rec), "seq": new_seq})
        return {"ok": True, "message": f"{verdict} recorded / 已记录", "seq": new_seq}

    def _run_commands(self) -> None:
        while True:
            try:
                fn, reply = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - a staff action must never kill the scan loop
                log.exception("event=command_failed")
                result = {"ok": False, "message": f"internal error: {e.__class__.__name__}"}
            reply.put(result)

    # -- the loop ------------------------------------------------------------------------
    def step(self) -> None:
        now = time.monotonic()
        self._apply_policy()
        self._scan_frame(now)
        self._poll_thermometer(now)
        outcome = self.passage.tick(now)
        if outcome:
            self._finish(outcome)
        self._run_commands()
        self._idle_pattern(now)
        self.monitor.set_faults(self.faults())

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
