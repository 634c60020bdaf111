"""Config: every problem at once, with its line, key and fix; every key documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scanner.config import all_keys, load_config, parse_config
from scanner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def with_mode(text: str, mode: str = "real") -> str:
    """The text plus the required `[checkpoint] mode`, added so that no line number moves."""
    if "[checkpoint]\n" in text:
        return text.replace("[checkpoint]\n", f"[checkpoint]\nmode = \"{mode}\"\n", 1)
    return text + f"\n[checkpoint]\nmode = \"{mode}\"\n"


def problems(text: str, mode: str | None = "real") -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(with_mode(text, mode) if mode else text, "site.toml")
    return e.value.problems


def test_every_key_is_in_the_commented_example() -> None:
    text = (ROOT / "config" / "example.toml").read_text(encoding="utf-8")
    section = ""
    present = set()
    for line in text.splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            section = m.group(1)
        m = re.match(r"^#?\s*(\w+)\s*=", line)
        if m and section:
            present.add(f"{section}.{m.group(1)}")
    missing = [k for k in all_keys() if k not in present]
    assert not missing, f"keys missing from config/example.toml: {missing}"
    # and each key has a comment line right above it (unit and range live there)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+\s*=", line):
            j = i - 1
            while j >= 0 and re.match(r"^\w+\s*=", lines[j]):
                j -= 1
            assert lines[j].startswith("#"), f"example.toml line {i + 1} ({line}) has no comment above"


@pytest.mark.parametrize("name", ["example.toml", "simulated.toml", "highway-exit.toml", "village-gate.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    """Valid once the technician has set the ids; a real one is refused until then (an unedited Pi
    must not upload under the example's ids)."""
    path = ROOT / "config" / name
    text = path.read_text(encoding="utf-8")
    if 'mode = "real"' in text:
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert len(e.value.problems) == 2 and all("CHANGE_ME" in p and "placeholder" in p for p in e.value.problems)
        text = text.replace("CHANGE_ME", "T1")
    cfg = parse_config(text, str(path))
    assert cfg.checkpoint.id and "CHANGE_ME" not in cfg.checkpoint.device_id


def test_simulated_config_is_simulated_and_examples_are_real() -> None:
    assert load_config(ROOT / "config" / "simulated.toml").simulated

    def edited(name: str) -> Any:
        path = ROOT / "config" / name
        return parse_config(path.read_text(encoding="utf-8").replace("CHANGE_ME", "T1"), str(path))

    assert not edited("highway-exit.toml").simulated
    gate = edited("village-gate.toml")
    assert gate.checkpoint.kind == "village_gate" and gate.checkpoint.villages


def test_typo_in_key_suggests_nearest_with_line() -> None:
    p = problems("[policy]\nfever_treshold_c = 37.3\n")
    assert p == ["line 2: policy.fever_treshold_c: unknown key (got fever_treshold_c = 37.3); "
                 "fix: did you mean fever_threshold_c?"]


def test_all_problems_reported_at_once_in_line_order() -> None:
    text = ("[checkpoint]\nkind = \"vilage_gate\"\n[camera]\nfps = \"15\"\n[indicatrs]\nx = 1\n"
            "[indicators]\ngreen_pin = 40\n[policy]\nfever_threshold_c = 30\n")
    p = problems(text)  # `mode = "real"` goes in as line 2
    assert len(p) == 5
    assert [int(re.match(r"line (\d+)", x).group(1)) for x in p] == [3, 5, 6, 9, 11]
    assert 'did you mean "village_gate"' in p[0]
    assert "camera.fps: must be a whole number (got '15')" in p[1]
    assert "did you mean [indicators]" in p[2]
    assert "indicators.green_pin: out of range 2..27 (got 40)" in p[3]
    assert "policy.fever_threshold_c: out of range 35.0..40.0 (got 30)" in p[4]


def test_wrong_types() -> None:
    p = problems("[indicators]\nactive_high = \"yes\"\n[checkpoint]\nvillages = \"330381001001\"\n")
    assert any("indicators.active_high: must be true or false" in x for x in p)
    assert any("checkpoint.villages: must be a list" in x for x in p)


def test_cross_checks() -> None:
    p = problems("[checkpoint]\nkind = \"village_gate\"\n[indicators]\nred_pin = 17\n")
    assert any("village_gate needs at least one village" in x for x in p)
    assert any("GPIO17 is already used by green_pin" in x for x in p)
    p = problems("[checkpoint]\nvillages = [\"3303\"]\n")
    assert any("12 digits" in x for x in p)
    p = problems("[camera]\nsource = \"opencv\"\n[clock]\ntrust = \"always\"\n")
    assert any("clock.trust" in x and "system" in x for x in p)
    p = problems("[thermometer]\nambient_min_c = 30\nambient_max_c = 20\n")
    assert any("ambient_min_c: must be below ambient_max_c" in x for x in p)


def test_toml_syntax_error_names_line() -> None:
    p = problems("[checkpoint]\nid = \"unclosed\n", mode=None)
    assert p[1] == ("line 2: checkpoint.id: TOML syntax error: Illegal character '\\n' (column 15); fix: close the "
                    "quote: a text in quotes ends with \" on the same line")
    assert p[0].startswith("line 1: checkpoint.mode: required")  # the rest is still checked (issue 12)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(with_mode("[store]\npath = \"data/o.db\"\n[simulation]\nbootstrap = true\n", "simulated"))
    cfg = load_config(f)
    assert cfg.store.path == str(tmp_path / "data" / "o.db")
    assert cfg.trust.trust_list == str(tmp_path / "trust" / "trust-list.cose")


def test_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.toml")
    assert "copy config/example.toml" in str(e.value)


def test_check_config_cli_exit_2_no_traceback(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(with_mode("[policy]\nfever_treshold_c = 37.3\n[indicators]\nbuzzer_pin = 99\n"))
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "check-config", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "line 2: policy.fever_treshold_c" in r.stderr
    assert "line 4: indicators.buzzer_pin: out of range" in r.stderr
    site = tmp_path / "site.toml"  # the commented example with its ids set, as a technician would
    site.write_text((ROOT / "config" / "example.toml").read_text(encoding="utf-8").replace("CHANGE_ME", "T1"),
                    encoding="utf-8")
    ok = subprocess.run([sys.executable, "-m", "scanner.cli", "check-config", "--text-only", str(site)],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
