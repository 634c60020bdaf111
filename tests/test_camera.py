"""Camera seams: ReplayCamera over real PNG/JPEG/video files, OpenCVCamera error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from qrframes import make_frame, to_bgr, write_images, write_video

from drivers.base import Camera, CameraError, Frame
from drivers.camera_opencv import OpenCVCamera
from drivers.camera_replay import ReplayCamera
from scanner.decode import Decoder

BUDGET_MS = 60_000.0  # explicit and generous: no test may depend on the machine's speed

PAYLOADS = [f"HC1:REPLAY-{i:03d}".encode() for i in range(3)]


class FakeClock:
    """Steppable monotonic clock; `sleep` advances it, so paced replay runs instantly."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [make_frame(p, seed=i) for i, p in enumerate(PAYLOADS)]


def payloads_of(camera: ReplayCamera) -> list[bytes]:
    decoder, out = Decoder(budget_ms=BUDGET_MS), []
    while (frame := camera.read()) is not None:
        out += [c.data for c in decoder.decode(frame.image)]
    return out


def test_replay_folder_of_png_and_jpeg_in_name_order(tmp_path: Path, frames: list[np.ndarray],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, frames[:2], ext="png", prefix="a")
    write_images(tmp_path, frames[2:], ext="jpg", prefix="b")
    (tmp_path / "a_0005_broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    camera = ReplayCamera(tmp_path)
    assert isinstance(camera, Camera)
    with caplog.at_level(logging.WARNING), camera:
        assert payloads_of(camera) == PAYLOADS
    assert "a_0005_broken.png" in caplog.text


def test_replay_frames_are_gray_or_bgr_with_seq_and_time(tmp_path: Path,
                                                         frames: list[np.ndarray]) -> None:
    write_images(tmp_path, [to_bgr(f) for f in frames])
    clock = FakeClock()
    with ReplayCamera(tmp_path, clock=clock) as camera:
        first = camera.read()
        assert isinstance(first, Frame)
        assert first.image.shape == (480, 640) and first.image.dtype == np.uint8
        assert (first.seq, first.t_mono) == (1, 100.0)
    with ReplayCamera(tmp_path, grayscale=False) as camera:
        frame = camera.read()
        assert frame is not None and frame.image.shape == (480, 640, 3)


def test_replay_video_file(tmp_path: Path, frames: list[np.ndarray]) -> None:
    video = write_video(tmp_path / "lane.avi", frames)
    with ReplayCamera(video) as camera:
        assert payloads_of(camera) == PAYLOADS
        assert camera.read() is None


def test_replay_video_loops(tmp_path: Path, frames: list[np.ndarray]) -> None:
    video = write_video(tmp_path / "lane.avi", frames[:2])
    decoder = Decoder(budget_ms=BUDGET_MS)
    with ReplayCamera(video, loop=True) as camera:
        got = []
        for _ in range(5):
            frame = camera.read()
            assert frame is not None
            got += [c.data for c in decoder.decode(frame.image)]
    assert got == [PAYLOADS[0], PAYLOADS[1], PAYLOADS[0], PAYLOADS[1], PAYLOADS[0]]


def test_in_memory_exhaustion_and_loop(frames: list[np.ndarray]) -> None:
    with ReplayCamera(frames) as camera:
        assert [camera.read() is not None for _ in range(4)] == [True, True, True, False]
        assert camera.read() is None
    with ReplayCamera(frames, loop=True) as camera:
        seqs = [f.seq for f in (camera.read() for _ in range(7)) if f is not None]
        assert seqs == [1, 2, 3, 4, 5, 6, 7]


def test_in_memory_frames_are_copies(frames: list[np.ndarray]) -> None:
    original = frames[0].copy()
    with ReplayCamera(frames[:1]) as camera:
        frame = camera.read()
        assert frame is not None
        frame.image[:] = 0
    assert np.array_equal(frames[0], original)


def test_bgr_arrays_become_gray(frames: list[np.ndarray]) -> None:
    with ReplayCamera([to_bgr(frames[0])]) as camera:
        frame = camera.read()
        assert frame is not None and frame.image.ndim == 2


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p / "empty_dir"])
def test_missing_or_empty_source_names_the_path_and_the_fix(tmp_path: Path, make) -> None:
    (tmp_path / "empty_dir").mkdir()
    path = make(tmp_path)
    with pytest.raises(CameraError) as err:
        ReplayCamera(path).open()
    assert str(path) in str(err.value) and ".png" in str(err.value)
    assert isinstance(err.value, OSError)


def test_unreadable_video_file(tmp_path: Path) -> None:
    bogus = tmp_path / "clip.avi"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(CameraError, match="clip.avi"):
        ReplayCamera(bogus).open()


def test_read_before_open_is_an_error(frames: list[np.ndarray]) -> None:
    with pytest.raises(CameraError, match="open"):
        ReplayCamera(frames).read()


def test_fault_error_raises_once_then_resumes(frames: list[np.ndarray]) -> None:
    camera = ReplayCamera(frames, faults={1: "error"})
    camera.open()
    first = camera.read()
    with pytest.raises(CameraError, match="frame 1"):
        camera.read()
    camera.close()  # what the capture thread does: reopen after an error
    camera.open()
    second, third = camera.read(), camera.read()
    assert first is not None and second is not None and third is not None
    assert np.array_equal(second.image, frames[1]) and np.array_equal(third.image, frames[2])
    assert camera.read() is None


def test_fault_stall_returns_none_for_stall_s(frames: list[np.ndarray]) -> None:
    clock = FakeClock()
    camera = ReplayCamera(frames, faults={1: "stall"}, stall_s=2.0, clock=clock)
    camera.open()
    assert camera.read() is not None
    assert camera.read() is None
    clock.t += 1.9
    assert camera.read() is None
    clock.t += 0.2
    frame = camera.read()
    assert frame is not None and np.array_equal(frame.image, frames[1])


def test_faults_fire_once_even_when_looping(frames: list[np.ndarray]) -> None:
    camera = ReplayCamera(frames, loop=True, faults={0: "error"})
    camera.open()
    with pytest.raises(CameraError):
        camera.read()
    assert all(camera.read() is not None for _ in range(6))


def test_bad_fault_spec() -> None:
    with pytest.raises(ValueError, match="stall"):
        ReplayCamera([np.zeros((4, 4), np.uint8)], faults={0: "explode"})


def test_fps_paces_with_the_injected_clock(frames: list[np.ndarray]) -> None:
    clock = FakeClock()
    with ReplayCamera(frames, fps=10, clock=clock, sleep=clock.sleep) as camera:
        stamps = [f.t_mono for f in (camera.read(), camera.read(), camera.read()) if f]
    assert stamps == pytest.approx([100.0, 100.1, 100.2])


def test_opencv_camera_missing_device_names_path_and_fix() -> None:
    path = "/dev/v4l/by-id/usb-NoSuchVendor_Camera-video-index0"
    camera = OpenCVCamera(path)
    with pytest.raises(CameraError) as err:
        camera.open()
    message = str(err.value)
    assert path in message and "v4l2-ctl --list-devices" in message and "USB cable" in message
    with pytest.raises(CameraError, match="not open"):
        camera.read()
    camera.close()
    camera.close()  # idempotent


def test_opencv_camera_on_a_non_camera_file(tmp_path: Path) -> None:
    not_a_camera = tmp_path / "video0"
    not_a_camera.write_bytes(b"")
    with pytest.raises(CameraError) as err:
        OpenCVCamera(str(not_a_camera)).open()
    assert str(not_a_camera) in str(err.value) and "fuser" in str(err.value)


def test_opencv_camera_validates_fourcc() -> None:
    with pytest.raises(ValueError, match="MJPG"):
        OpenCVCamera("/dev/video0", fourcc="MJPEG")
