"""verify(): one scanned text in, one `Verification` out, in the order of docs/credentials.md section 4.

A gate sees screenshots, printouts, payment codes and deliberate garbage, so verify() never
raises on a payload: every failure is a reason code. It is pure (no I/O, injected clock and
status list) so the scan loop, the CLI and the tests all run exactly the same logic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from . import cose
from .claims import (
    ClaimsError,
    DccClaims,
    HealthClaims,
    ResidenceClaims,
    Times,
    dcc_entry_type,
    decode_claims,
    issuer_and_cti,
    parse_dcc,
    parse_health,
    parse_residence,
    parse_times,
)
from .envelope import MAX_TEXT_CHARS, PREFIXES, EnvelopeError, decode_text, split_prefix
from .status import COLOURS, StatusSource
from .trust import TrustedSigner, TrustStore

VALID = "VALID"
FORMAT_UNSUPPORTED = "FORMAT_UNSUPPORTED"
FORMAT_INVALID = "FORMAT_INVALID"
UNKNOWN_SIGNER = "UNKNOWN_SIGNER"
SIGNATURE_INVALID = "SIGNATURE_INVALID"
SIGNER_NOT_ALLOWED = "SIGNER_NOT_ALLOWED"
NOT_YET_VALID = "NOT_YET_VALID"
EXPIRED = "EXPIRED"
CLOCK_UNTRUSTED = "CLOCK_UNTRUSTED"
REVOKED = "REVOKED"
DENYLISTED = "DENYLISTED"
CLAIMS_INVALID = "CLAIMS_INVALID"
TRUST_DATA_EXPIRED = "TRUST_DATA_EXPIRED"
TRUST_DATA_STALE = "TRUST_DATA_STALE"
STATUS_UNAVAILABLE = "STATUS_UNAVAILABLE"

#: Every value `Verification.code` can take (TRUST_DATA_EXPIRED is a warning, never a code).
REASON_CODES: frozenset[str] = frozenset({
    VALID, FORMAT_UNSUPPORTED, FORMAT_INVALID, UNKNOWN_SIGNER, SIGNATURE_INVALID,
    SIGNER_NOT_ALLOWED, NOT_YET_VALID, EXPIRED, CLOCK_UNTRUSTED, REVOKED, DENYLISTED,
    CLAIMS_INVALID,
})  # fmt: skip

_PREFIX_BYTES = tuple(p.encode("ascii") for p in PREFIXES)


@dataclass(frozen=True)
class Verification:
    """The outcome of verifying one code. `masked_name` and `id_tail` exist only for the staff's
    visual check: they are hidden from repr() and from as_dict() unless asked for, so they do not
    slip into a log line or a record by accident."""

    code: str
    kind: str | None = None
    issuer: str | None = None
    kid: bytes | None = None
    token_hash: bytes | None = None
    colour: str | None = None
    subject_hash: bytes | None = None
    village: str | None = None
    grid: str | None = None
    house_id: str | None = None
    region: str | None = None
    issued_at: int | None = None
    expires_at: int | None = None
    not_before: int | None = None
    masked_name: str | None = field(default=None, repr=False)
    id_tail: str | None = field(default=None, repr=False)
    trust_version: int | None = None
    warnings: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code == VALID

    def as_dict(self, *, include_personal: bool = False) -> dict[str, Any]:
        """JSON-ready (bytes as hex). Personal display fields only when asked for."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in ("masked_name", "id_tail") and not include_personal:
                continue
            out[key] = value.hex() if isinstance(value, bytes) else value
        out["warnings"] = list(self.warnings)
        out["ok"] = self.ok
        return out


def _hash16(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()[:16]


def _as_text(payload: Any) -> tuple[str | None, str]:
    """(text, "") or (None, reason code) for payloads that are not text at all."""
    if isinstance(payload, str):
        return payload, ""
    if isinstance(payload, bytes | bytearray):
        raw = bytes(payload)
        try:
            return raw.decode("utf-8"), ""
        except UnicodeDecodeError:
            return None, FORMAT_INVALID if raw.startswith(_PREFIX_BYTES) else FORMAT_UNSUPPORTED
    return None, FORMAT_UNSUPPORTED


def verify(
    payload: str | bytes,
    trust: TrustStore,
    now: datetime,
    *,
    clock_trusted: bool = True,
    skew_s: int = 300,
    status: StatusSource | None = None,
    online_patterns: Iterable[str] = (),
    trust_max_age_s: int | None = None,
    max_code_age_s: int | None = None,
) -> Verification:
    """Verify one scanned code. Never raises on any payload.

    `now` must be timezone-aware (a naive time is a caller bug, refused with ValueError).
    `online_patterns` is ignored: provincial codes are routed to the online check by the lane
    (`scanner.credentials.state`) before verify(), which keeps verify() free of I/O; here such
    texts are FORMAT_UNSUPPORTED like any other unknown prefix. `trust_max_age_s` adds the
    TRUST_DATA_STALE warning when the trust list is older than the policy allows.
    `max_code_age_s` (policy): a health code issued longer ago than this is EXPIRED even before
    its exp, so the centre can shorten the life of screenshots without reissuing codes."""
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError("verify(): now must be a timezone-aware datetime")
    try:
        return _verify(payload, trust, now, clock_trusted, skew_s, status, trust_max_age_s, max_code_age_s)
    except Exception:  # the promise is "never raises": a bug here must fail closed, not crash
        return Verification(FORMAT_INVALID, detail="internal error while verifying this code")


def _trust_warnings(trust: TrustStore, now: datetime, max_age_s: int | None) -> list[str]:
    warnings: list[str] = []
    if trust.is_expired(now):
        warnings.append(TRUST_DATA_EXPIRED)
    if max_age_s is not None and trust.generated_at is not None:
        if now.timestamp() - trust.generated_at > max_age_s:
            warnings.append(TRUST_DATA_STALE)
    return warnings


def _unfit_reason(signer: TrustedSigner, kind: str, times: Times, dcc_type: str | None) -> str:
    """Why this (signature-verified) signer may not issue this code; "" when it may."""
    if kind not in signer.types:
        return f"signer is not allowed to issue {kind} credentials"
    if times.iat < signer.not_before or times.exp > signer.not_after:
        return "code validity lies outside the signer certificate's validity"
    # An undeterminable DCC type is left to the claims step (CLAIMS_INVALID), not blamed here.
    usage = signer.dcc_usage
    if kind == "dcc" and usage is not None and dcc_type is not None and dcc_type not in usage:
        return "signer certificate's key usage does not cover this DCC type"
    return ""


def _time_code(times: Times, now_s: float, skew_s: int, max_age_s: int | None = None) -> tuple[str, str]:
    if times.iat > now_s + skew_s:
        return NOT_YET_VALID, "issued in the future (check this device's clock)"
    if now_s > times.exp:
        return EXPIRED, "code has expired"
    if max_age_s is not None and now_s - times.iat > max_age_s:
        return EXPIRED, "code is older than the centre's maximum code age"
    if times.nbf is not None and times.nbf > now_s + skew_s:
        return NOT_YET_VALID, "code is not valid yet (nbf)"
    return "", ""


def _parse_private(
    kind: str, claims: Any, times: Times
) -> HealthClaims | ResidenceClaims | DccClaims:
    if kind == "health":
        return parse_health(claims, times)
    if kind == "residence":
        return parse_residence(claims, times)
    return parse_dcc(claims, times)


def _verify(
    payload: Any,
    trust: TrustStore,
    now: datetime,
    clock_trusted: bool,
    skew_s: int,
    status: StatusSource | None,
    trust_max_age_s: int | None,
    max_code_age_s: int | None = None,
) -> Verification:
    # 1. Route by prefix.
    text, code = _as_text(payload)
    if text is None:
        return Verification(code, detail="payload is not text")
    text = text.rstrip("\r\n")  # keyboard-wedge scanners append CR/LF; never part of Base45
    split = split_prefix(text)
    if split is None:
        return Verification(FORMAT_UNSUPPORTED, detail="not a signed credential (unknown prefix)")
    kind = PREFIXES[split[0]]

    # 2. Base45, zlib, CBOR, COSE structure.
    if len(text) > MAX_TEXT_CHARS:
        return Verification(FORMAT_INVALID, kind=kind, detail="longer than any QR code can hold")
    try:
        sign1 = decode_text(text).sign1
    except EnvelopeError as exc:
        return Verification(FORMAT_INVALID, kind=kind, detail=str(exc))
    kid = sign1.kid
    if kid is None:
        return Verification(FORMAT_INVALID, kind=kind, detail="no kid in the COSE headers")

    # 3. Signer: kid lookup, signature (every signer sharing the kid), then fitness.
    warnings = _trust_warnings(trust, now, trust_max_age_s)
    base: dict[str, Any] = {"kind": kind, "kid": kid, "trust_version": trust.version}

    def result(code: str, detail: str, **fields: Any) -> Verification:
        return Verification(code, **{**base, **fields}, warnings=tuple(warnings), detail=detail)

    candidates = trust.signers_for(kid)
    if not candidates:
        return result(
            UNKNOWN_SIGNER, "no trusted signer has this kid (trust list may be out of date)"
        )
    alg = sign1.alg
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in cose.allowed_algs(kind):
        return result(SIGNATURE_INVALID, "signature algorithm not allowed for this credential type")
    verified = [
        s
        for s in candidates
        if cose.verify_signature(
            alg, s.public_key, sign1.protected_bstr, sign1.payload, sign1.signature
        )
    ]
    if not verified:
        return result(
            SIGNATURE_INVALID, f"signature does not verify ({len(candidates)} signer(s) tried)"
        )

    # The signature holds: from here on the claims may be read.
    try:
        claims = decode_claims(sign1.payload)
        times = parse_times(claims, allow_float=kind == "dcc")  # floats: HC1 only
    except ClaimsError as exc:
        return result(CLAIMS_INVALID, str(exc))
    iss, cti = issuer_and_cti(claims)
    token_hash = _hash16(iss.encode("utf-8"), cti) if iss is not None and cti is not None else None
    base.update(
        issuer=iss,
        token_hash=token_hash,
        issued_at=times.iat,
        expires_at=times.exp,
        not_before=times.nbf,
    )
    private: HealthClaims | ResidenceClaims | DccClaims | None = None
    claims_problem = ""
    try:
        private = _parse_private(kind, claims, times)
    except ClaimsError as exc:
        claims_problem = str(exc)
    base.update(_claim_fields(private))

    dcc_type = dcc_entry_type(claims) if kind == "dcc" else None
    reasons = [_unfit_reason(s, kind, times, dcc_type) for s in verified]
    if all(reasons):
        return result(SIGNER_NOT_ALLOWED, reasons[0])

    # 4. Time, with clock skew. An untrusted clock cannot judge validity: its verdict becomes a
    # warning and the result CLOCK_UNTRUSTED (REVIEW), unless a later step finds worse. EXPIRED
    # is final at once; NOT_YET_VALID (a REVIEW, likely our own clock) waits for the status list,
    # so that a revoked code or a subject who turned red is never left to a staff PASS.
    time_code, time_detail = _time_code(times, now.timestamp(), skew_s,
                                        max_code_age_s if kind == "health" else None)
    if time_code == EXPIRED and clock_trusted:
        return result(time_code, time_detail)
    if time_code and not clock_trusted:
        warnings.append(f"{time_code}_BY_UNTRUSTED_CLOCK")

    # 5. Status list: revoked / deny-listed tokens, then the subject's current colour.
    if status is not None:
        try:
            if token_hash is not None and status.is_revoked(token_hash):
                return result(REVOKED, "this code has been revoked")
            if token_hash is not None and status.is_denylisted(token_hash):
                return result(DENYLISTED, "this code is deny-listed (widely shared)")
            subject = base.get("subject_hash")
            if isinstance(private, HealthClaims) and subject is not None:
                update = status.colour_update(subject)
                if update is not None:
                    base["colour"] = COLOURS.get(update, "red")  # unknown value: fail closed
        except Exception:
            warnings.append(STATUS_UNAVAILABLE)
    if time_code and clock_trusted:
        return result(time_code, time_detail)

    # 6. Claims schema.
    if private is None:
        return result(CLAIMS_INVALID, claims_problem or "claims do not fit the schema")
    if not clock_trusted:
        return result(CLOCK_UNTRUSTED, "genuine, but this device's clock is not trusted")
    return result(VALID, "signature, signer, validity time and claims check out")


def _claim_fields(private: HealthClaims | ResidenceClaims | DccClaims | None) -> dict[str, Any]:
    if isinstance(private, HealthClaims):
        return {
            "colour": COLOURS[private.col],
            "subject_hash": _hash16(private.sid),
            "region": private.region,
            "masked_name": private.masked_name,
            "id_tail": private.id_tail,
        }
    if isinstance(private, ResidenceClaims):
        return {
            "subject_hash": _hash16(private.tenant_sid),
            "village": private.village,
            "grid": private.grid,
            "house_id": private.house_id,
            "masked_name": private.masked_name,
            "id_tail": private.id_tail,
        }
    return {}
