"""The one place that picks real or simulated devices, from the config alone.

Real drivers are imported only when configured, so a laptop without smbus2's /dev/i2c-*
or a Pi without a camera stack still runs the simulated lane.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.base import SensorError, Thermometer
from scanner.config import Config, device_mismatches
from scanner.errors import ConfigError
from scanner.locks import lock_lane_devices
from scanner.numbers import is_finite_number
from scanner.service import Devices

log = logging.getLogger(__name__)


class ReopeningThermometer:
    """Wraps a thermometer factory: if the sensor cannot be opened (bus missing, chip not
    answering) every read fails with the reason, and opening is retried with back-off, so a
    kiosk recovers by itself when the cable is pushed back in.

    Only opening: once open, a sensor that goes away is the driver's business (MLX90614
    reopens its own bus with back-off and re-settles after it answers again), so its failure
    counts and start-up state survive an outage instead of being rebuilt per read."""

    def __init__(self, factory: Callable[[], Thermometer], monotonic: Callable[[], float] = time.monotonic,
                 background: bool = True) -> None:
        self._factory = factory
        self._dev: Thermometer | None = None
        self._next_try = 0.0
        self._backoff = 1.0
        self._error = "not opened yet"
        self._clock = monotonic
        self._lock = threading.Lock()
        self._background = background
        self._opener: threading.Thread | None = None
        self._closed = False

    def _open(self) -> None:
        """One attempt. The MLX90614 start-up (power-on wait, reads, retries) takes ~350 ms, so the
        lane runs it on a thread of its own: the scan loop keeps reading codes meanwhile."""
        try:
            dev = self._factory()
        except OSError as e:
            with self._lock:
                self._error = str(e)
                self._next_try = self._clock() + self._backoff
                self._backoff = min(self._backoff * 2, 30.0)
            return
        with self._lock:
            if self._closed:
                dev.close()
                return
            self._dev = dev
            self._backoff = 1.0
        log.info("event=thermometer_opened")

    def _get(self) -> Thermometer:
        with self._lock:
            if self._dev is not None:
                return self._dev
            busy = self._opener is not None and self._opener.is_alive()
            due = not busy and not self._closed and self._clock() >= self._next_try
            if due and self._background:
                self._opener = threading.Thread(target=self._open, name="thermometer-open", daemon=True)
                self._opener.start()
        if due and not self._background:
            self._open()
            with self._lock:
                if self._dev is not None:
                    return self._dev
        with self._lock:
            raise SensorError(self._error)

    def _call(self, name: str) -> float:
        dev = self._get()
        try:
            value = getattr(dev, name)()
        except SensorError:
            raise
        except OSError as e:
            raise SensorError(str(e)) from e
        if not is_finite_number(value):  # a NaN would compare as "no fever"; the sensor is then at fault
            raise SensorError(f"{name.replace('_', ' ')} is not a finite number (got {value!r})")
        return float(value)

    def object_temperature(self) -> float:
        return self._call("object_temperature")

    def ambient_temperature(self) -> float:
        return self._call("ambient_temperature")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opener = self._opener
            if self._dev is not None:
                self._dev.close()
                self._dev = None
        if opener is not None:
            opener.join(timeout=2)


def _refuse_mismatch(cfg: Config) -> None:
    """No simulated device on a real lane, no real one on a simulated lane, even for a Config
    built in code with dataclasses.replace (the file check is in scanner.config)."""
    bad = device_mismatches(cfg)
    if bad:
        raise ConfigError([msg for _, msg in bad], cfg.source_path or None)


def replay_dir(cfg: Config) -> Path:
    """Where the replay camera reads: `[camera] replay_path`, or with bootstrap and no path a
    `sim-frames` folder beside the outbox. Never `Path("")`, the working directory, where the
    bootstrap would write its frames (and clear the old ones) into whatever folder it ran in."""
    if cfg.camera.replay_path:
        return Path(cfg.camera.replay_path)
    return Path(cfg.store.path).parent / "sim-frames"


def make_camera(cfg: Config, frames: Any = None) -> Any:
    _refuse_mismatch(cfg)
    cam = cfg.camera
    if cam.source == "opencv":
        from drivers.camera_opencv import OpenCVCamera

        return OpenCVCamera(cam.device, width=cam.width, height=cam.height, fps=cam.fps)
    if cam.source == "picamera2":  # picamera2 itself is imported when the camera opens
        from drivers.camera_picamera2 import Picamera2Camera

        return Picamera2Camera(cam.csi_index, width=cam.width, height=cam.height, fps=cam.fps)
    if cam.source != "replay":
        raise ConfigError([f"camera.source: unknown (got {cam.source!r}); fix: opencv, picamera2 or replay"])
    from drivers.camera_replay import ReplayCamera

    return ReplayCamera(frames if frames is not None else replay_dir(cfg), fps=cam.replay_fps,
                        loop=cam.replay_loop)


def make_thermometer(cfg: Config) -> Thermometer:
    _refuse_mismatch(cfg)
    th = cfg.thermometer
    if th.source == "mlx90614":
        from drivers.mlx90614 import MLX90614

        def open_chip() -> Thermometer:
            chip = MLX90614.from_bus_number(th.i2c_bus, address=th.address)
            try:
                chip.startup_report()
            except OSError:
                chip.close()  # the next try opens a fresh bus; never leak the fd
                raise
            return chip

        return ReopeningThermometer(open_chip)
    if th.source != "scripted":
        raise ConfigError([f"thermometer.source: unknown (got {th.source!r}); fix: mlx90614 or scripted"])
    from drivers.thermometer_scripted import ScriptedThermometer

    sim = cfg.simulation
    away = max(sim.person_every_s - 2.0, 0.5)
    # A person every person_every_s: 2 s at the sensor, then nobody.
    return ScriptedThermometer([(away, sim.ambient_c, sim.ambient_c), (2.0, sim.person_temp_c, sim.ambient_c)],
                               loop=True, noise_c=0.03)


def make_indicators(cfg: Config, pin_factory: Any = None) -> Any:
    from drivers.indicators import GpioIndicators, mock_pin_factory, real_pin_factory

    _refuse_mismatch(cfg)
    ind = cfg.indicators
    if pin_factory is None:
        if ind.source not in ("mock", "gpio"):
            raise ConfigError([f"indicators.source: unknown (got {ind.source!r}); fix: gpio or mock"])
        pin_factory = mock_pin_factory() if ind.source == "mock" else real_pin_factory(ind.pin_factory)
    return GpioIndicators(ind.green_pin, ind.red_pin, ind.buzzer_pin, ind.relay_pin or None,
                          active_high=ind.active_high, relay_active_high=ind.relay_active_high,
                          pin_factory=pin_factory)


def open_devices(cfg: Config, *, frames: Any = None, pin_factory: Any = None,
                 thermometer: Thermometer | None = None) -> Devices:
    """Open in order: indicators first (so a later failure can be shown), then thermometer,
    then camera (opened by the capture thread, which retries). Closers run in reverse. The real
    I2C bus and GPIO chips are locked first: a second daemon on this Pi gets InUseError."""
    closers = [lock_lane_devices(cfg, thermometer=thermometer is None, gpio=pin_factory is None)]
    try:
        indicators = make_indicators(cfg, pin_factory)
        closers.append(indicators.close)
        thermo = thermometer or make_thermometer(cfg)
        closers.append(thermo.close)
        camera = make_camera(cfg, frames)
    except Exception:
        for c in reversed(closers):
            c()
        raise
    return Devices(camera=camera, thermometer=thermo, indicators=indicators, closers=closers)


def close_devices(dev: Devices) -> None:
    try:
        dev.indicators.off()
    except OSError:
        pass
    for c in reversed(dev.closers):
        try:
            c()
        except Exception:  # noqa: BLE001 - keep closing the rest
            log.warning("event=close_failed", exc_info=True)
