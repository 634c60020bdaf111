"""I2C errors classified by condition, not by one controller's errno, and rate-limited logs.

Issue 12 item 17: on the `dtoverlay=i2c-gpio` software bus a NACK is errno 6 (ENXIO), not 121;
the driver did not retry it and called the sensor down after one try. And a chip that NACKs
each first try logged a WARNING per read (~40 lines a second). Time is a FakeClock throughout.
"""

from __future__ import annotations

import errno
import logging
import re

import pytest
from emulated_mlx90614 import EmulatedBus, EmulatedMLX90614, FakeClock

from drivers.base import SensorError
from drivers.mlx90614 import MLX90614, RETRYABLE_KINDS, classify_errno
from drivers.ratelimit import MAX_KINDS, LogRateLimiter

LOGGER = "drivers.mlx90614"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def chip(clock: FakeClock) -> EmulatedMLX90614:
    chip = EmulatedMLX90614(clock=clock)
    clock.now += 1.0  # powered on long ago: POR over
    chip.set_object(36.6)
    return chip


@pytest.fixture
def bus(chip: EmulatedMLX90614) -> EmulatedBus:
    return EmulatedBus({0x5A: chip})


@pytest.fixture
def sensor(bus: EmulatedBus, clock: FakeClock) -> MLX90614:
    return MLX90614(bus, sleep=clock.sleep, monotonic=clock, bus_number=3, startup_s=0.0,
                    discard_samples=0)


def _lines(caplog: pytest.LogCaptureFixture, level: int, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and word in r.getMessage()]


@pytest.mark.parametrize(
    ("code", "kind"),
    [(errno.ENXIO, "nack"), (errno.EREMOTEIO, "nack"), (errno.ETIMEDOUT, "timeout"),
     (errno.EAGAIN, "arbitration"), (errno.EIO, "eio"), (errno.EBUSY, "bus"),
     (errno.EBADF, "bus"), (errno.ENODEV, "bus"), (None, "bus")],
)  # fmt: skip
def test_classify_errno_by_condition(code: int | None, kind: str) -> None:
    assert classify_errno(code) == kind
    assert (kind in RETRYABLE_KINDS) == (kind != "bus")


def test_enxio_nack_on_every_first_try_reads_fine_and_is_not_down(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.inject("nack", count=None, every=2, start=1, errno_code=errno.ENXIO)  # i2c-gpio
    for _ in range(50):
        assert sensor.object_temperature() == pytest.approx(36.6, abs=0.011)
    assert not sensor.down
    assert sensor.failure_counts()["nack"] == 50
    assert [t.error for t in bus.log] == [errno.ENXIO, None] * 50


@pytest.mark.parametrize(
    ("code", "kind"),
    [(errno.ENXIO, "nack"), (errno.EREMOTEIO, "nack"), (errno.ETIMEDOUT, "timeout"),
     (errno.EAGAIN, "arbitration"), (errno.EIO, "eio")],
)  # fmt: skip
def test_every_transient_errno_is_retried(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus, clock: FakeClock,
    code: int, kind: str,
) -> None:
    chip.inject("nack", count=2, errno_code=code)
    assert sensor.object_temperature() == pytest.approx(36.6, abs=0.011)
    assert sensor.failure_counts()[kind] == 2 and sum(sensor.failure_counts().values()) == 2
    assert len(bus.log) == 3 and clock.sleeps == [pytest.approx(0.01), pytest.approx(0.02)]


def test_a_non_transient_errno_is_tried_once_and_counted_as_bus(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.inject("nack", count=None, errno_code=errno.ENODEV)
    with pytest.raises(SensorError, match=r"errno 19\) after 1 try: check the I2C bus"):
        sensor.object_temperature()
    assert len(bus.log) == 1 and sensor.failure_counts()["bus"] == 1


def test_persistent_enxio_nack_still_ends_as_sensor_down(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus, caplog: pytest.LogCaptureFixture
) -> None:
    chip.inject("nack", count=None, errno_code=errno.ENXIO)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            with pytest.raises(SensorError, match=r"^MLX90614 at 0x5a on bus 3: reading object Tobj1 "
                               r"\(0x07\): no ACK \(errno 6\) after 3 tries: .*i2cdetect -y 3$"):
                sensor.object_temperature()
        assert sensor.down and len(bus.log) == 9
        for _ in range(20):  # fail closed: every read while down is an error, never a number
            with pytest.raises(SensorError, match="no ACK"):
                sensor.object_temperature()
    assert len(_lines(caplog, logging.ERROR, "mlx90614 down")) == 1
    assert sensor.failure_counts()["nack"] == 9 + 20


def test_thousand_reads_with_a_nack_each_first_try_log_a_handful_of_warnings(
    sensor: MLX90614, chip: EmulatedMLX90614, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    chip.inject("nack", count=None, every=2, start=1, errno_code=errno.ENXIO)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(1000):
            clock.now += 0.025  # the scan loop reads 40 times a second
            assert sensor.object_temperature() == pytest.approx(36.6, abs=0.011)
        elapsed_s = clock.now - 101.0
        warnings = _lines(caplog, logging.WARNING, "read_failed")
        assert 1 <= len(warnings) <= 1 + elapsed_s / 10 + 1  # first, then one per 10 s at most
        assert len(warnings) <= 6  # about 35 s of fake time
        assert "kind=nack" in warnings[0] and "problem='no ACK (errno 6)'" in warnings[0]
        assert "held_back" not in warnings[0]
        clock.now += 10.0
        sensor.object_temperature()  # the next line sums up what was held back
    warnings = _lines(caplog, logging.WARNING, "read_failed")
    held = [int(m.group(1)) for w in warnings if (m := re.search(r"held_back=(\d+) over_s=\d+", w))]
    assert len(held) == len(warnings) - 1  # every line after the first carries its count
    assert len(warnings) + sum(held) == 1001  # nothing hidden: each failed try is accounted for
    assert not sensor.down and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_each_kind_gets_its_own_first_warning(
    sensor: MLX90614, chip: EmulatedMLX90614, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for code in (errno.ENXIO, errno.ENXIO, errno.ETIMEDOUT, errno.EAGAIN, errno.ENXIO):
            chip.inject("nack", count=1, errno_code=code)
            sensor.object_temperature()
    kinds = [re.search(r"kind=(\w+)", w).group(1)  # type: ignore[union-attr]
             for w in _lines(caplog, logging.WARNING, "read_failed")]
    assert kinds == ["nack", "timeout", "arbitration"]


def test_a_flapping_sensor_logs_down_and_recovered_at_most_once_per_interval(
    sensor: MLX90614, chip: EmulatedMLX90614, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(30):
            chip.inject("nack", count=None, errno_code=errno.ENXIO)
            for _ in range(3):
                with pytest.raises(SensorError):
                    sensor.object_temperature()
            assert sensor.down
            chip.clear_faults()
            sensor.object_temperature()
            assert not sensor.down
    assert len(_lines(caplog, logging.ERROR, "mlx90614 down")) == 1
    assert len(_lines(caplog, logging.WARNING, "mlx90614 recovered")) == 1


# -- the limiter on its own ----------------------------------------------------------------


def test_limiter_first_at_once_then_one_per_interval_with_the_count() -> None:
    clock = FakeClock(start=0.0)
    limit = LogRateLimiter(10.0, clock)
    assert limit.allow("nack") == 0
    for _ in range(5):
        clock.now += 1.0
        assert limit.allow("nack") is None
    assert limit.held_back("nack") == 5
    assert limit.allow("pec") == 0  # another kind is not held back by this one
    clock.now += 5.0  # 10 s after the first line
    assert limit.allow("nack") == 5
    assert limit.allow("nack") is None and limit.held_back("nack") == 1


def test_limiter_log_appends_held_back_and_skips_disabled_levels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(start=0.0)
    limit = LogRateLimiter(10.0, clock)
    logger = logging.getLogger("test.ratelimit")
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert not limit.log(logger, logging.INFO, "k", "event=x")  # below the level: not counted
        assert limit.log(logger, logging.WARNING, "k", "event=x n=%d", 1)
        clock.now += 3.0
        assert not limit.log(logger, logging.WARNING, "k", "event=x n=%d", 2)
        clock.now += 9.0
        assert limit.log(logger, logging.WARNING, "k", "event=x n=%d", 3)
    assert [r.getMessage() for r in caplog.records] == ["event=x n=1", "event=x n=3 held_back=1 over_s=12"]


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_limiter_refuses_a_non_positive_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LogRateLimiter(interval)


def test_limiter_memory_is_bounded() -> None:
    clock = FakeClock(start=0.0)
    limit = LogRateLimiter(10.0, clock)
    for n in range(MAX_KINDS * 3):
        assert limit.allow(n) == 0
    assert len(limit._last) == MAX_KINDS
    assert limit.allow(MAX_KINDS * 3 - 1) is None  # the most recent kinds are still remembered
