"""Self-test: a registry of small checks, each PASS, FAIL or SKIP with one line of detail and,
on failure, the fix. `checkpoint-scanner selftest` runs them in order (scanner/cli_selftest.py).

Why a registry: the thermometer checks live here; the camera, LEDs, disk, clock and server
checks of later work register themselves the same way, in their own module, listed in
CHECK_MODULES:

    from scanner.selftest import Context, Result, check

    @check("camera.opens", needs=("config",))
    def camera_opens(ctx: Context) -> Result:
        ...
        return Result.ok("640x480 MJPG at 15 fps")

A check whose `needs` did not PASS is skipped, so one unplugged cable gives one FAIL with its
fix, not a cascade. Checks never raise: an unexpected exception becomes a FAIL line.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from drivers.base import Thermometer
from scanner.config import Config, load_config
from scanner.errors import ConfigError

log = logging.getLogger(__name__)

# Modules that register more checks when imported (one line per module, added by later work).
CHECK_MODULES: tuple[str, ...] = ("scanner.selftest_lane",)


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


LABEL = {Status.PASS: "PASS 通过", Status.FAIL: "FAIL 失败", Status.SKIP: "SKIP 跳过"}


@dataclass(frozen=True)
class Result:
    status: Status
    detail: str
    fix: str = ""

    @classmethod
    def ok(cls, detail: str) -> Result:
        return cls(Status.PASS, detail)

    @classmethod
    def fail(cls, detail: str, fix: str) -> Result:
        return cls(Status.FAIL, detail, fix)

    @classmethod
    def skip(cls, detail: str) -> Result:
        return cls(Status.SKIP, detail)


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], Result]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    name: str
    result: Result

    def line(self) -> str:
        r = self.result
        fix = f"\n       fix / 处理: {r.fix}" if r.fix else ""
        return f"{LABEL[r.status]}  {self.name}: {r.detail}{fix}"


REGISTRY: dict[str, Check] = {}


def check(name: str, needs: tuple[str, ...] = ()) -> Callable[[Callable[[Context], Result]],
                                                                Callable[[Context], Result]]:
    """Register a check under `name` (`group.what`); runs in registration order."""
    def register(fn: Callable[[Context], Result]) -> Callable[[Context], Result]:
        if name in REGISTRY:
            raise ValueError(f"self-test check {name!r} registered twice")
        REGISTRY[name] = Check(name, fn, needs)
        return fn
    return register


@dataclass
class Context:
    """What checks share: the config, injectable device makers, and devices opened by an earlier
    check (closed at the end). Tests inject `open_bus` (an emulated bus) or `thermometer`."""

    config_path: str
    cfg: Config | None = None
    sysfs: str = "/sys"
    open_bus: Callable[[int], Any] | None = None
    thermometer: Thermometer | None = None
    state: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    results: dict[str, Status] = field(default_factory=dict)

    def passed(self, name: str) -> bool:
        return self.results.get(name) is Status.PASS

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.debug("selftest close failed", exc_info=True)
        self.closers.clear()


def check_names() -> list[str]:
    """Every registered check, in run order (the modules of CHECK_MODULES imported first)."""
    for module in CHECK_MODULES:
        importlib.import_module(module)
    return list(REGISTRY)


def run_checks(ctx: Context, only: tuple[str, ...] = ()) -> list[Outcome]:
    """Run every registered check (or those whose name starts with one of `only`, plus what
    they need), in order. Never raises."""
    check_names()
    wanted = {c.name for c in REGISTRY.values() if not only or c.name.startswith(only)}
    todo = list(wanted)
    while todo:  # and everything they need, transitively
        for need in REGISTRY[todo.pop()].needs:
            if need in REGISTRY and need not in wanted:
                wanted.add(need)
                todo.append(need)
    order = [c for c in REGISTRY.values() if c.name in wanted]
    done = ctx.results
    out: list[Outcome] = []
    try:
        for c in order:
            missing = [n for n in c.needs if done.get(n) is not Status.PASS]
            if missing:
                result = Result.skip(f"needs {', '.join(missing)}")
            else:
                try:
                    result = c.run(ctx)
                except Exception as e:  # noqa: BLE001 - a check must never crash the self-test
                    log.debug("selftest check crashed", exc_info=True)
                    result = Result.fail(f"check crashed: {e.__class__.__name__}: {e}",
                                         "report this with the output of selftest")
            done[c.name] = result.status
            out.append(Outcome(c.name, result))
    finally:
        ctx.close()
    return out


# -- config ------------------------------------------------------------------------------------


@check("config")
def config_loads(ctx: Context) -> Result:
    if ctx.cfg is None:
        try:
            ctx.cfg = load_config(ctx.config_path)
        except ConfigError as e:
            more = f" (+{len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
            problem, _, fix = e.problems[0].partition("; fix: ")
            lists = f"checkpoint-scanner check-config {ctx.config_path} lists every problem"
            return Result.fail(f"{ctx.config_path}: {problem}{more}", f"{fix}; {lists}" if fix else lists)
    cfg = ctx.cfg
    if cfg.simulation.bootstrap:  # as `run` does: demo keys and frames on a fresh machine
        from scanner.simulation import bootstrap

        bootstrap(cfg)
    mode = "simulated devices" if cfg.simulated else "real devices"
    return Result.ok(f"{ctx.config_path}: {cfg.checkpoint.kind} {cfg.checkpoint.id}, {mode}")


# -- thermometer -------------------------------------------------------------------------------

I2C_FIX = ("check SDA to GPIO2 (pin 3), SCL to GPIO3 (pin 5), 3V3 and GND; pull-ups on SDA/SCL (4.7 kOhm, the "
           "GY-906 board has them); bus speed 100 kHz or lower, never below 10 kHz "
           "(dtparam=i2c_arm_baudrate=50000 in /boot/firmware/config.txt); `i2cdetect -y {bus}` must show {addr:02x}")


def _mlx_config(ctx: Context) -> Any:
    assert ctx.cfg is not None
    return ctx.cfg.thermometer


def _sensor(ctx: Context) -> Any:
    return ctx.state["mlx90614"]


@check("thermometer.bus", needs=("config",))
def thermometer_bus(ctx: Context) -> Result:
    th = _mlx_config(ctx)
    if th.source != "mlx90614":
        return Result.skip(f"thermometer source is {th.source!r}: no I2C bus to check")
    from drivers.mlx90614 import MLX90614, open_bus

    try:
        bus = (ctx.open_bus or open_bus)(th.i2c_bus)
    except OSError as e:
        return Result.fail(str(e), "enable I2C: sudo raspi-config nonint do_i2c 0, then reboot; the service user "
                                   "needs the i2c group")
    # A self-test may run beside the lane: reads are single atomic transfers, and nothing here writes.
    sensor = MLX90614(bus, th.address, bus_number=th.i2c_bus, startup_s=0, discard_samples=0)
    ctx.closers.append(sensor.close)
    ctx.state["mlx90614"] = sensor
    return Result.ok(f"/dev/i2c-{th.i2c_bus} open")


@check("thermometer.bus_speed", needs=("thermometer.bus",))
def thermometer_bus_speed(ctx: Context) -> Result:
    """The MLX90614 speaks SMBus between 10 and 100 kHz; the Pi's default is 100 kHz, but a
    config.txt copied from a 400 kHz sensor project breaks it (docs/hardware.md sections 1 and 2)."""
    th = _mlx_config(ctx)
    node = Path(ctx.sysfs) / "class" / "i2c-adapter" / f"i2c-{th.i2c_bus}" / "of_node" / "clock-frequency"
    try:
        hz = int.from_bytes(node.read_bytes()[:4], "big")
    except OSError:
        return Result.skip(f"bus speed not readable ({node} missing: no device-tree node here)")
    fix = ("set dtparam=i2c_arm_baudrate=100000 (50000 if errors appear) in /boot/firmware/config.txt and reboot; "
           "the MLX90614 needs 10..100 kHz")
    if hz > 100_000:
        return Result.fail(f"I2C bus {th.i2c_bus} runs at {hz // 1000} kHz, above the sensor's 100 kHz", fix)
    if hz < 10_000:
        return Result.fail(f"I2C bus {th.i2c_bus} runs at {hz / 1000:g} kHz, below the sensor's 10 kHz minimum", fix)
    return Result.ok(f"I2C bus {th.i2c_bus} at {hz / 1000:g} kHz")


@check("thermometer.answers", needs=("thermometer.bus",))
def thermometer_answers(ctx: Context) -> Result:
    th = _mlx_config(ctx)
    try:
        config = _sensor(ctx).config_register()
    except OSError as e:
        return Result.fail(str(e), I2C_FIX.format(bus=th.i2c_bus, addr=th.address))
    return Result.ok(f"MLX90614 answers at {th.address:#04x} with valid PEC (config register {config:#06x})")


@check("thermometer.chip_id", needs=("thermometer.answers",))
def thermometer_chip_id(ctx: Context) -> Result:
    try:
        chip = _sensor(ctx).chip_id()
    except OSError as e:
        return Result.fail(str(e), I2C_FIX.format(bus=_mlx_config(ctx).i2c_bus, addr=_mlx_config(ctx).address))
    if chip in ("0" * 16, "f" * 16):
        return Result.fail(f"chip id {chip} is blank", "not a working MLX90614 (or a clone without an ID): "
                                                       "replace the sensor")
    return Result.ok(f"chip id {chip}")


@check("thermometer.emissivity", needs=("thermometer.answers",))
def thermometer_emissivity(ctx: Context) -> Result:
    from drivers.mlx90614 import EMISSIVITY_EXPECTED

    try:
        e = _sensor(ctx).emissivity()
    except OSError as exc:
        return Result.fail(str(exc), "check the wiring (see thermometer.answers)")
    lo, hi = EMISSIVITY_EXPECTED
    if not lo <= e <= hi:
        return Result.fail(f"emissivity {e:.4f} outside {lo}..{hi} (skin is about 0.98): skin readings are off",
                           "re-provision the sensor once (MLX90614.set_emissivity(0.98), then power-cycle it) "
                           "or replace it; never rewritten automatically")
    return Result.ok(f"emissivity {e:.4f}")


@check("thermometer.ambient", needs=("config",))
def thermometer_ambient(ctx: Context) -> Result:
    """Works on any thermometer: the real sensor (after the checks above) or the scripted one."""
    th = _mlx_config(ctx)
    if th.source == "mlx90614":
        if not ctx.passed("thermometer.answers"):
            return Result.skip("needs thermometer.answers")
        thermo: Thermometer = _sensor(ctx)
    elif ctx.thermometer is not None:
        thermo = ctx.thermometer
    else:
        from scanner import hardware

        assert ctx.cfg is not None
        thermo = hardware.make_thermometer(ctx.cfg)
        ctx.closers.append(thermo.close)
    try:
        ambient = thermo.ambient_temperature()
        obj = thermo.object_temperature()
    except OSError as e:
        return Result.fail(str(e), "check the wiring (see thermometer.answers)")
    lo, hi = th.ambient_min_c, th.ambient_max_c
    if not lo <= ambient <= hi:
        return Result.fail(f"ambient {ambient:.2f} °C outside the operating range {lo}..{hi} °C",
                           "shade the sensor from sun and heaters and let it settle 30 min; if the room really is "
                           "that temperature, readings will be REVIEW until it is not")
    return Result.ok(f"ambient {ambient:.2f} °C, object {obj:.2f} °C ({th.source})")


def summary(outcomes: list[Outcome]) -> str:
    n = {s: sum(o.result.status is s for o in outcomes) for s in Status}
    return (f"{n[Status.PASS]} passed, {n[Status.FAIL]} failed, {n[Status.SKIP]} skipped / "
            f"通过 {n[Status.PASS]}，失败 {n[Status.FAIL]}，跳过 {n[Status.SKIP]}")
