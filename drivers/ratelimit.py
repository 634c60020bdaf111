"""Rate limit for repeated log lines: the first of each kind, then at most one per interval.

Why: a device that fails the same way on every read (an MLX90614 that NACKs each first try
and answers the retry) would otherwise write a WARNING per read, about 40 lines a second, and
bury everything else in the journal. The first line of a kind always appears at once; later
ones of the same kind are counted, and the next line let through says how many were held back
(" held_back=37 over_s=10"), so nothing is hidden, only summarised.

Lives in drivers/ (drivers never import scanner/); scanner/ may import it. Thread-safe. The
clock is injected (monotonic seconds) so tests control time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["DEFAULT_INTERVAL_S", "LogRateLimiter"]

DEFAULT_INTERVAL_S = 10.0
#: Kinds remembered at most; the least recently logged is forgotten first (its next line then
#: appears at once, as a first occurrence). Keeps memory bounded if keys ever come from data.
MAX_KINDS = 256


class LogRateLimiter:
    """Per-kind limiter: `allow(kind)` returns None to hold a line back, else how many lines of
    that kind were held back since the last one let through (0 for the first occurrence).

    `interval_s` (> 0, seconds): the shortest time between two lines of one kind. `clock`:
    monotonic seconds (default time.monotonic)."""

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not interval_s > 0:  # also refuses NaN
            raise ValueError(f"interval_s={interval_s}: must be a number of seconds > 0")
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()  # kind -> (t, held)

    def allow(self, kind: Hashable) -> int | None:
        taken = self._take(kind)
        return None if taken is None else taken[0]

    def held_back(self, kind: Hashable) -> int:
        """Lines of `kind` held back since the last one let through (for status pages, tests)."""
        with self._lock:
            seen = self._last.get(kind)
            return 0 if seen is None else seen[1]

    def log(
        self, logger: logging.Logger, level: int, kind: Hashable, msg: str, *args: object
    ) -> bool:
        """`logger.log(level, msg, *args)` unless held back; a line that follows held-back ones
        ends with " held_back=N over_s=S" (N lines in the S seconds since the last one let
        through; logfmt, like the driver's lines). True if a line was written."""
        if not logger.isEnabledFor(level):
            return False
        taken = self._take(kind)
        if taken is None:
            return False
        held, since_s = taken
        if held:
            logger.log(level, msg + " held_back=%d over_s=%.0f", *args, held, since_s)
        else:
            logger.log(level, msg, *args)
        return True

    def _take(self, kind: Hashable) -> tuple[int, float] | None:
        """None: hold back (counted). Else (held back before, seconds since the last line)."""
        now = self._clock()
        with self._lock:
            seen = self._last.get(kind)
            if seen is not None and now - seen[0] < self.interval_s:
                self._last[kind] = (seen[0], seen[1] + 1)
                return None
            taken = (0, 0.0) if seen is None else (seen[1], now - seen[0])
            self._last[kind] = (now, 0)
            self._last.move_to_end(kind)
            while len(self._last) > MAX_KINDS:
                self._last.popitem(last=False)
            return taken
