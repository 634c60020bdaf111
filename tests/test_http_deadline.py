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
    assert all("deadline" in p for p in progress) and len(progress) == 2
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
