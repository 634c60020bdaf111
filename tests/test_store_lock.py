"""Issue 10 item 10: two daemons on one outbox. The outbox's writer and the real devices are held
with an exclusive flock; whoever comes second stops with one line naming the holder's PID, while
read-only tools keep working beside the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_cli_run import ROOT, cli, sim_config
from test_lane import lane_config
from test_store import rec

from scanner.errors import StoreError
from scanner.locks import InUseError, OutboxInUseError, lock_device, lock_lane_devices
from scanner.store import Store, connect

HOLDER = """
import sys, time
from scanner.store import Store
s = Store.open(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_open_in_the_same_process_conflicts_and_names_this_pid(tmp_path: Path) -> None:
    p = tmp_path / "outbox.db"
    first = Store.open(p)
    lock_file = Path(str(p) + ".lock")
    assert lock_file.read_text().strip() == str(os.getpid())
    assert lock_file.stat().st_mode & 0o777 == 0o600
    with pytest.raises(OutboxInUseError) as e:
        Store.open(p)  # flock belongs to the open file description: a second open conflicts
    msg = str(e.value)
    assert e.value.pid == os.getpid() and f"(PID {os.getpid()})" in msg and "\n" not in msg
    assert msg.startswith(f"store.path: {p} is in use by another checkpoint-scanner") and "fix: " in msg
    assert isinstance(e.value, StoreError) and e.value.exit_code == 2
    first.record(rec())
    c = connect(p, readonly=True)  # read-only tools take no lock
    assert c.execute("SELECT count(*) FROM passages").fetchone()[0] == 1
    c.close()
    first.close()
    second = Store.open(p)  # released by close()
    assert second.record(rec()) == 2
    second.close()


def test_another_process_holding_the_outbox_is_named_and_its_death_frees_it(tmp_path: Path) -> None:
    p = tmp_path / "outbox.db"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(p)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(OutboxInUseError) as e:
            Store.open(p)
        assert e.value.pid == child.pid and f"(PID {child.pid})" in str(e.value)
        assert Path(str(p) + "-wal").exists()  # the holder's files were left alone (nothing moved aside)
    finally:
        child.kill()  # kill -9: the kernel drops the lock with the process
        child.wait(timeout=10)
    s = Store.open(p)
    assert s.record(rec()) == 1
    s.close()


def test_second_run_on_the_same_store_stops_with_one_line_naming_the_first(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "scanner.cli", "run", "--config", str(cfg), "--log-format", "json"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    try:
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            line = first.stderr.readline()
            seen.append(line)
            if "lane_ready" in line or not line:
                break
        assert any("lane_ready" in x for x in seen), "".join(seen)
        r = cli("run", "--config", str(cfg), "--duration", "1")
        assert r.returncode == 2, r.stderr
        errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"is in use by another checkpoint-scanner (PID {first.pid})" in errors[0]
        assert "store.path: " in errors[0] and "fix: " in errors[0]
        q = cli("queue", "status", "--db", str(tmp_path / "sim" / "outbox.db"))  # read-only beside the daemon
        assert q.returncode == 0, q.stderr
        assert first.poll() is None  # the first daemon is untouched and still running
    finally:
        first.send_signal(signal.SIGTERM)
        rest = first.stderr.read()
        assert first.wait(timeout=10) == 0, rest


# ---------------------------------------------------------------- devices


def test_a_device_node_is_held_by_one_process(tmp_path: Path) -> None:
    node = tmp_path / "i2c-9"  # a stand-in for /dev/i2c-9: flock works the same on any inode
    node.write_bytes(b"")
    held = lock_device(str(node), "thermometer.i2c_bus")
    assert held is not None
    with pytest.raises(InUseError) as e:
        lock_device(str(node), "thermometer.i2c_bus")
    msg = str(e.value)
    assert e.value.pid == os.getpid() and f"(PID {os.getpid()})" in msg  # found in /proc/locks
    assert msg.startswith(f"thermometer.i2c_bus: {node} is in use") and "fix: " in msg
    held.release()
    again = lock_device(str(node), "thermometer.i2c_bus")
    assert again is not None
    again.release()
    assert lock_device(str(tmp_path / "no-such-node"), "x") is None  # the driver reports a missing bus


def test_simulated_devices_take_no_lock_and_a_missing_bus_is_left_to_the_driver(tmp_path: Path) -> None:
    sim = lane_config(tmp_path)
    release = lock_lane_devices(sim)
    release()
    real = replace(sim, thermometer=replace(sim.thermometer, source="mlx90614", i2c_bus=19))
    release = lock_lane_devices(real, gpio=False)  # /dev/i2c-19 does not exist here: no lock, no error
    release()


def test_a_second_lane_on_one_pi_cannot_drive_the_gpio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import drivers.indicators as ind
    from scanner import hardware, locks

    chip = tmp_path / "gpiochip0"  # stand-in for /dev/gpiochip0
    chip.write_bytes(b"")
    monkeypatch.setattr(locks, "gpio_nodes", lambda: [str(chip)])
    monkeypatch.setattr(ind, "real_pin_factory", lambda name: ind.mock_pin_factory())
    sim = lane_config(tmp_path)
    cfg = replace(sim, checkpoint=replace(sim.checkpoint, mode="real"),
                  camera=replace(sim.camera, source="opencv", device=str(tmp_path / "no-camera")),
                  thermometer=replace(sim.thermometer, source="mlx90614", i2c_bus=19),
                  indicators=replace(sim.indicators, source="gpio"))
    first = hardware.open_devices(cfg)
    try:
        with pytest.raises(InUseError) as e:
            hardware.open_devices(cfg)
        assert f"{chip} is in use by another checkpoint-scanner (PID {os.getpid()})" in str(e.value)
    finally:
        hardware.close_devices(first)
    again = hardware.open_devices(cfg)  # released with the devices
    hardware.close_devices(again)
