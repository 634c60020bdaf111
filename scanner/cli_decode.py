"""`checkpoint-scanner decode [--json] IMAGE...`: what the gate camera would read in pictures.

One line per image, in the order given. Never the contents of a code (they may hold a name or
an ID): a hash, the length, whether it is text, and the credential prefix (ZHC1:, AJM1:, HC1:)
when it has one. The hash is keyed (HMAC-SHA256): with --device-secret it is the gate's own
`code_hash=` of its log lines; without, a random key for this run (compare within one run only).
Exit 0 when every image held a code, 1 when some had none, 2 when some image could not be read
at all (that line names the fix).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

_PREFIX = re.compile(rb"^[A-Z0-9]{2,5}:")  # a credential type tag, no personal data

DESCRIPTION = """\
识读二维码图片 / Read QR codes in pictures.
What the gate camera would read in pictures, one line per image, in the order given. Never the
contents of a code (they may hold a name or an ID): a hash, the length, whether it is text,
and the credential prefix (ZHC1:, AJM1:, HC1:) when it has one. With --device-secret the hash
is the gate's own `code_hash=` of its log lines; without, a random key for this run (compare
within one run only). Exit 0 when every image held a code, 1 when some had none, 2 when some
image could not be read at all (that line names the fix)."""

EPILOG = """\
examples:
  checkpoint-scanner decode photo.jpg
  checkpoint-scanner decode --json frames/*.png      one JSON object per line
  checkpoint-scanner decode --engine zbar photo.jpg  zbar alone (the fallback decoder)
  sudo -u checkpoint checkpoint-scanner decode --device-secret /var/lib/checkpoint-scanner/device-secret p.jpg
                                                     hashes as in the gate's log lines
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "decode", help="read the QR codes in images (prints hashes, never contents)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or BMP file(s)")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.add_argument("--engine", choices=("auto", "zxing", "zbar"), default="auto",
                   help="decoder behind the ladder (default: zxing-cpp when installed)")
    p.add_argument("--budget-ms", type=float, default=2000.0,
                   help="time budget per image in milliseconds (default 2000: a photo, not a live frame)")
    p.add_argument("--device-secret", metavar="FILE",
                   help="key the hashes with the gate's secret (device-secret next to its outbox) so they "
                   "match its log lines; read only, never created (default: a random key for this run)")
    p.set_defaults(func=run)
    return p


def describe(data: bytes, text: str | None) -> dict[str, Any]:
    from scanner.service import payload_key

    m = _PREFIX.match(data)
    return {"hash": payload_key(data), "bytes": len(data), "text": text is not None,
            "prefix": m.group(0).decode("ascii") if m else None}


def _line(path: str, codes: list[Any], ms: float) -> str:
    if not codes:
        return f"{path}: no code found / 未识别到二维码 ({ms:.0f} ms)"
    parts = []
    for c in codes:
        d = describe(c.data, c.text)
        kind = d["prefix"] or ("text" if d["text"] else "binary")
        parts.append(f"hash={d['hash']} bytes={d['bytes']} {kind}")
    return f"{path}: {len(codes)} code{'s' if len(codes) > 1 else ''}: " + "; ".join(parts) + f" ({ms:.0f} ms)"


def run(args: argparse.Namespace) -> int:
    import cv2

    from scanner.decode import decode_frame

    if args.device_secret:
        from scanner import device_secret

        device_secret.install(device_secret.read(args.device_secret))
    worst = 0
    for path in args.images:
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            worst = 2
            msg = f"cannot read image {path}: give a PNG, JPEG or BMP file that exists"
            print(json.dumps({"image": path, "error": msg}, ensure_ascii=False) if args.json else f"{path}: {msg}")
            continue
        t0 = time.perf_counter()
        try:
            codes = decode_frame(image, budget_ms=args.budget_ms, engine=args.engine)
        except ImportError as e:  # --engine zxing without the package
            from scanner.errors import ScannerError

            raise ScannerError(f"{e}") from e
        ms = (time.perf_counter() - t0) * 1000
        if not codes:
            worst = max(worst, 1)
        if args.json:
            print(json.dumps({"image": path, "ms": round(ms, 1), "codes": [
                {**describe(c.data, c.text), "symbology": c.symbology, "rung": c.rung,
                 "polygon": [list(p) for p in c.polygon]} for c in codes]}, ensure_ascii=False))
        else:
            print(_line(path, codes, ms))
    return worst
