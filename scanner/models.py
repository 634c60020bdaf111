"""Values that flow through the lane. Frozen dataclasses: a decision, once made, is a fact."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

#: A staff id as staff type it: 1-32 letters (Latin or CJK), digits, `_`, `.` or `-`; no spaces,
#: no control characters (it is logged and recorded with every override).
STAFF_ID = re.compile(r"[A-Za-z0-9_.\-\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{1,32}")


def valid_staff_id(value: object) -> str | None:
    """The staff id, stripped, if it matches STAFF_ID; else None. The lane and the staff page
    both judge ids with this one check."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if STAFF_ID.fullmatch(value) else None


class Verdict(StrEnum):
    PASS = "PASS"
    REVIEW = "REVIEW"
    DENY = "DENY"

    @property
    def rank(self) -> int:
        return {"PASS": 0, "REVIEW": 1, "DENY": 2}[self.value]


def strictest(verdicts: list[Verdict]) -> Verdict:
    """DENY over REVIEW over PASS (docs/credentials.md section 5)."""
    return max(verdicts, key=lambda v: v.rank, default=Verdict.PASS)


class TempStatus(StrEnum):
    OK = "OK"
    UNAVAILABLE = "UNAVAILABLE"  # sensor fault, nobody in front within the window
    UNSTABLE = "UNSTABLE"  # samples spread too wide: person moved
    UNRELIABLE = "UNRELIABLE"  # ambient out of range or changing fast


@dataclass(frozen=True)
class Measurement:
    """One screened temperature. `body_c` is the calibrated estimate the policy compares;
    `object_c`/`ambient_c` are the raw sensor medians kept for audit and re-calibration."""

    status: TempStatus
    body_c: float | None = None
    object_c: float | None = None
    ambient_c: float | None = None
    spread_c: float | None = None
    samples: int = 0
    calibration_version: str = ""
    t_mono: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: tuple[str, ...]

    @property
    def reason_text(self) -> str:
        from scanner.reasons import describe

        return "; ".join(describe(r) for r in self.reasons)


@dataclass(frozen=True)
class CredentialSummary:
    """What the record keeps of one credential: never the payload, a name or an ID."""

    kind: str | None
    code: str
    issuer: str | None = None
    kid: str | None = None  # hex
    # hex: signed codes SHA-256(iss || cti)[:16]; online codes HMAC-SHA256(device secret, text)[:16]
    token_hash: str | None = None
    colour: str | None = None
    village: str | None = None
    grid: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class PassageRecord:
    """One row of the outbox (docs/credentials.md section 7). `seq` is assigned by the store."""

    record_id: str
    device_id: str
    checkpoint_id: str
    checkpoint_kind: str
    ts_utc: str
    clock_trusted: bool
    boot_id: str
    mono_s: float
    verdict: str
    reasons: tuple[str, ...]
    credentials: tuple[CredentialSummary, ...] = ()
    credential_type: str | None = None
    issuer: str | None = None
    kid: str | None = None
    token_hash: str | None = None
    colour: str | None = None
    temperature_c: float | None = None
    object_c: float | None = None
    ambient_c: float | None = None
    temp_status: str | None = None
    calibration_version: str | None = None
    residence_village: str | None = None
    residence_grid: str | None = None
    trust_version: int | None = None
    status_version: int | None = None
    policy_version: int | None = None
    override_by: str | None = None
    override_verdict: str | None = None
    override_of: str | None = None  # record_id of the REVIEW that staff overruled
    latency_ms: float | None = None
    extra: dict[str, str] = field(default_factory=dict)
