"""Bounded hostile clients for the transport tests (tests/test_httpserve.py and friends): from
several loopback source addresses, many connections that each either say nothing (`idle`) or
send the head of a POST and then one body byte every `drip_s` (`slowbody`), and reconnect as
soon as the server closes them. Plus `Legit`: one well-behaved client that tries `tries` times
and counts the status codes it got.

Loopback only (127.0.0.0/8); every loop bounded by a stop flag and a time budget; runs on an
asyncio loop of its own in one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any


class Flood:
    """`addresses` x `per_address` connections to 127.0.0.1:`port`, source 127.9.0.1 upwards."""

    def __init__(self, port: int, addresses: int, per_address: int, mode: str = "idle", *, path: str = "/",
                 length: int = 4000, drip_s: float = 0.5, budget_s: float = 60.0, first: int = 1,
                 reconnect_s: float = 0.0) -> None:
        assert mode in ("idle", "slowbody")
        self.port, self.mode, self.path, self.length, self.drip_s = port, mode, path, length, drip_s
        self.sources = [f"127.9.{(first + i) // 250}.{(first + i) % 250 + 1}" for i in range(addresses)]
        self.per = per_address
        self.budget_s, self.reconnect_s = budget_s, reconnect_s
        self.stop = threading.Event()
        self.opened = 0
        self.answers: Counter[str] = Counter()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="flood", daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self._thread.join(15)

    def wait_open(self, n: int, timeout_s: float = 10.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and self.opened < n:
            time.sleep(0.02)
        return self.opened >= n

    async def _main(self) -> None:
        end = time.monotonic() + self.budget_s
        tasks = [asyncio.ensure_future(self._one(src, end)) for src in self.sources for _ in range(self.per)]
        while not self.stop.is_set() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, src: str, end: float) -> None:
        head = (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {self.length}\r\n\r\n").encode()
        while not self.stop.is_set() and time.monotonic() < end:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(src, 0))
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.opened += 1
            try:
                if self.mode == "slowbody":
                    w.write(head)
                while not self.stop.is_set() and time.monotonic() < end:
                    if self.mode == "slowbody":
                        w.write(b"x")
                    try:
                        data = await asyncio.wait_for(r.read(4096), self.drip_s)
                    except TimeoutError:
                        continue
                    if not data:
                        self.answers["closed"] += 1
                        break
                    self.answers[data[9:12].decode("latin-1")] += 1
            except OSError:
                self.answers["reset"] += 1
            finally:
                w.close()
            await asyncio.sleep(self.reconnect_s)  # 0: reconnect at once, as the attacker did


def legit_tries(port: int, path: str = "/", tries: int = 20, ctx: ssl.SSLContext | None = None,
                pause_s: float = 0.1, timeout_s: float = 5.0, think_s: float = 0.0) -> Counter[str]:
    """`tries` requests, one connection each, from 127.0.0.1; the status codes (or the error).
    `think_s`: wait that long between connecting (and the TLS handshake) and sending, as a
    client on a slow link does."""
    out: Counter[str] = Counter()
    for _ in range(tries):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as raw:
                sock: socket.socket = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
                time.sleep(think_s)
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                line = b""
                with contextlib.suppress(OSError):
                    while b"\r\n" not in line and (chunk := sock.recv(4096)):
                        line += chunk
                out[line[9:12].decode("latin-1") if line.startswith(b"HTTP/1.1 ") else "EOF"] += 1
        except (OSError, ssl.SSLError) as e:
            out[type(e).__name__] += 1
        time.sleep(pause_s)
    return out
