"""The SQLite outbox: one row per passage, committed before the lane signals.

Durability (docs/durability.md sections 1 and 4): WAL with `synchronous=FULL` on the connection that
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
same record twice is harmless. Nothing personal is stored (docs/credentials.md section 7). The schema is
in scanner/store_migrations.py.

Corruption: `PRAGMA quick_check` at every open. A damaged outbox is moved aside together with
its -wal and -shm into `corrupt-<time>/` next to it (never deleted: it is evidence and may
still be readable with `queue export --db`), a fresh outbox starts, an alarm is logged and
kept in the fresh outbox's meta for /metrics. The same happens at run time: when a write meets
corruption, and when a reader in this process does (`on_read_error`: the pull API, /metrics,
the staff page, the maintenance thread's idle `quick_check`) and a quick_check confirms it.

Files removed underneath (scanner/store_files.py): before and after each commit the paths of
the database and its -wal must still name the files opened. If not, the passage fails with
StoreError (the lane shows FAULT, no verdict) and the outbox is reopened safely: a lost -wal
is checkpointed through the open connection (which still reads it) into the database file; a
lost database is copied from the open connection (SQLite backup API) to a new file at the
path. Until that has worked every `record()` fails. A passage whose commit raced the removal
is in the outbox but was shown as FAULT. A removal followed by a crash before any check saw it
loses what was only in the -wal: the high-water file (scanner/store_hwm.py, one pwrite per
commit) notices it at the next start, rotates the outbox id and continues seq above the mark.

Disk: `max_bytes` becomes `PRAGMA max_page_count` on the capture connection. When the file
is full and pruning delivered rows cannot make room, `record()` raises StoreError and the
lane shows FAULT: nothing undelivered is ever dropped, and nothing is acknowledged that was
not written. Every failed commit is counted in the outbox's health (scanner/outbox_health.py:
/healthz, /metrics). Pruning and the delivery mark live in scanner/outbox.py.

Files are 0600 and a directory created here 0700 (scanner/store_files.py).

One writer: `Store.open` holds an exclusive flock on `<outbox>.lock` (scanner/locks.py) until
`close()`; a second daemon on the same `[store] path` stops with one line naming the first's PID.
Read-only tools and side connections (`connect()`) take no lock and keep working beside it.
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import sqlite_utils

from scanner.errors import StoreError
from scanner.fsutil import ensure_writable_dir
from scanner.locks import HeldLock, lock_outbox
from scanner.models import PassageRecord
from scanner.outbox_health import OutboxHealth, health_of
from scanner.store_conn import (
    BUSY_TIMEOUT_MS,
    COMMIT_LATENCY,
    CommitLatency,
    connect,
    decode_row,
    is_corruption,
    new_record_id,
    select_rows,
)
from scanner.store_files import DIR_MODE, FileIds, file_ids, move_aside, narrow_dir, prepare
from scanner.store_hwm import HighWater, Loss, Mark, newest_seq, reconcile
from scanner.store_hwm import read as read_high_water
from scanner.store_migrations import MIGRATIONS, PASSAGE_COLUMNS
from scanner.store_repair import Repairs, check_integrity, on_read_error, open_store, register, unregister

__all__ = ["BUSY_TIMEOUT_MS", "COMMIT_LATENCY", "MIGRATIONS", "PASSAGE_COLUMNS", "CommitLatency", "Store",
           "check_integrity", "connect", "decode_row", "is_corruption", "new_record_id", "on_read_error",
           "open_store", "select_rows"]

log = logging.getLogger(__name__)

_RECORD_FIELDS = [f.name for f in fields(PassageRecord) if f.name != "extra"]
_INSERT_SQL = (f"INSERT INTO passages (seq, {', '.join(_RECORD_FIELDS)}) VALUES "
               f"({', '.join('?' * (len(_RECORD_FIELDS) + 1))}) ON CONFLICT(record_id) DO NOTHING")
_GET_FIELDS = operator.attrgetter(*_RECORD_FIELDS)
_I_REASONS, _I_CREDENTIALS, _I_CLOCK = (_RECORD_FIELDS.index(n) for n in ("reasons", "credentials", "clock_trusted"))
PAGE_SIZE = 1024


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


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


class Store(Repairs):
    """The capture side of the outbox: one connection, FULL sync, used by the lane thread."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()  # re-entrant: a repair holds it across _note_recovery's _tx
        self._next_seq = 1
        self.max_bytes = 0
        self.auto_recover = True
        self.recovered_from: str | None = None
        self._moved: Path | None = None
        self._file_lock: HeldLock | None = None
        self._ids: FileIds | None = None
        self._generation = 0  # bumped by every repair: a second reader's report is then moot
        self.health: OutboxHealth = health_of(path)
        self._hw = HighWater(path)  # the last seq handed out, outside the database (store_hwm.py)
        self._oid = "0"
        self.lost: Loss | None = None  # records found missing at open or after a repair
        self.created = False  # this open made the outbox file (empty)

    @classmethod
    def open(cls, path: str | Path, *, max_bytes: int = 0, recover: bool = True, lock: bool = True) -> Store:
        """Open (or create) the outbox. With `recover`, a corrupt outbox is moved aside and a
        fresh one started (the daemon); without, it raises StoreError (read-only tools).

        A Store is the outbox's one writer: with `lock` (the default) it holds an exclusive
        flock on `<path>.lock` (scanner/locks.py) until `close()`, taken before anything else
        touches the files, so a second daemon neither interleaves sequence numbers nor moves
        the first one's outbox aside; it gets OutboxInUseError naming the holder's PID.
        Side connections (`connect()`: CLI, API, uploader) take no lock."""
        p = Path(path)
        ensure_writable_dir(p.parent, "outbox directory", "[store] path", StoreError, mode=DIR_MODE)
        narrow_dir(p.parent)
        held = lock_outbox(p) if lock else None
        try:
            store = cls._open_recovering(p, recover)
            if lock:  # only the one writer may compare with (and move) the high-water mark
                store._hw.open()
                store._track(read_high_water(p))
        except BaseException:
            if held is not None:
                held.release()
            raise
        store._file_lock = held
        store.max_bytes = max_bytes
        store.auto_recover = recover
        store._apply_cap()
        if store._moved is not None:
            store._note_recovery(store._moved)
        for kind in ("corrupt", "files"):  # checked (and moved aside if need be) just now
            store.health.clear_fault(kind)
        if lock:
            register(store)  # readers of this process report corruption to it (store_repair.py)
        log.info("event=outbox_open path=%s %s", p, " ".join(f"{k}={v}" for k, v in store.settings().items()))
        return store

    @classmethod
    def _open_recovering(cls, p: Path, recover: bool) -> Store:
        moved: Path | None = None
        if recover and not p.exists() and any(Path(str(p) + s).exists() for s in ("-wal", "-shm")):
            moved = move_aside(p, "stray -wal/-shm without a database (interrupted move)")
        try:
            store = cls._open_checked(p)
        except StoreError as e:
            if not recover or not getattr(e, "corrupt", False):
                raise
            moved = move_aside(p, str(e))
            log.error("event=outbox_corrupt action=moved_aside moved_to=%s detail=%r; a fresh outbox "
                      "starts; fix: keep the moved files, export them with `checkpoint-scanner queue export "
                      "--db %s`", moved, str(e), moved / p.name)
            store = cls._open_checked(p)
        store._moved = moved
        return store

    @classmethod
    def _open_checked(cls, p: Path) -> Store:
        conn: sqlite3.Connection | None = None
        try:
            prepare(p)  # 0600 before SQLite opens it: the -wal and -shm take its mode
            conn = sqlite3.connect(str(p), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                                   isolation_level=None)
            created = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if created:
                # Both only take effect before the first table. 1 KiB pages: a passage commit
                # rewrites two pages (row + record_id index) in the WAL, so 4 KiB pages cost
                # ~11.4 KB written per passage and 1 KiB pages ~5.1 KB, under the 6 KB write
                # budget of docs/durability.md section 6 (SD wear). The price is space: about 1 KiB per stored row.
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
        store.created = created
        store._migrate()
        floor = int(conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        top = conn.execute("SELECT max(seq) FROM passages").fetchone()[0] or 0
        store._next_seq = max(floor, top + 1)
        prepare(p)  # the -wal and -shm now exist: narrow any an older version left wide
        store._ids = file_ids(p)  # the connection has both open now (quick_check read through the WAL)
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
                self._hw.note(Mark(self._oid, seq))  # a pwrite into the page cache, no fsync
                COMMIT_LATENCY.observe(time.perf_counter() - t0)
                return seq
        raise sqlite3.IntegrityError("sequence number conflict persists")

    def record(self, rec: PassageRecord) -> int:
        """Commit one passage and return its seq. Raises StoreError (full disk, I/O error, the
        outbox's files removed underneath): the caller must then show FAULT, not the verdict.
        Every failure is counted in `self.health` (/healthz, /metrics)."""
        values = self._values(rec)
        try:
            self._check_files()
            try:
                seq = self._insert(values, rec.record_id)
            except sqlite3.Error as e:
                if not (is_corruption(e) and self.auto_recover):
                    raise self._write_error(e) from None
                self._recover(str(e))
                try:
                    seq = self._insert(values, rec.record_id)
                except sqlite3.Error as e2:
                    raise self._write_error(e2) from None
            self._check_files()
        except StoreError as e:
            self.health.write_failed(str(e))
            raise
        self.health.write_ok()
        return seq

    def _write_error(self, e: sqlite3.Error) -> StoreError:
        if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return StoreError(f"outbox {self.path} is full ({e}: [store] max_size_mib reached or the disk is "
                              "full); undelivered records are never dropped; fix: free disk space (df -h), restore "
                              "uploads so delivered records can be pruned, export with `checkpoint-scanner queue "
                              "export --mark-delivered`, or raise [store] max_size_mib")
        return StoreError(f"could not record the passage in {self.path} ({e}); fix: check free disk "
                          "space (df -h) and the SD card")

    def _adopt(self, fresh: Store, known_top: int = 0) -> None:
        """Take over a reopened connection. `known_top`: the newest seq this process handed out
        on the old one (a -wal or database repair: records missing above it are a loss); 0 for
        a fresh outbox after corruption (the old one is kept aside, under another id)."""
        self.conn, self.db, self._next_seq, self._ids = fresh.conn, fresh.db, fresh._next_seq, fresh._ids
        self._generation += 1
        self._apply_cap()
        if self._hw.fd is not None:
            self._track(self._hw.last, known_top)

    def _track(self, mark: Mark | None, known_top: int = 0) -> None:
        """Under the writer's lock: compare the outbox with the high-water `mark` (store_hwm.py);
        on a loss the outbox id is rotated and seq continues above the mark. Then the mark
        names this outbox's id and newest seq."""
        loss = reconcile(self.conn, mark, known_top, created=self.created and self._moved is None)
        self.created = False
        if loss is not None:
            self.lost = loss
        self._oid = str(self.conn.execute("SELECT value FROM meta WHERE key='outbox_id'").fetchone()[0])
        self._next_seq = max(self._next_seq, newest_seq(self.conn) + 1)
        self._hw.note(Mark(self._oid, self._next_seq - 1))

    def _recover(self, why: str) -> None:
        """Corruption met at run time: the same as at start, without a restart."""
        p = Path(self.path)
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
            moved = move_aside(p, why)
            log.error("event=outbox_corrupt action=moved_aside moved_to=%s detail=%r; a fresh outbox starts; fix: "
                      "export the moved records with `checkpoint-scanner queue export --db %s`", moved, why,
                      moved / p.name)
            self._adopt(Store._open_checked(p))
            self._note_recovery(moved)

    # -- reads ---------------------------------------------------------------------------
    def rows(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Rows after `after_seq` on the writer's connection (under its lock: a repair in
        another thread swaps the connection). Corruption is confirmed, moved aside, retried."""
        try:
            with self._lock:
                return select_rows(self.conn, after_seq, limit)
        except sqlite3.DatabaseError as e:
            if not (is_corruption(e) and self.auto_recover and self.recover_if_corrupt(f"a read met corruption ({e})")):
                raise
            with self._lock:
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
        """The effective durability settings, logged at start (docs/durability.md section 1)."""
        q = self.conn.execute
        return {"journal_mode": q("PRAGMA journal_mode").fetchone()[0],
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[q("PRAGMA synchronous").fetchone()[0]],
                "auto_vacuum": {0: "NONE", 1: "FULL", 2: "INCREMENTAL"}[q("PRAGMA auto_vacuum").fetchone()[0]],
                "journal_size_limit": q("PRAGMA journal_size_limit").fetchone()[0],
                "max_bytes": self.max_bytes, "sqlite": sqlite3.sqlite_version}

    def close(self) -> None:
        unregister(self)
        with self._lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()
            self._hw.sync()
            self._hw.close()
            if self._file_lock is not None:
                self._file_lock.release()
