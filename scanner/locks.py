"""One daemon per outbox and per Pi: exclusive, non-blocking `flock(2)` locks.

Two `run` daemons on one `[store] path` would interleave sequence numbers in one outbox; two on
one Pi would both drive the thermometer's I2C bus and the GPIO lights. Whoever comes second
stops at once with one line naming the holder's PID.

`flock` (not `fcntl` record locks) because it belongs to the open file description: the kernel
drops it when the holder dies, even by kill -9 or power loss (nothing stale to clean up), and a
second `open()` in the same process conflicts too. The outbox lock is a file beside the outbox
(`<outbox>.lock`, mode 0600) holding the PID; device locks are taken on the device node itself
(/dev/i2c-N, /dev/gpiochipN), which a hardened unit can open (ProtectSystem=strict leaves /dev
alone) and every daemon names the same way. The holder of a device node is found in /proc/locks.
Source: flock(2), proc(5) "/proc/locks".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ScannerError, StoreError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

STOP_FIX = "stop it (systemctl stop checkpoint-scanner)"


class InUseError(ScannerError):
    """Another process holds the lock. `pid` is the holder's PID when it could be found.
    `exit_code` 2: the CLI's code for "this invocation cannot run as configured"."""

    exit_code = 2

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class OutboxInUseError(InUseError, StoreError):
    """The outbox is held by another writer (a StoreError too: callers catching that see it)."""


class HeldLock:
    """An acquired lock; `release()` (idempotent) closes the descriptor, which drops it."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:  # a holder dropped without release(): drop the lock with it
        with contextlib.suppress(Exception):  # at interpreter exit the kernel drops it anyway
            self.release()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_in_proc_locks(fd: int) -> int | None:
    """The PID /proc/locks gives for a FLOCK on the same inode as `fd` (proc(5))."""
    st = os.fstat(fd)
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:02:131090 0 EOF"; blocked waiters start with "->".
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            maj, mnr, ino = parts[5].split(":")
            if (int(maj, 16), int(mnr, 16), int(ino)) == want:
                return int(parts[4])
        except ValueError:
            continue
    return None


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    return _pid_in_proc_locks(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def lock_outbox(db_path: str | Path) -> HeldLock:
    """Take the outbox's writer lock: `<db_path>.lock`, created 0600, our PID written into it.
    Raises OutboxInUseError (one line, the holder's PID, the fix) when another process (or
    another open in this one) holds it, StoreError when the lock file cannot be opened."""
    p = Path(str(db_path) + ".lock")
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StoreError(f"store.path: cannot open the lock file {p} ({e.strerror}); fix: give the service user "
                         f"write access to {p.parent}, or remove a {p.name} another user left") from None
    try:
        if not _try_flock(fd):
            pid = _holder_pid(fd)
            who = f"PID {pid}" if pid is not None else "PID unknown"
            raise OutboxInUseError(f"store.path: {db_path} is in use by another checkpoint-scanner ({who}); fix: "
                                   f"{STOP_FIX} or give this one its own [store] path", pid)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    return HeldLock(fd, str(p))


def lock_device(node: str, what: str) -> HeldLock | None:
    """Lock one device node (e.g. "/dev/i2c-1") for this process. None when the node does not
    exist or cannot be opened (the driver then reports the device itself). InUseError naming
    the holder's PID when another process holds it."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        log.info("event=device_lock_skipped node=%s error=%r", node, e.strerror)
        return None
    if not _try_flock(fd):
        pid = _pid_in_proc_locks(fd)
        os.close(fd)
        who = f"PID {pid}" if pid is not None else "PID unknown"
        raise InUseError(f"{what}: {node} is in use by another checkpoint-scanner ({who}); fix: {STOP_FIX}: one "
                         "lane per Pi drives the thermometer and the lights", pid)
    return HeldLock(fd, node)


def gpio_nodes() -> list[str]:
    """Every GPIO character device, in a fixed order (the 40-pin header's chip is gpiochip0 or
    gpiochip4 depending on model and kernel; locking all of them needs no guess)."""
    return sorted(glob.glob("/dev/gpiochip*"))


def lock_devices(nodes: list[tuple[str, str]]) -> list[HeldLock]:
    """Lock every (node, what) in order; on a conflict release those taken and raise."""
    held: list[HeldLock] = []
    try:
        for node, what in nodes:
            h = lock_device(node, what)
            if h is not None:
                held.append(h)
    except BaseException:
        for h in held:
            h.release()
        raise
    return held


def lock_lane_devices(cfg: Config, *, thermometer: bool = True, gpio: bool = True) -> Callable[[], None]:
    """Lock the real devices `cfg` drives: the MLX90614's /dev/i2c-<bus> and the GPIO chips
    (simulated devices need none; `thermometer`/`gpio` False when the caller injected its own).
    Returns the closer that releases them. InUseError when another daemon holds one."""
    nodes: list[tuple[str, str]] = []
    if thermometer and cfg.thermometer.source == "mlx90614":
        nodes.append((f"/dev/i2c-{cfg.thermometer.i2c_bus}", "thermometer.i2c_bus"))
    if gpio and cfg.indicators.source != "mock":
        nodes += [(n, "indicators") for n in gpio_nodes()]
    held = lock_devices(nodes)

    def release() -> None:
        for h in reversed(held):
            h.release()

    return release
