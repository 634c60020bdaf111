"""Issue 12 item 12: `queue status` and `queue export --db` on a damaged outbox and on files that
are no outbox: one line with the fix, never a traceback; export salvages every row plain SQL
can still read, counts the rest, never leaves an empty or partial file, never overwrites a file
without --force, and names the fix when --out cannot be written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.cli import main
from scanner.models import PassageRecord
from scanner.store import Store, new_record_id

ROOT = Path(__file__).resolve().parents[1]


def filled(tmp: Path, n: int) -> tuple[Path, list[str]]:
    db = tmp / "outbox.db"
    s = Store.open(db)
    ids = []
    for _ in range(n):
        rid = new_record_id()
        s.record(PassageRecord(record_id=rid, device_id="d1", checkpoint_id="c1", checkpoint_kind="highway_exit",
                               ts_utc="2026-11-28T10:00:00.000+00:00", clock_trusted=True, boot_id="b", mono_s=1.0,
                               verdict="REVIEW", reasons=("NO_CODE",)))
        ids.append(rid)
    s.close()
    return db, ids


def damage_page(db: Path, page: int) -> None:
    """Overwrite page `page` (1-based) with 0xAB past its 8-byte header, as a bad SD card sector would."""
    size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    raw = bytearray(db.read_bytes())
    start = (page - 1) * size
    raw[start + 8:start + size] = b"\xab" * (size - 8)
    db.write_bytes(bytes(raw))


def table_leaf_of(db: Path, record_id: str) -> tuple[int, set[str]]:
    """The page holding the passages row of `record_id` (the one that also holds the row's other
    columns, not the record_id index), and every record id on that page: found in the bytes."""
    size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    raw = db.read_bytes()
    at = -1
    while (at := raw.find(record_id.encode(), at + 1)) >= 0:
        page = raw[at // size * size:(at // size + 1) * size]
        if b"highway_exit" in page:
            return at // size + 1, {bytes(page[i:i + 32]).decode() for i in range(len(page) - 31)
                                    if bytes(page[i:i + 32]).isalnum()}
    raise AssertionError("row not found")


def test_export_of_a_damaged_outbox_salvages_every_readable_row(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    db, ids = filled(tmp_path, 16)
    page, on_page = table_leaf_of(db, ids[7])  # seq 8
    lost = {seq for seq, rid in enumerate(ids, 1) if rid in on_page}
    assert 8 in lost and len(lost) < 16
    damage_page(db, page)
    plain = []  # what plain SQL reads, row by row: the oracle
    conn = sqlite3.connect(db)
    for seq in range(1, 17):
        try:
            plain += [r[0] for r in conn.execute("SELECT seq FROM passages WHERE seq = ?", (seq,))]
        except sqlite3.DatabaseError:
            pass
    conn.close()
    assert set(plain) == set(range(1, 17)) - lost
    out = tmp_path / "saved.jsonl"
    assert main(["queue", "export", "--db", str(db), "--what", "all", "--out", str(out)]) == 1
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["seq"] for r in rows] == sorted(plain)
    assert [r["record_id"] for r in rows] == [ids[s - 1] for s in sorted(plain)]
    err = capsys.readouterr().err
    assert f"exported 已导出 {len(plain)} of 16 record(s) to {out}; {len(lost)} unreadable 无法读取 (seq " in err
    assert "keep the damaged file for the central office" in err and "Traceback" not in err


def test_a_damaged_outbox_is_never_marked_delivered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, ids = filled(tmp_path, 16)
    damage_page(db, table_leaf_of(db, ids[7])[0])
    out = tmp_path / "p.jsonl"
    assert main(["queue", "export", "--db", str(db), "--out", str(out), "--mark-delivered"]) == 1
    assert "nothing was marked delivered" in capsys.readouterr().err
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    conn.close()


def test_every_page_damaged_in_turn_never_gives_a_traceback_or_a_partial_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, _ = filled(tmp_path, 16)
    pages = good.stat().st_size // sqlite3.connect(good).execute("PRAGMA page_size").fetchone()[0]
    assert pages >= 10
    for page in range(1, pages + 1):
        db = tmp_path / f"p{page}.db"
        db.write_bytes(good.read_bytes())
        damage_page(db, page)
        out = tmp_path / f"p{page}.jsonl"
        for argv in (["queue", "status", "--db", str(db)], ["queue", "status", "--db", str(db), "--json"],
                     ["queue", "export", "--db", str(db), "--what", "all", "--out", str(out)]):
            code = main(argv)  # an exception here is the traceback a technician would see
            assert code in (0, 1), (page, argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if out.exists():
            n = len(out.read_text(encoding="utf-8").splitlines())
            assert n > 0 and n <= 16, page
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty (0 bytes): it holds no records; fix: give the outbox file, e.g. "
          "/var/lib/checkpoint-scanner/outbox.db or a moved-aside corrupt-*/outbox.db"),
    (b"seq,record_id\n1,abc\n", "is not an outbox (not an SQLite database, perhaps a text or export file); fix: "
                               "give the outbox file"),
    (None, "is an SQLite database but not an outbox (no passages table); fix: give the outbox file"),
])
def test_files_that_are_no_outbox_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               content: bytes | None, message: str) -> None:
    f = tmp_path / "x.db"
    if content is None:
        c = sqlite3.connect(f)
        c.execute("CREATE TABLE other (x)")
        c.commit()
        c.close()
    else:
        f.write_bytes(content)
    out = tmp_path / "out.jsonl"
    for argv in (["queue", "status", "--db", str(f)], ["queue", "export", "--db", str(f), "--out", str(out)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {f} {message}"), err
    assert not out.exists()  # before: a 0-byte file


def test_a_directory_as_db_or_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = filled(tmp_path, 3)
    assert main(["queue", "status", "--db", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path} is a directory; fix: give the outbox file in it, e.g. "
                                       f"{tmp_path / 'outbox.db'}\n")
    assert main(["queue", "export", "--db", str(db), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path} is a directory; fix: give a file name in it, e.g. "
                                       f"{tmp_path / 'pending.jsonl'}\n")


def test_an_unmounted_stick_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = filled(tmp_path, 3)
    out = tmp_path / "media" / "usb" / "p.jsonl"
    assert main(["queue", "export", "--db", str(db), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"error: the directory {out.parent} does not exist (is the USB stick "
                                       "mounted?); fix: mount it or create it\n")


def test_an_existing_file_is_kept_unless_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = filled(tmp_path, 5)
    out = tmp_path / "p.jsonl"
    out.write_text("yesterday's export\n")
    assert main(["queue", "export", "--db", str(db), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"error: {out} already exists; fix: choose another file name, or add --force "
                                       "to replace it\n")
    assert out.read_text() == "yesterday's export\n"
    assert main(["queue", "export", "--db", str(db), "--out", str(out), "--force"]) == 0
    assert len(out.read_text().splitlines()) == 5


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    db, _ = filled(tmp_path, 300)  # ~200 KB of JSON Lines: more than a pipe buffer holds
    p = subprocess.Popen([sys.executable, "-m", "scanner.cli", "queue", "export", "--db", str(db), "--what", "all"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert json.loads(first)["seq"] == 1 and err == ""


def test_stdout_export_of_a_good_outbox_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, ids = filled(tmp_path, 4)
    assert main(["queue", "export", "--db", str(db), "--what", "all"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(x)["record_id"] for x in cap.out.splitlines()] == ids
    assert cap.err == "exported 已导出 4 record(s)\n"


def test_export_never_replaces_a_device_or_a_link_even_with_force(tmp_path: Path) -> None:
    """Found by a fresh attack: `--out /dev/full --force --mark-delivered` renamed a RAM file over
    the device node and marked the records delivered."""
    import os
    import subprocess
    import sys

    from scanner.models import PassageRecord
    from scanner.store import Store, new_record_id

    db = tmp_path / "outbox.db"
    s = Store.open(db)
    s.record(PassageRecord(record_id=new_record_id(), device_id="d", checkpoint_id="c", checkpoint_kind="highway_exit",
                           ts_utc="2026-11-29T00:00:00.000+00:00", clock_trusted=True, boot_id="b", mono_s=1.0,
                           verdict="PASS", reasons=("OK",)))
    s.close()
    target = tmp_path / "real.jsonl"
    target.write_text("keep me\n")
    link = tmp_path / "link.jsonl"
    os.symlink(target, link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out in (link, fifo):
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "queue", "export", "--db", str(db), "--what", "all",
                            "--out", str(out), "--force", "--mark-delivered"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and "not a plain file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert target.read_text() == "keep me\n" and os.path.islink(link)
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "queue", "status", "--db", str(db), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert '"pending": 1' in r.stdout.replace(" ", "").replace('"pending":1', '"pending": 1') or r.returncode == 0
