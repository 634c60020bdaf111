"""The staff override button: a momentary push button from a GPIO pin to GND (the internal
pull-up is used, so no resistor is needed). A long press (hold_s) calls `on_long_press` once;
a short knock does nothing, so a bumped button never opens a gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gpiozero import Button

from drivers.base import IndicatorError

log = logging.getLogger(__name__)


class OverrideButton:
    def __init__(self, pin: int, on_long_press: Callable[[], None], *, hold_s: float = 2.0,
                 pin_factory: Any = None) -> None:
        try:
            self._button = Button(pin, pull_up=True, hold_time=hold_s, hold_repeat=False, bounce_time=0.02,
                                  pin_factory=pin_factory)
        except Exception as e:  # noqa: BLE001 - gpiozero and lgpio raise their own types
            raise IndicatorError(f"override button on GPIO{pin} unavailable ({e}); fix: check the pin is free "
                                 "or set [indicators] override_button_pin = 0") from None
        self._callback = on_long_press
        self._button.when_held = self._held

    def _held(self) -> None:
        log.info("event=override_button_held")
        try:
            self._callback()
        except Exception:  # noqa: BLE001 - a callback error must not kill gpiozero's thread
            log.exception("event=override_button_callback_failed")

    def close(self) -> None:
        self._button.close()
