"""The SQLite outbox: one row per passage, committed before the lane signals.

Durability (RECORDS.md section 2.2): WAL with `synchronous=FULL` on the connection that
records passages, so a commit that returned is on the card when the card honours flush: one
fsync per passage, and a record the person was told about survives kill -9 and power loss.
(WAL/NORMAL would lose the last commits since the previous WAL sync on power loss.)

Rows are ordered by `seq`, a number taken from `meta.next_seq` inside the same transaction,
never by the wall clock (the Pi has no RTC) and never reused after pruning. `record_id` is a
UUID made before the insert and UNIQUE, so inserting the same record twice is harmless.
Nothing personal is stored: no payload, no name, no ID number (CODES.md section 7).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from scanner.errors import StoreError
from scanner.models import PassageRecord

log = logging.getLogger(__name__)

PASSAGE_COLUMNS: dict[str, type] = {
    "seq": int, "record_id": str, "device_id": str, "checkpoint_id": str, "checkpoint_kind": str,
    "ts_utc": str, "clock_trusted": int, "boot_id": str, "mono_s": float, "verdict": str,
    "reasons": str, "credentials": str, "credential_type": str, "issuer": str, "kid": str,
    "token_hash": str, "colour": str, "temperature_c": float, "object_c": float, "ambient_c": float,
    "temp_status": str, "calibration_version": str, "residence_village": str,
    "residence_grid": str, "trust_version": int, "override_by": str, "override_verdict": str,
    "latency_ms": float, "delivered_at": str,
}


def _m001_passages(db: sqlite_utils.Database) -> None:
    passages, meta = db.table("passages"), db.table("meta")
    passages.create(PASSAGE_COLUMNS, pk="seq", not_null={"record_id", "verdict", "ts_utc"})
    passages.create_index(["record_id"], unique=True)
    meta.create({"key": str, "value": str}, pk="key")
    meta.insert({"key": "next_seq", "value": "1"})


# Named migrations, applied in order, each once; never edit one that has shipped.
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_passages", _m001_passages),
]


class Store:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> Store:
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the outbox directory {p.parent} ({e.strerror}); fix: "
                             "create it and give the service user write access, or set [store] path") from None
        if not os.access(p.parent, os.W_OK):
            raise StoreError(f"outbox directory {p.parent} is not writable; fix: chown it to the service "
                             "user, or set [store] path to a writable place") from None
        try:
            conn = sqlite3.connect(str(p), timeout=5.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=8388608")
            conn.execute("PRAGMA secure_delete=OFF")
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"outbox {p} cannot be opened ({e}); fix: move it aside and restart "
                             "(a fresh outbox is created)") from None
        if ok != "ok":
            conn.close()
            raise StoreError(f"outbox {p} failed its integrity check ({ok}); fix: move {p.name} and its "
                             "-wal/-shm files aside together and restart")
        store = cls(conn, str(p))
        store._migrate()
        return store

    def _migrate(self) -> None:
        with self._tx():
            self.conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
            for name, fn in MIGRATIONS:
                if name not in done:
                    fn(self.db)
                    self.conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))
                    log.info("event=store_migration name=%s", name)

    def _tx(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._lock.acquire()
                store.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
                try:
                    store.conn.execute("ROLLBACK" if et else "COMMIT")
                finally:
                    store._lock.release()

        return _Tx()

    def record(self, rec: PassageRecord) -> int:
        """Commit one passage and return its seq. Raises StoreError (full disk, I/O error):
        the caller must then show FAULT, not the verdict, since nothing was recorded."""
        row = dataclasses.asdict(rec)
        row["reasons"] = json.dumps(list(rec.reasons))
        row["credentials"] = json.dumps([c.as_dict() for c in rec.credentials], ensure_ascii=False)
        row["clock_trusted"] = int(rec.clock_trusted)
        row.pop("extra", None)
        try:
            with self._tx():
                existing = self.conn.execute("SELECT seq FROM passages WHERE record_id = ?",
                                             (rec.record_id,)).fetchone()
                if existing:
                    return int(existing[0])
                seq = int(self.conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
                row["seq"] = seq
                cols = ", ".join(row)
                self.conn.execute(f"INSERT INTO passages ({cols}) VALUES ({', '.join('?' * len(row))})",
                                  list(row.values()))
                self.conn.execute("UPDATE meta SET value = ? WHERE key='next_seq'", (str(seq + 1),))
                return seq
        except sqlite3.Error as e:
            raise StoreError(f"could not record the passage in {self.path} ({e}); fix: check free disk "
                             "space (df -h) and the SD card") from None

    def rows(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM passages WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        names = [d[0] for d in cur.description]
        out = []
        for r in cur.fetchall():
            d = dict(zip(names, r, strict=True))
            d["reasons"] = json.loads(d["reasons"])
            d["credentials"] = json.loads(d["credentials"] or "[]")
            d["clock_trusted"] = bool(d["clock_trusted"])
            out.append(d)
        return out

    def iter_all(self, batch: int = 1000) -> Iterator[dict[str, Any]]:
        after = 0
        while rows := self.rows(after, batch):
            yield from rows
            after = rows[-1]["seq"]

    def count(self, where: str = "1=1") -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM passages WHERE {where}").fetchone()[0])

    def counts_by_verdict(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT verdict, count(*) FROM passages GROUP BY verdict").fetchall())

    def close(self) -> None:
        with self._lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()
