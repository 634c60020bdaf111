"""The staff page's defences, over real HTTP on 127.0.0.1 with a stand-in lane: CSRF (token,
Origin, JSON only), the global PIN limit (300 addresses), override validation before anything
is logged, Secure cookies with TLS, and a state endpoint that never waits for the outbox."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from test_httpserve import self_signed

from scanner.logs import JsonFormatter, TextFormatter
from scanner.staff import Refreshed, StaffServer
from scanner.staff_auth import GLOBAL_FAILURES, GLOBAL_WINDOW_S, LOCKOUT_AFTER

PIN = "246810"
RECORD = "0190c2a1f4e37b6d9a1c2e3f4a5b6c7d"


class FakeLane:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.monitor = self

    def snapshot(self) -> dict[str, Any]:
        return {"state": "READY", "health": {}, "pending_reviews": [], "recent": [], "counts": {}}

    def request_override(self, verdict: str, staff_id: str, record_id: str) -> dict[str, Any]:
        self.calls.append((verdict, staff_id, record_id))
        return {"ok": True, "message": "已记录 recorded"}


class Page:
    def __init__(self, tls_dir: Path | None = None, extra_health: Any = dict) -> None:
        self.lane = FakeLane()
        self.now = [1000.0]
        ctx = None
        self.verify: Any = False
        if tls_dir is not None:
            cert = self_signed(tls_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, tls_dir / "k.pem")
            self.verify = str(cert)
        self.srv = StaffServer(self.lane, PIN, "127.0.0.1", 0, extra_health=extra_health,
                               monotonic=lambda: self.now[0], ssl_context=ctx).start()
        self.base = f"{'https' if ctx else 'http'}://127.0.0.1:{self.srv.port}"
        self.s = requests.Session()

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 5)
        if body is not None:
            kw["data"] = json.dumps(body)
            kw.setdefault("headers", {}).setdefault("Content-Type", "application/json")
        return self.s.post(self.base + path, verify=self.verify, **kw)

    def login(self) -> str:
        r = self.post("/api/login", {"pin": PIN})
        assert r.status_code == 200, r.text
        return str(r.json()["csrf"])


@pytest.fixture
def page() -> Iterator[Page]:
    p = Page()
    yield p
    p.srv.stop()


def order(**kw: Any) -> dict[str, Any]:
    return {"verdict": "PASS", "staff_id": "S042", "record_id": RECORD, **kw}


def test_override_needs_the_csrf_token_same_origin_and_json(page: Page) -> None:
    csrf = page.login()
    own = page.base
    token = {"X-CSRF-Token": csrf}
    assert page.post("/api/override", order()).status_code == 403  # no token
    assert page.post("/api/override", order(), headers={"X-CSRF-Token": "guess"}).status_code == 403
    other_port = own.rsplit(":", 1)[0] + ":8081"
    assert page.post("/api/override", order(), headers={**token, "Origin": other_port}).status_code == 403
    assert page.post("/api/override", order(), headers={**token, "Origin": "null"}).status_code == 403
    assert page.post("/api/override", order(), headers={**token, "Sec-Fetch-Site": "same-site"}).status_code == 403
    form = page.post("/api/override", data="verdict=PASS&staff_id=S1&record_id=" + RECORD,
                     headers={**token, "Content-Type": "application/x-www-form-urlencoded"})
    plain = page.post("/api/override", data=json.dumps(order()), headers={**token, "Content-Type": "text/plain"})
    assert form.status_code == 415 and plain.status_code == 415
    assert page.lane.calls == []
    ok = page.post("/api/override", order(), headers={**token, "Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and page.lane.calls == [("PASS", "S042", RECORD)]
    # login itself: JSON only and same origin
    assert page.post("/api/login", data="pin=" + PIN, headers={"Content-Type": "text/plain"}).status_code == 415
    assert page.post("/api/login", {"pin": PIN}, headers={"Origin": other_port}).status_code == 403


@pytest.mark.parametrize(("body", "message"), [
    ({"verdict": "PASS", "staff_id": "S1"}, "record_id required"),
    (order(record_id=""), "record_id required"),
    (order(record_id="x\ny"), "record_id malformed"),
    (order(verdict="MAYBE"), "verdict must be PASS or DENY"),
    (order(verdict="PASS\nevent=x"), "verdict must be PASS or DENY"),
    (order(staff_id="x\nevent=forged verdict=PASS"), "staff id"),
    (order(staff_id="S" * 33), "staff id"),
    (order(staff_id=""), "staff id"),
    (order(staff_id=["S1"]), "staff id"),
])
def test_override_is_validated_before_the_lane_or_the_log(page: Page, caplog: pytest.LogCaptureFixture,
                                                          body: dict[str, Any], message: str) -> None:
    csrf = page.login()
    caplog.clear()
    caplog.set_level(logging.INFO)
    r = page.post("/api/override", body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400 and message in r.json()["message"]
    assert page.lane.calls == []
    assert "forged" not in caplog.text and "event=x" not in caplog.text


def test_chinese_staff_ids_are_accepted_and_ids_bounded(page: Page) -> None:
    csrf = page.login()
    r = page.post("/api/override", order(staff_id=" 张三-07 ", verdict="DENY"), headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and page.lane.calls == [("DENY", "张三-07", RECORD)]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_forged_staff_id_cannot_forge_a_log_line(fmt: str, page: Page) -> None:
    """Issue 11.8 end to end: whatever the body holds, each log line stays one event."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("scanner")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        csrf = page.login()
        for staff in ("x\nevent=forged verdict=PASS", 'a" event=forged x="', "ok\r\nevent=forged"):
            page.post("/api/override", order(staff_id=staff), headers={"X-CSRF-Token": csrf})
        page.post("/api/login", {"pin": "x\nevent=forged"})
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert any("staff_override_refused" in x for x in lines)
    assert "forged" not in out.getvalue()  # refused before logging; tests/test_logs.py covers the escaping
    if fmt == "json":
        assert all(json.loads(x)["event"].startswith("staff_") for x in lines)


def test_global_pin_limit_across_300_addresses() -> None:
    """Issue 11.7: 300 guesses from 300 addresses; at most GLOBAL_FAILURES are checked."""
    page = Page()
    try:
        codes = []
        for i in range(300):
            source = f"127.0.{1 + i // 250}.{1 + i % 250}"
            conn = http.client.HTTPConnection("127.0.0.1", page.srv.port, timeout=5, source_address=(source, 0))
            conn.request("POST", "/api/login", body=json.dumps({"pin": f"{i:06d}"}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            codes.append((resp.status, resp.getheader("Retry-After")))
            resp.read()
            conn.close()
        assert sum(1 for c, _ in codes if c == 401) == GLOBAL_FAILURES
        assert all(c == 429 and int(ra or 0) >= 1 for c, ra in codes[GLOBAL_FAILURES:])
        # the right PIN from a fresh address is refused too while the global lockout lasts
        assert page.post("/api/login", {"pin": PIN}).status_code == 429
        page.now[0] += GLOBAL_WINDOW_S + 1
        assert page.post("/api/login", {"pin": PIN}).status_code == 200
    finally:
        page.srv.stop()


def test_per_address_lockout_still_applies(page: Page) -> None:
    for _ in range(LOCKOUT_AFTER):
        assert page.post("/api/login", {"pin": "000000"}).status_code == 401
    r = page.post("/api/login", {"pin": PIN})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_tls_page_sets_a_secure_cookie(tmp_path: Path) -> None:
    page = Page(tls_dir=tmp_path)
    try:
        r = page.post("/api/login", {"pin": PIN})
        assert r.status_code == 200 and "Secure" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
        assert page.s.get(page.base + "/api/state", verify=page.verify, timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(page.base.replace("https", "http") + "/", timeout=5)  # no plain HTTP on that port
    finally:
        page.srv.stop()


def test_malformed_bodies_get_400_not_a_traceback(page: Page, caplog: pytest.LogCaptureFixture) -> None:
    csrf = page.login()
    assert page.post("/api/login", data="[" * 4000, headers={"Content-Type": "application/json"}).status_code == 400
    r = page.post("/api/override", data="[" * 4000, headers={"Content-Type": "application/json",
                                                               "X-CSRF-Token": csrf})
    assert r.status_code == 400 and "Traceback" not in caplog.text


def test_state_never_waits_for_a_stalled_outbox() -> None:
    """Issue 10 on the staff page: the queue figures come from a thread of their own; a stuck
    read leaves the page answering with the last figures, flagged stale."""
    stuck = threading.Event()
    release = threading.Event()
    calls = [0]
    now = [0.0]

    def queue_health() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] > 1:
            stuck.set()
            release.wait(10)
        return {"queue_depth": 3}

    cached = Refreshed(queue_health, every_s=0.01, stale_after_s=10.0, monotonic=lambda: now[0]).start()
    page = Page(extra_health=cached.get)
    try:
        assert stuck.wait(5)  # the second read hangs (a stalled SD card)
        csrf = page.login()
        r = page.s.get(page.base + "/api/state", timeout=5)
        assert r.status_code == 200 and r.json()["health"]["queue_depth"] == 3 and r.json()["csrf"] == csrf
        assert "stale_s" not in r.json()["health"]
        now[0] += 30
        assert page.s.get(page.base + "/api/state", timeout=5).json()["health"]["stale_s"] == 30
    finally:
        release.set()
        cached.stop()
        page.srv.stop()


def test_logout_ends_the_session(page: Page) -> None:
    csrf = page.login()
    assert page.post("/api/logout", {}, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert page.s.get(page.base + "/api/state", timeout=5).status_code == 401


def test_the_page_carries_the_csrf_token_only_with_a_session(page: Page) -> None:
    assert 'content=""' in page.s.get(page.base + "/", timeout=5).text
    csrf = page.login()
    html = page.s.get(page.base + "/", timeout=5)
    assert f'content="{csrf}"' in html.text and html.headers["X-Frame-Options"] == "DENY"


def _head_only(port: int, path: str, headers: str = "") -> bytes:
    """A POST head announcing a 4000-byte body that never comes; what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=8) as c:
        c.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 4000\r\n{headers}\r\n".encode())
        out = b""
        with contextlib.suppress(OSError):
            while chunk := c.recv(4096):
                out += chunk
        return out


def test_header_checks_answer_before_any_body_byte(page: Page) -> None:
    """F1: session, CSRF token, Origin, JSON and the PIN lockout are checked on the headers; a
    refused client is answered at once, never waits out a body deadline (which answers 408)."""
    csrf = page.login()
    cookie = f"Cookie: cs_session={page.s.cookies['cs_session']}\r\n"
    json_ct = "Content-Type: application/json\r\n"
    port = page.srv.port
    cases = [("/api/override", json_ct, b"401"),
             ("/api/override", json_ct + cookie + "X-CSRF-Token: guess\r\n", b"403"),
             ("/api/override", json_ct + cookie + f"X-CSRF-Token: {csrf}\r\nOrigin: http://evil.example\r\n", b"403"),
             ("/api/login", "Content-Type: text/plain\r\n", b"415"),
             ("/api/nope", json_ct, b"404")]
    for path, headers, code in cases:
        raw = _head_only(port, path, headers)
        assert raw.startswith(b"HTTP/1.1 " + code) and b"X-Frame-Options: DENY" in raw, (path, raw[:120])
    for _ in range(LOCKOUT_AFTER):
        page.post("/api/login", {"pin": "000000"})
    assert _head_only(port, "/api/login", json_ct).startswith(b"HTTP/1.1 429")
    assert page.lane.calls == [] and page.srv.http.stats["early"] == 6


def test_slow_login_bodies_from_four_addresses_leave_the_page_up(page: Page) -> None:
    """F1 as found: 4 addresses x 16 connections POST /api/login with Content-Length: 4000, then
    one byte every 0.5 s, reconnecting after each answer; the page still loads for others."""
    from slowclients import Flood, legit_tries

    with Flood(page.srv.port, 4, 16, "slowbody", path="/api/login") as flood:
        assert flood.wait_open(64)
        got = legit_tries(page.srv.port, "/", tries=20)
    assert got["200"] >= 18, (got, page.srv.http.stats)
