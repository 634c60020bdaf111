#!/usr/bin/env python3
"""Figures for the README: the daemon's two HTTP servers under idle-connection and slowloris
load, against an idle baseline. Simulated devices, the pull API on TLS and the staff page on
127.0.0.1; the daemon's soft RLIMIT_NOFILE is 1024 (systemd's default for a service).

    .venv/bin/python scripts/load_servers.py                  # 30 s idle, then 30 s of load
    .venv/bin/python scripts/load_servers.py --hold 10        # a quick look

Reports: sockets the attack held open (client view), /healthz and staff-page latency p50/p95,
passages per minute and their decision latency, daemon CPU, descriptors, RSS and threads.
Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from loadgen import Attack, Daemon, Probe, daemon, percentile, raise_nofile  # noqa: E402


def phase(d: Daemon, probe: Probe, seconds: float, attack: Attack | None) -> dict[str, float]:
    p0, c0, t0 = d.passages(), d.cpu_s(), time.monotonic()
    fds: list[int] = []
    rss: list[float] = []

    def sample() -> None:
        fds.append(d.fds())
        rss.append(d.rss_mib())
        if attack is not None:
            attack.sample()

    results = probe.run_for(seconds, sample)
    wall = time.monotonic() - t0
    p1 = d.passages()
    decide = d.latencies_ms(p0, p1)
    out: dict[str, float] = {"passages_per_min": (p1 - p0) * 60 / wall, "decision_p50_ms": percentile(decide, 50),
                             "decision_max_ms": max(decide, default=float("nan")),
                             "cpu_pct": 100 * (d.cpu_s() - c0) / wall, "fds_max": max(fds), "rss_max_mib": max(rss),
                             "threads": d.threads()}
    for name, url in (("healthz", d.api + "/healthz"), ("page", d.staff + "/")):
        lat = [s * 1000 for u, code, s in results if u == url and code == 200]
        out[f"{name}_ok"] = len(lat)
        out[f"{name}_failed"] = sum(1 for u, code, _ in results if u == url and code != 200)
        out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = percentile(lat, 50), percentile(lat, 95)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle", type=int, default=2000, help="idle sockets (default 2000)")
    ap.add_argument("--slowloris", type=int, default=50, help="slowloris clients (default 50)")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds of each phase (default 30, at most 300)")
    args = ap.parse_args()
    hold = min(max(args.hold, 5.0), 300.0)
    if raise_nofile(args.idle + args.slowloris + 256) < args.idle + args.slowloris + 256:
        print("error: the hard RLIMIT_NOFILE is too low for that many sockets; fix: fewer --idle", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp)) as d:
        api_port, staff_port = int(d.api.rsplit(":", 1)[1]), int(d.staff.rsplit(":", 1)[1])
        probe = Probe([d.api + "/healthz", d.staff + "/"], d.cert)
        time.sleep(3)  # let the lane settle
        quiet = phase(d, probe, hold, None)
        attack = Attack([("127.0.0.1", api_port), ("127.0.0.1", staff_port)], args.idle, args.slowloris).start()
        try:
            loaded = phase(d, probe, hold, attack)
        finally:
            attack.close()
        s = attack.stats
    print(f"load: {args.idle} idle + {args.slowloris} slowloris sockets for {hold:.0f} s (API on TLS, staff page "
          f"plain), from 50 loopback addresses; reconnects at most {attack.reconnects_per_s:.0f}/s")
    print(f"sockets held by the attack (client view): {s['open_min']}..{s['open_max']}; "
          f"opened {s['opened']}, dropped by the servers {s['dropped_by_server']}")
    print(f"{'figure':<28}{'idle':>12}{'under load':>14}")
    for k in quiet:
        print(f"{k:<28}{quiet[k]:>12.1f}{loaded[k]:>14.1f}")
    failed = loaded["healthz_failed"] + loaded["page_failed"]
    return 1 if failed or loaded["passages_per_min"] <= 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
