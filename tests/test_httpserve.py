"""The shared HTTP transport (scanner/httpserve.py) against raw sockets on 127.0.0.1: malformed
requests get a 4xx and one log line, the whole-request deadline beats slowloris, idle
connections (plain and TLS, handshake never started) cannot lock out a real request, and the
caps answer 503 instead of blocking."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scanner import httpmsg
from scanner.httpserve import HttpServer, Limits, Request, Response, json_body

GATE = threading.Event()


def app(req: Request) -> Response:
    if req.path == "/block":
        GATE.wait(10)
    return Response.json(200, {"path": req.path, "body": len(req.body)})


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[HttpServer] = []

    def make(ctx: ssl.SSLContext | None = None, **limits: Any) -> HttpServer:
        s = HttpServer("t", app, "127.0.0.1", 0, ssl_context=ctx, limits=Limits(**limits)).start()
        servers.append(s)
        return s

    GATE.clear()
    yield make
    GATE.set()
    for s in servers:
        s.stop()


def exchange(port: int, data: bytes, wait_s: float = 8.0) -> bytes:
    """Send `data`, read until the server closes (or `wait_s`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as c:
        c.sendall(data)
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def http_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("scanner.http", "tornado"))]


@pytest.mark.parametrize(("request_bytes", "code"), [
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort", 408),  # shorter than its length
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n", 411),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", 408),  # headers never finished
])
def test_malformed_requests_get_a_4xx_and_one_log_line(serve: Any, caplog: pytest.LogCaptureFixture,
                                                       request_bytes: bytes, code: int) -> None:
    caplog.set_level(logging.INFO)
    s = serve(request_timeout_s=1.0)
    raw = exchange(s.port, request_bytes)
    assert status(raw) == code, raw[:200]
    lines = http_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith("event=http_") and not lines[0].exc_info
    assert "Traceback" not in caplog.text


def test_deadline_covers_the_whole_request_not_each_read(serve: Any) -> None:
    """Slowloris: a header line every 0.3 s keeps every single read short; the request as a
    whole still has 1 s, then 408, and a real request on another connection is served."""
    s = serve(request_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            for i in range(30):  # bounded: 9 s at most
                time.sleep(0.3)
                c.sendall(b"X-%d: y\r\n" % i)
                sent += 1
        except OSError:
            pass  # the server closed the connection
        reply = b""
        try:
            while chunk := c.recv(4096):
                reply += chunk
        except OSError:
            pass
    assert sent < 30 and status(reply) == 408, (sent, reply[:100])
    assert requests.get(f"http://127.0.0.1:{s.port}/ok", timeout=5).status_code == 200


def test_idle_connections_never_lock_out_a_real_request(serve: Any) -> None:
    s = serve(max_connections=8, max_per_client=8, request_timeout_s=30.0)  # the deadline cannot help here
    idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(60)]
    try:
        r = requests.get(f"http://127.0.0.1:{s.port}/ok", timeout=5)
        assert r.status_code == 200
        assert s.open_connections <= 8 and s.stats["evicted"] >= 50
    finally:
        for c in idle:
            c.close()


def test_keep_alive_connection_closed_quietly_after_the_deadline(serve: Any) -> None:
    s = serve(request_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        first = c.recv(4096)
        rest = b""
        while chunk := c.recv(4096):
            rest += chunk
    assert status(first) == 200 and rest == b""  # no unsolicited 408 on a kept-alive connection
    assert s.stats["idle_closed"] == 1


def test_every_connection_busy_means_503_not_a_wait(serve: Any) -> None:
    s = serve(max_connections=8, max_per_client=8, max_busy=8, workers=8)
    socks = []
    for _ in range(8):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(c)
    try:
        assert _wait(lambda: s.busy == 8)
        raw = exchange(s.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", wait_s=5)
        assert status(raw) == 503 and b"Retry-After: 1" in raw
    finally:
        GATE.set()
        for c in socks:
            c.close()


def test_handler_pool_limits_and_deadline(serve: Any) -> None:
    s = serve(max_busy=2, workers=2, handler_timeout_s=0.5)
    first = [threading.Thread(target=exchange, args=(s.port, b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n", 5))
             for _ in range(2)]
    for t in first:
        t.start()
    assert _wait(lambda: s.busy == 2)
    raw = exchange(s.port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait_s=5)
    assert status(raw) == 503  # both workers are stuck (a stalled SD card): answered, not queued
    for t in first:
        t.join(10)
    assert s.stats["handler_timeouts"] == 2  # the stuck ones were answered 503 after 0.5 s
    GATE.set()
    assert _wait(lambda: s.busy == 0)
    assert requests.get(f"http://127.0.0.1:{s.port}/ok", timeout=5).status_code == 200


def test_idle_tls_connections_do_not_freeze_the_server(serve: Any, tmp_path: Path) -> None:
    """Issue 11.2: connections that never start the TLS handshake (17 froze the old server)."""
    cert = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, tmp_path / "k.pem")
    s = serve(ctx, max_connections=16, max_per_client=16, request_timeout_s=30.0)
    idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(40)]
    try:
        for _ in range(3):
            r = requests.get(f"https://127.0.0.1:{s.port}/ok", verify=str(cert), timeout=5)
            assert r.status_code == 200
        assert s.open_connections <= 16
    finally:
        for c in idle:
            c.close()


def test_log_lines_are_rate_limited(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s = serve()
    for _ in range(40):
        assert status(exchange(s.port, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n")) == 400
    assert len(http_lines(caplog)) == 20 and s.stats["bad_requests"] == 40


def test_connection_caps_stay_below_half_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(httpmsg.resource, "getrlimit", lambda _r: (200, 4096))
    a = HttpServer("a", app, "127.0.0.1", 0, limits=Limits(max_connections=80))
    b = HttpServer("b", app, "127.0.0.1", 0, limits=Limits(max_connections=80))
    try:
        a.bind()
        b.bind()
        assert a.max_connections == 80 and b.max_connections == 20  # 100 of 200 for both servers
        assert "event=http_connections_capped server=b" in caplog.text and "LimitNOFILE" in caplog.text
    finally:
        a.stop()
        b.stop()


def test_json_body_refuses_deep_nesting_and_bad_bytes() -> None:
    assert json_body(b'{"cursor": "a.1"}') == {"cursor": "a.1"}
    for bad in (b"[" * 4096, b"\xff\xfe", b"{", b""):
        with pytest.raises(ValueError):
            json_body(bad)


def self_signed(tmp_path: Path) -> Path:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return tmp_path / "c.pem"


def _wait(cond: Any, timeout_s: float = 8.0) -> bool:
    from waiting import wait_until

    return wait_until(cond, timeout_s)


def test_a_socket_with_unread_bytes_is_not_idle() -> None:
    """What keeps a just-arrived request from being evicted: FIONREAD on the socket."""
    a, b = socket.socketpair()
    try:
        assert httpmsg.unread_bytes(a) == 0
        b.sendall(b"GET / HTTP/1.1\r\n")
        assert _wait(lambda: httpmsg.unread_bytes(a) == 16)
    finally:
        a.close()
        b.close()
    assert httpmsg.unread_bytes(a) == 0  # closed: nothing to protect
