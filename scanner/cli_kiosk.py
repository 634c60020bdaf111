"""`checkpoint-scanner kiosk --render STATE --out FILE.png`: a kiosk screen, offscreen.

For technicians checking a screen layout and for the tests; the daemon draws the same screens
live (see scanner/kiosk.py).
"""

from __future__ import annotations

import argparse

from scanner.errors import ScannerError

EPILOG = """examples:
  checkpoint-scanner kiosk --render PASS --out pass.png
  checkpoint-scanner kiosk --render DENY --reason FEVER --temp 38.2 --out deny.png
  checkpoint-scanner kiosk --render FAULT --size 1024x600 --out fault.png
  checkpoint-scanner kiosk --render deny --reason health_red --reason fever --size 800x480 --out d.png
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from scanner.kiosk import BANNERS

    p = sub.add_parser("kiosk", help="render a kiosk screen to a PNG (offscreen)",
                       description="屏幕预览 / Render the kiosk screen for one lane state, as the passer-by sees it.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--render", required=True, type=str.upper, choices=sorted(BANNERS), metavar="STATE",
                   help=f"lane state, any case: {', '.join(BANNERS)}")
    p.add_argument("--out", required=True, help="image file to write; .png (or .jpg), the format its name ends with")
    p.add_argument("--reason", action=_ReasonAction, default=[], metavar="CODE",
                   help="a reason code, e.g. HEALTH_RED, any case (repeatable); `--reason list` prints them")
    p.add_argument("--fault", action="append", default=[],
                   help="fault text for --render FAULT (repeatable; '中文 / English' or English)")
    p.add_argument("--temp", type=float, help="temperature to show, °C")
    p.add_argument("--size", default="1280x720", help="screen size WxH (default 1280x720; 7\" Pi display: 800x480)")
    p.set_defaults(func=run)


class _ReasonAction(argparse.Action):
    """--reason CODE appends a checked code; `--reason list` prints every code and exits 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from scanner.reasons import REASONS

        if str(values).strip().lower() == "list":
            for code, (zh, en) in REASONS.items():
                print(f"{code:<24} {zh} / {en}")
            parser.exit(0)
        try:
            code = reason_code(str(values))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), code])


def reason_code(text: str) -> str:
    """argparse type for --reason: a known reason code in any case, else a usage error (exit 2)."""
    from scanner.reasons import REASONS

    code = text.strip().upper()
    if code not in REASONS:
        raise argparse.ArgumentTypeError(f"unknown reason {text!r}; fix: one of {', '.join(REASONS)}")
    return code


def run(args: argparse.Namespace) -> int:
    from scanner.kiosk import Renderer, demo_view
    from scanner.qrimage import frame_with_codes

    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise ScannerError(f"--size {args.size!r} is not WxH; fix: e.g. --size 1280x720") from None
    if not (320 <= w <= 7680 and 240 <= h <= 4320):
        raise ScannerError(f"--size {w}x{h} out of range; fix: between 320x240 and 7680x4320")
    kw: dict[str, object] = {}
    if args.reason:
        kw["reasons"] = tuple(args.reason)
    if args.fault:
        kw["faults"] = tuple(args.fault)
    if args.temp is not None:
        kw["temperature_c"] = args.temp
    fmt = _image_format(args.out)
    renderer = Renderer((w, h))
    if renderer.font_path is None:
        print("warning: no CJK font found (apt-get install fonts-noto-cjk): Chinese will show as boxes")
    preview = None if args.render == "FAULT" else frame_with_codes(["ZHC1:DEMO"])
    img, _ = renderer.render(demo_view(args.render, preview=preview, **kw))
    try:
        (img.convert("RGB") if fmt == "JPEG" else img).save(args.out, format=fmt)
    except OSError as e:
        raise ScannerError(f"cannot write {args.out} ({e.strerror}); fix: choose a writable path") from None
    print(f"{args.out}: {args.render} screen {w}x{h}")
    return 0


def _image_format(out: str) -> str:
    """The Pillow format the name's extension names (PNG for .png, JPEG for .jpg), or a
    ScannerError: the file must hold what its name says."""
    from pathlib import Path

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(out).suffix.lower())
    if not fmt:
        raise ScannerError(f"--out {out}: the name must end with .png or .jpg (the format written); fix: e.g. "
                           "--out screen.png")
    return fmt
