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
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from scanner.config_schema import (  # noqa: F401 - re-exported: callers import sections from here
    _LOOPBACK,
    _VILLAGE_RE,
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
    _records_checks,
    _sync_checks,
    key,
)
from scanner.errors import ConfigError
from scanner.numbers import is_finite_number


def all_keys() -> list[str]:
    """Every `section.key`: the docs test checks each is in config/example.toml."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _locate(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """Line numbers of `[section]` headers and `section.key` assignments. tomllib gives none,
    and a technician needs the line to find the mistake in a 200-line commented file."""
    sections: dict[str, int] = {}
    keys: dict[str, int] = {}
    current = ""
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.\-]+)\s*\]", s)
        if m:
            current = m.group(1)
            sections.setdefault(current, n)
            continue
        m = re.match(r"^([A-Za-z0-9_\-]+)\s*=", s)
        if m:
            keys.setdefault(f"{current}.{m.group(1)}" if current else m.group(1), n)
    return sections, keys


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


def _required_problem(sname: str, kname: str, line: int) -> tuple[int, str]:
    if (sname, kname) == ("checkpoint", "mode"):
        return line, ("checkpoint.mode: required, there is no default (got nothing); fix: mode = \"real\" on a "
                      "gate, or mode = \"simulated\" for a demo or a laptop, under [checkpoint]")
    return line, f"{sname}.{kname}: required, there is no default (got nothing); fix: set {kname} under [{sname}]"


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate TOML text into a Config, or raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        where = f"line {m.group(1)}" if m else "line ?"
        raise ConfigError([f"{where}: TOML syntax error: {e}; fix: check quotes, brackets and "
                           "'key = value' on that line"], path) from None
    sec_lines, key_lines = _locate(text)
    problems: list[tuple[int, str]] = []
    base = Path(path).resolve().parent if path and not path.startswith("<") else Path.cwd()
    built: dict[str, Any] = {}
    checkpoint = data.get("checkpoint")
    mode = checkpoint.get("mode") if isinstance(checkpoint, dict) else None

    for sname, value in data.items():
        if sname not in SECTIONS:
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
            if err:
                problems.append((line, f"{sname}.{kname}: {err}"))
                continue
            if fields[kname].metadata["path"] and checked:
                checked = os.path.expandvars(checked)  # $CREDENTIALS_DIRECTORY/api-token (systemd LoadCredential=)
                if not checked.startswith("$"):  # unset variable: left as written, reported when used
                    checked = str((base / checked).resolve()) if not Path(checked).is_absolute() else checked
            values[kname] = checked
        for fname, f in fields.items():
            if f.metadata["required"] and fname not in raw:
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
        problems.extend(_cross_checks(cfg, key_lines, sec_lines))
        if not problems:
            return cfg
    problems.sort(key=lambda p: p[0])
    raise ConfigError([f"line {n}: {msg}" if n else msg for n, msg in problems], path)


def _cross_checks(cfg: Config, key_lines: dict[str, int], sec_lines: dict[str, int]) -> list[tuple[int, str]]:
    """Rules that involve more than one key."""
    out: list[tuple[int, str]] = []

    def at(k: str) -> int:
        return key_lines.get(k, sec_lines.get(k.split(".")[0], 0))

    cp = cfg.checkpoint
    bad = [v for v in cp.villages if not _VILLAGE_RE.match(v)]
    if bad:
        out.append((at("checkpoint.villages"), f"checkpoint.villages: village codes are 12 digits (got {bad[0]!r}); "
                    "fix: copy the code printed on the residence registration"))
    if cp.kind == "village_gate" and not cp.villages:
        out.append((at("checkpoint.kind"), "checkpoint.villages: a village_gate needs at least one village "
                    "(got []); fix: add villages = [\"330381001001\"] under [checkpoint]"))
    ind = cfg.indicators
    pins = {"green_pin": ind.green_pin, "red_pin": ind.red_pin, "buzzer_pin": ind.buzzer_pin}
    if ind.relay_pin:
        pins["relay_pin"] = ind.relay_pin
    if ind.override_button_pin:
        pins["override_button_pin"] = ind.override_button_pin
    seen: dict[int, str] = {}
    for name, pin in pins.items():
        if pin in seen:
            out.append((at(f"indicators.{name}"), f"indicators.{name}: GPIO{pin} is already used by "
                        f"{seen[pin]} (got {pin}); fix: give each output its own pin"))
        seen[pin] = name
    if ind.relay_pin == 1:
        out.append((at("indicators.relay_pin"), "indicators.relay_pin: GPIO1 is reserved for the HAT "
                    "EEPROM (got 1); fix: use 0 for no relay or a pin from 2 to 27"))
    out.extend((at(k), msg) for k, msg in device_mismatches(cfg))
    th = cfg.thermometer
    if not th.skin_min_c < th.skin_max_c:  # `not <`: a NaN fails too
        out.append((at("thermometer.skin_min_c"), f"thermometer.skin_min_c: must be below skin_max_c "
                    f"(got {th.skin_min_c} >= {th.skin_max_c}); fix: e.g. 28.0 and 43.0"))
    if not th.ambient_min_c < th.ambient_max_c:
        out.append((at("thermometer.ambient_min_c"), "thermometer.ambient_min_c: must be below ambient_max_c "
                    f"(got {th.ambient_min_c} >= {th.ambient_max_c}); fix: e.g. -10.0 and 45.0"))
    if cfg.camera.source == "replay" and not cfg.camera.replay_path and not cfg.simulation.bootstrap:
        out.append((at("camera.replay_path"), "camera.replay_path: source=replay needs a folder or video "
                    "(got \"\"); fix: set replay_path, or [simulation] bootstrap = true"))
    if cfg.simulation.bootstrap and not cfg.simulated:
        out.append((at("simulation.bootstrap"), "simulation.bootstrap: only for simulated devices (got true "
                    "with checkpoint.mode = \"real\"); fix: set bootstrap = false on a real Pi"))
    if cfg.clock.trust == "always" and not cfg.simulated:
        out.append((at("clock.trust"), "clock.trust: 'always' would PASS codes on a wrong clock (got \"always\" "
                    "with checkpoint.mode = \"real\"); fix: use \"system\" on a real Pi"))
    out.extend(_sync_checks(cfg, at))
    out.extend(_records_checks(cfg, at))
    return out


def device_mismatches(cfg: Config) -> list[tuple[str, str]]:
    """(`section.source`, message) for each device whose source contradicts `checkpoint.mode`.
    Used by the config check and again by scanner.hardware before opening anything."""
    mode = cfg.checkpoint.mode
    if mode not in MODES:  # a Config built in code with replace()
        return [("checkpoint.mode", f"checkpoint.mode: must be \"real\" or \"simulated\" (got {mode!r}); "
                 "fix: mode = \"real\" on a gate")]
    out: list[tuple[str, str]] = []
    for sname, sim in SIMULATED_SOURCES.items():
        source = getattr(cfg, sname).source
        real = REAL_SOURCES[sname]
        if mode == "real" and source not in real:
            out.append((f"{sname}.source", f"{sname}.source: a simulated device on a lane whose checkpoint.mode is "
                        f"\"real\" (got \"{source}\"); fix: source = \"{real[0]}\" on a gate, or mode = "
                        "\"simulated\" for a demo"))
        elif mode == "simulated" and source != sim:
            out.append((f"{sname}.source", f"{sname}.source: a real device on a lane whose checkpoint.mode is "
                        f"\"simulated\" (got \"{source}\"); fix: source = \"{sim}\" (or leave the line out), or "
                        "mode = \"real\" on a gate"))
    return out



def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file not found; fix: copy config/example.toml to {p} and edit it"],
                          str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"cannot read the config ({e.__class__.__name__}: {e}); fix: check the "
                           "file's permissions and that it is UTF-8 text"], str(p)) from None
    return parse_config(text, str(p))
