"""USB (UVC) camera through OpenCV's V4L2 backend.

Why these choices (docs/hardware.md section 4):
- Open `/dev/v4l/by-id/usb-...-video-index0`, not `/dev/video0`: indices move when a CSI camera
  or the Pi's codec nodes (/dev/video19...) enumerate first. The symlink is resolved to the
  /dev/videoN node before opening; if a wheel's V4L2 backend refuses names, the index is tried.
- `cv2.CAP_V4L2` explicitly: the auto-selected backend (GStreamer/FFmpeg) adds latency.
- FOURCC is set before size and fps: many webcams only offer 640x480@15+ in MJPG, and the
  driver picks the frame-size list per pixel format. `CAP_PROP_BUFFERSIZE=1` limits stale
  frames (some drivers still queue a few; the camera thread keeps only the newest frame).
- `read()` checks `ok`, `None` and the shape: old OpenCV returned ok=True on a select() timeout.
- CSI cameras on Bookworm do not work through `cv2.VideoCapture`: use camera_picamera2.

Frames are grayscale by default: decoding wants gray, and it is a third of the memory traffic.
Needs read/write access to the device node: the service user must be in the `video` group.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import cv2

from drivers.base import CameraError, Frame

log = logging.getLogger(__name__)

_LIST_HINT = "list devices with 'v4l2-ctl --list-devices'"
_VIDEO_NODE = re.compile(r"^/dev/video(\d+)$")
READ_TIMEOUT_MS = 2000


class OpenCVCamera:
    """A V4L2 camera delivering `Frame`s; raises `CameraError` with the fix on every failure."""

    def __init__(self, device: str, width: int = 640, height: int = 480, fps: int = 15,
                 fourcc: str = "MJPG", *, color: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters such as 'MJPG' or 'YUYV', "
                             f"got {fourcc!r}")
        self.device = device
        self.width = width
        self.height = height
        self.fps = fps
        self.fourcc = fourcc
        self.color = color
        self._clock = clock
        self._cap: Any = None
        self._seq = 0

    def open(self) -> None:
        """Open and configure the device. Idempotent: an open camera is closed and reopened."""
        self.close()
        path = self.device
        if not os.path.exists(path):
            raise CameraError(f"no camera at {path}: check the USB cable, {_LIST_HINT}")
        node = os.path.realpath(path)
        if not os.access(node, os.R_OK | os.W_OK):
            raise CameraError(
                f"cannot open camera {path} ({node}): permission denied: add the service user "
                "to the 'video' group (sudo usermod -aG video USER) and restart the service")
        cap = self._open_capture(node)
        if cap is None:
            raise CameraError(
                f"cannot open camera {path} ({node}): is another program using it "
                f"(check with 'fuser {node}')? Is it a capture node? {_LIST_HINT}")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        # bound a blocking read (V4L2's own select() timeout is 10 s) where the backend honours it;
        # the capture thread shows FAULT after 2 s without a frame either way
        timeout_prop = getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)  # OpenCV >= 4.6
        if timeout_prop is not None:
            cap.set(timeout_prop, READ_TIMEOUT_MS)
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
               cap.get(cv2.CAP_PROP_FPS), _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC)))
        if got[:2] != (self.width, self.height) or got[3] != self.fourcc:
            log.warning("camera %s gives %dx%d@%.0f %s instead of %dx%d@%d %s: "
                        "check 'v4l2-ctl -d %s --list-formats-ext'", path, *got,
                        self.width, self.height, self.fps, self.fourcc, node)
        else:
            log.info("camera %s open: %dx%d@%.0f %s", path, *got)
        self._cap = cap

    @staticmethod
    def _open_capture(node: str) -> Any:
        cap = cv2.VideoCapture(node, cv2.CAP_V4L2)
        if cap.isOpened():
            return cap
        cap.release()
        match = _VIDEO_NODE.match(node)
        if match:  # some wheels' V4L2 backend only opens by index
            cap = cv2.VideoCapture(int(match.group(1)), cv2.CAP_V4L2)
            if cap.isOpened():
                return cap
            cap.release()
        return None

    def read(self) -> Frame:
        """Block for the next frame (V4L2 waits up to 10 s); CameraError if none came."""
        if self._cap is None:
            raise CameraError(f"camera {self.device} is not open: call open() first")
        ok, image = self._cap.read()
        t = self._clock()
        if not ok or image is None:
            raise CameraError(
                f"camera {self.device} delivered no frame: unplugged or stalled "
                f"(check the USB cable and 'dmesg' for uvcvideo errors); reopen it")
        if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
            raise CameraError(f"camera {self.device} delivered a malformed frame "
                              f"of shape {image.shape}: try fourcc 'YUYV'")
        if not self.color and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self._seq += 1
        return Frame(image, t, self._seq)

    def close(self) -> None:
        """Release the device so another process (or our own reopen) can claim it."""
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def __enter__(self) -> OpenCVCamera:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _fourcc_str(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
