"""Self-test: the registry, and the thermometer checks against the emulated chip (bus injected)
and the scripted thermometer. Each FAIL line names its fix; exit 0 all pass, 1 any fail."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from emulated_mlx90614 import EmulatedBus, EmulatedMLX90614

from drivers.base import SensorError
from drivers.mlx90614 import EE_EMISSIVITY, EE_ID
from drivers.thermometer_scripted import ScriptedThermometer
from scanner import cli, selftest
from scanner.cli_selftest import run_selftest
from scanner.selftest import Context, Result, Status, run_checks

REAL_THERMO = """
[checkpoint]
mode = "real"
id = "T-GATE-1"
device_id = "t-pi-1"
[thermometer]
source = "mlx90614"
i2c_bus = 1
address = 0x5A
"""
SCRIPTED = """
[checkpoint]
mode = "simulated"
[camera]
source = "replay"
replay_path = "frames"
[thermometer]
source = "scripted"
"""


@pytest.fixture
def real_cfg(tmp_path: Path) -> Path:
    f = tmp_path / "site.toml"
    f.write_text(REAL_THERMO)
    return f


@pytest.fixture
def chip() -> EmulatedMLX90614:
    chip = EmulatedMLX90614()
    chip.set_ambient(21.5)
    chip.set_object(23.0)
    return chip


def selftest_run(config: Path, only: tuple[str, ...] = ("config", "thermometer"), as_json: bool = False,
                 **inject: Any) -> tuple[int, str]:
    """The thermometer checks (camera, LED, disk... checks are tested in test_selftest_lane.py)."""
    out = io.StringIO()
    rc = run_selftest(argparse.Namespace(config=str(config), only=list(only), json=as_json), out=out, **inject)
    return rc, out.getvalue()


def statuses(text: str) -> dict[str, str]:
    """check name -> PASS/FAIL/SKIP from the human output."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("PASS", "FAIL", "SKIP"):
            out[parts[2].rstrip(":")] = parts[0]
    return out


def test_healthy_chip_passes_every_thermometer_check(real_cfg: Path, chip: EmulatedMLX90614) -> None:
    bus = EmulatedBus({0x5A: chip})
    opened: list[int] = []

    def open_bus(n: int) -> EmulatedBus:
        opened.append(n)
        return bus

    rc, text = selftest_run(real_cfg, open_bus=open_bus)
    assert rc == 0, text
    assert statuses(text) == {"config": "PASS", "thermometer.bus": "PASS", "thermometer.bus_speed": "SKIP",
                              "thermometer.answers": "PASS",
                              "thermometer.chip_id": "PASS", "thermometer.emissivity": "PASS",
                              "thermometer.ambient": "PASS"}
    assert "chip id 2a4c1b639c070c1f" in text and "emissivity 1.0000" in text and "ambient 21.49 °C" in text
    assert "6 passed, 0 failed, 1 skipped / 通过 6" in text
    assert opened == [1] and bus.closed  # closed at the end
    assert chip.eeprom_writes == [] and all(t.kind == "read" for t in bus.log)  # a self-test only reads


def test_no_chip_at_the_address_names_wiring_pullups_and_bus_speed(real_cfg: Path) -> None:
    rc, text = selftest_run(real_cfg, open_bus=lambda n: EmulatedBus({}))
    assert rc == 1
    s = statuses(text)
    assert s["thermometer.bus"] == "PASS" and s["thermometer.answers"] == "FAIL"
    assert s["thermometer.chip_id"] == s["thermometer.emissivity"] == s["thermometer.ambient"] == "SKIP"
    fix = next(line for line in text.splitlines() if "fix / 处理" in line)
    for words in ("SDA", "SCL", "pull-ups", "100 kHz or lower", "never below 10 kHz", "i2cdetect -y 1", "5a"):
        assert words in fix
    assert "no ACK (errno 121)" in text


def test_i2c_not_enabled(real_cfg: Path) -> None:
    def no_bus(n: int) -> EmulatedBus:
        raise SensorError(f"no I2C bus /dev/i2c-{n}: enable I2C (raspi-config nonint do_i2c 0) and reboot")

    rc, text = selftest_run(real_cfg, open_bus=no_bus)
    assert rc == 1 and statuses(text)["thermometer.bus"] == "FAIL"
    assert "raspi-config nonint do_i2c 0" in text and "i2c group" in text


@pytest.mark.parametrize(("hz", "status", "words"), [
    (100_000, "PASS", "I2C bus 1 at 100 kHz"), (50_000, "PASS", "at 50 kHz"),
    (400_000, "FAIL", "400 kHz, above the sensor's 100 kHz"), (5_000, "FAIL", "below the sensor's 10 kHz minimum"),
])
def test_bus_speed_from_the_device_tree(hz: int, status: str, words: str, real_cfg: Path, tmp_path: Path,
                                        chip: EmulatedMLX90614) -> None:
    node = tmp_path / "sys" / "class" / "i2c-adapter" / "i2c-1" / "of_node"
    node.mkdir(parents=True)
    (node / "clock-frequency").write_bytes(hz.to_bytes(4, "big"))
    rc, text = selftest_run(real_cfg, open_bus=lambda n: EmulatedBus({0x5A: chip}), sysfs=str(tmp_path / "sys"))
    assert statuses(text)["thermometer.bus_speed"] == status and words in text
    assert rc == (0 if status == "PASS" else 1)
    if status == "FAIL":
        assert "dtparam=i2c_arm_baudrate=100000" in text


def test_pec_errors_fail_answers_with_the_wiring_fix(real_cfg: Path, chip: EmulatedMLX90614) -> None:
    chip.inject("bad_pec", count=None)
    rc, text = selftest_run(real_cfg, open_bus=lambda n: EmulatedBus({0x5A: chip}))
    assert rc == 1 and statuses(text)["thermometer.answers"] == "FAIL"
    assert "PEC mismatch" in text and "pull-ups" in text


def test_unexpected_emissivity_fails_and_is_not_rewritten(real_cfg: Path, chip: EmulatedMLX90614) -> None:
    chip.eeprom[EE_EMISSIVITY] = 0xC000  # 0.75
    rc, text = selftest_run(real_cfg, open_bus=lambda n: EmulatedBus({0x5A: chip}))
    assert rc == 1 and statuses(text)["thermometer.emissivity"] == "FAIL"
    assert "emissivity 0.7500 outside 0.95..1.0" in text and "set_emissivity(0.98)" in text
    assert chip.eeprom[EE_EMISSIVITY] == 0xC000 and chip.eeprom_writes == []


def test_blank_chip_id_fails(real_cfg: Path, chip: EmulatedMLX90614) -> None:
    for cmd in EE_ID:
        chip.eeprom[cmd] = 0
    rc, text = selftest_run(real_cfg, open_bus=lambda n: EmulatedBus({0x5A: chip}))
    assert rc == 1 and statuses(text)["thermometer.chip_id"] == "FAIL" and "replace the sensor" in text


def test_implausible_ambient_fails(real_cfg: Path, chip: EmulatedMLX90614) -> None:
    chip.set_ambient(60.0)  # sun on the housing
    rc, text = selftest_run(real_cfg, open_bus=lambda n: EmulatedBus({0x5A: chip}))
    assert rc == 1 and statuses(text)["thermometer.ambient"] == "FAIL"
    assert "ambient 60.01 °C outside the operating range -10.0..45.0 °C" in text and "shade the sensor" in text


def test_scripted_thermometer_checks_the_ambient_only(tmp_path: Path) -> None:
    f = tmp_path / "sim.toml"
    f.write_text(SCRIPTED)
    rc, text = selftest_run(f, thermometer=ScriptedThermometer(object_c=24.0, ambient_c=20.0))
    assert rc == 0
    s = statuses(text)
    assert s["thermometer.ambient"] == "PASS" and s["thermometer.bus"] == "SKIP"
    assert "ambient 20.00 °C" in text
    thermo = ScriptedThermometer()
    thermo.fail("scripted fault: sensor unplugged")
    rc, text = selftest_run(f, thermometer=thermo)
    assert rc == 1 and "scripted fault: sensor unplugged" in text


def test_invalid_config_fails_first_and_skips_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[checkpoint]\nmode = \"real\"\n[thermometer]\nsource = \"mlx9061\"\n")
    rc, text = selftest_run(f)
    assert rc == 1
    s = statuses(text)
    assert s["config"] == "FAIL" and set(s.values()) == {"FAIL", "SKIP"}
    assert 'did you mean "mlx90614"' in text and "check-config" in text


def test_only_runs_the_named_group_and_what_it_needs(real_cfg: Path, chip: EmulatedMLX90614) -> None:
    rc, text = selftest_run(real_cfg, only=("thermometer.chip",), open_bus=lambda n: EmulatedBus({0x5A: chip}))
    assert rc == 0
    assert list(statuses(text)) == ["config", "thermometer.bus", "thermometer.answers", "thermometer.chip_id"]


def test_json_lines(real_cfg: Path) -> None:
    rc, text = selftest_run(real_cfg, as_json=True, open_bus=lambda n: EmulatedBus({}))
    rows = [json.loads(line) for line in text.splitlines()]
    assert rc == 1 and {r["check"] for r in rows} >= {"config", "thermometer.answers"}
    failed = [r for r in rows if r["status"] == "FAIL"]
    assert len(failed) == 1 and failed[0]["fix"]


def test_registry_takes_new_checks_and_a_crashing_check_is_a_fail(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(selftest, "REGISTRY", {k: v for k, v in selftest.REGISTRY.items()
                                               if k == "config" or k.startswith("thermometer")})
    monkeypatch.setattr(selftest, "CHECK_MODULES", ())
    f = tmp_path / "sim.toml"
    f.write_text(SCRIPTED)

    @selftest.check("camera.opens", needs=("config",))
    def camera_opens(ctx: Context) -> Result:
        return Result.fail("no /dev/video0", "plug the camera in")

    @selftest.check("camera.frames", needs=("camera.opens",))
    def camera_frames(ctx: Context) -> Result:
        raise AssertionError("never runs")

    @selftest.check("disk.free")
    def disk_free(ctx: Context) -> Result:
        raise RuntimeError("statvfs exploded")

    with pytest.raises(ValueError, match="registered twice"):
        selftest.check("disk.free")(disk_free)
    outcomes = run_checks(Context(str(f), thermometer=ScriptedThermometer()))
    by_name = {o.name: o.result for o in outcomes}
    assert by_name["camera.opens"].status is Status.FAIL and by_name["camera.opens"].fix == "plug the camera in"
    assert by_name["camera.frames"].status is Status.SKIP
    assert by_name["disk.free"].status is Status.FAIL and "statvfs exploded" in by_name["disk.free"].detail


def test_cli_selftest_on_the_simulated_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """On a fresh clone: the simulated config bootstraps its keys and frames, as `run` does."""
    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "simulated.toml"
    cfg.write_text((root / "config" / "simulated.toml").read_text().replace("../var/sim", str(tmp_path / "sim")))
    assert cli.main(["selftest", "--config", str(cfg)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "PASS 通过  thermometer.ambient" in out and "0 failed" in out
    assert "PASS 通过  camera.opens" in out and "PASS 通过  trust.list" in out
