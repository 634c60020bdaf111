"""Device HTTP API for central servers that collect from the gate (docs/openapi.yaml).

  GET  /api/v1/records?after=CURSOR&limit=N  records in seq order + next_cursor + has_more
  POST /api/v1/records/ack  {"cursor": C}     everything up to C delivered (idempotent)
  GET  /healthz                               liveness, no token, no data
  GET  /metrics                               Prometheus text (token required)

The request logic only: routing, the token, the rate limit (a token bucket per client address,
429 + Retry-After), cursors. Sockets, TLS, the whole-request deadline, the connection caps and
the body and header caps are the transport's (scanner/httpserve.py, shared with the staff
page); `max_clients` requests are handled at once, more are answered 503.

Safety: a bearer token per device read from a file, compared with hmac.compare_digest, as soon
as the headers are in (a client without it is answered 401 before it may send a body); the
API refuses to start without one. Query values and cursors are matched whole, ASCII only.
Each request opens its own connection (read-only for GET) and closes its read transaction
before the body is written, so a slow client never starves the WAL checkpoint
(docs/durability.md section 6). Pulls and acks are logged (audit) without record contents.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import generate_latest

from scanner import outbox
from scanner.config import ApiSection
from scanner.errors import ScannerError
from scanner.httpserve import HttpServer, Limits, Request, Response, json_body, tls_context
from scanner.sync.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from scanner.sync.metrics import OutboxCollector, registry
from scanner.sync.uploader import SyncState

log = logging.getLogger("scanner.api")

MAX_BODY_BYTES = 4096
MAX_HEADER_BYTES = 8192
_DIGITS = re.compile(r"[0-9]{1,7}")  # ASCII only
_CURSOR = re.compile(r"[0-9a-f]{1,32}\.[0-9]{1,18}")  # docs/openapi.yaml, matched whole


class TokenBucket:
    """Per-client token buckets (docs/durability.md section 7; 1 req/s, burst 20 in the exporter-toolkit example)."""

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
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.fields = fields or {}  # more members of the JSON error body (409: last_cursor)


class Api:
    """The pull API's request logic; the transport (sockets, TLS, deadlines, connection caps) is
    scanner/httpserve.py. `handle(request) -> Response` is all the server calls."""

    ROUTES = {"/api/v1/records": ("GET",), "/api/v1/records/ack": ("POST",), "/healthz": ("GET",),
              "/metrics": ("GET",)}

    def __init__(self, cfg: ApiSection, store_path: str, token: str, state: SyncState | None = None, *,
                 max_bytes: int = 0, clock_trusted: Callable[[], bool] = lambda: False,
                 info: dict[str, str] | None = None) -> None:
        if not token:
            raise ScannerError("the pull API needs a token; fix: put one in the file named by [api] token_file")
        self.cfg = cfg
        self.store_path = store_path
        self.token = token.encode()
        self.state = state or SyncState()
        self.max_bytes = max_bytes
        self.clock_trusted = clock_trusted
        self.bucket = TokenBucket(cfg.rate_per_s, cfg.burst)
        self.counts: dict[str, int] = {}
        self.counts_lock = threading.Lock()
        # outbox id -> H: every record from the delivery mark up to seq H was handed out by a GET
        # of this process (a contiguous range: a page whose cursor lies past it, with records in
        # between, does not extend it). An ack is bound to it (409 past it, so no record is marked
        # delivered that no page carried). Kept in memory: GET stays read-only (no write lock
        # beside the lane's commit, no SD write per poll); after a restart nothing was handed out,
        # so an ack past the delivery mark is refused and the client pulls again (duplicates are
        # dropped by record_id).
        self.handed_out: dict[str, int] = {}
        self.server: HttpServer | None = None
        # /metrics: the outbox is read at scrape time by the collector; process metrics come free.
        self.metrics = registry(OutboxCollector(self._outbox_status, self.state, clock_synced=self.clock_trusted,
                                                api_responses=self._response_counts, info=info))

    # -- server lifecycle ----------------------------------------------------------------
    def limits(self) -> Limits:
        c = self.cfg
        return Limits(max_connections=c.max_connections, max_per_client=max(4, c.max_connections // 8),
                      max_busy=c.max_clients, workers=min(4, c.max_clients), request_timeout_s=c.request_timeout_s,
                      max_body_bytes=MAX_BODY_BYTES, max_header_bytes=MAX_HEADER_BYTES)

    def bind(self) -> tuple[str, int]:
        """Listen now; ScannerError (one line, with the fix) if the port or TLS files are wrong."""
        host = self.cfg.bind
        ctx = tls_context(self.cfg.tls_cert, self.cfg.tls_key, self.cfg.client_ca, "api")
        server = HttpServer("api", self.handle, host, self.cfg.port, ssl_context=ctx, limits=self.limits(),
                            error_body=_transport_error, before_body=self.before_body)
        try:
            addr = server.bind()
        except OSError as e:
            raise ScannerError(f"the pull API cannot listen on {host or '0.0.0.0'}:{self.cfg.port} ({e.strerror}); "
                               "fix: choose a free [api] port or an address this Pi has") from None
        if ctx is None and host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("event=api_plain_http bind=%s; the token crosses the network in clear text; fix: set "
                        "[api] tls_cert/tls_key, or bind to a VPN address", host or "0.0.0.0")
        self.server = server
        return addr

    def serve(self, stop: threading.Event) -> list[threading.Thread]:
        """Serve until `stop` is set; returns the thread to join (it stops the server)."""
        if self.server is None:
            self.bind()
        server = self.server
        assert server is not None
        server.start()

        def stopper() -> None:
            stop.wait()
            server.stop()

        s = threading.Thread(target=stopper, name="api-stop", daemon=True)
        s.start()
        log.info("event=api_listening address=%s port=%s tls=%s", server.host or "0.0.0.0", server.port,
                 bool(self.cfg.tls_cert))
        return [s]

    # -- requests ------------------------------------------------------------------------
    def before_body(self, req: Request) -> Response | None:
        """What needs no body, decided as soon as the headers are in (scanner/httpserve.py), so
        a client without the token never gets to send one (see _head). None: read the body,
        then handle()."""
        try:
            self._head(req, take=False)
        except ApiError as e:
            return self._count(_error(e))
        return None

    def handle(self, req: Request) -> Response:
        client = req.client
        try:
            self._head(req, take=True)
            if req.path == "/healthz":
                resp = self._healthz()
            elif req.path == "/metrics":
                resp = Response(200, generate_latest(self.metrics), METRICS_CONTENT_TYPE)
            elif req.path == "/api/v1/records":
                resp = Response(200, self._records(req.query, client))
            else:
                resp = Response(200, self._ack(req, client))
        except ApiError as e:
            resp = _error(e)
        except Exception as e:
            log.error("event=api_error path=%s error=%s", req.path, f"{type(e).__name__}: {e}")
            resp = Response(500, json.dumps({"error": "internal error; see the device log"}).encode())
        return self._count(resp)

    def _head(self, req: Request, take: bool) -> None:
        """ApiError for a request to refuse on its head: 404 unknown endpoint, 400 a query where
        none is taken, 429 over the client's rate limit (a request with the right token is
        charged once, when `take`; one without it at once), 401 no or a wrong token, 405 a
        method the endpoint does not take (/healthz: before the token, which it needs not)."""
        allowed = self.ROUTES.get(req.path)
        if allowed is None:
            raise ApiError(404, "no such endpoint; see docs/openapi.yaml")
        if req.query and req.path != "/api/v1/records":
            raise ApiError(400, "this endpoint takes no query parameters")
        if req.path == "/healthz":
            if req.method not in allowed:
                raise ApiError(405, "use GET", {"Allow": "GET"})
            return
        ok = self._token_ok(req)
        if take or not ok:
            wait = self.bucket.take(req.client)
            if wait > 0:
                raise ApiError(429, "too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
        if not ok:
            raise ApiError(401, "missing or wrong bearer token")
        if req.method not in allowed:
            raise ApiError(405, f"use {allowed[0]}", {"Allow": ", ".join(allowed)})

    def _count(self, resp: Response) -> Response:
        with self.counts_lock:
            self.counts[str(resp.status)] = self.counts.get(str(resp.status), 0) + 1
        return resp

    def _token_ok(self, req: Request) -> bool:
        """Authorization: Bearer <the device's token> (RFC 6750 2.1), compared in constant time."""
        scheme, _, token = req.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)

    def _healthz(self) -> Response:
        """503 with the reasons while the outbox cannot record passages (outbox.healthz)."""
        code, body = outbox.healthz(self.store_path)
        return Response(code, json.dumps(body, ensure_ascii=False).encode())

    def _records(self, query: str, client: str) -> bytes:
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {"after", "limit"})
        if unknown or any(len(v) > 1 for v in params.values()):
            raise ApiError(400, f"only after= and limit=, once each (got {', '.join(unknown) or 'a repeat'})")
        after = (params.get("after") or [""])[0]
        raw_limit = (params.get("limit") or [str(self.cfg.max_limit)])[0]
        if not _DIGITS.fullmatch(raw_limit):  # int() would take " 5", "1_0" and non-ASCII digits
            raise ApiError(400, "limit must be a whole number from 1 (capped at the device's max_limit)")
        limit = int(raw_limit)
        if not 1 <= limit <= 1_000_000:
            raise ApiError(400, "limit must be from 1 to 1000000 (the device caps it at its max_limit)")
        limit = min(limit, self.cfg.max_limit)

        def page(conn: Any) -> tuple[str, int, bool, outbox.Page]:
            oid, seq, reset = _cursor(conn, after)
            with self.counts_lock:
                handed = self.handed_out.get(oid, 0)
            return oid, seq, reset, outbox.page_after(conn, seq, limit, handed)

        # the connection (and its read transaction) is closed before a byte is sent
        oid, seq, reset, pg = outbox.read(self.store_path, page)
        rows, more = pg.rows, pg.has_more
        next_seq = rows[-1]["seq"] if rows else seq
        if rows and pg.joins:  # a page past a gap leaves the range as it was: its ack is a 409
            with self.counts_lock:
                self.handed_out[oid] = max(self.handed_out.get(oid, 0), next_seq)
        log.info("event=api_pull client=%s after=%d count=%d has_more=%s reset=%s", client, seq, len(rows),
                 more, reset)
        return json.dumps({"records": rows, "next_cursor": outbox.encode_cursor(oid, next_seq), "has_more": more,
                           "cursor_reset": reset}, ensure_ascii=False, separators=(",", ":")).encode()

    def _ack(self, req: Request, client: str) -> bytes:
        if "Content-Length" not in req.headers:
            raise ApiError(411, "send a JSON body with Content-Length")
        try:  # the transport has already refused a body over MAX_BODY_BYTES (413)
            body = json_body(req.body)
            cursor = body["cursor"]
            if not isinstance(cursor, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, 'body must be {"cursor": "<next_cursor of a GET>"}') from None

        def deliver(conn: Any) -> tuple[str, int, bool, int]:
            oid, seq, reset = _cursor(conn, cursor)
            mark = outbox.delivered_upto(conn)
            if seq <= mark or reset:
                return oid, seq, reset, mark  # an older cursor, or one from a replaced outbox: no-op
            with self.counts_lock:
                given = self.handed_out.get(oid, 0)
            if seq > given:
                last = outbox.encode_cursor(oid, max(given, mark))
                log.warning("event=api_ack_refused client=%s upto=%d handed_out=%d", client, seq, given)
                raise ApiError(409, f"cursor is past the last record this device handed out without a gap (last "
                               f"cursor {last}); fix: pull on from {last} and ack the next_cursor of the pages you "
                               "received", fields={"last_cursor": last})
            return oid, seq, reset, outbox.mark_delivered(conn, seq, "pull")

        oid, seq, reset, mark = outbox.read(self.store_path, deliver, readonly=False)
        log.info("event=api_ack client=%s upto=%d delivered_upto=%d reset=%s", client, seq, mark, reset)
        return json.dumps({"delivered_cursor": outbox.encode_cursor(oid, mark), "cursor_reset": reset}).encode()

    def _outbox_status(self) -> dict[str, Any]:
        return outbox.read(self.store_path, lambda conn: outbox.status(conn, self.store_path, self.max_bytes))

    def _response_counts(self) -> dict[str, int]:
        with self.counts_lock:
            return dict(self.counts)


def _transport_error(status: int, message: str) -> bytes:
    """The transport's own answers (408, 413, 503...): an Error, and a Health for /healthz."""
    return json.dumps({"error": message, "status": HTTPStatus(status).phrase.lower()}).encode()


def _error(e: ApiError) -> Response:
    resp = Response(e.status, json.dumps({"error": e.message, **e.fields}).encode(), headers=dict(e.headers))
    if e.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="checkpoint-scanner"'
    return resp


def _cursor(conn: Any, text: str) -> tuple[str, int, bool]:
    """(outbox id, seq, reset) for a cursor from a client ("" = the start); anything but
    "<hex outbox id>.<seq>", whole, is a 400."""
    if text and not _CURSOR.fullmatch(text):
        raise ApiError(400, "cursor must be the next_cursor value of a previous response")
    oid = outbox.outbox_id(conn)
    try:
        seq, reset = outbox.decode_cursor(text, oid)
    except outbox.CursorError as e:
        raise ApiError(400, str(e)) from None
    return oid, seq, reset
