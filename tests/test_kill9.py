"""kill -9 at random moments while passages are recorded, delivered, pruned and checkpointed:
after every kill the database passes integrity_check and every acknowledged record is still
in the outbox or on the "server". The same checker must catch the negative control (records
acknowledged before COMMIT) losing records, or the harness proves nothing.

This covers process crashes (the page cache survives). Power loss needs LazyFS or a relay
rig on the real SD card (docs/durability.md section 4).
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("kill9_child.py")
KILLS = 30


def run_and_kill(db: Path, server: Path, rng: random.Random, bug: str = "") -> list[tuple[int, str]]:
    """Start the writer, SIGKILL it at a random moment, return the records it acknowledged."""
    p = subprocess.Popen([sys.executable, str(CHILD), str(db), str(server), *([bug] if bug else [])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    buf = b""
    started = None
    deadline = time.monotonic() + 30
    delay = rng.uniform(0.0, 0.25)
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.01)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if started is None and b"ACK" in buf:
                started = time.monotonic()
        if started is not None and time.monotonic() - started >= delay:
            break
    os.kill(p.pid, signal.SIGKILL)
    rest, err = p.communicate(timeout=10)
    buf += rest
    assert started is not None, f"the writer never acknowledged a record: {err.decode()[-500:]}"
    acked = []
    for line in buf.split(b"\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"ACK":  # a torn last line was never a full ack
            acked.append((int(parts[1]), parts[2].decode()))
    return acked


def check(db: Path, server: Path, acked: list[tuple[int, str]]) -> tuple[str, list[str], set[str]]:
    """-> (integrity_check result, acknowledged record ids not found anywhere, ids in the outbox)."""
    c = sqlite3.connect(db)
    try:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        have = {r[0] for r in c.execute("SELECT record_id FROM passages")}
        have |= {r[0] for r in c.execute("SELECT record_id FROM dead_letters")}
    finally:
        c.close()
    delivered = set(server.read_text().split()) if server.exists() else set()
    lost = [rid for _, rid in acked if rid not in have and rid not in delivered]
    return ok, lost, have | delivered


@pytest.mark.slow
def test_no_acknowledged_record_is_lost_across_kill9(tmp_path: Path) -> None:
    rng = random.Random(9)
    db, server = tmp_path / "o.db", tmp_path / "server.txt"
    all_acked: list[tuple[int, str]] = []
    known: set[str] = set()
    for k in range(KILLS):
        acked = run_and_kill(db, server, rng)
        all_acked += acked
        ok, lost, present = check(db, server, all_acked)
        assert ok == "ok", f"kill {k}: integrity_check {ok}"
        assert not lost, f"kill {k}: {len(lost)} acknowledged record(s) lost"
        unreported = present - known - {rid for _, rid in acked}
        assert len(unreported) <= 1, f"kill {k}: {len(unreported)} committed but unreported"
        known = present
    seqs = [s for s, _ in all_acked]
    assert len(seqs) == len(set(seqs)), "a seq was handed out twice"
    assert len(all_acked) > KILLS * 5


@pytest.mark.slow
def test_the_checker_catches_ack_before_commit(tmp_path: Path) -> None:
    rng = random.Random(5)
    db, server = tmp_path / "o.db", tmp_path / "server.txt"
    caught = 0
    for _ in range(5):
        acked = run_and_kill(db, server, rng, bug="ack-before-commit")
        ok, lost, _ = check(db, server, acked)
        assert ok == "ok"  # SQLite itself stays consistent: the bug is ours
        caught += bool(lost)
    assert caught >= 1, "the negative control lost nothing: the harness cannot see the bug"
