"""Is the wall clock right? The Pi has no RTC: after an offline reboot it resumes from
fake-hwclock's last save, hours behind, and a code check on that clock is a guess.

Trusted when the kernel says NTP is synchronised: `adjtimex()` maxerror under 16 s (what
`timedatectl` reports as "System clock synchronized"), or systemd-timesyncd's flag file
exists. (docs/hardware.md section 6; docs/credentials.md section 4.) Or, where NTP is blocked but the central
server answers: the trust sync measured the offset to the server's clock (HTTP `Date`) recently
and the wall clock has not jumped since. A jump shows as a change of wall minus monotonic time
(monotonic never jumps); then the measurement no longer describes this clock and is dropped.
While the offset holds, `now()` is the wall clock corrected by it. Every record carries the answer.

Server time counts only from a response that came over HTTPS with a verified certificate
(scanner/sync/fetch.py): whoever answers a plain-HTTP URL must not move the gate's clock. And time
from any source is bounded below by signed time: the newest `generated_at` of the trust data in
force (trust list, status list, policy, all signed by the pinned anchor) proves that "now" is no
earlier than that. A reading earlier than this floor (less `FLOOR_TOLERANCE_S`) is untrusted,
whatever its source, and a server time earlier than it is refused (`ServerOffset.record`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"
MAXERROR_LIMIT_US = 16_000_000
#: HTTP Date has one-second resolution: the offset is known to +-1 s plus half the round trip.
DATE_RESOLUTION_S = 1.0
#: How far a reading may fall short of the signed-time floor before it is untrusted: the centre's
#: signing clock may run a little ahead of true time. Minutes, not the hours an attack needs.
FLOOR_TOLERANCE_S = 300.0
BELOW_FLOOR = "clock earlier than signed data"


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux, 64-bit longs): the fields we read come first.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    # find_library runs ldconfig in a subprocess (about a millisecond): once per process, not per scan.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def kernel_maxerror_us() -> int | None:
    """The kernel's estimate of the clock's maximum error, in microseconds; None if unknown."""
    try:
        libc = _libc()
        tx = _Timex()
        if libc.adjtimex(ctypes.byref(tx)) < 0:
            return None
        return int(tx.maxerror)
    except (OSError, AttributeError):
        return None


def system_clock_trusted(flag_path: str = TIMESYNC_FLAG,
                         maxerror: Callable[[], int | None] = kernel_maxerror_us) -> bool:
    if os.path.exists(flag_path):
        return True
    err = maxerror()
    return err is not None and 0 <= err < MAXERROR_LIMIT_US


@dataclass(frozen=True)
class _Measured:
    offset_s: float
    uncertainty_s: float
    wall_minus_mono: float
    mono: float


class ServerOffset:
    """The wall clock's offset to the central server's clock, measured at a trust sync.

    Valid for `max_age_s` of monotonic time after the measurement, and only while wall minus
    monotonic stays within `max_jump_s` of its value then: a step of the wall clock (a person
    setting the date, fake-hwclock restoring an old time) invalidates it. Thread-safe: the sync
    thread records, the scan loop reads one immutable measurement.

    It also carries the signed-time floor (`set_floor`): a callable giving the newest
    `generated_at` (epoch seconds) of the signed trust data in force, read without I/O. The
    floor only rises: `floor_s()` is the largest value seen. `Clock` reads it from here, so the
    one object the trust state shares with the lane carries both."""

    def __init__(self, max_age_s: float = 12 * 3600, max_jump_s: float = 10.0, *,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
                 max_uncertainty_s: float = 30.0, floor_tolerance_s: float = FLOOR_TOLERANCE_S) -> None:
        self.max_age_s = max_age_s
        self.max_jump_s = max_jump_s
        self.max_uncertainty_s = max_uncertainty_s
        self.floor_tolerance_s = floor_tolerance_s
        self._wall = wall
        self._mono = mono
        self._m: _Measured | None = None
        self._lock = threading.Lock()
        self._floor_source: Callable[[], float | None] | None = None
        self._floor_max: float | None = None

    @property
    def has_floor(self) -> bool:
        return self._floor_source is not None

    def set_floor(self, source: Callable[[], float | None]) -> None:
        """Where the signed-time floor comes from: a cheap, I/O-free callable (epoch seconds or
        None while no signed bundle with a `generated_at` is in force)."""
        self._floor_source = source

    def floor_s(self) -> float | None:
        """The signed-time floor in epoch seconds (the largest seen), or None."""
        src = self._floor_source
        value = src() if src is not None else None
        if value is not None and (self._floor_max is None or value > self._floor_max):
            self._floor_max = float(value)
        return self._floor_max

    def record(self, server_time_s: float, sent_wall_s: float, sent_mono_s: float) -> float | None:
        """Record one server time (epoch seconds, from a verified HTTPS response) that was
        sent at (sent_wall_s, sent_mono_s) and arrived now. Returns the offset, or None when the
        round trip was too slow to tell the time to within `max_uncertainty_s`, or when the
        server's time is earlier than the signed-time floor: then the server's clock is wrong
        (or not the centre's), and any earlier measurement from it is dropped too."""
        recv_wall, recv_mono = self._wall(), self._mono()
        rtt = max(recv_mono - sent_mono_s, 0.0)
        uncertainty = rtt / 2 + DATE_RESOLUTION_S
        if uncertainty > self.max_uncertainty_s:
            return None
        floor = self.floor_s()
        if floor is not None and server_time_s + uncertainty < floor - self.floor_tolerance_s:
            with self._lock:
                self._m = None
            log.warning("event=server_time_refused behind_signed_s=%.0f detail=%s: the server's Date is earlier "
                        "than signed trust data; the clock is untrusted until a sane measurement",
                        floor - server_time_s, BELOW_FLOOR)
            return None
        # The server stamped its Date somewhere in the round trip: take the middle.
        offset = server_time_s - (recv_wall - rtt / 2)
        with self._lock:
            self._m = _Measured(offset, uncertainty, recv_wall - recv_mono, recv_mono)
        return offset

    def current(self) -> float | None:
        """The offset in seconds (server minus wall) while it is valid, else None."""
        m = self._m
        if m is None:
            return None
        wall, mono = self._wall(), self._mono()
        if mono - m.mono > self.max_age_s:
            return None
        jump = (wall - mono) - m.wall_minus_mono
        if abs(jump) > self.max_jump_s:
            with self._lock:
                if self._m is m:
                    self._m = None
                    log.warning("event=clock_jump jump_s=%.1f detail=server offset dropped until the next sync",
                                jump)
            return None
        return m.offset_s

    def clear(self) -> None:
        with self._lock:
            self._m = None


@dataclass(frozen=True)
class ClockState:
    """One reading: the time to use, whether to trust it, where it came from ("ntp",
    "server", "always", "none") and, when untrusted, why (`reason`, one short English phrase)."""

    now: datetime
    trusted: bool
    source: str
    reason: str = ""


class Clock:
    """Wall time plus whether to trust it. `trust="always"` is for simulation only (config
    refuses it with real hardware) and is exempt from every check. `offset` is the trust
    sync's server-time measurement; `lower_bound` gives the signed-time floor in epoch seconds
    (default: the offset's `floor_s`). A trusted reading earlier than the floor less
    `floor_tolerance_s` is reported untrusted with reason `BELOW_FLOOR`."""

    def __init__(self, trust: str = "system", now: Callable[[], datetime] | None = None,
                 trusted: Callable[[], bool] = system_clock_trusted, *,
                 offset: ServerOffset | None = None, lower_bound: Callable[[], float | None] | None = None,
                 floor_tolerance_s: float = FLOOR_TOLERANCE_S) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._always = trust == "always"
        self._trusted = trusted
        self.offset = offset
        self._lower_bound = lower_bound
        self.floor_tolerance_s = floor_tolerance_s
        self._below = False  # for logging the change only, not once per scan

    def floor_s(self) -> float | None:
        if self._lower_bound is not None:
            return self._lower_bound()
        return self.offset.floor_s() if self.offset is not None else None

    def state(self) -> ClockState:
        wall = self._now()
        if self._always:
            return ClockState(wall, True, "always")
        if self._trusted():
            st = ClockState(wall, True, "ntp")
        else:
            off = self.offset.current() if self.offset is not None else None
            if off is None:
                return ClockState(wall, False, "none", "not synchronised: no NTP and no recent server time")
            st = ClockState(wall + timedelta(seconds=off), True, "server")
        floor = self.floor_s()
        below = floor is not None and st.now.timestamp() < floor - self.floor_tolerance_s
        if below != self._below:
            self._below = below
            if below:
                log.warning("event=clock_below_signed_time source=%s behind_s=%.0f detail=%s: untrusted",
                            st.source, (floor or 0) - st.now.timestamp(), BELOW_FLOOR)
            else:
                log.info("event=clock_above_signed_time source=%s", st.source)
        if below:
            return replace(st, trusted=False, reason=BELOW_FLOOR)
        return st

    def now(self) -> datetime:
        return self.state().now

    def trusted(self) -> bool:
        return self.state().trusted


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
