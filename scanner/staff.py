"""The staff status page, served by the device on the checkpoint's LAN.

Live lane state, the last 50 passages (time, verdict, reasons, temperature; never personal
data), the day's counters, device health, and the pending REVIEWs with buttons to pass or deny
them; every override is recorded with the staff id. Chinese and English.

  GET  /             the page (scanner/staff_page.html)
  GET  /api/state    the lane's snapshot and health (session required)
  POST /api/login    {"pin": "..."} -> session cookie and {"ok": true, "csrf": "..."}
  POST /api/logout   ends the session
  POST /api/override {"verdict": "PASS"|"DENY", "staff_id": "...", "record_id": "..."}

Protected by a staff PIN with a per-address and a global limit (scanner/staff_auth.py). Every
POST must be JSON (else 415) and, when the browser sends Origin, come from this page's own
origin (else 403); an override also needs the session's CSRF token in X-CSRF-Token (OWASP CSRF
Prevention Cheat Sheet). All of these are checked on the headers alone, before a body is read
(before_body). The transport, TLS and its limits are scanner/httpserve.py; with TLS the cookie
is Secure. Nothing here touches the disk on a request but the override itself.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scanner.decode import HINT_TEXT
from scanner.httpserve import HttpServer, Limits, Request, Response, json_body
from scanner.models import valid_staff_id
from scanner.reasons import REASONS
from scanner.staff_auth import LOCKOUT_AFTER, SESSION_S, PinGuard, Sessions

__all__ = ["LOCKOUT_AFTER", "Refreshed", "StaffServer", "valid_staff_id"]

log = logging.getLogger("scanner.staff")

MAX_BODY = 4096
PAGE = (Path(__file__).parent / "staff_page.html")
RECORD_ID = re.compile(r"[0-9A-Za-z\-]{1,64}")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
}
PIN_REQUIRED = "PIN required / 请输入PIN"


def _answer(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response.json(status, {"ok": False, "message": message}, headers)


def _locked_out(wait: float) -> Response:
    secs = max(1, round(wait))
    return _answer(429, f"too many wrong PINs: wait {secs} s / 请{secs}秒后再试", {"Retry-After": str(secs)})


def _error_body(_status: int, message: str) -> bytes:
    return _answer(_status, message).body


class StaffServer:
    """`lane` needs `.monitor.snapshot()` and `.request_override(verdict, staff_id, record_id)`;
    `extra_health()` adds queue depth, clock trust and trust-data age from the daemon and must
    not block (give it cached values: `Refreshed`)."""

    def __init__(self, lane: Any, pin: str, bind: str = "127.0.0.1", port: int = 8080,
                 extra_health: Callable[[], dict[str, Any]] = dict,
                 monotonic: Callable[[], float] = time.monotonic, *,
                 ssl_context: ssl.SSLContext | None = None, limits: Limits | None = None) -> None:
        self.lane = lane
        self.guard = PinGuard(pin, monotonic)
        self.sessions = Sessions(monotonic)
        self.extra_health = extra_health
        self.tls = ssl_context is not None
        # read once: a request never waits for the SD card; the reason and picture-hint texts go in with it
        texts = json.dumps({"reasons": REASONS, "hints": HINT_TEXT}).replace("<", "\\u003c")
        self.page = PAGE.read_text(encoding="utf-8").replace("{{TEXTS}}", texts)
        lim = limits or Limits(max_connections=64, max_per_client=16, max_busy=4, workers=2, max_body_bytes=MAX_BODY)
        self.http = HttpServer("staff", self.handle, bind, port, ssl_context=ssl_context, limits=lim,
                               inline=lambda r: r.path != "/api/override", error_body=_error_body,
                               base_headers=SECURITY_HEADERS, before_body=self.before_body)
        self.http.bind()

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> StaffServer:
        self.http.start()
        log.info("event=staff_page_listening port=%d tls=%s", self.port, self.tls)
        return self

    def stop(self) -> None:
        self.http.stop()

    def state(self) -> dict[str, Any]:
        snap = self.lane.monitor.snapshot()
        snap["health"].update(self.extra_health())
        return snap

    # -- requests --------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        token = _cookie(req, "cs_session")
        csrf = self.sessions.csrf(token)
        if req.method == "GET" and req.path == "/":
            page = self.page.replace("{{AUTHED}}", "true" if csrf else "false").replace("{{CSRF}}", csrf or "")
            return Response(200, page.encode(), "text/html; charset=utf-8")
        if req.method == "GET" and req.path == "/api/state":
            if not csrf:
                return _answer(401, PIN_REQUIRED)
            return Response.json(200, {**self.state(), "csrf": csrf})
        refused = self.before_body(req)
        if refused is not None:
            return refused
        if req.path == "/api/login":
            return self._login(req)
        if req.path == "/api/logout":
            self.sessions.end(token)
            return Response.json(200, {"ok": True}, {"Set-Cookie": self._cookie("", 0)})
        return self._override(req)

    def before_body(self, req: Request) -> Response | None:
        """Everything decided without the body, as soon as the headers are in (the transport
        calls this first, scanner/httpserve.py), so a refused client never gets to send one:
        404/405, Origin and JSON (_cross_site), a locked-out address on /api/login (429), no
        session (401) or a wrong CSRF token (403) for the rest. None: the request may go on."""
        if req.method == "GET" and req.path in ("/", "/api/state"):
            return None
        if req.path not in ("/api/login", "/api/logout", "/api/override"):
            return _answer(404, "not found")
        if req.method != "POST":
            return _answer(405, "use POST", {"Allow": "POST"})
        refused = self._cross_site(req)
        if refused is not None:
            return refused
        if req.path == "/api/login":
            wait = self.guard.wait_s(req.client)
            return _locked_out(wait) if wait else None
        csrf = self.sessions.csrf(_cookie(req, "cs_session"))
        if not csrf:
            return _answer(401, PIN_REQUIRED)
        if not hmac.compare_digest(req.headers.get("X-CSRF-Token", "").encode(), csrf.encode()):
            log.warning("event=staff_csrf_refused client=%s reason=token", req.client)
            return _answer(403, "reload the page / 请刷新页面")
        return None

    def _cross_site(self, req: Request) -> Response | None:
        """403 for a POST another origin made, 415 for one that is not JSON (a form or a
        text/plain body, which a page of any origin can send without asking)."""
        origin = req.headers.get("Origin")
        site = req.headers.get("Sec-Fetch-Site", "same-origin")
        if (origin is not None and origin != req.origin) or site not in ("same-origin", "none"):
            log.warning("event=staff_csrf_refused client=%s reason=origin", req.client)
            return _answer(403, "requests from other pages are refused / 拒绝来自其他页面的请求")
        if req.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return _answer(415, "send JSON (Content-Type: application/json)")
        return None

    def _login(self, req: Request) -> Response:
        wait = self.guard.wait_s(req.client)
        if not wait:
            try:
                pin = json_body(req.body).get("pin")
            except (ValueError, AttributeError):
                return _answer(400, 'send {"pin": "..."}')
            ok = self.guard.check(req.client, pin if isinstance(pin, str) else "")
            if ok:
                token, csrf = self.sessions.create()
                log.info("event=staff_login client=%s", req.client)
                return Response.json(200, {"ok": True, "csrf": csrf}, {"Set-Cookie": self._cookie(token, SESSION_S)})
            if ok is False:
                return _answer(401, "wrong PIN / PIN错误")
            wait = self.guard.wait_s(req.client)
        return _locked_out(wait)

    def _override(self, req: Request) -> Response:
        try:
            body = json_body(req.body)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return _answer(400, 'send {"verdict": "PASS" or "DENY", "staff_id": "...", "record_id": "..."}')
        verdict, staff_id, record_id = body.get("verdict"), valid_staff_id(body.get("staff_id")), body.get("record_id")
        problem = ("record_id required" if not isinstance(record_id, str) or not record_id
                   else "record_id malformed" if not RECORD_ID.fullmatch(record_id)
                   else "verdict must be PASS or DENY / 只能放行或拦截" if verdict not in ("PASS", "DENY")
                   else "请填写工号（1-32个字母或数字） / staff id: 1-32 letters or digits" if staff_id is None
                   else None)
        if problem is not None:
            log.info("event=staff_override_refused client=%s reason=%s", req.client, problem.split(" / ")[-1])
            return _answer(400, problem)
        assert isinstance(record_id, str) and staff_id is not None
        result = self.lane.request_override(verdict, staff_id, record_id)
        log.info("event=staff_override_request verdict=%s staff=%s record=%s ok=%s", verdict, staff_id, record_id,
                 result["ok"])
        return Response.json(200 if result["ok"] else 409, result)

    def _cookie(self, token: str, max_age: int) -> str:
        return (f"cs_session={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
                + ("; Secure" if self.tls else ""))


def _cookie(req: Request, name: str) -> str | None:
    for part in (req.headers.get("Cookie") or "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


class Refreshed:
    """The last value of a slow function (`queue_health` on the SD card), refreshed by a thread
    of its own every `every_s`. `get()` never blocks: it returns the last value, with
    `stale_s` (seconds since the last refresh) added when that is over `stale_after_s`."""

    def __init__(self, fn: Callable[[], dict[str, Any]], every_s: float = 2.0, stale_after_s: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic, name: str = "refresh") -> None:
        self.fn, self.every_s, self.stale_after_s, self._mono = fn, every_s, stale_after_s, monotonic
        self._value: dict[str, Any] = {}
        self._at = monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Refreshed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def get(self) -> dict[str, Any]:
        value, age = dict(self._value), self._mono() - self._at
        if age > self.stale_after_s:
            value["stale_s"] = round(age)
        return value

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.fn()
            except Exception as e:  # keep the last value; it turns stale
                log.warning("event=staff_health_refresh_failed error=%s", f"{type(e).__name__}: {e}")
            else:
                self._value, self._at = value, self._mono()
            self._stop.wait(self.every_s)
