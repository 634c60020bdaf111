"""Site calibration of the fever screen: paired readings -> offset_c and ambient_coeff.

Why: forehead skin reads below core temperature, and more so in the cold (docs/hardware.md section 3), so
the lane maps the sensor's object and ambient readings to a body estimate,
    body = object + offset_c + ambient_coeff * (reference_ambient_c - ambient),
before the 37.3 °C threshold is applied. The two numbers depend on the housing, the distance and
the site, so a technician fits them on site: each pair is the sensor's reading of a person
(median of the lane's own k samples) and the same person's temperature from a reference
(clinical) thermometer. At least 3 pairs, ideally at different ambients (morning, noon, night),
else only the offset is fitted and ambient_coeff is kept.

Library first: the fit is a pure function, the config edit is text in / text out, reading a
pair takes an injected clock; `scanner.cli_calibrate` is the thin interactive layer.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.base import Thermometer
from scanner.config import parse_config
from scanner.errors import ConfigError, ScannerError
from scanner.models import Measurement, TempStatus
from scanner.numbers import in_range
from scanner.screening import Screener, ScreeningRules

MIN_PAIRS = 3
MIN_AMBIENT_SPAN_C = 3.0  # below this the ambient term cannot be told from noise
OFFSET_LIMITS_C = (-3.0, 8.0)  # forehead reads 0.5..4 °C below core; more means a wrong pair
COEFF_LIMITS = (-0.1, 0.5)  # skin cools in the cold: a clearly negative slope is not physics
MAX_RMS_C = 0.4
MAX_RESIDUAL_C = 0.8
REFERENCE_LIMITS_C = (34.0, 42.5)  # a living person's core temperature
OBJECT_LIMITS_C = (20.0, 43.0)
AMBIENT_LIMITS_C = (-30.0, 50.0)
VERSION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
KEYS = ("offset_c", "ambient_coeff", "reference_ambient_c", "calibration_version")


class CalibrationError(ScannerError, ValueError):
    """A fit or an edit that must not be written; the message names the fix."""


@dataclass(frozen=True)
class Pair:
    object_c: float
    ambient_c: float
    reference_c: float


@dataclass(frozen=True)
class Fit:
    offset_c: float
    ambient_coeff: float
    reference_ambient_c: float
    coeff_fitted: bool  # False: ambients too close together, ambient_coeff kept as configured
    residuals_c: tuple[float, ...]  # reference minus mapped, per pair

    def body(self, object_c: float, ambient_c: float) -> float:
        return object_c + self.offset_c + self.ambient_coeff * (self.reference_ambient_c - ambient_c)

    @property
    def rms_c(self) -> float:
        return math.sqrt(sum(r * r for r in self.residuals_c) / len(self.residuals_c))

    @property
    def max_abs_c(self) -> float:
        return max(abs(r) for r in self.residuals_c)


def check_pair(p: Pair) -> str:
    """'' when plausible, else what is wrong with it and the fix."""
    for name, value, (lo, hi), fix in (
        ("reference", p.reference_c, REFERENCE_LIMITS_C, "type the reference thermometer's reading in °C"),
        ("object", p.object_c, OBJECT_LIMITS_C, "the sensor did not see skin: hold the forehead or wrist to it"),
        ("ambient", p.ambient_c, AMBIENT_LIMITS_C, "check the sensor"),
    ):
        if not in_range(value, lo, hi):  # False for NaN
            return f"{name} {value} °C outside {lo}..{hi}; fix: {fix}"
    return ""


def residuals(pairs: Sequence[Pair], offset_c: float, ambient_coeff: float,
              reference_ambient_c: float) -> tuple[float, ...]:
    return tuple(round(p.reference_c - (p.object_c + offset_c + ambient_coeff * (reference_ambient_c - p.ambient_c)),
                       3) for p in pairs)


def fit_calibration(pairs: Sequence[Pair], reference_ambient_c: float = 25.0, keep_coeff: float = 0.0) -> Fit:
    """Least-squares fit of reference - object = offset + coeff * (reference_ambient - ambient).

    Refuses (CalibrationError) too few or implausible pairs and absurd results; each message
    says which pair or value and what to do."""
    if len(pairs) < MIN_PAIRS:
        raise CalibrationError(f"only {len(pairs)} pair(s); fix: take at least {MIN_PAIRS} pairs, ideally at "
                               "different ambient temperatures (morning, noon, night)")
    for i, p in enumerate(pairs, 1):
        problem = check_pair(p)
        if problem:
            raise CalibrationError(f"pair {i}: {problem}")
    y = np.array([p.reference_c - p.object_c for p in pairs])
    x = np.array([reference_ambient_c - p.ambient_c for p in pairs])
    span = float(x.max() - x.min())
    if span >= MIN_AMBIENT_SPAN_C:
        design = np.column_stack([np.ones_like(x), x])
        (offset, coeff), *_ = np.linalg.lstsq(design, y, rcond=None)
        fitted = True
    else:
        coeff, fitted = keep_coeff, False
        offset = float(np.mean(y - coeff * x))
    offset, coeff = round(float(offset), 2), round(float(coeff), 3)
    fit = Fit(offset, coeff, reference_ambient_c, fitted, residuals(pairs, offset, coeff, reference_ambient_c))
    problems = []
    if not OFFSET_LIMITS_C[0] <= offset <= OFFSET_LIMITS_C[1]:
        problems.append(f"offset_c {offset:+.2f} °C outside {OFFSET_LIMITS_C[0]}..{OFFSET_LIMITS_C[1]}")
    if not COEFF_LIMITS[0] <= coeff <= COEFF_LIMITS[1]:
        problems.append(f"ambient_coeff {coeff:+.3f} outside {COEFF_LIMITS[0]}..{COEFF_LIMITS[1]}")
    if not fit.rms_c <= MAX_RMS_C:  # `not <=`: a NaN is refused too
        problems.append(f"residual RMS {fit.rms_c:.2f} °C > {MAX_RMS_C}")
    worst = max(range(len(pairs)), key=lambda i: abs(fit.residuals_c[i]))
    if not abs(fit.residuals_c[worst]) <= MAX_RESIDUAL_C:
        problems.append(f"pair {worst + 1} is off by {fit.residuals_c[worst]:+.2f} °C")
    if problems:
        raise CalibrationError("fit refused: " + "; ".join(problems) + "; fix: re-take the pairs (same spot and "
                               "distance, person still, reference read within a minute), drop a mistyped pair")
    return fit


def read_pairs_csv(path: str | Path) -> list[Pair]:
    """The pairs in a CSV file (scanner.calibrate_csv: `object_c,ambient_c,reference_c` per line,
    or any order under a header naming them; what Excel and Notepad save is accepted). Raises
    CalibrationError, one line per bad row (every one, up to 20) with the file, the line and the
    fix, for rows that are not three finite numbers or not a plausible pair, for a file without
    data rows, and for a file that cannot be read as UTF-8."""
    from scanner.calibrate_csv import CsvError, read_rows

    try:
        rows = read_rows(path, lambda obj, amb, ref: check_pair(Pair(obj, amb, ref)))
    except CsvError as e:
        raise CalibrationError(str(e)) from None
    return [Pair(obj, amb, ref) for _, obj, amb, ref in rows]


# -- reading one pair from the sensor ------------------------------------------------------


def measure_once(thermo: Thermometer, rules: ScreeningRules, *, poll_s: float, timeout_s: float,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> Measurement | None:
    """The lane's own measurement (presence, k samples, median, spread) of the person now at the
    sensor, or None if nobody was detected in time. A sensor that is down raises."""
    screener = Screener(rules)
    start = clock()
    while clock() - start < timeout_s:
        now = clock()
        try:
            obj, amb = thermo.object_temperature(), thermo.ambient_temperature()
        except OSError as e:
            screener.feed_error(now, str(e))
            if screener.down:
                raise CalibrationError(f"thermometer not answering: {e}") from None
        else:
            m = screener.feed(now, obj, amb)
            if m is not None:
                return m
        sleep(poll_s)
    return None


def status_hint(m: Measurement) -> str:
    """Why a measurement cannot be used as a pair, Chinese and English; '' if it can."""
    if m.status is TempStatus.UNSTABLE:
        return f"读数不稳，请保持不动后重测 / unstable ({m.detail}): hold still and retry"
    if m.status is not TempStatus.OK:
        return f"读数不可用，请稍后重测 / not usable ({m.status.value}: {m.detail}): wait and retry"
    return ""


# -- writing the config ----------------------------------------------------------------------

_SECTION_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
_VALUE = r"(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s#]+)"


def toml_values(fit: Fit, version: str) -> dict[str, str]:
    if not VERSION_RE.match(version):
        raise CalibrationError(f"calibration version {version!r} invalid; fix: letters, digits and . _ : - only, "
                               "e.g. site-2026-01-15")
    return {"offset_c": f"{fit.offset_c:.2f}", "ambient_coeff": f"{fit.ambient_coeff:.3f}",
            "reference_ambient_c": f"{fit.reference_ambient_c:.1f}", "calibration_version": f'"{version}"'}


def edit_thermometer_section(text: str, values: dict[str, str]) -> str:
    """Set `key = value` lines in [thermometer], keeping every other line, comment and inline
    comment as it was; keys that are missing are added after the section's last key."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if (m := _SECTION_RE.match(line)) and m.group(1) == "thermometer"),
                 None)
    if start is None:
        block = "".join(f"{k} = {v}\n" for k, v in values.items())
        return "".join(lines) + ("\n" if lines else "") + "[thermometer]\n" + block
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    last_key = start
    todo = dict(values)
    for i in range(start + 1, end):
        if re.match(r"^\s*[A-Za-z0-9_\-]+\s*=", lines[i]):
            last_key = i
        for k in list(todo):
            m = re.match(rf"^(\s*{re.escape(k)}\s*=\s*){_VALUE}(.*)$", lines[i].rstrip("\n"))
            if m:
                lines[i] = f"{m.group(1)}{todo.pop(k)}{m.group(3)}\n"
    added = [f"{k} = {v}\n" for k, v in todo.items()]
    lines[last_key + 1:last_key + 1] = added
    return "".join(lines)


def updated_config_text(text: str, path: str, fit: Fit, version: str) -> str:
    """The new file text, checked: it must still load and carry exactly the fitted values."""
    values = toml_values(fit, version)
    new = edit_thermometer_section(text, values)
    try:
        th = parse_config(new, path).thermometer
    except ConfigError as e:
        raise CalibrationError(f"the edited config would not load ({e.problems[0]}); fix: nothing was written, "
                               f"set {', '.join(KEYS)} in [thermometer] by hand") from None
    got = (th.offset_c, th.ambient_coeff, th.reference_ambient_c, th.calibration_version)
    want = (float(values["offset_c"]), float(values["ambient_coeff"]), float(values["reference_ambient_c"]), version)
    if got != want:
        raise CalibrationError(f"could not edit {path} safely (it would load {got}, not {want}); fix: nothing was "
                               f"written, set {', '.join(KEYS)} in [thermometer] by hand")
    return new


def write_config(path: str | Path, new_text: str) -> Path:
    """Replace the file atomically (temp file, fsync, rename) keeping its mode; the old text
    stays in FILE.bak. Returns the backup path."""
    p = Path(path)
    backup = p.with_name(p.name + ".bak")
    try:
        old = p.read_bytes()
        mode = p.stat().st_mode & 0o777
        backup.write_bytes(old)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(new_text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except PermissionError as e:
        raise CalibrationError(f"cannot write {e.filename or p}: permission denied; fix: run with sudo, or as the "
                               "owner of the config file") from None
    except OSError as e:
        raise CalibrationError(f"cannot write {p} ({e.strerror or e}); fix: check free space and that the "
                               "directory is writable") from None
    return backup


def pairs_table(pairs: Iterable[Pair], fit: Fit) -> list[str]:
    """One line per pair: the readings, the mapped body temperature and the residual."""
    out = [" #  object °C  ambient °C  reference °C  mapped °C  residual °C",
           " #  物体温度    环境温度     参考体温       换算体温    残差"]
    for i, (p, r) in enumerate(zip(pairs, fit.residuals_c, strict=True), 1):
        out.append(f"{i:2d}  {p.object_c:9.2f}  {p.ambient_c:10.2f}  {p.reference_c:12.2f}  "
                   f"{fit.body(p.object_c, p.ambient_c):9.2f}  {r:+11.2f}")
    return out
