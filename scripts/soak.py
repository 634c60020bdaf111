#!/usr/bin/env python3
"""Soak the lane on simulated hardware: a steady stream of passages, the camera pulled out and
plugged back every minute, and resource figures at the start and the end.

    .venv/bin/python scripts/soak.py --minutes 30            # the figure the README quotes
    .venv/bin/python scripts/soak.py --minutes 1 --every 2   # a quick look

Reports RSS, open file descriptors, threads and CPU per passage for the first and the last
tenth of the run, and exits 1 if RSS or descriptors grew beyond noise (RSS > 10 %% and > 8 MiB,
or more than 5 descriptors), or if a passage was lost.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.base import CameraError  # noqa: E402
from drivers.thermometer_scripted import ScriptedThermometer  # noqa: E402
from scanner import hardware  # noqa: E402
from scanner.clock import Clock  # noqa: E402
from scanner.credentials import Signer, TrustStore, generate_keys, issue_health  # noqa: E402
from scanner.demo import StageCamera, demo_config  # noqa: E402
from scanner.logs import setup_logging  # noqa: E402
from scanner.qrimage import frame_with_codes  # noqa: E402
from scanner.service import Lane  # noqa: E402
from scanner.store import Store  # noqa: E402


class PullableCamera(StageCamera):
    """The demo's stage camera that can be 'unplugged': reads fail until it is plugged back."""

    def __init__(self) -> None:
        super().__init__()
        self.unplugged = False

    def open(self) -> None:
        if self.unplugged:
            raise CameraError("no camera at /dev/video0: check the USB cable")

    def read(self):  # type: ignore[no-untyped-def]
        if self.unplugged:
            raise CameraError("camera read failed: device gone")
        return super().read()


def sample(passages: int) -> dict[str, float]:
    with open("/proc/self/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"t": time.monotonic(), "rss_mib": rss_kib / 1024, "fds": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(), "cpu_s": ru.ru_utime + ru.ru_stime, "passages": passages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=3.0, help="seconds between people")
    ap.add_argument("--pull-every", type=float, default=60.0, help="seconds between camera pulls")
    args = ap.parse_args()
    setup_logging("error", "text")
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    now = datetime.now(UTC)
    ks = generate_keys(work / "keys", now=now - timedelta(days=1))
    signer = Signer.load(ks.health_key, ks.health_cert)
    trust = TrustStore.load(ks.trust_list, ks.anchor_cert)
    cfg = demo_config("highway_exit", work)
    cfg = replace(cfg, policy=replace(cfg.policy, cooldown_s=0.5))
    camera = PullableCamera()
    thermo = ScriptedThermometer(object_c=22.0, ambient_c=22.0, noise_c=0.05)
    store = Store.open(cfg.store.path)
    devices = hardware.open_devices(cfg, thermometer=thermo)
    devices.camera = camera
    lane = Lane(cfg, devices, trust, store, Clock("always"))
    runner = threading.Thread(target=lane.run, daemon=True)
    runner.start()
    end = time.monotonic() + args.minutes * 60
    next_pull = time.monotonic() + args.pull_every
    samples = [sample(0)]
    people = pulls = 0
    print(f"soak: {args.minutes} min, a person every {args.every} s, camera pulled every {args.pull_every} s")
    while time.monotonic() < end:
        t0 = time.monotonic()
        code = issue_health(signer, colour="green", sid=people.to_bytes(16, "big"), masked_name="张*",
                            id_tail="0000", region="330381", iat=now, exp=now + timedelta(hours=23))
        camera.show([frame_with_codes([code], seed=people % 5)])
        time.sleep(0.2)
        thermo.set(34.5, 22.0)
        time.sleep(1.0)
        camera.show([])
        thermo.set(22.0, 22.0)
        people += 1
        if time.monotonic() >= next_pull:
            camera.unplugged = True
            time.sleep(3.0)
            camera.unplugged = False
            pulls += 1
            next_pull = time.monotonic() + args.pull_every
        samples.append(sample(lane.stats.passages))
        if people % 50 == 0:
            s = samples[-1]
            print(f"  {people} people, {lane.stats.passages} passages, rss {s['rss_mib']:.1f} MiB, "
                  f"fds {s['fds']}, threads {s['threads']}", flush=True)
        time.sleep(max(0.0, args.every - (time.monotonic() - t0)))
    time.sleep(2.0)
    samples.append(sample(lane.stats.passages))
    lane.stop_event.set()
    runner.join(timeout=5)
    hardware.close_devices(devices)
    recorded = store.count()
    store.close()

    tenth = max(2, len(samples) // 10)
    first, last = samples[1:tenth + 1], samples[-tenth:]

    def cpu_per_passage(win: list[dict[str, float]]) -> float:
        dp = win[-1]["passages"] - win[0]["passages"]
        return (win[-1]["cpu_s"] - win[0]["cpu_s"]) / dp * 1000 if dp else float("nan")

    def avg(win: list[dict[str, float]], k: str) -> float:
        return sum(s[k] for s in win) / len(win)

    print(f"\n{'':<22}{'start':>10}{'end':>10}")
    for k, label in (("rss_mib", "RSS MiB"), ("fds", "open fds"), ("threads", "threads")):
        print(f"{label:<22}{avg(first, k):>10.1f}{avg(last, k):>10.1f}")
    print(f"{'CPU ms per passage':<22}{cpu_per_passage(first):>10.1f}{cpu_per_passage(last):>10.1f}")
    print(f"people {people}, passages {lane.stats.passages}, recorded {recorded}, camera pulls {pulls}, "
          f"camera reopens {lane.capture.reopens}")
    rss_growth = avg(last, "rss_mib") - avg(first, "rss_mib")
    fd_growth = avg(last, "fds") - avg(first, "fds")
    ok = (recorded == lane.stats.passages and not (rss_growth > 8 and rss_growth > 0.1 * avg(first, "rss_mib"))
          and fd_growth <= 5)
    print(f"soak: {'OK' if ok else 'FAILED'} (RSS growth {rss_growth:+.1f} MiB, fd growth {fd_growth:+.1f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
