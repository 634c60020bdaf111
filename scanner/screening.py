"""Thermometer samples -> one Measurement per person. Pure: values in, values out, the caller
passes monotonic times; no I/O, so every threshold is testable without a sensor.

Why this shape: a raw MLX90614 object reading is not a body temperature. Nobody is measured
until a person is really in front (object well above ambient and in a skin range, held for a
moment); then k samples are taken and the median reported, refused when they spread too wide
(the person moved), and mapped to a body estimate by the site's calibration before the policy
compares it with the fever threshold (docs/hardware.md section 3).

Two things no single read can show are watched across reads: the ambient (sensor die)
temperature changing fast (sun on the housing, a heater, a door to the cold) makes readings
UNRELIABLE, and readings that stay bit-identical for too long mean a frozen sensor or bus, which
counts as the sensor being down (a real sensor always jitters by a few 0.02 K steps).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from scanner.models import Measurement, TempStatus

UNCALIBRATED = "uncalibrated"  # [thermometer] calibration_version until `calibrate` writes one


@dataclass(frozen=True)
class ScreeningRules:
    presence_delta_c: float = 2.0
    skin_min_c: float = 28.0
    skin_max_c: float = 43.0
    presence_hold_s: float = 0.3
    samples: int = 7
    max_spread_c: float = 0.3
    offset_c: float = 0.0
    ambient_coeff: float = 0.0
    reference_ambient_c: float = 25.0
    calibration_version: str = "uncalibrated"
    ambient_min_c: float = -10.0
    ambient_max_c: float = 45.0
    ambient_max_rate_c_per_min: float = 1.0
    ambient_rate_window_s: float = 60.0
    stuck_after_s: float = 120.0
    fault_after: int = 5
    #: A real gate must be calibrated: a raw wrist or forehead reading runs degrees below the body
    #: temperature, so an uncalibrated mapping would wave every fever through (UNRELIABLE instead).
    require_calibration: bool = False

    @classmethod
    def from_config(cls, th: object, *, real_lane: bool = False) -> ScreeningRules:
        values = {f: getattr(th, f) for f in cls.__dataclass_fields__ if f != "require_calibration"}
        return cls(**values, require_calibration=real_lane)


def calibrate(object_c: float, ambient_c: float, rules: ScreeningRules) -> float:
    """Body estimate = object + offset + coeff * (reference ambient - ambient).

    Skin cools in the cold (forehead reads several degrees low on a 5 °C night at a toll
    gate); the ambient term adds that back so a fever is not waved through."""
    return object_c + rules.offset_c + rules.ambient_coeff * (rules.reference_ambient_c - ambient_c)


def ambient_rate_c_per_min(history: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, ambient) in °C per minute: robust to the sensor's LSB jitter,
    and a step (a door opening) anywhere in the window still shows as a steep slope."""
    n = len(history)
    mean_t = sum(t for t, _ in history) / n
    mean_a = sum(a for _, a in history) / n
    var = sum((t - mean_t) ** 2 for t, _ in history)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (a - mean_a) for t, a in history)
    return abs(cov / var) * 60.0


class Screener:
    """Feed it every reading; it returns a Measurement when one person's measurement is done.

    States: idle (nobody) -> arming (present, waiting presence_hold_s) -> sampling -> done;
    after a measurement the person must leave (presence lost) before the next one starts, so
    one wrist held for ten seconds is one measurement, not twenty.

    `down` (with `last_error`) is what the lane shows as FAULT: `fault_after` failed reads in a
    row, or readings frozen for `stuck_after_s`. Either clears on the next good, changing read."""

    def __init__(self, rules: ScreeningRules) -> None:
        self.rules = rules
        self._armed_at: float | None = None
        self._samples: list[tuple[float, float]] = []
        self._await_leave = False
        self._errors = 0
        self.down = False
        self.last_error = ""
        self.stuck = False
        self._last_pair: tuple[float, float] | None = None
        self._same_since = 0.0
        self._ambient: deque[tuple[float, float]] = deque()
        # at most ~240 points per window: bounded memory and cost at any poll rate
        self._ambient_step_s = rules.ambient_rate_window_s / 240

    def present(self, object_c: float, ambient_c: float) -> bool:
        r = self.rules
        return (object_c - ambient_c >= r.presence_delta_c) and r.skin_min_c <= object_c <= r.skin_max_c

    def feed(self, t: float, object_c: float, ambient_c: float) -> Measurement | None:
        self._errors = 0
        self._track_ambient(t, ambient_c)
        frozen = self._frozen(t, object_c, ambient_c)
        if frozen:
            self.down = True
            self.last_error = frozen
            return self._abort(t, frozen)
        self.down = False
        if not self.present(object_c, ambient_c):
            self._armed_at = None
            self._samples.clear()
            self._await_leave = False
            return None
        if self._await_leave:
            return None
        if self._armed_at is None:
            self._armed_at = t
        if t - self._armed_at < self.rules.presence_hold_s:
            return None
        self._samples.append((object_c, ambient_c))
        if len(self._samples) < self.rules.samples:
            return None
        m = self._finish(t)
        self._samples.clear()
        self._await_leave = True
        return m

    def feed_error(self, t: float, message: str) -> Measurement | None:
        """A failed read. After `fault_after` in a row the sensor is down; a person who was
        being sampled gets TEMP_UNAVAILABLE instead of a guess."""
        self._errors += 1
        self.last_error = message
        if self._errors >= self.rules.fault_after:
            self.down = True
            return self._abort(t, message)
        return None

    def ambient_rate(self) -> float | None:
        """°C per minute over the window, or None until half a window of history exists."""
        h = self._ambient
        if len(h) < 3 or h[-1][0] - h[0][0] < self.rules.ambient_rate_window_s / 2:
            return None
        return ambient_rate_c_per_min(list(h))

    def _track_ambient(self, t: float, ambient_c: float) -> None:
        h = self._ambient
        if not h or t - h[-1][0] >= self._ambient_step_s:
            h.append((t, ambient_c))
        while h and t - h[0][0] > self.rules.ambient_rate_window_s:
            h.popleft()

    def _frozen(self, t: float, object_c: float, ambient_c: float) -> str:
        pair = (object_c, ambient_c)
        if pair != self._last_pair:
            self._last_pair, self._same_since, self.stuck = pair, t, False
            return ""
        held_s = t - self._same_since
        self.stuck = held_s >= self.rules.stuck_after_s
        if not self.stuck:
            return ""
        return (f"readings frozen at object {object_c} °C, ambient {ambient_c} °C for {held_s:.0f} s: "
                "sensor or bus stuck; power-cycle the sensor, replace it if this persists")

    def _abort(self, t: float, message: str) -> Measurement | None:
        """The sensor failed: a person being sampled gets TEMP_UNAVAILABLE (never a guess); one
        already measured and still standing there gets nothing more."""
        sampling = bool(self._samples) or (self._armed_at is not None and not self._await_leave)
        self._armed_at = None
        self._samples.clear()
        self._await_leave = False
        if not sampling:
            return None
        return Measurement(TempStatus.UNAVAILABLE, t_mono=t, detail=message,
                           calibration_version=self.rules.calibration_version)

    def _finish(self, t: float) -> Measurement:
        r = self.rules
        objs = [o for o, _ in self._samples]
        ambs = [a for _, a in self._samples]
        obj = statistics.median(objs)
        amb = statistics.median(ambs)
        spread = max(objs) - min(objs)
        common = dict(object_c=round(obj, 2), ambient_c=round(amb, 2), spread_c=round(spread, 2),
                      samples=len(objs), calibration_version=r.calibration_version, t_mono=t)
        body = round(calibrate(obj, amb, r), 1)
        unreliable = ""
        rate = self.ambient_rate()
        if r.require_calibration and r.calibration_version == UNCALIBRATED:
            unreliable = ("thermometer not calibrated: run `checkpoint-scanner calibrate` against a reference "
                          "thermometer before this gate screens people")
        elif not (r.ambient_min_c <= amb <= r.ambient_max_c):
            unreliable = f"ambient {amb:.1f} °C outside {r.ambient_min_c}..{r.ambient_max_c}"
        elif rate is not None and rate > r.ambient_max_rate_c_per_min:
            unreliable = (f"ambient changing {rate:.1f} °C/min > {r.ambient_max_rate_c_per_min} "
                          "(sun, heater or an open door on the sensor?)")
        if unreliable:
            return Measurement(TempStatus.UNRELIABLE, body_c=body, detail=unreliable,
                               **common)  # type: ignore[arg-type]
        if spread > r.max_spread_c:
            return Measurement(TempStatus.UNSTABLE, detail=f"spread {spread:.2f} °C > {r.max_spread_c}",
                               **common)  # type: ignore[arg-type]
        return Measurement(TempStatus.OK, body_c=body, **common)  # type: ignore[arg-type]
