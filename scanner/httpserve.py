"""The one HTTP transport of the device's two servers, the pull API (scanner/api.py) and the
staff page (scanner/staff.py): Tornado's HTTP/1.1 server with the limits an unattended gate
needs. The request logic lives in those modules; here only bytes, sockets and deadlines.

Why Tornado (tornado.httpserver, tornado.http1connection, 6.5+): one event-loop thread per server
and no thread per connection (an idle socket costs a descriptor and a few KiB, not an 8 MiB stack);
TLS handshakes run on the loop, non-blocking (SSLIOStream), never in the accept path; bounded
header and body sizes; pure Python (optional speedups; abi3 wheels for aarch64). The others
looked at: waitress has no TLS; cheroot does the TLS handshake in its accept thread (cheroot
#748); uvicorn has no deadline for receiving a request, only a keep-alive idle timer.

What this thin layer adds (tests/test_httpserve.py):

* One deadline for the whole request, from accept (or from the previous response on a kept-alive
  connection): TLS handshake, request line, headers and body. Past it: 408 and close (RFC 9110
  15.5.9); a kept-alive connection that sent nothing is closed quietly. A body has a shorter
  one: body_grace_s + its length / min_body_rate from the end of the headers (1 s + 1 s per
  2 KiB by default), so a body dripped a byte at a time holds a connection for seconds.
* A cap on open connections, per server and per client address, enforced in the accept callback
  without blocking: at the cap one connection that is not being served (idle, or still
  receiving its body) is closed, chosen by fair share: from the address holding the most, older
  than young_s first (scanner/httpadmit.py). If every one is being served, the newcomer gets
  503 + Retry-After. The caps together stay below half of RLIMIT_NOFILE, so the lane (camera,
  SQLite, I2C) keeps descriptors.
* Early answers before a body is read: 400 for a Content-Length that is not a whole number
  (RFC 9112 6.3) or a body on GET/HEAD, 411 for chunked bodies, 413 over the body cap, 414 for
  a request line over the header cap, 431 for headers over it (also when the head never ends:
  httpconn.guard_head), and whatever `before_body(request)` answers: the request logic's checks
  that need no body (token, session, CSRF, Origin), so a refused client never gets to send one.
* Request targets in origin-form and absolute-form (RFC 9112 3.2.2: routed by their path).
* Handlers that may block (SQLite on an SD card) run in a small thread pool; at most `max_busy`
  at once (more: 503), and one that takes longer than `handler_timeout_s` is answered 503.
* One log line per refused request, at most 20 per 10 s per server; past that, one summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scanner import httpmsg
from scanner.errors import ScannerError
from scanner.httpadmit import ConnTable
from scanner.httpconn import Conn, Exchange, TornadoServer, install_log_filter
from scanner.httpmsg import Limits, Request, Response, json_body, tls_context

__all__ = ["HttpServer", "Limits", "Request", "Response", "json_body", "tls_context"]

log = logging.getLogger("scanner.http")


def _default_error(status: int, message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class HttpServer:
    """One listening server. `app(request) -> Response` is the request logic; it runs in the
    handler pool unless `inline(request)` says it never blocks (then on the loop thread).
    `before_body(request)` runs on the loop thread once the headers are in (the request's body
    is b"" then): a Response refuses the request and closes the connection without reading
    the body, None lets it go on. `error_body(status, message)` shapes the transport's own
    answers (408, 413, 503...)."""

    def __init__(self, name: str, app: Callable[[Request], Response], host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, limits: Limits | None = None,
                 inline: Callable[[Request], bool] = lambda _r: False,
                 error_body: Callable[[int, str], bytes] = _default_error,
                 base_headers: Mapping[str, str] | None = None,
                 before_body: Callable[[Request], Response | None] = lambda _r: None) -> None:
        self.name, self.app, self.host, self.port = name, app, host, port
        self.before_body = before_body
        self.ssl_context, self.inline, self.error_body = ssl_context, inline, error_body
        self.limits = limits = limits or Limits()
        self.base_headers = dict(base_headers or {})
        self.scheme = "https" if ssl_context else "http"
        self.max_connections = limits.max_connections
        self.table = ConnTable(limits.young_s)
        self.conns = self.table.conns  # least recently active first
        self.busy = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("accepted", "evicted", "refused", "timeouts", "idle_closed", "bad_requests", "early", "busy_503",
             "handler_timeouts", "write_timeouts", "responses", "peak_open"), 0)
        self.pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix=f"http-{name}")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Future[Any]] = set()
        self._sockets: list[Any] = []
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._fds = 0
        self.shed_log = httpmsg.ShedLog(log)
        install_log_filter()

    # -- lifecycle ---------------------------------------------------------------------------
    def bind(self) -> tuple[str, int]:
        """Listen now (OSError if the address is taken or absent); returns (host, port)."""
        from tornado.netutil import bind_sockets

        if not self._sockets:
            self._sockets = bind_sockets(self.port, self.host or None, backlog=128)
            self._fds = httpmsg.claim_fds(self.name, self.limits.max_connections)
            self.max_connections = self._fds
        addr = self._sockets[0].getsockname()
        self.port = int(addr[1])
        return str(addr[0]), self.port

    def start(self) -> HttpServer:
        self.bind()
        self._thread = threading.Thread(target=self._run, name=f"http-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise ScannerError(f"the {self.name} server did not start within 10 s")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
        for s in self._sockets:
            s.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._fds:
            httpmsg.release_fds(self._fds)
            self._fds = 0

    @property
    def open_connections(self) -> int:
        return len(self.conns)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        lim = self.limits
        backstop = lim.request_timeout_s + 5  # Tornado's own timers, behind ours
        server = TornadoServer(lambda _r: None, ssl_options=self.ssl_context, max_header_size=2 * lim.max_header_bytes,
                               idle_connection_timeout=backstop, body_timeout=backstop,
                               max_body_size=lim.max_body_bytes, max_buffer_size=256 * 1024)
        server.owner = self
        self._stopping = asyncio.Event()
        server.add_sockets(self._sockets)
        self._ready.set()
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), 10.0)
            except TimeoutError:
                self._flush_log()
        server.stop()
        for c in list(self.conns):
            c.stream.close()
        try:
            await asyncio.wait_for(server.close_all_connections(), 2.0)
        except TimeoutError:
            pass
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- connections (loop thread only) ----------------------------------------------------
    def admit(self, conn: Conn) -> bool:
        """Make room for a new connection or refuse it with 503; never blocks. The victim, if
        one must go, is chosen by fair share (scanner/httpadmit.py)."""
        self.stats["accepted"] += 1
        t, now = self.table, conn.opened
        if t.count(conn.client) >= self.limits.max_per_client and not self._evict(
                t.victim(conn.client, now, self._state, own=True)):
            return self._refuse(conn, "client")
        if len(t) >= self.max_connections and not self._evict(t.victim(conn.client, now, self._state)):
            return self._refuse(conn, "server")
        t.add(conn)
        self.stats["peak_open"] = max(self.stats["peak_open"], len(t))
        return True

    @staticmethod
    def _state(c: Conn) -> str:
        """For eviction (scanner/httpadmit.py): "busy" a request on it is being handled or
        answered; "arriving" bytes of a new request wait unread in its socket (FIONREAD); else
        "quiet": closed, idle, or still receiving its body (nothing lost but a slow upload)."""
        if c.stream.closed() or c.receiving:
            return "quiet"
        return "busy" if c.busy else "arriving" if httpmsg.unread_bytes(c.stream) else "quiet"

    def _evict(self, victim: Conn | None) -> bool:
        if victim is None:
            return False
        self.forget(victim)
        if not victim.stream.closed():  # (a closed one merely awaits Tornado's on_close)
            victim.stream.close()
            self.stats["evicted"] += 1
        return True

    def _refuse(self, conn: Conn, cap: str) -> bool:
        self.stats["refused"] += 1
        self.note("event=http_refused server=%s client=%s status=503 cap=%s", self.name, conn.client, cap)
        self.close_with(conn.stream, self.raw(self.error_response(503, "too many connections; try again",
                                                                  {"Retry-After": "1"})), drain=True)
        return False

    def forget(self, conn: Conn) -> None:
        self.table.forget(conn)

    def touch(self, conn: Conn) -> None:
        assert self.loop is not None
        self.table.touch(conn, self.loop.time())

    def close_with(self, stream: Any, data: bytes, drain: bool = False) -> None:
        """Write `data` and close; closed after 1 s whatever the client does. `drain`: read and
        drop what the client still sends first, and half-close, so that closing does not reset
        the connection and destroy `data` before the client reads it (RFC 9112 9.6); only on a
        stream nobody else is reading."""
        from tornado.iostream import StreamClosedError

        if stream.closed():
            return
        try:
            fut = stream.write(data)
            if drain:
                stream.read_until_close().add_done_callback(lambda f: (f.cancelled() or f.exception(), stream.close()))
        except StreamClosedError:
            return

        def written(f: Any) -> None:
            sock = stream.socket  # None once the stream is closed
            if f.cancelled() or f.exception() is not None or not drain or sock is None:
                stream.close()
            elif not isinstance(sock, ssl.SSLSocket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

        fut.add_done_callback(written)
        assert self.loop is not None
        self.loop.call_later(1.0, stream.close)

    def raw(self, resp: Response) -> bytes:
        return httpmsg.serialize(resp, self.base_headers)

    def check_headers(self, method: str, target: str, headers: Any) -> tuple[int, str] | None:
        return httpmsg.check_head(self.limits, method, target, headers)

    def head_too_large(self, conn: Conn, buffered: bytes | None) -> bytes:
        """The answer to a head that did not end within twice max_header_bytes (guard_head)."""
        status, message = httpmsg.oversized_head(self.limits, buffered)
        self.stats["bad_requests"] += 1
        self.note("event=http_bad_request server=%s client=%s status=%d error=%s", self.name, conn.client, status,
                  message)
        return self.raw(self.error_response(status, message))

    # -- requests --------------------------------------------------------------------------
    def call(self, req: Request) -> Response:
        try:
            return self.app(req)
        except Exception as e:
            log.error("event=http_handler_error server=%s path=%s error=%s", self.name, req.path,
                      f"{type(e).__name__}: {e}")
            log.debug("event=http_handler_traceback server=%s", self.name, exc_info=True)
            return self.error_response(500, "internal error; see the device log")

    def early(self, req: Request) -> Response | None:
        """before_body(req), counted; an exception in it is a 500 and one log line."""
        try:
            resp = self.before_body(req)
        except Exception as e:
            log.error("event=http_handler_error server=%s path=%s error=%s", self.name, req.path,
                      f"{type(e).__name__}: {e}")
            resp = self.error_response(500, "internal error; see the device log")
        if resp is not None:
            self.stats["early"] += 1
        return resp

    def request(self, method: str, target: str, headers: Any, body: bytes, client: str) -> Request:
        path, query, authority = httpmsg.parse_target(target)
        return Request(method, path, query, headers, body, client, self.scheme, authority)

    def error_response(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        return Response(status, self.error_body(status, message), "application/json", dict(headers or {}))

    async def respond(self, ex: Exchange, req: Request) -> None:
        """Run the handler (inline or in the pool, within the limits) and write its answer."""
        if self.inline(req):
            resp = self.call(req)
        elif self.busy >= self.limits.max_busy:
            self.stats["busy_503"] += 1
            self.note("event=http_busy server=%s client=%s status=503 busy=%d", self.name, req.client, self.busy)
            resp = self.error_response(503, "busy; try again", {"Retry-After": "1"})
        else:
            assert self.loop is not None
            self.busy += 1
            fut = self.loop.run_in_executor(self.pool, self.call, req)
            fut.add_done_callback(self._unbusy)
            try:
                resp = await asyncio.wait_for(asyncio.shield(fut), self.limits.handler_timeout_s)
            except TimeoutError:
                self.stats["handler_timeouts"] += 1
                self.note("event=http_handler_timeout server=%s path=%s timeout_s=%g", self.name, req.path,
                          self.limits.handler_timeout_s)
                resp = self.error_response(503, "the device is busy; try again", {"Retry-After": "2"})
        await ex.write(req, resp)

    def _unbusy(self, _f: Any) -> None:
        self.busy -= 1

    # -- logging ---------------------------------------------------------------------------
    def note(self, fmt: str, *args: Any) -> None:
        self.shed_log.note(fmt, *args)

    def _flush_log(self) -> None:
        self.shed_log.flush(self.name, len(self.conns), self.stats)
