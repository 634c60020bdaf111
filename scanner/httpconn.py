"""Tornado's side of scanner/httpserve.py: the server subclass that counts and evicts
connections, the per-request delegate that keeps the whole-request deadline, and the filter
that turns Tornado's own log records into one escaped, rate-limited line.

Hooks used, all public Tornado API (tornado.httputil.HTTPServerConnectionDelegate and
HTTPMessageDelegate, tornado.tcpserver.TCPServer.handle_stream, HTTP1Connection.detach).
Everything here runs on the server's event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError

if TYPE_CHECKING:
    from scanner.httpserve import HttpServer, Request, Response

log = logging.getLogger("scanner.http")


class Conn:
    """One accepted connection. `busy`: a request on it has been read and is not answered yet
    (such a connection is never evicted). `served`: responses written on it."""

    __slots__ = ("srv", "stream", "client", "busy", "served", "exchange")

    def __init__(self, srv: HttpServer, stream: IOStream, client: str) -> None:
        self.srv, self.stream, self.client = srv, stream, client
        self.busy = False
        self.served = 0
        self.exchange: Exchange | None = None

    def __str__(self) -> str:  # Tornado logs the connection context with %s
        return self.client


class TornadoServer(HTTPServer):
    owner: HttpServer

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        srv = self.owner
        client = str(address[0]) if isinstance(address, tuple) and address else "local"
        conn = Conn(srv, stream, client)
        if not srv.admit(conn):
            return
        server_conn = HTTP1ServerConnection(stream, self.conn_params, conn)
        self._connections.add(server_conn)
        server_conn.start_serving(self)

    def on_close(self, server_conn: object) -> None:
        self._connections.discard(server_conn)
        conn = getattr(server_conn, "context", None)
        if isinstance(conn, Conn):
            if conn.exchange is not None:
                conn.exchange.timer.cancel()
            self.owner.forget(conn)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Exchange:
        conn = getattr(server_conn, "context", None)
        assert isinstance(conn, Conn) and isinstance(request_conn, HTTP1Connection)
        conn.exchange = Exchange(self.owner, conn, request_conn)
        return conn.exchange


class Exchange(httputil.HTTPMessageDelegate):
    """One request and its response on a connection; the deadline starts when Tornado begins
    to wait for the request (accept, or the end of the previous response)."""

    def __init__(self, srv: HttpServer, conn: Conn, rc: HTTP1Connection) -> None:
        self.srv, self.conn, self.rc = srv, conn, rc
        self.start: httputil.RequestStartLine | None = None
        self.headers: httputil.HTTPHeaders | None = None
        self.chunks: list[bytes] = []
        self.expired = False
        assert srv.loop is not None
        self.timer = srv.loop.call_later(srv.limits.request_timeout_s, self._expire)

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        if self.expired:
            return
        self.conn.busy = True
        problem = self.srv.check_headers(start_line.method, start_line.path, headers)
        if problem is not None:
            self._reject(*problem)
            return
        self.start, self.headers = start_line, headers

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.timer.cancel()
        if self.expired or self.start is None or self.headers is None:
            return
        req = self.srv.request(self.start.method, self.start.path, self.headers, b"".join(self.chunks),
                               self.conn.client)
        task = asyncio.ensure_future(self.srv.respond(self, req))
        self.srv.tasks.add(task)
        task.add_done_callback(self.srv.tasks.discard)

    def on_connection_close(self) -> None:
        self.timer.cancel()
        self.conn.busy = False

    def _reject(self, status: int, message: str) -> None:
        self.timer.cancel()
        stream = self.rc.detach()  # Tornado stops reading; the body is never read
        srv = self.srv
        srv.stats["bad_requests"] += 1
        srv.note("event=http_bad_request server=%s client=%s status=%d error=%s", srv.name, self.conn.client,
                 status, message)
        srv.close_with(stream, srv.raw_response(status, message), drain=True)

    def _expire(self) -> None:
        c, srv = self.conn, self.srv
        if c.stream.closed() or self.rc.stream is None or self.conn.exchange is not self:
            return
        self.expired = True
        if self.start is None and c.served:  # a kept-alive connection with nothing more to say
            srv.stats["idle_closed"] += 1
            c.stream.close()
            return
        srv.stats["timeouts"] += 1
        deadline = srv.limits.request_timeout_s
        srv.note("event=http_timeout server=%s client=%s phase=%s status=408 deadline_s=%g", srv.name, c.client,
                 "body" if self.start else "headers", deadline)
        srv.close_with(c.stream, srv.raw_response(408, f"the request was not complete within {deadline:g} s"))

    async def write(self, req: Request, resp: Response) -> None:
        srv, c, rc = self.srv, self.conn, self.rc
        try:
            if rc.stream is None or c.stream.closed():
                return
            headers = httputil.HTTPHeaders()
            headers["Content-Type"] = resp.content_type
            headers["Content-Length"] = str(len(resp.body))
            headers["Cache-Control"] = "no-store"
            for k, v in {**srv.base_headers, **resp.headers}.items():
                headers[k] = v
            if resp.close:
                headers["Connection"] = "close"
            start = httputil.ResponseStartLine("HTTP/1.1", resp.status, _phrase(resp.status))
            fut = rc.write_headers(start, headers, None if req.method == "HEAD" else resp.body)
            rc.finish()
            await asyncio.wait_for(fut, srv.limits.write_timeout_s)
        except TimeoutError:
            srv.stats["write_timeouts"] += 1
            c.stream.close()
            return
        except (StreamClosedError, httputil.HTTPOutputError, ValueError):
            c.stream.close()
            return
        finally:
            c.busy = False
        srv.stats["responses"] += 1
        c.served += 1
        srv.touch(c)
        if resp.close:
            c.stream.close()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _TornadoLog(logging.Filter):
    """Tornado's own lines (malformed request, SSL error, oversized headers) become one
    `event=` line each: with the server and client when Tornado names the connection, else
    rate-limited process-wide (20 per 10 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.window = time.monotonic()
        self.lines = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        conn = args[0] if args and isinstance(args[0], Conn) else None
        if conn is not None:
            srv = conn.srv
            detail = str(args[1]) if len(args) > 1 else str(record.msg).split(" from ")[0]
            srv.stats["bad_requests"] += 1
            srv.note("event=http_bad_request server=%s client=%s status=%s error=%s", srv.name, conn.client,
                     "400" if str(record.msg).startswith("Malformed") else "none", detail)
            return False
        text = record.getMessage()
        record.msg, record.args = "event=http_transport detail=%s", (text,)
        with self.lock:
            now = time.monotonic()
            if now - self.window > 10:
                self.window, self.lines = now, 0
            self.lines += 1
            return self.lines <= 20


_filter_lock = threading.Lock()
_installed: list[_TornadoLog] = []


def install_log_filter() -> None:
    with _filter_lock:
        if not _installed:
            _installed.append(_TornadoLog())
            logging.getLogger("tornado.general").addFilter(_installed[0])
