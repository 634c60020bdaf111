"""Issue 11.1-11.4 against the real daemon process: while 2,000 idle connections (from 50
loopback addresses, reconnecting when dropped) and 50 slowloris clients press on the pull API
(TLS) and the staff page, /healthz and the page keep answering and the lane keeps recording
passages. The daemon runs with a soft RLIMIT_NOFILE of 1024, systemd's default for a service.
Bounded: about 10 s of load, loopback only. scripts/load_servers.py prints the figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from loadgen import Attack, Probe, daemon, raise_nofile


@pytest.mark.slow
def test_daemon_keeps_deciding_and_answering_under_idle_and_slowloris_load(tmp_path: Path) -> None:
    if raise_nofile(4096) < 2300:
        pytest.skip("this process may not open 2,300 sockets (hard RLIMIT_NOFILE too low)")
    with daemon(tmp_path) as d:
        api_port, staff_port = int(d.api.rsplit(":", 1)[1]), int(d.staff.rsplit(":", 1)[1])
        probe = Probe([d.api + "/healthz", d.staff + "/"], d.cert)
        before = d.passages()
        attack = Attack([("127.0.0.1", api_port), ("127.0.0.1", staff_port)], idle=2000, slowloris=50).start()
        try:
            held = attack.sample()
            results = probe.run_for(10.0, attack.sample)
            after = d.passages()
            fds = d.fds()
        finally:
            attack.close()
        assert held >= 1500, attack.stats  # the attack really was there
        assert d.proc.poll() is None, d.log.read_text()[-2000:]
        codes = [code for _, code, _ in results]
        assert len(codes) >= 10 and all(c == 200 for c in codes), results
        assert after > before, (before, after)  # the lane kept deciding and recording
        assert fds < 1024 - 200, fds  # the caps left the lane its descriptors
    log = d.log.read_text()
    assert d.proc.returncode == 0, log[-2000:]  # and it still stops cleanly
    assert "Traceback" not in log and "Too many open files" not in log and "event=http_shed" in log
