"""The config's TOML text before validation: where each `[section]` and `key =` is (tomllib
gives no line numbers), and syntax errors told one per line while the rest is still read.

Why (issue 12, item 10): tomllib stops at the first error, so one missing quote hid every other
problem, and a key written twice said "Cannot overwrite a value (at line 105, column 15)"
without the key or the word duplicate. `load_toml` parses; on an error it records one line for
it (naming the key, the first line, and "duplicate" where that is the cause), takes that line
out of play and parses again, up to MAX_SYNTAX_ERRORS times, so the caller can still check the
keys that did parse. A repeated `[section]` is read as a continuation of the first one, so the
keys under it are checked too (and a key set in both is a duplicate). TOML 1.0: "Defining a
key multiple times is invalid", "you cannot define any table more than once".
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

HEADER_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=\s*(.*?)\s*$")
_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)|\s*\(at end of document\)")
_BARE_OK = re.compile(r"^(true|false|[+-]?(inf|nan)|[+\-0-9\"'\[{].*)$")
_ANY_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*[=＝]")  # a key even when ＝ was typed for =
_WIDE_HEADER_RE = re.compile(r"^\s*[\[［]\s*([A-Za-z0-9_.\-]+)\s*[\]］]\s*(#.*)?$")
_DECIMAL_COMMA = re.compile(r"^([+-]?\d+),(\d+)\s*(#.*)?$")
_WIDE = "“”‘’＝［］，：　"  # what a Chinese input method types instead of " = [ ] , :
MAX_SYNTAX_ERRORS = 20
_PLACEHOLDER = "__line{}__"  # a stand-in header for a repeated or broken one


@dataclass
class Parsed:
    """`data`: what parsed ({} when the text could not be salvaged, `complete` False then);
    `problems`: (line, message) per syntax error; `sections`/`keys`: line of each `[section]` and
    `section.key` (a key before any section: just `key`); `broken`: `section.key` names whose
    line had a syntax error (their value is unknown, not missing)."""

    data: dict[str, Any]
    problems: list[tuple[int, str]] = field(default_factory=list)
    sections: dict[str, int] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    complete: bool = True


def locate(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """Line numbers (1-based, first occurrence) of `[section]` headers and `section.key`
    assignments; a key before any section is `key`."""
    return _locate(text.split("\n"), {})


def _locate(lines: list[str], alias: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    sections: dict[str, int] = {}
    keys: dict[str, int] = {}
    current: str | None = ""
    for n, line in enumerate(lines, start=1):
        m = HEADER_RE.match(line)
        if m:
            current = alias.get(m.group(1), m.group(1)) or None  # None: under a broken header
            if current:
                sections.setdefault(current, n)
            continue
        m = KEY_RE.match(line)
        if m and current is not None:
            keys.setdefault(f"{current}.{m.group(1)}" if current else m.group(1), n)
    return sections, keys


def _section_at(lines: list[str], idx: int, alias: dict[str, str]) -> str:
    for i in range(idx, -1, -1):
        m = HEADER_RE.match(lines[i])
        if m:
            return alias.get(m.group(1), m.group(1))
    return ""


def _fix_for(line: str, reason: str, example: str = "") -> str:
    """The likeliest fix for a line tomllib refused; `example` ("2.0", "2") when the key is a number."""
    if reason.startswith(("Cannot overwrite", "Cannot declare")):
        return "this is set twice: delete one of the two"
    m = KEY_RE.match(line)
    comma = _DECIMAL_COMMA.match(m.group(2)) if m else None
    if m and comma:
        return f"use a decimal point: {m.group(1)} = {comma.group(1)}.{comma.group(2)}"
    if example and m and m.group(2) and not _BARE_OK.match(m.group(2)):
        return f"write a number such as {example} (ASCII digits, a decimal point), without quotes"
    if any(c in line for c in _WIDE):
        return "use the plain ASCII characters \" = [ ] , : (the Chinese input method typed “ ” ＝ or similar)"
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line).split("#")[0].strip()  # closed texts and the comment out
    if '"' in s.replace('""', ""):
        return "close the quote: a text in quotes ends with \" on the same line"
    if s.startswith("[") and "]" not in s:
        return "close the section name with ], e.g. [camera]"
    if m and m.group(2) and not _BARE_OK.match(m.group(2)):
        word = m.group(2).split("#")[0].strip()
        return f"text goes in double quotes: {m.group(1)} = \"{word}\""
    return "check quotes, brackets and 'key = value' on that line"


def load_toml(text: str, numbers: dict[str, str] | None = None) -> Parsed:
    """Parse config text (a leading BOM is dropped); see the module docstring. `numbers` maps
    `section.key` of the number keys to an example value ("2.0"), so a refused value there is
    told to be a number, not text in quotes. A header typed in full-width brackets (［camera］, a
    Chinese input method) is one problem and read as [camera], so its keys land in that section."""
    numbers = numbers or {}
    lines = text.removeprefix("\ufeff").split("\n")
    alias: dict[str, str] = {}  # placeholder section -> the real one ("" : a broken header, ignored)
    problems: list[tuple[int, str]] = []
    broken: set[str] = set()
    while True:
        try:
            data = tomllib.loads("\n".join(lines))
            break
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = _POS_RE.search(msg)
            reason = msg[:m.start()] if m else msg
            if not (m and m.group(1)) or len(problems) >= MAX_SYNTAX_ERRORS:
                n = len(lines) - (lines[-1] == "")
                where = "at the end of the file" if m and not m.group(1) else "after too many errors"
                problems.append((n, f"TOML syntax error {where}: {reason}; fix: close every [ , {{ and \" "
                                 "that opens above, then check again"))
                return Parsed({}, problems, *_locate(lines, alias), broken, complete=False)
            n, col = int(m.group(1)), int(m.group(2))
            idx = n - 1
            line = lines[idx]
            section = _section_at(lines, idx, alias)
            head, key = HEADER_RE.match(line), KEY_RE.match(line)
            if reason.startswith("Cannot overwrite a value") and key:
                name = f"{section}.{key.group(1)}" if section else key.group(1)
                first = _locate(lines[:idx], alias)[1].get(name, 0)
                was = f", already set on line {first}" if first else ""
                problems.append((n, f"{name}: duplicate key{was} (TOML allows each key once per section); "
                                 "fix: delete one of the two lines"))
                lines[idx] = ""
            elif reason.startswith("Cannot declare") and head:
                real = head.group(1)
                first = _locate(lines[:idx], alias)[0].get(real, 0)
                was = f", already on line {first}" if first else ""
                problems.append((n, f"[{real}]: duplicate section{was}; fix: merge the two [{real}] blocks into "
                                 "one (the keys below this line are checked as part of the first)"))
                alias[_PLACEHOLDER.format(n)] = real
                lines[idx] = f"[{_PLACEHOLDER.format(n)}]"
            elif (wide := _WIDE_HEADER_RE.match(line)) and ("［" in line or "］" in line):
                name = wide.group(1)
                problems.append((n, f"[{name}]: TOML syntax error: the section name is in full-width brackets "
                                 f"(got {line.strip()}); fix: use ASCII brackets [{name}] (the keys under it are "
                                 f"checked as [{name}])"))
                lines[idx] = f"[{name}]"
            else:
                key = key or _ANY_KEY_RE.match(line)
                name = f"{section}.{key.group(1)}" if key and section else ""
                what = f"{name}: " if name else ""
                header = line.lstrip().startswith("[")
                later = " (the keys under it are checked once it is fixed)" if header else ""
                problems.append((n, f"{what}TOML syntax error: {reason} (column {col}); fix: "
                                 f"{_fix_for(line, reason, numbers.get(name, ''))}{later}"))
                if header:  # a broken header: its keys are not checked
                    alias[_PLACEHOLDER.format(n)] = ""
                    lines[idx] = f"[{_PLACEHOLDER.format(n)}]"
                else:
                    if key:
                        broken.add(f"{section}.{key.group(1)}" if section else key.group(1))
                    lines[idx] = ""
    sections, keys = _locate(lines, alias)
    raw_keys = _locate(lines, {})[1]
    for ph, real in alias.items():
        sub = data.pop(ph, None)
        target = data.get(real)
        if not real or not isinstance(sub, dict) or not isinstance(target, dict):
            continue
        for k, v in sub.items():
            if k in target:
                n = raw_keys.get(f"{ph}.{k}", 0)
                problems.append((n, f"{real}.{k}: duplicate key, already set on line {keys.get(f'{real}.{k}', 0)} "
                                 f"(in the first [{real}]); fix: delete one of the two lines"))
            else:
                target[k] = v
    return Parsed(data, sorted(problems), sections, keys, broken)
