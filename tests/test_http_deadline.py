"""The whole-request deadline (scanner/sync/httpbody.py) against a real loopback server that
drips its answer: the pull client, the push uploader and the trust fetch all give up at the
deadline instead of reading for as long as the server keeps sending a byte per read timeout.

No assertion on wall time: each case has a deadline of 1 s and a body that takes 18 s to drip,
so only a deadline error (the right type and message) can end it; a broken deadline shows as
a returned body or a different error. The server stops dripping when its client hangs up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from scanner.errors import ScannerError
from scanner.sync import httpbody
from scanner.sync.pull import PullClient

BODY = json.dumps({"records": [], "next_cursor": "c1", "has_more": False}, separators=(",", ":")).encode()
BODY += b" " * (60 - len(BODY))  # 60 bytes of valid JSON: returned whole, it would parse
DRIP_S = 0.3


class Dripper(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stop: threading.Event
    chunked = False

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        try:
            for i in range(len(BODY)):
                if self.stop.wait(DRIP_S):
                    return
                piece = BODY[i:i + 1]
                self.wfile.write(b"1\r\n" + piece + b"\r\n" if self.chunked else piece)
                self.wfile.flush()
            if self.chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return  # the client hung up: that is the point

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[False, True], ids=["content-length", "chunked"])
def dripping(request: pytest.FixtureRequest) -> Iterator[str]:
    stop = threading.Event()
    handler = type("H", (Dripper,), {"stop": stop, "chunked": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


def test_the_body_is_60_bytes() -> None:
    assert len(BODY) == 60  # 18 s at one byte per 0.3 s: far past the 1 s deadline


def test_pull_fails_at_the_deadline_against_a_dripping_device(dripping: str, tmp_path: Path) -> None:
    progress: list[str] = []
    client = PullClient(dripping, "token", tmp_path / "out.jsonl", timeout=(1.0, 1.0), deadline_s=1.0,
                        max_attempts=2, progress=progress.append, sleep=lambda s: None)
    with pytest.raises(ScannerError) as e:
        client.run()
    assert "within the 1 s deadline" in str(e.value) and "after 2 attempts" in str(e.value)
    assert all("deadline" in p for p in progress) and len(progress) == 1  # no wait after the last attempt
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-read was written


def test_read_body_raises_deadline_exceeded_with_what_arrived(dripping: str) -> None:
    with requests.Session() as s:
        start = time.monotonic()
        r = s.get(dripping, stream=True, timeout=(1.0, 1.0))
        with pytest.raises(httpbody.DeadlineExceeded) as e:
            httpbody.read_body(r, deadline=start + 1.0, limit=1 << 20)
    assert isinstance(e.value, requests.exceptions.Timeout)  # callers' existing handlers apply
    assert BODY.startswith(e.value.partial) and len(e.value.partial) < len(BODY)


def test_the_uploader_counts_a_dripping_server_as_a_timeout(dripping: str, tmp_path: Path) -> None:
    from dataclasses import replace

    from scanner.config import UploadSection
    from scanner.sync.uploader import SyncState, Uploader

    cfg = replace(UploadSection(), connect_timeout_s=1.0, read_timeout_s=1.0, attempt_deadline_s=1.0)
    up = Uploader(cfg, dripping + "/api/v1/records", "token", str(tmp_path / "none.db"), ("d", "c"),
                  threading.Event(), SyncState())
    with pytest.raises(requests.exceptions.Timeout):
        up._post([{"record_id": "r1", "seq": 1}])


def test_the_trust_fetch_gives_its_deadline_message(dripping: str) -> None:
    from scanner.sync.fetch import FetchError, Http

    http = Http(connect_timeout_s=1.0, read_timeout_s=1.0, download_timeout_s=1.0)
    try:
        with pytest.raises(FetchError) as e:
            http.post_json(dripping, {"a": 1}, "online check", budget_s=1.0)
    finally:
        http.close()
    assert "took longer than 1 s" in str(e.value)


def test_a_body_over_the_cap_is_refused(dripping: str) -> None:
    """Declared too large: at once; chunked: once 3 bytes arrived (about 0.9 s of dripping)."""
    with requests.Session() as s:
        r = s.get(dripping, stream=True, timeout=(1.0, 1.0))
        with pytest.raises(httpbody.BodyTooLarge):
            httpbody.read_body(r, deadline=time.monotonic() + 30, limit=2)


# -- the header phase (attacker F4): before requests returns a response at all --------------

class RawDripper:
    """A loopback socket server that never finishes its headers: `hdrdrip` sends
    `HTTP/1.1 200 OK\\r\\nX-A: ` and then one byte every 50 ms, `100cont` sends an interim
    `HTTP/1.1 100 Continue` every 0.5 s (http.client skips those in a loop). Each drips for
    up to 60 s, or until the client hangs up."""

    def __init__(self, mode: str) -> None:
        import socket

        self.mode = mode
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(c,), daemon=True).start()

    def _drip(self, c: Any) -> None:
        end = time.monotonic() + 60
        try:
            c.recv(65536)
            if self.mode == "hdrdrip":
                c.sendall(b"HTTP/1.1 200 OK\r\nX-A: ")
            while time.monotonic() < end and not self.stop.is_set():
                if self.mode == "hdrdrip":
                    c.sendall(b"b")
                    self.stop.wait(0.05)
                else:
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.stop.wait(0.5)
        except OSError:
            pass  # the client hung up: that is the point
        finally:
            c.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(params=["hdrdrip", "100cont"])
def header_drip(request: pytest.FixtureRequest) -> Iterator[str]:
    srv = RawDripper(request.param)
    try:
        yield srv.url
    finally:
        srv.close()


def test_pull_fails_at_the_deadline_while_headers_drip(header_drip: str, tmp_path: Path) -> None:
    """Attacker input: both modes hung `checkpoint-scanner pull` forever (only the body had a
    deadline). The 60 s drip outlasts the 1 s deadline many times over: only the deadline ends it."""
    progress: list[str] = []
    client = PullClient(header_drip, "token", tmp_path / "out.jsonl", timeout=(1.0, 1.0), deadline_s=1.0,
                        max_attempts=2, progress=progress.append, sleep=lambda s: None)
    with pytest.raises(ScannerError) as e:
        client.run()
    assert "within the 1 s deadline" in str(e.value) and "after 2 attempts" in str(e.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_the_uploader_times_out_while_headers_drip(header_drip: str, tmp_path: Path) -> None:
    from dataclasses import replace

    from scanner.config import UploadSection
    from scanner.sync.uploader import SyncState, Uploader

    cfg = replace(UploadSection(), connect_timeout_s=1.0, read_timeout_s=1.0, attempt_deadline_s=1.0)
    up = Uploader(cfg, header_drip + "/api/v1/records", "token", str(tmp_path / "none.db"), ("d", "c"),
                  threading.Event(), SyncState())
    with pytest.raises(httpbody.DeadlineExceeded):
        up._post([{"record_id": "r1", "seq": 1}])


def test_the_trust_fetch_times_out_while_headers_drip(header_drip: str) -> None:
    from scanner.sync.fetch import FetchError, Http

    http = Http(connect_timeout_s=1.0, read_timeout_s=1.0, download_timeout_s=1.0)
    try:
        with pytest.raises(FetchError) as e:
            http.get(header_drip + "/trust-list.cose", "trust list", accept=["application/cose"])
        assert "took longer than 1 s" in str(e.value)
        with pytest.raises(FetchError) as e:
            http.post_json(header_drip, {"a": 1}, "online check", budget_s=1.0)
        assert "took longer than 1 s" in str(e.value)
    finally:
        http.close()


def test_retries_end_within_the_overall_budget(tmp_path: Path) -> None:
    """Every attempt failing fast (nothing listens): the waits between them stop at the budget,
    not after max_attempts full back-offs. A fake clock that the waits advance."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: each attempt is refused at once
    now = [0.0]
    waits: list[float] = []

    def sleep(w: float) -> None:
        waits.append(w)
        now[0] += w

    client = PullClient(f"http://127.0.0.1:{port}", "token", tmp_path / "out.jsonl", max_attempts=50,
                        retry_budget_s=20.0, progress=lambda _s: None, sleep=sleep, clock=lambda: now[0])
    client.rng.seed(1)
    with pytest.raises(ScannerError, match="in 20 s at most"):
        client.run()
    assert sum(waits) <= 20.0 and len(waits) < 49


def test_a_connection_is_reused_under_the_deadline_adapter() -> None:
    """The watched connection classes keep urllib3's pooling: two requests, one TCP connection."""
    from http.server import BaseHTTPRequestHandler as Base

    from scanner.sync import deadline

    peers: list[tuple[str, int]] = []

    class Ok(Base):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            peers.append(self.client_address)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        with deadline.mount(requests.Session()) as sess:
            for _ in range(2):
                with deadline.guarded(time.monotonic() + 10):
                    r = sess.get(f"http://127.0.0.1:{server.server_address[1]}/", stream=True, timeout=5)
                    assert httpbody.read_body(r, deadline=time.monotonic() + 10, limit=10) == b"ok"
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)
    assert len(peers) == 2 and peers[0] == peers[1]


# -- deeply nested JSON (attacker F5) ------------------------------------------------------

def test_deeply_nested_json_is_a_decode_error_not_a_recursion_error() -> None:
    import json

    from scanner.numbers import TooDeepJSONError, loads_json

    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(TooDeepJSONError) as e:
        loads_json(deep)
    assert isinstance(e.value, json.JSONDecodeError) and isinstance(e.value, ValueError)
    assert loads_json(b"[" * 50 + b"]" * 50) == eval("[" * 50 + "]" * 50)  # ordinary nesting still parses


class DeepJson(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    BODY = b"[" * 100000 + b"]" * 100000

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def deep_json() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DeepJson)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


def test_pull_uploader_and_online_check_refuse_deep_json_in_one_line(deep_json: str, tmp_path: Path) -> None:
    """Attacker input: `[`x100000 `]`x100000 crashed pull with a RecursionError traceback."""
    from dataclasses import replace

    from scanner.config import UploadSection
    from scanner.sync.fetch import FetchError, Http
    from scanner.sync.uploader import SyncState, Uploader

    client = PullClient(deep_json, "token", tmp_path / "out.jsonl", max_attempts=1, progress=lambda _s: None)
    with pytest.raises(ScannerError, match="not JSON; fix:"):
        client.run()
    up = Uploader(replace(UploadSection()), deep_json + "/api/v1/records", "token", str(tmp_path / "none.db"),
                  ("d", "c"), threading.Event(), SyncState())
    assert up._on_results([{"record_id": "r1", "seq": 1}], DeepJson.BODY) > 0  # a bad answer: back off, retry
    assert up.state.failures == {"bad_response": 1}
    http = Http(download_timeout_s=10.0)
    try:
        with pytest.raises(FetchError, match="answer is not JSON"):
            http.post_json(deep_json, {"a": 1}, "online check", budget_s=10.0, max_body_bytes=1 << 20)
    finally:
        http.close()
