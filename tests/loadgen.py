"""Bounded connection load on 127.0.0.1 against the real daemon, for tests/test_load_servers.py
and scripts/load_servers.py: idle sockets that never send a byte (from many loopback source
addresses, reconnecting when the server drops them, at a bounded rate), slowloris clients that
trickle one header line a second, and a prober timing /healthz and the staff page.

Loopback only (127.0.0.0/8), every loop bounded in count and time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
PIN = "246810"
TOKEN = "load-test-token-0123456789abcdef"


def raise_nofile(want: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `want` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(hard if hard != resource.RLIM_INFINITY else want, max(soft, want))
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    api: str
    staff: str
    cert: str
    db: Path
    log: Path

    def passages(self) -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)) as c:
                return int(c.execute("SELECT count(*) FROM passages").fetchone()[0])
        except sqlite3.Error:
            return -1

    def latencies_ms(self, after: int, upto: int) -> list[float]:
        """Decision latency (capture to verdict) of the passages seq in (after, upto]."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)) as c:
            rows = c.execute("SELECT latency_ms FROM passages WHERE seq > ? AND seq <= ? AND latency_ms IS NOT NULL",
                             (after, upto)).fetchall()
        return [float(r[0]) for r in rows]

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))


@contextlib.contextmanager
def daemon(workdir: Path, nofile: int = 1024) -> Iterator[Daemon]:
    """`checkpoint-scanner run` on simulated devices with the pull API (TLS) and the staff page
    on loopback, its soft RLIMIT_NOFILE at `nofile` (systemd's default for a service)."""
    from test_httpserve import self_signed

    sim = workdir / "sim"
    sim.mkdir(parents=True, exist_ok=True)
    cert = self_signed(workdir)
    (workdir / "token").write_text(TOKEN + "\n")
    (workdir / "pin").write_text(PIN + "\n")
    api_port, staff_port = free_port(), free_port()
    text = (ROOT / "config" / "simulated.toml").read_text().replace("../var/sim", str(sim))
    text = text.replace("person_every_s = 6.0", "person_every_s = 2.0")
    text += (f'\n[api]\nenabled = true\nbind = "127.0.0.1"\nport = {api_port}\ntoken_file = "{workdir / "token"}"\n'
             f'tls_cert = "{cert}"\ntls_key = "{workdir / "k.pem"}"\n'
             f'\n[staff]\nenabled = true\nbind = "127.0.0.1"\nport = {staff_port}\npin_file = "{workdir / "pin"}"\n')
    cfg = workdir / "lane.toml"
    cfg.write_text(text)
    log = workdir / "daemon.log"

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "scanner.cli", "run", "--config", str(cfg)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit)
    d = Daemon(proc, f"https://127.0.0.1:{api_port}", f"http://127.0.0.1:{staff_port}", str(cert),
               sim / "outbox.db", log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if (requests.get(d.api + "/healthz", verify=d.cert, timeout=2).status_code == 200
                        and requests.get(d.staff + "/", timeout=2).status_code == 200 and d.passages() >= 0):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the daemon did not come up: " + log.read_text()[-2000:])
        yield d
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Attack:
    """Idle and slowloris sockets against `targets`, run in one selector thread."""

    targets: list[tuple[str, int]]
    idle: int
    slowloris: int
    sources: int = 50  # loopback source addresses 127.0.3.1 ...
    reconnects_per_s: float = 400.0  # bound on reconnections after the server drops a socket
    header_every_s: float = 1.0
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("opened", "dropped_by_server", "connect_errors", "open_now", "open_min", "open_max"), 0))

    def __post_init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self._run, name="attack", daemon=True)

    def start(self) -> Attack:
        for i in range(self.idle + self.slowloris):
            self._open(i)
        self.stats["open_min"] = self.stats["open_now"]
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def sample(self) -> int:
        n = self.stats["open_now"]
        self.stats["open_min"] = min(self.stats["open_min"], n)
        self.stats["open_max"] = max(self.stats["open_max"], n)
        return n

    def _open(self, i: int) -> None:
        host, port = self.targets[i % len(self.targets)]
        s = socket.socket()
        try:
            s.bind((f"127.0.3.{1 + i % self.sources}", 0))
            s.setblocking(False)
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, os.strerror(rc))
        except OSError:
            s.close()
            self.stats["connect_errors"] += 1
            return
        slow = i >= self.idle
        self.sel.register(s, selectors.EVENT_READ, {"i": i, "slow": slow, "next": time.monotonic(), "n": 0})
        self.stats["opened"] += 1
        self.stats["open_now"] += 1

    def _run(self) -> None:
        pending: list[int] = []
        budget, last = 0.0, time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the server closed it (evicted, 408, refused)
                    self.sel.unregister(sock)
                    sock.close()
                    self.stats["open_now"] -= 1
                    self.stats["dropped_by_server"] += 1
                    pending.append(key.data["i"])
            now = time.monotonic()
            for key in list(self.sel.get_map().values()):
                d = key.data
                if d["slow"] and now >= d["next"]:
                    line = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if d["n"] == 0 else b"X-%d: y\r\n" % d["n"]
                    with contextlib.suppress(OSError):
                        key.fileobj.send(line)  # type: ignore[union-attr]
                    d["n"] += 1
                    d["next"] = now + self.header_every_s
            budget = min(self.reconnects_per_s, budget + (now - last) * self.reconnects_per_s)
            last = now
            while pending and budget >= 1:
                budget -= 1
                self._open(pending.pop(0))


@dataclass
class Probe:
    """Time GETs of `urls` round-robin, a fresh connection each, every `every_s`."""

    urls: list[str]
    cert: str
    every_s: float = 0.2
    results: list[tuple[str, int, float]] = field(default_factory=list)

    def run_for(self, seconds: float, sample: Any = None) -> list[tuple[str, int, float]]:
        out: list[tuple[str, int, float]] = []
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            url = self.urls[i % len(self.urls)]
            i += 1
            t0 = time.monotonic()
            try:
                code = requests.get(url, verify=self.cert, timeout=10, headers={"Connection": "close"}).status_code
            except requests.RequestException:
                code = 0
            out.append((url, code, time.monotonic() - t0))
            if sample is not None:
                sample()
            time.sleep(self.every_s)
        return out


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
