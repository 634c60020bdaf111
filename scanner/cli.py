"""checkpoint-scanner: one checkpoint lane on a Raspberry Pi (or simulated on a laptop).

The command-line entry: each command's work is in its own module (scanner/cli_*.py and the
library behind it). Every error a person can cause ends in one line that names the fix and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from scanner.errors import ConfigError, ScannerError

DESCRIPTION = """\
检查站扫码测温闸机 / checkpoint-scanner: one checkpoint lane on a Raspberry Pi (or simulated on
a laptop): health and residence codes by camera, temperature by an MLX90614, verdict by LEDs,
buzzer and screen, every passage kept in an outbox until the central server has it.
Every error ends in one line that names the fix, exit 1 or 2."""

RUN_EPILOG = """\
examples:
  sudo systemctl start checkpoint-scanner                     how a gate runs it
  checkpoint-scanner run --config /etc/checkpoint-scanner/config.toml
  checkpoint-scanner run --config config/simulated.toml --duration 60 --log-format text
                                                              a laptop, one minute, readable log
Before the first run: `check-config FILE` (the config and every file it names), then
`selftest --config FILE` (the devices).
"""

DEMO_EPILOG = """\
examples:
  checkpoint-scanner demo                      under a minute; prints one line per passage
  checkpoint-scanner demo --workdir demo-run   keep keys, frames and the outbox afterwards
  checkpoint-scanner demo -v                   with the lane's own log lines
"""

EPILOG = """\
examples:
  checkpoint-scanner demo                          14 simulated people, all verdicts, < 1 min
  checkpoint-scanner check-config /etc/checkpoint-scanner/config.toml
  checkpoint-scanner run --config config/simulated.toml
  checkpoint-scanner codes keygen keys/            anchor, signers, signed trust list
  checkpoint-scanner codes issue health --signer-dir keys/ --png code.png
  checkpoint-scanner codes verify --keys keys/ code.png
  checkpoint-scanner decode [--json] photo.jpg ... what the camera would read, one line per image

Config: one TOML file; config/example.toml documents every key (unit and range).
Verdicts: PASS 通行 (green, one beep) / DENY 禁止通行 (red, long alarm) /
          REVIEW 工作人员核验 (alternating red-green, two beeps) / FAULT 设备故障 (slow red blink).
"""


def _warn(line: str) -> None:
    print(f"  warning: {line}", file=sys.stderr)


def _cmd_check_config(args: argparse.Namespace) -> int:
    """The config text, then (unless --text-only) every file `run` reads, by the code `run` uses."""
    from scanner.config import load_config
    from scanner.preflight import require_ready

    cfg = load_config(args.config)
    if not args.text_only:
        require_ready(cfg, _warn)
    mode = ("SIMULATED devices (demo/laptop only, never on a gate)" if cfg.simulated else "real devices")
    files = ", files not checked (--text-only)" if args.text_only else ""
    print(f"{args.config}: OK ({cfg.checkpoint.kind} {cfg.checkpoint.id}, {mode}{files})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from scanner import hardware
    from scanner.clock import Clock
    from scanner.config import load_config
    from scanner.logs import setup_logging
    from scanner.notify import Notifier
    from scanner.preflight import require_ready
    from scanner.service import Lane
    from scanner.store import Store

    cfg = load_config(args.config)
    setup_logging(args.log_level or cfg.log.level, args.log_format or cfg.log.format)
    log = logging.getLogger("scanner.run")
    require_ready(cfg, lambda w: log.warning("event=config_warning %s", w))  # what check-config checks
    if cfg.simulation.bootstrap:
        from scanner.simulation import bootstrap

        bootstrap(cfg)
    from scanner.sync import start_background, trust_sync
    from scanner.sync.online import OnlineVerifier

    trust = trust_sync.load_state(cfg)  # config list or the newer one the sync saved; status; policy
    clock = Clock(cfg.clock.trust, offset=trust.clock_offset)
    store = Store.open(cfg.store.path, max_bytes=cfg.store.max_size_mib << 20)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Start order: devices, then the threads beside the lane, then the front ends; stop in
    # reverse. Every step is inside the try, so a failure stops what already runs.
    devices = None
    background: list[threading.Thread] = []
    online = None
    staff_closers: list[Callable[[], None]] = []
    try:
        devices = hardware.open_devices(cfg)
        background = start_background(cfg, cfg.store.path, stop, clock.trusted)  # maintenance, upload, pull API
        background.append(trust_sync.start(cfg, trust, stop))  # trust list, status list, policy, server time
        online = OnlineVerifier.from_config(cfg, trust.clock_offset)  # provincial codes; None without patterns
        lane = Lane(cfg, devices, trust, store, clock,
                    notifier=Notifier(os.environ.get("NOTIFY_SOCKET")), stop=stop, online=online)
        from scanner.frontends import start_frontends

        staff_closers = start_frontends(cfg, lane, stop)
        if args.duration:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True  # SIGTERM must not wait for it
            timer.start()
        lane.run()
        log.info("event=stopped passages=%d by_verdict=%s", lane.stats.passages,
                 json.dumps(lane.stats.by_verdict))
    finally:
        stop.set()
        for close in reversed(staff_closers):
            close()
        if online is not None:
            online.close()
        for t in background:
            t.join(timeout=5)
        if devices is not None:
            hardware.close_devices(devices)
        store.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from scanner.demo import run_demo

    return run_demo(workdir=args.workdir, verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="checkpoint-scanner", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the lane daemon (systemd runs this)",
                       description="运行闸机 / Run one checkpoint lane until SIGTERM or Ctrl-C. Real or\n"
                       "simulated devices are chosen in the config file ([checkpoint] mode).",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", required=True, help="TOML config file (see config/example.toml)")
    r.add_argument("--duration", type=float, default=0, help="stop after this many seconds (tests, demos)")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides [log] level")
    r.add_argument("--log-format", choices=["json", "text"], help="overrides [log] format")
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="simulated lane with 14 scripted people; prints every passage",
                       description="演示 / Makes its own keys and codes, then runs the real lane loop on\n"
                       "replayed camera frames, a scripted thermometer and mock GPIO pins. Exit 0 when every\n"
                       "verdict is the expected one.",
                       epilog=DEMO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--workdir", help="keep keys, frames and the outbox here (default: a temp dir)")
    d.add_argument("-v", "--verbose", action="store_true", help="show the lane's log lines too")
    d.set_defaults(func=_cmd_demo)

    c = sub.add_parser("check-config", help="validate a config file; lists every problem with its line",
                       description="检查配置文件 / Exit 0 when valid; else every problem as 'line N: "
                       "section.key: what is wrong (got X); fix', exit 2. Checks the text, then every file "
                       "`run` reads (anchor, trust list, tokens, staff PIN, TLS files, writable directories) "
                       "with the code `run` uses; devices are checked by `selftest`.")
    c.add_argument("config", help="TOML config file")
    c.add_argument("--text-only", action="store_true",
                   help="check only the text, not the files it names (a config written for another device)")
    c.set_defaults(func=_cmd_check_config)

    from scanner import cli_decode

    cli_decode.add_parser(sub)

    from scanner import cli_codes, cli_kiosk

    cli_codes.add_parser(sub)
    cli_kiosk.add_parser(sub)
    from scanner import cli_queue

    cli_queue.add_parser(sub)
    from scanner import cli_calibrate, cli_selftest

    cli_calibrate.add_parser(sub)
    cli_selftest.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        where = e.path or getattr(args, "config", None) or "config"  # never "None:"
        print(f"{where}: {len(e.problems)} problem(s) / 配置错误:", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    except ScannerError as e:
        print(f"error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))  # 2: cannot run as configured (scanner/locks.py InUseError)
    except OSError as e:  # DriverError and friends: a device or file the person can fix
        if e.errno in (errno.ENOSPC, errno.EPIPE) and not e.filename:  # stdout itself: full disk, closed pipe
            why = "no space left on the device" if e.errno == errno.ENOSPC else "the reader closed the pipe"
            print(f"error: cannot write the output ({why}); fix: free space where the output goes, or "
                  "redirect it to another file", file=sys.stderr)
            return 1
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
