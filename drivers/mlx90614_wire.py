"""MLX90614 wire protocol: register map, PEC, conversion, and what each failure means.

Pure helpers used by `drivers.mlx90614.MLX90614` (the stateful driver: lock, retries, reopen);
kept apart so the driver stays readable. Sources: Melexis MLX90614 datasheet Rev 008 (8.4.3 PEC,
8.4.6 memory map), docs/hardware.md sections 1 and 2.
"""

from __future__ import annotations

import errno
from typing import Protocol

import smbus2
from smbus2 import i2c_msg

from drivers.base import SensorError

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

FAILURE_KINDS = ("pec", "nack", "eio", "timeout", "arbitration", "error_flag", "sentinel", "range",
                 "bus")

# I2C errno -> failure kind, by what happened on the wire, not by which controller said so
# (Linux Documentation/i2c/fault-codes.rst; the errno each adapter driver returns):
#   nack         ENXIO (6): i2c-gpio / i2c-algo-bit, the software bus used against the Pi's
#                clock-stretching bug; EREMOTEIO (121): i2c-bcm2835 (Pi 0-4), i2c-designware (Pi 5)
#   timeout      ETIMEDOUT (110): the bus or the chip held SCL too long
#   arbitration  EAGAIN (11): arbitration lost (another master, or noise on SDA)
#   eio          EIO (5): an unspecified transfer error (i2c-algo-bit: NACK on a data byte)
#   bus          anything else (EBUSY, EBADF, ENODEV ...): not a glitch a retry fixes
I2C_ERRNO_KINDS = {
    errno.ENXIO: "nack",
    errno.EREMOTEIO: "nack",
    errno.ETIMEDOUT: "timeout",
    errno.EAGAIN: "arbitration",
    errno.EIO: "eio",
}
#: Kinds of a failed transfer worth another try: all four are transient on a working bus.
RETRYABLE_KINDS = frozenset({"nack", "timeout", "arbitration", "eio"})

_KIND_TEXT = {  # kind -> (problem, fix); fix may use {bus} and {address}
    "nack": ("no ACK", "check SDA/SCL wiring, 3.3 V supply and i2cdetect -y {bus}"),
    "eio": ("I/O error",
            "check wiring and pull-ups, lower the bus speed (dtparam=i2c_arm_baudrate=50000)"),
    "timeout": ("bus timeout",
                "bus stuck or clock stretching: lower the bus speed or power-cycle the sensor"),
    "arbitration": ("arbitration lost",
                    "check for another master or process on the bus, and for noise on SDA"),
}
ERRNO_TEXT = {  # errno outside the kinds above -> (problem, fix)
    errno.EBUSY: ("address busy (errno 16)",
                  "a kernel driver owns {address:#04x}: unload the mlx90614 IIO module or"
                  " remove its device-tree overlay"),
}


def classify_errno(err: int | None) -> str:
    """The FAILURE_KINDS entry for the errno of a failed I2C transfer (table above); "bus" for
    any errno that names no transient wire condition, and for None."""
    return I2C_ERRNO_KINDS.get(err or 0, "bus")


def describe_errno(err: int | None, strerror: str | None = None) -> tuple[str, str, str]:
    """(kind, problem, fix) for a failed transfer: problem names the errno, e.g.
    "no ACK (errno 6)"; fix may hold {bus} and {address} placeholders."""
    kind = classify_errno(err)
    if kind in _KIND_TEXT:
        problem, fix = _KIND_TEXT[kind]
        return kind, f"{problem} (errno {err})", fix
    problem, fix = ERRNO_TEXT.get(err or 0, (f"{strerror or 'I2C error'} (errno {err})",
                                             "check the I2C bus and wiring"))
    return kind, problem, fix


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


class Failure(Exception):
    """One failed try: `kind` is a FAILURE_KINDS entry, `problem` what went wrong, `fix`
    what to check. Messages are assembled as `<where>: <what>: <problem> after N tries: <fix>`."""

    def __init__(self, kind: str, problem: str, fix: str, retryable: bool = True) -> None:
        super().__init__(f"{problem}: {fix}")
        self.kind = kind
        self.problem = problem
        self.fix = fix
        self.retryable = retryable


def check_temperature(raw: int, limits: tuple[float, float]) -> None:
    """Reject what PEC cannot catch: sentinels, the chip's error flag, impossible values."""
    if raw in (0x0000, 0xFFFF):
        fix = "bus floating: check SDA/SCL wiring and pull-ups" if raw else (
            "check wiring and the 3.3 V supply")
        raise Failure("sentinel", f"read {raw:#06x} ({raw_to_celsius(raw)} C)", fix)
    if raw & ERROR_FLAG:
        raise Failure(
            "error_flag", f"error flag set (raw {raw:#06x})",
            "the chip reports an internal fault; power-cycle the sensor, replace it if this"
            " persists",
        )
    celsius = raw_to_celsius(raw)
    if not limits[0] <= celsius <= limits[1]:
        raise Failure(
            "range", f"{celsius} C outside {limits[0]}..{limits[1]} C",
            "check for a heat source or sunlight on the sensor, else replace it",
        )
