"""Records lost with a removed -wal are noticed at the next start (attacker finding F3,
scanner/store_hwm.py): right after passages were shown, `rm outbox.db-wal` and kill -9 left the
outbox without them; the next start reused their seq numbers under the same outbox id, so a
puller whose cursor had passed them skipped the new records, and nothing raised an alarm.

The crash is real: the writer runs in a child process (tests/hwm_child.py) killed with SIGKILL,
so nothing is checkpointed or closed on the way out (as tests/test_kill9.py does)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from promtext import samples
from test_store import rec

from scanner import outbox, store_hwm
from scanner.store import Store, connect
from scanner.sync.background import Maintenance
from scanner.sync.metrics import render_metrics
from scanner.sync.uploader import SyncState

CHILD = Path(__file__).with_name("hwm_child.py")


def crash_after_wal_removed(db: Path, checkpointed: int, in_wal: int) -> tuple[str, int]:
    """Child records, then the -wal is unlinked and the child SIGKILLed. -> (outbox id, top)."""
    p = subprocess.Popen([sys.executable, str(CHILD), str(db), str(checkpointed), str(in_wal)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()  # blocks until the child is ready (or dies: then "")
        assert line.startswith("READY "), p.stderr.read() if p.stderr else line
        _, oid, top = line.split()
        os.unlink(f"{db}-wal")
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
    return oid, int(top)


def test_a_removed_wal_and_a_crash_rotate_the_outbox_and_never_reuse_a_seq(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "o.db"
    old_oid, top = crash_after_wal_removed(db, 10, 5)
    assert top == 15
    caplog.set_level(logging.ERROR, logger="scanner.store")
    s = Store.open(db)
    try:
        c = connect(db)
        assert c.execute("SELECT max(seq) FROM passages").fetchone()[0] == 10  # 11..15 went with the -wal
        new_oid = outbox.outbox_id(c)
        assert new_oid != old_oid  # a new cursor namespace: a puller at <old>.15 restarts cleanly
        assert s.lost is not None and (s.lost.count, s.lost.first_seq, s.lost.last_seq) == (5, 11, 15)
        assert "event=outbox_records_lost count=5 first_seq=11 last_seq=15" in caplog.text
        assert s.record(rec()) == 16  # never 11 again
        assert outbox.decode_cursor(f"{old_oid}.15", new_oid) == (0, True)  # cursor_reset for the puller
        rows, _ = outbox.rows_after(c, 0, 100)
        assert [r["seq"] for r in rows] == [*range(1, 11), 16]
        code, body = outbox.healthz(db)
        assert code == 200 and body["status"] == "degraded"
        assert "5 recorded passage(s), seq 11..15" in body["alarms"][0] and "fix:" in body["alarms"][0]
        st = outbox.status(c, db)
        assert st["lost_records"] == 5 and st["outbox_id"] == new_oid
        text = render_metrics(st, SyncState(), clock_synced=True)
        m = samples(text)
        assert m["checkpoint_outbox_lost_records"] == 5 and m["checkpoint_outbox_loss_alarm"] == 1
        c.close()
    finally:
        s.close()
    again = Store.open(db)  # a clean restart afterwards: no new alarm, the sequence goes on
    try:
        assert again.lost is None and again.record(rec()) == 17
    finally:
        again.close()


def test_without_the_high_water_file_the_same_crash_reuses_seqs(tmp_path: Path) -> None:
    """The negative control: the harness above would see the old behaviour (seq 11 handed out
    again under the same outbox id) if the mark were not kept."""
    db = tmp_path / "o.db"
    old_oid, _ = crash_after_wal_removed(db, 10, 5)
    store_hwm.path_of(db).unlink()
    s = Store.open(db)
    try:
        assert s.lost is None and s.record(rec()) == 11
        c = connect(db)
        assert outbox.outbox_id(c) == old_oid
        c.close()
    finally:
        s.close()


def test_a_crash_without_a_removed_file_is_no_loss(tmp_path: Path) -> None:
    """kill -9 alone: the -wal is replayed, the mark equals the newest seq, nothing is raised."""
    db = tmp_path / "o.db"
    p = subprocess.Popen([sys.executable, str(CHILD), str(db), "3", "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().startswith("READY ")
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
    s = Store.open(db)
    try:
        assert s.lost is None and s.record(rec()) == 8
        assert outbox.healthz(db) == (200, {"status": "ok"})
    finally:
        s.close()


def test_an_outbox_missing_at_start_is_reported_with_the_mark_it_had_reached(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    old_oid, _ = crash_after_wal_removed(db, 6, 0)
    db.unlink()  # the database went too (rm outbox.db*)
    for suffix in ("-shm",):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    s = Store.open(db)
    try:
        assert s.lost is not None and s.lost.old_id == old_oid and s.lost.last_seq == 6
        code, body = outbox.healthz(db)
        assert body["status"] == "degraded" and "missing at start" in body["alarms"][0]
    finally:
        s.close()


def test_the_mark_is_fixed_size_checksummed_and_torn_text_is_ignored(tmp_path: Path) -> None:
    m = store_hwm.Mark("a1b2c3d4e5f6", 123456789)
    data = store_hwm.encode(m)
    assert len(data) == len(store_hwm.encode(store_hwm.Mark("0" * 32, 10**19)))  # one size: a rewrite covers all
    assert store_hwm.decode(data) == m
    assert store_hwm.decode(data.replace(b"123456789", b"123456780")) is None  # checksum
    assert store_hwm.decode(data[:20]) is None and store_hwm.decode(b"") is None
    assert store_hwm.decode(b"\xff" * 72) is None


def test_the_writer_keeps_the_mark_at_its_newest_seq(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    s = Store.open(db)
    try:
        for _ in range(3):
            s.record(rec())
        mark = store_hwm.read(db)
        c = connect(db)
        assert mark == store_hwm.Mark(outbox.outbox_id(c), 3)
        c.close()
        assert oct(os.stat(store_hwm.path_of(db)).st_mode & 0o777) == "0o600"
    finally:
        s.close()


def test_the_maintenance_check_recreates_a_removed_mark_file(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    s = Store.open(db)
    try:
        s.record(rec())
        store_hwm.path_of(db).unlink()
        m = Maintenance(str(db), threading.Event(), SyncState(), interval_s=60, retention_s=86400, max_bytes=0)
        m.check_files()
        assert store_hwm.read(db) is not None and store_hwm.read(db).seq == 1  # type: ignore[union-attr]
        s.record(rec())
        assert store_hwm.read(db).seq == 2  # type: ignore[union-attr]
    finally:
        s.close()


def test_the_maintenance_thread_saves_a_removed_wal_between_rounds(tmp_path: Path) -> None:
    """F3 (b): the -wal is checked every second, not once per round (interval_s = 60 here): a
    removal while the lane is idle is repaired from the open connection long before the round."""
    db = tmp_path / "o.db"
    s = Store.open(db)
    stop = threading.Event()
    rounds = threading.Semaphore(0)

    class Counted(Maintenance):
        def round(self) -> outbox.PruneResult:
            try:
                return super().round()
            finally:
                rounds.release()

    m = Counted(str(db), stop, SyncState(), interval_s=60, retention_s=86400, max_bytes=0)
    try:
        for _ in range(5):
            s.record(rec())
        m.start()
        assert rounds.acquire(timeout=30)  # the first round is over: the next is 60 s away
        os.unlink(f"{db}-wal")
        deadline = time.monotonic() + 30  # a budget far under the 60 s round, not a speed claim
        while time.monotonic() < deadline and not s.health.snapshot()["runtime_recoveries_total"]:
            time.sleep(0.05)
        assert s.health.snapshot()["runtime_recoveries_total"] == 1
        assert not rounds.acquire(blocking=False)  # repaired by the per-second check, not a round
        c = connect(db)
        assert c.execute("SELECT count(*) FROM passages").fetchone()[0] == 5
        c.close()
        assert s.record(rec()) == 6  # no FAULT: repaired before the next passage
    finally:
        stop.set()
        m.join(timeout=10)
        s.close()


@pytest.mark.parametrize("mode", [0o755, 0o1777])
def test_a_wide_outbox_directory_is_narrowed_when_owned(tmp_path: Path, mode: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, mode)
    caplog.set_level(logging.WARNING, logger="scanner.store_files")
    Store.open(d / "o.db").close()
    assert os.stat(d).st_mode & 0o7777 == 0o700
    assert f"event=outbox_dir_narrowed path={d} was_mode={mode:04o}" in caplog.text


def test_a_wide_directory_of_another_owner_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from scanner import store_files

    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    monkeypatch.setattr(store_files.os, "geteuid", lambda: os.stat(d).st_uid + 1)  # as if root owned it
    caplog.set_level(logging.WARNING, logger="scanner.store_files")
    store_files.narrow_dir(d)
    assert os.stat(d).st_mode & 0o7777 == 0o1777  # not ours: left alone
    assert "event=outbox_dir_mode_wide" in caplog.text and "list and delete" in caplog.text and "fix:" in caplog.text
