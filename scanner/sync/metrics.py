"""Prometheus text exposition (format 0.0.4) of the outbox and upload state (docs/durability.md section 8).

Alert suggestions: `checkpoint_outbox_oldest_unsent_age_seconds > 3600` while the network is
up; `checkpoint_outbox_disk_alarm == 1`; `checkpoint_outbox_wal_bytes > 16 MiB`;
`checkpoint_outbox_corruption_alarm == 1`; `checkpoint_clock_synced == 0`;
`checkpoint_outbox_write_failing == 1` or `increase(checkpoint_outbox_write_failures_total[5m]) > 0`;
`checkpoint_outbox_fault == 1`.
"""

from __future__ import annotations

import time
from typing import Any

from scanner.outbox import ALARM_RATIO
from scanner.store import COMMIT_LATENCY
from scanner.sync.uploader import SyncState

WAL_ALARM_BYTES = 16 << 20
RECOVERY_ALARM_S = 7 * 86400


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(st: dict[str, Any], state: SyncState, *, clock_synced: bool,
                   api_responses: dict[str, int] | None = None, now: float | None = None) -> str:
    now = time.time() if now is None else now
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}")

    def gauge(name: str, help_: str, value: float) -> None:
        metric(name, "gauge", help_, [("", value)])

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
    metric("checkpoint_outbox_write_failures_total", "counter", "passages whose commit failed (the lane showed "
           "FAULT)", [("", int(st.get("write_failures_total", 0)))])
    gauge("checkpoint_outbox_write_failing", "1 while the last commit failed and none succeeded since",
          int(bool(st.get("last_write_error"))))
    gauge("checkpoint_outbox_fault", "1 while a fault found at run time (a file removed, corruption) is not "
          "repaired", int(bool(st.get("faults"))))
    metric("checkpoint_outbox_runtime_recoveries_total", "counter", "outbox repairs made while running "
           "(reopened after a file was removed, or moved aside after corruption)",
           [("", int(st.get("runtime_recoveries_total", 0)))])
    rec_at = st.get("recovered_at") or 0.0
    gauge("checkpoint_outbox_recovered_timestamp_seconds", "when a corrupt outbox was last moved aside; 0 = never",
          float(rec_at))
    gauge("checkpoint_outbox_corruption_alarm", "1 for 7 days after a corrupt outbox was moved aside",
          int(bool(rec_at) and now - rec_at < RECOVERY_ALARM_S))
    lost_at = st.get("lost_at") or 0.0
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
    metric("checkpoint_upload_failures_total", "counter", "failed upload attempts by reason",
           [(f'{{reason="{_esc(k)}"}}', v) for k, v in sorted(failures.items())] or [('{reason="none"}', 0)])
    metric("checkpoint_upload_records_total", "counter", "records answered by the server, by status",
           [(f'{{status="{k}"}}', sent.get(k, 0)) for k in ("accepted", "duplicate", "rejected")])
    metric("checkpoint_upload_requests_total", "counter", "upload requests sent", [("", requests)])
    gauge("checkpoint_upload_last_success_timestamp_seconds", "last accepted upload; 0 = never", float(last_ok or 0))
    metric("checkpoint_outbox_maintenance_errors_total", "counter", "failed prune/checkpoint rounds", [("", maint)])
    h = COMMIT_LATENCY
    cum = 0
    samples: list[tuple[str, float]] = []
    for b, c in zip(h.BUCKETS_S, h.counts, strict=False):
        cum += c
        samples.append((f'_bucket{{le="{b:g}"}}', cum))
    samples += [('_bucket{le="+Inf"}', h.n), ("_sum", round(h.total_s, 6)), ("_count", h.n)]
    out.append("# HELP checkpoint_outbox_commit_seconds time to commit one passage, fsync included")
    out.append("# TYPE checkpoint_outbox_commit_seconds histogram")
    out += [f"checkpoint_outbox_commit_seconds{s} {v:g}" if isinstance(v, float) else
            f"checkpoint_outbox_commit_seconds{s} {v}" for s, v in samples]
    if api_responses is not None:
        metric("checkpoint_api_responses_total", "counter", "API responses by status code",
               [(f'{{code="{k}"}}', v) for k, v in sorted(api_responses.items())] or [('{code="200"}', 0)])
    return "\n".join(out) + "\n"
