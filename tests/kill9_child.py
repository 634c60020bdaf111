"""Child process for tests/test_kill9.py: records passages flat out and prints `ACK seq record_id`
only after record() returned (the lane's rule: commit, then tell the person). Between records
it delivers (copies to a fsynced "server" file, then marks delivered), prunes and checkpoints,
so SIGKILL lands in every phase.

--bug ack-before-commit is the negative control: records are grouped into one transaction
per 50 and each is acknowledged as soon as it is inserted, before COMMIT.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner import outbox  # noqa: E402
from scanner.models import PassageRecord  # noqa: E402
from scanner.store import Store, connect  # noqa: E402


def rec() -> PassageRecord:
    return PassageRecord(record_id=uuid.uuid4().hex, device_id="d1", checkpoint_id="c1",
                         checkpoint_kind="highway_exit", ts_utc="2026-11-28T10:00:00.000+00:00",
                         clock_trusted=True, boot_id="b", mono_s=0.0, verdict="PASS", reasons=("OK",),
                         temperature_c=36.6)


def deliver(db: str, server: Path) -> None:
    c = connect(db)
    try:
        rows = outbox.pending(c, 20)
        if not rows:
            return
        with open(server, "a", encoding="utf-8") as f:  # the "central server" stores first...
            for r in rows:
                f.write(r["record_id"] + "\n")
            f.flush()
            os.fsync(f.fileno())
        outbox.mark_delivered(c, rows[-1]["seq"], "push")  # ...then the device forgets
    finally:
        c.close()


def main() -> None:
    db, server, bug = sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""
    store = Store.open(db)
    out = sys.stdout
    i = 0
    if bug == "ack-before-commit":
        store.conn.execute("BEGIN IMMEDIATE")
    while True:
        i += 1
        r = rec()
        if bug == "ack-before-commit":
            values = Store._values(r)
            seq = store._next_seq
            store.conn.execute("INSERT INTO passages (seq, " + ", ".join(
                f for f in PassageRecord.__dataclass_fields__ if f != "extra") + ") VALUES (" +
                ", ".join("?" * (len(values) + 1)) + ")", [seq, *values])
            store._next_seq += 1
            out.write(f"ACK {seq} {r.record_id}\n")
            out.flush()
            if i % 50 == 0:
                store.conn.execute("COMMIT")
                store.conn.execute("BEGIN IMMEDIATE")
            continue
        seq = store.record(r)
        out.write(f"ACK {seq} {r.record_id}\n")
        out.flush()
        if i % 7 == 0:
            deliver(db, server)
        if i % 23 == 0:
            c = connect(db)
            outbox.prune(c, retention_s=0, max_bytes=0)
            c.close()
        if i % 41 == 0:
            c = connect(db)
            outbox.checkpoint(c)
            c.close()


if __name__ == "__main__":
    main()
