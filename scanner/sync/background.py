"""What runs beside the lane for the outbox: maintenance (prune, idle checkpoint, disk alarm),
the push uploader, the pull API. Each has its own database connections; none shares the
lane's. All stop when the daemon's stop event is set."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scanner import outbox
from scanner.clock import Clock
from scanner.config import Config
from scanner.errors import ScannerError
from scanner.outbox_health import FREE_FLOOR_BYTES, capacity_ratio, fs_space
from scanner.store import check_integrity, connect, on_read_error, open_store
from scanner.sync.metrics import WAL_ALARM_BYTES, build_info
from scanner.sync.uploader import SyncState, Uploader

log = logging.getLogger("scanner.outbox")


def read_token(path: str, what: str) -> str:
    """A bearer token from a file (systemd: LoadCredential=, then $CREDENTIALS_DIRECTORY/name)."""
    if path.startswith("$"):
        raise ScannerError(f"{what}: {path.split('/')[0]} is not set (got {path!r}); fix: run under systemd with "
                           "LoadCredential=, or give a plain file path")
    try:
        st = os.stat(path)
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ScannerError(f"{what}: cannot read {path} ({e.strerror}); fix: create it (one line, the token) "
                           "readable by the service user") from None
    if not token or len(token) < 16:
        raise ScannerError(f"{what}: {path} holds no usable token (fewer than 16 characters); fix: write a random "
                           "token, e.g. `openssl rand -hex 32 > FILE`")
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("event=token_file_readable path=%s; fix: chmod 600 %s", path, path)
    return token


QUICK_CHECK_EVERY_S = 3600.0
FILE_CHECK_S = 1.0


class Maintenance(threading.Thread):
    """Every FILE_CHECK_S (1 s): check the open outbox's files are still in place (store_repair.py).
    Every `interval_s`: the same, then prune (retention, then capacity), fold new rows into the
    counters, checkpoint(TRUNCATE) and,
    at most every `quick_check_every_s`, `PRAGMA quick_check` when no passage was written since
    the last round; raise the disk alarm (cap or real free space) and the WAL alarm. Corruption
    met here is handed to the open Store, which moves the outbox aside."""

    def __init__(self, store_path: str, stop: threading.Event, state: SyncState, *, interval_s: float,
                 retention_s: float, max_bytes: int, quick_check_every_s: float = QUICK_CHECK_EVERY_S) -> None:
        super().__init__(name="outbox-maintenance", daemon=True)
        self.store_path, self.stop_event, self.state = store_path, stop, state
        self.interval_s, self.retention_s, self.max_bytes = interval_s, retention_s, max_bytes
        self.quick_check_every_s = quick_check_every_s
        self._last_top: int | None = None
        self._last_quick_check = time.monotonic()

    def run(self) -> None:
        if self.stop_event.wait(min(1.0, self.interval_s)):
            return
        while not self.stop_event.is_set():
            try:
                self.round()
            except Exception as e:
                with self.state.lock:
                    self.state.maintenance_errors += 1
                log.error("event=outbox_maintenance_failed error=%r", str(e))
            # Between rounds, the files are checked every FILE_CHECK_S: a -wal unlinked while
            # the lane is idle is saved from the open connection within a second, not a round.
            next_round = time.monotonic() + self.interval_s
            while not self.stop_event.wait(max(0.0, min(FILE_CHECK_S, next_round - time.monotonic()))):
                if time.monotonic() >= next_round:
                    break
                try:
                    self.check_files()
                except Exception as e:
                    log.error("event=outbox_file_check_failed error=%r", str(e))

    def check_files(self) -> None:
        """The open outbox's database, -wal and high-water file are still what their paths name
        (scanner/store_repair.py), repaired now if not: four stat(2) calls when all is well."""
        store = open_store(self.store_path)
        if store is not None and (what := store.verify_files()):
            log.error("event=outbox_files_repaired detail=%r", what)

    def round(self) -> outbox.PruneResult:
        self.check_files()
        conn = connect(self.store_path)
        try:
            res = self._round(conn)
        except sqlite3.DatabaseError as e:
            on_read_error(self.store_path, e)
            raise
        finally:
            conn.close()
        return res

    def _round(self, conn: sqlite3.Connection) -> outbox.PruneResult:
        res = outbox.prune(conn, retention_s=self.retention_s, max_bytes=self.max_bytes)
        if res.deleted:
            log.info("event=outbox_pruned deleted=%d vacuumed_pages=%d used_ratio=%.3f", res.deleted,
                     res.vacuumed_pages, res.used_ratio)
        outbox.advance_counts(conn)
        self._disk_alarm(conn)
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
        _, wal = outbox.file_bytes(self.store_path)
        if wal > WAL_ALARM_BYTES:
            log.warning("event=outbox_wal_large wal_bytes=%d", wal)
        idle = top == self._last_top
        if wal and (idle or res.deleted or wal > WAL_ALARM_BYTES):
            busy, _, _ = outbox.checkpoint(conn)
            if busy:
                log.info("event=outbox_checkpoint_busy wal_bytes=%d", wal)
        if idle and time.monotonic() - self._last_quick_check >= self.quick_check_every_s:
            self._last_quick_check = time.monotonic()
            if (detail := check_integrity(self.store_path)) is not None:
                log.error("event=outbox_quick_check_failed detail=%r", detail)
        self._last_top = top
        return res

    def _disk_alarm(self, conn: sqlite3.Connection) -> None:
        """On at 80% of the cap, or of what the file can still grow to on the real file system,
        or under the free-space floor (scanner/outbox_health.py)."""
        used = outbox.used_bytes(conn)
        fs = fs_space(self.store_path)
        ratio = capacity_ratio(used, outbox.file_bytes(self.store_path)[0], self.max_bytes, fs)
        alarm = ratio >= outbox.ALARM_RATIO or (fs is not None and fs.free_bytes < FREE_FLOOR_BYTES)
        if alarm != self.state.disk_alarm:
            free_mib = f"{fs.free_bytes >> 20}" if fs else "unknown"
            (log.error if alarm else log.info)(
                "event=outbox_disk_alarm on=%s capacity_used_ratio=%.3f fs_free_mib=%s%s", alarm, ratio, free_mib,
                "; fix: free disk space (df -h), restore uploads, or export with `checkpoint-scanner queue export "
                "--mark-delivered`" if alarm else "")
            self.state.disk_alarm = alarm


def start_background(cfg: Config, store_path: str, stop: threading.Event,
                     clock_trusted: Callable[[], bool] | None = None) -> list[threading.Thread]:
    """Start maintenance, and the uploader and API when enabled. Raises ScannerError (one line,
    with the fix) for a missing token before anything is started. `clock_trusted` is the lane's
    clock (NTP or the server offset measured by the trust sync) for the metrics."""
    up, api_cfg = cfg.upload, cfg.api
    max_bytes = cfg.store.max_size_mib << 20
    up_token = read_token(up.token_file, "[upload] token_file") if up.enabled else ""
    api_token = read_token(api_cfg.token_file, "[api] token_file") if api_cfg.enabled else ""
    state = SyncState()
    threads: list[threading.Thread] = []
    api = None
    if api_cfg.enabled:
        from scanner.api import Api

        api = Api(api_cfg, store_path, api_token, state, max_bytes=max_bytes,
                  clock_trusted=clock_trusted or Clock(cfg.clock.trust).trusted,
                  info=build_info(cfg.checkpoint.device_id, cfg.checkpoint.id))
        api.bind()  # fail now, with the fix, if the port is taken
    m = Maintenance(store_path, stop, state, interval_s=cfg.store.maintenance_interval_s,
                    retention_s=cfg.store.retention_days * 86400, max_bytes=max_bytes)
    m.start()
    threads.append(m)
    if up.enabled:
        url = up.url or cfg.sync.server_url.rstrip("/") + "/api/v1/records"
        u = Uploader(up, url, up_token, store_path, (cfg.checkpoint.device_id, cfg.checkpoint.id), stop, state,
                     ca_bundle=cfg.sync.ca_bundle)
        u.start()
        threads.append(u)
    if api is not None:
        threads += api.serve(stop)
    log.info("event=outbox_background upload=%s api=%s max_bytes=%d retention_days=%g started_at=%d",
             up.enabled, api_cfg.enabled, max_bytes, cfg.store.retention_days, int(time.time()))
    return threads
