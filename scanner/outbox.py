"""The delivery side of the outbox: what is pending, marking delivered, dead letters, pruning,
status. Every function takes its own short-lived connection (store.connect), so no reader
holds a transaction across network I/O and a checkpoint is never starved (docs/durability.md section 6).

Delivery is a single mark shared by push and pull: every seq <= the largest
`deliveries.upto_seq` has been delivered (accepted, duplicate, exported, or dead-lettered).
Marking a batch writes one small row, not every delivered row, and fetching the next batch
is a range scan on the primary key: both O(log n) whatever the backlog (docs/durability.md section 7).

Disk policy (docs/durability.md section 6), run by the maintenance thread:
1. delivered rows older than `retention_s` (by delivery time) are deleted, 1000 per transaction;
2. when used pages reach 95% of `max_bytes`, delivered rows go oldest first regardless of
   retention, down to 90%;
3. undelivered rows are never deleted. If they alone fill the file, the capture connection's
   `max_page_count` makes `record()` fail and the lane shows FAULT (store.py).
Free pages are returned to the file system with `incremental_vacuum` when they exceed a
quarter of the file; otherwise new rows reuse them (fewer writes on the SD card).

Counting: `status()` (every /metrics scrape and staff-page refresh) reads counters kept in step
by the writers here (scanner/outbox_counts.py), never a count of the whole table. The disk
ratio it reports is against the smaller of the cap and what the file system still has
(scanner/outbox_health.py), and it carries this process's write-failure counters.

Readers in the daemon go through `read()`, which hands corruption to the open Store (it
confirms with quick_check and moves the outbox aside, scanner/store_repair.py) and retries once
on the fresh outbox.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from scanner import outbox_counts
from scanner.outbox_health import FREE_FLOOR_BYTES, capacity_ratio, fs_space, health_of, problems
from scanner.store_conn import connect, select_rows
from scanner.store_repair import on_read_error

T = TypeVar("T")

PRUNE_CHUNK = 1000
ALARM_RATIO = 0.80
PURGE_RATIO = 0.95
PURGE_TARGET_RATIO = 0.90
_CURSOR_RE = re.compile(r"^([0-9a-f]{1,32})\.([0-9]{1,18})$")
RECOVERY_ALARM_S = 7 * 86400


def read(path: str | Path, fn: Callable[[sqlite3.Connection], T], *, readonly: bool = True) -> T:
    """`fn(conn)` on a connection of its own, closed afterwards. Corruption is reported to the
    open Store (`on_read_error`); when it moved the outbox aside, `fn` runs once more on the
    fresh one. Other errors propagate."""
    for attempt in (0, 1):
        conn = connect(path, readonly=readonly)
        try:
            return fn(conn)
        except sqlite3.DatabaseError as e:
            if attempt or not on_read_error(path, e):
                raise
        finally:
            conn.close()
    raise AssertionError("unreachable")


class CursorError(ValueError):
    pass


def outbox_id(conn: sqlite3.Connection) -> str:
    r = conn.execute("SELECT value FROM meta WHERE key='outbox_id'").fetchone()
    return str(r[0]) if r else "0"


def encode_cursor(oid: str, seq: int) -> str:
    """Opaque to clients: `<outbox id>.<seq>`. The id changes when a corrupt outbox is
    replaced, so a puller's old cursor is recognised instead of silently skipping rows."""
    return f"{oid}.{seq}"


def decode_cursor(cursor: str | None, oid: str) -> tuple[int, bool]:
    """-> (seq, reset). An empty cursor is the start; a cursor from another outbox (replaced
    after corruption) restarts at 0 with reset=True."""
    if not cursor:
        return 0, False
    m = _CURSOR_RE.fullmatch(cursor)
    if not m:
        raise CursorError("cursor must be the next_cursor value of a previous response")
    if m.group(1) != oid:
        return 0, True
    return int(m.group(2)), False


def delivered_upto(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(upto_seq), 0) FROM deliveries").fetchone()[0])


def pending(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    """The oldest undelivered records, in seq order. One short read transaction."""
    conn.execute("BEGIN")
    try:
        return select_rows(conn, delivered_upto(conn), limit)
    finally:
        conn.execute("COMMIT")


def rows_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Retained records after a seq (pull API): -> (rows, has_more)."""
    conn.execute("BEGIN")
    try:
        rows = select_rows(conn, after_seq, limit + 1)
    finally:
        conn.execute("COMMIT")
    return rows[:limit], len(rows) > limit


@dataclass(frozen=True)
class Page:
    """One page of the pull API. `rows`: records with seq > the cursor's, in seq order;
    `joins`: the page continues the range handed out so far, i.e. no record lies between
    max(handed-out top, delivery mark) and the cursor (the cursor is at or below that, or
    nothing exists in between)."""

    rows: list[dict[str, Any]]
    has_more: bool
    joins: bool


def page_after(conn: sqlite3.Connection, after_seq: int, limit: int, handed_upto: int) -> Page:
    """Rows after `after_seq` (up to `limit`) and whether they extend a contiguous range of
    records handed out from the delivery mark up to `handed_upto`, all in one read transaction,
    so a record committed meanwhile cannot slip into a gap unseen. Primary-key searches only."""
    conn.execute("BEGIN")
    try:
        base = max(handed_upto, delivered_upto(conn))
        joins = after_seq <= base or conn.execute(
            "SELECT 1 FROM passages WHERE seq > ? AND seq <= ? LIMIT 1", (base, after_seq)).fetchone() is None
        rows = select_rows(conn, after_seq, limit + 1)
    finally:
        conn.execute("COMMIT")
    return Page(rows[:limit], len(rows) > limit, joins)


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    record_id: str
    reason: str


def mark_delivered(conn: sqlite3.Connection, upto: int, via: str, dead: Iterable[DeadLetter] = (),
                   now: float | None = None) -> int:
    """Everything up to `upto` is delivered; `dead` records were refused by the server and are
    copied to dead_letters with the reason. Idempotent: an older or equal mark is a no-op.
    `upto` is clamped to the largest seq that exists, so a forged cursor cannot pre-deliver
    future records. Returns the mark in force afterwards."""
    now = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = delivered_upto(conn)
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
        upto = min(upto, top)
        if upto > current:
            added = 0
            for d in dead:
                cur = conn.execute("SELECT * FROM passages WHERE seq = ?", (d.seq,))
                names = [c[0] for c in cur.description]
                row = cur.fetchone()
                rec = json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) if row else "{}"
                added += conn.execute("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?)",
                                      (d.seq, d.record_id, d.reason[:500], now, rec)).rowcount
            conn.execute("INSERT INTO deliveries VALUES (?, ?, ?)", (upto, now, via))
            outbox_counts.mark_moved(conn, current, upto, added)
            current = upto
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return current


@dataclass
class PruneResult:
    deleted: int = 0
    vacuumed_pages: int = 0
    used_ratio: float = 0.0


def _pages(conn: sqlite3.Connection) -> tuple[int, int, int]:
    q = conn.execute
    return q("PRAGMA page_count").fetchone()[0], q("PRAGMA freelist_count").fetchone()[0], \
        q("PRAGMA page_size").fetchone()[0]


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in pages holding data (the file's pages minus its free list)."""
    count, free, size = _pages(conn)
    return int((count - free) * size)


def used_ratio(conn: sqlite3.Connection, max_bytes: int) -> float:
    if max_bytes <= 0:
        return 0.0
    count, free, size = _pages(conn)
    return (count - free) * size / max_bytes


def _delete_upto(conn: sqlite3.Connection, upto: int) -> int:
    """Delete delivered rows with seq <= upto (never past the delivery mark), at most PRUNE_CHUNK
    in one transaction; the seq floor is raised first so a seq is never handed out twice, and
    the counters follow in the same transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        upto = min(upto, delivered_upto(conn))
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
        conn.execute("UPDATE meta SET value = max(CAST(value AS INTEGER), ?) WHERE key = 'next_seq'", (top + 1,))
        outbox_counts.advance(conn)  # every row deleted below is now inside the counted range
        n = conn.execute("DELETE FROM passages WHERE seq IN (SELECT seq FROM passages WHERE seq <= ? "
                         "ORDER BY seq LIMIT ?)", (upto, PRUNE_CHUNK)).rowcount
        outbox_counts.deleted(conn, n)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(n)


def prune(conn: sqlite3.Connection, *, retention_s: float, max_bytes: int, now: float | None = None) -> PruneResult:
    now = time.time() if now is None else now
    res = PruneResult()
    mark = delivered_upto(conn)
    r = conn.execute("SELECT max(upto_seq) FROM deliveries WHERE at <= ?", (now - retention_s,)).fetchone()[0]
    old_enough = min(int(r or 0), mark)
    while old_enough and (n := _delete_upto(conn, old_enough)):
        res.deleted += n
    if max_bytes > 0 and used_ratio(conn, max_bytes) >= PURGE_RATIO:
        while used_ratio(conn, max_bytes) >= PURGE_TARGET_RATIO and (n := _delete_upto(conn, mark)):
            res.deleted += n
    if res.deleted:
        conn.execute("DELETE FROM deliveries WHERE upto_seq < ? AND at <= ?", (mark, now - retention_s))
    count, free, _ = _pages(conn)
    if free and free * 4 >= count:
        conn.execute("PRAGMA incremental_vacuum")
        res.vacuumed_pages = free
    res.used_ratio = used_ratio(conn, max_bytes)
    return res


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """TRUNCATE checkpoint: copies the WAL into the db and empties the -wal file. Run when idle;
    returns (busy, wal frames, checkpointed frames)."""
    r = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(r[0]), int(r[1]), int(r[2])


def file_bytes(path: str | Path) -> tuple[int, int]:
    def size(p: str) -> int:
        try:
            return os.path.getsize(p)
        except OSError:
            return 0

    return size(str(path)), size(f"{path}-wal")


def advance_counts(conn: sqlite3.Connection) -> None:
    """Fold the rows written since the last call into the counters (maintenance round): one
    small write, so `status()` counts at most one round's passages."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outbox_counts.advance(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def status(conn: sqlite3.Connection, path: str | Path, max_bytes: int = 0) -> dict[str, Any]:
    """Everything `queue status` and /metrics report, in one short read transaction. Every
    query is a primary-key search or reads the counters: the cost does not grow with the backlog.
    Keys: records, pending, dead_letters (counts); used_bytes, db_bytes, wal_bytes,
    fs_free_bytes (bytes, None when unknown); used_ratio (of the cap), disk_ratio (of the cap or
    the file plus the file system's free space, whichever is smaller); disk_alarm (bool);
    write_failures_total and the rest of this process's OutboxHealth."""
    q = conn.execute
    conn.execute("BEGIN")
    try:
        mark = delivered_upto(conn)
        top = q("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
        total, pend, dead = outbox_counts.read(conn, mark)
        oldest = q("SELECT seq, ts_utc FROM passages WHERE seq > ? ORDER BY seq LIMIT 1", (mark,)).fetchone()
        last = q("SELECT at, via FROM deliveries ORDER BY upto_seq DESC LIMIT 1").fetchone()
        meta = dict(q("SELECT key, value FROM meta").fetchall())
        count, free, size = _pages(conn)
    finally:
        conn.execute("COMMIT")
    db_b, wal_b = file_bytes(path)
    oldest_age = None
    if oldest:
        from datetime import datetime

        try:
            oldest_age = max(0.0, time.time() - datetime.fromisoformat(oldest[1]).timestamp())
        except ValueError:
            oldest_age = None
    used = (count - free) * size
    fs = fs_space(path)
    disk_ratio = capacity_ratio(used, db_b, max_bytes, fs)
    fs_free = fs.free_bytes if fs else None
    return {
        "path": str(path), "outbox_id": meta.get("outbox_id", "0"), "records": total, "max_seq": top,
        "pending": pend, "delivered_upto": mark, "dead_letters": dead,
        "oldest_pending_seq": oldest[0] if oldest else None, "oldest_pending_ts": oldest[1] if oldest else None,
        "oldest_pending_age_s": oldest_age,
        "last_delivery_at": last[0] if last else None, "last_delivery_via": last[1] if last else None,
        "db_bytes": db_b, "wal_bytes": wal_b, "used_bytes": used, "free_pages": free,
        "max_bytes": max_bytes, "used_ratio": used / max_bytes if max_bytes else 0.0,
        "fs_free_bytes": fs_free, "fs_readonly": bool(fs and fs.readonly), "disk_ratio": disk_ratio,
        "disk_alarm": disk_ratio >= ALARM_RATIO or (fs_free is not None and fs_free < FREE_FLOOR_BYTES),
        "recovered_from": meta.get("recovered_from"),
        "recovered_at": float(meta["recovered_at"]) if meta.get("recovered_at") else None,
        "lost_records": int(meta.get("lost_records") or 0),
        "lost_at": float(meta["lost_at"]) if meta.get("lost_at") else None, "lost_detail": meta.get("lost_detail"),
        **health_of(path).snapshot(),
    }


def queue_health(db_path: str | Path) -> dict[str, Any]:
    """Queue depth and last delivery for a status page, on a read-only connection of its own."""
    try:
        st = read(db_path, lambda conn: status(conn, db_path))
    except (sqlite3.Error, OSError) as e:
        return {"queue_depth": None, "last_delivery": None, "store_error": str(e)}
    return {"queue_depth": st["pending"], "last_delivery": st["last_delivery_at"],
            "oldest_unsent_age_s": st["oldest_pending_age_s"], "dead_letters": st["dead_letters"],
            "write_failures": st["write_failures_total"], "store_error": st["last_write_error"]}


def healthz(db_path: str | Path, now: float | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for /healthz: 503 with `status` "fault" and `reasons` (one line each,
    with the fix) while the outbox cannot record passages (scanner/outbox_health.py: a failing
    commit, an unrepaired fault, a read-only or nearly full file system) or cannot be read; else
    200 with `status` "ok", or "degraded" plus `alarms` for 7 days after a damaged outbox was
    moved aside (its records wait in the moved copy for `queue export --db`), or after recorded
    passages were found missing at start (scanner/store_hwm.py: the count and seq range)."""
    now = time.time() if now is None else now

    def look(conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('recovered_from', 'recovered_at', "
                                 "'lost_at', 'lost_detail')"))

    reasons = problems(db_path)
    meta: dict[str, str] = {}
    try:
        meta = read(db_path, look)
    except (sqlite3.Error, OSError) as e:
        reasons.append(f"the outbox {db_path} cannot be read ({e}); fix: check [store] path and the SD card")
    if reasons:
        return 503, {"status": "fault", "reasons": reasons}
    alarms = []
    at = float(meta.get("recovered_at") or 0)
    if at and now - at < RECOVERY_ALARM_S:
        alarms.append(f"a damaged outbox was moved aside to {meta.get('recovered_from')} at "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}; fix: export its records with "
                      "`checkpoint-scanner queue export --db <moved file>`")
    lost_at = float(meta.get("lost_at") or 0)
    if lost_at and now - lost_at < RECOVERY_ALARM_S:
        alarms.append(f"{meta.get('lost_detail')} (found {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(lost_at))}); "
                      "fix: find what deletes files in the outbox's directory, and compare with what the central "
                      "server holds")
    if alarms:
        return 200, {"status": "degraded", "alarms": alarms}
    return 200, {"status": "ok"}
