"""A stepped lane for deterministic tests: the real `Lane` (passage, policy, verification,
decoder, outbox, gpiozero indicators on MockFactory pins) driven one `step()` at a time on a
fake monotonic clock, with the scene (what the camera sees, what the thermometer reads, how the
store behaves) set by the test. No threads, no sleeping: what happens at t = 3.2 s is exact.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from qrframes import make_frame

from drivers.base import Frame, SensorError
from drivers.indicators import mock_pin_factory
from scanner import hardware
from scanner.config import Config, parse_config
from scanner.errors import StoreError
from scanner.models import PassageRecord
from scanner.service import Devices, Lane
from scanner.store import Store

AMBIENT_C = 22.0
OFFSET_C = 2.0  # body = object + 2.0 in LANE_TOML
DT = 0.05

LANE_TOML = """
[checkpoint]
mode = "simulated"
id = "T-1"
device_id = "t-dev"
kind = "{kind}"
villages = ["330381001001"]
[camera]
source = "replay"
replay_path = "x"
[thermometer]
source = "scripted"
poll_interval_s = 0.05
presence_hold_s = 0.05
samples = 3
offset_c = 2.0
fault_after = 3
[decode]
# a budget no loaded machine runs out of: the tests must not depend on its speed
budget_ms = 2000
[indicators]
source = "mock"
relay_pin = 23
relay_pulse_s = 0.3
verdict_hold_s = 0.5
[policy]
fever_threshold_c = {fever}
pairing_window_s = {window}
cooldown_s = {cooldown}
override_window_s = {override_window}
[sync]
enabled = {sync}
server_url = "https://centre.example.gov.cn"
[clock]
trust = "always"
"""


def step_config(tmp: Path, *, kind: str = "highway_exit", fever: float = 37.3, window: float = 2.0,
                cooldown: float = 1.0, override_window: float = 60.0, sync: bool = False) -> Config:
    text = LANE_TOML.format(kind=kind, fever=fever, window=window, cooldown=cooldown,
                            override_window=override_window, sync=str(sync).lower())
    cfg = parse_config(text, str(tmp / "lane.toml"))
    return replace(cfg, store=replace(cfg.store, path=str(tmp / "outbox.db")))


class FakeMono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeCapture:
    """Stands in for the capture thread: a fresh frame of whatever the test shows at every look,
    as a camera delivers them (the decoder's motion gate then skips the unchanged ones)."""

    def __init__(self, mono: FakeMono) -> None:
        self.mono = mono
        self.seq = 0
        self.image: Any = None
        self.frame: Frame | None = None
        self.fault: str | None = None

    def show(self, image: Any) -> None:
        self.image = image

    def newest(self) -> tuple[int, Frame | None]:
        if self.image is not None:
            self.seq += 1
            self.frame = Frame(self.image, self.mono.t, self.seq)
        return self.seq, self.frame

    def start(self) -> None: ...

    def is_alive(self) -> bool:
        return True

    def join(self, timeout: float | None = None) -> None: ...


class ControlledThermometer:
    """Reads what the test sets: a skin temperature (None = nobody there), NaN, or a fault."""

    def __init__(self) -> None:
        self.object_c: float = AMBIENT_C
        self.ambient_c: float = AMBIENT_C
        self.failing = False
        self.reads = 0

    def object_temperature(self) -> float:
        self.reads += 1
        if self.failing:
            raise SensorError("emulated NACK")
        return self.object_c

    def ambient_temperature(self) -> float:
        if self.failing:
            raise SensorError("emulated NACK")
        return self.ambient_c

    def close(self) -> None: ...


class ControlledStore:
    """The real outbox, with the test choosing how the next commits behave: "ok", "fail" (an
    I/O error, as a full or read-only card gives) or "slow" (the commit completes, but only
    after `slow_s` of the lane's clock: a stalling SD card)."""

    def __init__(self, store: Store, mono: FakeMono) -> None:
        self.store = store
        self.mono = mono
        self.mode = "ok"
        self.slow_s = 30.0

    def record(self, rec: PassageRecord) -> int:
        if self.mode == "fail":
            raise StoreError("disk I/O error (emulated)")
        seq = self.store.record(rec)
        if self.mode == "slow":
            self.mono.t += self.slow_s
        return seq

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class FakeClock:
    def __init__(self, trusted: bool = True) -> None:
        self.is_trusted = trusted

    def now(self) -> datetime:
        return datetime.now(UTC)

    def trusted(self) -> bool:
        return self.is_trusted


class ShownPatterns:
    """Wraps the real gpiozero indicators and notes each pattern shown, at the lane's time."""

    def __init__(self, inner: Any, mono: FakeMono) -> None:
        self.inner = inner
        self.mono = mono
        self.shown: list[tuple[float, str]] = []

    def show(self, pattern: Any) -> None:
        self.shown.append((self.mono.t, pattern.name))
        self.inner.show(pattern)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_FRAMES: dict[tuple[str, ...], np.ndarray] = {}
BLANK = np.full((480, 640), 200, dtype=np.uint8)


def frame_of(*payloads: str) -> np.ndarray:
    if not payloads:
        return BLANK
    if payloads not in _FRAMES:
        _FRAMES[payloads] = make_frame(*payloads, module_px=3)
    return _FRAMES[payloads]


class StepLane:
    def __init__(self, tmp: Path, trust: Any, cfg: Config | None = None, *, clock_trusted: bool = True,
                 stall_s: float = 5.0, **cfg_kw: Any) -> None:
        self.cfg = cfg or step_config(tmp, **cfg_kw)
        self.mono = FakeMono()
        self.factory = mock_pin_factory()
        self.thermo = ControlledThermometer()
        self.indicators = ShownPatterns(hardware.make_indicators(self.cfg, pin_factory=self.factory), self.mono)
        self.store = ControlledStore(Store.open(self.cfg.store.path), self.mono)
        self.clock = FakeClock(clock_trusted)
        self.rows: list[dict[str, Any]] = []
        self.devices = Devices(camera=None, thermometer=self.thermo, indicators=self.indicators)  # type: ignore[arg-type]
        self.lane = Lane(self.cfg, self.devices, trust, self.store, self.clock,  # type: ignore[arg-type]
                         on_record=lambda row, o, st: self.rows.append(row), monotonic=self.mono, stall_s=stall_s)
        self.capture = FakeCapture(self.mono)
        self.lane.capture = self.capture  # type: ignore[assignment]

    # -- the scene -------------------------------------------------------------------------
    def codes(self, *payloads: str) -> None:
        self.capture.show(frame_of(*payloads))

    def skin(self, body_c: float | None) -> None:
        """Somebody at the sensor whose calibrated body temperature is `body_c`; None = nobody;
        NaN = the sensor returns NaN."""
        if body_c is None:
            self.thermo.object_c = AMBIENT_C
        elif math.isnan(body_c):
            self.thermo.object_c = math.nan
        else:
            self.thermo.object_c = body_c - OFFSET_C

    def run(self, seconds: float) -> None:
        for _ in range(max(1, round(seconds / DT))):
            self.lane.step()
            self.mono.t += DT

    # -- what came out ------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return self.store.store.rows(limit=100000)

    def close(self) -> None:
        self.store.store.close()
        self.indicators.inner.close()
        self.factory.reset()

    def __enter__(self) -> StepLane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
