#!/usr/bin/env python3
"""Side-by-side QR decoding benchmark on a seeded set of hard 640x480 frames (hardframes.py).

Decoders, all on one core in this one process (os.sched_setaffinity + cv2.setNumThreads(1)),
all given the same grayscale frame:
  pyzbar             pyzbar.decode(gray, symbols=[QRCODE]) as a tutorial would call it
  pyzbar+pre         zbar with exact bytes (ZBAR_CFG_BINARY) and its best preprocessing found
                     here: plain, then 2x enlarged, then contrast-equalised (CLAHE) and 2x
  zxing-cpp          zxingcpp.read_barcodes(gray, formats=QRCode), library defaults
  opencv             cv2.QRCodeDetector().detectAndDecodeMulti
  opencv-aruco       cv2.QRCodeDetectorAruco().detectAndDecodeMulti
  pipeline           scanner.decode.decode_frame (the lane's ladder, default budget)
A read is a payload of the frame decoded to exactly its bytes; a wrong decode is any output
that is not one of the frame's payloads (pyzbar's Shift-JIS mojibake counts as wrong).
Payloads: real signed health and residence codes (Base45, about 280 and 360 characters), URLs,
Chinese UTF-8 text, payment-code-like digits and random binary.

Usage: .venv/bin/python scripts/bench_decode.py [--seed N] [--codes N] [--empty N] [--save DIR]
The last line is `pipeline/zxingcpp time ratio: X, pipeline read: N/M, best peer read: K/M`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import hardframes  # noqa: E402
import numpy as np  # noqa: E402
from pyzbar import pyzbar  # noqa: E402
from pyzbar.pyzbar import ZBarSymbol  # noqa: E402

from scanner.credentials import Signer, generate_keys, issue_health, issue_residence  # noqa: E402
from scanner.decode import decode_frame  # noqa: E402
from scanner.decode_engines import scan_zbar_binary, zxing_module  # noqa: E402

Decode = Callable[[np.ndarray], list[bytes]]


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)
    return cpu


def real_credentials(work: Path) -> list[str]:
    now = datetime.now(UTC)
    ks = generate_keys(work / "keys", now=now - timedelta(days=1))
    health = Signer.load(ks.health_key, ks.health_cert)
    street = Signer.load(ks.residence_key, ks.residence_cert)
    hc = issue_health(health, colour="green", sid=b"\x01" * 16, masked_name="陈*聪", id_tail="123X",
                      region="330381", iat=now - timedelta(hours=1), exp=now + timedelta(hours=20))
    ajm = issue_residence(street, house_id="H1", village="330381001001", grid="G7", unit_label="3幢2单元502",
                          tenant_sid=b"\x02" * 16, masked_name="林*", id_tail="0421", verified_by="塘下街道",
                          iat=now - timedelta(days=3), nbf=now - timedelta(days=2), exp=now + timedelta(days=200))
    return [hc, ajm]


def _pyzbar(gray: np.ndarray) -> list[bytes]:
    return [d.data for d in pyzbar.decode(gray, symbols=[ZBarSymbol.QRCODE])]


def _zbar(gray: np.ndarray) -> list[bytes]:
    return [h.data for h in scan_zbar_binary(gray, [ZBarSymbol.QRCODE])]


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def _pyzbar_pre(gray: np.ndarray) -> list[bytes]:
    for prep in (lambda g: g, lambda g: cv2.resize(g, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR),
                 lambda g: cv2.resize(_CLAHE.apply(g), None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)):
        got = _zbar(np.ascontiguousarray(prep(gray)))
        if got:
            return got
    return []


def _opencv(detector: object) -> Decode:
    def run(gray: np.ndarray) -> list[bytes]:
        try:
            ok, texts, _, _ = detector.detectAndDecodeMulti(gray)  # type: ignore[attr-defined]
        except cv2.error:
            return []
        return [t.encode("utf-8", "surrogateescape") for t in texts if t] if ok else []
    return run


def decoders() -> dict[str, Decode]:
    out: dict[str, Decode] = {"pyzbar": _pyzbar, "pyzbar+pre": _pyzbar_pre}
    zx = zxing_module()
    if zx is not None:
        fmt = zx.BarcodeFormat.QRCode
        out["zxing-cpp"] = lambda g: [bytes(r.bytes) for r in zx.read_barcodes(g, formats=fmt)]
    out["opencv"] = _opencv(cv2.QRCodeDetector())
    if hasattr(cv2, "QRCodeDetectorAruco"):
        out["opencv-aruco"] = _opencv(cv2.QRCodeDetectorAruco())
    out["pipeline"] = lambda g: [c.data for c in decode_frame(g)]
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_all(decs: dict[str, Decode], frames: list[hardframes.HardFrame]) -> dict[str, dict[str, float]]:
    """Every frame through every decoder in turn, so a load change on the machine hits all alike."""
    for fn in decs.values():
        fn(frames[0].image)  # warm-up: first-call allocations are not the decoder's speed
    tally = {name: {"read": 0, "total": 0, "wrong": 0} for name in decs}
    t_code: dict[str, list[float]] = {name: [] for name in decs}
    t_empty: dict[str, list[float]] = {name: [] for name in decs}
    for f in frames:
        truth = set(f.truth)
        for name, fn in decs.items():
            t0 = time.perf_counter()
            got = set(fn(f.image))
            dt = (time.perf_counter() - t0) * 1000
            (t_code if f.truth else t_empty)[name].append(dt)
            tally[name]["read"] += len(got & truth)
            tally[name]["wrong"] += len(got - truth)
            tally[name]["total"] += len(truth)
    out: dict[str, dict[str, float]] = {}
    for name in decs:
        tc, te = t_code[name], t_empty[name]
        out[name] = {**{k: float(v) for k, v in tally[name].items()},
                     "med": statistics.median(tc), "p95": pct(tc, 95),
                     "empty_med": statistics.median(te) if te else float("nan"), "empty_p95": pct(te, 95)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--codes", type=int, default=200, help="frames with one or two codes")
    ap.add_argument("--empty", type=int, default=60, help="frames without a code (half with code-like patches)")
    ap.add_argument("--save", type=Path, help="also write the frames as PNG files here")
    args = ap.parse_args(argv)
    cpu = pin_one_core()
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        creds = real_credentials(Path(tmp))
    t0 = time.perf_counter()
    frames = hardframes.build_set(args.seed, args.codes, args.empty, creds)
    print(f"{len(frames)} frames (seed {args.seed}: {args.codes} with codes, {args.empty} without) "
          f"made in {time.perf_counter() - t0:.1f} s; pinned to cpu {cpu}")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            cv2.imwrite(str(args.save / f"frame_{i:04d}_{'-'.join(f.tags)}.png"), f.image)
    results = run_all(decoders(), frames)
    print(f"{'decoder':14s} {'read':>9s} {'wrong':>5s} {'median ms':>9s} {'p95 ms':>7s} "
          f"{'empty med':>9s} {'empty p95':>9s}")
    for name, r in results.items():
        print(f"{name:14s} {r['read']:>4.0f}/{r['total']:<4.0f} {r['wrong']:>5.0f} {r['med']:>9.2f} {r['p95']:>7.2f} "
              f"{r['empty_med']:>9.2f} {r['empty_p95']:>9.2f}")
    pipe = results["pipeline"]
    peers = {k: v for k, v in results.items() if k != "pipeline"}
    best = max(peers.values(), key=lambda r: r["read"])
    zx = results.get("zxing-cpp")
    if zx is not None:
        print(f"pipeline/zxingcpp empty-frame time ratio: {pipe['empty_med'] / zx['empty_med']:.2f}")
    ratio = pipe["med"] / zx["med"] if zx is not None else float("nan")
    print(f"pipeline/zxingcpp time ratio: {ratio:.2f}, pipeline read: {pipe['read']:.0f}/{pipe['total']:.0f}, "
          f"best peer read: {best['read']:.0f}/{best['total']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
