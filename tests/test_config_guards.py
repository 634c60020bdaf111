"""Issue 10 items 1 and 2: no NaN or infinity gets into the program through any door (config,
calibration, signed bundles, JSON answers, sensor readings), and no default ever puts a
simulated device on a real lane."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.base import SensorError
from scanner import hardware
from scanner.calibrate import CalibrationError, read_pairs_csv
from scanner.config import SECTIONS, ThermometerSection, parse_config
from scanner.credentials import KeySet
from scanner.credentials.bundles import KIND_POLICY, open_bundle, parse_policy, policy_doc
from scanner.errors import ConfigError, TrustDataError
from scanner.numbers import NotFiniteError, finite, in_range, loads_json, parse_finite

ROOT = Path(__file__).resolve().parents[1]
REAL = '[checkpoint]\nmode = "real"\nid = "T-GATE-1"\ndevice_id = "t-pi-1"\n'  # the smallest real lane
SIM = '[checkpoint]\nmode = "simulated"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "site.toml")
    return e.value.problems


# -- item 1: NaN and infinity -----------------------------------------------------------------


@pytest.mark.parametrize(("section", "key", "literal", "default"), [
    ("policy", "fever_threshold_c", "nan", "37.3"),
    ("policy", "fever_threshold_c", "-inf", "37.3"),
    ("policy", "fever_threshold_c", "1e999", "37.3"),  # TOML reads it as inf
    ("thermometer", "offset_c", "nan", "0.0"),
    ("thermometer", "offset_c", "+inf", "0.0"),
    ("thermometer", "presence_delta_c", "nan", "2.0"),
])
def test_nan_and_inf_in_a_float_key_are_refused_with_the_line(section: str, key: str, literal: str,
                                                               default: str) -> None:
    got = "inf" if literal == "1e999" else literal.lstrip("+")
    p = problems(f"{REAL}[{section}]\n{key} = {literal}\n")
    assert p == [f"line 6: {section}.{key}: must be a finite number (got {got}); fix: write a number such as "
                 f"{default} — " + next(f.metadata["help"] for f in dataclasses.fields(SECTIONS[section])
                                        if f.name == key)]


def test_nan_in_a_whole_number_key_asks_for_a_whole_number_not_quotes() -> None:
    p = problems(f"{REAL}[policy]\nclock_skew_s = nan\n")
    assert len(p) == 1 and p[0].startswith("line 6: policy.clock_skew_s: must be a whole number (got nan); "
                                           "fix: write a whole number such as 300, without a decimal point")
    assert "without quotes" not in p[0]
    assert "without quotes" in problems(f"{REAL}[policy]\nclock_skew_s = \"300\"\n")[0]


def _typed_keys(t: type) -> list[tuple[str, str]]:
    return [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if typing.get_type_hints(cls)[f.name] is t]


@pytest.mark.parametrize("literal", ["nan", "inf", "-inf"])
def test_every_number_key_refuses_nan_and_inf(literal: str) -> None:
    """All of them, not a list someone keeps by hand: a key added later is covered too."""
    keys = _typed_keys(float) + _typed_keys(int)
    assert len(keys) > 60
    for section, key in keys:
        p = problems(f"{REAL}[{section}]\n{key} = {literal}\n")
        assert len(p) == 1 and p[0].startswith(f"line 6: {section}.{key}: must be a "), (section, key, p)


def test_check_config_exits_2_on_a_nan_threshold(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_text(f"{REAL}[policy]\nfever_threshold_c = nan\n")
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "check-config", "--text-only", str(f)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "OK" not in r.stdout
    assert "  line 6: policy.fever_threshold_c: must be a finite number (got nan)" in r.stderr


def test_numbers_door() -> None:
    assert finite(3, "x") == 3.0 and in_range(37.3, 35, 40) and not in_range(math.nan, 35, 40)
    for bad in (math.nan, math.inf, -math.inf, True, "37", None, 10 ** 400):
        with pytest.raises(NotFiniteError):
            finite(bad, "x")
    assert parse_finite(" 36.8 ") == 36.8
    for text in ("nan", "NaN", "inf", "-Infinity", "1e999", "abc", ""):
        with pytest.raises(NotFiniteError, match="reference"):
            parse_finite(text, "reference")


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '[-Infinity]', '{"a": 1e999}', '[-1E400]'])
def test_json_door_refuses_what_rfc_8259_does_not_allow(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):  # so every existing `except JSONDecodeError` refuses it
        loads_json(text)
    with pytest.raises(ValueError):
        loads_json(text.encode())


def test_json_door_keeps_ordinary_numbers() -> None:
    doc = loads_json(b'{"i": 12345678901234567890, "f": 37.3, "e": 1e3, "n": null}')
    assert doc == {"i": 12345678901234567890, "f": 37.3, "e": 1000.0, "n": None}
    assert isinstance(doc["i"], int)


def _anchor(keyset: KeySet) -> tuple[Any, x509.Certificate]:
    key = serialization.load_pem_private_key(keyset.anchor_key.read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(keyset.anchor_cert.read_bytes())


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_signed_policy_with_nan_is_refused(keyset: KeySet, value: float) -> None:
    """Signed by the real anchor, so only the number refuses it."""
    from scanner.credentials.bundles import sign_bundle

    key, cert = _anchor(keyset)
    raw = sign_bundle(key, cert, policy_doc(3, 1_700_000_000, 1_900_000_000, fever_threshold_c=value))
    with pytest.raises(TrustDataError, match="not a finite number"):
        parse_policy(open_bundle(raw, cert, KIND_POLICY, "(test)"))
    ok = sign_bundle(key, cert, policy_doc(3, 1_700_000_000, 1_900_000_000, fever_threshold_c=37.5))
    assert parse_policy(open_bundle(ok, cert, KIND_POLICY, "(test)")).fever_threshold_c == 37.5


@pytest.mark.parametrize("row", ["nan,24.0,36.8", "34.1,inf,36.8", "34.1,24.0,NaN", "34.1,24.0,1e999"])
def test_calibration_csv_refuses_nan_with_the_line(tmp_path: Path, row: str) -> None:
    f = tmp_path / "pairs.csv"
    f.write_text(f"object_c,ambient_c,reference_c\n34.0,24.0,36.7\n{row}\n")
    with pytest.raises(CalibrationError, match=r"pairs.csv line 3: expected three numbers .* finite"):
        read_pairs_csv(f)


def test_calibrate_cli_refuses_a_nan_reference_ambient(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "calibrate", "--config", str(tmp_path / "x.toml"),
                        "--reference-ambient-c", "nan", "--pairs", "p.csv"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "must be a finite number (got nan)" in r.stderr and "Traceback" not in r.stderr


def test_typed_reference_reading_nan_is_asked_again() -> None:
    from scanner.cli_calibrate import _ask_reference

    answers = iter(["nan", "inf", "36,9"])
    said: list[str] = []
    assert _ask_reference(lambda _prompt: next(answers), said.append) == 36.9
    assert len(said) == 2 and all("36.8" in s for s in said)


class _NanSensor:
    def object_temperature(self) -> float:
        return math.nan

    def ambient_temperature(self) -> float:
        return 22.0

    def close(self) -> None:
        pass


def test_a_nan_reading_is_a_sensor_fault_not_a_temperature() -> None:
    thermo = hardware.ReopeningThermometer(_NanSensor, background=False)
    assert thermo.ambient_temperature() == 22.0
    with pytest.raises(SensorError, match="not a finite number"):
        thermo.object_temperature()


# -- item 2: real or simulated, said once ---------------------------------------------------


def test_mode_is_required() -> None:
    p = problems("[camera]\nsource = \"opencv\"\n")
    assert p == ['checkpoint.mode: required, there is no default (got nothing); fix: mode = "real" on a gate, or '
                 'mode = "simulated" for a demo or a laptop, under [checkpoint]']
    assert problems("[checkpoint]\nid = \"X\"\n")[0].startswith("line 1: checkpoint.mode: required")
    assert 'did you mean "simulated"' in problems("[checkpoint]\nmode = \"simulate\"\n")[0]


def without(text: str, section: str) -> str:
    """`text` with the block `[section]` ... (up to the next header) removed."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip() == f"[{section}]"
        if not skipping:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize("drop", [("thermometer",), ("camera",), ("indicators",),
                                  ("thermometer", "camera", "indicators")])
def test_a_real_lane_missing_a_device_section_gets_the_real_device(drop: tuple[str, ...]) -> None:
    """The issue's case: before, a missing [thermometer] meant the scripted one (33.0 °C for all)."""
    text = (ROOT / "config" / "highway-exit.toml").read_text(encoding="utf-8").replace("CHANGE_ME", "T1")
    for section in drop:
        text = without(text, section)
        assert f"[{section}]" not in text
    cfg = parse_config(text, "site.toml")
    assert not cfg.simulated
    assert (cfg.camera.source, cfg.thermometer.source, cfg.indicators.source) == ("opencv", "mlx90614", "gpio")
    assert cfg.thermometer.source == "mlx90614"  # never "scripted"


def test_a_real_lane_missing_only_the_source_line_gets_the_real_device() -> None:
    text = (ROOT / "config" / "village-gate.toml").read_text(encoding="utf-8").replace("CHANGE_ME", "T1")
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("source ="))
    cfg = parse_config(text, "site.toml")
    assert (cfg.camera.source, cfg.thermometer.source, cfg.indicators.source) == ("opencv", "mlx90614", "gpio")


def test_the_smallest_real_and_simulated_configs() -> None:
    real = parse_config(REAL, "site.toml")
    assert not real.simulated and (real.camera.source, real.thermometer.source, real.indicators.source) == (
        "opencv", "mlx90614", "gpio")
    sim = parse_config(SIM + "[simulation]\nbootstrap = true\n", "demo.toml")
    assert sim.simulated and (sim.camera.source, sim.thermometer.source, sim.indicators.source) == (
        "replay", "scripted", "mock")
    assert ThermometerSection().source == "mlx90614"  # a section built in code never simulates either


@pytest.mark.parametrize(("section", "source", "fix"), [
    ("thermometer", "scripted", 'source = "mlx90614" on a gate'),
    ("camera", "replay", 'source = "opencv" on a gate'),
    ("indicators", "mock", 'source = "gpio" on a gate'),
])
def test_a_simulated_device_on_a_real_lane_is_refused(section: str, source: str, fix: str) -> None:
    extra = '\nreplay_path = "x"' if source == "replay" else ""
    p = problems(f'{REAL}[{section}]\nsource = "{source}"{extra}\n')
    assert p == [f'line 6: {section}.source: a simulated device on a lane whose checkpoint.mode is "real" '
                 f'(got "{source}"); fix: {fix}, or mode = "simulated" for a demo']


@pytest.mark.parametrize(("section", "source", "sim"), [
    ("thermometer", "mlx90614", "scripted"), ("camera", "picamera2", "replay"), ("indicators", "gpio", "mock")])
def test_a_real_device_on_a_simulated_lane_is_refused(section: str, source: str, sim: str) -> None:
    p = problems(f'{SIM}[{section}]\nsource = "{source}"\n[simulation]\nbootstrap = true\n')
    assert len(p) == 1 and p[0].startswith(f'line 4: {section}.source: a real device on a lane whose '
                                           f'checkpoint.mode is "simulated" (got "{source}"); fix: source = "{sim}"')


def test_hardware_refuses_a_mismatch_built_in_code() -> None:
    cfg = parse_config(REAL, "site.toml")
    bad = replace(cfg, thermometer=replace(cfg.thermometer, source="scripted"))
    with pytest.raises(ConfigError, match="thermometer.source: a simulated device"):
        hardware.make_thermometer(bad)
    with pytest.raises(ConfigError, match="thermometer.source"):
        hardware.make_indicators(bad)


def test_selftest_on_a_real_lane_without_thermometer_section_checks_the_i2c_sensor(tmp_path: Path) -> None:
    from scanner.selftest import Context, Status, run_checks

    f = tmp_path / "site.toml"
    f.write_text(REAL)

    def no_bus(n: int) -> Any:
        raise FileNotFoundError(2, "No such file or directory", f"/dev/i2c-{n}")

    results = {o.name: o.result for o in run_checks(Context(str(f), open_bus=no_bus), ("config", "thermometer"))}
    assert results["thermometer.bus"].status is Status.FAIL
    assert results["thermometer.ambient"].status is not Status.PASS


@pytest.mark.parametrize(("name", "simulated"), [("example.toml", False), ("simulated.toml", True),
                                                 ("highway-exit.toml", False), ("village-gate.toml", False)])
def test_shipped_configs_say_their_mode(name: str, simulated: bool) -> None:
    text = (ROOT / "config" / name).read_text(encoding="utf-8").replace("CHANGE_ME", "T1")  # ids set
    assert f'mode = "{"simulated" if simulated else "real"}"' in text
    assert parse_config(text, str(ROOT / "config" / name)).simulated is simulated
