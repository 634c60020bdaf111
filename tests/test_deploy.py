"""What a technician installs: the systemd unit verifies, the Pi install script's dry run is
complete and shellcheck-clean, and the scripts stay lint-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "checkpoint-scanner.service"


def unit_text() -> str:
    return UNIT.read_text()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed (apt: systemd)")
def test_unit_verifies(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart exists: point it at this checkout's venv
    venv = Path(shutil.which("checkpoint-scanner") or ROOT / ".venv/bin/checkpoint-scanner").parent.parent
    text = unit_text().replace("/opt/checkpoint-scanner/.venv", str(venv))
    f = tmp_path / "checkpoint-scanner.service"
    f.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unit_has_what_an_unattended_lane_needs() -> None:
    t = unit_text()
    for line in ("Type=notify", "Restart=always", "WatchdogSec=", "User=checkpoint",
                 "SupplementaryGroups=gpio i2c video", "StateDirectory=checkpoint-scanner",
                 "ConfigurationDirectory=checkpoint-scanner", "ExecStartPre=", "check-config",
                 "DevicePolicy=closed", "DeviceAllow=char-i2c rw", "DeviceAllow=char-gpiochip rw",
                 "DeviceAllow=char-video4linux rw", "StartLimitIntervalSec=0", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "TimeoutStopSec=", "LoadCredential=api-token:",
                 "LoadCredential=upload-token:", "LoadCredential=staff-pin:", "DeviceAllow=char-dma_heap rw"):
        assert line in t, line
    assert not re.search(r"^PrivateDevices=", t, re.M)  # it would hide /dev/i2c-1, gpiochip and video nodes
    assert re.search(r"^StartLimitIntervalSec=0$", t.split("[Service]")[0], re.M)  # belongs in [Unit]


def test_install_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    r = subprocess.run([str(ROOT / "scripts" / "install-pi.sh"), "--dry-run"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CHECKPOINT_PREFIX": str(tmp_path / "opt")})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for n in range(1, 9):
        assert f"==> {n}/8" in out
    for needle in ("libzbar0", "python3-picamera2", "python3-lgpio", "fonts-noto-cjk", "i2c",
                   "--system-site-packages", "gpio,i2c,video",
                   "/etc/checkpoint-scanner", "systemctl enable checkpoint-scanner.service", "check-config"):
        assert needle in out, needle
    assert not (tmp_path / "opt").exists()
    assert all(line.startswith(("==>", "    would run:", "    I2C already", "    ")) for line in out.splitlines())


def test_install_refuses_without_root_unless_dry_run() -> None:
    r = subprocess.run([str(ROOT / "scripts" / "install-pi.sh"), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (apt: shellcheck)")
def test_shell_scripts_are_shellcheck_clean() -> None:
    scripts = [ROOT / "scripts" / n for n in ("install-pi.sh", "_setup.sh", "_apt.sh", "demo", "test")]
    scripts.append(ROOT / ".ci" / "run")
    r = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout
