"""Trust-data sync: keep the trust list, status list and policy current while a network exists.

Runs on its own thread beside the scan loop; a scan never waits for it. One round:

  trust list   GET /api/v1/trust-list          application/cose, ETag / If-None-Match
  policy       GET /api/v1/policy              (204 or 404: the centre sets no policy)
  status list  GET /api/v1/status/diff?from=V  one signed diff V -> V' per call, until 204/304;
                                               404/410: the server cannot diff from V
               GET /api/v1/status/snapshot     first time, after a count mismatch, and to compact
                                               a long diff chain; Range/If-Range resume

Every bundle is verified against the pinned anchor before anything else happens; a bundle that
is unsigned, wrongly signed, malformed, of the wrong kind, or not newer than the one in force is
refused and the old one stays. An accepted bundle is written to the state directory (atomic
rename + fsync) *before* it is swapped into the `TrustState`, so what the lane uses always
survives a reboot. After every diff the entry count must equal the diff's signed `total`; if it
does not, the diff is dropped and the snapshot fetched again. A failed round backs off with full
jitter; nothing here can stop the lane, and every verified-HTTPS response's Date header keeps the
clock's server offset current (docs/credentials.md section 4). The newest signed `generated_at` in force is
the clock's floor (`TrustSnapshot.newest_signed_at`, bound by TrustState): no source of time is
trusted earlier than it. What the lane starts with comes from scanner/sync/boot.py (`load_state`, re-exported here).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from ..clock import Clock
from ..config import Config
from ..credentials.bundles import KIND_POLICY, KIND_STATUS_DIFF, KIND_STATUS_SNAPSHOT, open_bundle, parse_policy
from ..credentials.state import TrustState
from ..credentials.status import StatusIndex
from ..credentials.trust import TrustStore, load_certificate
from ..errors import TrustDataError
from .boot import load_state, newest_signed_at
from .fetch import FetchError, Http, full_jitter
from .statedir import StateDir

__all__ = ["TrustSync", "load_state", "newest_signed_at", "start"]

log = logging.getLogger("scanner.sync")

PATHS = {"trust": "/api/v1/trust-list", "policy": "/api/v1/policy", "snapshot": "/api/v1/status/snapshot",
         "diff": "/api/v1/status/diff"}
COSE = ("application/cose",)
WHAT = {"trust": "trust list", "policy": "policy bundle", "status": "status list"}
#: One round applies at most this many diffs, so a server offering an endless chain cannot keep
#: the sync from its other bundles; the rest follow next round.
MAX_DIFFS_PER_ROUND = 2000


# ------------------------------------------------------------------------------ sync


class TrustSync:
    """One device's sync with the central server. `run_once()` does one round (tests call it
    directly); `run()` loops with back-off until the stop event is set."""

    def __init__(self, cfg: Config, state: TrustState, *, http: Http | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None) -> None:
        sy = cfg.sync
        self.cfg = cfg
        self.state = state
        self.base = sy.server_url.rstrip("/")
        self.anchor = load_certificate(cfg.trust.anchor_cert)
        self.dir = StateDir(sy.state_dir, max_partial_bytes=sy.max_body_mb << 20)  # the partial: same cap as a whole
        self.dir.ensure()
        self.http = http or Http(connect_timeout_s=sy.connect_timeout_s, read_timeout_s=sy.read_timeout_s,
                                 download_timeout_s=sy.download_timeout_s, max_body_bytes=sy.max_body_mb << 20,
                                 ca_bundle=sy.ca_bundle, offset=state.clock_offset,
                                 headers={"X-Device-Id": cfg.checkpoint.device_id})
        self.clock = clock or Clock(cfg.clock.trust, offset=state.clock_offset)
        self.rng = rng or random.Random()
        meta = self.dir.read_meta()
        # name -> [ETag, version it was served with]: an ETag is only sent while that version is in
        # force (after a corrupt saved file fell back to an older list, a 304 must not keep it).
        self.etags: dict[str, list[Any]] = {
            k: v for k, v in (meta.get("etags") or {}).items()
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)}
        self.partial_etag: str | None = meta.get("partial_etag") if isinstance(meta.get("partial_etag"), str) \
            else None
        self.need_snapshot = False
        self._compact_at = sy.status_max_diffs
        self.failures = 0
        self.last_results: dict[str, str] = {}
        self._unsaved: dict[str, bytes] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _save_meta(self) -> None:
        try:
            self.dir.write_meta({"etags": self.etags, "partial_etag": self.partial_etag,
                                 "confirmed_at": dict(self.state.snapshot().confirmed_at)})
        except OSError as e:
            log.error("event=state_write_failed path=%s error=%r", self.dir.meta_path, e.strerror)

    def _confirm(self, name: str) -> None:
        """The server says `name` is current: its age restarts now, but only by a trusted clock
        (a wall clock running ahead would otherwise keep stale data looking fresh for days)."""
        st = self.clock.state()
        if st.trusted:
            self.state.confirm(name, st.now.timestamp())

    def _save(self, what: str, write: Any, *args: Any) -> bool:
        """Write an accepted bundle to the card. A full or failing card must not keep newer
        trust data (a withdrawn signer, a revocation) out of force: the caller applies it anyway
        and the save is retried (`_unsaved`, or a fresh status snapshot) on later rounds."""
        try:
            write(*args)
            return True
        except OSError as e:
            log.error("event=state_write_failed bundle=%s error=%r detail=in force now, saved on a later round",
                      what, e.strerror or str(e))
            return False

    def _retry_unsaved(self) -> None:
        for name, raw in list(self._unsaved.items()):
            if self._save(name, self.dir.write, name, raw):
                del self._unsaved[name]

    # -- trust list and policy -----------------------------------------------------------
    def _sync_simple(self, name: str) -> str:
        snap = self.state.snapshot()
        current = snap.version(name)
        tagged = self.etags.get(name)
        etag = tagged[0] if tagged and current is not None and tagged[1] == current else None
        resp = self.http.get(self.base + PATHS[name], WHAT[name], accept=COSE, etag=etag)
        if resp.status == 304:
            self._confirm(name)
            return "current"
        if resp.status in (204, 404, 410):
            if name == "trust":
                raise FetchError(f"trust list: server has none (HTTP {resp.status}); fix: publish a trust list "
                                 "on the server", status=resp.status)
            return "none on server"
        if resp.status != 200:
            raise FetchError(f"{WHAT[name]}: unexpected HTTP {resp.status}", status=resp.status)
        new: Any
        if name == "trust":
            new = TrustStore.from_bytes(resp.body, self.anchor, "(from the server)")
        else:
            new = parse_policy(open_bundle(resp.body, self.anchor, KIND_POLICY, "(from the server)"))
        if current is not None and new.version < current:
            raise TrustDataError(f"{WHAT[name]} from the server is version {new.version}, older than version "
                                 f"{current} in force (rollback); refused, the current one stays; fix: none on "
                                 "this device, the server must serve the newest version")
        if current is not None and new.version == current:
            self._confirm(name)
            if resp.etag:
                self.etags[name] = [resp.etag, new.version]
            return "current"
        if self._save(name, self.dir.write, name, resp.body):  # on the card first, then in force
            self._unsaved.pop(name, None)
        else:
            self._unsaved[name] = resp.body
        self.state.update(**{name: new})
        self._confirm(name)
        if resp.etag:
            self.etags[name] = [resp.etag, new.version]
        log.info("event=bundle_accepted bundle=%s version=%d previous=%s", name, new.version, current)
        return f"updated to version {new.version}"

    # -- status list ---------------------------------------------------------------------
    def _download_snapshot(self, etag: str | None) -> tuple[int, bytes, str | None]:
        """(status, body, etag); resumes an interrupted download with Range + If-Range."""
        part = self.dir.read_partial() if self.partial_etag else b""
        url = self.base + PATHS["snapshot"]
        try:
            resp = self.http.get(url, "status list", accept=COSE, etag=None if part else etag,
                                 range_start=len(part), if_range=self.partial_etag if part else None)
        except FetchError as e:
            if e.restart:  # cannot be continued (scanner/sync/fetch.py): the next round starts at byte 0
                self.dir.clear_partial()
                self.partial_etag = None
            elif e.partial and e.etag and e.status in (200, 206):
                kept = self.dir.append_partial(e.partial, reset=e.status == 200)
                self.partial_etag = e.etag if kept else None
                if not kept:
                    cap = self.dir.max_partial_bytes
                    raise FetchError(f"status list: the interrupted download would pass the {cap}-byte cap; "
                                     "abandoned, it restarts from zero; fix: none on this device if it recurs "
                                     "only once; else check the server") from None
            raise
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {len(part)}-"):
                self.dir.clear_partial()
                self.partial_etag = None
                raise FetchError("status list: server resumed at the wrong offset; fix: none, retrying in full")
            body = part + resp.body
        else:
            body = resp.body
        self.dir.clear_partial()
        self.partial_etag = None
        return resp.status, body, resp.etag

    def _index(self) -> StatusIndex | None:
        idx = self.state.snapshot().status
        return idx if isinstance(idx, StatusIndex) else None

    def _sync_snapshot(self) -> str:
        idx = self._index()
        full = idx is None or self.need_snapshot
        tagged = self.etags.get("snapshot")
        status, raw, etag = self._download_snapshot(None if full or not tagged else tagged[0])
        if status == 304:
            self._compact_at = len(self.dir.diff_versions()) + self.cfg.sync.status_max_diffs
            return "snapshot current"
        if status in (204, 404, 410):
            raise FetchError(f"status list: server has no snapshot (HTTP {status}); fix: publish one on the server")
        new = StatusIndex.from_bundle(open_bundle(raw, self.anchor, KIND_STATUS_SNAPSHOT, "(from the server)"))
        if idx is not None and new.version < idx.version:
            # Older than what the diffs already brought: never go back. (Equal is taken: it
            # replaces a long diff chain, or rebuilds a list whose count did not reconcile.)
            self._compact_at = len(self.dir.diff_versions()) + self.cfg.sync.status_max_diffs
            if full:
                raise TrustDataError(f"status list snapshot version {new.version} is older than version "
                                     f"{idx.version} in force (rollback); refused; fix: none on this device")
            return "snapshot older than the diffs in force"
        saved = self._save("status", self.dir.write_snapshot, raw)
        self.state.update(status=new)
        self._confirm("status")
        if etag:
            self.etags["snapshot"] = [etag, new.version]
        self.need_snapshot = not saved
        self._compact_at = self.cfg.sync.status_max_diffs
        log.info("event=bundle_accepted bundle=status_snapshot version=%d entries=%d", new.version, len(new))
        return f"snapshot version {new.version}"

    def _sync_diffs(self) -> str:
        applied = 0
        while applied < MAX_DIFFS_PER_ROUND:
            idx = self._index()
            if idx is None:
                return f"{applied} diffs"
            version = idx.version
            resp = self.http.get(f"{self.base}{PATHS['diff']}?from={version}", "status diff", accept=COSE)
            if resp.status in (204, 304):
                self._confirm("status")
                total = resp.headers.get("X-Status-Total")
                if resp.headers.get("X-Status-Version") == str(version) and total and total != str(len(idx)):
                    log.warning("event=status_count_mismatch entries=%d server_total=%s", len(idx), total)
                    self.need_snapshot = True
                    return f"{applied} diffs; count mismatch"
                return f"{applied} diffs; version {version}"
            if resp.status in (404, 410):
                self.need_snapshot = True
                return f"{applied} diffs; server cannot diff from version {version}"
            bundle = open_bundle(resp.body, self.anchor, KIND_STATUS_DIFF, "(from the server)")
            if bundle.version <= version:
                raise TrustDataError(f"status diff to version {bundle.version} is not newer than version {version} "
                                     "in force (rollback); refused; fix: none on this device")
            try:
                new = idx.apply_diff(bundle)
            except TrustDataError:
                self.need_snapshot = True
                raise
            total = bundle.doc.get("total")
            if not isinstance(total, int) or isinstance(total, bool) or len(new) != total:
                log.warning("event=status_count_mismatch version=%d entries=%d server_total=%r", bundle.version,
                            len(new), total)
                self.need_snapshot = True
                return f"{applied} diffs; count mismatch at version {bundle.version}"
            if not self._save("status_diff", self.dir.write_diff, bundle.version, resp.body):
                self.need_snapshot = True  # the chain on the card has a gap: rebuild it from a snapshot
            self.state.update(status=new)
            self._confirm("status")
            applied += 1
        return f"{applied} diffs (more next round)"

    def _sync_status(self) -> str:
        out = []
        if self._index() is None or self.need_snapshot or len(self.dir.diff_versions()) >= self._compact_at:
            out.append(self._sync_snapshot())
        if self._index() is not None:
            out.append(self._sync_diffs())
            if self.need_snapshot:  # a count mismatch: the snapshot, then its diffs, in this round
                out.append(self._sync_snapshot())
                out.append(self._sync_diffs())
        return "; ".join(out)

    # -- rounds --------------------------------------------------------------------------
    def run_once(self) -> dict[str, str]:
        """One round over all bundles; each bundle fails on its own. Values start with "failed:"
        or "refused:" when that bundle could not be brought up to date."""
        results: dict[str, str] = {}
        self._retry_unsaved()
        for name, step in (("trust", lambda: self._sync_simple("trust")),
                           ("policy", lambda: self._sync_simple("policy")), ("status", self._sync_status)):
            try:
                results[name] = step()
            except TrustDataError as e:
                results[name] = f"refused: {e}"
                log.warning("event=bundle_refused bundle=%s error=%r", name, str(e))
            except FetchError as e:
                results[name] = f"failed: {e}"
                log.warning("event=sync_failed bundle=%s error=%r", name, str(e))
            except OSError as e:
                results[name] = f"failed: {e.strerror or e}"
                log.error("event=state_write_failed bundle=%s error=%r", name, str(e))
            except Exception as e:  # noqa: BLE001 - the sync thread must outlive any bug in one bundle
                results[name] = f"failed: internal error {e.__class__.__name__}"
                log.exception("event=sync_internal_error bundle=%s", name)
        self._save_meta()
        self.last_results = results
        return results

    def log_staleness(self) -> None:
        snap = self.state.snapshot()
        th = self.state.thresholds(self.cfg)
        now = self._now()
        for name, limit in th.max_age_s.items():
            age = snap.age_s(name, now)
            if age is not None and age > limit:
                log.warning("event=trust_data_stale bundle=%s age_s=%d max_age_s=%d", name, age, limit)
            exp = snap.expires_at(name)
            if exp is not None and now > exp:
                log.warning("event=trust_data_expired bundle=%s expired_s_ago=%d detail=green results are REVIEW",
                            name, now - exp)

    def next_wait_s(self, results: dict[str, str]) -> float:
        sy = self.cfg.sync
        if any(r.startswith(("failed", "refused")) for r in results.values()):
            wait = full_jitter(self.failures, sy.retry_min_s, sy.retry_max_s, self.rng)
            self.failures += 1
            return wait
        self.failures = 0
        return sy.interval_s * self.rng.uniform(0.9, 1.1)

    def run(self, stop: threading.Event) -> None:
        log.info("event=sync_started server=%s", self.base)
        while not stop.is_set():
            started = time.monotonic()
            results = self.run_once()
            self.log_staleness()
            wait = self.next_wait_s(results)
            log.info("event=sync_round took_s=%.2f next_in_s=%.1f %s", time.monotonic() - started, wait,
                     " ".join(f"{k}={v.split(':')[0].replace(' ', '_')}" for k, v in results.items()))
            stop.wait(wait)
        self.http.close()


def start(cfg: Config, state: TrustState, stop_event: threading.Event) -> threading.Thread:
    """Start the sync thread (a daemon: it never holds up shutdown). With `[sync] enabled =
    false` the thread ends at once; a sync that cannot start logs why and ends, the lane goes on."""

    def main() -> None:
        if not cfg.sync.enabled:
            log.info("event=sync_disabled")
            return
        try:
            sync = TrustSync(cfg, state)
        except Exception as e:  # noqa: BLE001 - a broken sync setup must not stop the lane
            log.error("event=sync_not_started error=%r", str(e))
            return
        try:
            sync.run(stop_event)
        except Exception:  # noqa: BLE001
            log.exception("event=sync_crashed")

    thread = threading.Thread(target=main, name="trust-sync", daemon=True)
    thread.start()
    return thread
