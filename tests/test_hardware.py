"""The device factory's thermometer wrapper: a sensor missing at start is retried with back-off,
opening never blocks the scan loop, and the lane recovers when the cable is pushed back in."""

from __future__ import annotations

import threading
import time

import pytest

from drivers.base import SensorError
from drivers.thermometer_scripted import ScriptedThermometer
from scanner.hardware import ReopeningThermometer


class Factory:
    def __init__(self, fail_times: int, delay_s: float = 0.0) -> None:
        self.fail_times = fail_times
        self.calls = 0
        self.delay_s = delay_s
        self.release = threading.Event()

    def __call__(self) -> ScriptedThermometer:
        self.calls += 1
        if self.delay_s:
            self.release.wait(self.delay_s)
        if self.calls <= self.fail_times:
            raise OSError(121, "no ACK at 0x5a: check SDA/SCL wiring")
        return ScriptedThermometer(object_c=30.0, ambient_c=22.0)


def test_backs_off_between_open_attempts_then_recovers() -> None:
    now = [0.0]
    f = Factory(fail_times=2)
    t = ReopeningThermometer(f, monotonic=lambda: now[0], background=False)
    with pytest.raises(SensorError, match="check SDA/SCL"):
        t.object_temperature()
    assert f.calls == 1
    for _ in range(5):  # within the 1 s back-off: no new attempt, the last reason again
        with pytest.raises(SensorError, match="check SDA/SCL"):
            t.ambient_temperature()
    assert f.calls == 1
    now[0] = 1.0
    with pytest.raises(SensorError):
        t.object_temperature()
    assert f.calls == 2
    now[0] = 2.5  # back-off doubled to 2 s: not yet
    with pytest.raises(SensorError):
        t.object_temperature()
    assert f.calls == 2
    now[0] = 3.0
    assert t.object_temperature() == 30.0 and f.calls == 3
    assert t.ambient_temperature() == 22.0 and f.calls == 3  # opened once, kept
    t.close()


def test_opening_runs_beside_the_scan_loop() -> None:
    f = Factory(fail_times=0, delay_s=5.0)  # a slow start-up (power-on wait, retries)
    t = ReopeningThermometer(f)
    with pytest.raises(SensorError, match="not opened yet"):
        t.object_temperature()  # raises at once (a blocking open would have returned 30.0 here)
    with pytest.raises(SensorError):
        t.object_temperature()
    assert f.calls == 1  # one opener at a time
    f.release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert t.object_temperature() == 30.0
            break
        except SensorError:
            time.sleep(0.01)
    else:
        pytest.fail("the thermometer never opened")
    t.close()
