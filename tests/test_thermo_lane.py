"""The real lane with the real MLX90614 driver on the emulated chip: every fault kind the chip
can show ends in FAULT on the lights and never in PASS, no exception escapes the scan loop, the
lane recovers by itself when the chip answers again, and the cold-night fever is caught."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulated_mlx90614 import EmulatedBus, EmulatedMLX90614
from qrframes import blank_frame, make_frame
from waiting import wait_until

from drivers.base import Frame
from drivers.indicators import mock_pin_factory
from drivers.mlx90614 import MLX90614, RAM_TA, RAM_TOBJ1
from scanner import hardware, signals
from scanner.clock import Clock
from scanner.config import parse_config
from scanner.service import Lane
from scanner.store import Store

NIGHT_C = 5.0
INDOOR_C = 22.0

# The thermometer section is the shipped one apart from timing shortened for tests; the site is
# calibrated for cold nights: body = object + 1.5 + 0.15 * (25 - ambient).
LANE_TOML = """
[checkpoint]
mode = "simulated"
id = "TOLL-1"
device_id = "toll-dev"
kind = "highway_exit"
[camera]
source = "replay"
replay_path = "x"
[thermometer]
source = "scripted"
poll_interval_s = 0.02
presence_hold_s = 0.05
samples = 3
offset_c = 1.5
ambient_coeff = 0.15
reference_ambient_c = 25.0
calibration_version = "toll-gate-2"
fault_after = 3
stuck_after_s = {stuck_after_s}
[decode]
# a budget no loaded machine runs out of: the tests must not depend on its speed
budget_ms = 2000
[indicators]
source = "mock"
verdict_hold_s = 0.3
[policy]
pairing_window_s = 1.0
cooldown_s = 0.3
[clock]
trust = "always"
"""




class SwitchCamera:
    """A camera whose picture the test changes: nobody, then a person holding up a code."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self._seq = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame:
        time.sleep(1 / 30)
        self._seq += 1
        return Frame(self.image, time.monotonic(), self._seq)

    def close(self) -> None:
        pass


class Reopener:
    """How the driver reopens /dev/i2c-1: a fresh bus object on the same chip."""

    def __init__(self, chip: EmulatedMLX90614) -> None:
        self.chip = chip
        self.buses: list[EmulatedBus] = []

    def __call__(self) -> EmulatedBus:
        self.buses.append(EmulatedBus({0x5A: self.chip}))
        return self.buses[-1]


class ThermoLane:
    """The lane in-process: MLX90614 driver (default settings) on an emulated chip with LSB
    jitter, a camera the test switches, MockFactory pins, a real outbox."""

    def __init__(self, tmp_path: Path, trust: Any, ambient_c: float = INDOOR_C,
                 stuck_after_s: float = 120.0) -> None:
        cfg = parse_config(LANE_TOML.format(stuck_after_s=stuck_after_s), str(tmp_path / "lane.toml"))
        self.cfg = replace(cfg, store=replace(cfg.store, path=str(tmp_path / "outbox.db")))
        self.ambient_c = ambient_c
        self.chip = EmulatedMLX90614(noise_lsb=1, seed=3)
        self.chip.set_ambient(ambient_c)
        self.chip.set_object(ambient_c)
        self.reopen = Reopener(self.chip)
        self.sensor = MLX90614(self.reopen(), bus_number=1, reopen=self.reopen)
        self.camera = SwitchCamera(blank_frame())
        self.factory = mock_pin_factory()
        self.store = Store.open(self.cfg.store.path)
        self.devices = hardware.open_devices(self.cfg, frames=[blank_frame()], pin_factory=self.factory,
                                             thermometer=self.sensor)
        self.devices.camera = self.camera
        self.shown: list[str] = []
        show = self.devices.indicators.show
        self.devices.indicators.show = lambda p: (self.shown.append(p.name), show(p))[1]  # type: ignore[method-assign]
        self.rows: list[dict[str, Any]] = []
        self.lane = Lane(self.cfg, self.devices, trust, self.store, Clock("always"),
                         on_record=lambda row, o, st: self.rows.append(row))
        self.escaped: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.lane.run()
        except BaseException as exc:  # noqa: BLE001 - the test asserts nothing escapes
            self.escaped.append(exc)

    def __enter__(self) -> ThermoLane:
        self.thread.start()
        assert wait_until(lambda: self.lane._pattern is signals.READY)
        return self

    def __exit__(self, *exc: object) -> None:
        self.lane.stop_event.set()
        self.thread.join(timeout=5)
        hardware.close_devices(self.devices)
        self.store.close()
        self.factory.reset()

    def person(self, code: str, skin_c: float) -> None:
        self.chip.set_object(skin_c)
        self.camera.image = make_frame(code)

    def leave(self) -> None:
        self.chip.set_object(self.ambient_c)
        self.camera.image = blank_frame()

    def verdicts(self) -> list[str]:
        return [r["verdict"] for r in self.store.rows()]


def test_cold_night_fever_is_caught_by_the_lane(tmp_path: Path, trust: Any, codes: Any) -> None:
    """Ambient 5 °C, forehead 33.5 °C, body 38.0 °C after calibration: DENY FEVER."""
    with ThermoLane(tmp_path, trust, ambient_c=NIGHT_C) as t:
        t.person(codes.hc("green"), skin_c=33.5)
        assert wait_until(lambda: len(t.rows) == 1)
        row = t.store.rows()[0]
        assert row["verdict"] == "DENY" and row["reasons"] == ["FEVER"]
        assert row["temperature_c"] == pytest.approx(38.0, abs=0.1)
        assert row["object_c"] == pytest.approx(33.5, abs=0.05) and row["ambient_c"] == pytest.approx(5.0, abs=0.05)
        assert row["temp_status"] == "OK" and row["calibration_version"] == "toll-gate-2"
        assert t.factory.pin(27).state is True and t.factory.pin(17).state is False  # red, not green
        assert t.escaped == []


def test_record_keeps_raw_object_ambient_body_and_calibration_version(tmp_path: Path, trust: Any,
                                                                      codes: Any) -> None:
    with ThermoLane(tmp_path, trust) as t:
        t.person(codes.hc("green"), skin_c=35.0)
        assert wait_until(lambda: len(t.rows) == 1)
    row = Store.open(tmp_path / "outbox.db").rows()[0]  # as committed, after a reopen
    assert row["verdict"] == "PASS"
    # body = 35.0 + 1.5 + 0.15 * (25 - 22) = 36.95
    assert row["temperature_c"] == pytest.approx(36.95, abs=0.1)
    assert row["object_c"] == pytest.approx(35.0, abs=0.05)
    assert row["ambient_c"] == pytest.approx(INDOOR_C, abs=0.05)
    assert row["calibration_version"] == "toll-gate-2" and row["temp_status"] == "OK"


PERSISTENT_FAULTS = ["nack", "eio", "timeout", "bad_pec", "all_ff", "zero", "error_flag"]


@pytest.mark.parametrize("fault", PERSISTENT_FAULTS)
def test_persistent_fault_shows_fault_never_pass_and_recovers(fault: str, tmp_path: Path, trust: Any,
                                                              codes: Any) -> None:
    with ThermoLane(tmp_path, trust) as t:
        t.chip.inject(fault, count=None)
        assert wait_until(lambda: t.lane._pattern is signals.FAULT)
        assert t.lane.faults() and t.lane.faults()[0].startswith("thermometer: MLX90614 at 0x5a on bus 1: ")
        t.person(codes.hc("green"), skin_c=35.0)  # a healthy person arrives at a broken sensor
        assert wait_until(lambda: len(t.rows) >= 1)
        row = t.store.rows()[0]
        assert row["verdict"] == "REVIEW" and row["reasons"] == ["TEMP_UNAVAILABLE"]
        assert row["temperature_c"] is None
        assert wait_until(lambda: t.lane._pattern is signals.FAULT)  # back to FAULT after the verdict
        assert t.sensor.down and t.sensor.reopens >= 1 and t.reopen.buses[0].closed
        assert "PASS" not in t.verdicts() and "PASS" not in t.shown
        t.leave()
        t.chip.clear_faults()  # the cable is pushed back in
        assert wait_until(lambda: t.lane._pattern is signals.READY)
        assert not t.sensor.down and t.lane.faults() == []
        if fault == "nack":  # and the lane works again by itself
            time.sleep(t.cfg.policy.cooldown_s)
            t.person(codes.hc("green"), skin_c=35.0)
            assert wait_until(lambda: "PASS" in t.verdicts())
        assert t.escaped == [] and t.thread.is_alive()


def test_intermittent_pec_errors_still_measure(tmp_path: Path, trust: Any, codes: Any) -> None:
    with ThermoLane(tmp_path, trust) as t:
        t.chip.inject("bad_pec", count=None, every=3)  # every third answer is corrupted
        t.person(codes.hc("green"), skin_c=35.0)
        assert wait_until(lambda: len(t.rows) == 1)
        row = t.store.rows()[0]
        assert row["verdict"] == "PASS"
        assert row["temperature_c"] == pytest.approx(36.95, abs=0.1)
        assert t.sensor.failure_counts()["pec"] > 0 and not t.sensor.down
        assert "FAULT" not in t.shown
        assert t.escaped == []


def test_error_flag_on_the_object_only_is_a_fault(tmp_path: Path, trust: Any, codes: Any) -> None:
    with ThermoLane(tmp_path, trust) as t:
        t.chip.inject("error_flag", count=None, cmd=RAM_TOBJ1)  # ambient still reads fine
        t.person(codes.hc("green"), skin_c=35.0)
        assert wait_until(lambda: len(t.rows) == 1)
        assert t.verdicts() == ["REVIEW"] and "FAULT" in t.shown
        assert "error flag set" in t.lane.screener.last_error
        assert t.escaped == []


def test_frozen_sensor_shows_fault_until_it_moves_again(tmp_path: Path, trust: Any, codes: Any) -> None:
    with ThermoLane(tmp_path, trust, stuck_after_s=1.0) as t:
        t.chip.inject("stuck", count=None, cmd=RAM_TA)
        t.chip.inject("stuck", count=None, cmd=RAM_TOBJ1)
        assert wait_until(lambda: t.lane._pattern is signals.FAULT)
        assert "readings frozen" in t.lane.faults()[0]
        t.person(codes.hc("green"), skin_c=35.0)  # the frozen sensor cannot see them
        assert wait_until(lambda: len(t.rows) == 1)
        assert t.verdicts() == ["REVIEW"]
        t.chip.clear_faults()
        assert wait_until(lambda: t.lane._pattern is signals.READY)
        assert t.escaped == []


def test_real_factory_closes_the_bus_when_the_chip_does_not_answer_at_start(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    import smbus2

    from drivers.base import SensorError

    buses: list[EmulatedBus] = []

    def fake_smbus(n: int) -> EmulatedBus:
        buses.append(EmulatedBus({}))  # nothing at 0x5a
        return buses[-1]

    monkeypatch.setattr(smbus2, "SMBus", fake_smbus)
    cfg = parse_config('[checkpoint]\nmode = "real"\nid = "T-GATE-1"\ndevice_id = "t-pi-1"\n'
                       '[thermometer]\nsource = "mlx90614"\n', str(tmp_path / "site.toml"))
    thermo = hardware.make_thermometer(cfg)
    message = ""
    for _ in range(500):  # opening runs on its own thread: wait for its answer
        try:
            thermo.object_temperature()
        except SensorError as e:
            message = str(e)
        if "no ACK" in message:
            break
        time.sleep(0.01)
    assert "no ACK" in message
    assert len(buses) == 1 and buses[0].closed  # the next try opens a fresh bus; no fd leaks
    with pytest.raises(SensorError, match="no ACK"):
        thermo.object_temperature()  # within the open back-off: no new bus
    assert len(buses) == 1
