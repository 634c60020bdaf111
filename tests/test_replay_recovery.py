"""The replay camera recovers after a pass in which no frame could be read, the capture's fault
text is what is true now, and the monitor's camera fps falls to 0 when no frames arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pytest
from qrframes import blank_frame

import drivers.camera_replay as replay
from drivers.base import CameraError, Frame
from drivers.camera_replay import EMPTY_PASS_RETRY_S, ReplayCamera
from scanner.capture import CaptureThread
from scanner.monitor import FPS_STALE_S, LaneMonitor


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _unreadable_folder(tmp: Path, n: int = 3) -> list[Path]:
    paths = [tmp / f"frame-{i:02d}.png" for i in range(n)]
    for p in paths:
        p.write_bytes(b"\x89PNG half-copied")  # a .png OpenCV cannot read (yet)
    return paths


def _make_readable(paths: list[Path]) -> None:
    for i, p in enumerate(paths):
        tmp = p.with_name(p.stem + ".tmp.png")
        cv2.imwrite(str(tmp), blank_frame(seed=i))
        tmp.replace(p)


def test_a_looping_replay_recovers_after_a_pass_with_no_readable_frame(tmp_path: Path) -> None:
    paths = _unreadable_folder(tmp_path)
    clock = FakeClock()
    cam = ReplayCamera(tmp_path, loop=True, clock=clock)
    cam.open()
    assert [cam.read() for _ in range(3)] == [None, None, None]
    _make_readable(paths)
    clock.t += EMPTY_PASS_RETRY_S + 0.01
    frame = cam.read()
    assert isinstance(frame, Frame) and frame.image.shape == (480, 640)
    seqs = [f.seq for f in (cam.read() for _ in range(6)) if f is not None]
    assert seqs == [2, 3, 4, 5, 6, 7]  # and it keeps looping over the now readable files


def test_an_unreadable_pass_is_retried_after_a_pause_not_in_a_busy_loop(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _unreadable_folder(tmp_path, 4)
    calls: list[str] = []
    real = cv2.imread

    def counting(path: str, *a: Any) -> Any:
        calls.append(path)
        return real(path, *a)

    monkeypatch.setattr(replay.cv2, "imread", counting)
    clock = FakeClock()
    cam = ReplayCamera(tmp_path, loop=True, clock=clock)
    cam.open()
    for _ in range(100):
        assert cam.read() is None
    assert len(calls) == 4  # one pass, then nothing until the pause is over
    clock.t += EMPTY_PASS_RETRY_S + 0.01
    assert cam.read() is None
    assert len(calls) == 8


def test_the_capture_thread_gets_frames_again_once_the_files_are_readable(tmp_path: Path) -> None:
    paths = _unreadable_folder(tmp_path)
    stop = threading.Event()
    cap = CaptureThread(ReplayCamera(tmp_path, loop=True, fps=50), stop, stall_s=0.3)
    cap.start()
    try:
        assert _wait(lambda: cap.fault is not None and "no frame" in cap.fault)
        assert cap.newest()[0] == 0
        _make_readable(paths)
        assert _wait(lambda: cap.newest()[0] >= 5 and cap.fault is None, timeout_s=10)
    finally:
        stop.set()
        cap.join(timeout=3)
    assert not cap.is_alive()


class OpensLateCamera:
    """open() fails once with a message, then opens but delivers nothing."""

    def __init__(self) -> None:
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens == 1:
            raise CameraError("camera /dev/video0 not found: plug it in")

    def read(self) -> Frame | None:
        return None

    def close(self) -> None:
        pass


def test_the_fault_text_is_not_an_old_open_error(tmp_path: Path) -> None:
    cam = OpensLateCamera()
    stop = threading.Event()
    cap = CaptureThread(cam, stop, stall_s=5.0)  # longer than the test: only the error text can show
    cap.start()
    try:
        assert _wait(lambda: cam.opens >= 1 and cap.fault is not None and "not found" in cap.fault)
        assert _wait(lambda: cam.opens >= 2)  # opened after the 0.5 s back-off
        assert _wait(lambda: cap.fault is None or "not found" not in cap.fault)
    finally:
        stop.set()
        cap.join(timeout=3)


def test_camera_fps_falls_to_zero_when_frames_stop() -> None:
    clock = FakeClock()
    mon = LaneMonitor("T-1", "highway_exit", monotonic=clock)
    for _ in range(20):  # 10 frames a second
        mon.frame(None)
        clock.t += 0.1
    assert mon.camera_fps() == pytest.approx(10.0, abs=0.1)
    assert mon.snapshot()["health"]["camera_fps"] == pytest.approx(10.0, abs=0.1)
    clock.t += FPS_STALE_S  # no frame since
    assert mon.camera_fps() == 0.0 and mon.snapshot()["health"]["camera_fps"] == 0.0
    mon.frame(None)
    clock.t += 0.1
    mon.frame(None)
    assert mon.camera_fps() > 0  # and it comes back with the frames


def _wait(cond: Callable[[], bool], timeout_s: float = 6.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return True
        time.sleep(0.01)
    return False
