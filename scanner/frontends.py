"""Everything people see and touch beside the lane's lights: the kiosk screen, the staff status
page, the override button. Started after the lane exists, closed in reverse order; each is
optional and configured in its own section.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from scanner.errors import ConfigError
from scanner.outbox import queue_health
from scanner.staff import StaffServer, load_pin

log = logging.getLogger("scanner.frontends")


def start_frontends(cfg: Any, lane: Any, stop: threading.Event | None = None,
                    pin_factory: Any = None) -> list[Callable[[], None]]:
    """Start the configured front ends; returns their closers (call in reverse order)."""
    closers: list[Callable[[], None]] = []
    try:
        if cfg.kiosk.enabled:
            closers.append(_start_kiosk(cfg, lane, stop or lane.stop_event))
        if cfg.staff.enabled:
            closers.append(_start_staff(cfg, lane))
        if cfg.indicators.override_button_pin:
            closers.append(_start_button(cfg, lane, pin_factory))
    except Exception:
        for c in reversed(closers):
            c()
        raise
    return closers


def _start_kiosk(cfg: Any, lane: Any, stop: threading.Event) -> Callable[[], None]:
    from drivers.display import FileDisplay, FramebufferDisplay
    from drivers.speech import Speaker
    from scanner.kiosk import KioskThread

    k = cfg.kiosk
    display: Any = (FramebufferDisplay(k.device) if k.display == "framebuffer"
                    else FileDisplay(k.file_path, (k.width, k.height)))
    speaker = Speaker() if k.speech else None
    kiosk = KioskThread(lane.monitor, display, stop, fps=k.fps, speaker=speaker).start()
    lane.kiosk = kiosk
    log.info("event=kiosk_started display=%s size=%s", k.display, getattr(display, "size", None))

    def close() -> None:
        kiosk.thread.join(timeout=2)
        if speaker:
            speaker.close()
        display.close()

    return close


def _start_staff(cfg: Any, lane: Any) -> Callable[[], None]:
    pin = load_pin(cfg.staff.pin_file)

    def health() -> dict[str, Any]:
        generated = getattr(lane.trust, "generated_at", None)
        age = round((time.time() - generated) / 3600, 1) if generated else None
        return {**queue_health(cfg.store.path), "clock_trusted": lane.clock.trusted(), "trust_age_h": age,
                "sensor": "down" if lane.screener.down else "ok"}

    try:
        server = StaffServer(lane, pin, cfg.staff.bind, cfg.staff.port, extra_health=health).start()
    except OSError as e:
        raise ConfigError([f"staff.port: cannot listen on {cfg.staff.bind}:{cfg.staff.port} ({e.strerror}); "
                           "fix: choose a free port or stop the other program"]) from None
    return server.stop


def _start_button(cfg: Any, lane: Any, pin_factory: Any) -> Callable[[], None]:
    from drivers.button import OverrideButton

    def long_press() -> None:
        result = lane.request_override("PASS", "button")
        log.info("event=override_button result=%r", result["message"])

    factory = pin_factory if pin_factory is not None else getattr(lane.dev.indicators, "pin_factory", None)
    button = OverrideButton(cfg.indicators.override_button_pin, long_press, hold_s=cfg.indicators.override_hold_s,
                            pin_factory=factory)
    return button.close
