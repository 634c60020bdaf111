"""Site calibration: the least-squares fit, its refusals, the CSV, the config edit that keeps
everything else, and the interactive command on a scripted thermometer with a stepped clock."""

from __future__ import annotations

import argparse
import io
import os
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from emulated_mlx90614 import FakeClock

from drivers.thermometer_scripted import ScriptedThermometer
from scanner import cli
from scanner.calibrate import (
    CalibrationError,
    Fit,
    Pair,
    edit_thermometer_section,
    fit_calibration,
    read_pairs_csv,
    updated_config_text,
    write_config,
)
from scanner.cli_calibrate import run_calibrate
from scanner.config import load_config, parse_config
from scanner.models import TempStatus, Verdict
from scanner.policy import CheckpointRules, decide
from scanner.screening import Screener, ScreeningRules

ROOT = Path(__file__).resolve().parents[1]


def site_pairs(offset: float = 1.5, coeff: float = 0.15, jitter: tuple[float, ...] = (0, 0, 0, 0)) -> list[Pair]:
    """Healthy people (core 36.6..36.9) at a toll gate from a 5 °C night to a 25 °C noon."""
    cores_ambients = [(36.7, 5.0), (36.8, 12.0), (36.6, 19.0), (36.9, 25.0)]
    return [Pair(round(core - offset - coeff * (25.0 - amb), 2), amb, round(core + j, 2))
            for (core, amb), j in zip(cores_ambients, jitter, strict=True)]


# -- the fit ---------------------------------------------------------------------------------


def test_fit_recovers_offset_and_ambient_coeff() -> None:
    fit = fit_calibration(site_pairs(), reference_ambient_c=25.0)
    assert (fit.offset_c, fit.ambient_coeff, fit.coeff_fitted) == (1.5, 0.15, True)
    assert fit.rms_c == pytest.approx(0.0, abs=0.01) and fit.max_abs_c < 0.02


def test_fit_reports_residuals_per_pair_and_rms() -> None:
    fit = fit_calibration(site_pairs(jitter=(0.1, -0.1, 0.1, -0.1)))
    assert len(fit.residuals_c) == 4 and all(abs(r) < 0.2 for r in fit.residuals_c)
    assert 0.05 < fit.rms_c < 0.15
    for pair, r in zip(site_pairs(jitter=(0.1, -0.1, 0.1, -0.1)), fit.residuals_c, strict=True):
        assert r == pytest.approx(pair.reference_c - fit.body(pair.object_c, pair.ambient_c), abs=0.001)


def test_fitted_mapping_catches_the_cold_night_fever() -> None:
    """A mapping fitted on healthy people maps forehead 33.5 °C at 5 °C to 38.0 °C: FEVER."""
    fit = fit_calibration(site_pairs())
    assert round(fit.body(33.5, 5.0), 1) == 38.0
    rules = ScreeningRules(offset_c=fit.offset_c, ambient_coeff=fit.ambient_coeff, samples=3, presence_hold_s=0)
    s = Screener(rules)
    m = [x for x in (s.feed(i * 0.05, 33.5, 5.0) for i in range(5)) if x][0]
    assert m.status is TempStatus.OK and m.body_c == 38.0

    class Green:
        code, kind, colour, warnings = "VALID", "health", "green", ()

    assert decide([Green()], m, CheckpointRules()).reasons == ("FEVER",)


def test_same_ambient_fits_only_the_offset_and_keeps_the_coefficient() -> None:
    pairs = [Pair(34.9, 21.0, 36.9), Pair(34.7, 21.5, 36.8), Pair(34.6, 22.0, 36.6)]
    fit = fit_calibration(pairs, 25.0, keep_coeff=0.15)
    assert not fit.coeff_fitted and fit.ambient_coeff == 0.15
    assert fit.rms_c < 0.1


def test_too_few_pairs_are_refused() -> None:
    with pytest.raises(CalibrationError, match=r"only 2 pair\(s\); fix: take at least 3 pairs"):
        fit_calibration(site_pairs()[:2])


@pytest.mark.parametrize(("pairs", "message"), [
    ([Pair(25.0, 5.0, 36.7), Pair(25.1, 12.0, 36.8), Pair(24.9, 19.0, 36.6)], "offset_c"),  # pointed at a wall
    ([Pair(36.0, 5.0, 36.8), Pair(34.0, 15.0, 36.8), Pair(32.0, 25.0, 36.8)], "ambient_coeff"),  # warmer when cold?
    ([Pair(32.2, 5.0, 36.7), Pair(33.4, 12.0, 38.9), Pair(34.5, 19.0, 36.6), Pair(35.4, 25.0, 36.9)],
     "pair 2 is off by"),  # 36.9 typed as 38.9
])
def test_absurd_fits_are_refused_with_the_fix(pairs: list[Pair], message: str) -> None:
    with pytest.raises(CalibrationError, match=message) as e:
        fit_calibration(pairs)
    assert "fit refused" in str(e.value) and "fix: re-take the pairs" in str(e.value)


def test_implausible_pair_names_the_pair() -> None:
    pairs = site_pairs()
    pairs[1] = Pair(pairs[1].object_c, pairs[1].ambient_c, 3.68)
    with pytest.raises(CalibrationError, match=r"pair 2: reference 3.68 °C outside 34.0..42.5; fix: type"):
        fit_calibration(pairs)


# -- CSV -------------------------------------------------------------------------------------


def test_csv_with_header_in_any_order_and_comments(tmp_path: Path) -> None:
    f = tmp_path / "pairs.csv"
    f.write_text("# night shift\nreference_c,object_c,ambient_c\n\n36.7,32.2,5.0\n36.8, 33.4 ,12\n")
    assert read_pairs_csv(f) == [Pair(32.2, 5.0, 36.7), Pair(33.4, 12.0, 36.8)]
    g = tmp_path / "plain.csv"
    g.write_text("32.2,5.0,36.7\n")
    assert read_pairs_csv(g) == [Pair(32.2, 5.0, 36.7)]


@pytest.mark.parametrize(("text", "message"), [
    ("object_c,ambient_c\n1,2\n", "line 1: header lacks reference_c"),
    ("32.2,5.0,36.7\n32.2,five,36.7\n", "line 2: expected three numbers"),
    ("32.2,5.0\n", "line 1: expected three numbers"),
    ("32.2,5.0,367\n", r"line 1: reference 367.0 °C outside"),
])
def test_csv_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "pairs.csv"
    f.write_text(text)
    with pytest.raises(CalibrationError, match=message):
        read_pairs_csv(f)


def test_missing_csv_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot read .*nope.csv"):
        read_pairs_csv(tmp_path / "nope.csv")


# -- editing the config ------------------------------------------------------------------------

FIT = Fit(1.48, 0.154, 25.0, True, (0.0, 0.0, 0.0))


def test_edit_changes_only_the_calibration_lines_and_keeps_comments() -> None:
    text = (ROOT / "config" / "example.toml").read_text(encoding="utf-8").replace("CHANGE_ME", "T1")
    new = updated_config_text(text, "example.toml", FIT, "toll-1")
    old_lines, new_lines = text.splitlines(), new.splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert changed == [("offset_c = 0.0", "offset_c = 1.48"), ("ambient_coeff = 0.0", "ambient_coeff = 0.154"),
                       ('calibration_version = "uncalibrated"', 'calibration_version = "toll-1"')]
    th = parse_config(new, "example.toml").thermometer
    assert (th.offset_c, th.ambient_coeff, th.reference_ambient_c, th.calibration_version) == (
        1.48, 0.154, 25.0, "toll-1")


def test_edit_keeps_inline_comments_and_adds_missing_keys_inside_the_section() -> None:
    text = ("# site\n[thermometer]\nsource = \"scripted\"\noffset_c = 3.2  # fitted 2025 \"old\"\n\n"
            "# indicators follow\n[indicators]\nsource = \"mock\"\n")
    new = edit_thermometer_section(text, {"offset_c": "1.48", "ambient_coeff": "0.154"})
    assert new == ("# site\n[thermometer]\nsource = \"scripted\"\noffset_c = 1.48  # fitted 2025 \"old\"\n"
                   "ambient_coeff = 0.154\n\n# indicators follow\n[indicators]\nsource = \"mock\"\n")


def test_edit_adds_the_section_when_missing() -> None:
    new = edit_thermometer_section("[policy]\nfever_threshold_c = 37.3", {"offset_c": "1.48"})
    assert new == "[policy]\nfever_threshold_c = 37.3\n\n[thermometer]\noffset_c = 1.48\n"
    assert tomllib.loads(new)["thermometer"]["offset_c"] == 1.48


def test_a_bad_version_is_refused_before_editing() -> None:
    with pytest.raises(CalibrationError, match="letters, digits"):
        updated_config_text("", "x.toml", FIT, 'x" = 1')


def test_write_is_atomic_keeps_mode_and_a_backup(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_text("[thermometer]\noffset_c = 3.2\n")
    os.chmod(f, 0o640)
    backup = write_config(f, "[thermometer]\noffset_c = 1.48\n")
    assert f.read_text() == "[thermometer]\noffset_c = 1.48\n"
    assert backup.read_text() == "[thermometer]\noffset_c = 3.2\n"
    assert f.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml", "site.toml.bak"]  # no temp file left


def test_unwritable_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot write .*fix"):
        write_config(tmp_path / "no-such-dir" / "site.toml", "x")


# -- the command -------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    f = tmp_path / "site.toml"
    f.write_text((ROOT / "config" / "highway-exit.toml").read_text(encoding="utf-8").replace("CHANGE_ME", "T1"),
                 encoding="utf-8")
    return f


def write_pairs(tmp_path: Path, pairs: list[Pair]) -> Path:
    f = tmp_path / "pairs.csv"
    f.write_text("object_c,ambient_c,reference_c\n" + "".join(
        f"{p.object_c},{p.ambient_c},{p.reference_c}\n" for p in pairs))
    return f


def test_cli_pairs_dry_run_shows_the_fit_and_changes_nothing(site: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = site.read_bytes()
    csv_file = write_pairs(tmp_path, site_pairs(jitter=(0.05, -0.05, 0.0, 0.0)))
    assert cli.main(["calibrate", "--config", str(site), "--pairs", str(csv_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert site.read_bytes() == before
    assert "residual" in out and "残差" in out and "RMS" in out and "dry run" in out
    assert len([line for line in out.splitlines() if line[:2].strip().isdigit()]) == 4  # one line per pair
    assert re.search(r"offset_c = 1\.\d\d  ambient_coeff = 0\.1\d\d", out)


def test_cli_pairs_writes_the_config_that_the_lane_then_loads(site: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = write_pairs(tmp_path, site_pairs())
    assert cli.main(["calibrate", "--config", str(site), "--pairs", str(csv_file), "--version", "toll-7"]) == 0
    assert "restart" in capsys.readouterr().out
    th = load_config(site).thermometer
    assert (th.offset_c, th.ambient_coeff, th.reference_ambient_c, th.calibration_version) == (
        1.5, 0.15, 25.0, "toll-7")
    assert th.i2c_bus == 1 and th.ambient_min_c == -10.0  # the rest untouched
    assert (tmp_path / "site.toml.bak").exists()


def test_cli_refused_fit_is_one_line_and_writes_nothing(site: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    before = site.read_bytes()
    csv_file = write_pairs(tmp_path, site_pairs()[:2])
    assert cli.main(["calibrate", "--config", str(site), "--pairs", str(csv_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: only 2 pair(s); fix:")
    assert site.read_bytes() == before


class Technician:
    """Answers the prompts; before each 'person at the sensor' answer, puts that person there."""

    def __init__(self, thermo: ScriptedThermometer, script: list[tuple[str, tuple[float, float] | None]]) -> None:
        self.thermo = thermo
        self.script = list(script)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.script:
            raise EOFError
        answer, scene = self.script.pop(0)
        if scene is not None:
            self.thermo.set(*scene)
        return answer


def test_interactive_session_on_the_scripted_thermometer(site: Path) -> None:
    clock = FakeClock()
    thermo = ScriptedThermometer(clock=clock, object_c=22.0, ambient_c=22.0)
    pairs = site_pairs()
    tech = Technician(thermo, [
        ("", (pairs[0].object_c, pairs[0].ambient_c)), ("abc", None), ("3.67", None), (str(pairs[0].reference_c), None),
        ("", (22.0, 22.0)),  # nobody there: times out, asked again
        ("", (pairs[1].object_c, pairs[1].ambient_c)), (str(pairs[1].reference_c), None),
        ("", (pairs[2].object_c, pairs[2].ambient_c)), ("", None),  # reference not taken: pair discarded
        ("", (pairs[2].object_c, pairs[2].ambient_c)), (str(pairs[2].reference_c), None),
        ("", (pairs[3].object_c, pairs[3].ambient_c)), (str(pairs[3].reference_c), None),
        ("q", None), ("y", None),
    ])
    out = io.StringIO()
    args = argparse.Namespace(config=str(site), pairs=None, dry_run=False, cal_version=None,
                              reference_ambient_c=None, yes=False)
    rc = run_calibrate(args, thermometer=thermo, input_fn=tech, out=out, clock=clock, sleep=clock.sleep,
                       now=datetime(2026, 1, 15, 21, 30, tzinfo=UTC))
    text = out.getvalue()
    assert rc == 0, text
    assert "type a number" in text and "must be within 34.0..42.5" in text
    assert "nobody detected" in text and "pair discarded" in text
    assert any("参考体温计" in p for p in tech.prompts) and any("pair 1" in p for p in tech.prompts)
    th = load_config(site).thermometer
    assert (th.offset_c, th.ambient_coeff, th.calibration_version) == (1.5, 0.15, "cal-20260115-2130")


def test_interactive_no_means_not_written(site: Path) -> None:
    clock = FakeClock()
    thermo = ScriptedThermometer(clock=clock)
    script: list[tuple[str, tuple[float, float] | None]] = []
    for p in site_pairs()[:3]:
        script += [("", (p.object_c, p.ambient_c)), (str(p.reference_c), None)]
    before = site.read_bytes()
    args = argparse.Namespace(config=str(site), pairs=None, dry_run=False, cal_version="x", reference_ambient_c=None,
                              yes=False)
    rc = run_calibrate(args, thermometer=thermo, input_fn=Technician(thermo, script + [("q", None), ("n", None)]),
                       out=io.StringIO(), clock=clock, sleep=clock.sleep)
    assert rc == 1 and site.read_bytes() == before


def test_interactive_sensor_down_is_one_line(site: Path) -> None:
    clock = FakeClock()
    thermo = ScriptedThermometer(clock=clock)
    thermo.fail("MLX90614 at 0x5a on bus 1: no ACK (errno 121): check SDA/SCL wiring")
    args = argparse.Namespace(config=str(site), pairs=None, dry_run=True, cal_version=None, reference_ambient_c=None,
                              yes=False)
    with pytest.raises(CalibrationError, match="thermometer not answering: MLX90614 .* check SDA/SCL"):
        run_calibrate(args, thermometer=thermo, input_fn=Technician(thermo, [("", None)]), out=io.StringIO(),
                      clock=clock, sleep=clock.sleep)


def test_verdict_changes_with_the_written_calibration(site: Path, tmp_path: Path) -> None:
    """Before: the raw forehead passes a fever on a cold night; after calibrate: DENY FEVER."""
    csv_file = write_pairs(tmp_path, site_pairs())
    site.write_text(site.read_text().replace("offset_c = 3.2", "offset_c = 0.0").replace(
        "ambient_coeff = 0.15", "ambient_coeff = 0.0"))

    def verdict() -> Verdict:
        rules = ScreeningRules.from_config(load_config(site).thermometer)
        s = Screener(rules)
        m = [x for x in (s.feed(i * 0.05, 33.5, 5.0) for i in range(40)) if x][0]

        class Green:
            code, kind, colour, warnings = "VALID", "health", "green", ()

        return decide([Green()], m, CheckpointRules()).verdict

    assert verdict() is Verdict.PASS
    assert cli.main(["calibrate", "--config", str(site), "--pairs", str(csv_file)]) == 0
    assert verdict() is Verdict.DENY
