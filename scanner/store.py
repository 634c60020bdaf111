"""The SQLite outbox: one row per passage, committed before the lane signals.

Durability (RECORDS.md section 2.2): WAL with `synchronous=FULL` on the connection that
records passages. A `record()` that returned has been fsynced: it survives kill -9, and power
loss too when the card honours flush. What power loss can still take: nothing that was
acknowledged, on a card that tells the truth about flush; on a card that acknowledges a flush
before the data is on flash, the last commits (and, at a checkpoint, possibly the database):
only a relay power-cut test on the chosen card model shows which kind you have.
Side connections (upload marks, pull acks, pruning) use NORMAL: losing one of those only
causes a duplicate upload, which the server drops by `record_id`.

Rows are ordered by `seq`, never by the wall clock (the Pi has no RTC). `seq` is never reused:
`meta.next_seq` is a floor that pruning raises before it deletes, and the writer starts from
max(floor, largest seq + 1), so a commit writes two pages (row + record_id index) and not a
third for a counter. `record_id` is a UUID made before the insert and UNIQUE, so inserting the
same record twice is harmless. Nothing personal is stored (CODES.md section 7).

Corruption: `PRAGMA quick_check` at every open. A damaged outbox is moved aside together with
its -wal and -shm into `corrupt-<time>/` next to it (never deleted: it is evidence and may
still be readable with `queue export --db`), a fresh outbox starts, an alarm is logged and
kept in the fresh outbox's meta for /metrics. The same happens if a write meets corruption.

Disk: `max_bytes` becomes `PRAGMA max_page_count` on the capture connection. When the file
is full and pruning delivered rows cannot make room, `record()` raises StoreError and the
lane shows FAULT: nothing undelivered is ever dropped, and nothing is acknowledged that was
not written. Pruning and the delivery mark live in scanner/outbox.py.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import sqlite_utils

from scanner.errors import StoreError
from scanner.fsutil import ensure_writable_dir, fsync_dir
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
# `delivered_at` (migration 001) is unused: delivery is one mark per batch (outbox.py), which
# writes one page per batch instead of rewriting every delivered row.
_RECORD_FIELDS = [f.name for f in fields(PassageRecord) if f.name != "extra"]
_INSERT_SQL = (f"INSERT INTO passages (seq, {', '.join(_RECORD_FIELDS)}) VALUES "
               f"({', '.join('?' * (len(_RECORD_FIELDS) + 1))}) ON CONFLICT(record_id) DO NOTHING")
_GET_FIELDS = operator.attrgetter(*_RECORD_FIELDS)
_I_REASONS, _I_CREDENTIALS, _I_CLOCK = (_RECORD_FIELDS.index(n) for n in ("reasons", "credentials", "clock_trusted"))
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
BUSY_TIMEOUT_MS = 5000
PAGE_SIZE = 1024


def _m001_passages(db: sqlite_utils.Database) -> None:
    passages, meta = db.table("passages"), db.table("meta")
    passages.create(PASSAGE_COLUMNS, pk="seq", not_null={"record_id", "verdict", "ts_utc"})
    passages.create_index(["record_id"], unique=True)
    meta.create({"key": str, "value": str}, pk="key")
    meta.insert({"key": "next_seq", "value": "1"})


def _m002_delivery(db: sqlite_utils.Database) -> None:
    """One row per delivered batch (push, pull ack or export); the largest `upto_seq` is the
    mark shared by push and pull. Dead letters keep a copy of the record and the reason."""
    db.execute("CREATE TABLE deliveries (upto_seq INTEGER PRIMARY KEY, at REAL NOT NULL, via TEXT NOT NULL)")
    db.execute("CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, "
               "reason TEXT NOT NULL, at REAL NOT NULL, record TEXT NOT NULL)")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('outbox_id', lower(hex(randomblob(6))))")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (str(time.time()),))


def _m003_incremental_vacuum(db: sqlite_utils.Database) -> None:
    """Deleted rows leave free pages; INCREMENTAL lets pruning give them back without a full
    VACUUM. A new outbox is created with it; an older one is rebuilt once (outside a tx)."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")


def _m004_override_of(db: sqlite_utils.Database) -> None:
    """Staff overrides point at the REVIEW record they overrule (PassageRecord.override_of)."""
    db.execute("ALTER TABLE passages ADD COLUMN override_of TEXT")


def _m005_bundle_versions(db: sqlite_utils.Database) -> None:
    """CODES.md section 7: every passage names the versions of *all* trust data in force
    (trust list, status list, policy), so the centre can tell which revocations it knew."""
    db.execute("ALTER TABLE passages ADD COLUMN status_version INTEGER")
    db.execute("ALTER TABLE passages ADD COLUMN policy_version INTEGER")


# Named migrations, applied in order, each once; never edit one that has shipped.
# (name, function, runs inside a transaction)
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None], bool]] = [
    ("001_passages", _m001_passages, True),
    ("002_delivery_and_dead_letters", _m002_delivery, True),
    ("003_incremental_vacuum", _m003_incremental_vacuum, False),
    ("004_override_of", _m004_override_of, True),
    ("005_bundle_versions", _m005_bundle_versions, True),
]


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
    open one per unit of work and never hold a read transaction across network I/O."""
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


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _move_aside(p: Path, why: str) -> Path:
    """Move the db, -wal and -shm together into corrupt-<time>/ beside it (RECORDS 2.1: never
    separate a hot WAL from its database). Also collects a stray -wal/-shm left by an
    interrupted move, so a fresh database never replays a WAL that is not its own."""
    dest = p.parent / f"corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    dest.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        src = Path(str(p) + suffix)
        if src.exists():
            os.replace(src, dest / (p.name + suffix))
    fsync_dir(p.parent)
    (dest / "REASON.txt").write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {why}\n", encoding="utf-8")
    return dest


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock (migrations, meta updates)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> None:
        self.store._lock.acquire()
        try:
            self.store.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        try:
            if et is None:
                try:
                    self.store.conn.execute("COMMIT")
                except BaseException:
                    _rollback(self.store.conn)
                    raise
            else:
                _rollback(self.store.conn)
        finally:
            self.store._lock.release()


class Store:
    """The capture side of the outbox: one connection, FULL sync, used by the lane thread."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.Lock()
        self._next_seq = 1
        self.max_bytes = 0
        self.auto_recover = True
        self.recovered_from: str | None = None

    @classmethod
    def open(cls, path: str | Path, *, max_bytes: int = 0, recover: bool = True) -> Store:
        """Open (or create) the outbox. With `recover`, a corrupt outbox is moved aside and a
        fresh one started (the daemon); without, it raises StoreError (read-only tools)."""
        p = Path(path)
        ensure_writable_dir(p.parent, "outbox directory", "[store] path", StoreError)
        moved: Path | None = None
        if recover and not p.exists() and any(Path(str(p) + s).exists() for s in ("-wal", "-shm")):
            moved = _move_aside(p, "stray -wal/-shm without a database (interrupted move)")
        try:
            store = cls._open_checked(p)
        except StoreError as e:
            if not recover or not getattr(e, "corrupt", False):
                raise
            moved = _move_aside(p, str(e))
            log.error("event=outbox_corrupt action=moved_aside moved_to=%s detail=%r; a fresh outbox "
                      "starts; fix: keep the moved files, export them with `checkpoint-scanner queue export "
                      "--db %s`", moved, str(e), moved / p.name)
            store = cls._open_checked(p)
        store.max_bytes = max_bytes
        store.auto_recover = recover
        store._apply_cap()
        if moved is not None:
            store._note_recovery(moved)
        log.info("event=outbox_open path=%s %s", p, " ".join(f"{k}={v}" for k, v in store.settings().items()))
        return store

    @classmethod
    def _open_checked(cls, p: Path) -> Store:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(p), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                                   isolation_level=None)
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                # Both only take effect before the first table. 1 KiB pages: a passage commit
                # rewrites two pages (row + record_id index) in the WAL, so 4 KiB pages cost
                # ~11.4 KB written per passage and 1 KiB pages ~5.1 KB, under RECORDS 6.9's
                # 6 KB write budget (SD wear). The price is space: about 1 KiB per stored row.
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=8388608")  # the WAL is truncated to 8 MiB after a reset
            conn.execute("PRAGMA secure_delete=OFF")  # this build zeroes deleted content: needless SD writes
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            err = StoreError(f"outbox {p} cannot be opened ({e}); fix: move it aside and restart "
                             "(a fresh outbox is created)")
            err.corrupt = is_corruption(e)  # type: ignore[attr-defined]
            raise err from None
        if ok != "ok":
            conn.close()
            err = StoreError(f"outbox {p} failed its integrity check ({ok}); fix: move {p.name} and its "
                             "-wal/-shm files aside together and restart")
            err.corrupt = True  # type: ignore[attr-defined]
            raise err
        store = cls(conn, str(p))
        store._migrate()
        floor = int(conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        top = conn.execute("SELECT max(seq) FROM passages").fetchone()[0] or 0
        store._next_seq = max(floor, top + 1)
        return store

    def _migrate(self) -> None:
        self.conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
        for name, fn, in_tx in MIGRATIONS:
            if name in done:
                continue
            if in_tx:
                with self._tx():
                    fn(self.db)
                    self.conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))
            else:
                with self._lock:
                    fn(self.db)
                    self.conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))
            log.info("event=store_migration name=%s", name)

    def _apply_cap(self) -> None:
        if self.max_bytes > 0:
            page = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page)}")

    def _note_recovery(self, moved: Path) -> None:
        self.recovered_from = str(moved)
        with self._tx():
            for k, v in (("recovered_from", str(moved)), ("recovered_at", str(time.time()))):
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def _tx(self) -> _Tx:
        return _Tx(self)

    @staticmethod
    def _values(rec: PassageRecord) -> list[Any]:
        v = list(_GET_FIELDS(rec))
        v[_I_REASONS] = json.dumps(list(rec.reasons))
        v[_I_CREDENTIALS] = json.dumps([c.as_dict() for c in rec.credentials], ensure_ascii=False)
        v[_I_CLOCK] = int(rec.clock_trusted)
        return v

    def _insert(self, values: list[Any], record_id: str) -> int:
        """One INSERT in autocommit mode: the statement is its own transaction, committed (WAL
        written and fsynced at FULL) before execute() returns; no BEGIN/COMMIT round trips."""
        t0 = time.perf_counter()
        with self._lock:
            for _ in range(2):
                seq = self._next_seq
                try:
                    cur = self.conn.execute(_INSERT_SQL, (seq, *values))
                except sqlite3.IntegrityError:  # seq taken by another writer: resync once
                    top = self.conn.execute("SELECT max(seq) FROM passages").fetchone()[0] or 0
                    self._next_seq = max(self._next_seq, top + 1)
                    continue
                if cur.rowcount == 0:  # this record_id is already in: a repeated capture
                    return int(self.conn.execute("SELECT seq FROM passages WHERE record_id = ?",
                                                 (record_id,)).fetchone()[0])
                self._next_seq = seq + 1  # only after the commit returned
                COMMIT_LATENCY.observe(time.perf_counter() - t0)
                return seq
        raise sqlite3.IntegrityError("sequence number conflict persists")

    def record(self, rec: PassageRecord) -> int:
        """Commit one passage and return its seq. Raises StoreError (full disk, I/O error):
        the caller must then show FAULT, not the verdict, since nothing was recorded."""
        values = self._values(rec)
        try:
            return self._insert(values, rec.record_id)
        except sqlite3.Error as e:
            if is_corruption(e) and self.auto_recover:
                self._recover(str(e))
                try:
                    return self._insert(values, rec.record_id)
                except sqlite3.Error as e2:
                    e = e2
            raise self._write_error(e) from None

    def _write_error(self, e: sqlite3.Error) -> StoreError:
        if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return StoreError(f"outbox {self.path} is full ({e}: [store] max_size_mib reached or the disk is "
                              "full); undelivered records are never dropped; fix: free disk space (df -h), restore "
                              "uploads so delivered records can be pruned, export with `checkpoint-scanner queue "
                              "export --mark-delivered`, or raise [store] max_size_mib")
        return StoreError(f"could not record the passage in {self.path} ({e}); fix: check free disk "
                          "space (df -h) and the SD card")

    def _recover(self, why: str) -> None:
        """Corruption met while writing: the same as at start, without a restart."""
        p = Path(self.path)
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
            moved = _move_aside(p, why)
        log.error("event=outbox_corrupt action=moved_aside moved_to=%s detail=%r; a fresh outbox starts",
                  moved, why)
        fresh = Store._open_checked(p)
        self.conn, self.db, self._next_seq = fresh.conn, fresh.db, fresh._next_seq
        self._apply_cap()
        self._note_recovery(moved)

    def rows(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return select_rows(self.conn, after_seq, limit)

    def iter_all(self, batch: int = 1000) -> Iterator[dict[str, Any]]:
        after = 0
        while rows := self.rows(after, batch):
            yield from rows
            after = rows[-1]["seq"]

    def count(self, where: str = "1=1") -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM passages WHERE {where}").fetchone()[0])

    def counts_by_verdict(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT verdict, count(*) FROM passages GROUP BY verdict").fetchall())

    def settings(self) -> dict[str, Any]:
        """The effective durability settings, logged at start (RECORDS 6.13)."""
        q = self.conn.execute
        return {"journal_mode": q("PRAGMA journal_mode").fetchone()[0],
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[q("PRAGMA synchronous").fetchone()[0]],
                "auto_vacuum": {0: "NONE", 1: "FULL", 2: "INCREMENTAL"}[q("PRAGMA auto_vacuum").fetchone()[0]],
                "journal_size_limit": q("PRAGMA journal_size_limit").fetchone()[0],
                "max_bytes": self.max_bytes, "sqlite": sqlite3.sqlite_version}

    def close(self) -> None:
        with self._lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()
