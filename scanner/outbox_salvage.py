"""Reading an outbox file that may be damaged, for `queue status` and `queue export`.

Why (issue 12, item 12): the README names `queue export --db FILE` as the way to carry the
records of a damaged outbox (one moved aside as corrupt-*/outbox.db) to the central office,
but a single bad page made it print a traceback and leave an empty file, although plain SQL
still read most rows. Here:

- `check_file(path)` refuses, in one line with the fix, what is not an outbox at all: a
  directory, a 0-byte file, a file that is not SQLite (SQLite file format section 1.3: the
  first 16 bytes are "SQLite format 3\\0"), an SQLite database without a `passages` table;
- `explain(path, e)` turns an error met while reading into such a line;
- `Salvage` reads rows in seq order with range scans on the primary key and, where a range
  fails (a damaged b-tree page raises SQLITE_CORRUPT when the scan reaches it), row by row
  with point lookups, skipping the seqs that still fail: they are listed in `lost`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.errors import StoreError
from scanner.store_conn import connect, decode_row

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_PLAUSIBLE_SEQ = 1 << 40  # a passage a second for 30,000 years: larger is a damaged page's garbage
PAGE = 1000  # rows per range scan, and seqs per row-by-row window after a failed scan
_HINT = "give the outbox file, e.g. /var/lib/checkpoint-scanner/outbox.db or a moved-aside corrupt-*/outbox.db"
_ROW_ERRORS = (sqlite3.DatabaseError, ValueError, KeyError, TypeError)  # a bad page, or a row that does not decode


class OutboxUnreadable(StoreError):
    """The file is not an outbox, or cannot be read at all; str(e) is one line with the fix."""


def check_file(path: str | Path, exporting: bool = False) -> None:
    """Raise OutboxUnreadable unless `path` looks like an outbox: an SQLite file with the tables."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise OutboxUnreadable(f"no outbox at {p}; fix: check [store] path in the config, or {_HINT}") from None
    except IsADirectoryError:
        raise OutboxUnreadable(f"{p} is a directory; fix: give the outbox file in it, e.g. {p / 'outbox.db'}") from None
    except PermissionError:
        raise OutboxUnreadable(f"cannot read {p}: permission denied; fix: run with sudo, or as the service "
                               "user") from None
    except OSError as e:
        raise OutboxUnreadable(f"cannot read {p} ({e.strerror or e}); fix: check the SD card or stick") from None
    if not head:
        raise OutboxUnreadable(f"{p} is empty (0 bytes): it holds no records; fix: {_HINT}")
    if head != SQLITE_MAGIC and head.startswith(SQLITE_MAGIC[:6]):
        raise explain(p, sqlite3.DatabaseError("its file header is damaged"), exporting=True)  # export fails too
    if head != SQLITE_MAGIC:
        raise OutboxUnreadable(f"{p} is not an outbox (not an SQLite database, perhaps a text or export file); "
                               f"fix: {_HINT}")
    conn = connect(p, readonly=True)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise explain(p, e, exporting) from None
    finally:
        conn.close()
    if not {"passages", "meta"} <= names:
        raise OutboxUnreadable(f"{p} is an SQLite database but not an outbox (no passages table); fix: {_HINT}")


def explain(path: str | Path, e: BaseException, exporting: bool = False) -> OutboxUnreadable:
    """One line for an error met while reading the outbox at `path`; `exporting`: the error
    stopped `queue export` itself, so the fix is the sqlite3 tool's own recovery."""
    if exporting:
        return OutboxUnreadable(f"{path} is too damaged to export ({e}); fix: keep the file for the central "
                                f"office, or try `sqlite3 {path} .recover > saved.sql` (apt install sqlite3)")
    return OutboxUnreadable(f"{path} is damaged ({e}); fix: copy out what can still be read with "
                            f"`checkpoint-scanner queue export --db {path} --what all --out FILE.jsonl`")


@dataclass
class Salvage:
    """The rows of `what` ("pending", "all" or "dead-letters") in seq order, read from the
    outbox at `path` as far as it can be read. After `pages()` is exhausted, `lost` holds the
    seqs that could not be read and `notes` what was assumed; `total` is the table's own count
    (None when even that cannot be read).

    Seqs are handed out without gaps (scanner/store.py: the next seq only after a commit) and
    pruning removes the oldest, so the rows kept are every seq from the first to the last. A
    range scan over a damaged leaf page can end early *without an error* (SQLite 3.40 does), so
    every seq a scan did not return is looked up on its own: found, absent, or lost."""

    path: str
    what: str
    start: int = 0
    end: int = 0
    total: int | None = None
    lost: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_file(self.path, exporting=True)
        self.table = "dead_letters" if self.what == "dead-letters" else "passages"
        conn = connect(self.path, readonly=True)
        try:
            if self.what == "pending":
                try:
                    self.start = int(conn.execute("SELECT coalesce(max(upto_seq), 0) FROM deliveries").fetchone()[0])
                except sqlite3.DatabaseError:
                    self.notes.append("the delivery mark cannot be read: every record kept is exported")
            first = self._bound(conn, "min")
            self.start = max(self.start, (first or 1) - 1)
            top = self._bound(conn, "max")
            if top is None:
                raise explain(self.path, sqlite3.DatabaseError("the last seq cannot be read"), True)
            self.end = top
            self.total = self._count(conn)
        finally:
            conn.close()

    def _count(self, conn: sqlite3.Connection) -> int | None:
        """Rows in (start, end]: the larger of the table's and the record_id index's count (a
        count over a damaged page can come out short without an error); None if neither reads."""
        counts = []
        for source in [self.table] + (["passages INDEXED BY idx_passages_record_id"] if self.table == "passages"
                                      else []):
            try:
                counts.append(int(conn.execute(f"SELECT count(*) FROM {source} WHERE seq > ? AND seq <= ?",
                                               (self.start, self.end)).fetchone()[0]))
            except sqlite3.DatabaseError:
                continue
        return max(counts) if counts else None

    def _bound(self, conn: sqlite3.Connection, fn: str) -> int | None:
        """min(seq) or max(seq) from the table's b-tree and from the record_id index (which holds
        every seq too): the widest of the plausible answers (a damaged page can answer with
        garbage, e.g. 6245747993460714411, instead of an error); None when none can be read."""
        queries = [f"SELECT {fn}(seq) FROM {self.table}"]
        if self.table == "passages":
            queries.append(f"SELECT {fn}(seq) FROM passages INDEXED BY idx_passages_record_id")
        found = []
        for q in queries:
            try:
                value = conn.execute(q).fetchone()[0]
            except sqlite3.DatabaseError:
                continue
            if value is None:
                found.append(0)
            elif isinstance(value, int) and 0 < value <= MAX_PLAUSIBLE_SEQ:
                found.append(value)
        if not found:
            return None
        return max(found) if fn == "max" else min(found)

    def _select(self, conn: sqlite3.Connection, where: str, args: tuple[int, ...]) -> list[dict[str, Any]]:
        cur = conn.execute(f"SELECT * FROM {self.table} WHERE {where} ORDER BY seq", args)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if self.table == "passages":
            return [decode_row(names, r) for r in rows]
        return [{"seq": r[0], "record_id": r[1], "reason": r[2], "at": r[3], "record": json.loads(r[4])}
                for r in rows]

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """Lists of rows, seq ascending, one window of PAGE seqs each, read on a connection of
        its own (short read transactions: the running daemon is never held up)."""
        after = self.start
        while after < self.end:
            hi = min(after + PAGE, self.end)
            try:
                conn = connect(self.path, readonly=True)
            except sqlite3.Error as e:
                raise explain(self.path, e, True) from None
            try:
                try:
                    page = [r for r in self._select(conn, "seq > ? AND seq <= ?", (after, hi))
                            if isinstance(r["seq"], int) and after < r["seq"] <= hi]  # not a damaged page's garbage
                except _ROW_ERRORS:
                    page = []
                have = {r["seq"] for r in page}
                if len(have) < hi - after:  # a gap: a damaged page, or a scan that ended early
                    for seq in range(after + 1, hi + 1):
                        if seq in have:
                            continue
                        try:
                            page += self._select(conn, "seq = ?", (seq,))
                        except _ROW_ERRORS:
                            self.lost.append(seq)
                    page.sort(key=lambda r: r["seq"])
            finally:
                conn.close()
            if page:
                yield page
            after = hi


def ranges(seqs: list[int], most: int = 5) -> str:
    """'8-14, 20' for [8, ..., 14, 20]; at most `most` ranges, then '…'."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    text = [f"{a}-{b}" if a != b else f"{a}" for a, b in out[:most]]
    return ", ".join(text) + (", …" if len(out) > most else "")
