"""checkpoint-scanner: one checkpoint lane on a Raspberry Pi (or simulated on a laptop).

The library does the work; this is a thin CLI (sqlite-utils style). Every error a person can
cause ends in one line that names the fix and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from scanner.errors import ConfigError, ScannerError

EPILOG = """\
examples:
  checkpoint-scanner demo                          12+ simulated people, all verdicts, < 1 min
  checkpoint-scanner check-config /etc/checkpoint-scanner/config.toml
  checkpoint-scanner run --config config/simulated.toml
  checkpoint-scanner codes keygen keys/            anchor, signers, signed trust list
  checkpoint-scanner codes issue health --signer-dir keys/ --png code.png
  checkpoint-scanner codes verify --keys keys/ code.png
  checkpoint-scanner decode photo.jpg              what the camera would read in a picture

Config: one TOML file; config/example.toml documents every key (unit and range).
Verdicts: PASS 通行 (green, one beep) / DENY 禁止通行 (red, long alarm) /
          REVIEW 工作人员核验 (alternating red-green, two beeps) / FAULT 设备故障 (slow red blink).
"""


def _cmd_check_config(args: argparse.Namespace) -> int:
    from scanner.config import load_config

    cfg = load_config(args.config)
    mode = "simulated devices" if cfg.simulated else "real devices"
    print(f"{args.config}: OK ({cfg.checkpoint.kind} {cfg.checkpoint.id}, {mode})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from scanner import hardware
    from scanner.clock import Clock
    from scanner.config import load_config
    from scanner.credentials import TrustStore
    from scanner.logs import setup_logging
    from scanner.notify import Notifier
    from scanner.service import Lane
    from scanner.store import Store

    cfg = load_config(args.config)
    setup_logging(args.log_level or cfg.log.level, args.log_format or cfg.log.format)
    log = logging.getLogger("scanner.run")
    if cfg.simulation.bootstrap:
        from scanner.simulation import bootstrap

        bootstrap(cfg)
    trust = TrustStore.load(cfg.trust.trust_list, cfg.trust.anchor_cert)
    store = Store.open(cfg.store.path)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        devices = hardware.open_devices(cfg)
    except OSError:
        store.close()
        raise
    try:
        lane = Lane(cfg, devices, trust, store, Clock(cfg.clock.trust),
                    notifier=Notifier(os.environ.get("NOTIFY_SOCKET")), stop=stop)
        if args.duration:
            threading.Timer(args.duration, stop.set).start()
        lane.run()
        log.info("event=stopped passages=%d by_verdict=%s", lane.stats.passages,
                 json.dumps(lane.stats.by_verdict))
    finally:
        hardware.close_devices(devices)
        store.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from scanner.demo import run_demo

    return run_demo(workdir=args.workdir, verbose=args.verbose)


def _cmd_decode(args: argparse.Namespace) -> int:
    import cv2

    from scanner.decode import Decoder
    from scanner.service import payload_key

    img = cv2.imread(args.image, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ScannerError(f"cannot read image {args.image}; fix: give a PNG or JPEG file path")
    codes = Decoder().decode(img)
    if not codes:
        print("no code found / 未识别到二维码")
        return 1
    for c in codes:
        prefix = c.payload[:5].decode("ascii", "replace")
        print(f"code hash={payload_key(c.payload)} bytes={len(c.payload)} starts={prefix!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="checkpoint-scanner", description=__doc__,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the lane daemon (systemd runs this)",
                       description="Run one checkpoint lane until SIGTERM or Ctrl-C. Real or simulated "
                       "devices are chosen in the config file.")
    r.add_argument("--config", required=True, help="TOML config file (see config/example.toml)")
    r.add_argument("--duration", type=float, default=0, help="stop after this many seconds (tests, demos)")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides [log] level")
    r.add_argument("--log-format", choices=["json", "text"], help="overrides [log] format")
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="simulated lane with 14 scripted people; prints every passage",
                       description="Makes its own keys and codes, then runs the real lane loop on replayed "
                       "camera frames, a scripted thermometer and mock GPIO pins. Exit 0 when every "
                       "verdict is the expected one.")
    d.add_argument("--workdir", help="keep keys, frames and the outbox here (default: a temp dir)")
    d.add_argument("-v", "--verbose", action="store_true", help="show the lane's log lines too")
    d.set_defaults(func=_cmd_demo)

    c = sub.add_parser("check-config", help="validate a config file; lists every problem with its line",
                       description="Exit 0 when valid; else every problem as 'line N: section.key: what is "
                       "wrong (got X); fix', exit 2.")
    c.add_argument("config", help="TOML config file")
    c.set_defaults(func=_cmd_check_config)

    dc = sub.add_parser("decode", help="read the QR codes in an image (prints hashes, never contents)")
    dc.add_argument("image", help="PNG or JPEG file")
    dc.set_defaults(func=_cmd_decode)

    from scanner import cli_codes, cli_kiosk

    cli_codes.add_parser(sub)
    cli_kiosk.add_parser(sub)
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
        print(f"{e.path}: {len(e.problems)} problem(s) / 配置错误:", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    except ScannerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # DriverError and friends: a device or file the person can fix
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
