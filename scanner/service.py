"""The lane: capture thread beside one scan loop, devices opened in order and closed in
reverse, SIGTERM handled, systemd told when the lane is ready and alive.

Scan loop: newest frame -> decode -> verify -> passage <- thermometer -> screening; each
finished passage is committed to the outbox and only then shown on the lights (a person is
never told about a record that was not written). A device that fails shows FAULT and is
retried with back-off; nothing in here waits on the network.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.base import Camera, Indicators, Pattern, Thermometer
from scanner import device_secret, signals
from scanner.capture import CaptureThread
from scanner.clock import Clock, boot_id
from scanner.config import Config
from scanner.credentials.state import TrustState
from scanner.decode import Decoder
from scanner.errors import StoreError
from scanner.models import CredentialSummary, PassageRecord, Verdict, valid_staff_id
from scanner.monitor import LaneMonitor
from scanner.notify import Notifier
from scanner.numbers import is_finite_number
from scanner.passage import Outcome, Passage
from scanner.policy import RECENTLY_DENIED, CheckpointRules
from scanner.screening import Screener, ScreeningRules
from scanner.store import Store, new_record_id
from scanner.watchdog import LaneWatchdog

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
    verdicts_withheld: int = 0


def payload_key(payload: bytes) -> str:
    """Identifies a payload in memory and in logs without revealing it: 16 hex of
    HMAC-SHA256(device secret, payload) (scanner/device_secret.py)."""
    return device_secret.payload_hash(payload)


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
                 online: Callable[[str], Any] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, stall_s: float | None = None) -> None:
        self.cfg = cfg
        # The key of every payload hash in logs and records: made next to the outbox at first start.
        self.device_secret = device_secret.use_for_store(cfg.store.path)
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
        self.mono = monotonic
        self.rules = CheckpointRules(cfg.checkpoint.kind, frozenset(cfg.checkpoint.villages),
                                     cfg.policy.fever_threshold_c)
        self.passage = Passage(self.rules, cfg.policy.pairing_window_s, cfg.policy.cooldown_s)
        self.screener = Screener(ScreeningRules.from_config(cfg.thermometer, real_lane=not cfg.simulated))
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
        self.override_window_s = cfg.policy.override_window_s
        self._denied: dict[bytes, float] = {}  # token_hash -> when a DENY recorded it
        self.monitor = LaneMonitor(cfg.checkpoint.id, cfg.checkpoint.kind, monotonic=monotonic,
                                   pending_window_s=self.override_window_s)
        # The review the lane is showing now: (record_id, decided at); the override button acts on
        # this one only, and only until the next person starts or the window runs out.
        self._showing_review: tuple[str, float] | None = None
        # Written by the scan loop, read by the watchdog thread (scanner/watchdog.py).
        self.step_started: float | None = None
        self.phase = "step"
        self._show_lock = threading.Lock()
        if stall_s is None:  # longer than any step may legitimately take (an online check has a budget)
            stall_s = max(5.0, cfg.sync.online_timeout_s + 3.0)
        self.watchdog = LaneWatchdog(self, self.stop_event, stall_s=stall_s)
        self._commands: queue.Queue[tuple[Callable[[], dict[str, Any]], queue.Queue[dict[str, Any]], float]] = \
            queue.Queue()

    # -- outputs -------------------------------------------------------------------------
    def _show(self, pattern: Pattern, hold_s: float = 0.0) -> None:
        if self._pattern is pattern and hold_s == 0:
            return
        self.phase = "signal"
        with self._show_lock:
            try:
                self.dev.indicators.show(pattern)
            except OSError as e:
                log.error("event=indicator_fault error=%r", str(e))
            self._pattern = pattern
            self._pattern_until = self.mono() + hold_s
        if pattern is not signals.HINT:
            self.monitor.set_state(pattern.name, self._prompts())

    def show_fault_from_watchdog(self, text: str) -> None:
        """Called by the watchdog thread while a step is stuck: FAULT on the lights and screens.
        Shown once per stall; the scan loop takes the lights back when the step completes."""
        self.monitor.set_faults([*self.faults(), text])
        if self._pattern is signals.FAULT:
            return
        with self._show_lock:
            if self.step_started is None:
                return  # the step completed meanwhile: the loop owns the lights again
            try:
                self.dev.indicators.show(signals.FAULT)
            except OSError as e:
                log.error("event=indicator_fault error=%r", str(e))
            self._pattern = signals.FAULT
            self._pattern_until = 0.0
        self.monitor.set_state("FAULT", ())
        self.notifier.send(status=f"FAULT: {text}")

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
        v = self.trust.check(payload, self.clock, self.cfg, self.online)
        token = getattr(v, "token_hash", None)
        denied_at = self._denied.get(token) if token else None
        if denied_at is not None and self.mono() - denied_at <= self.cfg.policy.recheck_after_deny_s:
            v = dataclasses.replace(v, warnings=(*v.warnings, RECENTLY_DENIED))
        return v

    def _remember_denied(self, o: Outcome) -> None:
        """Health codes of a DENY: shown again soon they are REVIEW, not judged afresh."""
        if self.cfg.policy.recheck_after_deny_s <= 0:
            return
        now = self.mono()
        self._denied = {t: d for t, d in self._denied.items() if now - d <= self.cfg.policy.recheck_after_deny_s}
        for v in o.verifications:
            token = getattr(v, "token_hash", None)
            if token and getattr(v, "kind", None) in ("health", "dcc"):
                self._denied[token] = now

    def _apply_policy(self) -> None:
        """The centre's fever threshold, read from the trust-data snapshot for every passage."""
        fever = self.trust.thresholds(self.cfg).fever_threshold_c
        current = self.passage.rules.fever_threshold_c
        if fever != current and not (math.isnan(fever) and math.isnan(current)):  # NaN != NaN: log once
            log.info("event=policy_applied fever_threshold_c=%s", fever)
            self.rules = dataclasses.replace(self.rules, fever_threshold_c=fever)
            self.passage.rules = self.rules

    def _scan_frame(self, now: float) -> None:
        self.phase = "camera"
        seq, frame = self.capture.newest()
        if frame is None or seq == self._last_frame_seq:
            return
        self._last_frame_seq = seq
        if not now - frame.t_mono <= self.cfg.camera.max_frame_age_s:
            return  # stale: never decide on an old picture
        self.phase = "decode"
        codes = self.decoder.new_codes(frame.image, frame.t_mono)
        self.stats.frames_decoded += 1
        self.monitor.frame(frame.image, tuple(c.polygon for c in codes), hint=self.decoder.hint)
        if not codes:
            return
        self.phase = "verify"
        items = []
        for code in codes:
            self.stats.codes_seen += 1
            key = payload_key(code.data)
            v = self.verify(code.data)
            log.info("event=code_seen code_hash=%s kind=%s result=%s", key, v.kind, v.code)
            items.append((key, v))
        # One frame, one person: the codes of a frame are taken together (docs/credentials.md section 5).
        absorbed = self.passage.absorbed
        outcome, accepted = self.passage.on_codes(now, items)
        if self.passage.absorbed > absorbed:
            log.info("event=code_absorbed count=%d", self.passage.absorbed - absorbed)
        if accepted:
            self._showing_review = None  # the next person has started
        unsupported = sum(1 for key, v in items if key in accepted and v.code == "FORMAT_UNSUPPORTED")
        if unsupported:
            self.stats.not_credentials += unsupported
            if not outcome and now >= self._pattern_until:
                self._show(signals.HINT, hold_s=0.5)
        if outcome:
            self._finish(outcome)

    def _poll_thermometer(self, now: float) -> None:
        if now < self._next_poll:
            return
        self._next_poll = now + self.cfg.thermometer.poll_interval_s
        self.phase = "thermometer"
        th = self.dev.thermometer
        try:
            obj, amb = th.object_temperature(), th.ambient_temperature()
            if not (is_finite_number(obj) and is_finite_number(amb)):
                raise OSError(f"thermometer returned a non-finite reading (object {obj}, ambient {amb})")
        except (OSError, TypeError) as e:
            was_down = self.screener.down
            m = self.screener.feed_error(now, str(e))
            if self.screener.down and not was_down:
                log.error("event=thermometer_down error=%r", str(e))
        else:
            m = self.screener.feed(now, obj, amb)
        if m is not None:
            log.info("event=measurement status=%s body_c=%s object_c=%s ambient_c=%s",
                     m.status.value, m.body_c, m.object_c, m.ambient_c)
            outcome, accepted = self.passage.on_measurement(now, m)
            if accepted:
                self._showing_review = None
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
            policy_version=versions.get("policy"), latency_ms=round((self.mono() - o.last_input_mono) * 1000, 1))

    def _commit(self, rec: PassageRecord) -> tuple[int | None, bool]:
        """Commit first, then the person is told: (seq or None when the write failed, whether the
        verdict may be shown). It may not when the step that decided it has run `stall_s` or
        longer (a stalled card, a hung sensor read): the person it belongs to has likely gone and
        the next one would see it. FAULT is shown instead, for the verdict's hold time."""
        self.phase = "commit"
        try:
            seq = self.store.record(rec)
        except StoreError as e:
            self.stats.store_failures += 1
            log.error("event=store_failed error=%r", str(e))
            self._show(signals.FAULT, hold_s=self.cfg.indicators.verdict_hold_s)
            return None, False
        started = self.step_started
        took = self.mono() - started if started is not None else 0.0
        if not took < self.watchdog.stall_s:
            self.stats.verdicts_withheld += 1
            log.warning("event=verdict_withheld seq=%d verdict=%s step_s=%.1f", seq, rec.verdict, took)
            self._show(signals.FAULT, hold_s=self.cfg.indicators.verdict_hold_s)
            return seq, False
        return seq, True

    def _finish(self, o: Outcome) -> None:
        rec = self.build_record(o)
        seq, show = self._commit(rec)
        self._showing_review = None
        if seq is None:
            return
        if o.decision.verdict is Verdict.DENY:
            self._remember_denied(o)
        if show:
            relay = self.cfg.indicators.relay_pulse_s if self.cfg.indicators.relay_pin else None
            self._show(signals.for_verdict(o.decision.verdict, relay), hold_s=self.cfg.indicators.verdict_hold_s)
            if o.decision.verdict is Verdict.REVIEW:
                self._showing_review = (rec.record_id, o.decided_mono)
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
    def request_override(self, verdict: str, staff_id: str, record_id: str | None,
                         timeout_s: float = 3.0) -> dict[str, Any]:
        """Staff overrule one pending REVIEW, named by its `record_id` (the staff page).

        Called from another thread; runs in the scan loop, so the store and the lights have one
        writer. A command the loop has not run within `timeout_s` is dropped, never run late.
        Returns {"ok": bool, "message": "中文 / English", "seq": int (when ok)}."""
        return self._command(lambda: self._override(verdict, staff_id, record_id), timeout_s)

    def request_button_override(self, timeout_s: float = 3.0) -> dict[str, Any]:
        """The hardware override button: PASS for the REVIEW the lane is showing now, and only
        while no next person has started and the override window has not run out."""
        def run() -> dict[str, Any]:
            showing = self._showing_review
            if showing is None or self.passage.active:
                return {"ok": False, "message": "没有正在显示的待核验通行 / no REVIEW is showing now"}
            if not self.mono() - showing[1] <= self.override_window_s:
                return {"ok": False, "message": "核验已超时，请在状态页处理 / "
                        "the REVIEW is too old: use the status page"}
            return self._override("PASS", "button", showing[0])

        return self._command(run, timeout_s)

    def _command(self, fn: Callable[[], dict[str, Any]], timeout_s: float) -> dict[str, Any]:
        reply: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        self._commands.put((fn, reply, self.mono() + timeout_s))
        try:
            return reply.get(timeout=timeout_s)
        except queue.Empty:
            return {"ok": False, "message": "通道未及时响应，请重试 / the lane did not answer in time; try again"}

    def _override(self, verdict: str, staff_id: str, record_id: str | None) -> dict[str, Any]:
        if verdict not in ("PASS", "DENY"):
            return {"ok": False, "message": "verdict must be PASS or DENY / 只能放行或拦截"}
        checked_id = valid_staff_id(staff_id)
        if checked_id is None:
            return {"ok": False, "message": "请填写工号（1-32个字母或数字） / "
                    "a staff id is required (1-32 letters or digits)"}
        if not record_id or not isinstance(record_id, str):
            return {"ok": False, "message": "请选择要处理的通行记录 / name the REVIEW to override (record_id)"}
        pending = self.monitor.pending(record_id)
        if pending is None:
            return {"ok": False, "message": "没有该待核验通行（已处理或已过期） / "
                    "no such pending REVIEW (already handled or expired)"}
        seq = int(pending["seq"])
        rows = self.store.rows(after_seq=seq - 1, limit=1)
        if not rows or rows[0]["record_id"] != record_id or rows[0]["verdict"] != "REVIEW":
            return {"ok": False, "message": "原记录已不在队列中 / the original record is not in the outbox any more"}
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
            boot_id=self.boot_id, mono_s=round(self.mono(), 3), verdict=verdict,
            reasons=("STAFF_OVERRIDE", *[r for r in orig["reasons"] if r != "STAFF_OVERRIDE"]),
            credentials=creds, override_by=checked_id, override_verdict=verdict, override_of=record_id,
            **keep)
        # The lights and the relay answer only for the person the lane is showing now; an older
        # REVIEW is recorded, and staff let that person through by hand.
        showing = self._showing_review is not None and self._showing_review[0] == record_id \
            and not self.passage.active
        new_seq, shown = self._commit(rec)
        if new_seq is None:
            return {"ok": False, "message": "无法记录，请重试 / could not record the override (outbox fault)"}
        self.monitor.on_passage({**dataclasses.asdict(rec), "seq": new_seq})  # recorded: no longer pending
        showing = showing and shown
        log.info("event=staff_override seq=%d of_seq=%d verdict=%s staff=%s shown=%s", new_seq, seq, verdict,
                 checked_id, showing)
        if not showing:
            return {"ok": True, "seq": new_seq, "message": f"{verdict} 已记录（通道已有下一人，未开闸） / "
                    "recorded (the lane has moved on: the gate was not opened)"}
        self._showing_review = None
        relay = self.cfg.indicators.relay_pulse_s if self.cfg.indicators.relay_pin else None
        self._show(signals.for_verdict(Verdict(verdict), relay), hold_s=self.cfg.indicators.verdict_hold_s)
        return {"ok": True, "message": f"{verdict} 已记录 / recorded", "seq": new_seq}

    def _run_commands(self) -> None:
        while True:
            try:
                fn, reply, deadline = self._commands.get_nowait()
            except queue.Empty:
                return
            if not self.mono() <= deadline:
                log.warning("event=command_expired")  # the caller was told it failed: never act late
                continue
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - a staff action must never kill the scan loop
                log.exception("event=command_failed")
                result = {"ok": False, "message": f"internal error: {e.__class__.__name__}"}
            reply.put(result)

    # -- the loop ------------------------------------------------------------------------
    def step(self) -> None:
        now = self.mono()
        self.step_started = now  # the watchdog thread reads this (scanner/watchdog.py)
        try:
            self.phase = "step"
            self._apply_policy()
            self._scan_frame(now)
            self._poll_thermometer(now)
            outcome = self.passage.tick(now)
            if outcome:
                self._finish(outcome)
            self._run_commands()
        finally:
            self.step_started = None
        if self.watchdog.stalled:
            self.watchdog.stalled = False
            log.warning("event=lane_resumed")
            self._pattern_until = 0.0  # the loop takes the lights back from the watchdog's FAULT
        self._idle_pattern(now)
        self.monitor.set_faults(self.faults())

    def run(self) -> int:
        self.capture.start()
        self.watchdog.start()
        self._show(signals.READY)
        self.notifier.send(ready=1, status="lane ready")
        log.info("event=lane_ready checkpoint=%s kind=%s", self.cfg.checkpoint.id, self.cfg.checkpoint.kind)
        last_ping = 0.0
        try:
            while not self.stop_event.is_set():
                self.step()
                now = self.mono()
                # systemd's watchdog is fed only while steps complete and the camera thread lives.
                if now - last_ping >= 1.0 and self.capture.is_alive() and not self.watchdog.stalled:
                    self.notifier.send(watchdog=1, status="; ".join(self.faults()) or "ok")
                    last_ping = now
                self.stop_event.wait(0.005)
        finally:
            self.notifier.send(stopping=1)
            self.stop_event.set()
            self.capture.join(timeout=3)
            if self.watchdog.thread.is_alive():
                self.watchdog.thread.join(timeout=1)
        return 0
