#!/usr/bin/env python3
"""What one staff-page refresh or /metrics scrape costs in the outbox, empty and with a backlog.

Both read `outbox.status()` (the staff page through `queue_health`, /metrics through the pull
API). Before issue 11 it counted the table (`count(*)` of all rows and of the undelivered ones):
O(n) in the backlog, once a second per open staff page. It now reads counters kept in step by
the writers (scanner/outbox_counts.py) plus the rows written since the last maintenance round.
This script times both ways on the same files: the old counting queries alone (`old`; the rest
of status() is small and unchanged) and the whole `outbox.status()` (`new`: counters, page
counts, file sizes, statvfs, health), median of --runs calls each, at 0 rows and at --n
undelivered rows (the worst case: nothing delivered), with --tail passages written after the
last maintenance round.

Run:  .venv/bin/python scripts/bench_counters.py [--n 500000] [--runs 30] [--dir DIR]
The last line reads `backlog/empty ratio: old X, new Y`.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_queue import rec  # noqa: E402

from scanner import outbox  # noqa: E402
from scanner.store import _INSERT_SQL, Store, connect  # noqa: E402


def old_status(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """The counting queries `status()` ran before the counters (issue 11 item 14)."""
    conn.execute("BEGIN")
    try:
        mark = outbox.delivered_upto(conn)
        total, _top = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM passages").fetchone()
        pend = conn.execute("SELECT count(*) FROM passages WHERE seq > ?", (mark,)).fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    return total, pend, dead


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm the page cache: the SD card's cache is warm too between refreshes
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def fill(path: Path, n: int, tail: int) -> Store:
    """n undelivered passages, bulk-inserted (one transaction per 10,000 rows), counters folded
    in as a maintenance round does, then `tail` more through Store.record like the lane."""
    store = Store.open(path)
    c = connect(path, synchronous="OFF")
    seq = 1
    while seq <= n:
        c.execute("BEGIN")
        for _ in range(min(10_000, n - seq + 1)):
            c.execute(_INSERT_SQL, (seq, *Store._values(rec())))
            seq += 1
        c.execute("COMMIT")
    outbox.advance_counts(c)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    store._next_seq = seq
    for _ in range(tail):
        store.record(rec())
    return store


def measure(path: Path, runs: int) -> tuple[float, float, tuple[int, int, int]]:
    conn = connect(path, readonly=True)
    try:
        st = outbox.status(conn, path)
        counts = (st["records"], st["pending"], st["dead_letters"])
        assert old_status(conn) == counts, (old_status(conn), counts)
        old = median_ms(lambda: old_status(conn), runs)
        new = median_ms(lambda: outbox.status(conn, path), runs)
    finally:
        conn.close()
    return old, new, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500_000, help="backlog of undelivered rows (default 500000)")
    ap.add_argument("--runs", type=int, default=30, help="timed calls per figure (median)")
    ap.add_argument("--tail", type=int, default=30, help="passages since the last maintenance round")
    ap.add_argument("--dir", help="where to build the outboxes (default: a temp dir, removed after)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-counters-", dir=args.dir))
    try:
        figures = {}
        for n in (0, args.n):
            p = work / f"o-{n}.db"
            t = time.perf_counter()
            store = fill(p, n, args.tail)
            built = time.perf_counter() - t
            old, new, counts = measure(p, args.runs)
            store.close()
            size = p.stat().st_size / (1 << 20)
            figures[n] = (old, new)
            print(f"{n:>9,} rows (+{args.tail} since the last round, {size:.0f} MiB, built in {built:.0f} s): "
                  f"old {old:8.2f} ms   new {new:6.2f} ms   counts {counts}")
        (o0, n0), (o1, n1) = figures[0], figures[args.n]
        print(f"backlog/empty ratio: old {o1 / o0:.1f}, new {n1 / n0:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
