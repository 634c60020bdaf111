"""Screening: presence, median of k samples, spread, calibration, faults. Pure, stepped time."""

from __future__ import annotations

from scanner.models import TempStatus
from scanner.screening import Screener, ScreeningRules, calibrate

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
