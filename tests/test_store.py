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


def test_corrupt_file_is_refused_with_fix_when_recovery_is_off(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        Store.open(p, recover=False)
    assert p.exists()  # a read-only tool never moves anything


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


# -- issue 5: corruption, seq floor, migrations, disk policy, delivery mark ------------------

def _fill(s: Store, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        r = rec()
        s.record(r)
        ids.append(r.record_id)
    return ids


def test_every_record_field_has_a_column(tmp_path: Path) -> None:
    from dataclasses import fields

    s = Store.open(tmp_path / "o.db")
    cols = {r[1] for r in s.conn.execute("PRAGMA table_info(passages)")}
    missing = [f.name for f in fields(PassageRecord) if f.name != "extra" and f.name not in cols]
    assert not missing, f"add a named migration in scanner/store.py for {missing}"
    s.close()


def test_corrupt_outbox_is_moved_aside_together_and_a_fresh_one_records(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    _fill(s, 300)
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _fill(s, 5)  # these stay in the -wal: the files must move together
    data = bytearray(p.read_bytes())
    page = 4096
    for off in range(3 * page, 6 * page):  # damage b-tree pages in the middle of the file
        data[off] = 0xA5
    p.write_bytes(bytes(data))
    assert s._file_lock is not None
    s._file_lock.release()  # the old daemon is gone (its -wal/-shm stay: conn left open); a new one starts
    fresh = Store.open(p)
    assert fresh.recovered_from is not None
    moved = Path(fresh.recovered_from)
    assert (moved / "o.db").exists() and (moved / "o.db-wal").exists() and (moved / "o.db-shm").exists()
    assert "event=outbox_corrupt" in caplog.text and "fix:" in caplog.text
    assert fresh.record(rec()) == 1 and fresh.count() == 1
    meta = dict(fresh.conn.execute("SELECT key, value FROM meta"))
    assert meta["recovered_from"] == str(moved) and float(meta["recovered_at"]) > 0
    fresh.close()
    s.conn.close()


def test_stray_wal_without_its_database_is_moved_aside_before_a_fresh_start(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    stray = b"\x37\x7f\x06\x82" + b"\0" * 100
    Path(str(p) + "-wal").write_bytes(stray)
    s = Store.open(p)
    assert s.recovered_from and (Path(s.recovered_from) / "o.db-wal").read_bytes() == stray
    assert s.record(rec()) == 1
    s.close()


def test_corruption_met_while_writing_starts_a_fresh_outbox(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "o.db")
    _fill(s, 3)
    real = s._insert
    calls = {"n": 0}

    def corrupt_once(values: list[object], record_id: str) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            e = sqlite3.DatabaseError("database disk image is malformed")
            e.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
            raise e
        return real(values, record_id)

    s._insert = corrupt_once  # type: ignore[method-assign]
    assert s.record(rec()) == 1  # written to the fresh outbox, not lost
    assert s.recovered_from and (Path(s.recovered_from) / "o.db").exists()
    s.close()


def test_seq_is_never_reused_after_everything_is_pruned(tmp_path: Path) -> None:
    from scanner import outbox
    from scanner.store import connect

    p = tmp_path / "o.db"
    s = Store.open(p)
    _fill(s, 5)
    c = connect(p)
    outbox.mark_delivered(c, 5, "push")
    assert outbox.prune(c, retention_s=0, max_bytes=0).deleted == 5
    c.close()
    assert s.record(rec()) == 6
    s.close()
    c = connect(p)
    outbox.mark_delivered(c, 6, "push")
    outbox.prune(c, retention_s=0, max_bytes=0)
    c.close()
    s2 = Store.open(p)
    assert s2.count() == 0 and s2.record(rec()) == 7
    s2.close()


def test_new_outbox_uses_incremental_vacuum_and_old_one_is_migrated(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "new.db")
    assert s.settings()["auto_vacuum"] == "INCREMENTAL" and s.settings()["synchronous"] == "FULL"
    s.close()
    old = tmp_path / "old.db"  # an outbox made before issue 5: only migration 001
    import sqlite_utils

    from scanner.store import MIGRATIONS
    with sqlite3.connect(old) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        MIGRATIONS[0][1](sqlite_utils.Database(c))
        c.execute("INSERT INTO _migrations VALUES ('001_passages', 'x')")
        c.execute("INSERT INTO passages (seq, record_id, verdict, ts_utc, reasons) VALUES (1, 'r1', 'PASS', 't', '[]')")
        c.execute("UPDATE meta SET value='2' WHERE key='next_seq'")
    s = Store.open(old)
    assert s.settings()["auto_vacuum"] == "INCREMENTAL"
    assert [r["record_id"] for r in s.rows()] == ["r1"] and s.record(rec()) == 2
    names = [r[0] for r in s.conn.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names[:3] == ["001_passages", "002_delivery_and_dead_letters", "003_incremental_vacuum"]
    s.close()


def test_delivery_mark_is_idempotent_clamped_and_dead_letters_keep_the_reason(tmp_path: Path) -> None:
    from scanner import outbox
    from scanner.store import connect

    p = tmp_path / "o.db"
    s = Store.open(p)
    ids = _fill(s, 10)
    c = connect(p)
    assert [r["seq"] for r in outbox.pending(c, 3)] == [1, 2, 3]
    dead = [outbox.DeadLetter(2, ids[1], "rejected: schema")]
    assert outbox.mark_delivered(c, 3, "push", dead) == 3
    assert outbox.mark_delivered(c, 2, "pull") == 3  # older: no-op
    assert outbox.mark_delivered(c, 10**9, "pull") == 10  # clamped to what exists
    assert outbox.pending(c, 5) == []
    assert s.record(rec()) == 11 and [r["seq"] for r in outbox.pending(c, 5)] == [11]
    row = c.execute("SELECT record_id, reason, record FROM dead_letters").fetchone()
    assert row[0] == ids[1] and row[1] == "rejected: schema" and ids[1] in row[2]
    st = outbox.status(c, p)
    assert st["pending"] == 1 and st["dead_letters"] == 1 and st["last_delivery_via"] == "pull"
    c.close()
    s.close()


def test_prune_keeps_undelivered_and_respects_retention(tmp_path: Path) -> None:
    from scanner import outbox
    from scanner.store import connect

    p = tmp_path / "o.db"
    s = Store.open(p)
    _fill(s, 50)
    c = connect(p)
    outbox.mark_delivered(c, 20, "push", now=1000.0)
    outbox.mark_delivered(c, 30, "push", now=5000.0)
    assert outbox.prune(c, retention_s=2000, max_bytes=0, now=6000.0).deleted == 20  # delivered before 4000
    assert outbox.prune(c, retention_s=0, max_bytes=0, now=6000.0).deleted == 10
    assert s.count() == 20 and min(r["seq"] for r in s.rows()) == 31  # undelivered all kept
    c.close()
    s.close()


def test_full_outbox_faults_instead_of_dropping_and_pruning_delivered_makes_room(tmp_path: Path) -> None:
    from scanner import outbox
    from scanner.store import connect

    p = tmp_path / "o.db"
    cap = 64 * 4096
    s = Store.open(p, max_bytes=cap)
    n = 0
    with pytest.raises(StoreError, match="is full.*fix"):
        while True:
            s.record(rec())
            n += 1
    assert n > 50 and s.count() == n  # every acknowledged record is there
    c = connect(p)
    assert outbox.used_ratio(c, cap) >= outbox.PURGE_RATIO
    outbox.mark_delivered(c, n // 2, "push")
    res = outbox.prune(c, retention_s=10**9, max_bytes=cap)  # retention not reached: capacity purge
    assert res.deleted > 0 and s.count() == n - res.deleted
    assert all(r["seq"] > n // 2 for r in s.rows()[: n // 4]) or s.count() >= n - n // 2
    assert s.record(rec()) == n + 1  # room again
    c.close()
    s.close()


def test_cursor_round_trip_and_foreign_outbox(tmp_path: Path) -> None:
    from scanner import outbox

    assert outbox.decode_cursor("", "abc") == (0, False)
    assert outbox.decode_cursor(outbox.encode_cursor("abc", 42), "abc") == (42, False)
    assert outbox.decode_cursor("def.42", "abc") == (0, True)
    with pytest.raises(outbox.CursorError):
        outbox.decode_cursor("42; drop table", "abc")
