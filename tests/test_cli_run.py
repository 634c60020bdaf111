"""The daemon as a process: clean SIGTERM stop, one-line errors for what a technician can
break (trust list, camera path, database directory), and the demo contract."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scanner.credentials import KeySet

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, **kw)  # type: ignore[call-overload]


def sim_config(tmp_path: Path, **overrides: str) -> Path:
    text = (ROOT / "config" / "simulated.toml").read_text()
    text = text.replace("../var/sim", str(tmp_path / "sim"))
    for k, v in overrides.items():
        text = text.replace(k, v)
    f = tmp_path / "lane.toml"
    f.write_text(text)
    return f


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "scanner.cli", "run", "--config", str(cfg), "--log-format", "json"],
                         cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        lines.append(line)
        if "lane_ready" in line:
            break
    assert any("lane_ready" in x for x in lines), "".join(lines)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    rest = p.stderr.read()
    assert p.wait(timeout=10) == 0
    assert '"event": "stopped"' in rest and "Traceback" not in rest
    assert (tmp_path / "sim" / "outbox.db").exists()


def test_missing_trust_list_is_one_line(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, **{"bootstrap = true": "bootstrap = false",
                                  'replay_path = "': f'replay_path = "{tmp_path}" #'})
    r = cli("run", "--config", str(cfg), "--duration", "1")
    assert r.returncode == 2, r.stderr  # refused before anything starts, as check-config refuses it
    err = [x.strip() for x in r.stderr.splitlines() if x.startswith("  line")]
    assert len(err) == 2 and "Traceback" not in r.stderr  # both missing files at once, in file order
    assert "trust.trust_list: cannot read" in err[0] and "trust.anchor_cert: anchor certificate not found" in err[1]
    assert str(cfg) in r.stderr.splitlines()[0]
    check = cli("check-config", str(cfg))
    assert check.returncode == 2 and check.stderr == r.stderr


def test_tampered_trust_list_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    keys = tmp_path / "sim" / "keys"
    shutil.copytree(keyset.directory, keys)
    data = bytearray((keys / "trust-list.cose").read_bytes())
    data[-10] ^= 0x01  # one bit in the signature
    (keys / "trust-list.cose").write_bytes(bytes(data))
    cfg = sim_config(tmp_path)
    r = cli("run", "--config", str(cfg), "--duration", "1")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert any("trust.trust_list: " in x and "does not verify" in x for x in r.stderr.splitlines()), r.stderr


def test_camera_path_that_does_not_exist_keeps_the_lane_up_and_says_why(tmp_path: Path, keyset: KeySet) -> None:
    shutil.copytree(keyset.directory, tmp_path / "keys")
    cfg = tmp_path / "cam.toml"
    cfg.write_text(f"""
[checkpoint]
mode = "real"
id = "T-GATE-1"
device_id = "t-pi-1"
[camera]
source = "opencv"
device = "/dev/v4l/by-id/usb-no-such-camera-video-index0"
[thermometer]
i2c_bus = 19
[trust]
trust_list = "{tmp_path}/keys/trust-list.cose"
anchor_cert = "{tmp_path}/keys/anchor.pem"
[store]
path = "{tmp_path}/o.db"
[log]
format = "text"
""")
    # A real lane on a machine without GPIO: only the pins are swapped for gpiozero's mock ones,
    # the I2C bus does not exist (thermometer FAULT), the camera does not either.
    r = subprocess.run([sys.executable, "-c", "import sys, drivers.indicators as d; "
                        "d.real_pin_factory = lambda name: d.mock_pin_factory(); from scanner.cli import main; "
                        "sys.exit(main(sys.argv[1:]))", "run", "--config", str(cfg), "--duration", "2.5"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    faults = [x for x in r.stderr.splitlines() if "camera_fault" in x]
    assert faults and "usb-no-such-camera" in faults[0]
    assert len(faults) >= 2  # retried with back-off, not given up


def test_unwritable_database_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    cfg = sim_config(tmp_path, **{f'path = "{tmp_path}/sim/outbox.db"': f'path = "{blocker}/sub/outbox.db"'})
    r = cli("run", "--config", str(cfg), "--duration", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert any("store.path: the outbox directory cannot be written" in x and "fix" in x
               for x in r.stderr.splitlines()), r.stderr


def test_help_teaches() -> None:
    r = cli("--help")
    assert r.returncode == 0
    for word in ("run", "demo", "check-config", "codes", "examples:", "通行", "REVIEW"):
        assert word in r.stdout


@pytest.mark.slow
def test_demo_shows_every_verdict_as_expected(tmp_path: Path) -> None:
    r = cli("demo", "--workdir", str(tmp_path / "demo"), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "as expected: 14/14" in out
    for verdict in ("PASS", "DENY", "REVIEW"):
        assert f"\n{verdict:<10}" in out
    for reason in ("FEVER", "HEALTH_YELLOW", "HEALTH_RED", "EXPIRED", "SIGNATURE_INVALID", "UNKNOWN_SIGNER",
                   "NO_CODE", "RESIDENCE_OTHER_VILLAGE", "RESIDENCE_MISSING", "TEMP_UNAVAILABLE"):
        assert f"[{reason}]" in out
    assert "Traceback" not in r.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "demo" / "outbox.db") as c:
        assert c.execute("select count(*) from passages").fetchone()[0] == 14
