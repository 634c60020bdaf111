"""The one config object: a TOML file validated into frozen, typed sections.

Every key is declared once, as a dataclass field whose metadata carries its help text (unit and
range), bounds and allowed values. Validation collects *every* problem before failing, each as
`line N: section.key: what is wrong (got X); fix`, suggests the nearest key for a typo, and
never lets a traceback reach a technician. Nothing else in the program reads files or
environment variables for settings.

Two rules from issue 10: every number must be finite (TOML allows `nan` and `inf`; range checks
are written `not lo <= x` so a NaN fails them), and `[checkpoint] mode` ("real" or "simulated")
is required: a device `source` left out is the mode's device, one that contradicts it is refused.
The files the config names are checked by scanner.preflight (check-config and run).

From issue 12: the file may be saved with a UTF-8 BOM (Notepad) and CRLF; another encoding is
one line naming the line and "save it as UTF-8" (scanner/textfile.py). A TOML syntax error no
longer hides the rest: each is one line (a repeated key or section named as a duplicate), and
the keys that did parse are still checked (scanner/config_text.py). Rules across keys, among
them the ids and pins a real gate must not keep at their defaults, are scanner/config_checks.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any

from scanner.config_checks import cross_checks, device_mismatches, key_check  # noqa: F401 - hardware imports it here
from scanner.config_schema import (  # noqa: F401 - re-exported: callers import sections from here
    MODES,
    REAL_SOURCES,
    SECTIONS,
    SIMULATED_SOURCES,
    ApiSection,
    CameraSection,
    CheckpointSection,
    ClockSection,
    Config,
    DecodeSection,
    IndicatorsSection,
    KioskSection,
    LogSection,
    PolicySection,
    SimulationSection,
    StaffSection,
    StoreSection,
    SyncSection,
    ThermometerSection,
    TrustSection,
    UploadSection,
    key,
)
from scanner.config_text import load_toml, locate
from scanner.errors import ConfigError
from scanner.numbers import is_finite_number
from scanner.textfile import NotUtf8Error, read_text


def all_keys() -> list[str]:
    """Every `section.key`: the docs test checks each is in config/example.toml."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _locate(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """Line numbers of `[section]` headers and `section.key` assignments (scanner.config_text)."""
    return locate(text)


def _number_keys() -> dict[str, str]:
    """`section.key` of every number key -> an example value, for the syntax-error fixes."""
    out: dict[str, str] = {}
    for s, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                out[f"{s}.{f.name}"] = "2.0" if hints[f.name] is float else "2"
    return out


def _type_name(t: Any) -> str:
    return {str: "text in quotes", int: "a whole number", float: "a number", bool: "true or false"}.get(
        t, "a list of texts in quotes")


def _check_value(name: str, f: dataclasses.Field, t: Any, value: Any) -> tuple[Any, str | None]:
    meta = f.metadata
    hint = meta["help"]
    got = value
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    origin = typing.get_origin(t)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return value, f"must be {_type_name(t)} (got {value!r}); fix: write e.g. [\"330381001001\"] — {hint}"
        return tuple(value), None
    if t is bool and not isinstance(value, bool):
        return value, f"must be true or false (got {value!r}); fix: write true or false without quotes — {hint}"
    if t is int and isinstance(value, float):  # 300.0, nan, inf: TOML floats
        return value, (f"must be a whole number (got {value!r}); fix: write a whole number such as {f.default}, "
                       f"without a decimal point — {hint}")
    if t is int and (isinstance(value, bool) or not isinstance(value, int)):
        return value, f"must be {_type_name(t)} (got {value!r}); fix: write a number without quotes — {hint}"
    if t is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return value, f"must be {_type_name(t)} (got {value!r}); fix: write a number without quotes — {hint}"
    if t is float and not is_finite_number(value):  # TOML allows nan and inf; every comparison with NaN is false
        return value, f"must be a finite number (got {value!r}); fix: write a number such as {f.default} — {hint}"
    if t is str and not isinstance(value, str):
        return value, f"must be {_type_name(t)} (got {value!r}); fix: put the value in double quotes — {hint}"
    if meta["choices"] and value not in meta["choices"]:
        near = difflib.get_close_matches(str(value), meta["choices"], n=1)
        sug = f"did you mean \"{near[0]}\"? " if near else ""
        return value, f"must be one of {', '.join(meta['choices'])} (got {value!r}); fix: {sug}{hint}"
    lo, hi = meta["min"], meta["max"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # `not lo <= value`, never `value < lo`: a NaN must fail a range check, not pass it
        if (lo is not None and not lo <= value) or (hi is not None and not value <= hi):
            return value, f"out of range {lo}..{hi} (got {got!r}); fix: {hint}"
    return value, None


def _top_level_key(name: str, value: Any) -> str:
    """A `key = value` above the first `[section]`: name the section(s) that have such a key."""
    homes = [s for s, cls in SECTIONS.items() if any(f.name == name for f in dataclasses.fields(cls))]
    if homes:
        fix = f"move it under [{homes[0]}]" + (f" (or {', '.join(f'[{h}]' for h in homes[1:])})" if homes[1:] else "")
    else:
        near = difflib.get_close_matches(name, [k.split(".")[1] for k in all_keys()], n=1)
        fix = (f"did you mean {near[0]}? keys go under their [section]" if near
               else f"keys go under a [section]; sections are {', '.join(SECTIONS)}")
    return f"{name}: a key before any [section] (got {name} = {value!r}); fix: {fix}"


def _required_problem(sname: str, kname: str, line: int) -> tuple[int, str]:
    if (sname, kname) == ("checkpoint", "mode"):
        return line, ("checkpoint.mode: required, there is no default (got nothing); fix: mode = \"real\" on a "
                      "gate, or mode = \"simulated\" for a demo or a laptop, under [checkpoint]")
    return line, f"{sname}.{kname}: required, there is no default (got nothing); fix: set {kname} under [{sname}]"


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate TOML text into a Config, or raise ConfigError listing every problem."""
    parsed = load_toml(text, _number_keys())  # a leading BOM is dropped; syntax errors come back one per line
    if not parsed.complete:
        raise ConfigError([f"line {n}: {msg}" for n, msg in parsed.problems], path)
    data, sec_lines, key_lines = parsed.data, parsed.sections, parsed.keys
    problems: list[tuple[int, str]] = list(parsed.problems)
    base = Path(path).resolve().parent if path and not path.startswith("<") else Path.cwd()
    built: dict[str, Any] = {}
    checkpoint = data.get("checkpoint")
    mode = checkpoint.get("mode") if isinstance(checkpoint, dict) else None

    for sname, value in data.items():
        if sname not in SECTIONS and not isinstance(value, dict):
            problems.append((key_lines.get(sname, 0), _top_level_key(sname, value)))
        elif sname not in SECTIONS:
            near = difflib.get_close_matches(sname, SECTIONS, n=1)
            fix = f"did you mean [{near[0]}]?" if near else f"sections are {', '.join(SECTIONS)}"
            problems.append((sec_lines.get(sname, key_lines.get(sname, 0)),
                             f"{sname}: unknown section (got [{sname}]); fix: {fix}"))
        elif not isinstance(value, dict):
            problems.append((key_lines.get(sname, 0), f"{sname}: must be a [section] table; fix: "
                             f"write [{sname}] on its own line and the keys below it"))

    for sname, cls in SECTIONS.items():
        raw = data.get(sname, {})
        if not isinstance(raw, dict):
            continue
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for kname, value in raw.items():
            line = key_lines.get(f"{sname}.{kname}", sec_lines.get(sname, 0))
            if kname not in fields:
                near = difflib.get_close_matches(kname, fields, n=1)
                fix = f"did you mean {near[0]}?" if near else f"keys in [{sname}] are {', '.join(fields)}"
                problems.append((line, f"{sname}.{kname}: unknown key (got {kname} = {value!r}); fix: {fix}"))
                continue
            checked, err = _check_value(kname, fields[kname], hints[kname], value)
            err = err or key_check(f"{sname}.{kname}", checked)
            if err:
                problems.append((line, f"{sname}.{kname}: {err}"))
                continue
            if fields[kname].metadata["path"] and checked:
                checked = os.path.expandvars(checked)  # $CREDENTIALS_DIRECTORY/api-token (systemd LoadCredential=)
                if not checked.startswith("$"):  # unset variable: left as written, reported when used
                    checked = str((base / checked).resolve()) if not Path(checked).is_absolute() else checked
            values[kname] = checked
        for fname, f in fields.items():
            if (f.metadata["required"] and fname not in raw and f"{sname}.{fname}" not in parsed.broken
                    and fname not in data):  # a broken line, or above the first [section]: said once
                problems.append(_required_problem(sname, fname, sec_lines.get(sname, 0)))
        if sname in SIMULATED_SOURCES and "source" not in raw and mode == "simulated":
            values["source"] = SIMULATED_SOURCES[sname]  # said once, in [checkpoint] mode
        if not any(p[1].startswith(f"{sname}.") for p in problems):
            for fname, f in fields.items():
                if fname not in values and f.metadata["path"] and f.default not in ("", dataclasses.MISSING):
                    d = str(f.default)
                    values[fname] = d if Path(d).is_absolute() else str((base / d).resolve())
            built[sname] = cls(**values)

    if not problems:
        cfg = Config(**built, source_path=str(path), key_lines={**sec_lines, **key_lines})
        problems.extend(cross_checks(cfg, key_lines, sec_lines))
        if not problems:
            return cfg
    problems.sort(key=lambda p: p[0])
    raise ConfigError([f"line {n}: {msg}" if n else msg for n, msg in problems], path)


def load_config(path: str | Path) -> Config:
    """Read and validate the config file: UTF-8, a leading BOM accepted (scanner.textfile).
    ConfigError (every problem, one line each) otherwise."""
    p = Path(path)
    try:
        text = read_text(p)
    except FileNotFoundError:
        raise ConfigError([f"config file not found; fix: copy config/example.toml to {p} and edit it"],
                          str(p)) from None
    except IsADirectoryError:
        raise ConfigError([f"{p} is a directory; fix: give the config file, e.g. {p / 'config.toml'}"],
                          str(p)) from None
    except OSError as e:
        raise ConfigError([f"cannot read the config ({e.strerror or e}); fix: check the file's permissions "
                           "(readable by this user)"], str(p)) from None
    except NotUtf8Error as e:
        raise ConfigError([str(e)], str(p)) from None
    return parse_config(text, str(p))
