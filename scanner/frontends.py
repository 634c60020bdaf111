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
from scanner.preflight import read_pin
from scanner.staff import Refreshed, StaffServer

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
    from scanner.httpserve import Limits, tls_context

    pin = read_pin(cfg)  # the check `run` and `check-config` made before anything started
    st = cfg.staff
    ctx = tls_context(st.tls_cert, st.tls_key, "", "staff")
    # the outbox is read by a thread of its own: a stalling SD card never holds up the page
    queue = Refreshed(lambda: queue_health(cfg.store.path), every_s=2.0, stale_after_s=10.0,
                      name="staff-queue-health").start()

    def health() -> dict[str, Any]:
        generated = getattr(lane.trust, "generated_at", None)
        age = round((time.time() - generated) / 3600, 1) if generated else None
        q = queue.get()
        if "stale_s" in q:
            q["queue_stale_s"] = q.pop("stale_s")
        return {**q, "clock_trusted": lane.clock.trusted(), "trust_age_h": age,
                "sensor": "down" if lane.screener.down else "ok"}

    limits = Limits(max_connections=st.max_connections, max_per_client=max(4, st.max_connections // 4), max_busy=4,
                    workers=2, request_timeout_s=st.request_timeout_s, max_body_bytes=4096)
    try:
        server = StaffServer(lane, pin, st.bind, st.port, extra_health=health, ssl_context=ctx,
                             limits=limits).start()
    except OSError as e:
        queue.stop()
        raise ConfigError([f"staff.port: cannot listen on {st.bind}:{st.port} ({e.strerror}); "
                           "fix: choose a free port or stop the other program"], cfg.source_path or None) from None
    if ctx is None and st.bind not in ("127.0.0.1", "::1", "localhost"):
        log.warning("event=staff_plain_http bind=%s; the PIN and the session cookie cross the LAN in clear text; "
                    "fix: set [staff] tls_cert and tls_key, or bind = \"127.0.0.1\"", st.bind)

    def close() -> None:
        server.stop()
        queue.stop()

    return close


def _start_button(cfg: Any, lane: Any, pin_factory: Any) -> Callable[[], None]:
    from drivers.button import OverrideButton

    def long_press() -> None:
        result = lane.request_button_override()  # only the REVIEW the lane is showing now
        log.info("event=override_button ok=%s", result["ok"])

    factory = pin_factory if pin_factory is not None else getattr(lane.dev.indicators, "pin_factory", None)
    button = OverrideButton(cfg.indicators.override_button_pin, long_press, hold_s=cfg.indicators.override_hold_s,
                            pin_factory=factory)
    return button.close
