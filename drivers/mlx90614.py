"""MLX90614 infrared thermometer over I2C/SMBus, for the checkpoint's fever screen.

Wiring (Raspberry Pi 40-pin header, I2C bus 1 = /dev/i2c-1):

    MLX90614 / GY-906   Pi
    VIN / VDD           3V3 (pin 1) -- MLX90614B*/D* are 3 V parts; an A* part needs 5 V
    GND / VSS           GND (pin 6)
    SDA                 GPIO2 / SDA1 (pin 3)
    SCL                 GPIO3 / SCL1 (pin 5)

The GY-906 breakout carries 4.7 kOhm pull-ups; a bare sensor needs its own. The chip speaks
SMBus at 10 kHz minimum and 100 kHz maximum: keep `dtparam=i2c_arm_baudrate` at 100000 or
lower (50000 if errors appear) and never below 10000. It only supports Read Word and Write Word.

Units: temperatures in degrees Celsius (0.02 K resolution), emissivity as 0.1..1.0.
Reference: Melexis MLX90614 datasheet Rev 008 (sections 8.4.3 PEC, 8.4.6 memory map, 8.4.7
timing), Melexis application note "SMBus communication with MLX90614", and Melexis' own
i2c-stick driver for the emissivity procedure (registers 0x24 + 0x2F, commands 0x60/0x61).
Facts and sources are collected in shared/notes/HARDWARE.md sections 1, 2 and 7.

Why not `read_word_data`: the kernel path drops the PEC byte, and PEC is the only thing that
catches the chip's classic failed reads (0xFFFF = 1037.55 C, a PEC byte of 0xFF). Every read
here is one combined write+repeated-start+read-3 transaction, checked in Python.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import smbus2
from smbus2 import i2c_msg

from drivers.base import SensorError

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = 0x5A

# RAM (command = 0x00 | address)
RAM_IR1 = 0x04
RAM_IR2 = 0x05
RAM_TA = 0x06
RAM_TOBJ1 = 0x07
RAM_TOBJ2 = 0x08
# EEPROM (command = 0x20 | address)
EEPROM_BASE = 0x20
EE_TO_MAX = 0x20
EE_TO_MIN = 0x21
EE_PWMCTRL = 0x22
EE_TA_RANGE = 0x23
EE_EMISSIVITY = 0x24
EE_CONFIG1 = 0x25
EE_SMBUS_ADDR = 0x2E
EE_0x2F = 0x2F  # undocumented calibration cell re-scaled together with emissivity (Melexis)
EE_ID = (0x3C, 0x3D, 0x3E, 0x3F)
# EEPROM unlock / lock for the protected cell 0x2F (Melexis i2c-stick MLX90614_SendCommand)
CMD_UNLOCK = 0x60
CMD_LOCK = 0x61

ERROR_FLAG = 0x8000  # bit 15 of Ta/To words
TA_RANGE_C = (-40.0, 125.0)
TO_RANGE_C = (-70.0, 382.2)
EMISSIVITY_RANGE = (0.1, 1.0)
EMISSIVITY_EXPECTED = (0.95, 1.0)  # human skin ~0.98; outside this, readings are suspect
STARTUP_S = 0.25  # first valid data after power-on reset
EEPROM_WAIT_S = 0.010  # after erase and after write (datasheet >= 5 ms; Melexis uses 10)

FAILURE_KINDS = ("pec", "nack", "eio", "timeout", "error_flag", "sentinel", "range")
_RETRY_ERRNOS = {
    errno.EREMOTEIO: "nack",
    errno.EIO: "eio",
    errno.ETIMEDOUT: "timeout",
    errno.EAGAIN: "eio",  # i2c core: arbitration lost / bus busy, worth another try
}

_ERRNO_TEXT = {  # errno -> (problem, fix); fix may use {bus} and {address}
    errno.EREMOTEIO: ("no ACK (errno 121)",
                      "check SDA/SCL wiring, 3.3 V supply and i2cdetect -y {bus}"),
    errno.EIO: ("I/O error (errno 5)",
                "check wiring and pull-ups, lower the bus speed (dtparam=i2c_arm_baudrate=50000)"),
    errno.ETIMEDOUT: ("bus timeout (errno 110)",
                      "bus stuck or clock stretching: lower the bus speed or power-cycle the"
                      " sensor"),
    errno.EAGAIN: ("bus busy (errno 11)", "check for another master or process on the bus"),
    errno.EBUSY: ("address busy (errno 16)",
                  "a kernel driver owns {address:#04x}: unload the mlx90614 IIO module or"
                  " remove its device-tree overlay"),
}


class SMBusLike(Protocol):
    """What the driver needs from a bus: smbus2.SMBus, or the emulated bus in tests."""

    def i2c_rdwr(self, *msgs: i2c_msg) -> None: ...

    def close(self) -> None: ...


def crc8(data: bytes) -> int:
    """SMBus PEC: CRC-8, polynomial x^8+x^2+x+1 (0x07), init 0, MSB first, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def raw_to_celsius(raw: int) -> float:
    """Ta/To RAM word (0.02 K per LSB) to degrees Celsius."""
    return round(raw * 0.02 - 273.15, 2)


def open_bus(bus_number: int) -> smbus2.SMBus:
    """Open /dev/i2c-N, turning the two usual set-up mistakes into messages that name the fix."""
    path = f"/dev/i2c-{bus_number}"
    try:
        return smbus2.SMBus(bus_number)
    except FileNotFoundError as exc:
        raise SensorError(
            f"no I2C bus {path}: enable I2C (raspi-config nonint do_i2c 0) and reboot"
        ) from exc
    except PermissionError as exc:
        raise SensorError(
            f"permission denied on {path}: add the service user to the i2c group"
        ) from exc
    except OSError as exc:
        raise SensorError(f"cannot open {path}: {exc.strerror or exc}") from exc


class _Failure(Exception):
    """One failed try: `kind` is a FAILURE_KINDS entry, `problem` what went wrong, `fix`
    what to check. Messages are assembled as `<where>: <what>: <problem> after N tries: <fix>`."""

    def __init__(self, kind: str, problem: str, fix: str, retryable: bool = True) -> None:
        super().__init__(f"{problem}: {fix}")
        self.kind = kind
        self.problem = problem
        self.fix = fix
        self.retryable = retryable


def _check_temperature(raw: int, limits: tuple[float, float]) -> None:
    """Reject what PEC cannot catch: sentinels, the chip's error flag, impossible values."""
    if raw in (0x0000, 0xFFFF):
        fix = "bus floating: check SDA/SCL wiring and pull-ups" if raw else (
            "check wiring and the 3.3 V supply")
        raise _Failure("sentinel", f"read {raw:#06x} ({raw_to_celsius(raw)} C)", fix)
    if raw & ERROR_FLAG:
        raise _Failure(
            "error_flag", f"error flag set (raw {raw:#06x})",
            "the chip reports an internal fault; power-cycle the sensor, replace it if this"
            " persists",
        )
    celsius = raw_to_celsius(raw)
    if not limits[0] <= celsius <= limits[1]:
        raise _Failure(
            "range", f"{celsius} C outside {limits[0]}..{limits[1]} C",
            "check for a heat source or sunlight on the sensor, else replace it",
        )


class MLX90614:
    """One MLX90614 on a bus this object owns (close() closes the bus).

    Every public method takes one re-entrant lock for its whole bus conversation, so the
    scan loop and a self-test can share the instance. `retries` is the number of tries per
    read (at least 1); failed tries back off `backoff_s * try` through the injected `sleep`.
    """

    def __init__(
        self,
        bus: SMBusLike,
        address: int = DEFAULT_ADDRESS,
        *,
        retries: int = 3,
        backoff_s: float = 0.01,
        startup_s: float = STARTUP_S,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        bus_number: int | None = None,
    ) -> None:
        if not 0x01 <= address <= 0x7F:
            raise ValueError(
                f"MLX90614 address {address:#x} invalid: use the 7-bit address (default 0x5a);"
                " 0x00 reaches every MLX90614 on the bus"
            )
        if retries < 1:
            raise ValueError(f"retries={retries}: must be at least 1 (the number of tries)")
        if backoff_s < 0 or startup_s < 0:
            raise ValueError("backoff_s and startup_s must be >= 0")
        self._bus: SMBusLike | None = bus
        self.address = address
        self.bus_number = bus_number
        self._retries = retries
        self._backoff_s = backoff_s
        self._startup_s = startup_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._created_s = monotonic()
        self._ready = startup_s == 0
        self._lock = threading.RLock()
        self._counts = dict.fromkeys(FAILURE_KINDS, 0)

    @classmethod
    def from_bus_number(
        cls, bus_number: int, address: int = DEFAULT_ADDRESS, **options: Any
    ) -> MLX90614:
        """Open /dev/i2c-`bus_number` (see open_bus) and drive the sensor on it."""
        return cls(open_bus(bus_number), address, bus_number=bus_number, **options)

    # -- public API ---------------------------------------------------------------------

    def ambient_temperature(self) -> float:
        raw = self._read(RAM_TA, "ambient Ta (0x06)", TA_RANGE_C)
        return raw_to_celsius(raw)

    def object_temperature(self) -> float:
        raw = self._read(RAM_TOBJ1, "object Tobj1 (0x07)", TO_RANGE_C)
        return raw_to_celsius(raw)

    def emissivity(self) -> float:
        return self._read(EE_EMISSIVITY, "emissivity (0x24)") / 0xFFFF

    def config_register(self) -> int:
        return self._read(EE_CONFIG1, "config register 1 (0x25)")

    def chip_id(self) -> str:
        with self._lock:
            words = [self._read(cmd, f"chip id ({cmd:#04x})") for cmd in EE_ID]
        return "".join(f"{word:04x}" for word in words)

    def failure_counts(self) -> dict[str, int]:
        """Failed tries per kind since creation (an errno that is not retried counts as eio)."""
        with self._lock:
            return dict(self._counts)

    def startup_report(self) -> dict[str, Any]:
        """Read and log what identifies this sensor and how it is set up. A surprising
        emissivity is reported, never rewritten: EEPROM writes are for provisioning only."""
        with self._lock:
            config = self.config_register()
            emissivity = self.emissivity()
            chip = self.chip_id()
        low, high = EMISSIVITY_EXPECTED
        report: dict[str, Any] = {
            "address": f"{self.address:#04x}",
            "bus": self.bus_number,
            "chip_id": chip,
            "emissivity": round(emissivity, 4),
            "emissivity_ok": low <= emissivity <= high,
            "config": f"{config:#06x}",
            "iir": config & 0x7,
            "dual_zone": bool(config & 0x40),
            "fir": (config >> 8) & 0x7,
            "gain": (config >> 11) & 0x7,
        }
        log.info(
            "mlx90614 startup %s", " ".join(f"{key}={value}" for key, value in report.items())
        )
        if not report["emissivity_ok"]:
            log.warning(
                "mlx90614 emissivity_unexpected address=%s emissivity=%.4f expected=%.2f..%.2f"
                " fix='provision with set_emissivity(0.98) and power-cycle, or replace sensor'",
                report["address"], emissivity, low, high,
            )
        return report

    def set_emissivity(self, value: float) -> str:
        """Provisioning only (EEPROM wear, needs a power cycle). Melexis' current procedure:
        re-scale 0x2F with 0x24, unlock, erase+write+verify both cells, lock."""
        low, high = EMISSIVITY_RANGE
        if not low <= value <= high:
            raise ValueError(f"emissivity {value}: must be within {low}..{high}")
        new_e = int(value * 0xFFFF + 0.5)
        with self._lock:
            old_e = self._read(EE_EMISSIVITY, "emissivity (0x24)")
            old_2f = self._read(EE_0x2F, "calibration cell (0x2f)")
            if old_e == 0 or old_2f == 0:
                raise SensorError(
                    f"{self._where()}: EEPROM 0x24={old_e:#06x} 0x2f={old_2f:#06x} reads erased"
                    " (interrupted provisioning?): restore both cells from the chip's records"
                    " before setting emissivity"
                )
            if new_e == old_e:
                msg = f"emissivity already {old_e / 0xFFFF:.4f} (0x24={old_e:#06x}): not written"
                log.info("mlx90614 set_emissivity skipped address=%#04x e=%#06x", self.address,
                         old_e)
                return msg
            new_2f = (old_e * old_2f * 2 + new_e) // (2 * new_e)  # round half up, exact
            if new_2f > 0x7FFF:
                raise ValueError(
                    f"emissivity {value} would need 0x2f={new_2f:#06x} > 0x7fff on this chip:"
                    " choose a higher emissivity"
                )
            log.warning(
                "mlx90614 eeprom_write_begin address=%#04x old_e=%#06x new_e=%#06x"
                " old_2f=%#06x new_2f=%#06x", self.address, old_e, new_e, old_2f, new_2f,
            )
            self._command(CMD_UNLOCK)
            try:
                self._eeprom_write(EE_EMISSIVITY, new_e)
                self._eeprom_write(EE_0x2F, new_2f)
            finally:
                self._command(CMD_LOCK)
        msg = (
            f"emissivity set to {new_e / 0xFFFF:.4f} (0x24={new_e:#06x}, 0x2f={new_2f:#06x}):"
            " power-cycle the sensor now; readings are wrong until it restarts"
        )
        log.warning("mlx90614 eeprom_write_done address=%#04x %s", self.address, msg)
        return msg

    def close(self) -> None:
        with self._lock:
            bus, self._bus = self._bus, None
        if bus is not None:
            bus.close()

    def __enter__(self) -> MLX90614:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads --------------------------------------------------------------------------

    def _read(self, cmd: int, what: str, limits: tuple[float, float] | None = None) -> int:
        with self._lock:
            self._wait_for_startup()
            failures: list[_Failure] = []
            for attempt in range(1, self._retries + 1):
                try:
                    raw = self._read_word_once(cmd)
                    if limits is not None:
                        _check_temperature(raw, limits)
                    return raw
                except _Failure as failure:
                    self._counts[failure.kind] += 1
                    failures.append(failure)
                    log.warning(
                        "mlx90614 read_failed address=%#04x cmd=%#04x kind=%s try=%d/%d"
                        " problem=%r", self.address, cmd, failure.kind, attempt, self._retries,
                        failure.problem,
                    )
                    if not failure.retryable:
                        break
                    if attempt < self._retries:
                        self._sleep(self._backoff_s * attempt)
            last = failures[-1]
            tries = "1 try" if len(failures) == 1 else f"{len(failures)} tries"
            kinds = sorted({f.kind for f in failures})
            mixed = f" (failures: {', '.join(kinds)})" if len(kinds) > 1 else ""
            raise SensorError(
                f"{self._where()}: reading {what}: {last.problem} after {tries}{mixed}:"
                f" {last.fix}"
            )

    def _read_word_once(self, cmd: int) -> int:
        """One combined transaction: write cmd, repeated start, read LSB MSB PEC."""
        write = i2c_msg.write(self.address, [cmd])
        read = i2c_msg.read(self.address, 3)
        self._transfer(write, read)
        lsb, msb, pec = bytes(read)
        expected = crc8(bytes([self.address << 1, cmd, (self.address << 1) | 1, lsb, msb]))
        if pec != expected:
            hint = " (0xff: nothing driven, bus floating or chip one byte ahead)" if (
                pec == 0xFF) else ""
            raise _Failure(
                "pec", f"PEC mismatch: got {pec:#04x}, expected {expected:#04x}{hint}",
                "check cable length and noise, pull-ups, bus speed <= 100 kHz (try 50 kHz)",
            )
        return lsb | (msb << 8)

    # -- writes -------------------------------------------------------------------------

    def _write_word(self, cmd: int, value: int) -> None:
        lsb, msb = value & 0xFF, (value >> 8) & 0xFF
        pec = crc8(bytes([self.address << 1, cmd, lsb, msb]))
        self._transfer_or_raise(f"writing {value:#06x} to {cmd:#04x}",
                                i2c_msg.write(self.address, [cmd, lsb, msb, pec]))

    def _command(self, cmd: int) -> None:
        pec = crc8(bytes([self.address << 1, cmd]))
        self._transfer_or_raise(f"command {cmd:#04x}", i2c_msg.write(self.address, [cmd, pec]))

    def _eeprom_write(self, cmd: int, value: int) -> None:
        """Erase, wait, verify; write, wait, verify: a cell must read 0 before a new value."""
        for step_value in (0x0000, value):
            self._write_word(cmd, step_value)
            self._sleep(EEPROM_WAIT_S)
            got = self._read(cmd, f"EEPROM {cmd:#04x} read-back")
            if got != step_value:
                raise SensorError(
                    f"{self._where()}: EEPROM {cmd:#04x} reads {got:#06x} after writing"
                    f" {step_value:#06x}: write failed; do not power-cycle yet, re-run"
                    " provisioning, replace the sensor if it fails again"
                )
            log.info("mlx90614 eeprom_written address=%#04x cmd=%#04x value=%#06x",
                     self.address, cmd, step_value)

    def _transfer_or_raise(self, what: str, *msgs: i2c_msg) -> None:
        """Writes are tried once: a lost ACK is caught by the read-back, not by retrying."""
        with self._lock:
            self._wait_for_startup()
            try:
                self._transfer(*msgs)
            except _Failure as failure:
                self._counts[failure.kind] += 1
                raise SensorError(
                    f"{self._where()}: {what}: {failure.problem}: {failure.fix}"
                ) from None

    # -- bus ----------------------------------------------------------------------------

    def _transfer(self, *msgs: i2c_msg) -> None:
        if self._bus is None:
            raise SensorError(f"{self._where()}: driver is closed: create a new MLX90614")
        try:
            self._bus.i2c_rdwr(*msgs)
        except OSError as exc:
            kind = _RETRY_ERRNOS.get(exc.errno or 0)
            problem, fix = _ERRNO_TEXT.get(exc.errno or 0, (
                f"{exc.strerror or exc} (errno {exc.errno})", "check the I2C bus and wiring"))
            bus = self.bus_number if self.bus_number is not None else "<bus>"
            fix = fix.format(bus=bus, address=self.address)
            raise _Failure(kind or "eio", problem, fix, retryable=kind is not None) from exc

    def _wait_for_startup(self) -> None:
        """Never trust data during the power-on-reset time; waits out what is left of it."""
        if self._ready:
            return
        remaining = self._startup_s - (self._monotonic() - self._created_s)
        if remaining > 0:
            log.debug("mlx90614 startup_wait address=%#04x wait_s=%.3f", self.address,
                      remaining)
            self._sleep(remaining)
        self._ready = True

    def _where(self) -> str:
        bus = f" on bus {self.bus_number}" if self.bus_number is not None else ""
        return f"MLX90614 at {self.address:#04x}{bus}"
