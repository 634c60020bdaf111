"""The trust data in force: one immutable snapshot that the sync thread replaces whole.

A scan reads `TrustState.snapshot()` once and uses that object for everything (trust list,
status list, policy, ages), so a swap in the middle of a scan can never mix an old trust list
with a new status list. Replacing the reference is atomic in CPython; the lock only orders
writers. `TrustState.check()` is the lane's one verification entry point: it routes provincial
codes to the injected online check, applies the centre's policy over the config values, and
adds staleness / expiry warnings. It does no I/O itself.

Age of a bundle = now minus the later of its `generated_at` and the last time the server
confirmed it current (a 200 with the same version, or a 304): a list the server keeps
confirming is fresh even when it was signed weeks ago; one the device cannot refresh ages.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import device_secret
from ..clock import ClockState, ServerOffset
from .bundles import BUNDLE_NAMES, Policy
from .envelope import MAX_TEXT_CHARS, split_prefix
from .status import StatusSource
from .trust import TrustStore
from .verify import CLOCK_UNTRUSTED, FORMAT_UNSUPPORTED, TRUST_DATA_EXPIRED, TRUST_DATA_STALE, Verification, verify

if TYPE_CHECKING:
    from ..config import Config

ONLINE_UNAVAILABLE = "ONLINE_UNAVAILABLE"
TRUST_DATA_MISSING = "TRUST_DATA_MISSING"
HEALTH_PENDING = "HEALTH_PENDING"
#: Codes only the online path gives (verify() itself never returns them).
ONLINE_CODES = frozenset({ONLINE_UNAVAILABLE, HEALTH_PENDING})
STALE_WARNING = {"trust": TRUST_DATA_STALE, "status": "STATUS_DATA_STALE", "policy": "POLICY_STALE"}
EXPIRED_WARNING = {"trust": TRUST_DATA_EXPIRED, "status": "STATUS_DATA_EXPIRED", "policy": "POLICY_EXPIRED"}

OnlineCheck = Callable[[str], Verification]


@dataclass(frozen=True)
class TrustSnapshot:
    """Everything a scan needs from the trust data, consistent with itself."""

    trust: TrustStore
    status: StatusSource | None = None
    policy: Policy | None = None
    #: Wall time (s) at which the server last confirmed each bundle current.
    confirmed_at: Mapping[str, float] = field(default_factory=dict)

    def bundle(self, name: str) -> Any:
        return {"trust": self.trust, "status": self.status, "policy": self.policy}[name]

    def version(self, name: str) -> int | None:
        b = self.bundle(name)
        return getattr(b, "version", None) if b is not None else None

    def expires_at(self, name: str) -> int | None:
        b = self.bundle(name)
        return getattr(b, "expires_at", None) if b is not None else None

    def age_s(self, name: str, now_s: float) -> float | None:
        """Seconds since this bundle was known current; None when there is no such bundle."""
        b = self.bundle(name)
        if b is None:
            return None
        marks = [t for t in (getattr(b, "generated_at", None), self.confirmed_at.get(name)) if t is not None]
        return now_s - max(marks) if marks else None

    def versions(self) -> dict[str, int | None]:
        return {name: self.version(name) for name in BUNDLE_NAMES}

    def newest_signed_at(self) -> float | None:
        """The newest `generated_at` (epoch seconds) among the bundles in force: the anchor
        vouches that "now" is no earlier (docs/credentials.md section 4). None without any."""
        marks = [getattr(self.bundle(n), "generated_at", None) for n in BUNDLE_NAMES]
        times = [float(t) for t in marks if isinstance(t, int | float) and not isinstance(t, bool)]
        return max(times) if times else None


@dataclass(frozen=True)
class Thresholds:
    """Config values with the centre's policy laid over them."""

    fever_threshold_c: float
    clock_skew_s: int
    max_code_age_s: int | None
    max_age_s: Mapping[str, int]


def thresholds(snap: TrustSnapshot, cfg: Config) -> Thresholds:
    p = snap.policy
    ages = {"trust": cfg.sync.trust_max_age_s, "status": cfg.sync.status_max_age_s,
            "policy": cfg.sync.policy_max_age_s}
    if p is None:
        return Thresholds(cfg.policy.fever_threshold_c, cfg.policy.clock_skew_s, None, ages)
    return Thresholds(
        p.fever_threshold_c if p.fever_threshold_c is not None else cfg.policy.fever_threshold_c,
        p.clock_skew_s if p.clock_skew_s is not None else cfg.policy.clock_skew_s,
        p.max_code_age_s, {**ages, **p.max_age_s})


def required_bundles(cfg: Config) -> tuple[str, ...]:
    """The trust data a PASS needs on this gate: the trust list always; with `[sync] enabled` the
    status list (revocations, colour updates) and the centre's policy too."""
    return BUNDLE_NAMES if cfg.sync.enabled else ("trust",)


def age_limits(th: Thresholds, cfg: Config) -> Mapping[str, int]:
    """Max ages that apply: a bundle's age is the time since the server last confirmed it, so
    the trust list from the config file ages only when the sync is there to refresh it (without
    sync its own expires_at governs); status list and policy only ever come from the sync."""
    return th.max_age_s if cfg.sync.enabled else {k: v for k, v in th.max_age_s.items() if k != "trust"}


def data_warnings(snap: TrustSnapshot, now_s: float, max_age_s: Mapping[str, int],
                  required: Sequence[str] = ()) -> tuple[str, ...]:
    """Missing, stale and expired trust data (verify() itself reports the trust list's expiry).
    A `required` bundle never received gives TRUST_DATA_MISSING; one older than its max age a
    *_STALE warning; one past expires_at TRUST_DATA_EXPIRED. Each withholds a PASS (REVIEW,
    scanner.policy)."""
    out: list[str] = []
    if any(snap.bundle(name) is None for name in required):
        out.append(TRUST_DATA_MISSING)
    for name in BUNDLE_NAMES:
        age = snap.age_s(name, now_s)
        if age is not None and name in max_age_s and age > max_age_s[name]:
            out.append(STALE_WARNING[name])
        expires = snap.expires_at(name)
        if name != "trust" and expires is not None and now_s > expires:
            out += [EXPIRED_WARNING[name], TRUST_DATA_EXPIRED]
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def online_text(payload: str | bytes, patterns: Sequence[str]) -> str | None:
    """The text to check online: a payload without a known prefix that matches a configured
    provincial pattern in full. None for everything else (those go to verify())."""
    if not patterns:
        return None
    if isinstance(payload, bytes | bytearray):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            return None
    elif isinstance(payload, str):
        text = payload
    else:
        return None
    text = text.rstrip("\r\n")
    if len(text) > MAX_TEXT_CHARS or split_prefix(text) is not None:
        return None
    return text if any(p.fullmatch(text) for p in _compiled(tuple(patterns))) else None


def online_token_hash(text: str) -> bytes:
    """The recorded token_hash of a provincial code: HMAC-SHA256 of its text under this device's
    secret, first 16 bytes (scanner/device_secret.py). Keyed, unlike the signed codes' plain
    SHA-256 (docs/credentials.md section 7): the text may be little more than an ID number,
    which a plain hash gives away."""
    return device_secret.online_token_hash(text)


def _clock_state(clock: Any) -> ClockState:
    if hasattr(clock, "state"):
        st: ClockState = clock.state()
        return st
    return ClockState(clock.now(), bool(clock.trusted()), "unknown")


class TrustState:
    """Holder of the current `TrustSnapshot`. The sync thread calls `update()`; scans call
    `snapshot()` or `check()`. `clock_offset` is the sync's server-time measurement, shared with
    the lane's `Clock`."""

    def __init__(self, trust: TrustStore, status: StatusSource | None = None, policy: Policy | None = None, *,
                 confirmed_at: Mapping[str, float] | None = None, clock_offset: ServerOffset | None = None) -> None:
        self._snap = TrustSnapshot(trust, status, policy, dict(confirmed_at or {}))
        self._lock = threading.Lock()
        self.clock_offset = clock_offset if clock_offset is not None else ServerOffset()
        if not self.clock_offset.has_floor:  # no clock is trusted earlier than the data the anchor signed
            self.clock_offset.set_floor(lambda: self._snap.newest_signed_at())

    def snapshot(self) -> TrustSnapshot:
        return self._snap

    def update(self, **changes: Any) -> TrustSnapshot:
        """Swap in a new snapshot with `changes` (trust=, status=, policy=, confirmed_at=)."""
        with self._lock:
            self._snap = replace(self._snap, **changes)
            return self._snap

    def confirm(self, name: str, when_s: float) -> None:
        with self._lock:
            self._snap = replace(self._snap, confirmed_at={**self._snap.confirmed_at, name: when_s})

    @property
    def version(self) -> int:
        """The trust list version in force (recorded with every passage)."""
        return self._snap.trust.version

    @property
    def generated_at(self) -> int | None:
        """The trust list's own signing time (status pages show its age)."""
        return self._snap.trust.generated_at

    @property
    def expires_at(self) -> int | None:
        return self._snap.trust.expires_at

    def summary(self, now_s: float, cfg: Config | None = None) -> dict[str, Any]:
        """Versions, ages and warnings of the data in force: for status pages and metrics."""
        snap = self._snap
        out: dict[str, Any] = {}
        for name in BUNDLE_NAMES:
            age = snap.age_s(name, now_s)
            out[name] = {"version": snap.version(name), "age_s": None if age is None else int(age),
                         "expires_at": snap.expires_at(name)}
        if cfg is not None:
            out["warnings"] = list(data_warnings(snap, now_s, age_limits(thresholds(snap, cfg), cfg),
                                                 required_bundles(cfg)))
        return out

    def thresholds(self, cfg: Config) -> Thresholds:
        return thresholds(self._snap, cfg)

    def check(self, payload: str | bytes, clock: Any, cfg: Config, online: OnlineCheck | None = None) -> Verification:
        """Verify one scanned payload against one snapshot, with the clock read once."""
        snap = self._snap
        st = _clock_state(clock)
        th = thresholds(snap, cfg)
        text = online_text(payload, cfg.sync.online_patterns)
        if text is not None:
            if online is None:
                return Verification(ONLINE_UNAVAILABLE, kind="health", token_hash=online_token_hash(text),
                                    detail="provincial code, but no online check is configured")
            v = online(text)
            if v.ok and not st.trusted:
                v = replace(v, code=CLOCK_UNTRUSTED, detail="checked online, but this device's clock is not trusted")
            return v
        v = verify(payload, snap.trust, st.now, clock_trusted=st.trusted, skew_s=th.clock_skew_s,
                   status=snap.status, max_code_age_s=th.max_code_age_s)
        if v.code == FORMAT_UNSUPPORTED:
            return v
        extra = data_warnings(snap, st.now.timestamp(), age_limits(th, cfg), required_bundles(cfg))
        if extra:
            v = replace(v, warnings=tuple(dict.fromkeys((*v.warnings, *extra))))
        return v
