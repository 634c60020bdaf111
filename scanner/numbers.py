"""The one door for floats that enter the program: NaN and ±infinity are refused here.

Why: every comparison with NaN is false, so `temperature >= threshold` with a NaN on either side
says "no fever", and `lo <= x <= hi` written the other way round (`x < lo or x > hi`) lets a NaN
through a range check. IEEE 754-2019 section 5.11 (comparisons involving NaN are unordered);
TOML 1.0 allows `nan` and `inf` literals, Python's json module accepts `NaN`, `Infinity` and
overflowing numbers such as `1e999` (RFC 8259 section 6 allows none of them).

Entry points that use this module: the config file (scanner.config), calibration CSV and typed
readings (scanner.calibrate, scanner.cli_calibrate), signed bundles (scanner.credentials.bundles),
HTTP JSON answers (scanner.sync), thermometer readings (scanner.hardware).
"""

from __future__ import annotations

import json
import math
from typing import Any

from scanner.errors import ScannerError


class NotFiniteError(ScannerError, ValueError):
    """A number is NaN, ±infinity, or not a number at all. str(e) names what and the fix."""


class NotFiniteJSONError(json.JSONDecodeError):
    """JSON text holds NaN, Infinity or a number too large for a float. A JSONDecodeError, so
    every caller that already refuses malformed JSON refuses this too."""


class TooDeepJSONError(json.JSONDecodeError):
    """JSON text nested deeper than the parser's recursion limit (`[` x 100000): Python's json
    module raises RecursionError for it, which no caller expects from a parser. A
    JSONDecodeError (so a ValueError), like every other malformed text."""


def is_finite_number(x: Any) -> bool:
    """True for an int or float (not bool) that is neither NaN nor ±infinity."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def finite(x: Any, what: str = "value") -> float:
    """`x` as a float, or NotFiniteError("{what}: must be a finite number (got nan)...").

    Accepts int and float (not bool: True is not a temperature)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise NotFiniteError(f"{what}: must be a number (got {x!r})")
    try:
        value = float(x)
    except OverflowError:  # an int beyond a float's range
        raise NotFiniteError(f"{what}: must be a finite number (got {x!r})") from None
    if not math.isfinite(value):
        raise NotFiniteError(f"{what}: must be a finite number (got {value!r})")
    return value


def parse_finite(text: str, what: str = "value") -> float:
    """A decimal number typed or read from a file, e.g. "36.8". NotFiniteError for text that is
    not a number and for "nan", "inf", "1e999" (which float() accepts)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NotFiniteError(f"{what}: not a number (got {text!r})") from None
    return finite(value, what)


def in_range(x: float, lo: float, hi: float) -> bool:
    """lo <= x <= hi, and False for NaN (written so that an unordered comparison fails)."""
    return lo <= x <= hi


def _refuse_constant(name: str) -> Any:
    raise NotFiniteJSONError(f"{name} is not a JSON number (RFC 8259 section 6)", name, 0)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFiniteJSONError(f"{text} does not fit a finite float", text, 0)
    return value


def loads_json(data: str | bytes | bytearray) -> Any:
    """json.loads that refuses NaN, Infinity, -Infinity and overflowing numbers (1e999) with
    NotFiniteJSONError, and nesting deeper than the recursion limit with TooDeepJSONError (both
    json.JSONDecodeError, so ValueError too). Integers stay ints."""
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise TooDeepJSONError("JSON nested deeper than the parser allows", "", 0) from None
