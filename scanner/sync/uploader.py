"""Push upload: outbox -> central server, in its own thread; the scan loop never waits on it.

Protocol (docs/push-protocol.md): `POST url` with
`{"device_id", "checkpoint_id", "records": [...]}` (gzip when over 1 KiB, `Idempotency-Key` =
hash of the record ids, `Authorization: Bearer`). The server stores each record under a
permanent unique `record_id` and answers 200 with
`{"results": [{"record_id", "status": "accepted"|"duplicate"|"rejected", "reason"}]}`.
Accepted and duplicate are delivered; rejected goes to the dead-letter table with its reason;
then the whole batch is marked delivered and the queue moves on.

Discipline (docs/durability.md section 7):
- batches by count, bytes and age: send when `batch_records` wait, or their JSON reaches
  `batch_kib`, or the oldest has waited `max_age_s` (measured on the monotonic clock, never the
  wall clock); both limits are also the caps;
- timeouts always: (connect, read) on every request plus a whole-attempt deadline from connect
  to the last byte of the answer (scanner/sync/deadline.py and httpbody.py, shared with the
  trust fetch and the pull client);
- full-jitter back-off: wait random(0, min(cap, base * 2^n)) after the n-th failure in a row;
- 429 and 503 with Retry-After: wait what the server asks, capped at `retry_after_max_s`;
- 413: halve the batch (down to one record; a single record still too large is dead-lettered);
- 400/422 on a batch: halve it the same way to isolate the record the server cannot parse,
  which is then dead-lettered with the status and the server's reason;
- 401/403 is a configuration fault, not a bad record: nothing is dead-lettered, the uploader
  waits the back-off cap and logs the fix;
- any other answer or a broken connection: back-off and retry the same batch.
A lost ack (power cut after the server stored the batch) only causes a re-send, answered
`duplicate`.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from scanner import outbox
from scanner.config import UploadSection
from scanner.numbers import loads_json
from scanner.store import connect
from scanner.sync import deadline as http_deadline
from scanner.sync.httpbody import read_body

log = logging.getLogger("scanner.upload")

GZIP_OVER_BYTES = 1024
MAX_RESPONSE_BYTES = 4 << 20
STATUSES = ("accepted", "duplicate", "rejected")


@dataclass
class SyncState:
    """Counters shared by the uploader, maintenance and the API's /metrics (one process)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    records_sent: dict[str, int] = field(default_factory=dict)
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    disk_alarm: bool = False
    maintenance_errors: int = 0

    def fail(self, reason: str) -> None:
        with self.lock:
            self.failures[reason] = self.failures.get(reason, 0) + 1

    def sent(self, status: str, n: int) -> None:
        with self.lock:
            self.records_sent[status] = self.records_sent.get(status, 0) + n


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0, min(cap, base * (2 ** min(attempt, 32))))


class Uploader(threading.Thread):
    def __init__(self, cfg: UploadSection, url: str, token: str, store_path: str, device: tuple[str, str],
                 stop: threading.Event, state: SyncState | None = None, *, ca_bundle: str = "",
                 session: requests.Session | None = None, rng: random.Random | None = None) -> None:
        super().__init__(name="uploader", daemon=True)
        self.cfg = cfg
        self.url = url
        self.token = token
        self.store_path = store_path
        self.device_id, self.checkpoint_id = device
        self.stop_event = stop
        self.state = state or SyncState()
        self.verify: str | bool = ca_bundle or True
        self.session = http_deadline.mount(session or requests.Session())
        self.rng = rng or random.Random()
        self.wait: Callable[[float], Any] = stop.wait  # tests wrap it to see every wait
        self.batch_limit = cfg.batch_records
        self.failures_in_row = 0
        self._first_seen: float | None = None
        self._auth_logged = False

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        log.info("event=uploader_started url=%s batch_records=%d", self.url, self.cfg.batch_records)
        while not self.stop_event.is_set():
            try:
                delay = self.step()
            except Exception as e:  # never die silently: a bug here must not stop uploads for good
                log.exception("event=uploader_error error=%r", str(e))
                self.state.fail("internal")
                delay = self._backoff()
            if delay > 0 and not self.stop_event.is_set():
                self.wait(delay)
        log.info("event=uploader_stopped")

    def step(self) -> float:
        """One decision: send a batch or wait. Returns how long to wait before the next step."""
        conn = connect(self.store_path)
        try:
            rows = outbox.pending(conn, self.batch_limit + 1)
        finally:
            conn.close()
        if not rows:
            self._first_seen = None
            return self.cfg.poll_s
        now = time.monotonic()
        if self._first_seen is None:
            self._first_seen = now
        more = len(rows) > self.batch_limit
        batch, raw_bytes = self._fit(rows[: self.batch_limit])
        full = len(batch) >= self.cfg.batch_records or more or raw_bytes >= self.cfg.batch_kib * 1024 \
            or len(batch) < min(len(rows), self.batch_limit)
        age = now - self._first_seen
        if not full and age < self.cfg.max_age_s:
            return min(self.cfg.poll_s, self.cfg.max_age_s - age)
        delay = self.send(batch)
        if delay == 0 and not more:
            self._first_seen = None
        return delay

    def _fit(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """As many rows as fit in batch_kib of JSON (at least one)."""
        cap = self.cfg.batch_kib * 1024
        total = 0
        for i, r in enumerate(rows):
            n = len(json.dumps(r, ensure_ascii=False).encode()) + 1
            if i and total + n > cap:
                return rows[:i], total
            total += n
        return rows, total

    def _backoff(self) -> float:
        d = full_jitter(self.failures_in_row, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng)
        self.failures_in_row += 1
        return d

    # -- one request ---------------------------------------------------------------------
    def _post(self, batch: list[dict[str, Any]]) -> tuple[int, dict[str, str], bytes]:
        ids = [r["record_id"] for r in batch]
        body = json.dumps({"device_id": self.device_id, "checkpoint_id": self.checkpoint_id, "records": batch},
                          ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                   "Idempotency-Key": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]}
        if len(body) > GZIP_OVER_BYTES:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        deadline = time.monotonic() + self.cfg.attempt_deadline_s
        with self.state.lock:
            self.state.requests += 1
            self.state.last_attempt_at = time.time()
        # One deadline from connect to the last byte (scanner/sync/deadline.py): a server that drips
        # its status line or headers is cut off too, not only one that drips the body.
        with http_deadline.guarded(deadline):
            resp = self.session.post(self.url, data=body, headers=headers, stream=True, verify=self.verify,
                                     timeout=(self.cfg.connect_timeout_s,
                                              min(self.cfg.read_timeout_s, self.cfg.attempt_deadline_s)))
            try:  # DeadlineExceeded is a requests Timeout, BodyInterrupted a ConnectionError (send() below)
                content = read_body(resp, deadline=deadline, limit=MAX_RESPONSE_BYTES)
                return resp.status_code, dict(resp.headers), content
            finally:
                resp.close()

    def send(self, batch: list[dict[str, Any]]) -> float:
        try:
            status, headers, content = self._post(batch)
        except requests.exceptions.Timeout:
            return self._failed("timeout")
        except requests.exceptions.SSLError as e:
            return self._failed("tls", str(e))
        except requests.exceptions.ConnectionError:
            return self._failed("connection")
        except requests.exceptions.RequestException as e:
            return self._failed("request", str(e))
        if status == 200:
            return self._on_results(batch, content)
        if status in (413, 400, 422):
            return self._shrink_or_dead_letter(batch, status, content, headers)
        if status in (401, 403):
            self.state.fail("auth")
            if not self._auth_logged:
                log.error("event=upload_refused status=%d; fix: check [upload] token_file holds this device's "
                          "token and the server knows device %s", status, self.device_id)
                self._auth_logged = True
            self.failures_in_row += 1
            return self.cfg.backoff_cap_s
        if status in (429, 503):
            ra = parse_retry_after(headers.get("Retry-After"))
            self.state.fail(f"http_{status}")
            if ra is not None:
                self.failures_in_row += 1
                return min(ra, self.cfg.retry_after_max_s)
            return self._backoff()
        return self._failed(f"http_{status}" if status < 600 else "http_other")

    def _failed(self, reason: str, detail: str = "") -> float:
        self.state.fail(reason)
        delay = self._backoff()
        log.warning("event=upload_failed reason=%s retry_in_s=%.2f%s", reason, delay,
                    f" detail={detail[:200]!r}" if detail else "")
        return delay

    def _shrink_or_dead_letter(self, batch: list[dict[str, Any]], status: int, content: bytes,
                               headers: dict[str, str]) -> float:
        self.state.fail(f"http_{status}")
        if len(batch) > 1:
            self.batch_limit = max(1, len(batch) // 2)
            log.warning("event=upload_batch_halved status=%d batch=%d", status, self.batch_limit)
            ra = parse_retry_after(headers.get("Retry-After")) if status == 413 else None
            return min(ra, self.cfg.retry_after_max_s) if ra else 0.0
        reason = f"http_{status}: {content[:200].decode('utf-8', 'replace')}".strip()
        self._deliver(batch, [outbox.DeadLetter(batch[0]["seq"], batch[0]["record_id"], reason)])
        return 0.0

    def _on_results(self, batch: list[dict[str, Any]], content: bytes) -> float:
        try:
            results = loads_json(content)["results"]  # NaN/Infinity refused like any bad answer
            by_id = {r["record_id"]: r for r in results if r.get("status") in STATUSES}
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._failed("bad_response", content[:200].decode("utf-8", "replace"))
        missing = [r["record_id"] for r in batch if r["record_id"] not in by_id]
        if missing:
            return self._failed("bad_response", f"{len(missing)} record(s) without a status")
        dead = [outbox.DeadLetter(r["seq"], r["record_id"], str(by_id[r["record_id"]].get("reason") or "rejected"))
                for r in batch if by_id[r["record_id"]]["status"] == "rejected"]
        self._deliver(batch, dead)
        for s in STATUSES:
            n = sum(1 for r in batch if by_id[r["record_id"]]["status"] == s)
            if n:
                self.state.sent(s, n)
        self.failures_in_row = 0
        self._auth_logged = False
        self.batch_limit = min(self.cfg.batch_records, self.batch_limit * 2)  # regrow after a 413
        return 0.0

    def _deliver(self, batch: list[dict[str, Any]], dead: list[outbox.DeadLetter]) -> None:
        conn = connect(self.store_path)
        try:
            outbox.mark_delivered(conn, batch[-1]["seq"], "push", dead)
        finally:
            conn.close()
        with self.state.lock:
            self.state.last_success_at = time.time()
        for d in dead:
            log.warning("event=dead_letter seq=%d record_id=%s reason=%r", d.seq, d.record_id, d.reason[:200])
        log.info("event=uploaded upto_seq=%d records=%d dead=%d", batch[-1]["seq"], len(batch), len(dead))
