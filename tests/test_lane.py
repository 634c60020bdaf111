"""The lane end to end in-process: replayed frames with real QR codes, the scripted
thermometer, gpiozero MockFactory pins; then the outbox row and the pin history are checked."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from qrframes import blank_frame, make_frame
from waiting import wait_until

from drivers.base import CameraError
from drivers.camera_replay import ReplayCamera
from drivers.indicators import mock_pin_factory
from drivers.thermometer_scripted import ScriptedThermometer
from scanner import hardware, signals
from scanner.capture import CaptureThread
from scanner.clock import Clock
from scanner.config import Config, parse_config
from scanner.errors import StoreError
from scanner.service import Lane
from scanner.store import Store

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 23
AMBIENT = 22.0

LANE_TOML = """
[checkpoint]
mode = "simulated"
id = "T-1"
device_id = "t-dev"
kind = "{kind}"
villages = ["330381001001"]
[camera]
source = "replay"
replay_path = "x"
[thermometer]
source = "scripted"
poll_interval_s = 0.02
presence_hold_s = 0.05
samples = 3
offset_c = 2.0
fault_after = 3
[decode]
# a budget no loaded machine runs out of: the tests must not depend on its speed
budget_ms = 2000
[indicators]
source = "mock"
relay_pin = 23
relay_pulse_s = 0.3
verdict_hold_s = 0.5
[policy]
pairing_window_s = {window}
cooldown_s = 0.5
[clock]
trust = "always"
"""


def lane_config(tmp_path: Path, kind: str = "highway_exit", window: float = 2.0) -> Config:
    cfg = parse_config(LANE_TOML.format(kind=kind, window=window), str(tmp_path / "lane.toml"))
    return replace(cfg, store=replace(cfg.store, path=str(tmp_path / "outbox.db")))




class Harness:
    def __init__(self, tmp_path: Path, trust: Any, frames: list[Any], skin_c: float | None,
                 kind: str = "highway_exit", window: float = 2.0) -> None:
        self.cfg = lane_config(tmp_path, kind, window)
        self.factory = mock_pin_factory()
        self.thermo = ScriptedThermometer(object_c=skin_c if skin_c else AMBIENT, ambient_c=AMBIENT)
        self.store = Store.open(self.cfg.store.path)
        self.devices = hardware.open_devices(self.cfg, frames=frames, pin_factory=self.factory,
                                             thermometer=self.thermo)
        self.devices.camera = ReplayCamera(frames, fps=30, loop=True)
        self.rows: list[dict[str, Any]] = []
        self.lane = Lane(self.cfg, self.devices, trust, self.store, Clock("always"),
                         on_record=lambda row, o, st: self.rows.append(row))
        self.thread = threading.Thread(target=self.lane.run, daemon=True)

    def __enter__(self) -> Harness:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lane.stop_event.set()
        self.thread.join(timeout=5)
        hardware.close_devices(self.devices)
        self.store.close()
        self.factory.reset()

    def history(self, pin: int) -> list[bool]:
        return [s.state for s in self.factory.pin(pin).states]


def test_green_normal_passes_with_green_light_beep_and_relay(tmp_path: Path, trust: Any, codes: Any) -> None:
    frames = [make_frame(codes.hc("green"))]
    with Harness(tmp_path, trust, frames, skin_c=34.6) as h:
        assert wait_until(lambda: len(h.rows) == 1)
        row = h.store.rows()[0]
        assert row["verdict"] == "PASS" and row["reasons"] == ["OK"]
        assert row["temperature_c"] == pytest.approx(36.6, abs=0.15)
        assert row["credential_type"] == "health" and row["colour"] == "green" and len(row["token_hash"]) == 32
        assert row["clock_trusted"] is True and row["calibration_version"] == "uncalibrated"
        assert h.factory.pin(GREEN).state is True and h.factory.pin(RED).state is False
        # one short beep and one relay pulse
        assert wait_until(lambda: h.history(BUZZER)[-1] is False)
        assert h.history(BUZZER).count(True) == 1
        assert wait_until(lambda: h.history(RELAY)[-1] is False)
        assert h.history(RELAY).count(True) == 1
        # back to READY (slow green heartbeat) after verdict_hold_s
        assert wait_until(lambda: h.lane._pattern is signals.READY)
    assert len(Store.open(tmp_path / "outbox.db").rows()) == 1  # committed: survives reopen


def test_red_code_denies_at_once_with_red_light_and_long_alarm(tmp_path: Path, trust: Any, codes: Any) -> None:
    with Harness(tmp_path, trust, [make_frame(codes.hc("red"))], skin_c=None) as h:
        assert wait_until(lambda: len(h.rows) == 1)
        assert h.rows[0]["verdict"] == "DENY" and h.rows[0]["reasons"] == ("HEALTH_RED",)
        assert h.factory.pin(RED).state is True and h.factory.pin(GREEN).state is False
        assert h.factory.pin(BUZZER).state is True  # the 1.5 s alarm is sounding
        assert h.history(RELAY).count(True) == 0  # the gate stays shut


def test_no_temperature_times_out_as_review_with_alternating_lights(tmp_path: Path, trust: Any,
                                                                     codes: Any) -> None:
    with Harness(tmp_path, trust, [make_frame(codes.hc("green"))], skin_c=None, window=1.0) as h:
        assert wait_until(lambda: len(h.rows) == 1)
        assert h.rows[0]["verdict"] == "REVIEW" and h.rows[0]["reasons"] == ("TEMP_UNAVAILABLE",)
        samples = []
        for _ in range(20):
            samples.append((h.factory.pin(GREEN).state, h.factory.pin(RED).state))
            time.sleep(0.01)
        assert all(g != r for g, r in samples)  # alternating, never both on or both off
        assert wait_until(lambda: h.history(BUZZER).count(True) == 2)  # two beeps


def test_one_record_per_person_while_the_code_stays_in_view(tmp_path: Path, trust: Any, codes: Any) -> None:
    with Harness(tmp_path, trust, [make_frame(codes.hc("green"))], skin_c=34.6) as h:
        assert wait_until(lambda: len(h.rows) == 1)
        time.sleep(1.5)  # code and wrist stay for several cooldowns
        assert len(h.rows) == 1


def test_village_gate_health_and_residence_in_one_frame(tmp_path: Path, trust: Any, codes: Any) -> None:
    frames = [make_frame(codes.hc("green"), codes.ajm("330381001001"), module_px=3)]
    with Harness(tmp_path, trust, frames, skin_c=34.5, kind="village_gate") as h:
        assert wait_until(lambda: len(h.rows) == 1)
        row = h.store.rows()[0]
        assert row["verdict"] == "PASS"
        assert row["residence_village"] == "330381001001" and row["residence_grid"] == "G7"
        assert {c["kind"] for c in row["credentials"]} == {"health", "residence"}


@pytest.mark.parametrize("payload", [
    pytest.param(bytes(range(256))[::3], id="random-bytes"),
    pytest.param(b"ZHC1:\xff\xfe\x80 not utf-8", id="invalid-utf8"),
    pytest.param(b"A" * 2900, id="3kb-text"),
    pytest.param(b"ZHC1:6BFOXN*TS0BI$ZD", id="truncated-base45"),
    pytest.param("请出示健康码 欢迎".encode(), id="chinese-text"),
])
def test_bad_qr_gets_a_verdict_and_a_record(tmp_path: Path, trust: Any, payload: bytes) -> None:
    import numpy as np
    import segno
    from qrframes import FRAME_SIZE

    qr = segno.make(payload, error="l", micro=False)
    scale = max(1, min(4, 470 // (qr.symbol_size()[0])))
    tile = np.where(np.array(list(qr.matrix_iter(scale=scale, border=4)), dtype=bool), 0, 255).astype(np.uint8)
    frame = blank_frame()
    y, x = (FRAME_SIZE[1] - tile.shape[0]) // 2, (FRAME_SIZE[0] - tile.shape[1]) // 2
    frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    with Harness(tmp_path, trust, [frame], skin_c=34.6, window=1.0) as h:
        assert wait_until(lambda: len(h.rows) == 1)
        row = h.store.rows()[0]
        assert row["verdict"] in ("REVIEW", "DENY")
        assert row["reasons"] in (["NO_CODE"], ["FORMAT_INVALID"])
        # nothing of the payload is stored
        dump = repr(h.store.conn.execute("select * from passages").fetchall())
        assert payload[:12].decode("latin-1") not in dump


def test_store_failure_shows_fault_not_the_verdict(tmp_path: Path, trust: Any, codes: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, trust, [make_frame(codes.hc("green"))], skin_c=34.6)

    def full(_rec: Any) -> int:
        raise StoreError("database or disk is full; fix: check free disk space")

    monkeypatch.setattr(h.store, "record", full)  # before the lane starts: no passage slips through
    shown: list[str] = []
    show = h.lane._show
    monkeypatch.setattr(h.lane, "_show", lambda p, hold_s=0.0: (shown.append(p.name), show(p, hold_s)))
    with h:
        assert wait_until(lambda: h.lane.stats.store_failures >= 1)
        assert wait_until(lambda: "FAULT" in shown)
        assert "PASS" not in shown  # nobody is told PASS about a record that was not written
        assert h.history(RELAY).count(True) == 0  # the gate stayed shut
        assert h.rows == []


def test_thermometer_fault_shows_fault_and_recovers(tmp_path: Path, trust: Any) -> None:
    with Harness(tmp_path, trust, [blank_frame()], skin_c=None) as h:
        h.thermo.fail("no ACK (errno 121): check SDA/SCL wiring")
        assert wait_until(lambda: h.lane._pattern is signals.FAULT)
        assert any("thermometer" in f for f in h.lane.faults())
        h.thermo.set(AMBIENT, AMBIENT)
        assert wait_until(lambda: h.lane._pattern is signals.READY)


class FlakyCamera:
    """Fails to open twice (unplugged), then works; later stalls (returns None)."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame
        self.opens = 0
        self.stall = False

    def open(self) -> None:
        self.opens += 1
        if self.opens <= 2:
            raise CameraError("no camera at /dev/video9: check the USB cable")

    def read(self) -> Any:
        from drivers.base import Frame

        time.sleep(0.01)
        return None if self.stall else Frame(self.frame, time.monotonic())

    def close(self) -> None:
        pass


def test_capture_reopens_a_pulled_camera_and_detects_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.capture as service

    monkeypatch.setattr(service, "STALL_S", 0.3)
    cam = FlakyCamera(blank_frame())
    stop = threading.Event()
    cap = CaptureThread(cam, stop)
    cap.start()
    try:
        assert wait_until(lambda: cap.newest()[0] > 0, timeout_s=6)
        assert cap.reopens == 2 and cap.fault is None
        cam.stall = True
        assert wait_until(lambda: cap.fault is not None and "no frame" in cap.fault)
        cam.stall = False
        assert wait_until(lambda: cap.fault is None)
    finally:
        stop.set()
        cap.join(timeout=3)
