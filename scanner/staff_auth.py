"""Who may use the staff page: the PIN check with its two limits, and the sessions with their
CSRF tokens. No HTTP here (scanner/staff.py), so each rule is tested on its own.

PIN guessing (OWASP Authentication Cheat Sheet, "Protect against automated attacks"):
* per address: LOCKOUT_AFTER wrong PINs lock that address out for LOCKOUT_S;
* across all addresses: GLOBAL_FAILURES wrong PINs within GLOBAL_WINDOW_S lock every login out
  until the oldest of them is GLOBAL_WINDOW_S old. Trade-off: during such a lockout the right
  PIN from a new address is refused too (429 + Retry-After), so an attacker with many addresses
  can keep staff out for as long as the attack lasts; they cannot get in, and the gate itself
  keeps deciding. Without it, 300 addresses meant 1,500 guesses a minute.
Sessions: a random 12-hour token in an HttpOnly cookie, and with it a random CSRF token the page
sends back in X-CSRF-Token (OWASP CSRF Prevention Cheat Sheet, "synchronizer token").
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger("scanner.staff")

SESSION_S = 12 * 3600
MAX_SESSIONS = 64
LOCKOUT_AFTER = 5
LOCKOUT_S = 60.0
GLOBAL_FAILURES = 20
GLOBAL_WINDOW_S = 60.0
MAX_TRACKED = 4096  # addresses remembered for the per-address limit (oldest forgotten first)


class PinGuard:
    """`wait_s(addr)` > 0: refuse without checking; `check(addr, pin)`: compare in constant
    time and count a failure. Thread-safe."""

    def __init__(self, pin: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._pin = pin.encode()
        self._mono = monotonic
        self._lock = threading.Lock()
        self._per_addr: OrderedDict[str, tuple[int, float]] = OrderedDict()  # failures, locked until
        self._recent: deque[float] = deque(maxlen=GLOBAL_FAILURES)  # times of the last wrong PINs

    def wait_s(self, addr: str) -> float:
        with self._lock:
            return self._wait(addr, self._mono())

    def _wait(self, addr: str, now: float) -> float:
        n, until = self._per_addr.get(addr, (0, 0.0))
        mine = until - now if n >= LOCKOUT_AFTER else 0.0
        full = len(self._recent) == GLOBAL_FAILURES
        everyone = self._recent[0] + GLOBAL_WINDOW_S - now if full else 0.0
        return max(0.0, mine, everyone)

    def global_wait_s(self) -> float:
        with self._lock:
            now = self._mono()
            full = len(self._recent) == GLOBAL_FAILURES
            return max(0.0, self._recent[0] + GLOBAL_WINDOW_S - now) if full else 0.0

    def check(self, addr: str, pin: str) -> bool | None:
        """True: right PIN; False: wrong (counted); None: locked out, not checked."""
        with self._lock:
            now = self._mono()
            if self._wait(addr, now) > 0:
                return None
            if hmac.compare_digest(pin.strip().encode(), self._pin):
                self._per_addr.pop(addr, None)
                return True
            n, _ = self._per_addr.pop(addr, (0, 0.0))
            self._per_addr[addr] = (n + 1, now + LOCKOUT_S)
            while len(self._per_addr) > MAX_TRACKED:
                self._per_addr.popitem(last=False)
            self._recent.append(now)
            everyone = self._recent[0] + GLOBAL_WINDOW_S - now if len(self._recent) == GLOBAL_FAILURES else 0
        log.warning("event=staff_login_failed addr=%s failures=%d", addr, n + 1)
        if everyone > 0:
            log.warning("event=staff_login_global_lockout failures=%d window_s=%g wait_s=%.0f", GLOBAL_FAILURES,
                        GLOBAL_WINDOW_S, everyone)
        return False


class Sessions:
    """Session token -> (expiry, CSRF token); at most MAX_SESSIONS (the oldest goes first)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._mono = monotonic
        self._lock = threading.Lock()
        self._by_token: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def create(self) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self._lock:
            self._by_token[token] = (self._mono() + SESSION_S, csrf)
            while len(self._by_token) > MAX_SESSIONS:
                self._by_token.popitem(last=False)
        return token, csrf

    def csrf(self, token: str | None) -> str | None:
        """The CSRF token of a live session, else None."""
        if not token:
            return None
        with self._lock:
            now = self._mono()
            for t in [t for t, (exp, _) in self._by_token.items() if exp <= now]:
                del self._by_token[t]
            found = None
            for t, (_, csrf) in self._by_token.items():  # constant time per entry, no early exit
                if hmac.compare_digest(token.encode(), t.encode()):
                    found = csrf
            return found

    def end(self, token: str | None) -> None:
        with self._lock:
            if token:
                self._by_token.pop(token, None)
