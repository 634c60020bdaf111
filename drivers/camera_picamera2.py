"""Raspberry Pi ribbon (CSI) camera through Picamera2 / libcamera.

Why this driver exists (docs/hardware.md section 4): on Bookworm, CSI cameras are reachable only
through libcamera; `cv2.VideoCapture(0)` does not open them (OpenCV "wontfix"). Picamera2 comes
from apt to match the system libcamera: `sudo apt install python3-picamera2 --no-install-recommends`,
and the service's venv must see it (`python3 -m venv --system-site-packages`). It is imported
only when a config asks for `camera.source = "picamera2"`, so every other setup runs without it.

Configuration, from Picamera2's API (picamera2/picamera2.py, examples/opencv_face_detect.py):
- `create_preview_configuration(main={"format": "RGB888", "size": (w, h)},
  lores={"format": "YUV420", "size": (w, h)}, controls={"FrameRate": fps}, buffer_count=2,
  queue=False)`. The lores YUV420 array is (h * 3/2) x stride; its first h rows and w columns are
  the Y plane, a grayscale image the decoder wants anyway, with no colour conversion. RGB888
  arrays are B, G, R per pixel, OpenCV's order (for `color=True`).
- `queue=False`: with the default queue Picamera2 keeps one completed request and hands it out,
  a frame up to one frame period old; without it a capture waits for the next frame.
- `capture_request(wait=seconds)` raises TimeoutError when no frame comes: a stalled sensor or
  a loose ribbon becomes a CameraError and the capture thread reopens the camera. Every request
  is released (in `finally`), or libcamera runs out of buffers.
Known failures and their fixes: "Pipeline handler in use by another process" / `acquire()
returned -16` (another process holds the camera: stop it), "Could not open any dmaHeap device"
(the service user needs /dev/dma_heap access: add it to the 'video' group), no cameras listed
(ribbon cable seated, `rpicam-hello --list-cameras`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np

from drivers.base import CameraError, Frame

log = logging.getLogger(__name__)

_INSTALL_HINT = ("install it with 'sudo apt install python3-picamera2 --no-install-recommends' and create "
                 "the venv with --system-site-packages")
_OPEN_HINT = ("check the ribbon cable, list cameras with 'rpicam-hello --list-cameras', and stop any other "
              "program using the camera ('Pipeline handler in use' / -16); the service user needs the "
              "'video' group for /dev/dma_heap")
_NUMPY_HINT = ("picamera2 from apt is built against the system numpy and the venv has another one from pip: "
               "run 'sudo ./scripts/install-pi.sh' again, it pins pip to the system numpy (numpy==<apt version>) "
               "and picks an OpenCV built for it")


def _import_picamera2() -> Callable[[int], Any]:
    """The Picamera2 class, imported only now. Any failure is a CameraError naming the fix: a
    missing module (ImportError) and a broken one alike. The broken case seen on Bookworm is
    ValueError "numpy.dtype size changed, may indicate binary incompatibility": apt's picamera2
    (through simplejpeg) is compiled against numpy 1.24, and a venv with --system-site-packages
    that got numpy 2 from pip shadows it."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found, unused-ignore]
    except Exception as e:  # noqa: BLE001 - a module that raises on import is a broken install, not a crash
        text = f"{type(e).__name__}: {e}".splitlines()[0]
        if "numpy" in text or "binary incompatib" in text:
            hint, what = _NUMPY_HINT, "importing picamera2 failed"
        else:
            hint, what = _INSTALL_HINT, "picamera2 is not importable"
        raise CameraError(f"camera.source = \"picamera2\" but {what} ({text}): {hint}") from e
    return lambda num: Picamera2(camera_num=num)


class Picamera2Camera:
    """A CSI camera delivering `Frame`s (grayscale from the lores Y plane, or BGR with `color`).

    `factory(camera_num)` makes the Picamera2 object; tests pass a fake with the same methods.
    """

    def __init__(self, camera_num: int = 0, width: int = 640, height: int = 480, fps: int = 15, *,
                 color: bool = False, read_timeout_s: float = 1.0,
                 factory: Callable[[int], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"width and height must be even for YUV420, got {width}x{height}")
        self.camera_num = camera_num
        self.width = width
        self.height = height
        self.fps = fps
        self.color = color
        self.read_timeout_s = read_timeout_s
        self._factory = factory
        self._clock = clock
        self._cam: Any = None
        self._seq = 0

    @property
    def description(self) -> str:
        return f"ribbon camera {self.camera_num}"

    def open(self) -> None:
        """Acquire, configure and start the camera. Idempotent: an open camera is reopened."""
        self.close()
        factory = self._factory or _import_picamera2()
        try:
            cam = factory(self.camera_num)
        except (RuntimeError, IndexError, OSError) as e:
            raise CameraError(f"cannot open {self.description} ({e}): {_OPEN_HINT}") from e
        try:
            size = (self.width, self.height)
            config = cam.create_preview_configuration(
                main={"format": "RGB888", "size": size}, lores={"format": "YUV420", "size": size},
                controls={"FrameRate": float(self.fps)}, buffer_count=2, queue=False)
            cam.configure(config)
            cam.start()
        except (RuntimeError, ValueError, OSError) as e:
            _close_quietly(cam)
            raise CameraError(f"cannot start {self.description} at {self.width}x{self.height}@{self.fps} ({e}): "
                              f"try 640x480; {_OPEN_HINT}") from e
        self._cam = cam
        log.info("%s open: %dx%d@%d, lores YUV420 (Y plane as grayscale)", self.description,
                 self.width, self.height, self.fps)

    def read(self) -> Frame:
        """The next frame; CameraError when none comes within `read_timeout_s`."""
        cam = self._cam
        if cam is None:
            raise CameraError(f"{self.description} is not open: call open() first")
        try:
            request = cam.capture_request(wait=self.read_timeout_s)
        except TimeoutError as e:
            raise CameraError(f"{self.description} delivered no frame in {self.read_timeout_s:.1f} s: "
                              f"stalled or the ribbon is loose; reopening") from e
        except (RuntimeError, OSError) as e:
            raise CameraError(f"{self.description} failed ({e}): {_OPEN_HINT}") from e
        try:
            if self.color:
                image = np.ascontiguousarray(request.make_array("main")[:, :, :3])
            else:
                yuv = request.make_array("lores")
                image = np.ascontiguousarray(yuv[:self.height, :self.width])
        finally:
            request.release()
        t = self._clock()
        if image.dtype != np.uint8 or image.shape[0] != self.height or image.shape[1] != self.width:
            raise CameraError(f"{self.description} delivered a frame of shape {image.shape}, "
                              f"expected {self.height}x{self.width}: try 640x480")
        self._seq += 1
        return Frame(image, t, self._seq)

    def close(self) -> None:
        """Stop and release the camera so a reopen (or another program) can acquire it."""
        cam, self._cam = self._cam, None
        if cam is not None:
            _close_quietly(cam)

    def __enter__(self) -> Picamera2Camera:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _close_quietly(cam: Any) -> None:
    for step in ("stop", "close"):
        try:
            getattr(cam, step)()
        except Exception:  # noqa: BLE001 - a half-dead camera must still be let go
            log.debug("picamera2 %s failed", step, exc_info=True)
