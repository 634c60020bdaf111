"""Push upload against a real local server that fails on purpose: batching, gzip, 413 halving,
dead letters, Retry-After, auth faults, full jitter, prompt stop; and the end-to-end run."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from records_server import TOKEN, RecordsServer

from scanner import outbox
from scanner.config import UploadSection
from scanner.models import CredentialSummary, PassageRecord
from scanner.store import Store, connect
from scanner.sync.uploader import SyncState, Uploader, full_jitter, parse_retry_after

FAST = replace(UploadSection(), enabled=True, batch_records=10, batch_kib=256, max_age_s=0.0, poll_s=0.02,
               connect_timeout_s=1.0, read_timeout_s=0.3, attempt_deadline_s=2.0, backoff_base_s=0.02,
               backoff_cap_s=0.2, retry_after_max_s=0.5)


def rec(i: int = 0) -> PassageRecord:
    return PassageRecord(record_id=uuid.uuid4().hex, device_id="d1", checkpoint_id="c1",
                         checkpoint_kind="highway_exit", ts_utc="2026-11-28T10:00:00.000+00:00",
                         clock_trusted=True, boot_id="b", mono_s=float(i), verdict="PASS", reasons=("OK",),
                         credentials=(CredentialSummary("health", "VALID", "CN-330000-HC", "00" * 8, "ab" * 8,
                                                        "green"),), temperature_c=36.5)


def make(tmp: Path, n: int) -> tuple[Store, list[str]]:
    s = Store.open(tmp / "o.db")
    ids = []
    for i in range(n):
        r = rec(i)
        s.record(r)
        ids.append(r.record_id)
    return s, ids


def uploader(tmp: Path, srv: RecordsServer, cfg: UploadSection = FAST, token: str = TOKEN) -> tuple[Uploader, list]:
    waits: list[float] = []
    stop = threading.Event()
    u = Uploader(cfg, srv.url, token, str(tmp / "o.db"), ("d1", "c1"), stop, SyncState(), rng=random.Random(1))
    u.wait = lambda d: (waits.append(d), stop.wait(d))[1]
    return u, waits


def drain(u: Uploader, limit: int = 200) -> None:
    for _ in range(limit):
        c = connect(u.store_path)
        left = outbox.pending(c, 1)
        c.close()
        if not left:
            return
        d = u.step()
        if d:
            u.wait(d)
    raise AssertionError("not drained")


def test_batches_are_gzipped_and_all_arrive_once(tmp_path: Path) -> None:
    s, ids = make(tmp_path, 25)
    with RecordsServer() as srv:
        u, _ = uploader(tmp_path, srv)
        drain(u)
    assert set(srv.stored) == set(ids) and srv.order == list(range(1, 26))
    assert [n for _, _, n in srv.requests] == [10, 10, 5] and srv.gzipped == 3
    assert u.state.records_sent == {"accepted": 25}
    s.close()


def test_small_batch_waits_for_age_then_goes(tmp_path: Path) -> None:
    s, _ = make(tmp_path, 3)
    with RecordsServer() as srv:
        u, _ = uploader(tmp_path, srv, replace(FAST, max_age_s=0.3))
        assert 0 < u.step() <= 0.3 and not srv.requests  # 3 < 10 records and young: wait
        time.sleep(0.35)
        assert u.step() == 0 and len(srv.requests) == 1
    s.close()


def test_413_halves_the_batch_until_it_fits(tmp_path: Path) -> None:
    s, ids = make(tmp_path, 10)
    with RecordsServer(max_records_413=3) as srv:
        u, _ = uploader(tmp_path, srv)
        drain(u)
    sizes = [n for _, _, n in srv.requests]
    assert sizes[:3] == [10, 5, 2] and set(srv.stored) == set(ids)
    s.close()


def test_single_record_too_large_goes_to_dead_letters_and_the_queue_moves_on(tmp_path: Path) -> None:
    s, ids = make(tmp_path, 4)
    with RecordsServer() as srv:
        u, _ = uploader(tmp_path, srv)
        u.batch_limit = 1
        calls = {"n": 0}
        real = u._post

        def post(batch: list) -> tuple[int, dict, bytes]:
            calls["n"] += 1
            if batch[0]["seq"] == 2:
                return 413, {}, b"record too large"
            return real(batch)

        u._post = post  # type: ignore[method-assign]
        drain(u)
    c = connect(tmp_path / "o.db")
    dead = c.execute("SELECT seq, reason FROM dead_letters").fetchall()
    assert dead == [(2, "http_413: record too large")] and outbox.delivered_upto(c) == 4
    assert set(srv.stored) == {ids[0], ids[2], ids[3]}
    c.close()
    s.close()


def test_rejected_records_go_to_dead_letters_with_the_reason(tmp_path: Path) -> None:
    s, ids = make(tmp_path, 6)
    with RecordsServer(reject=lambda r: "unknown checkpoint" if r["seq"] in (2, 5) else None) as srv:
        u, _ = uploader(tmp_path, srv)
        drain(u)
    c = connect(tmp_path / "o.db")
    assert c.execute("SELECT seq, reason FROM dead_letters ORDER BY seq").fetchall() == [
        (2, "unknown checkpoint"), (5, "unknown checkpoint")]
    assert outbox.status(c, tmp_path / "o.db")["pending"] == 0
    c.close()
    assert u.state.records_sent == {"accepted": 4, "rejected": 2}
    s.close()


def test_wrong_token_dead_letters_nothing_and_waits_the_cap(tmp_path: Path) -> None:
    s, _ = make(tmp_path, 3)
    with RecordsServer() as srv:
        u, _ = uploader(tmp_path, srv, token="wrong-token-0123456789")
        assert u.step() == FAST.backoff_cap_s
    c = connect(tmp_path / "o.db")
    assert c.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0 and outbox.delivered_upto(c) == 0
    c.close()
    assert u.state.failures == {"auth": 1}
    s.close()


def test_retry_after_is_honoured_and_capped(tmp_path: Path) -> None:
    s, _ = make(tmp_path, 3)
    with RecordsServer(["429", "503date"]) as srv:
        u, _ = uploader(tmp_path, srv, replace(FAST, retry_after_max_s=0.5))
        assert u.step() == 0.5  # Retry-After: 1, capped at 0.5
        assert 0 < u.step() <= 0.5  # HTTP-date form
        assert u.step() == 0
    assert u.state.failures == {"http_429": 1, "http_503": 1}
    assert parse_retry_after("120") == 120 and parse_retry_after("soon") is None
    s.close()


def test_timeouts_are_always_set_and_a_silent_server_is_a_timeout(tmp_path: Path) -> None:
    s, ids = make(tmp_path, 3)
    with RecordsServer(["sleep"], sleep_s=1.0) as srv:
        u, _ = uploader(tmp_path, srv)
        seen: list[object] = []
        real = u.session.post

        def post(*a: object, **kw: object) -> object:
            seen.append(kw.get("timeout"))
            return real(*a, **kw)  # type: ignore[arg-type]

        u.session.post = post  # type: ignore[method-assign]
        d = u.step()
        assert d > 0 or u.state.failures == {"timeout": 1}
        assert u.state.failures == {"timeout": 1}
        drain(u)
    assert all(t == (FAST.connect_timeout_s, FAST.read_timeout_s) for t in seen)
    assert set(srv.stored) == set(ids) and max(srv.arrivals.values()) == 2  # re-sent, stored once
    s.close()


@given(st.integers(0, 60), st.floats(0.01, 10), st.floats(0.1, 1000))
def test_full_jitter_stays_within_its_slot(n: int, base: float, cap: float) -> None:
    d = full_jitter(n, base, cap, random.Random(n))
    assert 0 <= d <= min(cap, base * 2**n)


def test_thread_stops_promptly_when_idle(tmp_path: Path) -> None:
    s, _ = make(tmp_path, 0)
    with RecordsServer() as srv:
        stop = threading.Event()
        u = Uploader(replace(FAST, poll_s=60.0), srv.url, TOKEN, str(tmp_path / "o.db"), ("d1", "c1"), stop)
        u.start()
        time.sleep(0.1)
        stop.set()
        u.join(timeout=2)
        assert not u.is_alive()
    s.close()


def test_end_to_end_through_drops_500_429_and_sleeps(tmp_path: Path) -> None:
    """Records are written while the uploader runs; the server drops connections (before and after
    storing), answers 500, 429 and 503 with Retry-After, and sleeps past the read timeout.
    Every record arrives, none is stored twice, order follows seq, and there is no busy loop."""
    n = 300
    s = Store.open(tmp_path / "o.db")
    faults = ["drop", "500", "ok", "429", "sleep", "ok", "store-drop", "503date", "500", "ok", "drop", "sleep"]
    cfg = replace(FAST, batch_records=40, max_age_s=0.1, poll_s=0.05)
    ids: list[str] = []
    with RecordsServer(faults, sleep_s=0.6) as srv:
        stop = threading.Event()
        state = SyncState()
        u = Uploader(cfg, srv.url, TOKEN, str(tmp_path / "o.db"), ("d1", "c1"), stop, state)
        waits: list[float] = []
        u.wait = lambda d: (waits.append(d), stop.wait(d))[1]
        u.start()
        for i in range(n):
            r = rec(i)
            s.record(r)
            ids.append(r.record_id)
            if i % 20 == 0:
                time.sleep(0.02)
        deadline = time.monotonic() + 60
        c = connect(tmp_path / "o.db")
        while outbox.delivered_upto(c) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        mark = outbox.delivered_upto(c)
        c.close()
        stop.set()
        u.join(timeout=5)
    assert mark == n
    assert set(srv.stored) == set(ids) and len(srv.stored) == n  # every record, once after dedup
    assert any(v > 1 for v in srv.arrivals.values())  # some were re-sent: dedup did the work
    assert srv.order == sorted(srv.order)  # first arrivals follow seq
    fault_requests = sum(1 for _, f, _ in srv.requests if f != "ok")
    ok_requests = len(srv.requests) - fault_requests
    assert fault_requests == sum(1 for f in faults if f != "ok")  # each fault met exactly once
    assert ok_requests <= n // 2  # batches, not one request per record
    assert len(srv.requests) <= 60, f"busy loop? {len(srv.requests)} requests"
    print(f"e2e: {len(srv.requests)} requests, {ok_requests} ok, waits={len(waits)}")
    assert 0.5 in waits  # Retry-After: 1 honoured, capped at retry_after_max_s
    assert state.failures.get("connection", 0) >= 2 and state.failures.get("http_500", 0) == 2
    assert state.failures.get("timeout", 0) >= 1
    s.close()
