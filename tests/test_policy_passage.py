"""The decision table (docs/credentials.md section 5) and the passage state machine, pure."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scanner import policy
from scanner.models import Measurement, TempStatus, Verdict
from scanner.passage import Passage
from scanner.policy import ALL_REASONS, CheckpointRules, decide
from scanner.reasons import REASONS, describe


@dataclass(frozen=True)
class V:
    """The attributes of a credentials.Verification that the policy reads."""

    code: str = "VALID"
    kind: str | None = "health"
    colour: str | None = "green"
    village: str | None = None
    warnings: tuple[str, ...] = ()


OK_TEMP = Measurement(TempStatus.OK, body_c=36.6, object_c=34.6, ambient_c=22.0)
HWY = CheckpointRules("highway_exit", frozenset(), 37.3)
GATE = CheckpointRules("village_gate", frozenset({"330381001001"}), 37.3)
RES = V(kind="residence", colour=None, village="330381001001")


def test_green_and_normal_passes() -> None:
    d = decide([V()], OK_TEMP, HWY)
    assert d.verdict is Verdict.PASS and d.reasons == ("OK",)


@pytest.mark.parametrize("colour,reason", [("red", "HEALTH_RED"), ("yellow", "HEALTH_YELLOW")])
def test_colours_deny(colour: str, reason: str) -> None:
    d = decide([V(colour=colour)], OK_TEMP, HWY)
    assert d.verdict is Verdict.DENY and d.reasons == (reason,)


@pytest.mark.parametrize("code", sorted(policy.DENY_CODES))
def test_bad_credentials_deny(code: str) -> None:
    d = decide([V(code=code)], OK_TEMP, HWY)
    assert d.verdict is Verdict.DENY and code in d.reasons


@pytest.mark.parametrize("code", sorted(policy.REVIEW_CODES))
def test_uncertain_credentials_review(code: str) -> None:
    d = decide([V(code=code)], OK_TEMP, HWY)
    assert d.verdict is Verdict.REVIEW and code in d.reasons


def test_fever_at_threshold_is_deny() -> None:
    at = Measurement(TempStatus.OK, body_c=37.3)
    below = Measurement(TempStatus.OK, body_c=37.2)
    assert decide([V()], at, HWY).reasons == ("FEVER",)
    assert decide([V()], below, HWY).verdict is Verdict.PASS


@pytest.mark.parametrize("m,reason", [
    (None, "TEMP_UNAVAILABLE"),
    (Measurement(TempStatus.UNAVAILABLE), "TEMP_UNAVAILABLE"),
    (Measurement(TempStatus.UNSTABLE, object_c=34.0), "TEMP_UNSTABLE"),
    (Measurement(TempStatus.UNRELIABLE, body_c=36.5), "TEMP_UNRELIABLE"),
    (Measurement(TempStatus.UNRELIABLE, body_c=38.5), "TEMP_UNRELIABLE"),  # REVIEW: staff re-measure
])
def test_missing_or_bad_temperature_never_passes(m: Measurement | None, reason: str) -> None:
    d = decide([V()], m, HWY)
    assert d.verdict is Verdict.REVIEW and d.reasons == (reason,)


def test_no_code_and_not_a_credential() -> None:
    assert decide([], OK_TEMP, HWY).reasons == ("NO_CODE",)
    junk = V(code="FORMAT_UNSUPPORTED", kind=None, colour=None)
    d = decide([junk], OK_TEMP, HWY)
    assert d.verdict is Verdict.REVIEW and d.reasons == ("NO_CODE",)


def test_village_gate_needs_residence_of_this_village() -> None:
    assert decide([V(), RES], OK_TEMP, GATE).verdict is Verdict.PASS
    assert decide([V()], OK_TEMP, GATE).reasons == ("RESIDENCE_MISSING",)
    other = V(kind="residence", colour=None, village="330381009009")
    assert decide([V(), other], OK_TEMP, GATE).reasons == ("RESIDENCE_OTHER_VILLAGE",)
    # a highway exit does not care about residence codes
    assert decide([V(), other], OK_TEMP, HWY).verdict is Verdict.PASS


def test_strictest_wins_and_all_reasons_kept() -> None:
    d = decide([V(colour="red"), V(kind="residence", colour=None, village="x")],
               Measurement(TempStatus.OK, body_c=38.0), GATE)
    assert d.verdict is Verdict.DENY
    assert set(d.reasons) == {"HEALTH_RED", "FEVER", "RESIDENCE_OTHER_VILLAGE"}
    assert d.reasons[-1] == "RESIDENCE_OTHER_VILLAGE"  # DENY reasons first
    d = decide([V(code="UNKNOWN_SIGNER")], None, HWY)
    assert d.verdict is Verdict.REVIEW and set(d.reasons) == {"UNKNOWN_SIGNER", "TEMP_UNAVAILABLE"}


def test_expired_trust_data_turns_green_into_review() -> None:
    d = decide([V(warnings=("TRUST_DATA_EXPIRED",))], OK_TEMP, HWY)
    assert d.verdict is Verdict.REVIEW and d.reasons == ("TRUST_DATA_EXPIRED",)


def test_every_reason_has_chinese_and_english() -> None:
    for r in ALL_REASONS:
        zh, en = REASONS[r]
        assert zh and en and zh != en
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh)
        assert describe(r).endswith(f"({r})")


# -- passage ------------------------------------------------------------------------------

def test_code_then_temperature_and_the_reverse() -> None:
    p = Passage(HWY, window_s=10, cooldown_s=3)
    out, acc = p.on_code(0.0, "a", V())
    assert out is None and acc and p.needs() == ["HOLD_WRIST"]
    out, _ = p.on_measurement(1.0, OK_TEMP)
    assert out and out.decision.verdict is Verdict.PASS and not out.timed_out
    p = Passage(HWY, window_s=10, cooldown_s=3)
    out, _ = p.on_measurement(0.0, OK_TEMP)
    assert out is None and p.needs() == ["SHOW_CODE"]
    out, _ = p.on_code(2.0, "b", V())
    assert out and out.decision.verdict is Verdict.PASS


def test_bad_credential_decides_at_once() -> None:
    p = Passage(HWY)
    out, _ = p.on_code(0.0, "a", V(code="EXPIRED"))
    assert out and out.decision.verdict is Verdict.DENY and out.measurement is None
    assert out.decision.reasons == ("EXPIRED",)  # the temperature was never waited for


def test_timeout_ends_half_passage_as_review() -> None:
    p = Passage(HWY, window_s=10)
    p.on_code(0.0, "a", V())
    assert p.tick(9.9) is None
    out = p.tick(10.0)
    assert out and out.timed_out and out.decision.reasons == ("TEMP_UNAVAILABLE",)
    p.on_measurement(20.0, OK_TEMP)
    out = p.tick(30.0)
    assert out and out.decision.reasons == ("NO_CODE",)


def test_not_a_credential_keeps_waiting_then_no_code() -> None:
    p = Passage(HWY, window_s=5)
    out, acc = p.on_code(0.0, "junk", V(code="FORMAT_UNSUPPORTED", kind=None, colour=None))
    assert out is None and acc and p.active
    out, _ = p.on_code(1.0, "real", V())
    assert out is None  # still needs the temperature
    out, _ = p.on_measurement(2.0, OK_TEMP)
    assert out and out.decision.verdict is Verdict.PASS


def test_cooldown_counts_one_person_once() -> None:
    p = Passage(HWY, window_s=10, cooldown_s=3)
    p.on_code(0.0, "a", V())
    out, _ = p.on_measurement(0.5, OK_TEMP)
    assert out
    assert p.on_code(1.0, "a", V()) == (None, False)  # same code still in view
    assert p.on_measurement(1.5, OK_TEMP) == (None, False)  # same person still at the sensor
    assert not p.active
    _, acc = p.on_code(4.0, "a", V())  # after the cooldown the code counts again
    assert acc
    # a different person's code inside the cooldown starts a new passage at once
    p2 = Passage(HWY, window_s=10, cooldown_s=3)
    p2.on_code(0.0, "a", V())
    p2.on_measurement(0.5, OK_TEMP)
    _, acc = p2.on_code(1.0, "b", V())
    assert acc and p2.active


def test_village_gate_waits_for_both_codes() -> None:
    p = Passage(GATE, window_s=10)
    p.on_code(0.0, "h", V())
    out, _ = p.on_measurement(0.5, OK_TEMP)
    assert out is None and p.needs() == ["SHOW_RESIDENCE"]
    out, _ = p.on_code(1.0, "r", RES)
    assert out and out.decision.verdict is Verdict.PASS
    assert len(out.verifications) == 2
