"""The pull API against a real server on 127.0.0.1, for what the outbox adds (issue 11): an ack
bound to what was handed out (item 9), corruption met by a pull (item 11), /healthz and
/metrics reporting failed commits and the real free space (item 12)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from promtext import samples
from test_api import AUTH, TOKEN, Running
from test_outbox_runtime import damage_page
from test_store import rec

from scanner import outbox
from scanner.api import Api
from scanner.config import ApiSection
from scanner.models import CredentialSummary
from scanner.outbox_health import FsSpace
from scanner.store import Store, connect


def ack(r: Running, cursor: str) -> requests.Response:
    return requests.post(r.url + "/api/v1/records/ack", json={"cursor": cursor}, headers=AUTH, timeout=5)


def test_ack_past_what_was_handed_out_is_refused_and_nothing_is_pruned(tmp_path: Path) -> None:
    """Issue input: 2 records pulled, then an ack far beyond them; with retention_days = 0 the
    120 records no client received were deleted (and push never sent them: shared mark)."""
    r = Running(tmp_path, 122, max_limit=1000, rate_per_s=1000.0, burst=1000)
    try:
        page = r.get("/api/v1/records", params={"limit": 2}).json()
        oid = page["next_cursor"].split(".")[0]
        assert [x["seq"] for x in page["records"]] == [1, 2]
        far = ack(r, f"{oid}.1000000")
        assert far.status_code == 409 and far.json()["last_cursor"] == f"{oid}.2"
        assert "handed out" in far.json()["error"] and "fix:" in far.json()["error"]
        assert ack(r, f"{oid}.3").status_code == 409  # one past is past
        c = connect(r.db)
        assert outbox.delivered_upto(c) == 0
        assert outbox.prune(c, retention_s=0, max_bytes=0).deleted == 0
        ok = ack(r, page["next_cursor"])
        assert ok.status_code == 200 and ok.json()["delivered_cursor"] == f"{oid}.2"
        assert outbox.prune(c, retention_s=0, max_bytes=0).deleted == 2
        assert len(outbox.pending(c, 1000)) == 120  # the 120 nobody received are all still there
        c.close()
        # a restarted daemon handed nothing out yet: past the mark is refused, the mark itself is a no-op
        api2 = Api(replace(ApiSection(), bind="127.0.0.1", port=0), str(r.db), TOKEN)
        stop = threading.Event()
        host, port = api2.bind()
        threads = api2.serve(stop)
        try:
            url = f"http://{host}:{port}/api/v1/records/ack"
            again = requests.post(url, json={"cursor": f"{oid}.10"}, headers=AUTH, timeout=5)
            assert again.status_code == 409 and again.json()["last_cursor"] == f"{oid}.2"
            same = requests.post(url, json={"cursor": f"{oid}.2"}, headers=AUTH, timeout=5)
            assert same.status_code == 200 and same.json()["delivered_cursor"] == f"{oid}.2"
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
    finally:
        r.close()


def test_corruption_met_by_a_pull_is_moved_aside_and_healthz_shows_the_alarm(tmp_path: Path) -> None:
    """Issue input: a damaged page outside the write path gave 500 on every pull and on
    /metrics while /healthz said ok, until the next restart."""
    r = Running(tmp_path, 0, rate_per_s=1000.0, burst=1000)
    try:
        first = rec()
        r.store.record(first)
        for _ in range(300):
            r.store.record(rec())
        r.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        damage_page(r.db, first.record_id, 0x0D)
        pull = r.get("/api/v1/records")
        assert pull.status_code == 200 and pull.json()["records"] == []  # moved aside: a fresh outbox
        health = r.get("/healthz", headers={})
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert "moved aside" in health.json()["alarms"][0] and "queue export --db" in health.json()["alarms"][0]
        metrics = r.get("/metrics")
        assert metrics.status_code == 200
        m = samples(metrics.text)
        assert m["checkpoint_outbox_corruption_alarm"] == 1 and m["checkpoint_outbox_runtime_recoveries_total"] == 1
        assert r.store.record(rec()) == 1  # new passages land in the fresh outbox
        moved = Path(r.store.recovered_from or "")
        assert (moved / "o.db").exists() and (moved / "REASON.txt").exists()
    finally:
        r.close()


def test_corruption_without_a_writer_here_makes_healthz_503(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    s = Store.open(p)
    first = rec()
    s.record(first)
    for _ in range(300):
        s.record(rec())
    s.close()  # the API alone in this process (no Store to move the outbox aside)
    damage_page(p, first.record_id, 0x0D)
    api = Api(replace(ApiSection(), bind="127.0.0.1", port=0, rate_per_s=1000.0, burst=1000), str(p), TOKEN)
    stop = threading.Event()
    host, port = api.bind()
    threads = api.serve(stop)
    try:
        url = f"http://{host}:{port}"
        assert requests.get(url + "/api/v1/records", headers=AUTH, timeout=5).status_code == 500
        h = requests.get(url + "/healthz", timeout=5)
        assert h.status_code == 503 and h.json()["status"] == "fault" and "damaged" in h.json()["reasons"][0]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def test_healthz_and_metrics_report_failed_commits_and_free_space(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue input: on a full or read-only card /healthz stayed 200, no metric counted failed
    writes, and the disk alarm stayed 0 (measured against the cap, not the free space)."""
    r = Running(tmp_path, 5, rate_per_s=1000.0, burst=1000)
    try:
        r.store.conn.execute("PRAGMA max_page_count = 1")  # the card is full
        with pytest.raises(OSError):
            r.store.record(rec(credentials=tuple(CredentialSummary("health", "VALID", "x" * 500) for _ in range(50))))
        h = r.get("/healthz", headers={})
        assert h.status_code == 503 and "could not be recorded" in h.json()["reasons"][0]
        m = samples(r.get("/metrics").text)
        assert m["checkpoint_outbox_write_failures_total"] == 1 and m["checkpoint_outbox_write_failing"] == 1
        r.store.conn.execute("PRAGMA max_page_count = 1000000")
        r.store.record(rec())
        assert r.get("/healthz", headers={}).json() == {"status": "ok"}
        m = samples(r.get("/metrics").text)
        assert m["checkpoint_outbox_write_failures_total"] == 1 and m["checkpoint_outbox_write_failing"] == 0
        low = FsSpace(5 << 20, 32 << 30, False)  # 5 MiB left on the card, the cap far away
        monkeypatch.setattr("scanner.outbox_health.fs_space", lambda _p: low)
        monkeypatch.setattr("scanner.outbox.fs_space", lambda _p: low)
        h = r.get("/healthz", headers={})
        assert h.status_code == 503 and "only 5 MiB free" in h.json()["reasons"][0]
        m = samples(r.get("/metrics").text)
        assert m["checkpoint_outbox_disk_alarm"] == 1 and m["checkpoint_outbox_fs_free_bytes"] == 5 << 20
    finally:
        r.close()


def test_an_ack_across_a_gap_nobody_was_handed_is_refused(tmp_path: Path) -> None:
    """Attacker input (F6): ack the top seq; once two more records exist, GET after=<top+1>
    returns only top+2; acking <top+2> was a 200 that marked top+1 delivered though no page
    ever carried it. The handed-out range is contiguous from the delivery mark now."""
    r = Running(tmp_path, 3, max_limit=1000, rate_per_s=1000.0, burst=1000)
    try:
        page = r.get("/api/v1/records").json()
        oid = page["next_cursor"].split(".")[0]
        assert ack(r, page["next_cursor"]).status_code == 200  # delivered up to 3
        r.store.record(rec())
        r.store.record(rec())  # seq 4 and 5
        skip = r.get("/api/v1/records", params={"after": f"{oid}.4", "limit": 1}).json()
        assert [x["seq"] for x in skip["records"]] == [5]
        refused = ack(r, skip["next_cursor"])
        assert refused.status_code == 409 and refused.json()["last_cursor"] == f"{oid}.3"
        assert "without a gap" in refused.json()["error"] and "fix:" in refused.json()["error"]
        c = connect(r.db)
        assert outbox.delivered_upto(c) == 3  # seq 4 was never handed out: still pending
        # pulling on from the mark hands out 4 (and 5 again): now the ack goes through
        on = r.get("/api/v1/records", params={"after": f"{oid}.3", "limit": 1}).json()
        assert [x["seq"] for x in on["records"]] == [4]
        assert ack(r, skip["next_cursor"]).status_code == 409  # 5 not handed out in order yet
        rest = r.get("/api/v1/records", params={"after": on["next_cursor"]}).json()
        assert [x["seq"] for x in rest["records"]] == [5]
        ok = ack(r, rest["next_cursor"])
        assert ok.status_code == 200 and ok.json()["delivered_cursor"] == f"{oid}.5"
        assert outbox.delivered_upto(c) == 5
        c.close()
    finally:
        r.close()


def test_a_page_past_a_pruned_or_empty_stretch_still_joins(tmp_path: Path) -> None:
    """Seq numbers the outbox does not hold (never written, or jumped over after a loss) are no
    gap: a cursor past them, with no record in between, continues the handed-out range."""
    r = Running(tmp_path, 2, max_limit=1000, rate_per_s=1000.0, burst=1000)
    try:
        page = r.get("/api/v1/records").json()
        oid = page["next_cursor"].split(".")[0]
        assert ack(r, page["next_cursor"]).status_code == 200
        r.store._next_seq = 10  # the writer jumped (e.g. above a high-water mark after a loss)
        assert r.store.record(rec()) == 10
        nxt = r.get("/api/v1/records", params={"after": f"{oid}.7"}).json()
        assert [x["seq"] for x in nxt["records"]] == [10]
        assert ack(r, nxt["next_cursor"]).status_code == 200
    finally:
        r.close()
