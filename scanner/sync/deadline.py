"""One deadline for a whole HTTP exchange: TCP connect, TLS handshake, request, status line,
headers and body. Shared by the pull client (pull.py), the push uploader (uploader.py) and the
trust fetch / online check (fetch.py).

Why: requests' (connect, read) timeouts bound each wait for a byte, not the exchange. A server
that sends `HTTP/1.1 200 OK\\r\\nX-A: ` and then one byte every 50 ms, or `HTTP/1.1 100
Continue\\r\\n\\r\\n` every 0.5 s (http.client skips interim 1xx answers in a loop), never trips
a read timeout, and `session.request()` never returns. scanner/sync/httpbody.py bounded the body
only, which is read after `request()` has returned.

How: `Watchdog(deadline)` is a context manager. While it is active in a thread, every
connection of a session mounted with `mount(session)` registers itself when it opens its
socket and when it sends a request; at the monotonic `deadline` a timer thread calls
shutdown(2) on each registered socket, which wakes a recv() blocked in any phase (TLS
included) with end-of-file. The shutdown goes through a descriptor duplicated when the socket
was made (dup(2): the same socket, not a number that could be reused by another file once
the connection closes). Whatever error the exchange then raises (a broken connection, a TLS
"EOF in violation of protocol", an empty answer), `guarded()` reports DeadlineExceeded.

Not covered: the DNS lookup (getaddrinfo cannot be interrupted; use addresses, or a local
resolver with its own timeout) and the TCP connect itself, which the connect timeout bounds.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from scanner.sync.httpbody import DeadlineExceeded

_ACTIVE: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar("http_watchdog", default=None)


class Watchdog:
    """Shuts down, at the monotonic `deadline`, every connection that registers while this is
    the active watchdog of the thread (`with Watchdog(d) as w:`). `fired`: the deadline came
    before the block ended. Re-entrant use is not supported (one exchange per watchdog)."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self.clock = clock
        self.fired = False
        self._lock = threading.Lock()
        self._conns: list[Any] = []
        self._done = False
        self._timer: threading.Timer | None = None
        self._token: contextvars.Token[Watchdog | None] | None = None

    def __enter__(self) -> Watchdog:
        self._token = _ACTIVE.set(self)
        self._timer = threading.Timer(max(0.0, self.deadline - self.clock()), self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
            self._conns.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._token is not None:
            _ACTIVE.reset(self._token)

    def left(self) -> float:
        """Seconds until the deadline (never negative)."""
        return max(0.0, self.deadline - self.clock())

    def watch(self, conn: Any) -> None:
        """Register a urllib3 connection (one that has `_watch_dup`); shut at once if late."""
        with self._lock:
            if self._done:
                return
            if conn not in self._conns:
                self._conns.append(conn)
            if self.fired:
                _shut(conn)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for conn in self._conns:
                _shut(conn)


def _shut(conn: Any) -> None:
    dup = getattr(conn, "_watch_dup", None)
    if dup is not None:
        with contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)


def _register(conn: Any) -> None:
    w = _ACTIVE.get()
    if w is not None:
        w.watch(conn)


def _adopt(conn: Any, sock: socket.socket) -> None:
    _release(conn)
    conn._watch_dup = sock.dup()
    _register(conn)


def _release(conn: Any) -> None:
    dup = getattr(conn, "_watch_dup", None)
    conn._watch_dup = None
    if dup is not None:
        with contextlib.suppress(OSError):
            dup.close()


class _Watched:
    """Mixed in before urllib3's connection class: the socket is adopted by the watchdog as soon
    as it exists (before a TLS handshake, so the handshake is watched too)."""

    _watch_dup: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _adopt(self, sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            _release(self)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' HTTPAdapter whose connections obey the active Watchdog (same arguments)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:  # a SOCKS manager keeps its own pool classes
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def mount(session: requests.Session, *, max_retries: Any = 0) -> requests.Session:
    """Mount DeadlineAdapter for http:// and https:// on `session`, unless a caller already
    mounted an adapter of its own there (kept: a test double, a custom transport). Returns it."""
    for prefix in ("http://", "https://"):
        current = session.adapters.get(prefix)
        if current is None or type(current) is HTTPAdapter:
            session.mount(prefix, DeadlineAdapter(max_retries=max_retries))
    return session


@contextlib.contextmanager
def guarded(deadline: float, what: str = "answer") -> Iterator[Watchdog]:
    """`with guarded(deadline) as w:` run one exchange (request and read_body) under a Watchdog.
    If the deadline fired, the block's error (or its result: an answer cut short can look
    complete) becomes DeadlineExceeded, a requests Timeout; other errors pass unchanged."""
    w = Watchdog(deadline)
    with w:
        try:
            yield w
        except DeadlineExceeded:
            raise
        except Exception:
            if not w.fired:
                raise
            raise DeadlineExceeded(f"no complete {what} by the deadline") from None
    if w.fired:
        raise DeadlineExceeded(f"no complete {what} by the deadline")
