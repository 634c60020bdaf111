"""`checkpoint-scanner selftest`: run the registered device checks (scanner/selftest.py), one
PASS/FAIL/SKIP line each with the fix under every FAIL. Exit 0 when nothing failed, 1 otherwise,
2 when --only names no check."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from scanner.errors import ScannerError
from scanner.selftest import Context, check_names, run_checks, summary

DESCRIPTION = """\
设备自检 / Check the devices of a lane: the config, the thermometer on I2C, the camera, the
LEDs and buzzer, the disk, the clock and the server. One line per check: PASS 通过, FAIL 失败
(with the fix under it) or SKIP 跳过 (a check it needs failed). Safe beside the running lane:
the checks only read. Exit 0 when nothing failed, 1 when something did."""

EPILOG = """\
examples:
  checkpoint-scanner selftest --config /etc/checkpoint-scanner/config.toml
  checkpoint-scanner selftest --config site.toml --only thermometer
  checkpoint-scanner selftest --config site.toml --json
"""


class UnknownCheck(ScannerError):
    """--only names no check: a usage error (exit 2), not a failed check."""

    exit_code = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("selftest", help="check the devices: PASS/FAIL per check with the fix; exit 1 on a FAIL",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--only", action="append", default=[], metavar="PREFIX",
                   help="run only checks starting with this, any case (e.g. thermometer); repeatable")
    p.add_argument("--json", action="store_true", help="one JSON object per check, for tools")
    p.set_defaults(func=_cmd_selftest)


def _cmd_selftest(args: argparse.Namespace) -> int:
    return run_selftest(args)


def run_selftest(args: argparse.Namespace, *, out: TextIO | None = None, **inject: Any) -> int:
    """`inject`: Context fields for tests (open_bus=..., thermometer=...)."""
    stream = out or sys.stdout
    names = check_names()
    only = [o.strip().lower() for o in args.only]  # any case: --only THERMOMETER
    fix = f"fix: one of {', '.join(names)} (a prefix such as thermometer runs that group)"
    if "" in only:
        raise UnknownCheck(f'--only "" is empty (it would run every check); {fix}, or leave --only out')
    unknown = [o for o in only if not any(n.startswith(o) for n in names)]
    if unknown:
        raise UnknownCheck(f"--only {unknown[0]} names no check; {fix}")
    ctx = Context(config_path=args.config, **inject)
    outcomes = run_checks(ctx, tuple(only))
    for o in outcomes:
        if args.json:
            r = o.result
            print(json.dumps({"check": o.name, "status": r.status.value, "detail": r.detail, "fix": r.fix},
                             ensure_ascii=False), file=stream)
        else:
            print(o.line(), file=stream)
    if not args.json:
        print(summary(outcomes), file=stream)
    return 1 if any(o.result.status.value == "FAIL" for o in outcomes) else 0
