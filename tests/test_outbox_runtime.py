"""The outbox while the daemon runs (issue 11 items 10-14): a -wal or database file removed
underneath, corruption met by a reader or the idle quick_check, failed commits counted and
reported, file modes, and counters that do not count the table."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from test_store import rec

from scanner import outbox, outbox_counts
from scanner.errors import StoreError
from scanner.models import CredentialSummary
from scanner.outbox_health import FsSpace, capacity_ratio, health_of, problems
from scanner.store import Store, connect
from scanner.sync.background import Maintenance
from scanner.sync.uploader import SyncState

PAGE = 1024


def on_disk(p: Path, tmp: Path) -> int:
    """What a kill -9 leaves: a copy of the database and its -wal as they are on disk now, opened
    by a fresh process-like connection (no shared memory, no open descriptors)."""
    snap = tmp / f"snap-{random.randrange(1 << 30)}"
    snap.mkdir()
    for suffix in ("", "-wal"):
        if Path(f"{p}{suffix}").exists():
            shutil.copy(f"{p}{suffix}", snap / f"o.db{suffix}")
    c = sqlite3.connect(snap / "o.db")
    try:
        return int(c.execute("SELECT count(*) FROM passages").fetchone()[0])
    finally:
        c.close()


def damage_page(p: Path, record_id: str, page_type: int) -> int:
    """Write garbage over the b-tree page (0x0D table leaf, 0x0A index leaf) holding
    `record_id` in the database file (checkpoint first). Returns the page number."""
    data = p.read_bytes()
    off = -1
    while True:
        off = data.find(record_id.encode(), off + 1)
        assert off >= 0, "record not found in the file"
        page = off // PAGE
        if page and data[page * PAGE] == page_type:
            break
    with open(p, "r+b") as f:
        f.seek(page * PAGE)
        f.write(b"\xff" * 8 + b"\xa5" * (PAGE - 8))  # page type 0xFF: not a b-tree page
    return page + 1


# -- item 10: a -wal or database file removed underneath ------------------------------------

@pytest.mark.parametrize("removed", ["-wal", ""])
def test_removed_outbox_file_faults_once_and_every_acknowledged_record_survives_kill9(
        tmp_path: Path, removed: str) -> None:
    """Issue input: 363 passages signalled, the -wal unlinked after 243; after kill -9, 120 were
    gone. Now the first passage after the removal is FAULT (no seq, health fault counted), the
    outbox is reopened, and every passage that got a seq is in the files on disk."""
    p = tmp_path / "o.db"
    s = Store.open(p)
    signalled = [s.record(rec()) for _ in range(243)]
    os.unlink(f"{p}{removed}")
    faults = 0
    for _ in range(120):
        try:
            signalled.append(s.record(rec()))
        except StoreError as e:
            faults += 1
            assert "was removed or replaced while in use" in str(e) and "fix:" in str(e)
    assert faults == 1 and len(signalled) == 362
    assert on_disk(p, tmp_path) == len(signalled)  # kill -9 now: nothing acknowledged is lost
    h = s.health.snapshot()
    assert h["write_failures_total"] == 1 and h["runtime_recoveries_total"] == 1 and not h["faults"]
    s.close()
    again = Store.open(p)
    assert sorted(r["seq"] for r in again.iter_all()) == sorted(signalled)
    again.close()


def test_a_failed_reopen_keeps_every_passage_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    s.record(rec())
    os.unlink(f"{p}-wal")

    def refuse(cls: type, path: Path) -> Store:
        raise StoreError("simulated: the card refuses")

    monkeypatch.setattr(Store, "_open_checked", classmethod(refuse))
    for _ in range(3):
        with pytest.raises(StoreError, match="reopening it failed"):
            s.record(rec())
    assert s.health.snapshot()["faults"]["files"].startswith("the outbox's -wal file")
    assert any("removed or replaced" in r for r in problems(p))


def test_maintenance_repairs_a_removed_wal_between_passages(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    for _ in range(30):
        s.record(rec())
    os.unlink(f"{p}-wal")
    m = Maintenance(str(p), threading.Event(), SyncState(), interval_s=60, retention_s=86400, max_bytes=0)
    m.round()
    assert on_disk(p, tmp_path) == 30 and s.record(rec()) == 31  # no FAULT: repaired before it
    s.close()


# -- item 11: corruption met at run time ---------------------------------------------------

def test_idle_quick_check_finds_a_damaged_index_page_and_moves_the_outbox_aside(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    first = rec()
    s.record(first)
    for _ in range(400):
        s.record(rec())
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_page(p, first.record_id, 0x0A)  # the record_id index: nothing but quick_check reads it
    m = Maintenance(str(p), threading.Event(), SyncState(), interval_s=60, retention_s=86400, max_bytes=0,
                    quick_check_every_s=0)
    m.round()  # sees the top seq
    m.round()  # idle: quick_check
    assert s.recovered_from is not None and (Path(s.recovered_from) / "o.db").exists()
    assert s.record(rec()) == 1  # new passages land in the fresh outbox
    assert health_of(p).snapshot()["runtime_recoveries_total"] == 1 and not problems(p)
    s.close()


def test_lane_read_meeting_corruption_moves_the_outbox_aside(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    first = rec()
    s.record(first)
    for _ in range(300):
        s.record(rec())
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_page(p, first.record_id, 0x0D)
    c = connect(p, readonly=True)
    with pytest.raises(sqlite3.DatabaseError):
        outbox.rows_after(c, 0, 5)  # what every pull met: 500, until a restart
    c.close()
    assert outbox.read(p, lambda conn: outbox.rows_after(conn, 0, 5)) == ([], False)  # moved aside, fresh
    assert s.recovered_from is not None and s.record(rec()) == 1
    s.close()


# -- item 12: failed commits and the real free space ---------------------------------------

def test_failed_commits_are_counted_and_reported_until_one_succeeds(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    s.record(rec())
    s.conn.execute("PRAGMA max_page_count = 1")  # a full card: no page can be added
    for _ in range(3):
        with pytest.raises(StoreError):
            s.record(rec(credentials=tuple(CredentialSummary("health", "VALID", "x" * 500) for _ in range(50))))
    c = connect(p)
    st = outbox.status(c, p)
    assert st["write_failures_total"] == 3 and "is full" in st["last_write_error"]
    code, body = outbox.healthz(p)
    assert code == 503 and body["status"] == "fault" and "could not be recorded" in body["reasons"][0]
    s.conn.execute("PRAGMA max_page_count = 1000000")  # room again
    s.record(rec())
    st = outbox.status(c, p)
    assert st["write_failures_total"] == 3 and st["last_write_error"] is None
    assert outbox.healthz(p) == (200, {"status": "ok"})
    c.close()
    s.close()


def test_disk_alarm_and_healthz_use_the_real_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 1 << 30
    assert capacity_ratio(80, 100, 0, None) == 0.0
    assert capacity_ratio(80 << 20, 100 << 20, gib, FsSpace(10 << 20, 32 * gib, False)) == pytest.approx(80 / 110)
    assert capacity_ratio(80 << 20, 100 << 20, 400 << 20, FsSpace(gib, 32 * gib, False)) == pytest.approx(0.2)
    p = tmp_path / "o.db"
    s = Store.open(p)
    s.record(rec())
    for free, ro, why in ((20 << 20, False, "only 20 MiB free"), (gib, True, "read-only")):
        fs = FsSpace(free, 32 * gib, ro)
        monkeypatch.setattr("scanner.outbox_health.fs_space", lambda _p, fs=fs: fs)
        monkeypatch.setattr("scanner.outbox.fs_space", lambda _p, fs=fs: fs)
        code, body = outbox.healthz(p)
        assert code == 503 and why in body["reasons"][0] and "fix:" in body["reasons"][0]
    c = connect(p)
    assert outbox.status(c, p)["fs_readonly"] is True
    low = FsSpace(20 << 20, 32 * gib, False)
    monkeypatch.setattr("scanner.outbox.fs_space", lambda _p: low)
    st = outbox.status(c, p, max_bytes=gib)  # the cap is far: the card is what is full
    assert st["used_ratio"] < 0.01 and st["disk_alarm"] is True and st["fs_free_bytes"] == 20 << 20
    c.close()
    s.close()


# -- item 13: file modes -------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outbox_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        p = tmp_path / "new" / "o.db"
        s = Store.open(p)
        s.record(rec())
        assert mode(p.parent) == 0o700
        for suffix in ("", "-wal", "-shm", ".lock"):
            assert mode(Path(f"{p}{suffix}")) == 0o600, suffix
        s._recover("test: moved aside")
        moved = Path(s.recovered_from or "")
        assert mode(moved) == 0o700 and {mode(f) for f in moved.iterdir()} == {0o600}
        s.close()
        legacy = tmp_path / "legacy.db"  # made by an older version: 0644
        sqlite3.connect(legacy).close()
        os.chmod(legacy, 0o644)
        Store.open(legacy).close()
        assert mode(legacy) == 0o600
    finally:
        os.umask(old)


# -- item 14: counters instead of counting -------------------------------------------------

def full_counts(c: sqlite3.Connection) -> tuple[int, int, int]:
    mark = outbox.delivered_upto(c)
    return (c.execute("SELECT count(*) FROM passages").fetchone()[0],
            c.execute("SELECT count(*) FROM passages WHERE seq > ?", (mark,)).fetchone()[0],
            c.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


def test_counters_stay_equal_to_a_full_count_through_random_work(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    c = connect(p)
    rnd = random.Random(11)
    for step in range(300):  # bounded: 300 random steps
        op = rnd.random()
        if op < 0.6:
            s.record(rec())
        elif op < 0.75:
            top = c.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
            upto = rnd.randint(0, top + 3)
            dead = [outbox.DeadLetter(upto, "x", "rejected")] if upto and rnd.random() < 0.3 else []
            outbox.mark_delivered(c, upto, "push", dead)
        elif op < 0.85:
            outbox.prune(c, retention_s=0, max_bytes=0)
        elif op < 0.95:
            outbox.advance_counts(c)
        st = outbox.status(c, p)
        assert (st["records"], st["pending"], st["dead_letters"]) == full_counts(c), step
    s.close()
    c.close()


def test_counters_out_of_step_fall_back_to_counting_and_are_rebuilt(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    for _ in range(20):
        s.record(rec())
    c = connect(p)
    outbox.advance_counts(c)
    c.execute("DELETE FROM passages WHERE seq <= 5")  # an older version pruning without the counters
    c.execute("INSERT INTO deliveries VALUES (8, 0, 'old')")
    st = outbox.status(c, p)
    assert (st["records"], st["pending"]) == (15, 12) == full_counts(c)[:2]
    outbox.advance_counts(c)  # the next writer rebuilds the row
    row = outbox_counts.stored(c)
    assert row is not None and (row.rows, row.delivered, row.mark) == (15, 3, 8)
    c.close()
    s.close()


def test_status_queries_search_the_primary_key_instead_of_scanning(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    for _ in range(50):
        s.record(rec())
    c = connect(p)
    seen: list[str] = []
    c.set_trace_callback(seen.append)
    outbox.status(c, p)
    c.set_trace_callback(None)
    queries = [q for q in seen if q.lstrip().upper().startswith("SELECT") and "FROM passages" in q]
    assert queries
    for q in queries:
        plan = " ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + q))
        assert "SCAN passages" not in plan, (q, plan)
    c.close()
    s.close()
