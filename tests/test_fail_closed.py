"""Issue 10, "Never a wrong green light": each input that once led to a wrong PASS, a wrong record
or a lane that looked alive while it was not, through the real lane stepped on a fake clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from steplane import StepLane

from scanner import policy
from scanner.credentials.bundles import Policy
from scanner.credentials.state import TrustState
from scanner.credentials.status import StatusIndex
from scanner.models import Measurement, TempStatus
from scanner.policy import CheckpointRules
from scanner.watchdog import LaneWatchdog

VILLAGE = "330381001001"


def person(lane: StepLane, *payloads: str, body_c: float | None = 36.5, seconds: float = 1.0) -> None:
    lane.codes(*payloads)
    lane.skin(body_c)
    lane.run(seconds)
    lane.codes()
    lane.skin(None)


# -- item 1 (the policy's side): NaN never passes ------------------------------------------------
@pytest.mark.parametrize("body, threshold", [(math.nan, 37.3), (39.5, math.nan), (math.inf, 37.3),
                                             (-math.inf, 37.3), (36.5, math.inf)])
def test_a_non_finite_temperature_or_threshold_is_never_pass(body: float, threshold: float) -> None:
    green = _v("VALID", colour="green")
    d = policy.decide([green], Measurement(TempStatus.OK, body_c=body), CheckpointRules(fever_threshold_c=threshold))
    assert d.verdict.value != "PASS"


def test_a_nan_sensor_reading_gives_no_measurement_and_no_pass(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust) as lane:
        person(lane, codes.hc("green"), body_c=math.nan, seconds=3.0)
        rows = lane.records()
        assert [r["verdict"] for r in rows] == ["REVIEW"] and rows[0]["reasons"] == ["TEMP_UNAVAILABLE"]


# -- item 3: a colour from a verified signature is evidence ---------------------------------------
@pytest.mark.parametrize("colour, reason", [("red", "HEALTH_RED"), ("yellow", "HEALTH_YELLOW")])
def test_red_or_yellow_on_an_untrusted_clock_is_deny_with_both_reasons(tmp_path: Path, trust: Any, codes: Any,
                                                                       colour: str, reason: str) -> None:
    with StepLane(tmp_path, trust, clock_trusted=False) as lane:
        person(lane, codes.hc(colour), body_c=None, seconds=0.5)
        rows = lane.records()
        assert len(rows) == 1
        assert rows[0]["verdict"] == "DENY" and rows[0]["reasons"] == [reason, "CLOCK_UNTRUSTED"]
        assert rows[0]["colour"] == colour
        snap = lane.lane.monitor.snapshot()
        assert snap["pending_reviews"] == []  # no PASS button for it
        assert snap["counts"]["red_codes"] == (colour == "red")
        assert ("DENY" in [p for _, p in lane.indicators.shown]) and "PASS" not in [p for _, p in lane.indicators.shown]


def test_red_code_with_expired_trust_data_or_issued_in_the_future_is_deny(tmp_path: Path, trust: Any,
                                                                          codes: Any) -> None:
    now = int(datetime.now(UTC).timestamp())
    expired = TrustState(trust, StatusIndex(version=4, generated_at=now - 3 * 86400, expires_at=now - 60))
    with StepLane(tmp_path / "a", expired) as lane:
        person(lane, codes.hc("red"), body_c=None, seconds=0.5)
        r = lane.records()[0]
        assert r["verdict"] == "DENY" and r["reasons"][0] == "HEALTH_RED" and "TRUST_DATA_EXPIRED" in r["reasons"]
    with StepLane(tmp_path / "b", trust) as lane:
        person(lane, codes.hc("red", age_h=-2), body_c=None, seconds=0.5)  # iat two hours ahead of us
        r = lane.records()[0]
        assert r["verdict"] == "DENY" and r["reasons"] == ["HEALTH_RED", "NOT_YET_VALID"]


def test_not_yet_valid_still_consults_the_status_list(tmp_path: Path, trust: Any, codes: Any) -> None:
    future = codes.hc("green", age_h=-2)
    v = TrustState(trust).check(future, _clock(), _cfg(tmp_path))
    assert v.code == "NOT_YET_VALID" and v.token_hash
    revoked = TrustState(trust, StatusIndex.from_packed(revoked=v.token_hash))
    assert revoked.check(future, _clock(), _cfg(tmp_path)).code == "REVOKED"
    red_now = TrustState(trust, StatusIndex.from_packed(subjects=v.subject_hash or b"", colours=b"\x02"))
    v2 = red_now.check(future, _clock(), _cfg(tmp_path))
    assert v2.code == "NOT_YET_VALID" and v2.colour == "red"
    assert policy.decide([v2], None, CheckpointRules(), early=True).verdict.value == "DENY"


# -- item 4: one person, one record ------------------------------------------------------------------
def test_red_code_beside_a_residence_code_in_one_frame_is_one_record(tmp_path: Path, trust: Any,
                                                                     codes: Any) -> None:
    with StepLane(tmp_path, trust, kind="village_gate", cooldown=3.0, window=10.0) as lane:
        person(lane, codes.hc("red"), codes.ajm(VILLAGE), body_c=None, seconds=0.5)
        lane.run(12.0)  # well past the pairing window: no phantom passage may end
        rows = lane.records()
        assert len(rows) == 1
        assert rows[0]["verdict"] == "DENY" and rows[0]["reasons"] == ["HEALTH_RED"]  # not RESIDENCE_MISSING
        assert {c["kind"] for c in rows[0]["credentials"]} == {"health", "residence"}


def test_residence_code_two_seconds_after_an_early_deny_belongs_to_it(tmp_path: Path, trust: Any,
                                                                      codes: Any) -> None:
    with StepLane(tmp_path, trust, kind="village_gate", cooldown=3.0, window=10.0) as lane:
        person(lane, codes.hc("red"), body_c=None, seconds=2.0)
        person(lane, codes.ajm(VILLAGE), body_c=36.5, seconds=0.5)  # same person, 2 s later, at the sensor too
        lane.run(12.0)
        assert [r["verdict"] for r in lane.records()] == ["DENY"]
        assert lane.lane.passage.absorbed == 1
        # the next person's codes are theirs: a new passage, not swallowed by a phantom one
        person(lane, codes.hc("green"), codes.ajm(VILLAGE), body_c=36.5, seconds=2.0)
        rows = lane.records()
        assert [r["verdict"] for r in rows] == ["DENY", "PASS"]


def test_a_new_health_code_within_the_cooldown_starts_a_new_passage(tmp_path: Path, trust: Any,
                                                                    codes: Any) -> None:
    with StepLane(tmp_path, trust, cooldown=3.0, window=2.0) as lane:
        person(lane, codes.hc("red"), body_c=None, seconds=0.5)
        person(lane, codes.hc("green"), body_c=36.5, seconds=1.0)
        assert [r["verdict"] for r in lane.records()] == ["DENY", "PASS"]


# -- item 5: the override passes exactly the REVIEW it names -----------------------------------------
def _review_then_deny(lane: StepLane, codes: Any) -> tuple[str, str]:
    person(lane, codes.hc("green"), body_c=None, seconds=3.0)  # no temperature: REVIEW
    person(lane, codes.hc("red"), body_c=None, seconds=0.5)  # the next person: DENY
    review, deny = lane.records()
    assert review["verdict"] == "REVIEW" and deny["verdict"] == "DENY"
    return review["record_id"], deny["record_id"]


def _override(lane: StepLane, *args: Any) -> dict[str, Any]:
    """request_override runs in the scan loop: queue it, step once, read the reply."""
    import threading

    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(lane.lane.request_override(*args, timeout_s=2.0)))
    t.start()
    while t.is_alive():
        lane.lane.step()
        t.join(timeout=0.01)
    return out


def _button(lane: StepLane) -> dict[str, Any]:
    import threading

    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(lane.lane.request_button_override(timeout_s=2.0)))
    t.start()
    while t.is_alive():
        lane.lane.step()
        t.join(timeout=0.01)
    return out


def test_the_button_after_the_next_persons_deny_passes_nobody(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust) as lane:
        _review_then_deny(lane, codes)
        before = len(lane.records())
        res = _button(lane)
        assert res["ok"] is False
        assert len(lane.records()) == before
        assert lane.factory.pin(23).states[-1].state is False and all(not s.state for s in lane.factory.pin(23).states)


def test_an_override_must_name_the_review(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust) as lane:
        review_id, deny_id = _review_then_deny(lane, codes)
        assert _override(lane, "PASS", "S042", None)["ok"] is False
        assert _override(lane, "PASS", "S042", "")["ok"] is False
        assert _override(lane, "PASS", "S042", deny_id)["ok"] is False  # a DENY is never turned into PASS
        assert _override(lane, "PASS", "S042\nevent=forged", review_id)["ok"] is False  # no such staff id
        assert _override(lane, "PASS", "", review_id)["ok"] is False
        res = _override(lane, "PASS", "S042", review_id)
        assert res["ok"] is True
        rows = lane.records()
        assert rows[-1]["override_of"] == review_id and rows[-1]["verdict"] == "PASS"
        assert rows[-1]["override_by"] == "S042"
        # the lane had moved on (the next person was decided): the gate was not opened for anybody
        assert "PASS" not in [p for _, p in lane.indicators.shown]
        assert _override(lane, "PASS", "S042", review_id)["ok"] is False  # once only


def test_the_button_passes_the_review_showing_now_within_the_window(tmp_path: Path, trust: Any,
                                                                    codes: Any) -> None:
    with StepLane(tmp_path, trust, override_window=10.0) as lane:
        person(lane, codes.hc("green"), body_c=None, seconds=3.0)
        review = lane.records()[0]
        assert review["verdict"] == "REVIEW"
        res = _button(lane)
        assert res["ok"] is True
        rows = lane.records()
        assert rows[-1]["override_of"] == review["record_id"] and rows[-1]["override_by"] == "button"
        assert lane.indicators.shown[-1][1] == "PASS"
        assert any(s.state for s in lane.factory.pin(23).states)  # the relay opened for this person


def test_pending_reviews_expire_and_the_button_then_does_nothing(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust, override_window=10.0) as lane:
        person(lane, codes.hc("green"), body_c=None, seconds=3.0)
        review_id = lane.records()[0]["record_id"]
        assert [p["record_id"] for p in lane.lane.monitor.snapshot()["pending_reviews"]] == [review_id]
        lane.run(11.0)
        assert lane.lane.monitor.snapshot()["pending_reviews"] == []
        assert _button(lane)["ok"] is False
        assert _override(lane, "PASS", "S042", review_id)["ok"] is False
        assert len(lane.records()) == 1


def test_a_late_command_is_dropped_not_run_late(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust, override_window=60.0) as lane:
        person(lane, codes.hc("green"), body_c=None, seconds=3.0)
        res = lane.lane.request_button_override(timeout_s=0.05)  # nobody steps the loop: times out
        assert res["ok"] is False
        lane.mono.t += 1.0
        lane.run(0.1)  # the loop runs again: the stale command must not act now
        assert len(lane.records()) == 1


# -- item 6: trust data the config uses must be there ------------------------------------------------
def test_sync_on_and_no_status_list_is_review_trust_data_missing(tmp_path: Path, trust: Any, codes: Any) -> None:
    now = int(datetime.now(UTC).timestamp())
    fresh = {"trust": now}  # the server confirmed the trust list just now
    with StepLane(tmp_path / "a", TrustState(trust, confirmed_at=fresh), sync=True) as lane:
        person(lane, codes.hc("green"), body_c=36.5, seconds=1.0)
        r = lane.records()[0]
        assert r["verdict"] == "REVIEW" and r["reasons"] == ["TRUST_DATA_MISSING"]
    state = TrustState(trust, StatusIndex(version=1, generated_at=now, expires_at=now + 86400),
                       Policy(1, now, now + 86400), confirmed_at=fresh)
    with StepLane(tmp_path / "b", state, sync=True) as lane:
        person(lane, codes.hc("green"), body_c=36.5, seconds=1.0)
        assert lane.records()[0]["verdict"] == "PASS"
    with StepLane(tmp_path / "c", TrustState(trust, policy=Policy(1, now, now + 86400), confirmed_at=fresh),
                  sync=True) as lane:
        person(lane, codes.hc("green"), body_c=36.5, seconds=1.0)
        assert lane.records()[0]["reasons"] == ["TRUST_DATA_MISSING"]


def test_trust_data_missing_has_chinese_and_english_text() -> None:
    from scanner.reasons import REASONS

    for code in ("TRUST_DATA_MISSING", "TRUST_DATA_STALE"):
        zh, en = REASONS[code]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh) and en.isascii()


# -- item 8: a stalled step shows FAULT from another thread ------------------------------------------
def test_a_stalled_commit_shows_fault_from_the_watchdog(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust, stall_s=5.0) as lane:
        lane.run(0.2)
        wd = LaneWatchdog(lane.lane, lane.lane.stop_event, stall_s=5.0, monotonic=lane.mono)
        lane.lane.step_started = lane.mono.t  # a step began and is stuck inside the commit
        lane.lane.phase = "commit"
        assert wd.check() is False
        lane.mono.t += 6.0
        assert wd.check() is True
        assert lane.indicators.shown[-1][1] == "FAULT"
        snap = lane.lane.monitor.snapshot()
        assert snap["state"] == "FAULT" and any("SD" in f and "存储卡" in f for f in snap["faults"])
        lane.lane.step_started = None
        assert wd.check() is False


def test_a_verdict_whose_commit_stalled_is_not_shown(tmp_path: Path, trust: Any, codes: Any) -> None:
    with StepLane(tmp_path, trust, stall_s=5.0) as lane:
        lane.store.mode = "slow"
        person(lane, codes.hc("green"), body_c=36.5, seconds=1.0)
        assert [r["verdict"] for r in lane.records()] == ["PASS"]  # recorded ...
        shown = [p for _, p in lane.indicators.shown]
        assert "PASS" not in shown and "FAULT" in shown  # ... but nobody saw a green light
        assert not any(s.state for s in lane.factory.pin(23).states)  # nor got the relay
        assert lane.lane.stats.verdicts_withheld == 1


def test_a_hung_step_in_the_running_daemon_shows_fault_and_starves_systemds_watchdog(
        tmp_path: Path, trust: Any) -> None:
    """The real loop and the real watchdog thread: a thermometer read that never returns."""
    import threading
    import time

    from waiting import wait_until

    pings: list[float] = []
    statuses: list[str] = []

    class Recorder:
        def send(self, **kw: Any) -> None:
            if "watchdog" in kw:
                pings.append(time.monotonic())
            if "status" in kw:
                statuses.append(str(kw["status"]))

    with StepLane(tmp_path, trust, stall_s=0.5) as lane:
        lane.lane.mono = time.monotonic
        lane.lane.watchdog._mono = time.monotonic
        lane.lane.watchdog.stall_s = 0.5
        lane.lane.notifier = Recorder()  # type: ignore[assignment]
        release = threading.Event()
        lane.thermo.object_temperature = lambda: (release.wait(30), 30.0)[1]  # type: ignore[method-assign]
        t = threading.Thread(target=lane.lane.run, daemon=True)
        t.start()
        try:
            assert wait_until(lambda: lane.indicators.shown and lane.indicators.shown[-1][1] == "FAULT")
            assert wait_until(lambda: lane.lane.monitor.snapshot()["state"] == "FAULT")
            snap = lane.lane.monitor.snapshot()
            assert any("测温" in f and "thermometer" in f for f in snap["faults"])
            assert any(s.startswith("FAULT:") for s in statuses)
            stalled_at = time.monotonic()
            assert wait_until(lambda: time.monotonic() - stalled_at > 1.5)
            assert not [p for p in pings if p > stalled_at]  # systemd's watchdog is not fed
        finally:
            release.set()
            lane.lane.stop_event.set()
            t.join(timeout=5)
        assert lane.lane.watchdog.stalls >= 1


# -- helpers --------------------------------------------------------------------------------------
def _v(code: str, **kw: Any) -> Any:
    from scanner.credentials.verify import Verification

    return Verification(code, kind=kw.pop("kind", "health"), **kw)


def _clock() -> Any:
    from steplane import FakeClock

    return FakeClock(True)


def _cfg(tmp: Path) -> Any:
    from steplane import step_config

    return step_config(tmp)


# -- found by the fresh attack: an uncalibrated real gate never finds a fever -----------------------
def test_an_uncalibrated_real_gate_reviews_instead_of_passing(tmp_path: Path) -> None:
    from dataclasses import replace as dc_replace

    from scanner.config import parse_config
    from scanner.preflight import preflight
    from scanner.screening import Screener, ScreeningRules

    cfg = parse_config('[checkpoint]\nmode = "real"\nid = "T-GATE-1"\ndevice_id = "t-pi-1"\n',
                       str(tmp_path / "gate.toml"))
    rules = ScreeningRules.from_config(dc_replace(cfg.thermometer, presence_hold_s=0.0, samples=3), real_lane=True)
    sc = Screener(rules)
    m = None
    for i in range(5):  # a wrist at 35.0 °C raw: a fever an uncalibrated mapping would never see
        m = sc.feed(i * 0.05, 35.0, 22.0) or m
    assert m is not None and m.status is TempStatus.UNRELIABLE and "calibrate" in m.detail
    assert policy.decide([_v("VALID", colour="green")], m, CheckpointRules()).reasons == ("TEMP_UNRELIABLE",)
    assert any("calibration_version" in w for w in preflight(cfg).warnings)
    calibrated = dc_replace(rules, calibration_version="2026-11-29 site fit")
    sc = Screener(calibrated)
    m = None
    for i in range(5):
        m = sc.feed(i * 0.05, 35.0, 22.0) or m
    assert m is not None and m.status is TempStatus.OK


def test_a_code_refused_for_fever_and_shown_again_is_review_not_a_fresh_pass(tmp_path: Path, trust: Any,
                                                                              codes: Any) -> None:
    """Found by the fresh attack: a cooler retake seconds after DENY FEVER used to PASS."""
    code = codes.hc("green")
    with StepLane(tmp_path, trust, cooldown=3.0, window=2.0) as lane:
        person(lane, code, body_c=38.6, seconds=1.0)
        lane.run(3.0)  # past the cooldown: the same code counts as shown again
        person(lane, code, body_c=37.0, seconds=3.0)
        rows = lane.records()
        assert [r["verdict"] for r in rows] == ["DENY", "REVIEW"]
        assert rows[0]["reasons"] == ["FEVER"] and rows[1]["reasons"] == ["RECENTLY_DENIED"]
        assert rows[0]["token_hash"] == rows[1]["token_hash"]
        lane.run(2.0)  # the person leaves (the camera sees the code go)
        lane.mono.t += lane.cfg.policy.recheck_after_deny_s  # much later: judged afresh
        person(lane, code, body_c=36.8, seconds=3.0)
        assert lane.records()[-1]["verdict"] == "PASS", lane.records()[-1]["reasons"]


def test_bootstrap_without_a_replay_path_never_writes_into_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config with bootstrap and no replay_path once wrote its frames into (and cleared every PNG
    of) whatever folder the command ran in."""
    from scanner.config import parse_config
    from scanner.hardware import replay_dir
    from scanner.simulation import bootstrap

    work = tmp_path / "somebodys-folder"
    work.mkdir()
    (work / "photo.png").write_bytes(b"not ours")
    monkeypatch.chdir(work)
    cfg = parse_config('[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n'
                       f'[store]\npath = "{tmp_path / "data" / "outbox.db"}"\n'
                       f'[trust]\ntrust_list = "{tmp_path / "keys" / "trust-list.cose"}"\n'
                       f'anchor_cert = "{tmp_path / "keys" / "anchor.crt"}"\n', str(work / "sim.toml"))
    bootstrap(cfg)
    assert sorted(p.name for p in work.iterdir()) == ["photo.png"]
    assert replay_dir(cfg) == tmp_path / "data" / "sim-frames" and any(replay_dir(cfg).glob("*.png"))
