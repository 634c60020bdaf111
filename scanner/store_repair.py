"""Repairs of the open outbox at run time, without a restart (the policy is in scanner/store.py's
docstring): files removed underneath the writer (the database, its -wal, the high-water file of
scanner/store_hwm.py), and corruption a reader meets.

`on_read_error(path, e)` is for every reader in the daemon process (pull API, /metrics, staff
page, maintenance): for SQLITE_CORRUPT / SQLITE_NOTADB it asks the Store this process has open
on `path` (registered by `Store.open`) to confirm with `PRAGMA quick_check` and move the outbox
aside, as at start. The fault is kept in scanner/outbox_health.py until it is repaired, so
/healthz answers 503 meanwhile.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.errors import StoreError
from scanner.fsutil import fsync_dir
from scanner.outbox_health import OutboxHealth, health_of
from scanner.store_conn import connect, is_corruption
from scanner.store_files import FileIds, lost, move_aside, prepare, remove_quietly
from scanner.store_hwm import HighWater

if TYPE_CHECKING:
    from scanner.store import Store

log = logging.getLogger("scanner.store")

_OPEN: dict[str, weakref.ref[Store]] = {}
_OPEN_LOCK = threading.Lock()


def register(store: Store) -> None:
    with _OPEN_LOCK:
        _OPEN[os.path.realpath(store.path)] = weakref.ref(store)


def unregister(store: Store) -> None:
    with _OPEN_LOCK:
        key = os.path.realpath(store.path)
        if (ref := _OPEN.get(key)) is not None and ref() is store:
            del _OPEN[key]


def open_store(path: str | Path) -> Store | None:
    """The Store this process has open on `path`, if any (the daemon's writer)."""
    with _OPEN_LOCK:
        ref = _OPEN.get(os.path.realpath(path))
    return ref() if ref is not None else None


def confirm_corrupt(path: str | Path) -> str | None:
    """`PRAGMA quick_check` on a connection of its own: None when the outbox is sound, else what
    is wrong (one line). A reader's SQLITE_CORRUPT is confirmed before anything is moved."""
    try:
        conn = connect(path, readonly=True)
        try:
            r = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e) if is_corruption(e) else None
    except StoreError:
        return None  # no file: nothing to move aside
    return None if r == "ok" else str(r)


def on_read_error(path: str | Path, e: BaseException) -> bool:
    """A reader of the outbox at `path` (pull API, /metrics, staff page, maintenance) got `e`.
    For corruption, the Store this process has open confirms it with quick_check and moves the
    outbox aside as at start; True when it did (the caller may retry once on the fresh outbox).
    Without a Store here (a CLI), or when the move fails, the health fault stays set (/healthz
    answers 503) until a later check finds the outbox sound."""
    if not is_corruption(e):
        return False
    store = open_store(path)
    if store is not None and store.auto_recover:
        return store.recover_if_corrupt(f"a reader met corruption ({e})")
    detail = confirm_corrupt(path)
    if detail is not None:
        health_of(path).set_fault("corrupt", f"the outbox {path} is damaged ({detail}); fix: restart the service "
                                  "(it moves the damaged file aside and starts a fresh one)")
    return False


def check_integrity(path: str | Path) -> str | None:
    """The maintenance thread's idle check: quick_check; corruption is handled as by a reader.
    Returns what was wrong (None: sound). Clears a corruption fault a later check finds gone."""
    detail = confirm_corrupt(path)
    if detail is None:
        health_of(path).clear_fault("corrupt")
        return None
    store = open_store(path)
    if store is not None and store.auto_recover:
        store.recover_if_corrupt(f"idle quick_check: {detail}", confirmed=True)
    else:
        health_of(path).set_fault("corrupt", f"the outbox {path} is damaged ({detail}); fix: restart the service")
    return detail


class Repairs:
    """Mixed into Store: the run-time repairs. Uses the Store's connection, lock and reopen."""

    conn: sqlite3.Connection
    path: str
    _lock: threading.RLock
    _next_seq: int
    _ids: FileIds | None
    _generation: int
    _hw: HighWater
    health: OutboxHealth

    @classmethod
    def _open_checked(cls, p: Path) -> Any:
        raise NotImplementedError

    def _adopt(self, fresh: Any, known_top: int = 0) -> None:
        raise NotImplementedError

    def _recover(self, why: str) -> None:
        raise NotImplementedError

    def verify_files(self) -> str | None:
        """The maintenance thread's check between passages: repair now if a file was removed
        (instead of at the next passage); returns what happened (None: all in place)."""
        try:
            self._check_files()
        except StoreError as e:
            return str(e)
        if self._hw.replaced():  # the high-water file removed: make it again (store_hwm.py)
            with self._lock:
                self._hw.reopen()
        return None

    def _check_files(self) -> None:
        """StoreError when the database or its -wal is no longer what the path names (after a
        repair attempt: see the module docstring)."""
        if self._ids is None:
            return
        which = lost(Path(self.path), self._ids)
        if which is not None:
            self._relink(which)

    def _relink(self, which: str) -> None:
        p = Path(self.path)
        why = (f"the outbox's {which} file {p}{'' if which == 'database' else '-wal'} was removed or replaced "
               "while in use")
        with self._lock:
            if self._ids is None or lost(p, self._ids) is None:
                return  # another thread (the maintenance check, or the lane) repaired it meanwhile
            self.health.set_fault("files", f"{why}; fix: find what deletes files in {p.parent} (cleanup job, "
                                  "manual rm); until the outbox is reopened every passage is FAULT")
            log.error("event=outbox_file_lost file=%s path=%s action=reopen", which, p)
            top = self._next_seq - 1
            try:
                if which == "database":
                    moved = self._rebuild_from_connection(p, why, top)
                    log.error("event=outbox_rebuilt moved_to=%s", moved)
                else:
                    busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if busy:
                        raise sqlite3.OperationalError("checkpoint of the lost -wal was blocked by a reader")
                    self.conn.close()
                    self._adopt(type(self)._open_checked(p), top)  # anything missing above top: a loss
            except (sqlite3.Error, OSError, StoreError) as e:
                log.error("event=outbox_reopen_failed error=%r", str(e))
                raise StoreError(f"{why}; reopening it failed ({e}); fix: check the SD card and {p.parent}, then "
                                 "stop the service cleanly (systemctl stop: it saves what the open connection "
                                 "still holds)") from None
            kept = self.conn.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
        self.health.clear_fault("files", recovered=True)
        log.error("event=outbox_reopened path=%s newest_seq=%d", p, kept)
        raise StoreError(f"{why}; the records were saved and the outbox reopened; this passage shows FAULT; "
                         f"fix: find what deletes files in {p.parent}")

    def _rebuild_from_connection(self, p: Path, why: str, top: int = 0) -> Path:
        """The database file itself is gone or replaced: copy what the open connection sees to
        a new file, move whatever the path now holds aside, and put the copy in its place."""
        tmp = p.with_name(f".{p.name}.rebuild-{os.getpid()}")
        remove_quietly(tmp)
        prepare(tmp)
        dst = sqlite3.connect(str(tmp))
        try:
            self.conn.backup(dst)
        finally:
            dst.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        moved = move_aside(p, why)  # the stale -wal/-shm must never meet the new database
        self.conn.close()
        os.replace(tmp, p)
        fsync_dir(p.parent)
        self._adopt(type(self)._open_checked(p), top)
        return moved

    def recover_if_corrupt(self, why: str, *, confirmed: bool = False) -> bool:
        """A reader met corruption: confirm with quick_check (unless `confirmed`), then move the
        outbox aside and start a fresh one, as at start. True when the outbox was replaced here
        or by another thread meanwhile."""
        gen = self._generation
        detail = None if confirmed else confirm_corrupt(self.path)
        if not confirmed and detail is None:
            log.warning("event=outbox_corrupt_unconfirmed detail=%r; quick_check finds the outbox sound", why)
            return False
        with self._lock:
            if self._generation != gen:
                return True
            self.health.set_fault("corrupt", f"the outbox {self.path} is damaged ({detail or why}); moving it aside")
            try:
                self._recover(f"{why}; quick_check: {detail}" if detail else why)
            except (sqlite3.Error, OSError) as e:
                log.error("event=outbox_recover_failed error=%r", str(e))
                self.health.set_fault("corrupt", f"the outbox {self.path} is damaged and could not be moved aside "
                                      f"({e}); fix: restart the service")
                return False
        self.health.clear_fault("corrupt", recovered=True)
        return True
