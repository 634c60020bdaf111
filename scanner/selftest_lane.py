"""Self-test checks for the rest of the lane: camera (opens, frame rate, a code decodes), LEDs and
buzzer (cycled; the technician confirms), disk space, clock trust, trust list, central server.
Registered in scanner.selftest.CHECK_MODULES; same PASS/FAIL/SKIP lines with the fix."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scanner.selftest import Context, Result, check

CAMERA_SECONDS = 2.0


def _cfg(ctx: Context) -> Any:
    assert ctx.cfg is not None
    return ctx.cfg


@check("camera.opens", needs=("config",))
def camera_opens(ctx: Context) -> Result:
    from scanner import hardware

    cfg = _cfg(ctx)
    cam = ctx.state.get("camera") or hardware.make_camera(cfg)
    try:
        cam.open()
    except OSError as e:
        return Result.fail(str(e), "check the camera cable and [camera] device (ls /dev/v4l/by-id/); the service "
                                   "user needs the video group; stop the lane if it holds the camera")
    ctx.closers.append(cam.close)
    frames, t0 = [], time.monotonic()
    while time.monotonic() - t0 < CAMERA_SECONDS:
        try:
            f = cam.read()
        except OSError as e:
            return Result.fail(f"camera opened but reading failed: {e}", "reseat the cable; try another USB port")
        if f is not None:
            frames.append(f)
        else:
            time.sleep(0.01)
    fps = len(frames) / CAMERA_SECONDS
    expected = cfg.camera.replay_fps if cfg.camera.source == "replay" else cfg.camera.fps
    ctx.state["camera_frames"] = frames
    if not frames:
        return Result.fail(f"no frame in {CAMERA_SECONDS:.0f} s", "the camera delivers nothing: reseat it, check "
                                                                  "`v4l2-ctl --list-devices`, reduce [camera] size")
    shape = "x".join(str(n) for n in frames[-1].image.shape[:2][::-1])
    if fps < 0.5 * expected:
        return Result.fail(f"{fps:.1f} frames/s at {shape}, expected about {expected:g}",
                           "use MJPG at 640x480, a USB 2 port without a hub, and more light (exposure slows frames)")
    return Result.ok(f"{fps:.1f} frames/s at {shape} ({cfg.camera.source})")


@check("camera.decodes", needs=("config",))
def camera_decodes(ctx: Context) -> Result:
    """The decoder stack (zxing-cpp, zbar) reads a generated code; then whether the camera sees
    one (hold the printed test code up to it during the self-test)."""
    from scanner.decode import decode_frame
    from scanner.qrimage import frame_with_codes

    test = "ZHC1:SELFTEST-0123456789"
    found = [c.data for c in decode_frame(frame_with_codes([test]))]
    if test.encode() not in found:
        return Result.fail("the decoder could not read a generated test code",
                           "reinstall: apt-get install libzbar0; pip install zxing-cpp (scripts/install-pi.sh)")
    seen = sum(bool(decode_frame(f.image)) for f in ctx.state.get("camera_frames", [])[-10:])
    if seen:
        return Result.ok(f"decoder works; the camera read a code in {seen} of the last frames")
    return Result.ok("decoder works (hold a code to the camera during the self-test to check focus too)")


def _confirm(ctx: Context, question: str) -> bool | None:
    ask: Callable[[str], bool | None] | None = ctx.state.get("confirm")
    if ask is not None:
        return ask(question)
    if not sys.stdin.isatty():
        return None
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes", "是", "对")


@check("indicators.cycle", needs=("config",))
def indicators_cycle(ctx: Context) -> Result:
    from scanner import hardware, signals

    cfg = _cfg(ctx)
    try:
        ind = hardware.make_indicators(cfg, ctx.state.get("pin_factory"))
    except OSError as e:
        if "in use" in str(e) or "busy" in str(e).lower():
            return Result.skip("the running lane owns the pins: stop it (systemctl stop checkpoint-scanner) "
                               "to test LEDs and buzzer")
        return Result.fail(str(e), "check [indicators] pins and that the service user is in the gpio group")
    ctx.closers.append(ind.close)
    seen: list[dict[str, bool]] = []
    for pattern in (signals.PASS, signals.DENY, signals.REVIEW):
        ind.show(pattern)
        time.sleep(ctx.state.get("cycle_s", 1.0))
        seen.append(ind.states())
    ind.off()
    if not (seen[0]["green"] and seen[1]["red"]):
        return Result.fail(f"outputs did not follow the patterns: {seen}", "check the pin numbers (BCM) in "
                                                                          "[indicators]")
    answer = _confirm(ctx, "Did you see green, then red, then red/green alternating, and hear the buzzer? "
                           "看到绿灯、红灯、红绿交替并听到蜂鸣了吗？")
    if answer is None:
        return Result.ok("green, red and alternating patterns driven (nobody at the terminal to confirm)")
    if not answer:
        return Result.fail("the technician did not see or hear the patterns",
                           "LEDs: 330 ohm to the anode, cathode to GND, or set active_high = false; buzzer: an "
                           "ACTIVE buzzer through a transistor from 5 V")
    return Result.ok("green, red, alternating and buzzer confirmed by the technician")


@check("disk.space", needs=("config",))
def disk_space(ctx: Context) -> Result:
    path = Path(_cfg(ctx).store.path)
    where = path.parent if path.parent.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    usage = shutil.disk_usage(where)
    free_mib = usage.free / 2**20
    share = usage.free / usage.total
    if free_mib < 200 or share < 0.05:
        return Result.fail(f"only {free_mib:.0f} MiB ({share:.0%}) free on {where}",
                           "free space (journalctl --vacuum-size=100M, apt-get clean) or use a larger SD card")
    import os

    if where == path.parent and not os.access(where, os.W_OK):
        return Result.fail(f"{where} is not writable", "chown it to the service user (install-pi.sh does)")
    return Result.ok(f"{free_mib:.0f} MiB ({share:.0%}) free on {where}")


@check("clock.trusted", needs=("config",))
def clock_trusted(ctx: Context) -> Result:
    from scanner.clock import Clock

    cfg = _cfg(ctx)
    if Clock(cfg.clock.trust).trusted():
        return Result.ok(f"wall clock trusted ({cfg.clock.trust}); now {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    return Result.fail("the kernel does not report NTP sync (codes get REVIEW CLOCK_UNTRUSTED until it does, or "
                       "until the trust sync measures the server's time)",
                       "timedatectl set-ntp true, allow UDP 123 to an NTP server, or enable [sync] so the "
                       "server's time is measured")


@check("trust.list", needs=("config",))
def trust_list(ctx: Context) -> Result:
    from scanner.credentials import TrustStore

    cfg = _cfg(ctx)
    try:
        trust = TrustStore.load(cfg.trust.trust_list, cfg.trust.anchor_cert)
    except OSError as e:
        return Result.fail(str(e), "copy the signed trust list and the anchor certificate from the centre")
    except ValueError as e:
        return Result.fail(str(e), "copy the signed trust list and the anchor certificate from the centre")
    expires = getattr(trust, "expires_at", None)
    if expires and expires < time.time():
        return Result.fail(f"trust list version {trust.version} expired "
                           f"{time.strftime('%Y-%m-%d', time.gmtime(expires))}",
                           "enable [sync] or copy a current trust list; until then green codes get REVIEW")
    return Result.ok(f"trust list version {trust.version}, {len(trust)} signer(s)")


@check("server.reachable", needs=("config",))
def server_reachable(ctx: Context) -> Result:
    import requests

    cfg = _cfg(ctx)
    url = getattr(getattr(cfg, "sync", None), "server_url", "") or getattr(getattr(cfg, "upload", None), "url", "")
    if not url:
        return Result.skip("no central server configured ([sync] server_url)")
    try:
        r = requests.get(url, timeout=(3, 5))
    except requests.RequestException as e:
        return Result.fail(f"{url}: {e.__class__.__name__}",
                           "check the network, DNS and the firewall; the lane keeps working offline meanwhile")
    return Result.ok(f"{url} answers (HTTP {r.status_code})")
