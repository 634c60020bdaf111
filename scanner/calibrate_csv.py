"""Calibration pairs from a CSV file, as people make them: typed in a text editor or saved from
Excel or WPS (scanner.calibrate uses this for `calibrate --pairs FILE.csv`).

Accepted: UTF-8 with or without a BOM (Excel's "CSV UTF-8" writes one), CRLF or LF line ends,
`,` `;` or tab between columns (Excel uses `;` where the decimal mark is a comma; Excel's
optional first line `sep=;` is honoured), a decimal comma inside a cell ("36,8") when the
columns are not separated by commas, blank trailing cells, `#` comment lines. Refused, each
with its line and the fix: another encoding (GBK), a row with a column no header names (it
would be dropped silently), a row that looks like decimal commas split into extra columns.

Rows are `object_c,ambient_c,reference_c` in that order, or any order under a header line that
names them (case and spaces ignored); other columns the header names are ignored.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

from scanner.numbers import NotFiniteError, parse_finite
from scanner.textfile import NotUtf8Error, read_text

COLUMNS = ("object_c", "ambient_c", "reference_c")
_INT = re.compile(r"^[+-]?\d+$")
_DECIMAL_COMMA = re.compile(r"^([+-]?\d+),(\d+)$")
MAX_PROBLEMS = 20  # bad rows told at once; the rest are counted
_ONE_PAIR = "one pair per line, object_c,ambient_c,reference_c in °C"


class CsvError(ValueError):
    """One line: `FILE line N: what is wrong (got X); fix: ...`."""


def _number(cell: str) -> float:
    m = _DECIMAL_COMMA.match(cell)
    return parse_finite(f"{m.group(1)}.{m.group(2)}" if m else cell, "value")


def _is_number(cell: str) -> bool:
    try:
        _number(cell)
    except NotFiniteError:
        return False
    return True


def _delimiter(lines: list[tuple[int, str]]) -> str:
    text = "\n".join(line for _, line in lines)
    return ";" if ";" in text else "\t" if "\t" in text else ","


def read_rows(path: str | Path, check: Callable[[float, float, float], str | None] | None = None,
              ) -> list[tuple[int, float, float, float]]:
    """(line, object_c, ambient_c, reference_c) per data row. `check(object_c, ambient_c,
    reference_c)` gives a problem with a row's values (an implausible pair) or None. CsvError for
    a file that cannot be read, a header-only or empty file (naming the file), and for every row
    the module docstring says is refused or `check` refuses: one line `FILE line N: ...; fix: ...`
    per bad row, up to MAX_PROBLEMS of them."""
    p = Path(path)
    try:
        text = read_text(p)
    except NotUtf8Error as e:
        raise CsvError(f"{p} line {e.line}: {e.problem}" if e.line else f"{p}: {e.problem}") from None
    except OSError as e:
        raise CsvError(f"cannot read {p} ({e.strerror or e}); fix: give the path of a CSV file") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    delimiter = ""
    if lines and lines[0][1].strip().lower().startswith("sep=") and len(lines[0][1].strip()) == 5:
        delimiter = lines.pop(0)[1].strip()[4]  # Excel's own hint line
    delimiter = delimiter or _delimiter(lines)
    rows = []
    for n, line in lines:
        cells = [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            rows.append((n, line, cells))
    index, width, header_line = [0, 1, 2], 3, 0
    if rows and (not _is_number(rows[0][2][0]) or any(c.lower().replace(" ", "") in COLUMNS for c in rows[0][2])):
        n, line, cells = rows.pop(0)
        header = [c.lower().replace(" ", "") for c in cells]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise CsvError(f"{p} line {n}: header lacks {', '.join(missing)} (got {line.strip()!r}); fix: first "
                           "line object_c,ambient_c,reference_c")
        index, width, header_line = [header.index(c) for c in COLUMNS], len(header), n
    if not rows:
        got = "only a header" if header_line else "only comments" if text.strip() else "an empty file"
        raise CsvError(f"{p}: no data rows (got {got}); fix: {_ONE_PAIR}, e.g. 32.2,5.0,36.7")
    out, problems = [], []
    for n, line, cells in rows:
        problem = _row_problem(cells, index, width, line)
        if not problem:
            obj, amb, ref = (_number(cells[i]) for i in index)
            problem = check(obj, amb, ref) if check else None  # "" or None: plausible
            if not problem:
                out.append((n, obj, amb, ref))
        if problem:
            problems.append(f"{p} line {n}: {problem}")
    if problems:
        more = len(problems) - MAX_PROBLEMS
        shown = problems[:MAX_PROBLEMS] + ([f"{p}: {more} more bad row(s) not shown"] if more > 0 else [])
        raise CsvError("\n".join(shown) if len(problems) == 1 else
                       f"{p}: {len(problems)} bad rows, fix each one:\n" + "\n".join(f"  {x}" for x in shown))
    return out


def _row_problem(cells: list[str], index: list[int], width: int, line: str) -> str | None:
    """What is wrong with one data row (without `FILE line N: `), None when it is three numbers."""
    if len(cells) > width:
        if all(_INT.match(c) for c in cells):
            return (f"looks like decimal commas split into {len(cells)} columns (got {line.strip()!r}); fix: write "
                    "33.1 with a dot, or separate the columns with ';'")
        return (f"{len(cells)} columns where {width} are named (got {line.strip()!r}); fix: {_ONE_PAIR}, or a header "
                "line naming every column (other named columns are ignored)")
    try:
        for i in index:
            _number(cells[i])
    except NotFiniteError as e:
        return f"expected three numbers object_c,ambient_c,reference_c, each finite ({e}); fix: {_ONE_PAIR}"
    except IndexError:
        return f"expected three numbers object_c,ambient_c,reference_c (got {line.strip()!r}); fix: {_ONE_PAIR}"
    return None
