"""Bounded HTTP for the trust sync and the online check (requests underneath).

Every request has a connect and a read timeout, a deadline for the whole exchange from connect
to the last byte (scanner/sync/deadline.py: a server that drips one byte a second, in the
headers or the body, never trips a read timeout), a body size cap checked against Content-Length and
again while reading, and a content-type check (a captive portal's "200 OK text/html" is not a
trust list). The server's `Date` header feeds the clock's server offset, but only from a response
that came over HTTPS with the certificate verified: over plain HTTP anyone on the path (a captive
portal, a spoofed DNS answer) could set the gate's clock, so it is ignored. Errors are `FetchError`
with one line that names the fix; they never carry a request body (an online code's text).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from urllib3.util.retry import Retry

from ..clock import ServerOffset
from ..numbers import loads_json
from .deadline import DeadlineAdapter, Watchdog
from .httpbody import BodyInterrupted, BodyTooLarge, DeadlineExceeded, read_body

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_BYTES = 64 * 1024
USER_AGENT = "checkpoint-scanner"
_CONTENT_RANGE = re.compile(r"^bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)$")


class FetchError(Exception):
    """A download or call failed. `partial` holds the bytes received before an interruption
    (the status snapshot resumes from them). `restart`: a resumed download (Range) cannot be
    continued (the server resumed at the wrong place, or the whole would pass the size cap):
    drop what was kept and start again from byte 0."""

    def __init__(self, message: str, *, partial: bytes = b"", status: int | None = None,
                 etag: str | None = None, restart: bool = False) -> None:
        super().__init__(message)
        self.partial = partial
        self.status = status
        self.etag = etag
        self.restart = restart


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    etag: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def full_jitter(failures: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """AWS "full jitter" back-off: uniform in 0..min(cap, base * 2^failures). Spreads a fleet's
    retries after an outage instead of having every gate hit the server in step."""
    ceiling = min(cap_s, base_s * (2 ** min(failures, 32)))
    return (rng or random).uniform(0, ceiling)


def _late(what: str, deadline_s: float) -> str:
    return (f"{what}: download took longer than {deadline_s:.0f} s; fix: check the link, or raise [sync] "
            "download_timeout_s")


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class Http:
    """One requests.Session with the device's limits. Thread-safe enough for our use: the sync
    thread and the online pool each get their own instance."""

    def __init__(self, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 20.0,
                 download_timeout_s: float = 300.0, max_body_bytes: int = 64 << 20, ca_bundle: str = "",
                 offset: ServerOffset | None = None, headers: Mapping[str, str] | None = None,
                 session: requests.Session | None = None) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.download_timeout_s = download_timeout_s
        self.max_body_bytes = max_body_bytes
        self.verify: str | bool = ca_bundle or True
        self.offset = offset
        self._plain_noted = False
        self.session = session or requests.Session()
        # One quiet retry of a GET whose connection failed (a pooled keep-alive connection the
        # server closed a moment ago); never for POST, never on a status or a read error.
        retry = Retry(total=1, connect=1, read=False, status=False, other=0, allowed_methods=frozenset({"GET"}),
                      raise_on_status=False, raise_on_redirect=False, redirect=False)
        # DeadlineAdapter: the whole exchange, connect and headers included, ends at the deadline
        # of get()/post_json() (scanner/sync/deadline.py), not only the body.
        self.session.mount("https://", DeadlineAdapter(max_retries=retry))
        self.session.mount("http://", DeadlineAdapter(max_retries=retry))
        self.session.trust_env = False  # no proxies or netrc from the environment: config only
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                     **(headers or {})})

    def close(self) -> None:
        self.session.close()

    def _note_date(self, resp: requests.Response, sent_wall: float, sent_mono: float) -> None:
        """Feed the response's `Date` (RFC 9110 section 6.6.1) to the server offset, only when it
        came over HTTPS with certificate verification on (requests verifies against `verify`)."""
        if self.offset is None:
            return
        date = resp.headers.get("Date")
        if not date:
            return
        if not (resp.url or "").lower().startswith("https://") or self.verify is False:
            if not self._plain_noted:
                self._plain_noted = True
                log.warning("event=server_time_ignored detail=the server's Date counts only over verified HTTPS; "
                            "fix: use an https:// [sync] server_url, or NTP")
            return
        try:
            server_s = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            return
        self.offset.record(server_s, sent_wall, sent_mono)

    def _request(self, method: str, url: str, what: str, *, timeout: tuple[float, float] | None = None,
                 **kw: Any) -> tuple[requests.Response, float]:
        sent_wall, sent_mono = time.time(), time.monotonic()
        try:
            resp = self.session.request(method, url, stream=True, verify=self.verify, allow_redirects=False,
                                        timeout=timeout or (self.connect_timeout_s, self.read_timeout_s), **kw)
        except requests.exceptions.SSLError:
            raise FetchError(f"{what}: TLS certificate of the server not accepted; fix: set [sync] ca_bundle "
                             "to the CA that signs the server certificate, and check the device clock") from None
        except requests.exceptions.ConnectTimeout:
            raise FetchError(f"{what}: connect timed out; fix: check the network and [sync] server_url") from None
        except requests.exceptions.ConnectionError:
            raise FetchError(f"{what}: cannot connect to the server; fix: check the network and "
                             "[sync] server_url") from None
        except requests.exceptions.Timeout:
            raise FetchError(f"{what}: the server did not answer in time; fix: none needed, retrying") from None
        except requests.exceptions.RequestException as e:
            raise FetchError(f"{what}: request failed ({e.__class__.__name__}); fix: check [sync] server_url") \
                from None
        self._note_date(resp, sent_wall, sent_mono)
        return resp, sent_mono

    def _read_body(self, resp: requests.Response, what: str, start_mono: float, limit: int,
                   deadline_s: float, *, resumed: bool = False) -> bytes:
        """The whole body within `limit` bytes and `deadline_s` seconds from `start_mono`, else
        FetchError with the bytes received so far (scanner/sync/httpbody.py does the reading).
        `resumed`: the body continues a partial download, so going over `limit` means restart."""
        status, etag = resp.status_code, resp.headers.get("ETag")
        try:
            return read_body(resp, deadline=start_mono + deadline_s, limit=limit, chunk=CHUNK_BYTES)
        except DeadlineExceeded as e:
            raise FetchError(f"{what}: download took longer than {deadline_s:.0f} s; fix: check the "
                             "link, or raise [sync] download_timeout_s", partial=e.partial, status=status,
                             etag=etag) from None
        except BodyTooLarge as e:
            if resumed:
                raise FetchError(f"{what}: the resumed download would pass the {self.max_body_bytes}-byte cap "
                                 f"({e}); abandoned, it restarts from zero; fix: raise [sync] max_body_mb if the "
                                 "server's data really is that large", status=status, restart=True) from None
            raise FetchError(f"{what}: {e}; fix: raise [sync] max_body_mb if the server's data really "
                             "is that large") from None
        except BodyInterrupted as e:
            raise FetchError(f"{what}: download {e}; fix: none needed, it resumes on the next try",
                             partial=e.partial, status=status, etag=etag) from None

    def _watched(self, what: str, deadline_s: float, fn: Callable[[], T]) -> T:
        """`fn()` (one exchange) under a Watchdog that shuts its connection `deadline_s` from now:
        a server that drips its status line or headers ends like one that drips the body."""
        with Watchdog(time.monotonic() + deadline_s) as w:
            try:
                result = fn()
            except FetchError as e:
                if not w.fired:
                    raise
                raise FetchError(_late(what, deadline_s), partial=e.partial, status=e.status, etag=e.etag) from None
        if w.fired:
            raise FetchError(_late(what, deadline_s))
        return result

    def get(self, url: str, what: str, *, accept: Iterable[str], etag: str | None = None,
            range_start: int = 0, if_range: str | None = None) -> Response:
        """GET a bundle. Returns 200 / 206 (with the body), or 204 / 304 / 404 / 410 (without);
        any other status, a wrong content type or a bad body is a FetchError. The whole exchange
        ends within download_timeout_s."""
        return self._watched(what, self.download_timeout_s,
                             lambda: self._get(url, what, accept=accept, etag=etag, range_start=range_start,
                                               if_range=if_range))

    def _get(self, url: str, what: str, *, accept: Iterable[str], etag: str | None, range_start: int,
             if_range: str | None) -> Response:
        headers = {"Accept": ", ".join(accept)}
        if etag:
            headers["If-None-Match"] = etag
        if range_start > 0:
            headers["Range"] = f"bytes={range_start}-"
            if if_range:
                headers["If-Range"] = if_range
        resp, start = self._request("GET", url, what, headers=headers)
        status = resp.status_code
        if status in (204, 304, 404, 410):
            resp.close()
            return Response(status, b"", resp.headers.get("ETag"), dict(resp.headers))
        if status not in (200, 206):
            resp.close()
            raise FetchError(f"{what}: server answered HTTP {status}; fix: none on this device if it is a "
                             "server fault (retrying with back-off); check [sync] server_url for 4xx",
                             status=status)
        ctype = _media_type(resp.headers.get("Content-Type"))
        if ctype not in accept:
            resp.close()
            raise FetchError(f"{what}: server sent {ctype or 'no content type'}, not {' or '.join(accept)}; "
                             "fix: check [sync] server_url (a captive portal or proxy may be answering)")
        limit = self.max_body_bytes
        if status == 206:
            limit = self._resume_budget(resp, what, range_start)
        body = self._read_body(resp, what, start, limit, self.download_timeout_s, resumed=status == 206)
        return Response(status, body, resp.headers.get("ETag"), dict(resp.headers))

    def _resume_budget(self, resp: requests.Response, what: str, range_start: int) -> int:
        """For a 206 answer: the bytes it may still bring so that the partial plus it stay within
        `max_body_bytes` (the cap of the whole). FetchError(restart=True) when it does not start
        at `range_start`, or its Content-Range (RFC 9110 section 14.4) says the whole is larger
        than the cap: a server that keeps "resuming" must not grow the partial without bound."""
        cr = resp.headers.get("Content-Range", "")
        m = _CONTENT_RANGE.match(cr)
        why = None
        if range_start <= 0 or m is None or int(m.group(1)) != range_start:
            why = f"resumed at the wrong place ({cr or 'no Content-Range'}; asked from byte {range_start})"
        elif m.group(3) != "*" and int(m.group(3)) > self.max_body_bytes:
            why = f"says the whole is {m.group(3)} bytes, over the {self.max_body_bytes}-byte cap"
        if why is not None:
            resp.close()
            raise FetchError(f"{what}: server {why}; abandoned, the download restarts from zero; fix: none on "
                             "this device if it recurs only once; else check the server (or raise [sync] "
                             "max_body_mb if its data really is that large)", status=206, restart=True)
        return max(0, self.max_body_bytes - range_start)

    def post_json(self, url: str, doc: Mapping[str, Any], what: str, *, budget_s: float,
                  max_body_bytes: int = 64 * 1024) -> Any:
        """POST JSON and return the decoded JSON answer, the whole exchange within `budget_s`
        (FetchError after it; deeply nested or NaN-bearing JSON is "not JSON")."""
        return self._watched(what, budget_s, lambda: self._post_json(url, doc, what, budget_s, max_body_bytes))

    def _post_json(self, url: str, doc: Mapping[str, Any], what: str, budget_s: float, max_body_bytes: int) -> Any:
        resp, start = self._request("POST", url, what, json=dict(doc), headers={"Accept": "application/json"},
                                    timeout=(min(self.connect_timeout_s, budget_s), budget_s))
        if resp.status_code != 200:
            resp.close()
            raise FetchError(f"{what}: server answered HTTP {resp.status_code}", status=resp.status_code)
        if _media_type(resp.headers.get("Content-Type")) != "application/json":
            resp.close()
            raise FetchError(f"{what}: server did not answer JSON; fix: check [sync] server_url")
        body = self._read_body(resp, what, start, max_body_bytes, budget_s)
        try:
            return loads_json(body.decode("utf-8"))  # NaN/Infinity: "not JSON" (a JSONDecodeError)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FetchError(f"{what}: answer is not JSON; fix: check [sync] server_url") from None
