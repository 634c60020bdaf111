"""Tornado's side of scanner/httpserve.py: the server subclass that counts and evicts
connections, the per-request delegate that keeps the whole-request deadline, and the filter
that turns Tornado's own log records into one escaped, rate-limited line.

Hooks used: public Tornado API (tornado.httputil.HTTPServerConnectionDelegate and
HTTPMessageDelegate, tornado.tcpserver.TCPServer.handle_stream, HTTP1Connection.detach), with
one exception, guard_head: it wraps IOStream.close on the stream instance and peeks at its
read buffer (a private attribute; without it the answer is 431, never 414).
Everything here runs on the server's event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from scanner.httpmsg import phrase

if TYPE_CHECKING:
    from scanner.httpserve import HttpServer, Request, Response

log = logging.getLogger("scanner.http")


class Conn:
    """One accepted connection. `busy`: a request on it has been read and is not answered yet
    (such a connection is never evicted). `receiving`: its headers are in and its body is
    still coming (it may be evicted). `served`: responses written on it. `opened` and
    `last_active`: loop times of accept and of the last response."""

    __slots__ = ("srv", "stream", "client", "busy", "receiving", "served", "exchange", "opened", "last_active",
                 "refusing")

    def __init__(self, srv: HttpServer, stream: IOStream, client: str) -> None:
        self.srv, self.stream, self.client = srv, stream, client
        self.busy = self.receiving = self.refusing = False
        self.served = 0
        self.exchange: Exchange | None = None
        assert srv.loop is not None
        self.opened = self.last_active = srv.loop.time()

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
        guard_head(conn)
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


def guard_head(conn: Conn) -> None:
    """Answer a request head that does not end within Tornado's max_header_size with 414/431
    instead of a silent close. Tornado's IOStream closes itself on that UnsatisfiableReadError
    (tornado.iostream.BaseIOStream.read_until_regex, max_bytes); this wraps that one close of
    this stream: the answer is written first (the stream may keep buffering up to its
    max_buffer_size meanwhile), then the stream is closed, within 1 s. Any other close passes."""
    stream = conn.stream
    real_close = stream.close

    def close(exc_info: Any = False) -> None:
        err = sys.exc_info()[1] if exc_info is True else exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if not isinstance(err, UnsatisfiableReadError) or stream.closed():
            real_close(exc_info)
        elif not conn.refusing:
            conn.refusing = True
            if conn.exchange is not None:
                conn.exchange.timer.cancel()
            buffered = getattr(stream, "_read_buffer", None)  # Tornado's, to tell 414 from 431
            data = conn.srv.head_too_large(conn, bytes(buffered[:65536]) if buffered is not None else None)
            conn.srv.close_with(stream, data)

    stream.close = close  # type: ignore[method-assign]


class Exchange(httputil.HTTPMessageDelegate):
    """One request and its response on a connection; the deadline starts when Tornado begins
    to wait for the request (accept, or the end of the previous response)."""

    def __init__(self, srv: HttpServer, conn: Conn, rc: HTTP1Connection) -> None:
        self.srv, self.conn, self.rc = srv, conn, rc
        self.req: Request | None = None
        self.chunks: list[bytes] = []
        self.expired = False
        self.body_due = ""  # set: the body's own deadline is the one running (its 408 says so)
        assert srv.loop is not None
        self.timer = srv.loop.call_later(srv.limits.request_timeout_s, self._expire)

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        srv = self.srv
        if self.expired:
            return
        problem = srv.check_headers(start_line.method, start_line.path, headers)
        if problem is not None:
            self._reject(*problem)
            return
        req = srv.request(start_line.method, start_line.path, headers, b"", self.conn.client)
        early = srv.early(req)
        if early is not None:
            self._refuse(srv.raw(early))
            return
        self.req = req
        length = int(headers.get("Content-Length") or 0)
        if length and req.method in ("GET", "HEAD"):  # RFC 9110 9.3.1: such a body may be refused
            self._reject(400, f"{req.method} takes no body")
        elif length:
            self.conn.receiving = True
            lim, loop = srv.limits, srv.loop
            assert loop is not None
            due = lim.body_grace_s + length / lim.min_body_rate
            if loop.time() + due < self.timer.when():
                self.timer.cancel()
                self.timer = loop.call_later(due, self._expire)
                self.body_due = f"the body ({length} bytes) did not arrive within {due:.1f} s"

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.timer.cancel()
        self.conn.receiving = False
        if self.expired or self.req is None:
            return
        self.conn.busy = True
        req = replace(self.req, body=b"".join(self.chunks))
        task = asyncio.ensure_future(self.srv.respond(self, req))
        self.srv.tasks.add(task)
        task.add_done_callback(self.srv.tasks.discard)

    def on_connection_close(self) -> None:
        self.timer.cancel()
        self.conn.busy = self.conn.receiving = False

    def _reject(self, status: int, message: str) -> None:
        srv = self.srv
        srv.stats["bad_requests"] += 1
        srv.note("event=http_bad_request server=%s client=%s status=%d error=%s", srv.name, self.conn.client,
                 status, message)
        self._refuse(srv.raw(srv.error_response(status, message)))

    def _refuse(self, data: bytes) -> None:
        """Answer without reading the body, and close."""
        self.timer.cancel()
        stream = self.rc.detach()  # Tornado stops reading; the body is never read
        self.srv.close_with(stream, data, drain=True)

    def _expire(self) -> None:
        c, srv = self.conn, self.srv
        if c.stream.closed() or self.rc.stream is None or self.conn.exchange is not self:
            return
        self.expired = True
        if self.req is None and c.served:  # a kept-alive connection with nothing more to say
            srv.stats["idle_closed"] += 1
            c.stream.close()
            return
        srv.stats["timeouts"] += 1
        deadline = srv.limits.request_timeout_s
        srv.note("event=http_timeout server=%s client=%s phase=%s status=408 deadline_s=%g", srv.name, c.client,
                 "body" if self.req else "headers", deadline)
        message = self.body_due or f"the request was not complete within {deadline:g} s"
        srv.close_with(c.stream, srv.raw(srv.error_response(408, message)))

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
            start = httputil.ResponseStartLine("HTTP/1.1", resp.status, phrase(resp.status))
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


class _TornadoLog(logging.Filter):
    """Tornado's own lines (malformed request, SSL error) become one `event=` line each: with
    the server and client when Tornado names the connection, else rate-limited process-wide
    (20 per 10 s). Its oversized-head line is dropped: guard_head logs that one."""

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
        if text.startswith("Unsatisfiable read"):
            return False  # guard_head answers it (414/431) and logs it with the server and client
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
