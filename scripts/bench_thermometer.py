#!/usr/bin/env python3
"""How many I2C transactions and how long one temperature measurement takes with the default
settings ([thermometer] defaults of scanner/config.py), the way the lane takes it: one object and
one ambient read per poll_interval_s into the Screener, the real MLX90614 driver on the emulated
chip (tests/emulated_mlx90614.py) with one LSB of sensor jitter.

Time has three parts, reported separately:
  - simulated: the sample interval and the driver's sleeps, on an injected clock (no waiting);
  - CPU: measured time of the driver path per read (perf_counter), minus nothing: it includes the
    emulated bus, whose own cost per transaction is measured and printed beside it;
  - wire: bits on the bus per combined read (S, SA+W, cmd, Sr, SA+R, LSB, MSB, PEC, P with ACKs)
    at 100 kHz, computed; the kernel's ioctl overhead on a Pi is not modelled.
Run: .venv/bin/python scripts/bench_thermometer.py [N measurements, default 200]
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from emulated_mlx90614 import EmulatedBus, EmulatedMLX90614, FakeClock  # noqa: E402
from smbus2 import i2c_msg  # noqa: E402

from drivers.mlx90614 import MLX90614  # noqa: E402
from scanner.config import ThermometerSection  # noqa: E402
from scanner.screening import Screener, ScreeningRules  # noqa: E402

AMBIENT_C = 22.0
SKIN_C = 35.0
READ_BITS = 1 + 9 + 9 + 1 + 9 + 9 + 9 + 9 + 1  # S, SA+W+A, cmd+A, Sr, SA+R+A, LSB+A, MSB+A, PEC+N, P
BUS_HZ = 100_000


class Rig:
    def __init__(self, fault: str | None = None, every: int = 1) -> None:
        self.th = ThermometerSection()
        self.rules = ScreeningRules.from_config(self.th)
        self.clock = FakeClock()
        self.chip = EmulatedMLX90614(noise_lsb=1, seed=7)
        self.chip.set_ambient(AMBIENT_C)
        self.chip.set_object(AMBIENT_C)
        if fault:
            self.chip.inject(fault, count=None, every=every)
        self.buses: list[EmulatedBus] = []
        self.sensor = MLX90614(self.open_bus(), self.th.address, bus_number=self.th.i2c_bus,
                               sleep=self.clock.sleep, monotonic=self.clock, reopen=self.open_bus)
        self.screener = Screener(self.rules)
        self.cpu_s: list[float] = []  # per poll (object + ambient read)

    def open_bus(self) -> EmulatedBus:
        self.buses.append(EmulatedBus({0x5A: self.chip}))
        return self.buses[-1]

    @property
    def transactions(self) -> int:
        return sum(len(b.log) for b in self.buses)

    def poll(self):  # type: ignore[no-untyped-def]
        t = self.clock()
        start = time.perf_counter()
        try:
            obj, amb = self.sensor.object_temperature(), self.sensor.ambient_temperature()
        except OSError as e:
            self.cpu_s.append(time.perf_counter() - start)
            m = self.screener.feed_error(t, str(e))
        else:
            self.cpu_s.append(time.perf_counter() - start)
            m = self.screener.feed(t, obj, amb)
        self.clock.now += self.th.poll_interval_s
        return m

    def measure(self) -> tuple[int, float, int, float]:
        """Nobody for 1 s, then a person until the measurement: (transactions, simulated s, polls,
        CPU s) counted from the first poll that sees the person."""
        self.chip.set_object(AMBIENT_C)
        for _ in range(int(1.0 / self.th.poll_interval_s)):
            self.poll()
        self.chip.set_object(SKIN_C)
        n0, t0, cpu0 = self.transactions, self.clock(), len(self.cpu_s)
        for polls in range(1, 1000):
            m = self.poll()
            if m is not None:
                assert m.status.value == "OK", m
                return (self.transactions - n0, self.clock() - t0, polls, sum(self.cpu_s[cpu0:]))
        raise RuntimeError("no measurement")


def emulated_bus_cost_s(n: int = 5000) -> float:
    bus = EmulatedBus({0x5A: EmulatedMLX90614()})
    start = time.perf_counter()
    for _ in range(n):
        bus.i2c_rdwr(i2c_msg.write(0x5A, [0x07]), i2c_msg.read(0x5A, 3))
    return (time.perf_counter() - start) / n


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    logging.getLogger("drivers.mlx90614").setLevel(logging.CRITICAL)  # the faults below are on purpose
    rig = Rig()
    th = rig.th
    print(f"defaults: poll_interval_s={th.poll_interval_s} presence_hold_s={th.presence_hold_s} samples={th.samples} "
          f"retries=3 discard_samples=2 startup_s=0.25, bus {BUS_HZ // 1000} kHz")

    rig.sensor.startup_report()
    rig.poll()
    print(f"start-up: {rig.transactions} transactions (config, emissivity, 4 id words, 2+2 discarded samples, "
          f"first poll), waits {sum(rig.clock.sleeps) * 1000:.0f} ms for the power-on reset")

    results = [rig.measure() for _ in range(n)]
    txns = statistics.median(r[0] for r in results)
    sim_s = statistics.median(r[1] for r in results)
    polls = statistics.median(r[2] for r in results)
    cpu_ms = statistics.median(r[3] for r in results) * 1000
    per_read_us = statistics.median(rig.cpu_s) / 2 * 1e6
    wire_ms = READ_BITS / BUS_HZ * 1000
    emu_us = emulated_bus_cost_s() * 1e6
    print(f"one measurement ({n} runs, median): {txns:.0f} transactions in {polls:.0f} polls, "
          f"{sim_s * 1000:.0f} ms from arrival to result (presence hold + {th.samples} samples at "
          f"{th.poll_interval_s * 1000:.0f} ms)")
    print(f"  CPU of the driver path: {cpu_ms:.2f} ms per measurement, {per_read_us:.0f} us per read "
          f"(of which the emulated bus {emu_us:.0f} us per transaction)")
    print(f"  wire time at {BUS_HZ // 1000} kHz: {READ_BITS} bits = {wire_ms:.2f} ms per read, "
          f"{txns * wire_ms:.1f} ms per measurement ({2 * wire_ms / (th.poll_interval_s * 1000) * 100:.1f} % of "
          "the bus at one poll per interval)")

    flaky = Rig("bad_pec", every=10)
    flaky.sensor.startup_report()
    res = [flaky.measure() for _ in range(max(n // 4, 20))]
    print(f"with every 10th answer's PEC corrupted: {statistics.median(r[0] for r in res):.0f} transactions, "
          f"{statistics.median(r[1] for r in res) * 1000:.0f} ms per measurement, "
          f"pec failures {flaky.sensor.failure_counts()['pec']} over {len(res)} measurements, no fault")

    storm = Rig()
    storm.poll()  # started and settled
    storm.chip.inject("nack", count=None)
    t0, sleeps0 = storm.clock(), len(storm.clock.sleeps)
    polls_to_fault = 0
    while not storm.screener.down:
        storm.poll()
        polls_to_fault += 1
    t_fault = storm.clock() - t0
    n_before = storm.transactions
    sleeps_before = len(storm.clock.sleeps)
    for _ in range(100):
        storm.poll()
    print(f"NACK storm: FAULT after {polls_to_fault} polls ({t_fault * 1000:.0f} ms simulated, "
          f"{len(storm.clock.sleeps) - sleeps0} retry back-off sleeps); "
          f"then while down {(storm.transactions - n_before) / 100:.0f} transaction per poll, "
          f"{len(storm.clock.sleeps) - sleeps_before} sleeps in 100 polls, bus reopened "
          f"{storm.sensor.reopens} time(s) in {100 * th.poll_interval_s:.0f} s (back-off 1 s doubling to 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
