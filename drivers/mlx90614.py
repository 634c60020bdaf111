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
Facts and sources are collected in docs/hardware.md sections 1 and 2.

Why not `read_word_data`: the kernel path drops the PEC byte, and PEC is the only thing that
catches the chip's classic failed reads (0xFFFF = 1037.55 C, a PEC byte of 0xFF). Every read
here is one combined write+repeated-start+read-3 transaction, checked in Python.

Why the driver keeps itself alive: a loose connector, a brown-out or a Pi 5 controller timeout
storm takes the sensor away *after* it was opened. After `down_after` failed reads in a row the
driver counts as down: it stops retrying with back-off sleeps (one probe per read, so the scan
loop stays fast and recovery is seen on the next read), reopens its bus with exponential
back-off when it has a way to (`reopen`, set by `from_bus_number`), and after it answers again
discards the first samples, since a chip that lost power restarts its filters.

I2C errors are classified by what happened on the wire (`classify_errno`: a NACK is errno 121
on the hardware controllers and errno 6 on the `dtoverlay=i2c-gpio` software bus), and retried
for every transient kind. Repeated WARNING lines are rate-limited per kind (`drivers.ratelimit`:
the first at once, then at most one per `log_interval_s` saying how many were held back), so a
chip that NACKs each first try and answers the retry cannot flood the journal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from smbus2 import i2c_msg

from drivers.base import SensorError
from drivers.mlx90614_wire import (  # re-exported: callers import them from here
    CMD_LOCK,
    CMD_UNLOCK,
    DEFAULT_ADDRESS,
    EE_CONFIG1,
    EE_EMISSIVITY,
    EE_ID,
    EMISSIVITY_EXPECTED,
    EMISSIVITY_RANGE,
    FAILURE_KINDS,
    RAM_TA,
    RAM_TOBJ1,
    RAM_TOBJ2,
    RETRYABLE_KINDS,
    TA_RANGE_C,
    TO_RANGE_C,
    EE_0x2F,
    Failure,
    SMBusLike,
    check_temperature,
    classify_errno,
    crc8,
    describe_errno,
    open_bus,
    raw_to_celsius,
)
from drivers.ratelimit import DEFAULT_INTERVAL_S, LogRateLimiter

__all__ = ["MLX90614", "SMBusLike", "SensorError", "classify_errno", "crc8", "open_bus", "raw_to_celsius",
           "DEFAULT_ADDRESS", "RETRYABLE_KINDS",
           "RAM_TA", "RAM_TOBJ1", "RAM_TOBJ2", "EE_EMISSIVITY", "EE_CONFIG1", "EE_0x2F", "EE_ID",
           "EMISSIVITY_EXPECTED", "EMISSIVITY_RANGE", "FAILURE_KINDS", "STARTUP_S", "DISCARD_SAMPLES",
           "DOWN_AFTER", "REOPEN_BACKOFF_S", "EEPROM_WAIT_S"]

log = logging.getLogger(__name__)

STARTUP_S = 0.25  # first valid data after power-on reset
DISCARD_SAMPLES = 2  # temperature reads dropped after power-up, reopen or recovery (AN: first ones wrong)
DOWN_AFTER = 3  # failed reads in a row before the sensor counts as down
REOPEN_BACKOFF_S = (1.0, 30.0)  # first and longest wait between bus reopens while down
EEPROM_WAIT_S = 0.010  # after erase and after write (datasheet >= 5 ms; Melexis uses 10)


class MLX90614:
    """One MLX90614 on a bus this object owns (close() closes the bus).

    Every public method takes one re-entrant lock for its whole bus conversation, so the
    scan loop and a self-test can share the instance. `retries` is the number of tries per
    read (at least 1); failed tries back off `backoff_s * try` through the injected `sleep`.
    `discard_samples` temperature reads of each register are dropped after power-up and after
    a recovery. `reopen` makes a fresh bus object (None: never reopen); `down_after` failed
    reads in a row mark the sensor down (see the module docstring). `log_interval_s`: repeated
    WARNING/ERROR lines of one kind appear at most once per this many seconds of `monotonic`.
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
        discard_samples: int = DISCARD_SAMPLES,
        reopen: Callable[[], SMBusLike] | None = None,
        down_after: int = DOWN_AFTER,
        reopen_backoff_s: tuple[float, float] = REOPEN_BACKOFF_S,
        log_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        if not 0x01 <= address <= 0x7F:
            raise ValueError(
                f"MLX90614 address {address:#x} invalid: use the 7-bit address (default 0x5a);"
                " 0x00 reaches every MLX90614 on the bus"
            )
        if retries < 1:
            raise ValueError(f"retries={retries}: must be at least 1 (the number of tries)")
        if backoff_s < 0 or startup_s < 0 or discard_samples < 0:
            raise ValueError("backoff_s, startup_s and discard_samples must be >= 0")
        if down_after < 1:
            raise ValueError(f"down_after={down_after}: must be at least 1")
        if not 0 < reopen_backoff_s[0] <= reopen_backoff_s[1]:
            raise ValueError(f"reopen_backoff_s={reopen_backoff_s}: need 0 < first <= longest")
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
        self._closed = False
        self._discard_samples = discard_samples
        self._discard: dict[int, int] = {}
        self._arm_discard()
        self._reopen = reopen
        self._down_after = down_after
        self._reopen_backoff_s = reopen_backoff_s
        self._backoff_now_s = reopen_backoff_s[0]
        self._next_reopen_s = 0.0
        self._failed_reads = 0  # in a row
        self._down_since: float | None = None
        self._open_error = ""
        self.reopens = 0
        self._log_limit = LogRateLimiter(log_interval_s, monotonic)

    @classmethod
    def from_bus_number(
        cls, bus_number: int, address: int = DEFAULT_ADDRESS, **options: Any
    ) -> MLX90614:
        """Open /dev/i2c-`bus_number` (see open_bus) and drive the sensor on it; the bus is
        reopened the same way while the sensor is down."""
        options.setdefault("reopen", lambda: open_bus(bus_number))
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
        """Failed tries per kind since creation (FAILURE_KINDS; an errno that names no transient
        wire condition counts as "bus")."""
        with self._lock:
            return dict(self._counts)

    @property
    def down(self) -> bool:
        """`down_after` reads in a row have failed; cleared by the next good read."""
        return self._failed_reads >= self._down_after

    def health(self) -> dict[str, Any]:
        """For self-tests and status pages: down or not, failures in a row, reopens, counts."""
        with self._lock:
            return {"down": self.down, "failed_reads_in_a_row": self._failed_reads,
                    "reopens": self.reopens, "failures": dict(self._counts)}

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
            self._closed = True
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
            while True:
                raw = self._read_checked(cmd, what, limits)
                left = self._discard.get(cmd, 0)
                if not left:
                    return raw
                self._discard[cmd] = left - 1
                log.debug("mlx90614 sample_discarded address=%#04x cmd=%#04x raw=%#06x", self.address,
                          cmd, raw)

    def _read_checked(self, cmd: int, what: str, limits: tuple[float, float] | None) -> int:
        """One read with its retries, or SensorError. While down: reopen if due, one probe."""
        if self._closed:
            raise SensorError(f"{self._where()}: driver is closed: create a new MLX90614")
        down = self.down
        if down:
            self._maybe_reopen()
        tries = 1 if down else self._retries
        failures: list[Failure] = []
        for attempt in range(1, tries + 1):
            try:
                raw = self._read_word_once(cmd)
                if limits is not None:
                    check_temperature(raw, limits)
            except Failure as failure:
                self._counts[failure.kind] += 1
                failures.append(failure)
                line = ("mlx90614 read_failed address=%#04x cmd=%#04x kind=%s try=%d/%d problem=%r",
                        self.address, cmd, failure.kind, attempt, tries, failure.problem)
                if down:  # one probe per read while down: the "down" line already said it
                    log.debug(*line)
                else:
                    self._log_limit.log(log, logging.WARNING, ("read_failed", failure.kind), *line)
                if not failure.retryable:
                    break
                if attempt < tries:
                    self._sleep(self._backoff_s * attempt)
            else:
                self._read_succeeded()
                return raw
        last = failures[-1]
        n = "1 try" if len(failures) == 1 else f"{len(failures)} tries"
        kinds = sorted({f.kind for f in failures})
        mixed = f" (failures: {', '.join(kinds)})" if len(kinds) > 1 else ""
        message = f"{self._where()}: reading {what}: {last.problem} after {n}{mixed}: {last.fix}"
        self._read_failed(message)
        raise SensorError(message)

    def _read_succeeded(self) -> None:
        if self.down:
            down_s = self._monotonic() - (self._down_since or self._monotonic())
            self._log_limit.log(
                log, logging.WARNING, "recovered",
                "mlx90614 recovered address=%#04x failed_reads=%d down_s=%.1f reopens=%d",
                self.address, self._failed_reads, down_s, self.reopens)
            self._arm_discard()  # it may have lost power: its first samples are not trusted
        self._failed_reads = 0
        self._down_since = None
        self._backoff_now_s = self._reopen_backoff_s[0]

    def _read_failed(self, message: str) -> None:
        self._failed_reads += 1
        if self._failed_reads == self._down_after:
            self._down_since = self._monotonic()
            self._next_reopen_s = self._down_since  # first reopen at the next read
            self._log_limit.log(log, logging.ERROR, "down",
                                "mlx90614 down address=%#04x failed_reads=%d error=%r",
                                self.address, self._failed_reads, message)

    def _maybe_reopen(self) -> None:
        """Close and reopen the bus, at most once per back-off period (1 s doubling to 30 s)."""
        now = self._monotonic()
        if self._reopen is None or now < self._next_reopen_s:
            return
        self._next_reopen_s = now + self._backoff_now_s
        self._backoff_now_s = min(self._backoff_now_s * 2, self._reopen_backoff_s[1])
        old, self._bus = self._bus, None
        if old is not None:
            try:
                old.close()
            except OSError:
                pass
        try:
            self._bus = self._reopen()
        except OSError as exc:
            self._open_error = str(exc)
            log.warning("mlx90614 reopen_failed address=%#04x error=%r next_try_s=%.0f", self.address,
                        self._open_error, self._next_reopen_s - now)
            return
        self.reopens += 1
        self._arm_discard()
        log.warning("mlx90614 bus_reopened address=%#04x bus=%s reopens=%d", self.address,
                    self.bus_number, self.reopens)

    def _arm_discard(self) -> None:
        self._discard = dict.fromkeys((RAM_TA, RAM_TOBJ1, RAM_TOBJ2), self._discard_samples)

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
            raise Failure(
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
            except Failure as failure:
                self._counts[failure.kind] += 1
                raise SensorError(
                    f"{self._where()}: {what}: {failure.problem}: {failure.fix}"
                ) from None

    # -- bus ----------------------------------------------------------------------------

    def _transfer(self, *msgs: i2c_msg) -> None:
        if self._closed:
            raise SensorError(f"{self._where()}: driver is closed: create a new MLX90614")
        if self._bus is None:  # the last reopen failed; its message names the fix
            raise Failure("bus", "bus could not be reopened", self._open_error, retryable=False)
        try:
            self._bus.i2c_rdwr(*msgs)
        except OSError as exc:
            kind, problem, fix = describe_errno(exc.errno, exc.strerror)
            bus = self.bus_number if self.bus_number is not None else "<bus>"
            fix = fix.format(bus=bus, address=self.address)
            raise Failure(kind, problem, fix, retryable=kind in RETRYABLE_KINDS) from exc

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
