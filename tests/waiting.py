"""Polling helper for tests of threaded code: wait for a condition, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout_s: float = 8.0) -> bool:
    """True as soon as `cond()` is truthy; False if it is not within `timeout_s` (generous:
    machines here are shared, and a passing test returns at once anyway)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())
