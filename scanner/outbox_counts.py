"""Counters kept in step with the outbox's rows, so `outbox.status()` (every /metrics scrape,
every staff-page refresh) costs the same at 0 and at 500,000 rows instead of counting the table.

One row in `counts` (migration 006 in scanner/store.py). It is written only by side connections
(delivery mark, pruning, the maintenance round), never by the passage commit, which stays at two
pages (row + record_id index) for the write budget (docs/durability.md section 6):

    upto_seq, rows   rows = number of passages with seq <= upto_seq
    first_seq        min(seq) among those when counted (0: none): shows a deletion made
                     without updating the row (an older program version)
    mark, delivered  delivered = number of passages with seq <= mark, the delivery mark
    dead             number of dead letters

Reading (`read`): records = rows + count(seq > upto_seq), i.e. plus what the lane wrote since
the last maintenance round; pending = records - delivered. Every query is a search on the
primary key: O(log n + rows since the last round). Writers keep the row exact in their own
transaction: `mark_moved` adds the rows the mark passes over, `advance` (maintenance, and
before every prune) moves upto_seq to the newest row, `deleted` takes off what pruning removed
(always a prefix of delivered rows). A reader that finds the row out of step counts the table
instead (exact, slow) and the next writer rebuilds it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA = ("CREATE TABLE counts (id INTEGER PRIMARY KEY CHECK (id = 1), upto_seq INTEGER NOT NULL, "
          "rows INTEGER NOT NULL, first_seq INTEGER NOT NULL, mark INTEGER NOT NULL, "
          "delivered INTEGER NOT NULL, dead INTEGER NOT NULL)")


@dataclass(frozen=True)
class Counts:
    upto_seq: int
    rows: int
    first_seq: int
    mark: int
    delivered: int
    dead: int


def _one(conn: sqlite3.Connection, sql: str, *args: int) -> int:
    return int(conn.execute(sql, args).fetchone()[0] or 0)


def _mark(conn: sqlite3.Connection) -> int:
    return _one(conn, "SELECT max(upto_seq) FROM deliveries")


def _first(conn: sqlite3.Connection, upto_seq: int) -> int:
    r = conn.execute("SELECT seq FROM passages WHERE seq <= ? ORDER BY seq LIMIT 1", (upto_seq,)).fetchone()
    return int(r[0]) if r else 0


def stored(conn: sqlite3.Connection) -> Counts | None:
    """The counts row, or None (no row, or an outbox not yet migrated)."""
    try:
        r = conn.execute("SELECT upto_seq, rows, first_seq, mark, delivered, dead FROM counts WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # no such table: an outbox opened read-only before migration 006
        return None
    return Counts(*r) if r else None


def in_step(conn: sqlite3.Connection, c: Counts, mark: int) -> bool:
    return c.mark == mark and _first(conn, c.upto_seq) == c.first_seq


def full(conn: sqlite3.Connection, mark: int) -> Counts:
    """Exact counts by counting the tables: O(n), for a rebuild or an out-of-step row."""
    top = _one(conn, "SELECT max(seq) FROM passages")
    return Counts(top, _one(conn, "SELECT count(*) FROM passages"), _first(conn, top), mark,
                  _one(conn, "SELECT count(*) FROM passages WHERE seq <= ?", mark),
                  _one(conn, "SELECT count(*) FROM dead_letters"))


def rebuild(conn: sqlite3.Connection) -> Counts:
    """Count everything and store it (inside the caller's write transaction)."""
    c = full(conn, _mark(conn))
    conn.execute("INSERT OR REPLACE INTO counts VALUES (1, ?, ?, ?, ?, ?, ?)",
                 (c.upto_seq, c.rows, c.first_seq, c.mark, c.delivered, c.dead))
    return c


def read(conn: sqlite3.Connection, mark: int) -> tuple[int, int, int]:
    """(records kept, pending, dead letters), inside the caller's read transaction."""
    c = stored(conn)
    if c is None or not in_step(conn, c, mark):
        c = full(conn, mark)
        return c.rows, c.rows - c.delivered, c.dead
    records = c.rows + _one(conn, "SELECT count(*) FROM passages WHERE seq > ?", c.upto_seq)
    return records, records - c.delivered, c.dead


def advance(conn: sqlite3.Connection) -> Counts | None:
    """Count the rows written since the last advance into the row (inside a write transaction)."""
    c = stored(conn)
    if c is None:
        return None
    if not in_step(conn, c, _mark(conn)):
        return rebuild(conn)
    top = _one(conn, "SELECT max(seq) FROM passages")
    if top <= c.upto_seq:
        return c
    n = _one(conn, "SELECT count(*) FROM passages WHERE seq > ? AND seq <= ?", c.upto_seq, top)
    first = _first(conn, top)
    conn.execute("UPDATE counts SET upto_seq = ?, rows = rows + ?, first_seq = ? WHERE id = 1", (top, n, first))
    return Counts(top, c.rows + n, first, c.mark, c.delivered, c.dead)


def mark_moved(conn: sqlite3.Connection, old_mark: int, new_mark: int, dead_added: int) -> None:
    """The delivery mark went from `old_mark` to `new_mark` in this transaction (after the
    deliveries row and the dead letters were inserted)."""
    c = stored(conn)
    if c is None:
        return
    if c.mark != old_mark or _first(conn, c.upto_seq) != c.first_seq:
        rebuild(conn)
        return
    n = _one(conn, "SELECT count(*) FROM passages WHERE seq > ? AND seq <= ?", old_mark, new_mark)
    conn.execute("UPDATE counts SET mark = ?, delivered = delivered + ?, dead = dead + ? WHERE id = 1",
                 (new_mark, n, dead_added))


def deleted(conn: sqlite3.Connection, n: int) -> None:
    """`n` delivered rows, all with seq <= both upto_seq and the mark (call `advance` first),
    were deleted in this transaction."""
    c = stored(conn)
    if c is None or not n:
        return
    conn.execute("UPDATE counts SET rows = rows - ?, delivered = delivered - ?, first_seq = ? WHERE id = 1",
                 (n, n, _first(conn, c.upto_seq)))
