"""A scripted thermometer: satisfies `drivers.base.Thermometer` without hardware.

For the demo and for tests of screening and the passage state machine. Time comes from an
injected clock, so a test steps time instead of sleeping:

    clock = FakeClock()
    thermo = ScriptedThermometer(
        [(2.0, 24.0, 24.0),        # nobody there: object == ambient
         (1.0, 36.6, 24.0),        # a forehead for one second
         (0.5, "fault", 24.0)],    # then the sensor fails: object reads raise SensorError
        clock=clock)

The script starts at construction; each step lasts `duration_s`; after the last step the last
one holds (or the script repeats with `loop=True`). `set()` and `fail()` take over from the
script for direct control. `noise_c` adds seeded, deterministic uniform noise of +-noise_c.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Literal

from drivers.base import SensorError

FAULT = "fault"
Step = tuple[float, float | Literal["fault"], float]


class ScriptedThermometer:
    def __init__(
        self,
        script: Sequence[Step] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        loop: bool = False,
        noise_c: float = 0.0,
        seed: int = 0,
        object_c: float = 24.0,
        ambient_c: float = 24.0,
    ) -> None:
        for i, step in enumerate(script):
            duration_s, obj, ambient = step
            if not duration_s > 0:
                raise ValueError(f"script step {i}: duration_s {duration_s} must be > 0")
            if obj != FAULT and not isinstance(obj, int | float):
                raise ValueError(f"script step {i}: object {obj!r} must be a number or 'fault'")
            if not isinstance(ambient, int | float):
                raise ValueError(f"script step {i}: ambient {ambient!r} must be a number")
        if noise_c < 0:
            raise ValueError(f"noise_c {noise_c} must be >= 0")
        self._script = list(script)
        self._clock = clock
        self._loop = loop
        self._noise_c = noise_c
        self._rng = random.Random(seed)
        self._start_s = clock()
        self._fixed: tuple[float, float] | None = None if self._script else (object_c, ambient_c)
        self._failure: str | None = None
        self._closed = False

    def set(self, object_c: float, ambient_c: float) -> None:
        """Hold these values from now on (ends the script and any fail())."""
        self._fixed = (object_c, ambient_c)
        self._failure = None

    def fail(self, message: str = "scripted thermometer failure") -> None:
        """Every read raises SensorError(message) until set() is called."""
        self._failure = message

    def object_temperature(self) -> float:
        obj, _ = self._current()
        if obj == FAULT:
            raise SensorError("scripted fault: object temperature unavailable")
        return self._noisy(float(obj))

    def ambient_temperature(self) -> float:
        _, ambient = self._current()
        return self._noisy(ambient)

    def close(self) -> None:
        self._closed = True

    def _current(self) -> tuple[float | str, float]:
        if self._closed:
            raise SensorError("scripted thermometer is closed")
        if self._failure is not None:
            raise SensorError(self._failure)
        if self._fixed is not None:
            return self._fixed
        elapsed = self._clock() - self._start_s
        total = sum(step[0] for step in self._script)
        if self._loop:
            elapsed %= total
        for duration_s, obj, ambient in self._script:
            if elapsed < duration_s:
                return obj, ambient
            elapsed -= duration_s
        _, obj, ambient = self._script[-1]
        return obj, ambient

    def _noisy(self, value: float) -> float:
        if self._noise_c == 0:
            return value
        return round(value + self._rng.uniform(-self._noise_c, self._noise_c), 2)
