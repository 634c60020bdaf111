"""Simulated camera: replays a folder of images, a video file or in-memory arrays.

Used by the demo, by the simulated mode of the daemon and by tests, so the scan loop runs the
same code path as with a real camera. It also injects the failures a real camera has, so the
recovery code (reopen on error, stall detection) can be tested without unplugging anything.

Sources:
- a folder: files ending in .png/.jpg/.jpeg/.bmp, sorted by name; a file OpenCV cannot read is
  skipped with one warning (a half-copied file must not stop a demo);
- a video file (anything `cv2.VideoCapture` reads, e.g. an MJPG .avi);
- a list of numpy uint8 arrays (H x W gray or H x W x 3 BGR).

Faults: `faults={index: "error" | "stall"}` keyed by the 0-based position of a frame in the
source. When the replay reaches that frame:
- "error": `read()` raises CameraError once; the next `read()` delivers that frame.
- "stall": `read()` returns None until `stall_s` seconds (by `clock`) have passed, then the
  frame is delivered: what a camera that stopped streaming looks like to the capture thread.
Each fault fires once, also when looping. `close()` keeps the position, so a reopen after an
injected error resumes where it was, like a camera that was re-plugged; `rewind()` restarts.

With `loop`, a pass in which no frame could be read (every file unreadable for now, e.g. still
being copied) is retried from the start after EMPTY_PASS_RETRY_S, so the replay recovers once
the files are readable; `read()` returns None meanwhile (the capture thread sees a stall).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from drivers.base import CameraError, Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FAULT_KINDS = ("error", "stall")
EMPTY_PASS_RETRY_S = 0.5  # a looping pass that read nothing is tried again after this (seconds)
_SOURCE_HINT = "give a folder of .png/.jpg/.jpeg/.bmp images or a video file (e.g. MJPG .avi)"


class ReplayCamera:
    """A `Camera` over recorded frames. `read()` returns None once exhausted (unless `loop`)."""

    def __init__(self, source: str | os.PathLike[str] | Sequence[np.ndarray], *,
                 fps: float | None = None, loop: bool = False, grayscale: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 faults: Mapping[int, str] | None = None, stall_s: float = 1.0) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0 or None (as fast as read() is called), got {fps}")
        for index, kind in (faults or {}).items():
            if kind not in FAULT_KINDS or not isinstance(index, int) or index < 0:
                raise ValueError(f"bad fault {index!r}: {kind!r}: use frame index >= 0 -> "
                                 f"one of {FAULT_KINDS}")
        self._path: Path | None = None
        self._arrays: list[np.ndarray] = []
        if isinstance(source, (str, os.PathLike)):
            self._path = Path(source)
        else:
            self._arrays = list(source)
            for i, arr in enumerate(self._arrays):
                if (not isinstance(arr, np.ndarray) or arr.dtype != np.uint8
                        or arr.ndim not in (2, 3)):
                    raise ValueError(f"frame {i} is not a uint8 H x W (x 3) numpy array")
        self.fps = fps
        self.loop = loop
        self.grayscale = grayscale
        self.stall_s = stall_s
        self._clock = clock
        self._sleep = sleep
        self._faults = dict(faults or {})
        self._files: list[Path] = []
        self._video: Any = None
        self._unreadable: set[Path] = set()
        self._open = False
        self._pos = 0  # position of the next frame in the source
        self._pass_frames = 0  # frames delivered in the current pass (guards endless loops)
        self._stall_until: float | None = None
        self._retry_at: float | None = None  # after a looping pass that read nothing
        self._next_due: float | None = None
        self._seq = 0

    @property
    def description(self) -> str:
        if self._path is not None:
            return str(self._path)
        return f"{len(self._arrays)} in-memory frames"

    def open(self) -> None:
        """Check the source; CameraError naming the path and what to give instead."""
        if self._path is None:
            if not self._arrays:
                raise CameraError("replay camera got an empty list of frames: give at least one")
        elif self._path.is_dir():
            self._files = sorted(p for p in self._path.iterdir()
                                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self._files:
                raise CameraError(f"no images in {self._path}: {_SOURCE_HINT}")
        elif self._path.is_file():
            self._open_video(skip=self._pos)
        else:
            raise CameraError(f"no replay source at {self._path}: {_SOURCE_HINT}")
        self._open = True
        self._next_due = None

    def _open_video(self, skip: int = 0) -> None:
        if self._video is not None:
            self._video.release()
        video = cv2.VideoCapture(str(self._path))
        if not video.isOpened():
            video.release()
            raise CameraError(f"cannot read video {self._path}: is it a video file OpenCV "
                              f"reads (MJPG .avi, .mp4)? Or {_SOURCE_HINT}")
        for _ in range(skip):  # resume after a reopen; grab() is backend-independent, seek is not
            if not video.grab():
                break
        self._video = video

    def read(self) -> Frame | None:
        """The next frame, None while stalled or when exhausted; CameraError on injected errors."""
        if not self._open:
            raise CameraError(f"replay camera {self.description} is not open: call open() first")
        if self._stall_until is not None:
            if self._clock() < self._stall_until:
                return None
            self._stall_until = None
        if self._retry_at is not None:
            if self._clock() < self._retry_at:
                return None
            self._retry_at = None
        self._pace()
        fault = self._faults.pop(self._pos, None)
        if fault == "error":
            raise CameraError(f"replay camera {self.description}: injected error at frame "
                              f"{self._pos}: reopen the camera")
        if fault == "stall":
            self._stall_until = self._clock() + self.stall_s
            return None
        image = self._next_image()
        if image is None and self.loop:
            empty_pass = self._pass_frames == 0
            self._rewind_pass()
            if empty_pass:  # nothing readable in a whole pass: start over, but not in a busy loop
                self._retry_at = self._clock() + EMPTY_PASS_RETRY_S
            else:
                image = self._next_image()
        if image is None:
            return None
        self._pass_frames += 1
        self._seq += 1
        return Frame(image, self._clock(), self._seq)

    def _pace(self) -> None:
        """With `fps`, deliver no faster than a real camera would (sleep until the frame is due)."""
        if self.fps is None:
            return
        period = 1.0 / self.fps
        now = self._clock()
        if self._next_due is not None and self._next_due > now:
            self._sleep(self._next_due - now)
            self._next_due += period
        else:
            self._next_due = now + period

    def _next_image(self) -> np.ndarray | None:
        if self._path is None:
            if self._pos >= len(self._arrays):
                return None
            image = self._arrays[self._pos]
            self._pos += 1
            return self._convert(image).copy()  # consumers may draw on frames; keep the source
        if self._video is not None:
            ok, image = self._video.read()
            if not ok or image is None:
                return None
            self._pos += 1
            return self._convert(image)
        flag = cv2.IMREAD_GRAYSCALE if self.grayscale else cv2.IMREAD_COLOR
        while self._pos < len(self._files):
            path = self._files[self._pos]
            self._pos += 1
            loaded = cv2.imread(str(path), flag)
            if loaded is not None:
                self._unreadable.discard(path)  # warn again if it breaks again
                return loaded
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("skipping %s: not an image OpenCV can read", path)
        return None

    def _convert(self, image: np.ndarray) -> np.ndarray:
        if self.grayscale and image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return image

    def _rewind_pass(self) -> None:
        self._pos = 0
        self._pass_frames = 0
        if self._video is not None:
            self._open_video()

    def rewind(self) -> None:
        """Start again from the first frame (faults that already fired stay spent)."""
        self._rewind_pass()

    def close(self) -> None:
        """Release the video file; the position is kept so open() resumes (see module doc)."""
        self._open = False
        if self._video is not None:
            self._video.release()
            self._video = None

    def __enter__(self) -> ReplayCamera:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
