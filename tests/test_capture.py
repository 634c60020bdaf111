"""Capture that never goes stale: a camera that stalls, errors, hangs or is unplugged is a FAULT
within the stall time and is reopened until it returns; Picamera2 through a fake with its API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from qrframes import blank_frame, make_frame

from drivers.base import CameraError, Frame
from drivers.camera_picamera2 import Picamera2Camera
from drivers.camera_replay import ReplayCamera
from scanner import hardware
from scanner.capture import CaptureThread
from scanner.config import parse_config
from scanner.decode import decode_frame

STALL_S = 0.3


def wait_until(cond: Callable[[], bool], timeout_s: float = 6.0) -> float | None:
    """Seconds it took for `cond` to hold, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


class Running:
    def __init__(self, camera: Any, stall_s: float = STALL_S) -> None:
        self.stop = threading.Event()
        self.cap = CaptureThread(camera, self.stop, stall_s=stall_s)

    def __enter__(self) -> CaptureThread:
        self.cap.start()
        return self.cap

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.cap.join(timeout=3)
        assert not self.cap.is_alive()


def test_replay_camera_that_errors_stalls_and_returns() -> None:
    frames = [blank_frame(seed=i) for i in range(30)]
    cam = ReplayCamera(frames, fps=50, loop=True, faults={5: "error", 25: "stall"}, stall_s=1.5)
    with Running(cam) as cap:
        assert wait_until(lambda: cap.newest()[0] > 0) is not None and cap.fault is None
        # injected error at frame 5: closed and reopened after the back-off, frames resume
        assert wait_until(lambda: cap.reopens >= 1) is not None
        assert wait_until(lambda: cap.newest()[0] >= 10) is not None
        assert cap.fault is None
        # stall at frame 25: FAULT within the stall time of the last frame
        assert wait_until(lambda: cap.fault is not None and "no frame" in cap.fault) is not None
        detected_after = time.monotonic() - cap.last_frame_mono
        assert STALL_S <= detected_after < STALL_S + 0.5
        reopens = cap.reopens
        assert wait_until(lambda: cap.reopens > reopens) is not None  # it does not just wait
        # the stall ends: frames return, the fault clears
        assert wait_until(lambda: cap.fault is None, timeout_s=5) is not None
        n = cap.newest()[0]
        assert wait_until(lambda: cap.newest()[0] > n + 3) is not None


class HangingCamera:
    """A read that blocks inside the driver (a V4L2 select() waiting out its timeout)."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self) -> Frame:
        if self.hang.is_set():
            self.release.wait(5)
            self.hang.clear()
            raise CameraError("camera /dev/video9 delivered no frame: unplugged or stalled")
        time.sleep(0.01)
        return Frame(blank_frame(), time.monotonic())

    def close(self) -> None:
        pass


def test_fault_shows_while_a_read_is_blocked_and_the_camera_is_reopened_after() -> None:
    cam = HangingCamera()
    with Running(cam) as cap:
        assert wait_until(lambda: cap.newest()[0] > 0) is not None
        cam.hang.set()
        took = wait_until(lambda: cap.fault is not None)
        assert took is not None and took < 1.0 and "no frame" in str(cap.fault)
        cam.release.set()  # the driver gives up: error, reopen, frames again
        assert wait_until(lambda: cam.opens >= 2 and cap.fault is None) is not None


class UnpluggedCamera:
    def __init__(self) -> None:
        self.plugged = False
        self.open_times: list[float] = []

    def open(self) -> None:
        self.open_times.append(time.monotonic())
        if not self.plugged:
            raise CameraError("no camera at /dev/v4l/by-id/usb-x-video-index0: check the USB cable")

    def read(self) -> Frame:
        time.sleep(0.01)
        return Frame(blank_frame(), time.monotonic())

    def close(self) -> None:
        pass


def test_unplugged_camera_is_retried_with_growing_back_off_until_it_returns() -> None:
    cam = UnpluggedCamera()
    with Running(cam) as cap:
        assert wait_until(lambda: len(cam.open_times) >= 3, timeout_s=4) is not None
        assert "check the USB cable" in str(cap.fault)
        gaps = np.diff(cam.open_times[:3])
        assert gaps[1] > gaps[0] * 1.5  # 0.5 s, then 1 s
        cam.plugged = True
        assert wait_until(lambda: cap.fault is None and cap.newest()[0] > 0, timeout_s=5) is not None


def test_a_camera_that_never_delivers_is_a_fault() -> None:
    cam = ReplayCamera([blank_frame()], loop=False)  # one frame, then nothing
    with Running(cam) as cap:
        assert wait_until(lambda: cap.fault is not None) is not None


# -- Picamera2 through a fake that behaves like its API -------------------------------------------

class FakeRequest:
    def __init__(self, cam: FakePicamera2) -> None:
        self.cam = cam
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        main, lores = self.cam.config["main"], self.cam.config["lores"]
        w, h = (lores if name == "lores" else main)["size"]
        if name == "lores":  # YUV420: Y plane on top, U and V below, rows padded to a stride
            stride = (w + 63) // 64 * 64
            yuv = np.full((h * 3 // 2, stride), 128, np.uint8)
            yuv[:h, :w] = self.cam.scene
            return yuv
        bgr = np.repeat(self.cam.scene[:, :, None], 4, axis=2)  # XBGR-like: callers take [:, :, :3]
        return bgr

    def get_metadata(self) -> dict[str, Any]:
        return {"SensorTimestamp": time.monotonic_ns(), "ExposureTime": 10000}

    def release(self) -> None:
        assert not self.released, "a request released twice"
        self.released = True
        self.cam.outstanding -= 1


class FakePicamera2:
    """The methods and signatures the driver uses, from raspberrypi/picamera2 picamera2.py."""

    def __init__(self, camera_num: int = 0, *, scene: np.ndarray, fail_open: bool = False) -> None:
        if fail_open:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.camera_num = camera_num
        self.scene = scene
        self.started = False
        self.closed = False
        self.stall = False
        self.outstanding = 0
        self.config: dict[str, Any] = {}

    def create_preview_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                     raw: Any = None, transform: Any = None, colour_space: Any = None,
                                     buffer_count: int = 4, controls: dict[str, Any] | None = None,
                                     display: str = "main", encode: str = "main", queue: bool = True,
                                     sensor: Any = None, use_case: str = "preview") -> dict[str, Any]:
        if lores and main and (lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]):
            raise RuntimeError("lores stream dimensions may not exceed main stream")
        return {"main": dict(main or {}), "lores": dict(lores or {}), "controls": dict(controls or {}),
                "buffer_count": buffer_count, "queue": queue}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        assert self.config, "start() before configure()"
        self.started = True

    def capture_request(self, wait: Any = None, signal_function: Any = None, flush: Any = None) -> FakeRequest:
        assert self.started, "capture before start()"
        if self.stall:
            time.sleep(min(float(wait), 0.05))
            raise TimeoutError("timed out")
        self.outstanding += 1
        return FakeRequest(self)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def fake_factory(scene: np.ndarray, made: list[FakePicamera2], fail_open: list[bool] | None = None
                 ) -> Callable[[int], FakePicamera2]:
    def make(num: int) -> FakePicamera2:
        cam = FakePicamera2(num, scene=scene, fail_open=bool(fail_open and fail_open.pop(0)))
        made.append(cam)
        return cam
    return make


def test_picamera2_configures_lores_yuv_and_delivers_the_y_plane_as_gray() -> None:
    scene = make_frame(b"HC1:PICAMERA2-TEST")
    made: list[FakePicamera2] = []
    cam = Picamera2Camera(1, 640, 480, 20, factory=fake_factory(scene, made))
    with cam:
        fake = made[0]
        assert fake.camera_num == 1 and fake.started
        cfg = fake.config
        assert cfg["lores"] == {"format": "YUV420", "size": (640, 480)} and cfg["main"]["size"] == (640, 480)
        assert cfg["controls"] == {"FrameRate": 20.0} and cfg["queue"] is False
        frame = cam.read()
        assert frame.image.shape == (480, 640) and frame.image.flags.c_contiguous
        assert np.array_equal(frame.image, scene) and frame.seq == 1
        assert [c.data for c in decode_frame(frame.image, budget_ms=60_000)] == [b"HC1:PICAMERA2-TEST"]
        assert fake.outstanding == 0  # every request went back to libcamera
    assert fake.closed and not fake.started
    color = Picamera2Camera(0, factory=fake_factory(scene, made), color=True)
    with color:
        assert color.read().image.shape == (480, 640, 3)


def test_picamera2_errors_are_camera_errors_that_name_the_fix() -> None:
    scene = blank_frame()
    made: list[FakePicamera2] = []
    busy = Picamera2Camera(0, factory=fake_factory(scene, made, fail_open=[True]))
    with pytest.raises(CameraError, match="stop any other program"):
        busy.open()
    cam = Picamera2Camera(0, read_timeout_s=0.05, factory=fake_factory(scene, made))
    cam.open()
    made[-1].stall = True
    with pytest.raises(CameraError, match="no frame in 0.1 s"):
        cam.read()
    cam.close()
    with pytest.raises(CameraError, match="not open"):
        cam.read()
    with pytest.raises(ValueError, match="even"):
        Picamera2Camera(0, 641, 480)


def test_picamera2_missing_module_names_the_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_picamera2(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "picamera2":
            raise ImportError("No module named 'picamera2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_picamera2)
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        Picamera2Camera(0).open()


def test_picamera2_stall_is_a_fault_and_the_camera_is_reopened() -> None:
    made: list[FakePicamera2] = []
    cam = Picamera2Camera(0, read_timeout_s=0.05, factory=fake_factory(blank_frame(), made))
    with Running(cam) as cap:
        assert wait_until(lambda: cap.newest()[0] > 0) is not None
        made[-1].stall = True
        assert wait_until(lambda: cap.fault is not None) is not None
        assert wait_until(lambda: len(made) >= 2) is not None  # closed and acquired again
        assert made[0].closed
        made[-1].stall = False
        for m in made:
            m.stall = False
        assert wait_until(lambda: cap.fault is None, timeout_s=5) is not None


def test_config_picks_picamera2_without_importing_it(tmp_path: Any) -> None:
    cfg = parse_config('[checkpoint]\nmode = "real"\nid = "T-GATE-1"\ndevice_id = "t-pi-1"\n'
                       '[camera]\nsource = "picamera2"\ncsi_index = 1\nwidth = 1280\nheight = 720\n',
                       str(tmp_path / "c.toml"))
    cam = hardware.make_camera(cfg)
    assert isinstance(cam, Picamera2Camera)
    assert (cam.camera_num, cam.width, cam.height) == (1, 1280, 720)
