"""The shared HTTP transport (scanner/httpserve.py) against raw sockets on 127.0.0.1: malformed
requests get a 4xx and one log line, the whole-request deadline beats slowloris, idle
connections (plain and TLS, handshake never started) cannot lock out a real request, and the
caps answer 503 instead of blocking."""

from __future__ import annotations

import contextlib
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
    (b"GET /a HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(3000)) + b"\r\n", 431),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),  # past what Tornado reads of a head
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd", 400),  # GET takes no body
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
    assert "server=t client=127.0.0.1" in lines[0].getMessage()
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


# -- hostile clients from several addresses (tests/slowclients.py) ------------------------------

STAFF_LIKE = {"max_connections": 64, "max_per_client": 16, "max_busy": 4, "workers": 2}


def test_slow_bodies_from_four_addresses_leave_the_server_to_others(serve: Any) -> None:
    """F1: 4 addresses x 16 connections each send a POST head with Content-Length: 4000, then
    one body byte every 0.5 s, and reconnect when closed; another client still gets its page."""
    from slowclients import Flood, legit_tries

    s = serve(**STAFF_LIKE)
    with Flood(s.port, 4, 16, "slowbody", path="/a") as flood:
        assert flood.wait_open(64)
        got = legit_tries(s.port, "/ok", tries=20)
    assert got["200"] >= 18, (got, s.stats)


@pytest.mark.parametrize(("tls", "addresses", "think_s", "reconnect_s"),
                         [(True, 5, 0.0, 0.0), (True, 5, 0.2, 0.01), (False, 12, 0.2, 0.01)])
def test_reconnecting_idle_connections_do_not_evict_a_handshake(serve: Any, tmp_path: Path, tls: bool,
                                                                addresses: int, think_s: float,
                                                                reconnect_s: float) -> None:
    """F2: 16 silent connections from each of several addresses, reopened as soon as they are
    closed (the first case exactly as found); a client from another address, mid-handshake or
    still to send its request (`think_s`, a slow link), is not the one evicted."""
    from slowclients import Flood, legit_tries

    ctx = cctx = None
    if tls:
        cert = self_signed(tmp_path)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, tmp_path / "k.pem")
        cctx = ssl.create_default_context(cafile=str(cert))
    s = serve(ctx, **STAFF_LIKE)
    with Flood(s.port, addresses, 16, "idle", reconnect_s=reconnect_s) as flood:
        assert flood.wait_open(64)
        got = legit_tries(s.port, "/ok", tries=20, ctx=cctx, think_s=think_s)
    assert got["200"] >= 18, (got, s.stats)


def test_slow_bodies_are_evicted_even_without_a_body_deadline(serve: Any) -> None:
    """F1, the eviction half alone: with the body deadline out of the way (30 s, a minimum rate
    of 1 byte/s), connections still receiving their body make room for another client."""
    from slowclients import Flood, legit_tries

    s = serve(**STAFF_LIKE, request_timeout_s=30.0, min_body_rate=1.0)
    with Flood(s.port, 4, 16, "slowbody", path="/a") as flood:
        assert flood.wait_open(64)
        got = legit_tries(s.port, "/ok", tries=20)
    assert got["200"] >= 18 and s.stats["evicted"] >= 18, (got, s.stats)


@pytest.mark.parametrize(("length", "most_bytes"), [(20, 20), (4000, 40)])
def test_a_body_must_arrive_at_a_minimum_rate(serve: Any, length: int, most_bytes: int) -> None:
    """F1, the deadline half: a body of n bytes has body_grace_s + n / min_body_rate (here 1 s +
    n / 2048 s) from the end of the headers, not the whole request deadline (30 s here). One
    byte every 0.2 s: 408 after about 6 (20-byte body) or 15 (4000) bytes, where the 20-byte
    body would otherwise be complete (200) and the 4000-byte one wait 30 s (150 bytes)."""
    s = serve(request_timeout_s=30.0)
    sent = 0
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length)
        c.settimeout(0.2)
        reply = b""
        for _ in range(min(length, 50)):  # bounded: 10 s at most
            try:
                reply = c.recv(4096)
                break
            except TimeoutError:
                with contextlib.suppress(OSError):
                    c.sendall(b"x")
                    sent += 1
    assert status(reply) == 408 and b"did not arrive" in reply and sent < most_bytes, (sent, reply[:200])
    fast = requests.post(f"http://127.0.0.1:{s.port}/a", data=b"x" * 4000, timeout=5)  # all at once: served
    assert fast.status_code == 200 and fast.json()["body"] == 4000


def test_before_body_refuses_on_the_headers_alone(tmp_path: Path) -> None:
    """The request logic's header checks (token, session) answer before any body byte is sent."""
    seen: list[Request] = []

    def gate(req: Request) -> Response | None:
        seen.append(req)
        return None if req.headers.get("Authorization") == "Bearer ok" else Response.json(401, {"error": "token"})

    s = HttpServer("t", app, "127.0.0.1", 0, limits=Limits(request_timeout_s=30.0), before_body=gate).start()
    try:
        raw = exchange(s.port, b"POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n", wait_s=5)
        assert status(raw) == 401 and raw.endswith(b'{"error":"token"}')  # no body sent, no 30 s wait
        ok = requests.post(f"http://127.0.0.1:{s.port}/ack", data=b"{}", headers={"Authorization": "Bearer ok"},
                           timeout=5)
        assert ok.status_code == 200 and seen[0].body == b"" and s.stats["early"] == 1
    finally:
        s.stop()


def test_absolute_form_targets_are_routed_by_their_path(serve: Any) -> None:
    """RFC 9112 3.2.2: a server MUST accept the absolute-form; its host replaces Host."""
    s = serve()
    raw = exchange(s.port, b"GET http://gate.example:8787/api/v1/records?limit=1 HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n", wait_s=5)
    assert status(raw) == 200 and b'"path":"/api/v1/records"' in raw
    assert httpmsg.parse_target("HTTP://h:1?q=1") == ("/", "q=1", "h:1")
    assert httpmsg.parse_target("/p?a=b?c") == ("/p", "a=b?c", "")
    assert httpmsg.parse_target("*") == ("*", "", "")
    assert httpmsg.parse_target("ftp://h/p") == ("ftp://h/p", "", "")  # not ours: no route matches (404)
    req = Request("GET", "/", "", {"Host": "evil"}, b"", "c", "https", "gate:8080")
    assert req.origin == "https://gate:8080"


class _C:
    def __init__(self, client: str, opened: float, last: float | None = None, busy: bool = False) -> None:
        self.client, self.opened, self.last_active, self.busy = client, opened, opened if last is None else last, busy


def test_eviction_takes_from_the_biggest_holder_and_spares_the_young() -> None:
    from scanner.httpadmit import ConnTable

    t = ConnTable(young_s=2.0)
    legit = _C("10.0.0.1", 0.0)
    hog = [_C("10.0.0.9", 5.0 + i) for i in range(4)]
    small = [_C("10.0.0.5", 1.0), _C("10.0.0.5", 1.5)]
    for c in (legit, *small, *hog):
        t.add(c)
    free = lambda c: "busy" if c.busy else "quiet"  # noqa: E731
    assert t.victim("10.0.0.7", 10.0, free) is hog[0]  # the biggest holder, its oldest
    hog[0].busy = True
    assert t.victim("10.0.0.7", 10.0, free) is hog[1]  # being served: never
    # the newcomer counts with its own address: 2 + 1 > the others' 2 once the hog is smaller
    for c in hog[:3]:
        t.forget(c)
    assert t.victim("10.0.0.5", 10.0, free) is small[0]
    # equal holders: one older than young_s first, though less recently active
    young = _C("10.0.0.6", 9.5, last=9.5)
    t.add(young)
    assert t.victim("10.0.0.8", 9.9, free) in small  # 10.0.0.5 holds 2
    t.forget(small[0])  # now 10.0.0.1, .5, .6, .9 hold one each; hog[3] (opened 8.0) and young are young
    assert t.victim("10.0.0.8", 9.9, free) is legit  # the oldest of the old goes first
    assert t.victim("10.0.0.8", 9.9, lambda c: "quiet" if c in (young, hog[3]) else "busy") is hog[3]  # young, LRU
    assert t.victim("10.0.0.9", 9.9, free, own=True) is hog[3] and t.victim("10.0.0.2", 9.9, free, own=True) is None
    # a request just arrived: taken only from an address holding more than the newcomer's would
    arriving = lambda c: "arriving"  # noqa: E731
    assert t.victim("10.0.0.8", 9.9, arriving) is None  # all hold 1, the newcomer's would hold 1
    t.add(_C("10.0.0.9", 9.8))
    assert t.victim("10.0.0.8", 9.9, arriving) is hog[3]  # 10.0.0.9 holds 2 > 1
    assert t.victim("10.0.0.9", 9.9, arriving) is None and t.victim("10.0.0.9", 9.9, arriving, own=True) is None
    # a newcomer from the biggest holder never displaces a smaller one, even a quiet old one: 503
    assert t.victim("10.0.0.9", 9.9, lambda c: "busy" if c.client == "10.0.0.9" else "quiet") is None
