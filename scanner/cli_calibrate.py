"""`checkpoint-scanner calibrate`: fit the fever screen's mapping on site and write it to the config.

The work is in `scanner.calibrate`; here are the interactive prompts in Chinese and English, or
`--pairs FILE.csv` for scripting. Exit 0 written (or dry run shown), 1 refused or not written,
2 config invalid. Errors are one line naming the fix.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from drivers.base import Thermometer
from scanner.calibrate import (
    MIN_AMBIENT_SPAN_C,
    MIN_PAIRS,
    REFERENCE_LIMITS_C,
    Fit,
    Pair,
    fit_calibration,
    measure_once,
    pairs_table,
    read_pairs_csv,
    residuals,
    status_hint,
    updated_config_text,
    write_config,
)
from scanner.config import Config, load_config
from scanner.numbers import NotFiniteError, in_range, parse_finite
from scanner.screening import ScreeningRules
from scanner.textfile import read_text

DESCRIPTION = """\
温度校准 / Fit the fever screen's mapping on site and write it to the config: pairs of the
sensor's reading of a person and the same person's temperature from a reference (clinical)
thermometer give offset_c and ambient_coeff. Asks for each pair, or reads them from --pairs.
Exit 0 written (or dry run shown), 1 refused or not written, 2 config invalid."""

EPILOG = """\
examples:
  checkpoint-scanner calibrate --config /etc/checkpoint-scanner/config.toml
  checkpoint-scanner calibrate --config site.toml --pairs pairs.csv --dry-run
  checkpoint-scanner calibrate --config site.toml --pairs pairs.csv --version toll-gate-2026-01

Each pair: the sensor's reading of a person (taken here, from the configured thermometer)
and the same person's temperature from a reference thermometer, typed in. At least 3 pairs,
ideally at different ambient temperatures (morning, noon, night); with less than 3 °C of
ambient spread only offset_c is fitted and ambient_coeff is kept.
pairs.csv: one pair per line, object_c,ambient_c,reference_c in °C, or any order under a
header line naming them (other named columns are ignored; # comments allowed). As Excel or
WPS save it is fine: UTF-8 with a BOM, CRLF, ';' or tab between columns with decimal commas.
The service reads the config at start: restart it afterwards.
"""

INTRO = (
    "校准：每组请受测者将额头/手腕对准传感器，同时用参考体温计测量其体温。",
    "至少 3 组，最好在不同的环境温度下（早晨、中午、夜间）。",
    "Calibration: for each pair the person holds forehead or wrist to the sensor while you take",
    "their temperature with the reference thermometer. At least 3 pairs, ideally at different",
    "ambient temperatures (morning, noon, night).",
)
MEASURE_TIMEOUT_S = 15.0


def _finite_arg(text: str) -> float:
    """argparse type: a finite number (float() would also take "nan" and "inf")."""
    try:
        return parse_finite(text, "reference ambient")
    except NotFiniteError as e:
        raise argparse.ArgumentTypeError(f"{e}; fix: a temperature in °C such as 25.0") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="fit the temperature mapping against a reference thermometer",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TOML config file to read and update")
    p.add_argument("--pairs", metavar="FILE.csv", help="take the pairs from this file instead of asking")
    p.add_argument("--dry-run", action="store_true", help="show the fit, do not write the config")
    p.add_argument("--version", dest="cal_version",
                   help="calibration_version to record (default cal-YYYYMMDD-HHMM, UTC)")
    p.add_argument("--reference-ambient-c", type=_finite_arg,
                   help="ambient where only offset_c applies (default: the config's reference_ambient_c)")
    p.add_argument("-y", "--yes", action="store_true", help="write without asking (interactive mode)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    return run_calibrate(args)


def run_calibrate(args: argparse.Namespace, *, thermometer: Thermometer | None = None,
                  input_fn: Callable[[str], str] = input, out: TextIO | None = None,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                  now: datetime | None = None) -> int:
    """The whole command; tests inject the thermometer, the answers, the clock and the output."""
    stream = out or sys.stdout

    def say(line: str = "") -> None:
        print(line, file=stream, flush=True)

    cfg = load_config(args.config)
    th = cfg.thermometer
    version = args.cal_version or f"cal-{(now or datetime.now(UTC)):%Y%m%d-%H%M}"
    reference_ambient = th.reference_ambient_c if args.reference_ambient_c is None else args.reference_ambient_c
    if args.pairs:
        pairs = read_pairs_csv(args.pairs)
    else:
        pairs = _ask_pairs(cfg, thermometer, input_fn, say, clock, sleep)
    fit = fit_calibration(pairs, reference_ambient, keep_coeff=th.ambient_coeff)
    _show_fit(cfg, pairs, fit, version, say)
    path = Path(args.config)
    new_text = updated_config_text(read_text(path), str(path), fit, version)  # load_config checked it is UTF-8
    if args.dry_run:
        say(f"试运行：未修改 {path} / dry run: {path} not changed")
        return 0
    if not args.pairs and not args.yes:
        answer = _ask(input_fn, f"写入 {path}？/ write these values to {path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes", "是"):
            say("未写入 / not written")
            return 1
    backup = write_config(path, new_text)
    say(f"已写入 {path}（原文件备份为 {backup.name}）/ written to {path} (previous file kept as {backup.name})")
    say("请重启服务使其生效 / restart the service to use it: sudo systemctl restart checkpoint-scanner")
    return 0


def _show_fit(cfg: Config, pairs: list[Pair], fit: Fit, version: str, say: Callable[[str], None]) -> None:
    th = cfg.thermometer
    say("")
    for line in pairs_table(pairs, fit):
        say(line)
    say(f"残差均方根 / residual RMS {fit.rms_c:.2f} °C, 最大 / max {fit.max_abs_c:.2f} °C ({len(pairs)} pairs)")
    old = residuals(pairs, th.offset_c, th.ambient_coeff, th.reference_ambient_c)
    old_rms = (sum(r * r for r in old) / len(old)) ** 0.5
    say(f"当前配置 / current mapping ({th.calibration_version}): RMS {old_rms:.2f} °C on the same pairs")
    if not fit.coeff_fitted:
        span = f"{MIN_AMBIENT_SPAN_C:.0f} °C"
        say(f"注意：各组环境温度相差不足 {span}，只拟合了偏移量 / note: the ambients span less than {span}, so only "
            f"offset_c was fitted and ambient_coeff kept at {fit.ambient_coeff}; add pairs on a colder or warmer day")
    say(f"offset_c = {fit.offset_c:.2f}  ambient_coeff = {fit.ambient_coeff:.3f}  "
        f"reference_ambient_c = {fit.reference_ambient_c:.1f}  calibration_version = \"{version}\"")


def _ask(input_fn: Callable[[str], str], prompt: str) -> str:
    try:
        return input_fn(prompt)
    except EOFError:
        return "q"


def _ask_pairs(cfg: Config, thermometer: Thermometer | None, input_fn: Callable[[str], str],
               say: Callable[[str], None], clock: Callable[[], float],
               sleep: Callable[[float], None]) -> list[Pair]:
    own = thermometer is None
    if thermometer is None:
        from scanner import hardware

        thermometer = hardware.make_thermometer(cfg)
    rules = ScreeningRules.from_config(cfg.thermometer)
    for line in INTRO:
        say(line)
    pairs: list[Pair] = []
    try:
        while True:
            n = len(pairs) + 1
            more = "" if len(pairs) >= MIN_PAIRS else f"，至少 {MIN_PAIRS} 组 / at least {MIN_PAIRS}"
            answer = _ask(input_fn, f"\n第 {n} 组{more}：受测者对准传感器后按回车，输入 q 结束 / pair {n}: "
                                    "person at the sensor, then Enter (q to finish): ")
            if answer.strip().lower() == "q":
                return pairs
            m = measure_once(thermometer, rules, poll_s=cfg.thermometer.poll_interval_s,
                             timeout_s=MEASURE_TIMEOUT_S, clock=clock, sleep=sleep)
            if m is None:
                wait = f"{MEASURE_TIMEOUT_S:.0f}"
                say(f"{wait} 秒内未检测到人，请靠近传感器 / nobody detected in {wait} s: "
                    "hold the forehead or wrist closer to the sensor and retry")
                continue
            hint = status_hint(m)
            if hint:
                say(hint)
                continue
            assert m.object_c is not None and m.ambient_c is not None
            say(f"传感器 / sensor: object {m.object_c:.2f} °C, ambient {m.ambient_c:.2f} °C")
            reference = _ask_reference(input_fn, say)
            if reference is None:
                say("本组已放弃 / pair discarded")
                continue
            pairs.append(Pair(m.object_c, m.ambient_c, reference))
    finally:
        if own:
            thermometer.close()


def _ask_reference(input_fn: Callable[[str], str], say: Callable[[str], None]) -> float | None:
    lo, hi = REFERENCE_LIMITS_C
    while True:
        text = _ask(input_fn, "参考体温计读数 °C（直接回车放弃本组）/ reference reading °C "
                              "(Enter to discard): ").strip()
        if text in ("", "q"):
            return None
        try:
            value = parse_finite(text.replace("，", ".").replace(",", "."), "reference")
        except NotFiniteError:  # "abc", and also "nan" or "inf", which float() would take
            say(f"请输入数字，如 36.8 / type a number such as 36.8 (got {text!r})")
            continue
        if not in_range(value, lo, hi):
            say(f"应在 {lo}..{hi} °C 之间 / must be within {lo}..{hi} °C (got {value})")
            continue
        return value
