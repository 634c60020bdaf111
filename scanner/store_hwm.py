"""The outbox's high-water mark: the last seq the writer handed to the lane, kept outside the
database file, so records lost together with their -wal are noticed at the next start.

Why (attacker finding F3): committed passages live in the -wal until a checkpoint copies them
into the database file. If the -wal is unlinked and the daemon dies before it notices (the
maintenance thread checks every second; the writer before and after each commit), SQLite
opens the database without them and without a trace. Before this, the next start gave out
the same seq numbers again under the same outbox id, so a puller whose cursor had passed them
silently skipped the new records.

The file `<outbox>.highwater` holds one fixed-size line, `CSHW1 <outbox id> <seq> <crc32>`,
rewritten in place with pwrite(2) after every commit returned: one system call of ~70 bytes into
the page cache, no fsync (measured in tests/test_store_hwm.py: a few microseconds beside a commit's
fsync). It survives a process crash (kill -9, OOM, a restart loop) because the page cache
does; the kernel writes the page back on its own schedule (at most one 4 KiB page per
writeback interval, ~30 s, however many passages), and `close()` fsyncs it. A power cut can
leave it older than the outbox: it then only lags (the mark is written after the commit), which
never raises a false alarm; only a lost -wal *and* a lost page together go unnoticed.

At every open (`Store.open`, and after a run-time repair) `reconcile` compares it with the
outbox: when the mark of the same outbox id is above the newest seq the outbox holds, the
records in between are gone. Then the outbox id is rotated (a new cursor namespace: pullers get
`cursor_reset` and start over, duplicates are dropped by record_id), the next seq continues
above the mark (never reused), and the loss is kept in meta (`lost_records`, `lost_at`,
`lost_detail`) for /healthz (degraded for 7 days) and `queue status`, and logged as an error.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from scanner.store_files import FILE_MODE

log = logging.getLogger("scanner.store")

SUFFIX = ".highwater"
_MAGIC = "CSHW1"
_LINE = 72  # bytes, fixed: every write covers the whole previous one


@dataclass(frozen=True)
class Mark:
    outbox_id: str
    seq: int


def path_of(db: str | Path) -> Path:
    return Path(str(db) + SUFFIX)


def encode(mark: Mark) -> bytes:
    body = f"{_MAGIC} {mark.outbox_id:>32} {mark.seq:>20}"
    line = f"{body} {zlib.crc32(body.encode()):08x}\n"
    return line.encode().ljust(_LINE, b" ")


def decode(data: bytes) -> Mark | None:
    """The mark in `data`, or None when it is missing, torn or not ours (checksum)."""
    try:
        text = data.decode("ascii").strip()
        body, crc = text.rsplit(" ", 1)
        magic, oid, seq = body.split()
    except (UnicodeDecodeError, ValueError):
        return None
    if magic != _MAGIC or f"{zlib.crc32(body.encode()):08x}" != crc or not seq.isdigit():
        return None
    return Mark(oid, int(seq))


def read(db: str | Path) -> Mark | None:
    try:
        with open(path_of(db), "rb") as f:
            return decode(f.read(_LINE))
    except OSError:
        return None


class HighWater:
    """The open sidecar file of one writer. `note(oid, seq)` after each commit; `sync()` on a
    clean close. Errors writing it are logged once and never fail a passage (the commit has
    already succeeded; only the detection of a later loss is weakened)."""

    def __init__(self, db: str | Path) -> None:
        self.path = path_of(db)
        self.fd: int | None = None
        self.last: Mark | None = None
        self._warned = False
        self._ino: tuple[int, int] | None = None

    def open(self) -> None:
        self.close()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            st = os.fstat(fd)
        except OSError as e:
            self._warn(e)
            return
        self.fd, self._ino = fd, (st.st_dev, st.st_ino)

    def note(self, mark: Mark) -> None:
        self.last = mark
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, encode(mark), 0)
        except OSError as e:
            self._warn(e)

    def replaced(self) -> bool:
        """True when the open file is no longer what the path names (removed or replaced): one
        stat(2), for the maintenance thread's check every second."""
        if self.fd is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._ino

    def reopen(self) -> None:
        """Make the file again and write the last mark (else the next start could not see a
        loss). Call under the writer's lock: `note` must not write to a descriptor closed here."""
        if not self.replaced():
            return
        log.error("event=outbox_highwater_lost path=%s action=recreated", self.path)
        self.open()
        if self.last is not None:
            self.note(self.last)

    def sync(self) -> None:
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError as e:
                self._warn(e)

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def _warn(self, e: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("event=outbox_highwater_failed path=%s error=%r; a lost -wal would go unnoticed at the "
                        "next start; fix: check free space and the permissions of %s", self.path, e.strerror,
                        self.path.parent)


@dataclass(frozen=True)
class Loss:
    count: int
    first_seq: int
    last_seq: int
    old_id: str
    new_id: str


def newest_seq(conn: sqlite3.Connection) -> int:
    """The largest seq ever written to this outbox as far as the file knows: max(seq), or the
    pruning floor (`meta.next_seq` - 1) when the newest rows were pruned."""
    top = conn.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
    floor = conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
    return max(int(top), int(floor[0]) - 1 if floor else 0)


def _keep(conn: sqlite3.Connection, loss: Loss, detail: str, rotate: bool) -> None:
    q = conn.execute
    if rotate:
        q("UPDATE meta SET value = ? WHERE key = 'outbox_id'", (loss.new_id,))
        q("UPDATE meta SET value = max(CAST(value AS INTEGER), ?) WHERE key = 'next_seq'", (loss.last_seq + 1,))
    for k, v in (("lost_records", str(loss.count)), ("lost_at", str(time.time())), ("lost_detail", detail)):
        q("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))


def reconcile(conn: sqlite3.Connection, mark: Mark | None, known_top: int = 0, *, created: bool = False) -> Loss | None:
    """Compare the outbox on `conn` with the high-water `mark` (and `known_top`, the newest seq
    this process itself handed out); None when nothing is missing. Else, in one transaction:

    - records of this outbox id above its newest seq were handed out: rotate the outbox id,
      raise the seq floor above them, keep the loss in meta;
    - `created` (this open made an empty outbox) while the mark names another outbox that had
      reached seq N: the outbox file was missing at start (removed with its -wal); up to N
      records are gone (some may have been delivered). The id is new already; the loss is kept.
    """
    oid = conn.execute("SELECT value FROM meta WHERE key='outbox_id'").fetchone()
    oid_s = str(oid[0]) if oid else "0"
    same = mark is not None and mark.outbox_id == oid_s
    high = max(known_top, mark.seq if same and mark is not None else 0)
    conn.execute("BEGIN IMMEDIATE")
    try:
        top = newest_seq(conn)
        if high > top:
            loss = Loss(high - top, top + 1, high, oid_s, secrets.token_hex(6))
            detail = (f"{loss.count} recorded passage(s), seq {loss.first_seq}..{loss.last_seq} of outbox "
                      f"{loss.old_id}, are not in the outbox (its -wal was removed, or the database replaced by an "
                      f"older copy, before they were checkpointed); the outbox id is now {loss.new_id}")
            _keep(conn, loss, detail, rotate=True)
        elif created and mark is not None and not same and mark.seq > 0:
            loss = Loss(mark.seq, 1, mark.seq, mark.outbox_id, oid_s)
            detail = (f"the outbox file was missing at start: outbox {loss.old_id} had reached seq {loss.last_seq}; "
                      f"up to {loss.count} passage(s) not yet delivered are gone; a new outbox {loss.new_id} starts")
            _keep(conn, loss, detail, rotate=False)
        else:
            conn.execute("COMMIT")
            return None
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    log.error("event=outbox_records_lost count=%d first_seq=%d last_seq=%d old_outbox_id=%s new_outbox_id=%s; %s; "
              "pullers start over (cursor_reset) and no seq up to %d is given out again; fix: find what deletes "
              "files in the outbox's directory (a cleanup job, a manual rm), and compare with what the central "
              "server holds", loss.count, loss.first_seq, loss.last_seq, loss.old_id, loss.new_id, detail,
              loss.last_seq)
    return loss
