"""Boot side of the trust-data sync: the trust data to start the lane with, and the clock's
signed-time floor.

The trust list comes from the config file or the newer one the sync saved; the status list and
policy from the sync's state directory (scanner/sync/statedir.py). Everything is verified against
the pinned anchor again when loaded: the files are a cache, not a trust root.

Signed time: each bundle's `generated_at` is signed by the anchor, so the newest one in force is a
lower bound on the true time. It becomes the floor of the clock shared through
`TrustState.clock_offset` (scanner/clock.py): no source of time is trusted earlier than it.
"""

from __future__ import annotations

import logging

from cryptography import x509

from scanner.numbers import is_finite_number

from ..clock import ServerOffset
from ..config import Config
from ..credentials.bundles import KIND_POLICY, KIND_STATUS_DIFF, KIND_STATUS_SNAPSHOT, Policy, open_bundle, parse_policy
from ..credentials.state import TrustState
from ..credentials.status import StatusIndex
from ..credentials.trust import TrustStore, load_certificate
from ..errors import TrustDataError
from .statedir import StateDir

log = logging.getLogger("scanner.sync")


# ------------------------------------------------------------------------------ signed time


def newest_signed_at(state: TrustState) -> float | None:
    """The newest signed `generated_at` in force (see TrustSnapshot.newest_signed_at)."""
    return state.snapshot().newest_signed_at()


def _load_status(sd: StateDir, anchor: x509.Certificate) -> StatusIndex | None:
    raw = sd.read_snapshot()
    if raw is None:
        return None
    try:
        idx = StatusIndex.from_bundle(open_bundle(raw, anchor, KIND_STATUS_SNAPSHOT, str(sd.snapshot_path)))
    except TrustDataError as e:
        log.error("event=state_refused bundle=status error=%r", str(e))
        return None
    versions = sd.diff_versions()
    for i, v in enumerate(versions):
        if v <= idx.version:
            sd.remove_diffs([v])  # left over from before the snapshot was replaced
            continue
        try:
            idx = idx.apply_diff(open_bundle(sd.read_diff(v) or b"", anchor, KIND_STATUS_DIFF, f"diff {v}"))
        except TrustDataError as e:
            log.error("event=state_refused bundle=status_diff version=%d error=%r", v, str(e))
            sd.remove_diffs(versions[i:])
            break
    return idx


def load_state(cfg: Config) -> TrustState:
    """The trust data to start with: the newest valid trust list of the config file and the
    sync state directory, plus the saved status list and policy. TrustDataError (one line) when
    there is no usable trust list and sync is off; with sync on, the lane starts with an empty
    list (every code REVIEW UNKNOWN_SIGNER) and the sync fetches one."""
    anchor = load_certificate(cfg.trust.anchor_cert)
    offset = ServerOffset(cfg.clock.server_offset_max_age_s, cfg.clock.max_jump_s)
    lists: list[TrustStore] = []
    first_error: TrustDataError | None = None
    try:
        lists.append(TrustStore.load(cfg.trust.trust_list, cfg.trust.anchor_cert))
    except TrustDataError as e:
        first_error = e
    if not cfg.sync.enabled:
        if first_error:
            raise first_error
        return TrustState(lists[0], clock_offset=offset)  # binds the signed-time floor
    sd = StateDir(cfg.sync.state_dir)
    saved = sd.read("trust")
    if saved is not None:
        try:
            lists.append(TrustStore.from_bytes(saved, anchor, "(saved by the sync)"))
        except TrustDataError as e:
            log.error("event=state_refused bundle=trust error=%r", str(e))
    if not lists:
        log.error("event=no_trust_list error=%r detail=starting with an empty list until the sync fetches one",
                  str(first_error))
        lists.append(TrustStore([]))
    elif first_error:
        log.warning("event=config_trust_list_unusable error=%r detail=using the list saved by the sync",
                    str(first_error))
    trust = max(lists, key=lambda t: t.version)
    policy: Policy | None = None
    raw = sd.read("policy")
    if raw is not None:
        try:
            policy = parse_policy(open_bundle(raw, anchor, KIND_POLICY, "(saved by the sync)"))
        except TrustDataError as e:
            log.error("event=state_refused bundle=policy error=%r", str(e))
    status = _load_status(sd, anchor)
    confirmed = sd.read_meta().get("confirmed_at", {})
    confirmed = {k: float(v) for k, v in confirmed.items() if is_finite_number(v)} \
        if isinstance(confirmed, dict) else {}
    # TrustState binds the signed-time floor: the clock is never trusted earlier than the data
    return TrustState(trust, status, policy, confirmed_at=confirmed, clock_offset=offset)


