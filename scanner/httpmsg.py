"""The plain parts of the HTTP transport (scanner/httpserve.py): its limits, the request and
response the request logic sees, JSON bodies, the TLS context, and the descriptor budget."""

from __future__ import annotations

import array
import fcntl
import json
import logging
import re
import resource
import ssl
import termios
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
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
    max_header_bytes: int = 8192  # request line + headers; more: 431 (414 when the request line alone is)
    max_body_bytes: int = 4096  # more: 413
    min_body_rate: float = 2048.0  # bytes/s: a body of n bytes must arrive within body_grace_s + n / this
    body_grace_s: float = 1.0
    young_s: float = 2.0  # a connection younger than this is evicted only when no older one can be


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # case-insensitive (tornado.httputil.HTTPHeaders)
    body: bytes
    client: str  # peer address
    scheme: str  # "http" or "https"
    authority: str = ""  # host[:port] of an absolute-form request target, else ""

    @property
    def origin(self) -> str:
        """This server's origin as the client addressed it (RFC 6454): scheme://host, the host
        from an absolute-form target if there was one, else from Host (RFC 9112 3.2.2)."""
        return f"{self.scheme}://{self.authority or self.headers.get('Host', '')}"


_ABSOLUTE = re.compile(r"(?i:https?)://([^/?#]*)([^#]*)")


def parse_target(target: str) -> tuple[str, str, str]:
    """(path, query, authority) of a request-target (RFC 9112 section 3.2). Origin-form
    "/p?q": authority "". Absolute-form "http://host/p?q", which a server MUST accept (3.2.2):
    its path ("/" when empty), query and host. Any other form comes back as the path, so no
    route matches it (404)."""
    m = _ABSOLUTE.fullmatch(target)
    authority, rest = (m.group(1), m.group(2)) if m else ("", target)
    path, _, query = rest.partition("?")
    return (path or "/") if m else path, query, authority


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


_CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")


def check_head(lim: Limits, method: str, target: str, headers: Any) -> tuple[int, str] | None:
    """(status, message) for a request to refuse on its head alone, before its body is read,
    else None: 414 request line over max_header_bytes, 431 head over it (RFC 6585 5), 411
    Transfer-Encoding, 400 a Content-Length not one whole number (RFC 9112 6.3), 413 over
    max_body_bytes."""
    cap = lim.max_header_bytes
    line = len(method) + len(target) + 11  # "GET /x HTTP/1.1"
    if line > cap:
        return 414, f"request target longer than {cap} bytes"
    if line + sum(len(k) + len(v) + 4 for k, v in headers.get_all()) > cap:
        return 431, f"request line and headers larger than {cap} bytes"
    if "Transfer-Encoding" in headers:
        return 411, "send the body with Content-Length (no chunked encoding)"
    length = headers.get("Content-Length")
    if length is not None:
        if not _CONTENT_LENGTH.fullmatch(length):
            return 400, "Content-Length must be one whole number of bytes"
        if int(length) > lim.max_body_bytes:
            return 413, f"body larger than {lim.max_body_bytes} bytes"
    return None


def oversized_head(lim: Limits, buffered: bytes | None) -> tuple[int, str]:
    """414 or 431 for a head that never ended within the reader's limit: 414 when `buffered`
    (what was read of it, None if unknown) shows a request line over max_header_bytes."""
    cap = lim.max_header_bytes
    eol = (buffered or b"").lstrip(b"\r\n").find(b"\n")
    if buffered and not 0 <= eol <= cap:
        return 414, f"request target longer than {cap} bytes"
    return 431, f"request line and headers larger than {cap} bytes"


def serialize(resp: Response, base_headers: Mapping[str, str]) -> bytes:
    """`resp` as HTTP/1.1 bytes, for a connection closed after it (the transport's own answers)."""
    head = {"Content-Type": resp.content_type, "Content-Length": str(len(resp.body)), "Cache-Control": "no-store",
            **base_headers, **resp.headers, "Connection": "close"}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"HTTP/1.1 {resp.status} {phrase(resp.status)}\r\n{lines}\r\n".encode() + resp.body


def phrase(status: int) -> str:
    """The reason phrase of an HTTP status code (RFC 9110 section 15), "Unknown" for others."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


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


class ShedLog:
    """The transport's log of refused requests: one info line each, at most 20 per 10 s; the
    rest are counted, and `flush` (every 10 s, while connections are being shed) writes one
    line with the totals. Loop thread only."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.lines = self.suppressed = 0
        self.last: tuple[int, ...] = (0, 0, 0, 0)

    def note(self, fmt: str, *args: Any) -> None:
        if self.lines < 20:
            self.lines += 1
            self.log.info(fmt, *args)
        else:
            self.suppressed += 1

    def flush(self, server: str, open_now: int, stats: Mapping[str, int]) -> None:
        shed = (stats["evicted"], stats["refused"], stats["timeouts"], stats["bad_requests"])
        if shed != self.last or self.suppressed:
            self.log.info("event=http_shed server=%s open=%d evicted=%d refused=%d timeouts=%d bad_requests=%d "
                          "lines_suppressed=%d", server, open_now, *shed, self.suppressed)
        self.last = shed
        self.lines = self.suppressed = 0


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
