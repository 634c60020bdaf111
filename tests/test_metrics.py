"""/metrics through prometheus_client (issue 13 item 1): full float precision (the old `:g`
wrote 1732900123.456 as 1.7329e+09, up to 5,000 s off), names by the Prometheus naming guide
(https://prometheus.io/docs/practices/naming/), process metrics, the outbox read at scrape time."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from promtext import samples, types
from test_api import AUTH, TOKEN, Running
from test_store import rec

from scanner import outbox
from scanner.api import Api
from scanner.config import ApiSection
from scanner.store import COMMIT_LATENCY, Store
from scanner.sync.metrics import build_info, render_metrics
from scanner.sync.uploader import SyncState

TS = 1732900123.456

#: Every sample name of ours (the full set, so a rename or a lost metric fails here).
OURS = {
    "checkpoint_outbox_queue_depth", "checkpoint_outbox_records", "checkpoint_outbox_oldest_unsent_age_seconds",
    "checkpoint_outbox_last_delivery_timestamp_seconds", "checkpoint_outbox_delivered_upto_seq",
    "checkpoint_outbox_dead_letters", "checkpoint_outbox_db_bytes", "checkpoint_outbox_wal_bytes",
    "checkpoint_outbox_wal_alarm", "checkpoint_outbox_max_bytes", "checkpoint_outbox_used_ratio",
    "checkpoint_outbox_capacity_used_ratio", "checkpoint_outbox_fs_free_bytes", "checkpoint_outbox_fs_readonly",
    "checkpoint_outbox_disk_alarm", "checkpoint_outbox_write_failures_total", "checkpoint_outbox_write_failing",
    "checkpoint_outbox_fault", "checkpoint_outbox_runtime_recoveries_total",
    "checkpoint_outbox_recovered_timestamp_seconds", "checkpoint_outbox_corruption_alarm",
    "checkpoint_outbox_lost_records", "checkpoint_outbox_loss_alarm", "checkpoint_clock_synced",
    "checkpoint_upload_failures_total", "checkpoint_upload_records_total", "checkpoint_upload_requests_total",
    "checkpoint_upload_last_success_timestamp_seconds", "checkpoint_outbox_maintenance_errors_total",
    "checkpoint_outbox_commit_seconds_bucket", "checkpoint_outbox_commit_seconds_sum",
    "checkpoint_outbox_commit_seconds_count", "checkpoint_api_responses_total", "checkpoint_info",
}


def _status(tmp_path: Path) -> dict[str, object]:
    db = tmp_path / "o.db"
    s = Store.open(db)
    try:
        s.record(rec())
        return outbox.read(db, lambda c: outbox.status(c, db))
    finally:
        s.close()


def test_timestamps_keep_full_precision(tmp_path: Path) -> None:
    st = _status(tmp_path) | {"last_delivery_at": TS, "oldest_pending_age_s": 3599.875, "recovered_at": TS - 10.25}
    state = SyncState()
    state.last_success_at = TS + 0.001
    text = render_metrics(st, state, clock_synced=True, now=TS)
    assert "1.7329e+09" not in text
    m = samples(text)
    assert m["checkpoint_outbox_last_delivery_timestamp_seconds"] == TS  # exact: repr round-trips
    assert m["checkpoint_upload_last_success_timestamp_seconds"] == TS + 0.001
    assert m["checkpoint_outbox_recovered_timestamp_seconds"] == TS - 10.25
    assert m["checkpoint_outbox_oldest_unsent_age_seconds"] == 3599.875
    assert m["checkpoint_outbox_corruption_alarm"] == 1  # moved aside 10.25 s before `now`
    big = 5 << 30  # byte counts too: the old `:g` would have written 5.36871e+09
    text = render_metrics(st | {"fs_free_bytes": big + 1}, state, clock_synced=True, now=TS)
    assert samples(text)["checkpoint_outbox_fs_free_bytes"] == big + 1


def test_commit_histogram_keeps_the_buckets(tmp_path: Path) -> None:
    m = samples(render_metrics(_status(tmp_path), SyncState(), clock_synced=False))
    h = COMMIT_LATENCY
    les = [k for k in m if k.startswith("checkpoint_outbox_commit_seconds_bucket")]
    assert [float(re.findall(r'le="([^"]+)"', k)[0]) for k in les] == [*h.BUCKETS_S, float("inf")]
    assert m['checkpoint_outbox_commit_seconds_bucket{le="+Inf"}'] == m["checkpoint_outbox_commit_seconds_count"]
    assert m["checkpoint_outbox_commit_seconds_count"] == h.n >= 1
    assert m["checkpoint_outbox_commit_seconds_sum"] == pytest.approx(h.total_s, abs=1e-9)
    assert m["checkpoint_clock_synced"] == 0


def test_api_metrics_names_follow_the_guide_and_process_metrics_come_free(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    store = Store.open(db)
    cfg = replace(ApiSection(), bind="127.0.0.1", port=0, rate_per_s=1000.0, burst=1000)
    api = Api(cfg, str(db), TOKEN, clock_trusted=lambda: True, info=build_info("dev-7", "gate-3"))
    stop = threading.Event()
    host, port = api.bind()
    threads = api.serve(stop)
    try:
        store.record(rec())
        r = requests.get(f"http://{host}:{port}/metrics", headers=AUTH, timeout=5)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        m, kinds = samples(r.text), types(r.text)
        assert m["checkpoint_outbox_queue_depth"] == 1
        info = [k for k in m if k.startswith("checkpoint_info")]
        assert len(info) == 1 and m[info[0]] == 1
        assert 'checkpoint_id="gate-3"' in info[0] and 'device_id="dev-7"' in info[0] and 'version="' in info[0]
        ours = {k.split("{")[0] for k in m if k.startswith("checkpoint_")}
        assert ours == OURS, ours ^ OURS
        for name, kind in kinds.items():
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
            fam_samples = [k.split("{")[0] for k in m if k.split("{")[0].startswith(name)]
            if kind == "counter":
                assert all(s.endswith(("_total", "_created")) for s in fam_samples), name
            if kind == "gauge":
                assert not name.endswith("_total"), name
            if "timestamp" in name or "time" in name.split("_"):
                assert name.endswith(("_timestamp_seconds", "_time_seconds")), name
        assert m["process_cpu_seconds_total"] >= 0 and m["process_resident_memory_bytes"] > 0
        assert "process_start_time_seconds" in m and any(k.startswith("python_info") for k in m)
        store.record(rec())  # read at scrape time, not when the registry was built
        again = samples(requests.get(f"http://{host}:{port}/metrics", headers=AUTH, timeout=5).text)
        assert again["checkpoint_outbox_queue_depth"] == 2
        assert again['checkpoint_api_responses_total{code="200"}'] >= 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        store.close()


def test_building_the_registry_does_not_read_the_outbox(tmp_path: Path) -> None:
    api = Api(ApiSection(), str(tmp_path / "missing" / "o.db"), TOKEN)  # describe() reads nothing
    assert api.metrics is not None


def test_counter_values_from_the_running_api(tmp_path: Path) -> None:
    r = Running(tmp_path, 3, rate_per_s=1000.0, burst=1000)
    try:
        r.api.state.fail("timeout")
        r.api.state.sent("accepted", 3)
        m = samples(r.get("/metrics").text)
        assert m['checkpoint_upload_failures_total{reason="timeout"}'] == 1
        assert m['checkpoint_upload_records_total{status="accepted"}'] == 3
        assert m['checkpoint_upload_records_total{status="rejected"}'] == 0
    finally:
        r.close()
