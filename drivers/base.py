"""Device seams: the Protocols the scanner talks to, and the one exception root for devices.

`scanner/` never imports cv2, smbus2 or gpiozero directly; it receives objects that satisfy
these Protocols from `scanner.hardware`, which picks the real or simulated implementation
from the config. Every failure a device can have surfaces as a `DriverError`, a subclass of
`OSError`, so `except OSError` at a thread boundary catches device trouble and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class DriverError(OSError):
    """Root of every device failure. The message says what failed and what to check."""


class SensorError(DriverError):
    """The thermometer did not give a trustworthy reading (NACK, PEC, error flag, range)."""


class CameraError(DriverError):
    """The camera could not be opened or stopped delivering frames."""


class IndicatorError(DriverError):
    """LEDs, buzzer or relay could not be driven (pin busy, no GPIO access)."""


@dataclass(frozen=True)
class Frame:
    """One camera frame. `image` is a numpy uint8 array (H x W grayscale or H x W x 3 BGR);
    `t_mono` is `time.monotonic()` when it was captured, so consumers can refuse stale frames."""

    image: Any
    t_mono: float
    seq: int = 0


@runtime_checkable
class Camera(Protocol):
    def open(self) -> None:
        """Open the device; raise CameraError naming the device path and the fix."""

    def read(self) -> Frame | None:
        """Return the next frame, or None when the source has nothing (yet/anymore).
        Raise CameraError when the device is gone."""

    def close(self) -> None: ...


@runtime_checkable
class Thermometer(Protocol):
    def object_temperature(self) -> float:
        """Object (skin) temperature in degrees Celsius; SensorError on any bad read."""

    def ambient_temperature(self) -> float:
        """Sensor die / ambient temperature in degrees Celsius; SensorError on any bad read."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Blink:
    """One output's behaviour: steady on (off_s == 0 and n is None), or blinking
    `on_s`/`off_s` `n` times (None = until the next pattern). `inverted_of` makes an LED
    follow the negation of another output ("green"), which gives exact alternation."""

    on_s: float = 0.0
    off_s: float = 0.0
    n: int | None = None
    inverted_of: str | None = None

    @property
    def steady(self) -> bool:
        return self.off_s == 0 and self.n is None and self.inverted_of is None


@dataclass(frozen=True)
class Pattern:
    """What the lane's outputs do for one state. None means off."""

    name: str
    green: Blink | None = None
    red: Blink | None = None
    buzzer: Blink | None = None
    relay_s: float | None = None  # pulse the gate relay for this long (PASS only)


@runtime_checkable
class Indicators(Protocol):
    def show(self, pattern: Pattern) -> None:
        """Start `pattern`, cancelling whatever was running. Never blocks."""

    def states(self) -> dict[str, bool]:
        """Current output levels {"green", "red", "buzzer", "relay"}: for logs and the demo."""

    def off(self) -> None: ...

    def close(self) -> None: ...
