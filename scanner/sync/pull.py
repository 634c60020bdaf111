"""Pull client for the central side and for technicians: device API -> a JSON Lines file.

Exactly once in the file, at least once over the network (Kafka's commit-after-processing,
docs/durability.md section 7): each page is appended and fsynced, then the cursor file is replaced atomically
(write, fsync, rename, fsync the directory) with the cursor *and the file length it covers*,
and only then is the cursor acked on the device. After a crash, the next run cuts the file
back to the length in the cursor file (a page written but not yet covered is fetched again),
re-sends the ack (idempotent) and continues.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from scanner.errors import ScannerError
from scanner.fsutil import fsync_dir
from scanner.numbers import loads_json
from scanner.sync import deadline as http_deadline
from scanner.sync.httpbody import BodyTooLarge, DeadlineExceeded, read_body
from scanner.sync.uploader import full_jitter, parse_retry_after

RECORDS_PATH = "/api/v1/records"


class PullClient:
    def __init__(self, url: str, token: str, out: str | Path, cursor_file: str | Path | None = None, *,
                 limit: int = 1000, ca_bundle: str | None = None, timeout: tuple[float, float] = (5.0, 30.0),
                 max_attempts: int = 8, retry_after_max_s: float = 60.0, session: requests.Session | None = None,
                 progress: Callable[[str], None] | None = None, sleep: Callable[[float], Any] = time.sleep,
                 deadline_s: float = 60.0, max_body_bytes: int = 64 << 20, retry_budget_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        base = url.rstrip("/")
        for suffix in (RECORDS_PATH + "/ack", RECORDS_PATH):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        if not base.startswith(("http://", "https://")):
            raise ScannerError(f"not a device URL (got {url!r}); fix: e.g. https://10.8.0.12:8787")
        self.base = base
        self.token = token
        self.out = Path(out)
        self.cursor_file = Path(cursor_file) if cursor_file else Path(str(out) + ".cursor")
        self.limit = limit
        self.verify: str | bool = ca_bundle or True
        self.timeout = timeout
        # Each request ends within deadline_s, from connect to the last byte of the answer
        # (scanner/sync/deadline.py): the (connect, read) timeouts alone let a device that drips a
        # byte per read timeout, headers or body, go on forever. All attempts at one request,
        # waits included, end within retry_budget_s.
        self.deadline_s = deadline_s
        self.retry_budget_s = retry_budget_s
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.max_attempts = max_attempts
        self.retry_after_max_s = retry_after_max_s
        self.session = http_deadline.mount(session or requests.Session())
        self.progress = progress or (lambda s: print(s, file=sys.stderr))
        self.sleep = sleep
        self.rng = random.Random()
        self.requests = 0

    # -- cursor file ---------------------------------------------------------------------
    def load_cursor(self) -> tuple[str, int]:
        if not self.cursor_file.exists():
            return "", 0
        try:
            d = loads_json(self.cursor_file.read_text(encoding="utf-8"))
            cursor, size, url = str(d["cursor"]), int(d["bytes"]), str(d.get("url", self.base))
        except (OSError, ValueError, KeyError, TypeError):
            raise ScannerError(f"cursor file {self.cursor_file} is unreadable; fix: restore it, or delete it and "
                               "the output file to pull everything again") from None
        if url != self.base:
            raise ScannerError(f"cursor file {self.cursor_file} belongs to {url}, not {self.base}; fix: use "
                               "another --out (one file per device)")
        return cursor, size

    def save_cursor(self, cursor: str, size: int) -> None:
        tmp = self.cursor_file.with_name(self.cursor_file.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"cursor": cursor, "bytes": size, "url": self.base, "saved_at": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.cursor_file)
        fsync_dir(self.cursor_file.parent.resolve())

    def resume(self) -> tuple[str, int]:
        """Cut the output back to what the cursor covers."""
        cursor, size = self.load_cursor()
        have = self.out.stat().st_size if self.out.exists() else 0
        if have < size:
            raise ScannerError(f"{self.out} is shorter ({have} bytes) than its cursor file says ({size}); fix: "
                               "restore the file, or delete both to pull everything again")
        if have > size:
            with open(self.out, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
            self.progress(f"resumed: dropped {have - size} bytes written after the last saved cursor "
                          "(they are fetched again)")
        return cursor, size

    # -- HTTP ----------------------------------------------------------------------------
    def _exchange(self, method: str, path: str, headers: dict[str, str], deadline: float,
                  **kw: Any) -> tuple[requests.Response, bytes]:
        """One request and its whole answer by the monotonic `deadline`, connect and headers
        included (DeadlineExceeded and the other httpbody errors are requests errors)."""
        left = max(0.001, deadline - time.monotonic())
        with http_deadline.guarded(deadline):
            r = self.session.request(method, self.base + path, headers=headers, stream=True, verify=self.verify,
                                     timeout=(min(self.timeout[0], left), min(self.timeout[1], left)), **kw)
            try:
                return r, read_body(r, deadline=deadline, limit=self.max_body_bytes)
            finally:
                r.close()

    def _request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        why = "no attempt"
        budget_end = self.clock() + self.retry_budget_s
        attempts = 0
        for attempt in range(self.max_attempts):
            if attempt and self.clock() >= budget_end:
                break
            attempts += 1
            self.requests += 1
            deadline = time.monotonic() + min(self.deadline_s, max(0.0, budget_end - self.clock()))
            try:
                r, content = self._exchange(method, path, headers, deadline, **kw)
            except requests.exceptions.SSLError as e:
                raise ScannerError(f"TLS with {self.base} failed ({e}); fix: pass the device's CA with "
                                   "--ca-file") from None
            except BodyTooLarge:
                raise ScannerError(f"{self.base} answered more than {self.max_body_bytes} bytes; fix: pull "
                                   "with a smaller --limit") from None
            except DeadlineExceeded:
                wait = full_jitter(attempt, 1.0, 30.0, self.rng)
                why = f"no complete answer within the {self.deadline_s:g} s deadline"
            except requests.exceptions.RequestException as e:
                wait, why = full_jitter(attempt, 1.0, 30.0, self.rng), e.__class__.__name__
            else:
                if r.status_code == 200:
                    try:
                        data = loads_json(content)  # r.json() would take NaN and Infinity
                    except (ValueError, UnicodeDecodeError):
                        raise ScannerError(f"{self.base} answered something that is not JSON; fix: check "
                                           "the URL points at the device API") from None
                    if not isinstance(data, dict):
                        raise ScannerError(f"{self.base} answered unexpected JSON; fix: check the URL")
                    return data
                if r.status_code in (401, 403):
                    raise ScannerError(f"{self.base} refused the token (HTTP {r.status_code}); fix: use the file "
                                       "named by the device's [api] token_file")
                if r.status_code == 404:
                    raise ScannerError(f"{self.base}{path} not found; fix: give the device address, e.g. "
                                       "https://10.8.0.12:8787, with [api] enabled there")
                ra = parse_retry_after(r.headers.get("Retry-After")) if r.status_code in (429, 503) else None
                if r.status_code < 500 and r.status_code != 429:
                    text = content[:200].decode("utf-8", "replace")
                    raise ScannerError(f"{self.base} answered HTTP {r.status_code} ({text}); fix: "
                                       "update this client or the device")
                wait = min(ra, self.retry_after_max_s) if ra is not None else full_jitter(attempt, 1.0, 30.0, self.rng)
                why = f"HTTP {r.status_code}"
            if attempt + 1 >= self.max_attempts:
                break
            wait = min(wait, max(0.0, budget_end - self.clock()))
            self.progress(f"{why}; retrying in {wait:.1f} s")
            self.sleep(wait)
        raise ScannerError(f"{self.base} did not answer after {attempts} attempts in {self.retry_budget_s:g} s at most "
                           f"(last: {why}); fix: check the network and that the daemon runs with [api] enabled; run "
                           "pull again to resume")

    def ack(self, cursor: str) -> None:
        try:
            self._request("POST", RECORDS_PATH + "/ack", json={"cursor": cursor})
        except ScannerError as e:
            self.progress(f"ack not sent ({e}); it is sent again on the next run")

    # -- the loop ------------------------------------------------------------------------
    def run(self, follow_s: float = 0.0, stop: Callable[[], bool] = lambda: False) -> int:
        """Pull until the device has nothing more (or forever every follow_s). Returns records written."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        cursor, size = self.resume()
        if cursor:
            self.ack(cursor)
        written = 0
        while not stop():
            page = self._request("GET", RECORDS_PATH, params={"after": cursor, "limit": self.limit})
            records, nxt, more = page.get("records"), page.get("next_cursor"), page.get("has_more")
            if not (isinstance(records, list) and all(isinstance(r, dict) for r in records)
                    and isinstance(nxt, str) and isinstance(more, bool)):
                raise ScannerError(f"{self.base} answered without a list of records, a next_cursor and has_more; "
                                   "fix: update the device or this client")
            if page.get("cursor_reset"):
                self.progress("the device started a new outbox (the old one was damaged): continuing from its start")
            if records:
                new_file = not self.out.exists()
                try:
                    data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                                    for r in records)
                except (RecursionError, ValueError):
                    raise ScannerError(f"{self.base} answered records nested too deeply to store; fix: check the "
                                       "URL points at the device API") from None
                with open(self.out, "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                    size = f.tell()
                if new_file:
                    fsync_dir(self.out.parent.resolve())
                written += len(records)
            if records or nxt != cursor:
                self.save_cursor(nxt, size)  # the file is on disk: only now may the device forget
                cursor = nxt
                self.ack(cursor)
                self.progress(f"pulled {written} record(s); cursor {cursor}")
            if not more:
                if follow_s <= 0:
                    break
                self.sleep(follow_s)
        return written
