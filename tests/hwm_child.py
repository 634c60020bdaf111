"""Child process for tests/test_store_hwm.py: opens the outbox, records `checkpointed` passages and
checkpoints them into the database file, records `in_wal` more (they stay in the -wal only),
prints `READY <outbox id> <newest seq>` and waits to be killed (never closes: a crash)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_store import rec  # noqa: E402

from scanner.store import Store  # noqa: E402


def main() -> None:
    db, checkpointed, in_wal = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store.open(db)
    seq = 0
    for _ in range(checkpointed):
        seq = store.record(rec())
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for _ in range(in_wal):
        seq = store.record(rec())
    oid = store.conn.execute("SELECT value FROM meta WHERE key='outbox_id'").fetchone()[0]
    print(f"READY {oid} {seq}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
