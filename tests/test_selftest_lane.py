"""Self-test of the lane's other devices: camera, decoder, LEDs/buzzer (technician confirms),
disk, clock, trust list, server; each PASS/FAIL/SKIP line with the fix."""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path
from typing import Any

from drivers.indicators import GpioIndicators, mock_pin_factory
from scanner.cli_selftest import run_selftest

ROOT = Path(__file__).resolve().parents[1]


REAL_IDS = 'mode = "real"\nid = "T-GATE-1"\ndevice_id = "t-pi-1"'  # a real gate has its own ids


def site(tmp_path: Path, keyset: Any, **sections: str) -> Path:
    shutil.copytree(keyset.directory, tmp_path / "keys")
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2
    from qrframes import make_frame

    for i in range(5):
        cv2.imwrite(str(frames / f"{i}.png"), make_frame(f"HELLO-{i}"))
    text = f"""
[checkpoint]
mode = "simulated"
[camera]
source = "replay"
replay_path = "{frames}"
replay_fps = 10.0
[thermometer]
source = "scripted"
[indicators]
source = "mock"
[trust]
trust_list = "{tmp_path}/keys/trust-list.cose"
anchor_cert = "{tmp_path}/keys/anchor.pem"
[store]
path = "{tmp_path}/data/o.db"
[clock]
trust = "{sections.get('clock', 'always')}"
"""
    f = tmp_path / "site.toml"
    f.write_text(text + sections.get("extra", ""))
    return f


def run(cfg: Path, only: list[str], **state: Any) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(config=str(cfg), only=only, json=False)
    code = run_selftest(args, out=out, state={"cycle_s": 0.05, **state})
    return code, out.getvalue()


def test_simulated_site_passes(tmp_path: Path, keyset: Any) -> None:
    code, out = run(site(tmp_path, keyset), ["camera", "indicators", "disk", "clock", "trust"],
                    confirm=lambda q: True)
    assert code == 0, out
    assert "PASS 通过  camera.opens" in out and "frames/s at 640x480" in out
    assert "PASS 通过  camera.decodes" in out and "the camera read a code" in out
    assert "confirmed by the technician" in out
    assert "PASS 通过  trust.list: trust list version 1" in out


def test_technician_saw_nothing_fails_with_wiring_fix(tmp_path: Path, keyset: Any) -> None:
    code, out = run(site(tmp_path, keyset), ["indicators"], confirm=lambda q: False)
    assert code == 1
    assert "FAIL 失败  indicators.cycle" in out and "330 ohm" in out


def test_lane_owning_the_pins_is_a_skip_not_a_failure(tmp_path: Path, keyset: Any) -> None:
    factory = mock_pin_factory()
    with GpioIndicators(17, 27, 22, pin_factory=factory):
        code, out = run(site(tmp_path, keyset), ["indicators"], pin_factory=factory)
    factory.reset()
    assert code == 0 and "SKIP 跳过  indicators.cycle: the running lane owns the pins" in out


def test_missing_camera_fails_with_the_fix(tmp_path: Path, keyset: Any) -> None:
    cfg = site(tmp_path, keyset)
    cfg.write_text(cfg.read_text().replace('source = "replay"', 'source = "opencv"\ndevice = "/dev/v4l/by-id/none"')
                   .replace('trust = "always"', 'trust = "system"').replace('mode = "simulated"', REAL_IDS)
                   .replace('source = "scripted"', 'source = "mlx90614"').replace('source = "mock"', 'source = "gpio"'))
    code, out = run(cfg, ["camera.opens"])
    assert code == 1 and "FAIL 失败  camera.opens" in out and "/dev/v4l/by-id/none" in out
    assert "fix / 处理:" in out


def test_unreachable_server_fails_with_the_fix(tmp_path: Path, keyset: Any) -> None:
    cfg = site(tmp_path, keyset, extra='[sync]\nenabled = true\nserver_url = "http://127.0.0.1:9"\n')
    code, out = run(cfg, ["server"])
    assert code == 1 and "FAIL 失败  server.reachable" in out and "keeps working offline" in out


def test_expired_or_missing_trust_list(tmp_path: Path, keyset: Any) -> None:
    cfg = site(tmp_path, keyset)
    (tmp_path / "keys" / "trust-list.cose").unlink()
    code, out = run(cfg, ["trust"])
    assert code == 1 and "FAIL 失败  trust.list" in out and "copy the signed trust list" in out
