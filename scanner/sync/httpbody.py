"""One HTTP answer body within a whole-request deadline and a size cap: shared by the trust
fetch (fetch.py), the push uploader (uploader.py) and the pull client (pull.py).

Why a deadline: a read timeout bounds each silence, not the whole answer. A server that sends
one byte every 0.5 s never trips a 1 s read timeout (a 52-byte page took 26 s; an endless
chunked answer never ends). Here the deadline is a monotonic instant fixed when the request was
sent, checked before every read, and before every read the socket's timeout is cut to the time
left, so even a read blocked in recv() cannot outlive it by more than a scheduling tick.

Reads use urllib3's `HTTPResponse.read1` (return what has arrived, up to `chunk` bytes, gzip
decoded: the cap counts decoded bytes) on a requests response made with `stream=True`. The
socket is `resp.raw.connection.sock` (urllib3 2.x); urllib3 sets the socket timeout again for
the next request on a pooled connection.
Errors are `BodyError` subclasses, which are also requests exceptions (`Timeout`,
`ConnectionError`), so a caller that already handles those needs nothing new; each carries the
bytes received so far (`partial`) and the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3

CHUNK_BYTES = 64 * 1024


class BodyError(requests.exceptions.RequestException):
    """The body could not be read whole. `partial`: bytes received before the failure."""

    def __init__(self, message: str, *, partial: bytes = b"", status: int | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.status = status


class DeadlineExceeded(BodyError, requests.exceptions.Timeout):
    """The whole-request deadline passed while the body was still arriving."""


class BodyTooLarge(BodyError):
    """Content-Length, or the bytes actually sent, exceed the cap."""


class BodyInterrupted(BodyError, requests.exceptions.ConnectionError):
    """The connection broke or ended before Content-Length bytes arrived."""


def remaining(deadline: float, clock: Callable[[], float] = time.monotonic) -> float:
    """Seconds left until the monotonic `deadline` (never negative)."""
    return max(0.0, deadline - clock())


def _socket(resp: requests.Response) -> Any:
    conn = getattr(resp.raw, "connection", None)
    return getattr(conn, "sock", None)


def read_body(resp: requests.Response, *, deadline: float, limit: int, chunk: int = CHUNK_BYTES,
              clock: Callable[[], float] = time.monotonic) -> bytes:
    """The whole body of `resp` (made with stream=True) by the monotonic instant `deadline` and
    within `limit` bytes. Raises DeadlineExceeded, BodyTooLarge or BodyInterrupted (the response
    is closed then); on success the connection goes back to the pool."""
    status = resp.status_code
    expected: int | None = None
    length = resp.headers.get("Content-Length")
    if length is not None:
        try:
            expected = int(length)
        except ValueError:
            expected = None
        if expected is not None and expected > limit:
            resp.close()
            raise BodyTooLarge(f"{expected} bytes declared, over the {limit}-byte limit", status=status)
    buf = bytearray()
    sock = _socket(resp)
    read_timeout = sock.gettimeout() if sock is not None else None
    try:
        while True:
            left = remaining(deadline, clock)
            if left <= 0:
                raise DeadlineExceeded(f"answer not complete by the deadline ({len(buf)} bytes received)",
                                       partial=bytes(buf), status=status)
            by_deadline = read_timeout is None or left <= read_timeout
            if sock is not None:
                sock.settimeout(left if by_deadline else read_timeout)
            try:
                data = resp.raw.read1(chunk, decode_content=True)
            except Exception as e:  # urllib3 ReadTimeoutError / ProtocolError, socket errors
                timed_out = isinstance(e, (TimeoutError, urllib3.exceptions.ReadTimeoutError))
                if remaining(deadline, clock) <= 0 or (timed_out and by_deadline):
                    raise DeadlineExceeded(f"answer not complete by the deadline ({len(buf)} bytes received)",
                                           partial=bytes(buf), status=status) from None
                raise BodyInterrupted(f"interrupted after {len(buf)} bytes ({e.__class__.__name__})",
                                      partial=bytes(buf), status=status) from None
            if not data:
                break
            buf += data
            if len(buf) > limit:
                raise BodyTooLarge(f"more than the {limit}-byte limit", status=status)
    except BodyError:
        resp.close()
        raise
    identity = resp.headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")
    if identity and expected is not None and len(buf) != expected:
        resp.close()
        raise BodyInterrupted(f"interrupted after {len(buf)} of {expected} bytes", partial=bytes(buf),
                              status=status)
    resp.raw.release_conn()  # read to the end: the connection may be reused
    return bytes(buf)
