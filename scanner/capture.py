"""The capture thread: the scan loop only ever sees the newest frame.

A camera that errors is closed and reopened with back-off (0.5 s doubling to 10 s); one that
delivers nothing for STALL_S is reported as a fault (FAULT on the lights) until frames return.
"""

from __future__ import annotations

import logging
import threading
import time

from drivers.base import Camera, CameraError, Frame

log = logging.getLogger("scanner.capture")

STALL_S = 2.0


class CaptureThread(threading.Thread):
    """Keeps only the newest frame and its monotonic time: the scan loop never decodes a
    backlog. A camera that errors or stalls is closed and reopened with back-off."""

    def __init__(self, camera: Camera, stop: threading.Event, idle_sleep_s: float = 0.005) -> None:
        super().__init__(name="capture", daemon=True)
        self.camera = camera
        self._stop_evt = stop
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._seq = 0
        self.last_frame_mono = time.monotonic()
        self.heartbeat = time.monotonic()
        self.fault: str | None = None
        self.reopens = 0
        self._idle = idle_sleep_s

    def newest(self) -> tuple[int, Frame | None]:
        with self._lock:
            return self._seq, self._frame

    def run(self) -> None:
        backoff = 0.5
        opened = False
        while not self._stop_evt.is_set():
            self.heartbeat = time.monotonic()
            try:
                if not opened:
                    self.camera.open()
                    opened = True
                    if self.fault:
                        log.info("event=camera_recovered reopens=%d", self.reopens)
                    self.fault = None
                    backoff = 0.5
                    self.last_frame_mono = time.monotonic()
                frame = self.camera.read()
            except (CameraError, OSError) as e:
                self.fault = str(e)
                log.error("event=camera_fault error=%r retry_in_s=%.1f", str(e), backoff)
                self._close_quietly()
                opened = False
                self.reopens += 1
                self._stop_evt.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            now = time.monotonic()
            if frame is None:
                if now - self.last_frame_mono > STALL_S and not self.fault:
                    self.fault = f"no frame for {STALL_S:.0f} s: check the camera cable"
                    log.error("event=camera_stalled")
                self._stop_evt.wait(self._idle)
                continue
            if self.fault and self.fault.startswith("no frame"):
                self.fault = None
                log.info("event=camera_recovered")
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
