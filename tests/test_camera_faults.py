"""A broken camera stack is a FAULT that names the fix, never a dead capture thread: picamera2 that
fails on import (apt's build against numpy 1.24 under a pip numpy 2), and any exception a driver
should not raise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from qrframes import blank_frame

from drivers.base import CameraError, Frame
from drivers.camera_picamera2 import Picamera2Camera
from scanner.capture import CaptureThread

# The message Bookworm's picamera2 (through simplejpeg) gives under numpy 2.
NUMPY_ABI = ("numpy.dtype size changed, may indicate binary incompatibility. "
             "Expected 96 from C header, got 88 from PyObject")


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """A hang guard only: nothing here asserts how long a step took."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


@pytest.fixture
def broken_picamera2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `picamera2` package on sys.path whose import raises what the real one raises."""
    pkg = tmp_path / "picamera2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"raise ValueError({NUMPY_ABI!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    return pkg


def test_picamera2_that_fails_on_import_is_a_camera_error_naming_the_fix(broken_picamera2: Path) -> None:
    with pytest.raises(CameraError) as info:
        Picamera2Camera(0).open()
    text = str(info.value)
    assert "numpy.dtype size changed" in text and "install-pi.sh" in text and "system numpy" in text
    assert "\n" not in text
    assert isinstance(info.value.__cause__, ValueError)


def test_picamera2_missing_still_names_the_apt_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "picamera2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('libcamera not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        Picamera2Camera(0).open()


class Running:
    def __init__(self, camera: object) -> None:
        self.stop = threading.Event()
        self.cap = CaptureThread(camera, self.stop, stall_s=0.3)  # type: ignore[arg-type]

    def __enter__(self) -> CaptureThread:
        self.cap.start()
        return self.cap

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.cap.join(timeout=15)
        assert not self.cap.is_alive()


def test_capture_thread_with_a_broken_picamera2_is_a_fault_and_keeps_running(broken_picamera2: Path) -> None:
    with Running(Picamera2Camera(0)) as cap:
        assert wait_until(lambda: cap.reopens >= 2)
        assert cap.is_alive()
        assert "install-pi.sh" in str(cap.fault) and "numpy" in str(cap.fault)


class BuggyCamera:
    """A driver that raises what no driver should (a bug), `failures` times, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self) -> Frame:
        if self.failures > 0:
            self.failures -= 1
            raise ZeroDivisionError("division by zero")
        time.sleep(0.01)
        return Frame(blank_frame(), time.monotonic())

    def close(self) -> None:
        pass


def test_any_driver_exception_is_a_fault_logged_once_and_capture_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="scanner.capture")
    cam = BuggyCamera(failures=2)
    with Running(cam) as cap:
        assert wait_until(lambda: cap.reopens >= 1)
        assert cap.is_alive()
        fault = str(cap.fault)
        assert "ZeroDivisionError" in fault and "\n" not in fault
        assert wait_until(lambda: cap.newest()[0] > 0 and cap.fault is None)
        assert cam.opens >= 3 and cap.reopens == 2
    errors = [r for r in caplog.records if "event=camera_driver_error" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    assert "test_camera_faults.py:" in errors[0].getMessage()  # where it was raised
    assert errors[0].exc_info is None  # one line; the traceback only at debug level
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
