"""/metrics: the outbox and upload state as Prometheus metrics (docs/durability.md section 8).

Built on `prometheus_client`: `OutboxCollector.collect()` reads the outbox status at scrape time
and yields metric families; `registry()` adds the library's process metrics (`process_*`: CPU
seconds, resident memory, open fds, start time) and `python_info`; `generate_latest` writes the
text exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
Values keep full float precision (a timestamp 1732900123.456 is written 1.732900123456e+09),
names follow https://prometheus.io/docs/practices/naming/ (base units, `_total` on counters,
`_timestamp_seconds` on Unix times, `_info` for constant labels).

Alert suggestions: `checkpoint_outbox_oldest_unsent_age_seconds > 3600` while the network is
up; `time() - checkpoint_outbox_last_delivery_timestamp_seconds > 3600`;
`checkpoint_outbox_disk_alarm == 1`; `checkpoint_outbox_wal_bytes > 16 MiB`;
`checkpoint_outbox_corruption_alarm == 1`; `checkpoint_clock_synced == 0`;
`checkpoint_outbox_write_failing == 1` or `increase(checkpoint_outbox_write_failures_total[5m]) > 0`;
`checkpoint_outbox_fault == 1`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from scanner.outbox import ALARM_RATIO
from scanner.store import COMMIT_LATENCY
from scanner.sync.uploader import SyncState

WAL_ALARM_BYTES = 16 << 20
RECOVERY_ALARM_S = 7 * 86400
#: What `generate_latest` writes (the library pairs the two itself in `choose_encoder`). Not
#: `CONTENT_TYPE_LATEST`: from prometheus_client 0.23 on that names text format 1.0.0, which the
#: library only answers (with an `escaping=` parameter) to a scraper that asked for it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_info(device_id: str, checkpoint_id: str) -> dict[str, str]:
    """Labels of `checkpoint_info` (value 1): this gate's ids and the installed package version."""
    try:
        version = metadata.version("checkpoint-scanner")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"device_id": device_id, "checkpoint_id": checkpoint_id, "version": version}


def outbox_families(st: Mapping[str, Any], state: SyncState, *, clock_synced: bool,
                    api_responses: Mapping[str, int] | None = None, info: Mapping[str, str] | None = None,
                    now: float | None = None) -> list[Metric]:
    """The metric families for one outbox status (`scanner.outbox.status`), the upload counters
    of `state`, the clock state and, when given, the API's responses by code and `checkpoint_info`.
    Times are Unix seconds (`now` defaults to time.time()); 0 stands for "never"."""
    now = time.time() if now is None else now
    out: list[Metric] = []

    def gauge(name: str, help_: str, value: float) -> None:
        out.append(GaugeMetricFamily(name, help_, value=value))

    def counter(name: str, help_: str, value: float) -> None:
        out.append(CounterMetricFamily(name, help_, value=value))

    def labelled(name: str, help_: str, label: str, samples: list[tuple[str, float]]) -> None:
        fam = CounterMetricFamily(name, help_, labels=[label])
        for v, n in samples:
            fam.add_metric([v], n)
        out.append(fam)

    if info is not None:
        fam = InfoMetricFamily("checkpoint", "this gate: device and checkpoint ids, software version")
        fam.add_metric([], dict(info))
        out.append(fam)
    gauge("checkpoint_outbox_queue_depth", "records not yet delivered", st["pending"])
    gauge("checkpoint_outbox_records", "records kept in the outbox (delivered ones until pruned)", st["records"])
    gauge("checkpoint_outbox_oldest_unsent_age_seconds", "age of the oldest undelivered record (0 when none)",
          float(st["oldest_pending_age_s"] or 0.0))
    gauge("checkpoint_outbox_last_delivery_timestamp_seconds", "when records were last marked delivered "
          "(push, pull ack or export); 0 = never", float(st["last_delivery_at"] or 0.0))
    gauge("checkpoint_outbox_delivered_upto_seq", "every seq up to this one is delivered", st["delivered_upto"])
    gauge("checkpoint_outbox_dead_letters", "records the server refused (kept with the reason)", st["dead_letters"])
    gauge("checkpoint_outbox_db_bytes", "size of the outbox file", st["db_bytes"])
    gauge("checkpoint_outbox_wal_bytes", "size of the -wal file (alarm over 16 MiB)", st["wal_bytes"])
    gauge("checkpoint_outbox_wal_alarm", "1 when the -wal file exceeds 16 MiB", int(st["wal_bytes"] > WAL_ALARM_BYTES))
    gauge("checkpoint_outbox_max_bytes", "configured cap of the outbox file", st["max_bytes"])
    gauge("checkpoint_outbox_used_ratio", "used pages / cap", float(st["used_ratio"]))
    gauge("checkpoint_outbox_capacity_used_ratio", "used pages / the smaller of the cap and the file plus the "
          "file system's free space", float(st.get("disk_ratio", st["used_ratio"])))
    if st.get("fs_free_bytes") is not None:
        gauge("checkpoint_outbox_fs_free_bytes", "free bytes on the outbox's file system (for the service user)",
              st["fs_free_bytes"])
    gauge("checkpoint_outbox_fs_readonly", "1 when the outbox's file system is mounted read-only",
          int(bool(st.get("fs_readonly"))))
    gauge("checkpoint_outbox_disk_alarm", "1 at 80% of the cap or of the real free space, or under the free-space "
          "floor", int(bool(st.get("disk_alarm", st["used_ratio"] >= ALARM_RATIO))))
    counter("checkpoint_outbox_write_failures_total", "passages whose commit failed (the lane showed FAULT)",
            int(st.get("write_failures_total", 0)))
    gauge("checkpoint_outbox_write_failing", "1 while the last commit failed and none succeeded since",
          int(bool(st.get("last_write_error"))))
    gauge("checkpoint_outbox_fault", "1 while a fault found at run time (a file removed, corruption) is not "
          "repaired", int(bool(st.get("faults"))))
    counter("checkpoint_outbox_runtime_recoveries_total", "outbox repairs made while running (reopened after a "
            "file was removed, or moved aside after corruption)", int(st.get("runtime_recoveries_total", 0)))
    rec_at = float(st.get("recovered_at") or 0.0)
    gauge("checkpoint_outbox_recovered_timestamp_seconds", "when a corrupt outbox was last moved aside; 0 = never",
          rec_at)
    gauge("checkpoint_outbox_corruption_alarm", "1 for 7 days after a corrupt outbox was moved aside",
          int(bool(rec_at) and now - rec_at < RECOVERY_ALARM_S))
    lost_at = float(st.get("lost_at") or 0.0)
    gauge("checkpoint_outbox_lost_records", "recorded passages last found missing from the outbox at start "
          "(a removed -wal); 0 = never", int(st.get("lost_records") or 0))
    gauge("checkpoint_outbox_loss_alarm", "1 for 7 days after recorded passages were found missing",
          int(bool(lost_at) and now - lost_at < RECOVERY_ALARM_S))
    gauge("checkpoint_clock_synced", "1 when the wall clock is NTP-synchronised", int(clock_synced))
    with state.lock:
        failures = dict(state.failures)
        sent = dict(state.records_sent)
        requests, last_ok = state.requests, state.last_success_at
        maint = state.maintenance_errors
    labelled("checkpoint_upload_failures_total", "failed upload attempts by reason", "reason",
             sorted(failures.items()) or [("none", 0)])
    labelled("checkpoint_upload_records_total", "records answered by the server, by status", "status",
             [(k, sent.get(k, 0)) for k in ("accepted", "duplicate", "rejected")])
    counter("checkpoint_upload_requests_total", "upload requests sent", requests)
    gauge("checkpoint_upload_last_success_timestamp_seconds", "last accepted upload; 0 = never", float(last_ok or 0))
    counter("checkpoint_outbox_maintenance_errors_total", "failed prune/checkpoint rounds", maint)
    out.append(_commit_latency())
    if api_responses is not None:
        labelled("checkpoint_api_responses_total", "API responses by status code", "code",
                 sorted(api_responses.items()) or [("200", 0)])
    return out


def _commit_latency() -> HistogramMetricFamily:
    h = COMMIT_LATENCY
    cum, buckets = 0, []
    for b, c in zip(h.BUCKETS_S, h.counts, strict=False):
        cum += c
        buckets.append((floatToGoString(b), float(cum)))
    buckets.append(("+Inf", float(h.n)))
    return HistogramMetricFamily("checkpoint_outbox_commit_seconds", "time to commit one passage, fsync included",
                                 buckets=buckets, sum_value=h.total_s)


class OutboxCollector(Collector):
    """A custom collector (prometheus_client "custom collectors"): every scrape calls `status()`
    (one short read of the outbox; its errors propagate to the caller of generate_latest) and
    renders `outbox_families` from it. Registered without a describe-time read of the outbox."""

    def __init__(self, status: Callable[[], Mapping[str, Any]], state: SyncState, *,
                 clock_synced: Callable[[], bool], api_responses: Callable[[], Mapping[str, int]] | None = None,
                 info: Mapping[str, str] | None = None) -> None:
        self.status, self.state, self.clock_synced = status, state, clock_synced
        self.api_responses, self.info = api_responses, info

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no outbox read when registering (the names are fixed, nothing to clash with)

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        responses = self.api_responses() if self.api_responses is not None else None
        yield from outbox_families(st, self.state, clock_synced=self.clock_synced(), api_responses=responses,
                                   info=self.info)


def registry(collector: Collector, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own (not the library's global one) with `collector` and, when
    `process`, the process and platform collectors (Linux /proc; elsewhere they yield nothing)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    if process:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
    return reg


def render_metrics(st: Mapping[str, Any], state: SyncState, *, clock_synced: bool,
                   api_responses: Mapping[str, int] | None = None, info: Mapping[str, str] | None = None,
                   now: float | None = None) -> str:
    """The exposition text (format 0.0.4) for one status, without process metrics (`queue`
    tools and tests; the API renders through `OutboxCollector` at scrape time)."""
    fams = outbox_families(st, state, clock_synced=clock_synced, api_responses=api_responses, info=info, now=now)

    class _Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(fams)

    return generate_latest(registry(_Fixed(), process=False)).decode()
