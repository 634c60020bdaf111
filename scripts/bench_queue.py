#!/usr/bin/env python3
"""Outbox vs a plain sqlite3 WAL table (the baseline) vs persist-queue, side by side in one
process on the same disk, at the same synchronous setting (FULL: what the lane uses).

Measured, median of --runs:
- durable enqueue: one commit per record (our outbox: Store.record(PassageRecord); baseline:
  INSERT of the same record as pre-serialised JSON; persist-queue: SQLiteAckQueue.put);
- dequeue+ack: our outbox reads a batch after the delivery mark and marks it delivered (what
  the uploader and pull API do); the baseline reads the same batch and DELETEs it in one
  commit; persist-queue get()+ack() per item (its API);
- each with an empty queue, 100,000 records queued ahead, and (outbox, persist-queue) 100,000
  delivered rows kept but not yet pruned;
- bytes handed to write(2) per record (/proc/self/io wchar).

Run:  .venv/bin/python scripts/bench_queue.py [--dir /mnt/sd/bench] [--n 2000] [--backlog 100000]
The last line reads `outbox/baseline enqueue ratio: X, backlog/empty ack ratio: Y`, where Y is
the worse of the outbox's two backlog cases over its empty-queue figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner import outbox  # noqa: E402
from scanner.models import CredentialSummary, PassageRecord  # noqa: E402
from scanner.store import _INSERT_SQL, Store, connect, new_record_id  # noqa: E402


def wchar() -> int:
    with open("/proc/self/io", encoding="ascii") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def rec() -> PassageRecord:
    return PassageRecord(
        record_id=new_record_id(),  # what the lane uses (scanner/service.py): time-ordered
        device_id="pi-ra-0001", checkpoint_id="RA-G104-EXIT-3",
        checkpoint_kind="highway_exit", ts_utc="2026-11-28T10:00:00.000+00:00", clock_trusted=True,
        boot_id="6f1c" * 8, mono_s=12345.678, verdict="PASS", reasons=("OK",),
        credentials=(CredentialSummary("health", "VALID", "CN-330000-HC", "0011223344556677", "ab" * 8, "green"),),
        credential_type="health", issuer="CN-330000-HC", kid="0011223344556677", token_hash="ab" * 8,
        colour="green", temperature_c=36.6, object_c=34.1, ambient_c=24.0, temp_status="OK",
        calibration_version="2026-11-01", trust_version=3, latency_ms=8.2)


def as_json(r: PassageRecord) -> str:
    d = {k: getattr(r, k) for k in r.__dataclass_fields__ if k != "extra"}
    d["credentials"] = [c.as_dict() for c in r.credentials]
    return json.dumps(d, separators=(",", ":"))


def timed(fn: Callable[[int], int], total: int, chunk: int) -> tuple[float, float]:
    """Run fn(k) in chunks of `chunk` records until `total`; -> (records per second from the
    median time per record over the chunks, bytes written per record). The median of many
    short chunks keeps a burst of other load on a shared machine from deciding the figure."""
    w, done, per_rec = wchar(), 0, []
    while done < total:
        t = time.perf_counter()
        k = fn(min(chunk, total - done))
        if k <= 0:
            break
        per_rec.append((time.perf_counter() - t) / k)
        done += k
    return 1 / statistics.median(per_rec), (wchar() - w) / max(done, 1)


# -- our outbox ---------------------------------------------------------------------------
class Ours:
    name = "outbox (scanner.store)"

    def __init__(self, d: Path, sync: str) -> None:
        self.path = d / "outbox.db"
        self.store = Store.open(self.path)
        self.store.conn.execute(f"PRAGMA synchronous={sync}")
        self.ack = connect(self.path, synchronous=sync)

    def fill(self, n: int) -> None:
        rows = []
        for _ in range(n):
            r = rec()
            rows.append([self.store._next_seq, *Store._values(r)])
            self.store._next_seq += 1
        with self.store._tx():
            self.store.conn.executemany(_INSERT_SQL, rows)

    def deliver_all(self) -> None:
        top = self.ack.execute("SELECT max(seq) FROM passages").fetchone()[0] or 0
        outbox.mark_delivered(self.ack, top, "bench")

    def enqueue(self, recs: list[PassageRecord]) -> int:
        for r in recs:
            self.store.record(r)
        return len(recs)

    def dequeue_ack(self, n: int, batch: int) -> int:
        done = 0
        while done < n:
            rows = outbox.pending(self.ack, min(batch, n - done))
            if not rows:
                break
            outbox.mark_delivered(self.ack, rows[-1]["seq"], "bench")
            done += len(rows)
        return done

    def close(self) -> None:
        self.ack.close()
        self.store.close()


# -- baseline: a plain WAL table ----------------------------------------------------------
class Baseline:
    name = "baseline sqlite3 WAL table"

    def __init__(self, d: Path, sync: str) -> None:
        self.conn = sqlite3.connect(d / "plain.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={sync}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")

    def fill(self, n: int) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO q (data) VALUES (?)", ((as_json(rec()),) for _ in range(n)))
        self.conn.execute("COMMIT")

    def enqueue(self, recs: list[PassageRecord]) -> int:
        payloads = [as_json(r) for r in recs]  # pre-serialised: the cheapest possible insert
        for p in payloads:
            self.conn.execute("INSERT INTO q (data) VALUES (?)", (p,))
        return len(recs)

    def dequeue_ack(self, n: int, batch: int) -> int:
        done = 0
        while done < n:
            self.conn.execute("BEGIN IMMEDIATE")
            rows = self.conn.execute("SELECT id, data FROM q ORDER BY id LIMIT ?", (min(batch, n - done),)).fetchall()
            if rows:
                self.conn.execute("DELETE FROM q WHERE id <= ?", (rows[-1][0],))
            self.conn.execute("COMMIT")
            if not rows:
                break
            done += len(rows)
        return done

    def close(self) -> None:
        self.conn.close()


# -- persist-queue ------------------------------------------------------------------------
class PersistQueue:
    name = "persist-queue SQLiteAckQueue"

    def __init__(self, d: Path, sync: str) -> None:
        from persistqueue import SQLiteAckQueue

        self.q = SQLiteAckQueue(str(d / "pq"))
        self.sync = sync
        self.q._conn.execute(f"PRAGMA synchronous={sync}")

    def fill(self, n: int) -> None:
        self.q._conn.execute("PRAGMA synchronous=OFF")  # filling only; timed work runs at `sync`
        for _ in range(n):
            self.q.put(as_json(rec()))
        self.q._conn.execute(f"PRAGMA synchronous={self.sync}")

    def deliver_all(self) -> None:
        # the state get()+ack() leaves behind (status 5 = acked, rows kept), set in one statement:
        # draining 100k items through get() first would take minutes (it walks past acked rows)
        with self.q._conn:
            self.q._conn.execute("UPDATE ack_queue_default SET status = 5")
        self.q.total = 0

    def enqueue(self, recs: list[PassageRecord]) -> int:
        payloads = [as_json(r) for r in recs]
        for p in payloads:
            self.q.put(p)
        return len(recs)

    def dequeue_ack(self, n: int, batch: int) -> int:
        for _ in range(n):
            self.q.ack(self.q.get(block=False))
        return n

    def close(self) -> None:
        self.q.close()


def fdatasync_ms(d: Path) -> float:
    p = d / "fsync.probe"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    samples = []
    try:
        for _ in range(50):
            os.pwrite(fd, b"x" * 4096, 0)
            t = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        p.unlink()
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="where the databases go (default: a temp dir); put it on the SD card on a Pi")
    ap.add_argument("--n", type=int, default=2000, help="records timed per measurement (default 2000)")
    ap.add_argument("--backlog", type=int, default=100_000, help="records queued ahead (default 100000)")
    ap.add_argument("--runs", type=int, default=5, help="repetitions, interleaved; the median is reported (default 5)")
    ap.add_argument("--batch", type=int, default=200, help="dequeue batch of the outbox and baseline (default 200)")
    ap.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"], help="synchronous for all (default FULL)")
    ap.add_argument("--skip-persist-queue", action="store_true", help="when persist-queue is not installed")
    args = ap.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-queue-"))
    root.mkdir(parents=True, exist_ok=True)
    backends: list[type] = [Ours, Baseline] + ([] if args.skip_persist_queue else [PersistQueue])
    n, slow_n = args.n, min(args.n, 200)
    print(f"dir {root}  fdatasync(4 KiB) {fdatasync_ms(root):.2f} ms  sqlite {sqlite3.sqlite_version}  "
          f"synchronous={args.sync}  n={n}  backlog={args.backlog}  runs={args.runs}  batch={args.batch}")
    # build every (backend, case) first, then measure them in rotation so drift hits all alike
    setups: list[tuple[type, str, object, int]] = []
    for cls in backends:
        for case in ("empty", "backlog", "delivered"):
            if case == "delivered" and cls is Baseline:
                continue  # the baseline deletes on ack: nothing is kept
            d = root / f"{cls.__name__}-{case}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            b = cls(d, args.sync)
            if case != "empty":
                b.fill(args.backlog)
                if case == "delivered":
                    b.deliver_all()
            setups.append((cls, case, b, slow_n if (case == "delivered" and cls is PersistQueue) else n))
    raw: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for _ in range(args.runs):
        for cls, case, b, count in setups:
            res = raw.setdefault(cls.name, {})
            recs = [rec() for _ in range(count)]
            pos = [0]

            def enq(k: int, b: object = b, recs: list[PassageRecord] = recs, pos: list[int] = pos) -> int:
                part = recs[pos[0]:pos[0] + k]
                pos[0] += len(part)
                return b.enqueue(part) if part else 0  # type: ignore[attr-defined]

            res.setdefault(f"enq_{case}", []).append(timed(enq, count, 100))
            chunk = 50 if cls is PersistQueue else args.batch
            res.setdefault(f"deq_{case}", []).append(
                timed(lambda k, b=b: b.dequeue_ack(k, args.batch), count, chunk))  # type: ignore[attr-defined]
    for _, _, b, _ in setups:
        b.close()  # type: ignore[attr-defined]
    results = {name: {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                      for k, v in res.items()} for name, res in raw.items()}
    base = results[Baseline.name]
    print(f"\n{'backend':32} {'case':10} {'enq rec/s':>10} {'x base':>7} {'B/rec':>7}   "
          f"{'deq+ack rec/s':>13} {'x base':>7} {'B/rec':>7}")
    for name, r in results.items():
        for case in ("empty", "backlog", "delivered"):
            if f"enq_{case}" not in r:
                continue
            e, q = r[f"enq_{case}"], r[f"deq_{case}"]
            be, bq = base.get(f"enq_{case}", base["enq_empty"]), base.get(f"deq_{case}", base["deq_empty"])
            print(f"{name:32} {case:10} {e[0]:10.0f} {e[0] / be[0]:7.2f} {e[1]:7.0f}   "
                  f"{q[0]:13.0f} {q[0] / bq[0]:7.2f} {q[1]:7.0f}")
    ours = results[Ours.name]
    x = ours["enq_empty"][0] / base["enq_empty"][0]
    y = min(ours["deq_backlog"][0], ours["deq_delivered"][0]) / ours["deq_empty"][0]
    if PersistQueue.name in results:
        pq = results[PersistQueue.name]
        print(f"\npersist-queue/baseline: enqueue {pq['enq_empty'][0] / base['enq_empty'][0]:.2f}, "
              f"dequeue+ack {pq['deq_empty'][0] / base['deq_empty'][0]:.2f}; outbox/persist-queue: enqueue "
              f"{ours['enq_empty'][0] / pq['enq_empty'][0]:.2f}, dequeue+ack "
              f"{ours['deq_empty'][0] / pq['deq_empty'][0]:.2f}")
    print(f"outbox/baseline enqueue ratio: {x:.2f}, backlog/empty ack ratio: {y:.2f}")
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
