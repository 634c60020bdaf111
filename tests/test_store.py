"""Outbox: commit, order by seq, idempotent record_id, nothing personal, clear errors."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from scanner.errors import StoreError
from scanner.models import CredentialSummary, PassageRecord
from scanner.store import Store


def rec(**kw: object) -> PassageRecord:
    base = dict(record_id=uuid.uuid4().hex, device_id="d1", checkpoint_id="c1", checkpoint_kind="highway_exit",
                ts_utc="2026-11-28T10:00:00.000+00:00", clock_trusted=True, boot_id="b", mono_s=1.0,
                verdict="PASS", reasons=("OK",),
                credentials=(CredentialSummary("health", "VALID", "CN-330000-HC", "0011", "ab" * 8, "green"),),
                credential_type="health", token_hash="ab" * 8, colour="green", temperature_c=36.6)
    base.update(kw)
    return PassageRecord(**base)  # type: ignore[arg-type]


def test_record_orders_by_seq_and_is_idempotent(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "o.db")
    r1, r2 = rec(), rec(verdict="DENY", reasons=("HEALTH_RED",))
    assert s.record(r1) == 1
    assert s.record(r2) == 2
    assert s.record(r1) == 1  # the same record again is harmless
    rows = s.rows()
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[1]["reasons"] == ["HEALTH_RED"] and rows[0]["clock_trusted"] is True
    assert rows[0]["credentials"][0]["token_hash"] == "ab" * 8
    assert s.counts_by_verdict() == {"PASS": 1, "DENY": 1}
    s.close()


def test_wal_and_full_sync_survive_reopen(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "o.db")
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.record(rec())
    s.close()
    s2 = Store.open(tmp_path / "o.db")
    assert s2.count() == 1
    assert s2.record(rec()) == 2  # seq continues
    s2.close()


def test_schema_has_no_personal_columns(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "o.db")
    cols = {r[1] for r in s.conn.execute("PRAGMA table_info(passages)")}
    for bad in ("payload", "name", "masked_name", "id_number", "id_tail", "address", "nm", "idt", "adr"):
        assert bad not in cols
    s.close()


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if os.access(ro, os.W_OK):  # root ignores mode bits; /proc/1 is unwritable even for root
        ro = Path("/proc/1")
    with pytest.raises(StoreError, match="not writable; fix"):
        Store.open(ro / "o.db")


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="cannot create the outbox directory"):
        Store.open(f / "sub" / "o.db")


def test_corrupt_file_is_refused_with_fix(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        Store.open(p)


def test_write_failure_raises_store_error(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "o.db")
    s.conn.execute("PRAGMA max_page_count = 1")  # simulates a full disk: no page can be added
    big = rec(credentials=tuple(CredentialSummary("health", "VALID", "x" * 500) for _ in range(50)))
    with pytest.raises(StoreError, match="free disk space"):
        s.record(big)
    s.close()
    assert isinstance(StoreError("x"), OSError)
    with sqlite3.connect(tmp_path / "o.db") as c:
        assert c.execute("select count(*) from passages").fetchone()[0] == 0
