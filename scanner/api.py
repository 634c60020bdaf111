"""Device HTTP API for central servers that collect from the gate (docs/openapi.yaml).

  GET  /api/v1/records?after=CURSOR&limit=N  records in seq order + next_cursor + has_more
  POST /api/v1/records/ack  {"cursor": C}     everything up to C delivered (idempotent)
  GET  /healthz                               liveness, no token, no data
  GET  /metrics                               Prometheus text (token required)

Why the standard library's ThreadingHTTPServer and not a framework: four fixed endpoints, no
templates, no sessions; it adds no dependency to the Pi image, and what a framework would
give (routing, JSON) is a few lines here. What it lacks we add: a per-connection socket
timeout, a cap on simultaneous connections (503), a body size cap, TLS with the handshake
in the worker thread, and a token bucket per client address (429 + Retry-After).

Safety: a bearer token per device read from a file, compared with hmac.compare_digest; the
API refuses to start without one. Each request opens its own connection (read-only for GET)
and closes its read transaction before the body is written, so a slow client never starves
the WAL checkpoint (RECORDS 2.3). Pulls and acks are logged (audit) without record contents.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scanner import outbox
from scanner.config import ApiSection
from scanner.errors import ScannerError
from scanner.store import connect
from scanner.sync.metrics import render_metrics
from scanner.sync.uploader import SyncState

log = logging.getLogger("scanner.api")

MAX_BODY_BYTES = 4096
SOCKET_TIMEOUT_S = 10.0


class TokenBucket:
    """Per-client token buckets (RECORDS 3.3: 1 req/s, burst 20 in the exporter-toolkit example)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 4096) -> None:
        self.rate, self.burst, self.clock = rate_per_s, float(burst), clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.max_clients = max_clients
        self.lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        with self.lock:
            now = self.clock()
            tokens, last = self.buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self.buckets[client] = (tokens, now)
            while len(self.buckets) > self.max_clients:
                self.buckets.popitem(last=False)
            return wait


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: Api

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.app.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.app.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.app.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("event=api_connection_error client=%s", client_address[0] if client_address else "?")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server_version = "checkpoint-scanner"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("event=api_access " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.app.dispatch(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.app.dispatch(self, "POST")

    def _other(self) -> None:
        self.server.app.dispatch(self, self.command)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method (PUT, TRACE, QUERY...): 405, not 501
            return self._other
        raise AttributeError(name)


class Api:
    ROUTES = {"/api/v1/records": ("GET",), "/api/v1/records/ack": ("POST",), "/healthz": ("GET",),
              "/metrics": ("GET",)}

    def __init__(self, cfg: ApiSection, store_path: str, token: str, state: SyncState | None = None, *,
                 max_bytes: int = 0, clock_trusted: Callable[[], bool] = lambda: False) -> None:
        if not token:
            raise ScannerError("the pull API needs a token; fix: put one in the file named by [api] token_file")
        self.cfg = cfg
        self.store_path = store_path
        self.token = token.encode()
        self.state = state or SyncState()
        self.max_bytes = max_bytes
        self.clock_trusted = clock_trusted
        self.bucket = TokenBucket(cfg.rate_per_s, cfg.burst)
        self.slots = threading.BoundedSemaphore(cfg.max_clients)
        self.counts: dict[str, int] = {}
        self.counts_lock = threading.Lock()
        self.httpd: _Server | None = None

    # -- server lifecycle ----------------------------------------------------------------
    def bind(self) -> tuple[str, int]:
        host = self.cfg.bind or "0.0.0.0"
        try:
            httpd = _Server((host, self.cfg.port), _Handler, bind_and_activate=True)
        except OSError as e:
            raise ScannerError(f"the pull API cannot listen on {host}:{self.cfg.port} ({e.strerror}); fix: "
                               "choose a free [api] port or an address this Pi has") from None
        httpd.app = self
        if self.cfg.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
                if self.cfg.client_ca:
                    ctx.verify_mode = ssl.CERT_REQUIRED
                    ctx.load_verify_locations(self.cfg.client_ca)
            except (OSError, ssl.SSLError) as e:
                httpd.server_close()
                raise ScannerError(f"the pull API cannot load its TLS files ({e}); fix: check [api] tls_cert, "
                                   "tls_key and client_ca (PEM, readable by the service user)") from None
            # the handshake runs in the worker thread on first read, never in the accept loop
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        elif host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("event=api_plain_http bind=%s; the token crosses the network in clear text; fix: set "
                        "[api] tls_cert/tls_key, or bind to a VPN address", host)
        self.httpd = httpd
        addr = httpd.server_address
        return str(addr[0]), int(addr[1])

    def serve(self, stop: threading.Event) -> list[threading.Thread]:
        """Serve in a thread until `stop` is set; returns the threads to join."""
        if self.httpd is None:
            self.bind()
        httpd = self.httpd
        assert httpd is not None
        t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="api", daemon=True)

        def stopper() -> None:
            stop.wait()
            httpd.shutdown()
            httpd.server_close()

        s = threading.Thread(target=stopper, name="api-stop", daemon=True)
        t.start()
        s.start()
        host, port = httpd.server_address[:2]
        log.info("event=api_listening address=%s port=%s tls=%s", host, port, bool(self.cfg.tls_cert))
        return [t, s]

    # -- requests ------------------------------------------------------------------------
    def dispatch(self, h: _Handler, method: str) -> None:
        client = h.client_address[0] if h.client_address else "?"
        url = urlsplit(h.path)
        status = 500
        try:
            allowed = self.ROUTES.get(url.path)
            if allowed is None:
                raise ApiError(404, "no such endpoint; see docs/openapi.yaml")
            if url.query and url.path != "/api/v1/records":
                raise ApiError(400, "this endpoint takes no query parameters")
            if url.path == "/healthz":
                if method not in allowed:
                    raise ApiError(405, "use GET", {"Allow": "GET"})
                status, body, ctype = self._healthz()
            else:
                wait = self.bucket.take(client)
                if wait > 0:
                    raise ApiError(429, "too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
                self._authorize(h)
                if method not in allowed:
                    raise ApiError(405, f"use {allowed[0]}", {"Allow": ", ".join(allowed)})
                if url.path == "/metrics":
                    status, body, ctype = 200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
                elif url.path == "/api/v1/records":
                    status, body, ctype = 200, self._records(url.query, client), "application/json"
                else:
                    status, body, ctype = 200, self._ack(h, client), "application/json"
            extra: dict[str, str] = {}
        except ApiError as e:
            status, extra, ctype = e.status, e.headers, "application/json"
            body = json.dumps({"error": e.message}).encode()
        except Exception as e:
            log.exception("event=api_error path=%s error=%r", url.path, str(e))
            status, extra, ctype = 500, {}, "application/json"
            body = json.dumps({"error": "internal error; see the device log"}).encode()
        with self.counts_lock:
            self.counts[str(status)] = self.counts.get(str(status), 0) + 1
        try:
            if status != 200 and "Content-Length" in h.headers and method == "POST":
                h.close_connection = True  # an unread body must not be parsed as the next request
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Cache-Control", "no-store")
            for k, v in extra.items():
                h.send_header(k, v)
            if status == 401:
                h.send_header("WWW-Authenticate", 'Bearer realm="checkpoint-scanner"')
            h.end_headers()
            if method != "HEAD":
                h.wfile.write(body)
        except (TimeoutError, OSError):
            h.close_connection = True

    def _authorize(self, h: _Handler) -> None:
        got = h.headers.get("Authorization", "")
        scheme, _, token = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token):
            raise ApiError(401, "missing or wrong bearer token")

    def _healthz(self) -> tuple[int, bytes, str]:
        try:
            conn = connect(self.store_path, readonly=True)
            try:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()
            finally:
                conn.close()
        except Exception:
            return 503, b'{"status":"outbox unreadable"}', "application/json"
        return 200, b'{"status":"ok"}', "application/json"

    def _records(self, query: str, client: str) -> bytes:
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {"after", "limit"})
        if unknown or any(len(v) > 1 for v in params.values()):
            raise ApiError(400, f"only after= and limit=, once each (got {', '.join(unknown) or 'a repeat'})")
        after = (params.get("after") or [""])[0]
        raw_limit = (params.get("limit") or [str(self.cfg.max_limit)])[0]
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ApiError(400, "limit must be a whole number from 1 (capped at the device's max_limit)") from None
        if not 1 <= limit <= 1_000_000:
            raise ApiError(400, "limit must be from 1 to 1000000 (the device caps it at its max_limit)")
        limit = min(limit, self.cfg.max_limit)
        conn = connect(self.store_path, readonly=True)
        try:
            oid, seq, reset = _cursor(conn, after)
            rows, more = outbox.rows_after(conn, seq, limit)
        finally:
            conn.close()  # the read transaction is over before a byte is sent
        next_seq = rows[-1]["seq"] if rows else seq
        log.info("event=api_pull client=%s after=%d count=%d has_more=%s reset=%s", client, seq, len(rows),
                 more, reset)
        return json.dumps({"records": rows, "next_cursor": outbox.encode_cursor(oid, next_seq), "has_more": more,
                           "cursor_reset": reset}, ensure_ascii=False, separators=(",", ":")).encode()

    def _ack(self, h: _Handler, client: str) -> bytes:
        try:
            n = int(h.headers.get("Content-Length", ""))
        except ValueError:
            raise ApiError(411, "send a JSON body with Content-Length") from None
        if n > MAX_BODY_BYTES:
            raise ApiError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        if n < 0:
            raise ApiError(400, "bad Content-Length")
        raw = h.rfile.read(n)
        try:
            body = json.loads(raw)
            cursor = body["cursor"]
            if not isinstance(cursor, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, 'body must be {"cursor": "<next_cursor of a GET>"}') from None
        conn = connect(self.store_path)
        try:
            oid, seq, reset = _cursor(conn, cursor)
            mark = outbox.mark_delivered(conn, seq, "pull") if seq and not reset else outbox.delivered_upto(conn)
        finally:
            conn.close()
        log.info("event=api_ack client=%s upto=%d delivered_upto=%d reset=%s", client, seq, mark, reset)
        return json.dumps({"delivered_cursor": outbox.encode_cursor(oid, mark), "cursor_reset": reset}).encode()

    def _metrics(self) -> str:
        conn = connect(self.store_path, readonly=True)
        try:
            st = outbox.status(conn, self.store_path, self.max_bytes)
        finally:
            conn.close()
        with self.counts_lock:
            counts = dict(self.counts)
        return render_metrics(st, self.state, clock_synced=self.clock_trusted(), api_responses=counts)


def _cursor(conn: Any, text: str) -> tuple[str, int, bool]:
    """(outbox id, seq, reset) for a cursor from a client; a malformed one is a 400."""
    oid = outbox.outbox_id(conn)
    try:
        seq, reset = outbox.decode_cursor(text, oid)
    except outbox.CursorError as e:
        raise ApiError(400, str(e)) from None
    return oid, seq, reset
