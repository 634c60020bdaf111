"""The outbox schema as named migrations, applied in order, each once (scanner/store.py runs them
at open). Never edit one that has shipped: add the next."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

from scanner import outbox_counts

PASSAGE_COLUMNS: dict[str, type] = {
    "seq": int, "record_id": str, "device_id": str, "checkpoint_id": str, "checkpoint_kind": str,
    "ts_utc": str, "clock_trusted": int, "boot_id": str, "mono_s": float, "verdict": str,
    "reasons": str, "credentials": str, "credential_type": str, "issuer": str, "kid": str,
    "token_hash": str, "colour": str, "temperature_c": float, "object_c": float, "ambient_c": float,
    "temp_status": str, "calibration_version": str, "residence_village": str,
    "residence_grid": str, "trust_version": int, "override_by": str, "override_verdict": str,
    "latency_ms": float, "delivered_at": str,
}
# `delivered_at` (migration 001) is unused: delivery is one mark per batch (outbox.py), which
# writes one page per batch instead of rewriting every delivered row.


def _m001_passages(db: sqlite_utils.Database) -> None:
    passages, meta = db.table("passages"), db.table("meta")
    passages.create(PASSAGE_COLUMNS, pk="seq", not_null={"record_id", "verdict", "ts_utc"})
    passages.create_index(["record_id"], unique=True)
    meta.create({"key": str, "value": str}, pk="key")
    meta.insert({"key": "next_seq", "value": "1"})


def _m002_delivery(db: sqlite_utils.Database) -> None:
    """One row per delivered batch (push, pull ack or export); the largest `upto_seq` is the
    mark shared by push and pull. Dead letters keep a copy of the record and the reason."""
    db.execute("CREATE TABLE deliveries (upto_seq INTEGER PRIMARY KEY, at REAL NOT NULL, via TEXT NOT NULL)")
    db.execute("CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, "
               "reason TEXT NOT NULL, at REAL NOT NULL, record TEXT NOT NULL)")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('outbox_id', lower(hex(randomblob(6))))")
    db.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (str(time.time()),))


def _m003_incremental_vacuum(db: sqlite_utils.Database) -> None:
    """Deleted rows leave free pages; INCREMENTAL lets pruning give them back without a full
    VACUUM. A new outbox is created with it; an older one is rebuilt once (outside a tx)."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")


def _m004_override_of(db: sqlite_utils.Database) -> None:
    """Staff overrides point at the REVIEW record they overrule (PassageRecord.override_of)."""
    db.execute("ALTER TABLE passages ADD COLUMN override_of TEXT")


def _m005_bundle_versions(db: sqlite_utils.Database) -> None:
    """docs/credentials.md section 7: every passage names the versions of *all* trust data in force
    (trust list, status list, policy), so the centre can tell which revocations it knew."""
    db.execute("ALTER TABLE passages ADD COLUMN status_version INTEGER")
    db.execute("ALTER TABLE passages ADD COLUMN policy_version INTEGER")


def _m006_counts(db: sqlite_utils.Database) -> None:
    """Counters kept in step with the rows (scanner/outbox_counts.py), so status and /metrics
    do not count the table. Counted once here: O(n) on the first start after the upgrade."""
    db.execute(outbox_counts.SCHEMA)
    outbox_counts.rebuild(db.conn)


# (name, function, runs inside a transaction)
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None], bool]] = [
    ("001_passages", _m001_passages, True),
    ("002_delivery_and_dead_letters", _m002_delivery, True),
    ("003_incremental_vacuum", _m003_incremental_vacuum, False),
    ("004_override_of", _m004_override_of, True),
    ("005_bundle_versions", _m005_bundle_versions, True),
    ("006_counts", _m006_counts, True),
]
