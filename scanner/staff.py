"""The staff status page, served by the device on the checkpoint's LAN.

Live lane state, the last 50 passages (time, verdict, reasons, temperature; never personal
data), the day's counters, device health, and the pending REVIEWs with buttons to pass or deny
them; every override is recorded with the staff id. Protected by a staff PIN (from a file only
the service can read), compared in constant time; five wrong PINs lock that address out for a
minute. Chinese and English.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from scanner.errors import ConfigError

log = logging.getLogger("scanner.staff")

SESSION_S = 12 * 3600
LOCKOUT_AFTER = 5
LOCKOUT_S = 60.0
MAX_BODY = 4096
PAGE = (Path(__file__).parent / "staff_page.html")


def load_pin(path: str) -> str:
    if path.startswith("$"):
        raise ConfigError([f"staff.pin_file: {path} names an unset variable; fix: run under systemd (the unit "
                           "loads the staff-pin credential) or give a file path"])
    try:
        pin = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError([f"staff.pin_file: cannot read {path} ({e.strerror}); fix: write a PIN of 6+ digits "
                           "into that file, chmod 600, owned by the service user"]) from None
    if len(pin) < 6:
        raise ConfigError([f"staff.pin_file: the PIN in {path} is shorter than 6 characters; fix: use 6 or more"])
    return pin


class StaffServer:
    """`lane` needs `.monitor.snapshot()` and `.request_override(verdict, staff_id, record_id)`;
    `extra_health()` adds queue depth, clock trust and trust-data age from the daemon."""

    def __init__(self, lane: Any, pin: str, bind: str = "127.0.0.1", port: int = 8080,
                 extra_health: Callable[[], dict[str, Any]] = dict,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.lane = lane
        self._pin = pin.encode()
        self._sessions: dict[str, float] = {}
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._mono = monotonic
        self.extra_health = extra_health
        server = self

        class Handler(_Handler):
            staff = server

        self.httpd = ThreadingHTTPServer((bind, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="staff-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> StaffServer:
        self.thread.start()
        log.info("event=staff_page_listening port=%d", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- auth ----------------------------------------------------------------------------
    def locked_out(self, addr: str) -> float:
        with self._lock:
            n, until = self._failures.get(addr, (0, 0.0))
            return max(0.0, until - self._mono()) if n >= LOCKOUT_AFTER else 0.0

    def login(self, addr: str, pin: str) -> str | None:
        if self.locked_out(addr):
            return None
        ok = hmac.compare_digest(pin.strip().encode(), self._pin)
        with self._lock:
            if not ok:
                n, _ = self._failures.get(addr, (0, 0.0))
                self._failures[addr] = (n + 1, self._mono() + LOCKOUT_S)
                log.warning("event=staff_login_failed addr=%s failures=%d", addr, n + 1)
                return None
            self._failures.pop(addr, None)
            token = secrets.token_urlsafe(24)
            self._sessions[token] = self._mono() + SESSION_S
            return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            now = self._mono()
            self._sessions = {t: exp for t, exp in self._sessions.items() if exp > now}
            return any(hmac.compare_digest(token, t) for t in self._sessions)

    def state(self) -> dict[str, Any]:
        snap = self.lane.monitor.snapshot()
        snap["health"].update(self.extra_health())
        return snap


class _Handler(BaseHTTPRequestHandler):
    staff: StaffServer
    server_version = "checkpoint-scanner"

    def log_message(self, fmt: str, *args: Any) -> None:  # journal, not stderr noise
        log.debug("event=http %s", fmt % args)

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "script-src 'self' 'unsafe-inline'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _token(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "cs_session":
                return v
        return None

    def _body(self) -> bytes | None:
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"ok": False, "message": "body too large"})
            return None
        return self.rfile.read(n)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?")[0]
        authed = self.staff.valid(self._token())
        if path == "/":
            page = PAGE.read_text(encoding="utf-8")
            self._send(200, page.replace("{{AUTHED}}", "true" if authed else "false").encode(),
                       "text/html; charset=utf-8")
        elif path == "/api/state":
            if not authed:
                self._json(HTTPStatus.UNAUTHORIZED, {"ok": False, "message": "PIN required / 请输入PIN"})
                return
            self._json(200, self.staff.state())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "message": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        body = self._body()
        if body is None:
            return
        addr = self.client_address[0]
        if path == "/api/login":
            wait = self.staff.locked_out(addr)
            if wait:
                self._json(HTTPStatus.TOO_MANY_REQUESTS,
                           {"ok": False, "message": f"too many wrong PINs: wait {wait:.0f} s / 请稍后再试"})
                return
            pin = _field(body, "pin")
            token = self.staff.login(addr, pin)
            if token is None:
                self._json(HTTPStatus.UNAUTHORIZED, {"ok": False, "message": "wrong PIN / PIN错误"})
                return
            self._send(200, b'{"ok": true}', "application/json",
                       {"Set-Cookie": f"cs_session={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_S}"})
        elif path == "/api/override":
            if not self.staff.valid(self._token()):
                self._json(HTTPStatus.UNAUTHORIZED, {"ok": False, "message": "PIN required / 请输入PIN"})
                return
            verdict, staff_id = _field(body, "verdict"), _field(body, "staff_id")
            record_id = _field(body, "record_id") or None
            result = self.staff.lane.request_override(verdict, staff_id, record_id)
            log.info("event=staff_override_request verdict=%s staff=%s ok=%s", verdict, staff_id[:32], result["ok"])
            self._json(200 if result["ok"] else HTTPStatus.CONFLICT, result)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "message": "not found"})


def _field(body: bytes, name: str) -> str:
    """A field from a JSON or form-encoded body; '' when absent or malformed."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return str(data.get(name, ""))
    except ValueError:
        pass
    return (parse_qs(text).get(name) or [""])[0]
