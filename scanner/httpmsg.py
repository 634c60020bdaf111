"""The plain parts of the HTTP transport (scanner/httpserve.py): its limits, the request and
response the request logic sees, JSON bodies, the TLS context, and the descriptor budget."""

from __future__ import annotations

import array
import fcntl
import json
import logging
import resource
import ssl
import termios
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scanner.errors import ScannerError

log = logging.getLogger("scanner.http")


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256  # open sockets of this server
    max_per_client: int = 32  # open sockets from one address
    max_busy: int = 16  # requests in the handler pool (running or waiting); more get 503
    workers: int = 4  # threads of the handler pool
    request_timeout_s: float = 5.0  # handshake + request line + headers + body
    handler_timeout_s: float = 10.0  # a handler slower than this is answered 503
    write_timeout_s: float = 30.0  # a client that does not read its response is cut off
    max_header_bytes: int = 8192  # request line + headers; more: 431
    max_body_bytes: int = 4096  # more: 413


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # case-insensitive (tornado.httputil.HTTPHeaders)
    body: bytes
    client: str  # peer address
    scheme: str  # "http" or "https"

    @property
    def origin(self) -> str:
        """This server's origin as the client addressed it (RFC 6454): scheme://Host."""
        return f"{self.scheme}://{self.headers.get('Host', '')}"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after this response

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None,
             content_type: str = "application/json; charset=utf-8") -> Response:
        return cls(int(status), json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(), content_type,
                   dict(headers or {}))


def json_body(body: bytes) -> Any:
    """The JSON value of a request body (RFC 8259). ValueError for bad UTF-8, bad JSON and
    nesting deeper than the parser's recursion limit (RecursionError is turned into it)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the body is not JSON") from None


def tls_context(cert: str, key: str, client_ca: str, section: str) -> ssl.SSLContext | None:
    """A TLS 1.2+ server context from PEM files, or None when `cert` is empty. ScannerError
    (one line naming the [section] keys) when the files cannot be loaded."""
    if not cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key or None)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
    except (OSError, ssl.SSLError) as e:
        raise ScannerError(f"[{section}] cannot load its TLS files ({e}); fix: check [{section}] tls_cert and tls_key"
                           f"{' and client_ca' if client_ca else ''} (PEM, readable by the service user)") from None
    return ctx


_fd_lock = threading.Lock()
_fd_claimed = 0


def claim_fds(name: str, want: int) -> int:
    """Connections this server may hold: all the servers together get at most half the soft
    RLIMIT_NOFILE (the unit's LimitNOFILE=), the other half stays for the lane."""
    global _fd_claimed
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = soft // 2 if soft != resource.RLIM_INFINITY else 1 << 16
    with _fd_lock:
        got = max(8, min(want, budget - _fd_claimed))
        _fd_claimed += got
    if got < want:
        log.warning("event=http_connections_capped server=%s wanted=%d allowed=%d nofile=%d; fix: raise "
                    "LimitNOFILE= in the unit, or lower max_connections", name, want, got, soft)
    return got


def release_fds(n: int) -> None:
    global _fd_claimed
    with _fd_lock:
        _fd_claimed = max(0, _fd_claimed - n)


def unread_bytes(stream: Any) -> int:
    """Bytes the kernel holds for this socket that nobody has read yet (FIONREAD, tcp(7))."""
    buf = array.array("i", [0])
    sock = stream.fileno()
    if sock is None:
        return 0
    try:
        fcntl.ioctl(sock, termios.FIONREAD, buf, True)
    except (OSError, ValueError, TypeError):
        return 0
    return buf[0]
