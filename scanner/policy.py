"""The decision table of docs/credentials.md section 5, as one pure function.

Inputs are what the passage collected (credential verifications and one measurement) and the
checkpoint's rules; the output is a verdict with *every* reason that applied. The strictest
verdict wins (DENY over REVIEW over PASS) and a PASS needs every input present and good: a
missing code, a missing temperature or a sensor fault can never turn into a green light.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scanner.models import Decision, Measurement, TempStatus, Verdict, strictest
from scanner.numbers import is_finite_number

# Verification codes that mean "this credential is bad": the person is refused.
DENY_CODES = frozenset({"SIGNATURE_INVALID", "EXPIRED", "REVOKED", "DENYLISTED", "FORMAT_INVALID",
                        "CLAIMS_INVALID", "SIGNER_NOT_ALLOWED"})
# Verification codes that mean "we cannot tell here": staff decide.
REVIEW_CODES = frozenset({"UNKNOWN_SIGNER", "NOT_YET_VALID", "CLOCK_UNTRUSTED", "TRUST_DATA_EXPIRED",
                          "TRUST_DATA_STALE", "TRUST_DATA_MISSING", "ONLINE_UNAVAILABLE", "HEALTH_PENDING",
                          "RECENTLY_DENIED"})
#: Warning the lane adds to a health code it refused a short while ago (scanner/service.py).
RECENTLY_DENIED = "RECENTLY_DENIED"
# Warnings on a VALID verification that withhold a PASS (docs/credentials.md sections 3 and 5): trust data the
# config uses that is past its expiry, past its max age, or was never received. Any *_STALE or
# *_EXPIRED warning counts; the reason recorded is the family's one code.
# STATUS_UNAVAILABLE: the status list is there but could not be consulted, as good as missing.
_WARNING_REASONS = (("TRUST_DATA_MISSING", "TRUST_DATA_MISSING"), ("STATUS_UNAVAILABLE", "TRUST_DATA_MISSING"),
                    ("_EXPIRED", "TRUST_DATA_EXPIRED"), ("_STALE", "TRUST_DATA_STALE"),
                    ("RECENTLY_DENIED", "RECENTLY_DENIED"))
COLOUR_REASON = {"red": "HEALTH_RED", "yellow": "HEALTH_YELLOW"}
# UNRELIABLE has its own reason: the sensor works but the site does not allow a trustworthy
# reading (ambient out of range or changing fast), so staff measure by hand, not fix the sensor.
TEMP_REASON = {TempStatus.UNAVAILABLE: "TEMP_UNAVAILABLE", TempStatus.UNSTABLE: "TEMP_UNSTABLE",
               TempStatus.UNRELIABLE: "TEMP_UNRELIABLE"}
# Every reason the policy can give: the i18n test checks each has Chinese and English text.
ALL_REASONS = (DENY_CODES | REVIEW_CODES | set(COLOUR_REASON.values()) | set(TEMP_REASON.values())
               | {"OK", "FEVER", "NO_CODE", "RESIDENCE_MISSING", "RESIDENCE_OTHER_VILLAGE"})


@dataclass(frozen=True)
class CheckpointRules:
    kind: str = "highway_exit"  # or "village_gate"
    villages: frozenset[str] = frozenset()
    fever_threshold_c: float = 37.3

    @property
    def requires_residence(self) -> bool:
        return self.kind == "village_gate"


def _verdict_for(reason: str) -> Verdict:
    if reason in DENY_CODES or reason in {"HEALTH_RED", "HEALTH_YELLOW", "FEVER"}:
        return Verdict.DENY
    return Verdict.REVIEW


def is_credential(v: Any) -> bool:
    """A QR that is not a credential at all (a payment code, a link, plain text) is no code."""
    return v.code != "FORMAT_UNSUPPORTED"


def warning_reasons(warnings: Iterable[str]) -> list[str]:
    """The REVIEW reasons that a verification's trust-data warnings give (may be [])."""
    warnings = tuple(warnings)
    out = [reason for marker, reason in _WARNING_REASONS
           if any(w == marker or w.endswith(marker) for w in warnings)]
    if "TRUST_DATA_EXPIRED" in out and "TRUST_DATA_STALE" in out:
        out.remove("TRUST_DATA_STALE")  # past its expiry is past its age too: one reason says it
    return _unique(out)


def credential_reasons(v: Any, rules: CheckpointRules) -> list[str]:
    """Reasons one verified credential contributes; [] when it is good.

    A colour is only ever set on a verification whose signature held (or that the online check
    answered), so it is evidence even when the code cannot be fully accepted: a red code on a gate
    with an untrusted clock, stale trust data or "issued in the future" is DENY HEALTH_RED beside
    the REVIEW reason, never a REVIEW that staff could pass (docs/credentials.md section 5)."""
    out: list[str] = [] if v.code == "VALID" else [v.code]
    out += warning_reasons(getattr(v, "warnings", ()))
    if v.kind in ("health", "dcc", None) and v.colour is not None and v.colour != "green":
        # yellow and red, and any colour we do not know: fail closed
        out.append(COLOUR_REASON.get(v.colour, "HEALTH_RED"))
    if v.code == "VALID" and v.kind == "residence" and rules.requires_residence and v.village not in rules.villages:
        out.append("RESIDENCE_OTHER_VILLAGE")
    return _unique(out)


def decide(verifications: Sequence[Any], measurement: Measurement | None,
           rules: CheckpointRules, *, early: bool = False) -> Decision:
    """`early`: a credential already refused the person before everything was shown; what was
    not waited for (the temperature, the residence code) is then not a reason.

    Returns every reason that applied, strictest first; PASS (`OK`) only when nothing did."""
    creds = [v for v in verifications if is_credential(v)]
    reasons: list[str] = []
    for v in creds:
        reasons.extend(credential_reasons(v, rules))
    # A broken code with a known prefix has no kind; it still counts as "a code was shown".
    health = [v for v in creds if v.kind == "health" or v.kind is None]
    if not health:
        reasons.append("NO_CODE")
    if rules.requires_residence and not early and not any(v.kind == "residence" for v in creds):
        reasons.append("RESIDENCE_MISSING")
    if measurement is None:
        if not early:
            reasons.append("TEMP_UNAVAILABLE")
    elif measurement.status is not TempStatus.OK:
        reasons.append(TEMP_REASON.get(measurement.status, "TEMP_UNAVAILABLE"))
    elif not is_finite_number(measurement.body_c) or not is_finite_number(rules.fever_threshold_c):
        reasons.append("TEMP_UNAVAILABLE")  # NaN compares False both ways: never let it reach `<`
    elif not measurement.body_c < rules.fever_threshold_c:  # type: ignore[operator]
        reasons.append("FEVER")
    reasons = _unique(reasons)
    if not reasons:
        return Decision(Verdict.PASS, ("OK",))
    verdict = strictest([_verdict_for(r) for r in reasons])
    # Strictest first, so the banner shows the reason that decided.
    reasons.sort(key=lambda r: -_verdict_for(r).rank)
    return Decision(verdict, tuple(reasons))


def early_deny(verifications: Iterable[Any], rules: CheckpointRules) -> bool:
    """True when a credential alone already refuses the person: no need to wait for the
    temperature, and staff see the red light at once."""
    return any(_verdict_for(r) is Verdict.DENY
               for v in verifications if is_credential(v) for r in credential_reasons(v, rules))


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]
