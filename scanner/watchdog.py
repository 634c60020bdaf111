"""The lane watchdog: a thread beside the scan loop that notices when a step stops completing.

A stalling SD card (writes that never complete, `fsfreeze`), a hung driver call or a wedged
library blocks the scan loop inside one step; the loop then cannot show FAULT itself, the lights
keep their last pattern and a guard sees a lane that looks alive. The watchdog reads the step's
start time and phase (plain attributes the loop writes, no lock the loop could be holding) and,
once a step has run longer than `stall_s`:

- shows FAULT on the indicators from its own thread (the indicator driver serialises `show()`),
- tells the lane monitor (kiosk and staff page) what is stuck and for how long,
- logs one error and tells systemd (STATUS=); the scan loop's watchdog ping is withheld while
  stalled, so systemd's WatchdogSec= restarts a lane that never comes back.

When the step completes the loop takes the lights back (`Lane.after_stall()`); a verdict whose
commit took longer than `stall_s` is not shown at all, since the person it belongs to has
likely gone and the next one would see it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("scanner.watchdog")

#: What a phase is waiting on, for the fault text (Chinese first, then English).
PHASE_TEXT = {
    "commit": ("记录写入卡住（存储卡故障？）", "outbox write stalled (SD card not answering?)"),
    "camera": ("摄像头读取卡住", "camera read stalled"),
    "decode": ("二维码识别卡住", "QR decoding stalled"),
    "verify": ("核验卡住", "verification stalled"),
    "thermometer": ("测温传感器卡住", "thermometer read stalled"),
    "signal": ("指示灯驱动卡住", "indicator driver stalled"),
    "step": ("通道处理卡住", "lane step stalled"),
}


def stall_text(phase: str, seconds: float) -> str:
    zh, en = PHASE_TEXT.get(phase, PHASE_TEXT["step"])
    return f"{zh} {seconds:.0f} 秒 / {en} for {seconds:.0f} s"


class LaneWatchdog:
    """Watches `lane.step_started` (monotonic seconds, None between steps) and `lane.phase`.

    `lane` needs `step_started`, `phase`, `show_fault_from_watchdog(text)`, `monitor` and
    `notifier`; `monotonic` must be the clock the lane writes `step_started` with."""

    def __init__(self, lane: Any, stop: threading.Event, stall_s: float = 5.0, period_s: float = 0.25,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.lane = lane
        self.stop = stop
        self.stall_s = stall_s
        self.period_s = period_s
        self._mono = monotonic or lane.mono
        self.stalled = False
        self.stalls = 0
        self.thread = threading.Thread(target=self._run, name="lane-watchdog", daemon=True)

    def start(self) -> LaneWatchdog:
        self.thread.start()
        return self

    def check(self) -> bool:
        """One look: True while the current step has run longer than `stall_s`."""
        started = self.lane.step_started
        if started is None:
            self.stalled = False
            return False
        held = self._mono() - started
        if held < self.stall_s:
            self.stalled = False
            return False
        text = stall_text(self.lane.phase, held)
        if not self.stalled:
            self.stalls += 1
            log.error("event=lane_stalled phase=%s held_s=%.1f", self.lane.phase, held)
        self.stalled = True
        self.lane.show_fault_from_watchdog(text)
        return True

    def _run(self) -> None:
        while not self.stop.wait(self.period_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one bad look
                log.exception("event=watchdog_failed")
