"""Screening: presence, median of k samples, spread, calibration, faults. Pure, stepped time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scanner.models import TempStatus, Verdict
from scanner.policy import CheckpointRules, decide
from scanner.reasons import REASONS
from scanner.screening import Screener, ScreeningRules, ambient_rate_c_per_min, calibrate


@dataclass(frozen=True)
class Ok:
    """A valid green health code, as the verifier reports it."""

    code: str = "VALID"
    kind: str = "health"
    colour: str = "green"
    warnings: tuple[str, ...] = ()

RULES = ScreeningRules(presence_delta_c=2.0, skin_min_c=28.0, skin_max_c=43.0, presence_hold_s=0.3,
                       samples=5, max_spread_c=0.3, offset_c=2.0, calibration_version="site-7")


def run(s: Screener, readings: list[tuple[float, float]], t0: float = 0.0, dt: float = 0.1):
    out = []
    for i, (o, a) in enumerate(readings):
        m = s.feed(t0 + i * dt, o, a)
        if m:
            out.append(m)
    return out


def test_nobody_in_front_measures_nothing() -> None:
    s = Screener(RULES)
    assert run(s, [(24.0, 24.0)] * 50) == []
    assert run(s, [(25.5, 24.0)] * 50) == []  # warmer than ambient but not skin (a hot coffee cup?)
    assert run(s, [(60.0, 24.0)] * 50) == []  # too hot for skin (heater)


def test_median_after_hold_and_calibrated_with_version() -> None:
    s = Screener(RULES)
    readings = [(24.0, 24.0)] * 3 + [(34.0, 24.0), (34.5, 24.0), (34.6, 24.0), (34.5, 24.0),
                                     (34.4, 24.0), (34.5, 24.0), (34.6, 24.0), (34.5, 24.0)]
    ms = run(s, readings)
    assert len(ms) == 1
    m = ms[0]
    assert m.status is TempStatus.OK
    # hold 0.3 s skips the first 3 present readings (t=0.3,0.4,0.5), samples from t=0.6
    assert m.samples == 5 and m.object_c == 34.5 and m.body_c == 36.5
    assert m.calibration_version == "site-7"


def test_one_measurement_per_presence() -> None:
    s = Screener(RULES)
    ms = run(s, [(34.5, 24.0)] * 100)
    assert len(ms) == 1
    ms = run(s, [(24.0, 24.0)] * 2 + [(34.5, 24.0)] * 20, t0=20.0)
    assert len(ms) == 1  # left and came back: a new person


def test_moving_person_is_unstable() -> None:
    s = Screener(RULES)
    ms = run(s, [(34.0, 24.0)] * 4 + [(33.0, 24.0), (34.5, 24.0), (33.2, 24.0), (34.4, 24.0), (33.5, 24.0)])
    assert ms[0].status is TempStatus.UNSTABLE and ms[0].body_c is None


def test_cold_night_calibration_adds_back_skin_cooling() -> None:
    rules = ScreeningRules(offset_c=1.0, ambient_coeff=0.15, reference_ambient_c=25.0)
    # forehead 33.6 °C on a 5 °C night: 33.6 + 1.0 + 0.15 * 20 = 37.6 -> a fever, not "normal"
    assert round(calibrate(33.6, 5.0, rules), 1) == 37.6
    assert round(calibrate(35.6, 25.0, rules), 1) == 36.6


def test_ambient_out_of_range_is_unreliable() -> None:
    s = Screener(ScreeningRules(samples=3, presence_hold_s=0, ambient_min_c=0.0))
    ms = run(s, [(30.0, -5.0)] * 5)
    assert ms[0].status is TempStatus.UNRELIABLE


def test_sensor_faults_mark_down_and_abort_sampling() -> None:
    s = Screener(RULES)
    run(s, [(34.5, 24.0)] * 5)  # sampling has started
    outs = [s.feed_error(1.0 + i * 0.1, "NACK") for i in range(RULES.fault_after)]
    assert outs[:-1] == [None] * (RULES.fault_after - 1)
    assert outs[-1] is not None and outs[-1].status is TempStatus.UNAVAILABLE
    assert s.down and s.last_error == "NACK"
    s.feed(5.0, 24.0, 24.0)
    assert not s.down  # a good read clears it


# -- ambient changing fast, frozen sensor, cold night --------------------------------------

RATE_RULES = ScreeningRules(samples=3, presence_hold_s=0.0, ambient_max_rate_c_per_min=1.0,
                            ambient_rate_window_s=20.0)


def idle_then_person(s: Screener, ambient_at, seconds: float = 20.0, dt: float = 0.05):
    """Nobody for `seconds` (ambient from `ambient_at(t)`, with LSB jitter), then a person."""
    t, i = 0.0, 0
    while t < seconds:
        a = ambient_at(t) + (0.02 if i % 2 else 0.0)
        assert s.feed(t, a, a) is None
        t, i = t + dt, i + 1
    out = []
    for _ in range(5):
        a = ambient_at(t)
        m = s.feed(t, 34.5 + (0.02 if i % 2 else 0.0), a)
        if m:
            out.append(m)
        t, i = t + dt, i + 1
    return out


def test_steady_ambient_measures_ok() -> None:
    (m,) = idle_then_person(Screener(RATE_RULES), lambda t: 22.0)
    assert m.status is TempStatus.OK


def test_ambient_changing_fast_is_unreliable_and_says_why() -> None:
    (m,) = idle_then_person(Screener(RATE_RULES), lambda t: 22.0 - 2.0 * t / 60)  # door to a cold night
    assert m.status is TempStatus.UNRELIABLE and m.body_c is not None
    assert "ambient changing 2.0 °C/min > 1.0" in m.detail
    d = decide([Ok()], m, CheckpointRules())
    assert d.verdict is Verdict.REVIEW and d.reasons == ("TEMP_UNRELIABLE",)


def test_ambient_step_inside_the_window_is_caught() -> None:
    (m,) = idle_then_person(Screener(RATE_RULES), lambda t: 22.0 if t < 12 else 24.0)  # heater switched on
    assert m.status is TempStatus.UNRELIABLE


def test_slow_drift_is_fine_and_no_judgement_without_history() -> None:
    (m,) = idle_then_person(Screener(RATE_RULES), lambda t: 22.0 + 0.5 * t / 60)
    assert m.status is TempStatus.OK
    s = Screener(RATE_RULES)  # only 5 s of history: too little to judge a rate
    (m,) = idle_then_person(s, lambda t: 22.0 - 6.0 * t / 60, seconds=5.0)
    assert s.ambient_rate() is None and m.status is TempStatus.OK


def test_ambient_rate_slope() -> None:
    assert ambient_rate_c_per_min([(0.0, 20.0), (30.0, 20.5), (60.0, 21.0)]) == pytest.approx(1.0)
    assert ambient_rate_c_per_min([(0.0, 20.0), (60.0, 18.5)]) == pytest.approx(1.5)
    assert ambient_rate_c_per_min([(5.0, 20.0), (5.0, 21.0)]) == 0.0


STUCK_RULES = ScreeningRules(samples=3, presence_hold_s=0.0, stuck_after_s=10.0)


def test_frozen_readings_mark_the_sensor_down_until_they_change() -> None:
    s = Screener(STUCK_RULES)
    for i in range(199):  # 9.95 s of identical readings: still believed
        assert s.feed(i * 0.05, 24.0, 24.0) is None
    assert not s.down
    s.feed(10.0, 24.0, 24.0)
    assert s.down and s.stuck and "readings frozen at object 24.0 °C, ambient 24.0 °C" in s.last_error
    assert "power-cycle the sensor" in s.last_error
    assert run(s, [(34.5, 24.0)] * 5, t0=10.1) != []  # it moved: believed again
    assert not s.down and not s.stuck


def test_jittering_sensor_is_never_stuck() -> None:
    s = Screener(STUCK_RULES)
    for i in range(2000):
        s.feed(i * 0.05, 24.0 + (0.02 if i % 3 == 0 else 0.0), 24.0)
    assert not s.down


def test_freeze_during_sampling_gives_unavailable_not_a_guess() -> None:
    s = Screener(ScreeningRules(samples=50, presence_hold_s=0.0, stuck_after_s=1.0))
    out = [s.feed(i * 0.1, 34.5, 24.0) for i in range(12)]
    frozen = [m for m in out if m is not None]
    assert len(frozen) == 1 and frozen[0].status is TempStatus.UNAVAILABLE and "frozen" in frozen[0].detail


def test_failure_after_a_finished_measurement_adds_no_second_one() -> None:
    s = Screener(RULES)
    assert len(run(s, [(34.5, 24.0)] * 10)) == 1  # measured; the person still stands there
    outs = [s.feed_error(2.0 + i * 0.1, "NACK") for i in range(RULES.fault_after + 2)]
    assert outs == [None] * (RULES.fault_after + 2) and s.down


COLD_NIGHT = ScreeningRules(samples=5, presence_hold_s=0.3, offset_c=1.5, ambient_coeff=0.15,
                            reference_ambient_c=25.0, calibration_version="toll-gate-2")


def test_cold_night_fever_is_caught_through_screening_and_policy() -> None:
    """Ambient 5 °C, forehead 33.5 °C, body 38.0 °C after calibration: FEVER, not 'normal'."""
    s = Screener(COLD_NIGHT)
    (m,) = run(s, [(5.0, 5.0)] * 5 + [(33.5, 5.0)] * 12)
    assert m.status is TempStatus.OK and (m.object_c, m.ambient_c) == (33.5, 5.0)
    assert m.body_c == 38.0 and m.calibration_version == "toll-gate-2"
    d = decide([Ok()], m, CheckpointRules(fever_threshold_c=37.3))
    assert d.verdict is Verdict.DENY and d.reasons == ("FEVER",)
    # the raw forehead reading alone would have waved this fever through
    raw = Screener(ScreeningRules(samples=5, presence_hold_s=0.3))
    (m_raw,) = run(raw, [(5.0, 5.0)] * 5 + [(33.5, 5.0)] * 12)
    assert decide([Ok()], m_raw, CheckpointRules()).verdict is Verdict.PASS
    # and the same mapping leaves a healthy person indoors alone
    (m_in,) = run(Screener(COLD_NIGHT), [(25.0, 25.0)] * 5 + [(35.3, 25.0)] * 12)
    assert m_in.body_c == 36.8 and decide([Ok()], m_in, CheckpointRules()).verdict is Verdict.PASS


def test_hold_still_is_said_in_chinese_and_english() -> None:
    zh, en = REASONS["TEMP_UNSTABLE"]
    assert "保持不动" in zh and "hold still" in en
    zh, en = REASONS["TEMP_UNRELIABLE"]
    assert "人工测温" in zh and "changing fast" in en
