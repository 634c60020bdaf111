#!/usr/bin/env python3
"""Whole-lane latency and idle CPU, with the real Lane loop (capture thread, decoder ladder,
verification, passage, policy, fsynced outbox commit, indicators).

Latency: a person stands at the thermometer (the scripted sensor reads skin), the temperature
is taken, then the camera starts showing their signed health code. Measured: from the
`t_mono` of the first camera frame that holds the code to the moment the verdict pattern is
handed to the indicators (after the record is committed). The camera is a paced 15 fps source
(640x480, noisy, the code at 3 px per module), so the figure includes waiting for the scan loop.

Idle CPU: the lane runs on an empty, static scene (new sensor noise every frame) for a while,
with motion gating on and off; CPU seconds of this process per wall second (all threads).

Usage: .venv/bin/python scripts/bench_lane_latency.py [--people 20] [--idle-s 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from drivers.base import Frame, Pattern  # noqa: E402
from drivers.indicators import mock_pin_factory  # noqa: E402
from drivers.thermometer_scripted import ScriptedThermometer  # noqa: E402
from scanner import hardware  # noqa: E402
from scanner.clock import Clock  # noqa: E402
from scanner.config import parse_config  # noqa: E402
from scanner.credentials import Signer, TrustStore, generate_keys, issue_health  # noqa: E402
from scanner.qrimage import qr_image  # noqa: E402
from scanner.service import Lane  # noqa: E402
from scanner.store import Store  # noqa: E402

TOML = """
[checkpoint]
mode = "simulated"
id = "BENCH-1"
[camera]
source = "replay"
replay_path = "x"
[decode]
motion_gate = {gate}
[thermometer]
source = "scripted"
[indicators]
source = "mock"
verdict_hold_s = 0.5
[policy]
pairing_window_s = 5
cooldown_s = 0.5
[clock]
trust = "always"
"""
AMBIENT_C, SKIN_C = 22.0, 34.6
VERDICTS = {"PASS", "DENY", "REVIEW"}


class LiveCamera:
    """Paced like a real camera; shows whatever `show()` was given, with fresh sensor noise."""

    def __init__(self, fps: float = 15.0) -> None:
        self.period = 1.0 / fps
        self.rng = np.random.default_rng(0)
        self._noise = [np.clip(self.rng.normal(0, 3, (480, 640)), -8, 8).astype(np.int16) for _ in range(8)]
        self.base = self._noisy(np.full((480, 640), 175, np.uint8))
        self.frames = self.base
        self.first_t: float | None = None
        self._want_first = False
        self._next = time.monotonic()
        self._seq = 0

    def _noisy(self, scene: np.ndarray) -> list[np.ndarray]:
        """Eight noisy copies, made once: the camera itself must not cost this process CPU."""
        return [np.clip(scene.astype(np.int16) + n, 0, 255).astype(np.uint8) for n in self._noise]

    def show(self, scene: np.ndarray | None) -> None:
        self.frames = self.base if scene is None else self._noisy(scene)
        self.first_t, self._want_first = None, scene is not None

    def open(self) -> None:
        pass

    def read(self) -> Frame:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self.period, time.monotonic())
        self._seq += 1
        image = self.frames[self._seq % 8]
        t = time.monotonic()
        if self._want_first:
            self.first_t, self._want_first = t, False
        return Frame(image, t, self._seq)

    def close(self) -> None:
        pass


def code_scene(code: str) -> np.ndarray:
    scene = np.full((480, 640), 175, np.uint8)
    tile = qr_image(code, scale=3)
    y, x = (480 - tile.shape[0]) // 2, (640 - tile.shape[1]) // 2
    scene[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return scene


def make_lane(work: Path, trust: Any, gate: bool) -> tuple[Lane, LiveCamera, ScriptedThermometer,
                                                          list[tuple[float, str]], Store]:
    cfg = parse_config(TOML.format(gate="true" if gate else "false"), str(work / "lane.toml"))
    cfg = replace(cfg, store=replace(cfg.store, path=str(work / f"outbox-{gate}.db")))
    thermo = ScriptedThermometer(object_c=AMBIENT_C, ambient_c=AMBIENT_C)
    camera = LiveCamera()
    devices = hardware.open_devices(cfg, frames=[np.zeros((4, 4), np.uint8)], pin_factory=mock_pin_factory(),
                                    thermometer=thermo)
    devices.camera = camera
    shown: list[tuple[float, str]] = []
    real_show = devices.indicators.show

    def show(pattern: Pattern) -> None:
        shown.append((time.monotonic(), pattern.name))
        real_show(pattern)

    devices.indicators.show = show  # type: ignore[method-assign]
    store = Store.open(cfg.store.path)
    lane = Lane(cfg, devices, trust, store, Clock("always"))
    return lane, camera, thermo, shown, store


def wait_for(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return False


def latency(work: Path, trust: Any, signer: Signer, people: int) -> list[float]:
    lane, camera, thermo, shown, store = make_lane(work, trust, gate=True)
    thread = threading.Thread(target=lane.run, daemon=True)
    thread.start()
    out: list[float] = []
    try:
        time.sleep(0.5)
        now = datetime.now(UTC)
        for i in range(people):
            code = issue_health(signer, colour="green", sid=bytes([i % 256]) * 16, masked_name="陈*聪",
                                id_tail="123X", region="330381", iat=now - timedelta(hours=1),
                                exp=now + timedelta(hours=20))
            thermo.set(SKIN_C, AMBIENT_C)  # the person is at the sensor ...
            time.sleep(1.2)  # ... long enough for the temperature to be taken
            n = len(shown)
            camera.show(code_scene(code))
            if not wait_for(lambda n=n: any(name in VERDICTS for _, name in shown[n:]), 5.0):
                print(f"person {i}: no verdict within 5 s")
                continue
            t_show = next(t for t, name in shown[n:] if name in VERDICTS)
            assert camera.first_t is not None
            out.append((t_show - camera.first_t) * 1000)
            camera.show(None)
            thermo.set(AMBIENT_C, AMBIENT_C)
            time.sleep(1.2)  # verdict hold and cooldown
    finally:
        lane.stop_event.set()
        thread.join(timeout=5)
        hardware.close_devices(lane.dev)
        store.close()
    return out


def idle_cpu(work: Path, trust: Any, gate: bool, seconds: float) -> tuple[float, int, int]:
    lane, _camera, _thermo, _shown, store = make_lane(work, trust, gate=gate)
    thread = threading.Thread(target=lane.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # settle
        c0, w0 = time.process_time(), time.monotonic()
        d0, s0 = lane.decoder.stats.frames_decoded, lane.decoder.stats.frames_skipped
        time.sleep(seconds)
        cpu = (time.process_time() - c0) / (time.monotonic() - w0)
        return cpu, lane.decoder.stats.frames_decoded - d0, lane.decoder.stats.frames_skipped - s0
    finally:
        lane.stop_event.set()
        thread.join(timeout=5)
        hardware.close_devices(lane.dev)
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--idle-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-lane-latency-") as tmp:
        work = Path(tmp)
        ks = generate_keys(work / "keys", now=datetime.now(UTC) - timedelta(days=1))
        trust = TrustStore.load(ks.trust_list, ks.anchor_cert)
        signer = Signer.load(ks.health_key, ks.health_cert)
        lat = latency(work, trust, signer, args.people)
        if lat:
            lat.sort()
            p95 = lat[min(len(lat) - 1, int(round(0.95 * len(lat))) - 1)]
            print(f"frame with the code -> verdict on the lights (temperature already taken), {len(lat)} people: "
                  f"median {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms, max {lat[-1]:.1f} ms")
        for gate in (True, False):
            cpu, decoded, skipped = idle_cpu(work, trust, gate, args.idle_s)
            print(f"idle lane, motion gate {'on ' if gate else 'off'}: {cpu * 100:.1f}% of one core, "
                  f"{decoded} frames decoded, {skipped} skipped in {args.idle_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
