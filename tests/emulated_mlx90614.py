"""An emulated MLX90614 behind an emulated I2C bus, for testing the real driver.

Not a mock that returns floats: the chip has a RAM register file and a 32-word EEPROM, and the
bus interprets real `smbus2.i2c_msg` objects the way the chip answers them on the wire:

- Read Word only as one combined transaction (write [cmd], repeated start, read): the answer
  is LSB, MSB, PEC (CRC-8/0x07 over SA<<1, cmd, SA<<1|1, LSB, MSB). A lone read -> EIO.
- Write Word [cmd, LSB, MSB, PEC]: ignored and NACKed (errno 121) unless the PEC is right.
  EEPROM semantics: a cell must be erased (written 0) before a non-zero value; writing over
  a non-erased cell stores old|new and counts a `bad_writes`. Cells 0x20-0x25 and 0x2E are
  writable; 0x2F only between the unlock (0x60) and lock (0x61) commands; the rest are
  silently ignored, like the chip in application mode.
- `noise_lsb` adds seeded noise of up to that many LSBs (0.02 K each) to every Ta/To answer,
  as a real sensor has; a `stuck` fault freezes the word exactly (no noise), like a dead ADC.
- With a `clock`, the EEPROM is busy for `ee_busy_s` after a write (transactions NACK and
  count `busy_violations`), and RAM temperatures read 0x0000 until `por_s` after power-on.

Faults are injected per chip (`inject`), one-shot (count) or persistent (count=None), on every
matching transaction or intermittently (`every`=N: only each N-th one, the first being the
`start`-th). A bus fault raises OSError with its kind's errno or a chosen one (`errno_code`):
the i2c-gpio software bus reports a NACK as ENXIO (6), the hardware controllers as 121, so
`inject("nack", None, every=2, start=1, errno_code=errno.ENXIO)` is a chip on i2c-gpio that
NACKs the first try of every read and answers the retry.
"""

from __future__ import annotations

import ctypes
import errno
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smbus2 import i2c_msg
from smbus2.smbus2 import I2C_M_RD

from drivers.mlx90614 import crc8

FACTORY_EEPROM = {
    0x20: 0x9993,  # To max (PWM)
    0x21: 0x62E3,  # To min (PWM)
    0x22: 0x0201,  # PWMCTRL
    0x23: 0xF71C,  # Ta range
    0x24: 0xFFFF,  # emissivity 1.0
    0x25: 0x9FB4,  # config 1 as read on an MLX90614BAA (single zone, IIR 100 %, FIR 1024)
    0x2E: 0xBE5A,  # SMBus address 0x5A in the low byte
    0x2F: 0x0733,  # value a user reported on a real chip (DFRobot_MLX90614 issue #3)
    0x3C: 0x2A4C, 0x3D: 0x1B63, 0x3E: 0x9C07, 0x3F: 0x0C1F,  # chip ID
}
WRITABLE = frozenset({0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x2E})
WRITABLE_UNLOCKED = frozenset({0x2F})
CMD_UNLOCK, CMD_LOCK = 0x60, 0x61

BUS_FAULTS = {"nack": errno.EREMOTEIO, "eio": errno.EIO, "timeout": errno.ETIMEDOUT,
              "arbitration": errno.EAGAIN}
DATA_FAULTS = {"bad_pec", "all_ff", "zero", "error_flag", "stuck"}


def celsius_to_raw(celsius: float) -> int:
    return round((celsius + 273.15) / 0.02)


@dataclass
class Fault:
    kind: str
    remaining: int | None  # None = persistent
    cmd: int | None = None  # only transactions with this command byte
    stuck_raw: int | None = None
    every: int = 1  # intermittent: only each `every`-th matching transaction
    seen: int = 0
    errno_code: int | None = None  # bus faults: raise this errno instead of the kind's own


@dataclass
class Transaction:
    """One i2c_rdwr call as the chip saw it."""

    addr: int
    kind: str  # "read", "write", "command", "lone_read", "other"
    cmd: int | None
    data: bytes = b""
    error: int | None = None  # errno raised to the caller, if any


@dataclass
class EmulatedMLX90614:
    address: int = 0x5A
    clock: Callable[[], float] | None = None
    por_s: float = 0.25
    ee_busy_s: float = 0.005
    noise_lsb: int = 0
    seed: int = 0
    ram: dict[int, int] = field(default_factory=dict)
    eeprom: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.eeprom = {cmd: FACTORY_EEPROM.get(cmd, 0x0000) for cmd in range(0x20, 0x40)} | (
            self.eeprom)
        self.ram = {cmd: 0x0000 for cmd in range(0x00, 0x20)} | self.ram
        self.set_ambient(24.0)
        self.set_object(24.0)
        self.unlocked = False
        self.faults: list[Fault] = []
        self.eeprom_writes: list[tuple[int, int]] = []
        self.commands: list[int] = []
        self.bad_writes = 0
        self.busy_violations = 0
        self._busy_until = float("-inf")
        self._power_on = self._now()
        self._rng = random.Random(self.seed)

    # -- scene ---------------------------------------------------------------------------

    def set_ambient(self, celsius: float) -> None:
        self.ram[0x06] = celsius_to_raw(celsius)

    def set_object(self, celsius: float) -> None:
        self.ram[0x07] = self.ram[0x08] = celsius_to_raw(celsius)

    def set_raw(self, cmd: int, raw: int) -> None:
        (self.ram if cmd < 0x20 else self.eeprom)[cmd] = raw

    def power_cycle(self) -> None:
        """Power-on reset: locks the EEPROM and restarts the POR window."""
        self.unlocked = False
        self._power_on = self._now()

    # -- faults ----------------------------------------------------------------------------

    def inject(self, kind: str, count: int | None = 1, cmd: int | None = None, every: int = 1,
               *, start: int | None = None, errno_code: int | None = None) -> None:
        """Queue a fault: nack, eio, timeout, arbitration, bad_pec, all_ff, zero, error_flag,
        stuck. `count` transactions are affected (None = until clear_faults); `cmd` narrows it;
        `every`=N hits only each N-th matching transaction (an intermittent fault), the first
        hit being the `start`-th (1..N, default N). `errno_code` (bus faults only) is the errno
        the bus raises, e.g. errno.ENXIO for a NACK on i2c-gpio."""
        if kind not in BUS_FAULTS and kind not in DATA_FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        if every < 1:
            raise ValueError(f"every={every}: must be at least 1")
        start = every if start is None else start
        if not 1 <= start <= every:
            raise ValueError(f"start={start}: must be within 1..every ({every})")
        if errno_code is not None and kind not in BUS_FAULTS:
            raise ValueError(f"errno_code applies to bus faults only, not {kind!r}")
        stuck = None
        if kind == "stuck":
            cmd = 0x07 if cmd is None else cmd
            stuck = self.ram[cmd]  # frozen now: later set_object() no longer shows
        self.faults.append(Fault(kind, count, cmd, stuck, every, every - start, errno_code))

    def clear_faults(self) -> None:
        self.faults.clear()

    def _take_fault(self, cmd: int | None, *, bus: bool) -> Fault | None:
        """First queued fault that applies; bus faults hit any transaction, data faults
        only the answer to a read."""
        for fault in self.faults:
            if fault.cmd is not None and fault.cmd != cmd:
                continue
            if (fault.kind in BUS_FAULTS) != bus:
                continue
            if fault.kind == "error_flag" and cmd not in (0x06, 0x07, 0x08):
                continue
            fault.seen += 1
            if fault.seen % fault.every:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    # -- wire protocol ---------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock() if self.clock is not None else 0.0

    def handle(self, msgs: tuple[i2c_msg, ...]) -> Transaction:
        first = msgs[0]
        if first.flags & I2C_M_RD:
            return Transaction(first.addr, "lone_read", None, error=errno.EIO)
        out = bytes(first)
        cmd = out[0] if out else None
        if self.clock is not None and self._now() < self._busy_until:
            self.busy_violations += 1
            return Transaction(first.addr, "other", cmd, out, error=errno.EREMOTEIO)
        fault = self._take_fault(cmd, bus=True)
        if fault is not None:
            error = BUS_FAULTS[fault.kind] if fault.errno_code is None else fault.errno_code
            return Transaction(first.addr, "other", cmd, out, error=error)
        if cmd is None:
            return Transaction(first.addr, "other", None)
        if len(msgs) == 2 and msgs[1].flags & I2C_M_RD and len(out) == 1:
            answer = self._answer_read(cmd)
            n = msgs[1].len
            data = (answer + b"\xff" * n)[:n]
            ctypes.memmove(msgs[1].buf, data, n)
            return Transaction(first.addr, "read", cmd, data)
        if len(msgs) == 1 and len(out) == 4:
            return self._write_word(cmd, out)
        if len(msgs) == 1 and len(out) == 2 and cmd in (CMD_UNLOCK, CMD_LOCK):
            if out[1] != crc8(bytes([self.address << 1, cmd])):
                return Transaction(first.addr, "command", cmd, out, error=errno.EREMOTEIO)
            self.unlocked = cmd == CMD_UNLOCK
            self.commands.append(cmd)
            return Transaction(first.addr, "command", cmd, out)
        return Transaction(first.addr, "other", cmd, out)

    def _answer_read(self, cmd: int) -> bytes:
        if cmd < 0x20:
            raw = self.ram.get(cmd, 0)
            booting = self.clock is not None and self._now() - self._power_on < self.por_s
            if cmd in (0x06, 0x07, 0x08) and booting:
                raw = 0x0000  # POR: no conversion finished yet
        elif cmd < 0x40:
            raw = self.eeprom[cmd]
        else:
            raw = 0xFFFF
        fault = self._take_fault(cmd, bus=False)
        kind = fault.kind if fault is not None else None
        if kind == "all_ff":
            return b"\xff\xff\xff"
        if kind == "zero":
            raw = 0x0000
        elif kind == "error_flag":
            raw |= 0x8000
        elif kind == "stuck" and fault is not None and fault.stuck_raw is not None:
            raw = fault.stuck_raw
        elif self.noise_lsb and cmd in (0x06, 0x07, 0x08) and raw:
            raw += self._rng.randint(-self.noise_lsb, self.noise_lsb)
        lsb, msb = raw & 0xFF, raw >> 8
        pec = crc8(bytes([self.address << 1, cmd, (self.address << 1) | 1, lsb, msb]))
        if kind == "bad_pec":
            pec ^= 0x5A
        return bytes([lsb, msb, pec])

    def _write_word(self, cmd: int, out: bytes) -> Transaction:
        if out[3] != crc8(bytes([self.address << 1, *out[:3]])):
            return Transaction(self.address, "write", cmd, out, error=errno.EREMOTEIO)
        value = out[1] | (out[2] << 8)
        writable = cmd in WRITABLE or (self.unlocked and cmd in WRITABLE_UNLOCKED)
        if writable:
            old = self.eeprom[cmd]
            if value != 0 and old != 0:
                self.bad_writes += 1
                value |= old
            self.eeprom[cmd] = value
            self.eeprom_writes.append((cmd, value))
            self._busy_until = self._now() + self.ee_busy_s
        return Transaction(self.address, "write", cmd, out)


class EmulatedBus:
    """Stands in for smbus2.SMBus: `i2c_rdwr(*msgs)` and `close()`. All messages of one
    call go to the address of the first; an address with no chip NACKs (errno 121).
    `hold_s` keeps each transaction "on the wire" that long, to expose unlocked callers."""

    def __init__(self, chips: dict[int, EmulatedMLX90614], hold_s: float = 0.0) -> None:
        self.chips = chips
        self.hold_s = hold_s
        self.log: list[Transaction] = []
        self.closed = False
        self.max_concurrent = 0
        self._active = 0
        self._guard = threading.Lock()

    def i2c_rdwr(self, *msgs: i2c_msg) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        with self._guard:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        try:
            if self.hold_s:
                time.sleep(self.hold_s)
            chip = self.chips.get(msgs[0].addr)
            if chip is None:
                record = Transaction(msgs[0].addr, "other", None, error=errno.EREMOTEIO)
            else:
                record = chip.handle(msgs)
            with self._guard:
                self.log.append(record)
            if record.error is not None:
                raise OSError(record.error, errno.errorcode.get(record.error, "error"))
        finally:
            with self._guard:
                self._active -= 1

    def close(self) -> None:
        self.closed = True

    def reads(self, cmd: int | None = None) -> list[Transaction]:
        return [t for t in self.log if t.kind == "read" and (cmd is None or t.cmd == cmd)]


class FakeClock:
    """Monotonic clock that only moves when `sleep` is called; records every sleep."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
