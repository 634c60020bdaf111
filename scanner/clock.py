"""Is the wall clock right? The Pi has no RTC: after an offline reboot it resumes from
fake-hwclock's last save, hours behind, and a code check on that clock is a guess.

Trusted when the kernel says NTP is synchronised: `adjtimex()` maxerror under 16 s (what
`timedatectl` reports as "System clock synchronized"), or systemd-timesyncd's flag file
exists. (HARDWARE.md section 6; CODES.md section 4.) The sync issue adds the server-offset
path; every record carries the answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from datetime import UTC, datetime

TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"
MAXERROR_LIMIT_US = 16_000_000


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


def kernel_maxerror_us() -> int | None:
    """The kernel's estimate of the clock's maximum error, in microseconds; None if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
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


class Clock:
    """Wall time plus whether to trust it. `trust="always"` is for simulation only (config
    refuses it with real hardware)."""

    def __init__(self, trust: str = "system", now: Callable[[], datetime] | None = None,
                 trusted: Callable[[], bool] = system_clock_trusted) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._trusted = (lambda: True) if trust == "always" else trusted

    def now(self) -> datetime:
        return self._now()

    def trusted(self) -> bool:
        return self._trusted()


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
