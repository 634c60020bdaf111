"""Connections to the outbox and what every user of it shares: side connections (`connect`),
row decoding, the corruption test, the commit-latency histogram, record ids. The writer
(scanner/store.py re-exports all of these), its run-time repairs (scanner/store_repair.py) and
the delivery side (scanner/outbox.py) share them from here."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from scanner.errors import StoreError

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
BUSY_TIMEOUT_MS = 5000

_last_id_ms = 0
_id_lock = threading.Lock()


def new_record_id() -> str:
    """A time-ordered UUID-like id (48-bit milliseconds + 80 random bits, 32 hex), made before
    the insert. Unique like uuid4, but consecutive passages land on the same record_id index
    page, so a WAL checkpoint writes fewer distinct pages (less SD wear) than random uuid4."""
    global _last_id_ms
    with _id_lock:
        ms = max(int(time.time() * 1000), _last_id_ms)  # never backwards within a process
        _last_id_ms = ms
    return f"{ms & 0xFFFFFFFFFFFF:012x}{os.urandom(10).hex()}"


def is_corruption(e: BaseException) -> bool:
    return isinstance(e, sqlite3.DatabaseError) and getattr(e, "sqlite_errorcode", None) in _CORRUPT_CODES


def connect(path: str | Path, *, readonly: bool = False, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A side connection (uploader, API request, maintenance, CLI). Cheap to open, so callers
    open one per unit of work and never hold a read transaction across network I/O.
    StoreError when `readonly` and there is no outbox at `path`."""
    p = Path(path)
    if readonly:
        if not p.exists():
            raise StoreError(f"no outbox at {p}; fix: check [store] path in the config, or give --db FILE")
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA query_only=ON")
    else:
        conn = sqlite3.connect(str(p), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                               isolation_level=None)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA journal_size_limit=8388608")
        conn.execute("PRAGMA secure_delete=OFF")
    return conn


def decode_row(names: list[str], r: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(names, r, strict=True))
    d.pop("delivered_at", None)
    d["reasons"] = json.loads(d["reasons"])
    d["credentials"] = json.loads(d["credentials"] or "[]")
    d["clock_trusted"] = bool(d["clock_trusted"])
    return d


def select_rows(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT * FROM passages WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
    names = [d[0] for d in cur.description]
    return [decode_row(names, r) for r in cur.fetchall()]


class CommitLatency:
    """Histogram of record() commit times (fsync included), for /metrics."""

    BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS_S) + 1)
        self.total_s = 0.0
        self.n = 0

    def observe(self, s: float) -> None:
        i = next((i for i, b in enumerate(self.BUCKETS_S) if s <= b), len(self.BUCKETS_S))
        self.counts[i] += 1
        self.total_s += s
        self.n += 1


COMMIT_LATENCY = CommitLatency()

