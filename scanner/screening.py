"""Thermometer samples -> one Measurement per person. Pure: values in, values out, the caller
passes monotonic times; no I/O, so every threshold is testable without a sensor.

Why this shape: a raw MLX90614 object reading is not a body temperature. Nobody is measured
until a person is really in front (object well above ambient and in a skin range, held for a
moment); then k samples are taken and the median reported, refused when they spread too wide
(the person moved), and mapped to a body estimate by the site's calibration before the policy
compares it with the fever threshold (HARDWARE.md section 7, "Measurement logic").
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from scanner.models import Measurement, TempStatus


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
    fault_after: int = 5

    @classmethod
    def from_config(cls, th: object) -> ScreeningRules:
        return cls(**{f: getattr(th, f) for f in cls.__dataclass_fields__})


def calibrate(object_c: float, ambient_c: float, rules: ScreeningRules) -> float:
    """Body estimate = object + offset + coeff * (reference ambient - ambient).

    Skin cools in the cold (forehead reads several degrees low on a 5 °C night at a toll
    gate); the ambient term adds that back so a fever is not waved through."""
    return object_c + rules.offset_c + rules.ambient_coeff * (rules.reference_ambient_c - ambient_c)


class Screener:
    """Feed it every reading; it returns a Measurement when one person's measurement is done.

    States: idle (nobody) -> arming (present, waiting presence_hold_s) -> sampling -> done;
    after a measurement the person must leave (presence lost) before the next one starts, so
    one wrist held for ten seconds is one measurement, not twenty."""

    def __init__(self, rules: ScreeningRules) -> None:
        self.rules = rules
        self._armed_at: float | None = None
        self._samples: list[tuple[float, float]] = []
        self._await_leave = False
        self._errors = 0
        self.down = False
        self.last_error = ""

    def present(self, object_c: float, ambient_c: float) -> bool:
        r = self.rules
        return (object_c - ambient_c >= r.presence_delta_c) and r.skin_min_c <= object_c <= r.skin_max_c

    def feed(self, t: float, object_c: float, ambient_c: float) -> Measurement | None:
        self._errors = 0
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
            if self._armed_at is not None or self._samples:
                self._armed_at = None
                self._samples.clear()
                return Measurement(TempStatus.UNAVAILABLE, t_mono=t, detail=message,
                                   calibration_version=self.rules.calibration_version)
        return None

    def _finish(self, t: float) -> Measurement:
        r = self.rules
        objs = [o for o, _ in self._samples]
        ambs = [a for _, a in self._samples]
        obj = statistics.median(objs)
        amb = statistics.median(ambs)
        spread = max(objs) - min(objs)
        common = dict(object_c=round(obj, 2), ambient_c=round(amb, 2), spread_c=round(spread, 2),
                      samples=len(objs), calibration_version=r.calibration_version, t_mono=t)
        if spread > r.max_spread_c:
            return Measurement(TempStatus.UNSTABLE, detail=f"spread {spread:.2f} °C > {r.max_spread_c}",
                               **common)  # type: ignore[arg-type]
        body = round(calibrate(obj, amb, r), 1)
        if not (r.ambient_min_c <= amb <= r.ambient_max_c):
            return Measurement(TempStatus.UNRELIABLE, body_c=body,
                               detail=f"ambient {amb:.1f} °C outside {r.ambient_min_c}..{r.ambient_max_c}",
                               **common)  # type: ignore[arg-type]
        return Measurement(TempStatus.OK, body_c=body, **common)  # type: ignore[arg-type]
