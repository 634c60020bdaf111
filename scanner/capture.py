"""The capture thread: the scan loop only ever sees the newest frame.

Failure handling (docs/hardware.md section 4):
- a camera that raises (unplugged, EIO, cannot open) is closed and reopened with back-off
  (0.5 s doubling to 10 s) until it returns. Any other exception from a driver (a bug, a library
  that fails on import such as picamera2 against the wrong numpy) is handled the same way: one
  error line with its file:line once per exception type (the traceback at debug level), FAULT
  with the error's first line, back-off; the thread never dies while the lights show old state;
- a camera that delivers nothing is a FAULT as soon as the newest frame is older than STALL_S,
  whether `read()` keeps returning None or is blocked inside the driver: `fault` is computed from
  the frame age when it is asked, so the lights show FAULT within STALL_S even while a V4L2
  read waits out its own timeout. A read that returns None for STALL_S gets the camera closed
  and reopened with the same back-off.
- when frames flow again the fault clears and the back-off resets; an error's text is shown only
  until the camera opens again (then the fault is the frame age, while no frame comes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from drivers.base import Camera, CameraError, Frame

log = logging.getLogger("scanner.capture")

STALL_S = 2.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0


class CaptureThread(threading.Thread):
    """Keeps only the newest frame and its monotonic time: the scan loop never decodes a
    backlog. A camera that errors or stalls is closed and reopened with back-off."""

    def __init__(self, camera: Camera, stop: threading.Event, idle_sleep_s: float = 0.005, *,
                 stall_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="capture", daemon=True)
        self.camera = camera
        self._stop_evt = stop
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._seq = 0
        self._clock = clock
        self.stall_s = STALL_S if stall_s is None else stall_s
        self.last_frame_mono = clock()  # a camera that never delivers is a stall too
        self.heartbeat = clock()
        self._error: str | None = None
        self._stall_logged = False
        self._tracebacks_logged: set[str] = set()
        self.reopens = 0
        self._idle = idle_sleep_s

    @property
    def fault(self) -> str | None:
        """Why the camera is not delivering, or None. Read by the lane for FAULT."""
        if self._error:
            return self._error
        age = self._clock() - self.last_frame_mono
        if age > self.stall_s:
            return f"no frame for {age:.0f} s: check the camera cable and 'dmesg' (reopening)"
        return None

    def newest(self) -> tuple[int, Frame | None]:
        with self._lock:
            return self._seq, self._frame

    def _fail(self, message: str, backoff: float) -> float:
        """Close, count, wait `backoff` (or until stop) and return the next back-off."""
        self._close_quietly()
        self.reopens += 1
        log.error("event=camera_fault error=%r retry_in_s=%.1f", message, backoff)
        self._stop_evt.wait(backoff)
        return min(backoff * 2, BACKOFF_MAX_S)

    def run(self) -> None:
        backoff = BACKOFF_MIN_S
        opened = False
        opened_at = self._clock()
        while not self._stop_evt.is_set():
            self.heartbeat = self._clock()
            try:
                if not opened:
                    self.camera.open()
                    opened, opened_at = True, self._clock()
                    # The open error is over; until frames flow, `fault` says what is true now
                    # (no frame for N s), not the old error text.
                    self._error = None
                frame = self.camera.read()
            except (CameraError, OSError) as e:
                self._error = str(e)
                opened = False
                backoff = self._fail(str(e), backoff)
                continue
            except Exception as e:  # noqa: BLE001 - a driver bug or a broken library must not end capture
                message = _unexpected(e)
                kind = f"{type(e).__module__}.{type(e).__qualname__}"
                if kind not in self._tracebacks_logged:  # once per kind, then only the fault lines
                    self._tracebacks_logged.add(kind)
                    log.error("event=camera_driver_error error=%r at=%s", message, _where(e))
                    log.debug("camera driver traceback", exc_info=True)
                self._error = message
                opened = False
                backoff = self._fail(message, backoff)
                continue
            now = self._clock()
            if frame is None:
                if now - max(self.last_frame_mono, opened_at) > self.stall_s:
                    if not self._stall_logged:
                        log.error("event=camera_stalled no_frame_s=%.1f", now - self.last_frame_mono)
                        self._stall_logged = True
                    opened = False
                    backoff = self._fail(f"no frame for {self.stall_s:.0f} s", backoff)
                else:
                    self._stop_evt.wait(self._idle)
                continue
            if self._error or self._stall_logged or now - self.last_frame_mono > self.stall_s:
                log.info("event=camera_recovered reopens=%d", self.reopens)
            self._error = None
            self._stall_logged = False
            backoff = BACKOFF_MIN_S
            self.last_frame_mono = now
            with self._lock:
                self._seq += 1
                self._frame = frame
        self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self.camera.close()
        except Exception:  # noqa: BLE001 - closing a broken device must not kill the thread
            log.debug("camera close failed", exc_info=True)


def _unexpected(e: BaseException) -> str:
    """One line for the FAULT text of an exception no driver should raise."""
    first = (str(e).splitlines() or [""])[0]
    return (f"camera driver error {type(e).__name__}: {first}: the capture thread keeps retrying; "
            f"fix or reinstall the camera driver (the journal names the file and line)")


def _where(e: BaseException) -> str:
    """`file:line` where the exception was raised (the innermost frame), for the journal."""
    tb = e.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
