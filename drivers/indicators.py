"""Lane indicators on GPIO through gpiozero: green LED, red LED, active buzzer, optional gate relay.

Wiring (BCM numbers in the config, not physical pin numbers):
- LEDs: GPIO -> 330 ohm -> LED anode, cathode -> GND (about 5 mA at 3.3 V; a GPIO pin must stay
  well below 16 mA). Wired to 3.3 V and sinking instead: `active_high=False`.
- Buzzer: an ACTIVE buzzer (it beeps on DC) switched by an NPN transistor (e.g. 2N2222, 1 kohm
  base resistor) from 5 V, flyback diode across it if it is magnetic. Never straight off a GPIO:
  it draws more than the pin may source. A passive piezo would need gpiozero's TonalBuzzer (PWM).
- Relay: a relay module (with its own transistor and diode), fed from 5 V. Many cheap modules
  are active LOW (the input pulled to GND energises the coil): `relay_active_high=False`.
  The module's COM/NO contact opens the gate controller's "open" input for `relay_s`.

Patterns run in gpiozero's background threads, so `show()` never blocks the scan loop.
Fail closed: the buzzer always gets a finite count (a stuck buzzer at a checkpoint is worse than
a silent one), a new pattern cancels a running relay pulse (the gate is never held open for a
person who was not approved), and `close()` switches everything off before releasing the pins.

Tests and the simulated mode pass `pin_factory=mock_pin_factory()`; nothing here knows whether
the pins are real.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from gpiozero import LED, Buzzer, DigitalOutputDevice
from gpiozero.exc import BadPinFactory, GPIOPinInUse, PinInvalidPin
from gpiozero.pins.mock import MockFactory
from gpiozero.threads import GPIOThread

from drivers.base import Blink, IndicatorError, Pattern

log = logging.getLogger(__name__)

OUTPUTS = ("green", "red", "buzzer", "relay")
_LEDS = ("green", "red")


def mock_pin_factory() -> MockFactory:
    """Simulated GPIO for the daemon's simulated mode and for tests (no hardware needed)."""
    return MockFactory()


def real_pin_factory(name: str) -> Any:
    """The gpiozero pin factory for real GPIO by name ("lgpio" on a Pi 5 and Bookworm).
    Imported here, not at module level, so a laptop without lgpio still loads this module."""
    try:
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            return PiGPIOFactory()
        from gpiozero.pins.native import NativeFactory

        return NativeFactory()
    except Exception as e:  # noqa: BLE001 - import and hardware-probe failures vary by library
        raise IndicatorError(f"GPIO pin factory {name!r} unavailable ({e.__class__.__name__}: {e}); "
                             "fix: install python3-lgpio (apt) on the Pi, or set [indicators] "
                             "source = \"mock\"") from None


def _pin_label(pin: int | str) -> str:
    return f"GPIO{pin}" if isinstance(pin, int) else str(pin)


def _wrap(role: str, pin: int | str, err: Exception) -> IndicatorError:
    """Turn a gpiozero/lgpio construction error into a message that names the pin and the fix."""
    label = _pin_label(pin)
    text = str(err)
    if isinstance(err, GPIOPinInUse) or "busy" in text.lower():
        msg = (f"{label} is already in use: stop the other program or choose another pin "
               f"in [indicators] ({role}_pin)")
    elif isinstance(err, PinInvalidPin):
        msg = (f"{role}_pin = {pin!r} is not a valid GPIO pin: use a BCM number such as 17 "
               "(not the physical header pin number) in [indicators]")
    elif isinstance(err, BadPinFactory):
        msg = (f"no GPIO access for the {role} on {label} ({text}): on a Raspberry Pi install "
               "python3-lgpio; elsewhere use simulated hardware in the config")
    elif isinstance(err, PermissionError) or "permission" in text.lower():
        msg = (f"no permission to drive {label} for the {role}: add the service user to the "
               "'gpio' group (it needs /dev/gpiochip*)")
    else:
        msg = f"cannot drive the {role} on {label}: {text}"
    return IndicatorError(msg)


def _check_blink(name: str, blink: Blink, others: dict[str, Blink | None]) -> None:
    if blink.inverted_of is not None:
        if name not in _LEDS or blink.inverted_of not in _LEDS or blink.inverted_of == name:
            raise ValueError(f"{name}: inverted_of={blink.inverted_of!r}: only one LED can follow "
                             "the other LED ('red' inverted_of 'green' or the reverse)")
        leader = others.get(blink.inverted_of)
        if leader is not None and leader.inverted_of is not None:
            raise ValueError("green and red cannot both be inverted_of each other")
        return
    if blink.on_s < 0 or blink.off_s < 0 or (blink.n is not None and blink.n < 1):
        raise ValueError(f"{name}: on_s/off_s must be >= 0 and n >= 1, got {blink}")
    if not blink.steady and blink.on_s <= 0:
        raise ValueError(f"{name}: a blinking output needs on_s > 0, got {blink}")


def validate_pattern(pattern: Pattern) -> None:
    """ValueError for a pattern that must never run: an endless buzzer, a bad inversion.

    The buzzer must have a finite `n` (steady or n=None would beep until the next pattern; if
    the scan loop hangs, forever). Give e.g. Blink(on_s=0.8, n=1) for one long beep.
    """
    leds = {"green": pattern.green, "red": pattern.red}
    for name, blink in (*leds.items(), ("buzzer", pattern.buzzer)):
        if blink is not None:
            _check_blink(name, blink, leds)
    if pattern.buzzer is not None and (pattern.buzzer.n is None or pattern.buzzer.inverted_of):
        raise ValueError(f"pattern {pattern.name!r}: the buzzer needs a finite n "
                         f"(never beep forever), got {pattern.buzzer}")
    if pattern.relay_s is not None and pattern.relay_s <= 0:
        raise ValueError(f"pattern {pattern.name!r}: relay_s must be > 0, got {pattern.relay_s}")


class GpioIndicators:
    """The `Indicators` seam on gpiozero devices. Thread-safe; `show()` returns immediately."""

    def __init__(self, green_pin: int | str, red_pin: int | str, buzzer_pin: int | str,
                 relay_pin: int | str | None = None, *, active_high: bool = True,
                 buzzer_active_high: bool = True, relay_active_high: bool = True,
                 pin_factory: Any = None) -> None:
        pins = {"green": green_pin, "red": red_pin, "buzzer": buzzer_pin, "relay": relay_pin}
        used: dict[str, str] = {}
        for role, pin in pins.items():
            if pin is None:
                continue
            if _pin_label(pin) in used:
                raise IndicatorError(f"{role}_pin and {used[_pin_label(pin)]}_pin are both "
                                     f"{_pin_label(pin)}: choose distinct pins in [indicators]")
            used[_pin_label(pin)] = role
        self.pin_factory = pin_factory  # shared with the override button (one MockFactory in simulation)
        self._lock = threading.RLock()  # serialises show/off/close and the alternation writes
        self._alternator: GPIOThread | None = None
        self._devices: dict[str, DigitalOutputDevice] = {}
        self._closed = False
        makers: dict[str, tuple[type[DigitalOutputDevice], bool]] = {
            "green": (LED, active_high), "red": (LED, active_high),
            "buzzer": (Buzzer, buzzer_active_high),
            "relay": (DigitalOutputDevice, relay_active_high)}
        for role, (cls, high) in makers.items():
            pin = pins[role]
            if pin is None:
                continue
            try:
                self._devices[role] = cls(pin, active_high=high, initial_value=False,
                                          pin_factory=pin_factory)
            except Exception as err:  # noqa: BLE001 - lgpio raises its own error type
                self.close()  # release the pins already claimed, or a retry reports them busy
                raise _wrap(role, pin, err) from err

    def show(self, pattern: Pattern) -> None:
        """Cancel the running pattern and start `pattern`.

        An invalid pattern raises ValueError before anything changes: the old one keeps running.
        """
        validate_pattern(pattern)
        with self._lock:
            self._check_open()
            self._stop_alternation()
            blinks = {"green": pattern.green, "red": pattern.red, "buzzer": pattern.buzzer}
            follower = next((n for n in _LEDS if (b := blinks[n]) and b.inverted_of), None)
            for name, blink in blinks.items():
                if name != follower:
                    self._apply(name, blink, alternate=follower is not None and name in _LEDS)
            relay = self._devices.get("relay")
            if relay is not None:
                if pattern.relay_s:
                    relay.blink(pattern.relay_s, 0, n=1, background=True)
                else:
                    relay.off()
            elif pattern.relay_s:
                log.debug("pattern %s asks for the gate relay, but no relay_pin is configured",
                          pattern.name)
        log.debug("indicators: %s", pattern.name)

    def _apply(self, name: str, blink: Blink | None, *, alternate: bool) -> None:
        device = self._devices[name]
        if alternate:  # this LED leads; the other one is its exact negation
            follower = self._devices["red" if name == "green" else "green"]
            self._start_alternation(device, follower, blink)
        elif blink is None:
            device.off()
        elif blink.steady:
            device.on()
        else:
            device.blink(blink.on_s, blink.off_s, n=blink.n, background=True)

    def _start_alternation(self, leader: DigitalOutputDevice, follower: DigitalOutputDevice,
                           blink: Blink | None) -> None:
        """Exact alternation: one thread writes both LEDs under the lock, in the same step.

        Not `follower.source = negated(leader)`: that copies values every `source_delay`
        (10 ms), so both LEDs are briefly on (or off) at every edge and `states()` could show it.
        """
        if blink is None or blink.steady:
            self._write_pair(leader, follower, blink is not None)
            return
        self._write_pair(leader, follower, True)  # first step now: no moment with both dark
        thread = GPIOThread(self._alternate, (leader, follower, blink))
        self._alternator = thread
        thread.start()

    def _alternate(self, leader: DigitalOutputDevice, follower: DigitalOutputDevice,
                   blink: Blink) -> None:
        """Runs in the GPIOThread (gpiozero's atexit handler stops it like its own blinks)."""
        stopping: threading.Event = threading.current_thread().stopping  # type: ignore[attr-defined]
        count = 0
        while True:
            if stopping.wait(blink.on_s) or not self._write_pair(leader, follower, False, stopping):
                return
            count += 1
            if stopping.wait(blink.off_s) or (blink.n is not None and count >= blink.n):
                return
            if not self._write_pair(leader, follower, True, stopping):
                return

    def _write_pair(self, leader: DigitalOutputDevice, follower: DigitalOutputDevice,
                    value: bool, stopping: threading.Event | None = None) -> bool:
        """Write both LEDs in one step under the lock. From the alternation thread, give up
        when asked to stop: show() holds the lock while it joins this thread."""
        while not self._lock.acquire(timeout=0.005):
            if stopping is not None and stopping.is_set():
                return False
        try:
            leader.value = value
            follower.value = not value
        finally:
            self._lock.release()
        return True

    def _stop_alternation(self) -> None:
        thread, self._alternator = self._alternator, None
        if thread is not None:
            thread.stop()  # set + join; once told to stop, the thread never waits on the lock

    def states(self) -> dict[str, bool]:
        """Output levels (True = active); all False once closed."""
        with self._lock:
            if self._closed:
                return dict.fromkeys(OUTPUTS, False)
            return {name: bool(self._devices[name].is_active) if name in self._devices else False
                    for name in OUTPUTS}

    def off(self) -> None:
        """Everything off, every background pattern stopped."""
        with self._lock:
            self._check_open()
            self._stop_alternation()
            for device in self._devices.values():
                device.source = None
                device.off()

    def close(self) -> None:
        """Switch off, then release every pin. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_alternation()
            for name, device in self._devices.items():
                try:
                    device.off()
                except Exception as err:  # noqa: BLE001 - still release the remaining pins
                    log.warning("could not switch off the %s before closing: %s", name, err)
                device.close()

    def _check_open(self) -> None:
        if self._closed:
            raise IndicatorError("indicators are closed: create a new GpioIndicators")

    def __enter__(self) -> GpioIndicators:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
