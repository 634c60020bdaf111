"""The real MLX90614 driver against the emulated chip (tests/emulated_mlx90614.py), plus the
scripted thermometer. No wall-clock assertions: time is a FakeClock the driver sleeps on."""

from __future__ import annotations

import errno
import logging
import threading
import time

import emulated_mlx90614
import pytest
import smbus2
from emulated_mlx90614 import EmulatedBus, EmulatedMLX90614, FakeClock
from smbus2 import i2c_msg

from drivers.base import SensorError, Thermometer
from drivers.mlx90614 import (
    EE_EMISSIVITY,
    EEPROM_WAIT_S,
    MLX90614,
    RAM_TA,
    RAM_TOBJ1,
    EE_0x2F,
    crc8,
    open_bus,
    raw_to_celsius,
)
from drivers.thermometer_scripted import ScriptedThermometer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def chip(clock: FakeClock) -> EmulatedMLX90614:
    chip = EmulatedMLX90614(clock=clock)
    clock.now += 1.0  # powered on long ago: POR over
    return chip


@pytest.fixture
def bus(chip: EmulatedMLX90614) -> EmulatedBus:
    return EmulatedBus({0x5A: chip})


def make(bus: EmulatedBus, clock: FakeClock, **options: object) -> MLX90614:
    """A driver on a chip that settled long ago: no start-up wait, no discarded samples."""
    options.setdefault("startup_s", 0.0)
    options.setdefault("discard_samples", 0)
    return MLX90614(bus, sleep=clock.sleep, monotonic=clock, bus_number=1, **options)  # type: ignore[arg-type]


@pytest.fixture
def sensor(bus: EmulatedBus, clock: FakeClock) -> MLX90614:
    return make(bus, clock)


# -- PEC and conversion ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pec"),
    [("002E0000", 0x6F), ("002E5A00", 0xE1), ("B4FF", 0xE8), ("B407B5F73A", 0xDF)],
)
def test_crc8_datasheet_vectors(data: str, pec: int) -> None:
    assert crc8(bytes.fromhex(data)) == pec


@pytest.mark.parametrize(
    ("raw", "celsius"),
    [(0x3AF7, 28.75), (0x27AD, -70.01), (0x7FFF, 382.19), (0x0000, -273.15), (0x3A0A, 24.01)],
)
def test_raw_to_celsius(raw: int, celsius: float) -> None:
    assert raw_to_celsius(raw) == pytest.approx(celsius, abs=1e-9)


def test_object_read_is_one_combined_transaction_with_pec(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.set_raw(RAM_TOBJ1, 0x3AF7)
    assert sensor.object_temperature() == pytest.approx(28.75)
    assert len(bus.log) == 1
    (txn,) = bus.log
    assert (txn.kind, txn.cmd, txn.data) == ("read", 0x07, bytes.fromhex("F73ADF"))


def test_ambient_and_object_follow_the_scene(sensor: MLX90614, chip: EmulatedMLX90614) -> None:
    chip.set_ambient(21.5)
    chip.set_object(36.62)
    assert sensor.ambient_temperature() == pytest.approx(21.5, abs=0.011)
    assert sensor.object_temperature() == pytest.approx(36.62, abs=0.011)
    chip.set_object(38.1)
    assert sensor.object_temperature() == pytest.approx(38.1, abs=0.011)


def test_normal_reads_never_write_eeprom(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    for _ in range(5):
        sensor.object_temperature()
        sensor.ambient_temperature()
    sensor.startup_report()
    assert chip.eeprom_writes == [] and chip.commands == []
    assert {t.kind for t in bus.log} == {"read"}
    assert sensor.failure_counts() == dict.fromkeys(sensor.failure_counts(), 0)


def test_eeprom_identity_reads(sensor: MLX90614) -> None:
    assert sensor.emissivity() == 1.0
    assert sensor.config_register() == 0x9FB4
    assert sensor.chip_id() == "2a4c1b639c070c1f"


# -- faults ------------------------------------------------------------------------------

FAULT_COUNTER = {
    "nack": "nack", "eio": "eio", "timeout": "timeout", "arbitration": "arbitration",
    "bad_pec": "pec", "all_ff": "pec", "zero": "sentinel", "error_flag": "error_flag",
}


@pytest.mark.parametrize("fault", sorted(FAULT_COUNTER))
def test_transient_fault_is_retried_then_recovers(
    fault: str, sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus, clock: FakeClock
) -> None:
    chip.set_object(36.5)
    chip.inject(fault, count=2)
    assert sensor.object_temperature() == pytest.approx(36.5, abs=0.011)
    counts = sensor.failure_counts()
    assert counts[FAULT_COUNTER[fault]] == 2
    assert sum(counts.values()) == 2
    assert len(bus.log) == 3  # two failed tries, one good, each one transaction
    assert clock.sleeps == [pytest.approx(0.01), pytest.approx(0.02)]


FAULT_MESSAGE = {
    "nack": "reading object Tobj1 (0x07): no ACK (errno 121) after 3 tries: check SDA/SCL"
    " wiring, 3.3 V supply and i2cdetect -y 1",
    "eio": "I/O error (errno 5) after 3 tries: check wiring and pull-ups, lower the bus speed",
    "timeout": "bus timeout (errno 110) after 3 tries: bus stuck or clock stretching",
    "arbitration": "arbitration lost (errno 11) after 3 tries: check for another master",
    "bad_pec": "PEC mismatch",
    "all_ff": "got 0xff",
    "zero": "read 0x0000 (-273.15 C) after 3 tries: check wiring and the 3.3 V supply",
    "error_flag": "error flag set (raw 0x",
}


@pytest.mark.parametrize("fault", sorted(FAULT_MESSAGE))
def test_persistent_fault_raises_sensor_error_naming_the_fix(
    fault: str, sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.inject(fault, count=None)
    with pytest.raises(SensorError) as info:
        sensor.object_temperature()
    message = str(info.value)
    assert message.startswith("MLX90614 at 0x5a on bus 1: ")
    assert FAULT_MESSAGE[fault] in message
    assert ": check" in message or "power-cycle" in message
    assert isinstance(info.value, OSError)
    assert sensor.failure_counts()[FAULT_COUNTER[fault]] == 3
    assert len(bus.log) == 3


def test_intermittent_pec_errors_are_absorbed_by_the_retries(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.set_object(36.2)
    chip.inject("bad_pec", count=None, every=2)  # every other answer corrupted on the wire
    for _ in range(10):
        assert sensor.object_temperature() == pytest.approx(36.2, abs=0.011)
    # answers 2, 4, 6, ... are bad: the first read is clean, each later one needs one retry
    assert sensor.failure_counts()["pec"] == 9 and not sensor.down
    assert len(bus.log) == 19


def test_retries_parameter_bounds_the_tries(
    bus: EmulatedBus, chip: EmulatedMLX90614, clock: FakeClock
) -> None:
    sensor = make(bus, clock, retries=5, backoff_s=0.005)
    chip.inject("nack", count=None)
    with pytest.raises(SensorError, match="after 5 tries"):
        sensor.ambient_temperature()
    assert len(bus.log) == 5
    assert clock.sleeps == pytest.approx([0.005, 0.010, 0.015, 0.020])


def test_mixed_failures_are_all_named(sensor: MLX90614, chip: EmulatedMLX90614) -> None:
    chip.inject("nack", count=1)
    chip.inject("bad_pec", count=None)
    with pytest.raises(SensorError, match=r"\(failures: nack, pec\)"):
        sensor.object_temperature()
    assert sensor.failure_counts()["nack"] == 1
    assert sensor.failure_counts()["pec"] == 2


def test_error_flag_on_object_only_leaves_ambient_readable(
    sensor: MLX90614, chip: EmulatedMLX90614
) -> None:
    chip.inject("error_flag", count=None, cmd=RAM_TOBJ1)
    assert sensor.ambient_temperature() == pytest.approx(24.0, abs=0.011)
    with pytest.raises(SensorError, match="power-cycle the sensor"):
        sensor.object_temperature()


@pytest.mark.parametrize(
    ("setter", "celsius", "limits"),
    [("set_object", -100.0, "-70.0..382.2"), ("set_ambient", 130.0, "-40.0..125.0"),
     ("set_ambient", -45.0, "-40.0..125.0")],
)
def test_out_of_range_is_rejected(
    setter: str, celsius: float, limits: str, sensor: MLX90614, chip: EmulatedMLX90614
) -> None:
    getattr(chip, setter)(celsius)
    read = sensor.object_temperature if setter == "set_object" else sensor.ambient_temperature
    with pytest.raises(SensorError, match=f"outside {limits} C after 3 tries"):
        read()
    assert sensor.failure_counts()["range"] == 3


def test_range_edges_are_accepted(sensor: MLX90614, chip: EmulatedMLX90614) -> None:
    chip.set_raw(RAM_TOBJ1, 0x7FFF)
    assert sensor.object_temperature() == pytest.approx(382.19)
    chip.set_raw(RAM_TA, 19907)
    assert sensor.ambient_temperature() == pytest.approx(124.99)
    chip.set_raw(RAM_TA, 11658)
    assert sensor.ambient_temperature() == pytest.approx(-39.99)
    chip.set_raw(RAM_TA, 19908)  # 125.01 C
    with pytest.raises(SensorError, match="outside"):
        sensor.ambient_temperature()


def test_stuck_sensor_is_not_detectable_per_read(sensor: MLX90614, chip: EmulatedMLX90614) -> None:
    """A frozen value passes every per-read check; screening must catch flat lines."""
    chip.set_object(30.0)
    chip.inject("stuck", count=None)
    chip.set_object(37.0)
    assert sensor.object_temperature() == pytest.approx(30.0, abs=0.011)
    chip.clear_faults()
    assert sensor.object_temperature() == pytest.approx(37.0, abs=0.011)


def test_no_chip_at_address_names_i2cdetect(bus: EmulatedBus, clock: FakeClock) -> None:
    sensor = make(bus, clock, address=0x5B)
    with pytest.raises(SensorError, match=r"^MLX90614 at 0x5b on bus 1: .*i2cdetect -y 1$"):
        sensor.object_temperature()


def test_other_errno_is_not_retried(clock: FakeClock) -> None:
    class BusyBus:
        calls = 0

        def i2c_rdwr(self, *msgs: i2c_msg) -> None:
            BusyBus.calls += 1
            raise OSError(errno.EBUSY, "Device or resource busy")

        def close(self) -> None:
            pass

    sensor = MLX90614(BusyBus(), sleep=clock.sleep, monotonic=clock, startup_s=0)
    with pytest.raises(SensorError, match="unload the mlx90614 IIO module") as info:
        sensor.object_temperature()
    assert BusyBus.calls == 1 and clock.sleeps == []
    assert "on bus" not in str(info.value)  # bus number unknown: not invented


# -- power-up ----------------------------------------------------------------------------


def test_startup_waits_out_the_por_time_via_injected_sleep(clock: FakeClock) -> None:
    chip = EmulatedMLX90614(clock=clock)  # powered on now, together with the driver
    sensor = MLX90614(EmulatedBus({0x5A: chip}), sleep=clock.sleep, monotonic=clock)
    clock.now += 0.1  # the rest of the service starting up
    chip.set_object(36.0)
    assert sensor.object_temperature() == pytest.approx(36.0, abs=0.011)
    assert clock.sleeps == [pytest.approx(0.15)]
    assert sensor.failure_counts()["sentinel"] == 0
    sensor.ambient_temperature()
    assert len(clock.sleeps) == 1  # only the first access waits


def test_without_the_startup_wait_por_data_is_rejected(clock: FakeClock) -> None:
    chip = EmulatedMLX90614(clock=clock)
    sensor = MLX90614(EmulatedBus({0x5A: chip}), sleep=clock.sleep, monotonic=clock,
                      startup_s=0)
    with pytest.raises(SensorError, match="0x0000"):
        sensor.object_temperature()
    assert sensor.failure_counts()["sentinel"] == 3


def test_no_wait_when_created_long_after_power_on(bus: EmulatedBus, clock: FakeClock) -> None:
    sensor = MLX90614(bus, sleep=clock.sleep, monotonic=clock)
    clock.now += 5.0
    sensor.object_temperature()
    assert clock.sleeps == []


# -- discarded samples, sensor down, bus reopened -----------------------------------


def test_first_samples_after_power_up_are_discarded(bus: EmulatedBus, clock: FakeClock,
                                                    chip: EmulatedMLX90614) -> None:
    sensor = make(bus, clock, discard_samples=2)
    chip.set_object(36.4)
    assert sensor.object_temperature() == pytest.approx(36.4, abs=0.011)
    assert len(bus.reads(RAM_TOBJ1)) == 3  # two dropped, the third returned
    sensor.ambient_temperature()
    assert len(bus.reads(RAM_TA)) == 3  # each register settles on its own
    sensor.object_temperature()
    sensor.emissivity()  # EEPROM reads are never discarded
    assert len(bus.reads(RAM_TOBJ1)) == 4 and len(bus.reads(EE_EMISSIVITY)) == 1


class Reopener:
    """Bus factory for the driver: a fresh EmulatedBus on the same chip, or an error."""

    def __init__(self, chip: EmulatedMLX90614) -> None:
        self.chip = chip
        self.buses: list[EmulatedBus] = []
        self.error: OSError | None = None

    def __call__(self) -> EmulatedBus:
        if self.error is not None:
            raise self.error
        self.buses.append(EmulatedBus({0x5A: self.chip}))
        return self.buses[-1]


def test_sensor_down_probes_once_per_read_reopens_with_backoff_and_recovers(
    bus: EmulatedBus, chip: EmulatedMLX90614, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    reopen = Reopener(chip)
    sensor = make(bus, clock, reopen=reopen, discard_samples=2)
    sensor.object_temperature()  # settled: the start-up discards are done
    chip.inject("nack", count=None)
    for _ in range(3):
        with pytest.raises(SensorError, match="no ACK"):
            sensor.object_temperature()
    assert sensor.down and reopen.buses == []
    sleeps_before = len(clock.sleeps)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="drivers.mlx90614"):
        with pytest.raises(SensorError, match="after 1 try"):
            sensor.object_temperature()  # reopens at once, then probes once
        assert len(reopen.buses) == 1 and bus.closed
        for _ in range(20):  # within the back-off: no reopen, one probe each, no sleeping
            with pytest.raises(SensorError):
                sensor.object_temperature()
    assert len(reopen.buses) == 1 and len(reopen.buses[0].log) == 21
    assert len(clock.sleeps) == sleeps_before
    assert not [r for r in caplog.records if "read_failed" in r.getMessage() and r.levelno >= logging.WARNING]
    clock.now += 1.0
    with pytest.raises(SensorError):
        sensor.object_temperature()
    assert len(reopen.buses) == 2  # 1 s later
    clock.now += 1.0
    with pytest.raises(SensorError):
        sensor.object_temperature()
    assert len(reopen.buses) == 2  # back-off doubled to 2 s
    clock.now += 0.5  # the next reopen is due only 2 s after the last one
    chip.clear_faults()
    chip.set_object(37.9)
    with caplog.at_level(logging.INFO, logger="drivers.mlx90614"):
        assert sensor.object_temperature() == pytest.approx(37.9, abs=0.011)
    assert not sensor.down and len(reopen.buses) == 2
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert len(reopen.buses[-1].reads(RAM_TOBJ1)) == 3  # it may have lost power: two dropped
    assert sensor.health() == {"down": False, "failed_reads_in_a_row": 0, "reopens": 2,
                               "failures": sensor.failure_counts()}
    assert sensor.failure_counts()["nack"] == 3 * 3 + 23


def test_failed_reopen_names_the_open_error_and_is_retried(
    bus: EmulatedBus, chip: EmulatedMLX90614, clock: FakeClock
) -> None:
    reopen = Reopener(chip)
    reopen.error = SensorError("no I2C bus /dev/i2c-1: enable I2C (raspi-config nonint do_i2c 0) and reboot")
    sensor = make(bus, clock, reopen=reopen, down_after=2)
    chip.inject("eio", count=None)
    for _ in range(2):
        with pytest.raises(SensorError):
            sensor.ambient_temperature()
    with pytest.raises(SensorError, match=r"bus could not be reopened after 1 try: no I2C bus /dev/i2c-1: "
                       r"enable I2C"):
        sensor.ambient_temperature()
    assert sensor.failure_counts()["bus"] == 1
    chip.clear_faults()
    reopen.error = None
    with pytest.raises(SensorError, match="bus could not be reopened"):
        sensor.ambient_temperature()  # the next reopen is not due yet
    clock.now += 1.0
    assert sensor.ambient_temperature() == pytest.approx(24.0, abs=0.011)
    assert len(reopen.buses) == 1 and not sensor.down


def test_without_a_reopen_factory_a_down_sensor_still_recovers(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.inject("all_ff", count=None)
    for _ in range(5):
        with pytest.raises(SensorError, match="0xff"):
            sensor.object_temperature()
    assert sensor.down
    chip.clear_faults()
    assert sensor.object_temperature() == pytest.approx(24.0, abs=0.011)
    assert not sensor.down and sensor.reopens == 0 and not bus.closed


def test_from_bus_number_reopens_the_same_bus(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    opened: list[int] = []

    def fake_smbus(n: int) -> EmulatedBus:
        opened.append(n)
        return EmulatedBus({})  # nothing answers

    monkeypatch.setattr(smbus2, "SMBus", fake_smbus)
    sensor = MLX90614.from_bus_number(3, startup_s=0, sleep=clock.sleep, monotonic=clock)
    for _ in range(4):
        with pytest.raises(SensorError):
            sensor.object_temperature()
    assert opened == [3, 3]


# -- startup report ----------------------------------------------------------------------


def test_startup_report_logs_identity(
    sensor: MLX90614, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="drivers.mlx90614"):
        report = sensor.startup_report()
    assert report["chip_id"] == "2a4c1b639c070c1f"
    assert report["emissivity"] == 1.0 and report["emissivity_ok"] is True
    assert report["config"] == "0x9fb4"
    assert (report["iir"], report["fir"], report["dual_zone"]) == (4, 7, False)
    assert any("chip_id=2a4c1b639c070c1f" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_startup_report_warns_on_low_emissivity_without_writing(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chip.eeprom[EE_EMISSIVITY] = 0xC000  # 0.75
    with caplog.at_level(logging.INFO, logger="drivers.mlx90614"):
        report = sensor.startup_report()
    assert report["emissivity_ok"] is False
    assert report["emissivity"] == pytest.approx(0.75, abs=1e-4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("emissivity_unexpected" in w and "emissivity=0.7500" in w for w in warnings)
    assert chip.eeprom[EE_EMISSIVITY] == 0xC000
    assert chip.eeprom_writes == [] and chip.commands == []
    assert all(t.kind == "read" for t in bus.log)


# -- set_emissivity ----------------------------------------------------------------------


def test_set_emissivity_runs_the_melexis_procedure(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus, clock: FakeClock
) -> None:
    old_2f = chip.eeprom[EE_0x2F]
    new_e = 62258  # round(0.95 * 65535)
    new_2f = (0xFFFF * old_2f * 2 + new_e) // (2 * new_e)  # round half up
    message = sensor.set_emissivity(0.95)
    assert chip.eeprom[EE_EMISSIVITY] == new_e == 0xF332
    assert chip.eeprom[EE_0x2F] == new_2f == 1940
    assert chip.eeprom_writes == [(0x24, 0), (0x24, new_e), (0x2F, 0), (0x2F, new_2f)]
    assert chip.commands == [0x60, 0x61] and chip.unlocked is False
    assert chip.bad_writes == 0 and chip.busy_violations == 0
    assert clock.sleeps.count(EEPROM_WAIT_S) == 4
    assert "power-cycle" in message
    kinds = [(t.kind, t.cmd) for t in bus.log]
    assert kinds[:3] == [("read", 0x24), ("read", 0x2F), ("command", 0x60)]
    assert kinds[-1] == ("command", 0x61)
    # every write is followed by its read-back
    for i, (kind, cmd) in enumerate(kinds):
        if kind == "write":
            assert kinds[i + 1] == ("read", cmd)
    assert sensor.emissivity() == pytest.approx(0.95, abs=1e-4)


def test_set_emissivity_read_back_mismatch_raises_and_still_locks(
    sensor: MLX90614, chip: EmulatedMLX90614, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulated_mlx90614, "WRITABLE_UNLOCKED", frozenset())  # 0x2F refuses
    with pytest.raises(SensorError, match=r"EEPROM 0x2f reads 0x0733 after writing 0x0000"):
        sensor.set_emissivity(0.97)
    assert chip.commands == [0x60, 0x61] and chip.unlocked is False


@pytest.mark.parametrize("value", [0.05, 1.01, -1.0])
def test_set_emissivity_rejects_out_of_range_values(
    value: float, sensor: MLX90614, chip: EmulatedMLX90614
) -> None:
    with pytest.raises(ValueError, match=r"0\.1\.\.1\.0"):
        sensor.set_emissivity(value)
    assert chip.eeprom_writes == []


def test_set_emissivity_refuses_when_0x2f_would_overflow(
    sensor: MLX90614, chip: EmulatedMLX90614, bus: EmulatedBus
) -> None:
    chip.eeprom[EE_0x2F] = 0x7000
    with pytest.raises(ValueError, match="> 0x7fff"):
        sensor.set_emissivity(0.5)
    assert chip.eeprom_writes == [] and chip.commands == []


def test_set_emissivity_same_value_writes_nothing(
    sensor: MLX90614, chip: EmulatedMLX90614
) -> None:
    assert "not written" in sensor.set_emissivity(1.0)
    assert chip.eeprom_writes == [] and chip.commands == []


def test_set_emissivity_refuses_an_erased_cell(sensor: MLX90614, chip: EmulatedMLX90614) -> None:
    chip.eeprom[EE_0x2F] = 0
    with pytest.raises(SensorError, match="reads erased"):
        sensor.set_emissivity(0.95)
    assert chip.eeprom_writes == []


def test_set_emissivity_unlock_nack_writes_nothing(
    sensor: MLX90614, chip: EmulatedMLX90614
) -> None:
    chip.inject("nack", count=None, cmd=0x60)
    with pytest.raises(SensorError, match="command 0x60: no ACK"):
        sensor.set_emissivity(0.95)
    assert chip.eeprom_writes == []


# -- the emulated chip keeps the driver honest -------------------------------------------


def test_emulator_rejects_lone_read_and_bad_write_pec(
    bus: EmulatedBus, chip: EmulatedMLX90614
) -> None:
    with pytest.raises(OSError) as info:
        bus.i2c_rdwr(i2c_msg.read(0x5A, 3))
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info:
        bus.i2c_rdwr(i2c_msg.write(0x5A, [0x24, 0x00, 0x00, 0x00]))  # wrong PEC
    assert info.value.errno == errno.EREMOTEIO
    assert chip.eeprom[EE_EMISSIVITY] == 0xFFFF and chip.eeprom_writes == []


def test_emulator_write_without_erase_ors_bits(bus: EmulatedBus, chip: EmulatedMLX90614) -> None:
    lsb, msb = 0x00, 0x80
    pec = crc8(bytes([0xB4, 0x24, lsb, msb]))
    bus.i2c_rdwr(i2c_msg.write(0x5A, [0x24, lsb, msb, pec]))
    assert chip.eeprom[EE_EMISSIVITY] == 0xFFFF and chip.bad_writes == 1


def test_emulator_detects_overlapping_transactions() -> None:
    """Proves the concurrency probe used below can see an unlocked caller."""
    chip = EmulatedMLX90614()
    bus = EmulatedBus({0x5A: chip}, hold_s=0.02)
    barrier = threading.Barrier(2)

    def raw_read() -> None:
        barrier.wait()
        bus.i2c_rdwr(i2c_msg.write(0x5A, [RAM_TA]), i2c_msg.read(0x5A, 3))

    threads = [threading.Thread(target=raw_read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bus.max_concurrent == 2


# -- thread safety -----------------------------------------------------------------------


def test_concurrent_readers_never_overlap_on_the_bus() -> None:
    bus = EmulatedBus({0x5A: EmulatedMLX90614()}, hold_s=0.0005)
    sensor = MLX90614(bus, startup_s=0, sleep=lambda s: None, discard_samples=0)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def reader(read: object) -> None:
        barrier.wait()
        try:
            for _ in range(25):
                read()  # type: ignore[operator]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(f,))
               for f in (sensor.object_temperature, sensor.ambient_temperature)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert bus.max_concurrent == 1
    assert len(bus.reads()) == 50


def test_reads_cannot_slip_into_the_emissivity_procedure() -> None:
    bus = EmulatedBus({0x5A: EmulatedMLX90614()})  # no clock: EEPROM timing not modelled
    go = threading.Event()

    def eeprom_wait(seconds: float) -> None:
        go.set()  # let the reader try now, in the middle of the EEPROM procedure
        time.sleep(0.005)

    sensor = MLX90614(bus, startup_s=0, sleep=eeprom_wait)
    reader = threading.Thread(target=lambda: (go.wait(5), sensor.object_temperature()))
    reader.start()
    sensor.set_emissivity(0.95)
    reader.join()
    kinds = [(t.kind, t.cmd) for t in bus.log]
    unlock, lock = kinds.index(("command", 0x60)), kinds.index(("command", 0x61))
    assert ("read", RAM_TOBJ1) not in kinds[unlock:lock]
    assert kinds.index(("read", RAM_TOBJ1)) > lock


# -- bus opening and lifecycle -----------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "message"),
    [(FileNotFoundError(2, "No such file"),
      "no I2C bus /dev/i2c-1: enable I2C (raspi-config nonint do_i2c 0) and reboot"),
     (PermissionError(13, "Permission denied"),
      "permission denied on /dev/i2c-1: add the service user to the i2c group")],
)
def test_open_bus_errors_name_the_fix(
    exc: OSError, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(bus: int) -> None:
        raise exc

    monkeypatch.setattr(smbus2, "SMBus", refuse)
    with pytest.raises(SensorError) as info:
        open_bus(1)
    assert str(info.value) == message
    assert info.value.__cause__ is exc


def test_from_bus_number_opens_smbus_and_names_the_bus(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    opened: list[int] = []

    def fake_smbus(n: int) -> EmulatedBus:
        opened.append(n)
        return EmulatedBus({})

    monkeypatch.setattr(smbus2, "SMBus", fake_smbus)
    sensor = MLX90614.from_bus_number(3, startup_s=0, sleep=clock.sleep, monotonic=clock)
    assert opened == [3]
    with pytest.raises(SensorError, match="on bus 3: .*i2cdetect -y 3"):
        sensor.object_temperature()


def test_close_closes_the_bus_and_later_reads_fail(sensor: MLX90614, bus: EmulatedBus) -> None:
    with sensor:
        sensor.object_temperature()
    assert bus.closed
    sensor.close()  # idempotent
    with pytest.raises(SensorError, match="closed"):
        sensor.object_temperature()
    assert sum(sensor.failure_counts().values()) == 0  # not a sensor failure


def test_failure_counts_is_a_copy(sensor: MLX90614) -> None:
    sensor.failure_counts()["pec"] = 99
    assert sensor.failure_counts()["pec"] == 0
    assert set(sensor.failure_counts()) == {
        "pec", "nack", "eio", "timeout", "arbitration", "error_flag", "sentinel", "range", "bus"}


@pytest.mark.parametrize("options", [{"address": 0x00}, {"address": 0x80}, {"retries": 0}])
def test_constructor_rejects_bad_options(bus: EmulatedBus, options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        MLX90614(bus, **options)  # type: ignore[arg-type]


def test_both_thermometers_satisfy_the_protocol(sensor: MLX90614) -> None:
    assert isinstance(sensor, Thermometer)
    assert isinstance(ScriptedThermometer(), Thermometer)


# -- ScriptedThermometer -----------------------------------------------------------------


def test_scripted_thermometer_follows_the_script(clock: FakeClock) -> None:
    thermo = ScriptedThermometer(
        [(2.0, 24.0, 23.0), (1.0, 36.6, 23.5), (0.5, "fault", 22.0)], clock=clock
    )
    assert (thermo.object_temperature(), thermo.ambient_temperature()) == (24.0, 23.0)
    clock.now += 2.0
    assert (thermo.object_temperature(), thermo.ambient_temperature()) == (36.6, 23.5)
    clock.now += 1.0
    with pytest.raises(SensorError, match="scripted fault"):
        thermo.object_temperature()
    assert thermo.ambient_temperature() == 22.0
    clock.now += 10.0  # past the end: the last step holds
    with pytest.raises(SensorError):
        thermo.object_temperature()


def test_scripted_thermometer_loops(clock: FakeClock) -> None:
    thermo = ScriptedThermometer([(1.0, 30.0, 20.0), (1.0, 37.0, 20.0)], clock=clock, loop=True)
    clock.now += 2.5
    assert thermo.object_temperature() == 30.0
    clock.now += 1.0
    assert thermo.object_temperature() == 37.0


def test_scripted_thermometer_direct_control(clock: FakeClock) -> None:
    thermo = ScriptedThermometer([(1.0, 30.0, 20.0)], clock=clock)
    thermo.set(37.8, 21.0)
    assert (thermo.object_temperature(), thermo.ambient_temperature()) == (37.8, 21.0)
    thermo.fail("unplugged")
    with pytest.raises(SensorError, match="unplugged"):
        thermo.ambient_temperature()
    thermo.set(36.0, 21.0)
    assert thermo.object_temperature() == 36.0
    thermo.close()
    with pytest.raises(SensorError, match="closed"):
        thermo.object_temperature()


def test_scripted_thermometer_noise_is_seeded_and_bounded(clock: FakeClock) -> None:
    def run(seed: int) -> list[float]:
        thermo = ScriptedThermometer(clock=clock, object_c=36.5, noise_c=0.1, seed=seed)
        return [thermo.object_temperature() for _ in range(20)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert all(36.39 <= v <= 36.61 for v in first)
    assert len(set(first)) > 1


@pytest.mark.parametrize(
    "script",
    [[(0.0, 36.0, 20.0)], [(1.0, "hot", 20.0)], [(1.0, 36.0, "cold")]],
)
def test_scripted_thermometer_rejects_bad_scripts(
    script: list[tuple[float, object, object]],
) -> None:
    with pytest.raises(ValueError, match="script step 0"):
        ScriptedThermometer(script)  # type: ignore[arg-type]
