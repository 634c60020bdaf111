"""Camera frame -> QR payloads as exact BYTES, plus de-duplication across frames.

Why not plain `pyzbar.decode`:
- zbar guesses a text encoding for byte-mode data without an ECI header (Shift-JIS, Latin-1,
  Big5, UTF-8, in that order of preference) and hands back its UTF-8 re-encoding. UTF-8 Chinese
  text such as "北京市朝阳区" or "健康" is also valid Shift-JIS, so it comes back as mojibake
  ("蛹嶺ｺｬ..."), and binary payloads (CBOR/COSE) are inflated byte by byte (pyzbar #14/#55,
  zbar #55/#212). A signature over the payload can then never verify.
- zbar >= 0.23.1 has `ZBAR_CFG_BINARY` (QR only): no guessing, the bytes as they are in the
  symbol. pyzbar 0.1.9 does not expose it (its PR #82 was never merged), so `_scan_binary`
  drives the same libzbar through pyzbar's ctypes wrapper and sets it. Verified with the
  installed libzbar0 0.23.92: Chinese UTF-8, Latin-1 and random bytes come back exactly.
- On an older zbar (Raspberry Pi OS Buster ships 0.22) setting the option is refused (returns
  1); we then fall back to `pyzbar.decode` + `_undo_zbar_charset`, the known Shift-JIS/Big5
  round-trip workaround. It repairs UTF-8 text but cannot restore arbitrary binary data: keep
  credential payloads ASCII (Base45) so both paths give identical bytes.
  One difference to know: with BINARY, text a generator put in Kanji mode or as Latin-1 comes
  back in that encoding (Shift-JIS / Latin-1 bytes), not as UTF-8; segments with an ECI header
  are still converted to UTF-8 by zbar.

Also: pyzbar uses only channel 0 (blue) of a 3-channel array, so we convert to gray ourselves.
Payloads are never logged; `payload_tag` gives a short SHA-256 prefix for logs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from ctypes import string_at
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import cv2
import numpy as np
from pyzbar import pyzbar
from pyzbar.locations import convex_hull
from pyzbar.wrapper import (
    ZBarConfig,
    ZBarSymbol,
    zbar_image_create,
    zbar_image_destroy,
    zbar_image_first_symbol,
    zbar_image_scanner_create,
    zbar_image_scanner_destroy,
    zbar_image_scanner_set_config,
    zbar_image_set_data,
    zbar_image_set_format,
    zbar_image_set_size,
    zbar_scan_image,
    zbar_symbol_get_data,
    zbar_symbol_get_data_length,
    zbar_symbol_get_loc_size,
    zbar_symbol_get_loc_x,
    zbar_symbol_get_loc_y,
    zbar_symbol_next,
)

log = logging.getLogger(__name__)

ZBAR_CFG_BINARY = 4  # zbar.h enum zbar_config_e (zbar >= 0.23.1); missing from pyzbar's ZBarConfig
_FOURCC_Y800 = 0x30303859  # fourcc('Y','8','0','0'): 8-bit gray, what pyzbar also passes
UPSCALE_BELOW_PX = 640  # frames whose longer side is smaller get one 2x retry when nothing found
DARK_MEAN = 40.0  # mean gray level below which the scene is too dark to decode reliably
SATURATED_SHARE = 0.5  # share of pixels >= 250 above which the exposure is blown out

Polygon = tuple[tuple[int, int], ...]


def payload_tag(payload: bytes) -> str:
    """A short, stable token for logs: the payload itself may be personal data."""
    return hashlib.sha256(payload).hexdigest()[:12]


@dataclass(frozen=True)
class DecodedCode:
    """One symbol found in one frame. `payload` is exactly the bytes in the symbol."""

    payload: bytes = field(repr=False)
    symbology: str
    polygon: Polygon
    t_mono: float

    def __repr__(self) -> str:  # never show the payload, even in a traceback or debug log
        return (f"DecodedCode(tag={payload_tag(self.payload)}, symbology={self.symbology!r}, "
                f"len={len(self.payload)}, t_mono={self.t_mono:.3f})")


def _undo_zbar_charset(data: bytes) -> bytes:
    """Undo zbar's "it was Shift-JIS (or Big5)" guess on UTF-8 text.

    zbar decoded the symbol's UTF-8 bytes as SJIS/Big5 and re-encoded the result as UTF-8.
    If encoding the text back to SJIS/Big5 gives bytes that are themselves valid UTF-8 (and
    differ), those are the original bytes. ASCII and already-correct text stay unchanged.
    Heuristic by nature: only used when zbar cannot do BINARY.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    if text.isascii():
        return data
    for encoding in ("shift_jis", "big5"):
        try:
            raw = text.encode(encoding)
            raw.decode("utf-8")
        except UnicodeError:
            continue
        if raw != data:
            return raw
    return data


@cache
def zbar_binary_supported() -> bool:
    """True when libzbar accepts ZBAR_CFG_BINARY for QR (>= 0.23.1). Probed once."""
    scanner = zbar_image_scanner_create()
    if not scanner:
        return False
    try:
        return zbar_image_scanner_set_config(scanner, ZBarSymbol.QRCODE, ZBAR_CFG_BINARY, 1) == 0
    finally:
        zbar_image_scanner_destroy(scanner)


def _symbol_name(kind: int) -> str:
    try:
        return ZBarSymbol(kind).name
    except ValueError:
        return f"UNKNOWN_{kind}"


Found = list[tuple[bytes, str, Polygon]]  # (payload, symbology, polygon) per symbol


def _scan_binary(gray: np.ndarray, symbols: Sequence[ZBarSymbol]) -> Found:
    """pyzbar.decode's steps, plus ZBAR_CFG_BINARY. One scanner per call, like pyzbar."""
    height, width = gray.shape
    pixels = gray.tobytes()  # must stay referenced until zbar_scan_image returns
    found: Found = []
    scanner = zbar_image_scanner_create()
    if not scanner:
        raise MemoryError("zbar could not create an image scanner")
    try:
        for sym in set(ZBarSymbol).difference(symbols):
            zbar_image_scanner_set_config(scanner, sym, ZBarConfig.CFG_ENABLE, 0)
        for sym in symbols:
            zbar_image_scanner_set_config(scanner, sym, ZBarConfig.CFG_ENABLE, 1)
        if ZBarSymbol.QRCODE in symbols:
            zbar_image_scanner_set_config(scanner, ZBarSymbol.QRCODE, ZBAR_CFG_BINARY, 1)
        image = zbar_image_create()
        if not image:
            raise MemoryError("zbar could not create an image")
        try:
            zbar_image_set_format(image, _FOURCC_Y800)
            zbar_image_set_size(image, width, height)
            zbar_image_set_data(image, pixels, len(pixels), None)  # c_void_p takes bytes
            if zbar_scan_image(scanner, image) < 0:
                raise ValueError("zbar rejected the image format")
            symbol = zbar_image_first_symbol(image)
            while symbol:
                data = string_at(zbar_symbol_get_data(symbol), zbar_symbol_get_data_length(symbol))
                points = convex_hull(
                    (zbar_symbol_get_loc_x(symbol, i), zbar_symbol_get_loc_y(symbol, i))
                    for i in range(zbar_symbol_get_loc_size(symbol)))
                polygon = tuple((int(p.x), int(p.y)) for p in points)
                found.append((data, _symbol_name(symbol.contents.type), polygon))
                symbol = zbar_symbol_next(symbol)
        finally:
            zbar_image_destroy(image)
    finally:
        zbar_image_scanner_destroy(scanner)
    return found


def _scan_fallback(gray: np.ndarray, symbols: Sequence[ZBarSymbol]) -> Found:
    found: Found = []
    for d in pyzbar.decode(gray, symbols=list(symbols)):
        data = _undo_zbar_charset(d.data) if d.type == "QRCODE" else d.data
        found.append((data, d.type, tuple((int(p.x), int(p.y)) for p in d.polygon)))
    return found


def to_gray(image: Any) -> np.ndarray:
    """uint8 H x W (gray), H x W x 3 (BGR) or H x W x 4 (BGRA) -> contiguous uint8 gray."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}: convert the frame first")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY)
    elif arr.ndim != 2:
        raise ValueError(f"expected H x W or H x W x 3 image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def frame_brightness_hint(image: Any) -> str | None:
    """Return "too_dark", "saturated" or None: tells the operator why nothing decodes.

    Cheap heuristics (mean level, share of blown-out pixels); advisory only, never a verdict.
    """
    gray = to_gray(image)
    if gray.size == 0:
        return None
    if float(gray.mean()) < DARK_MEAN:
        return "too_dark"
    if float(np.count_nonzero(gray >= 250)) / gray.size > SATURATED_SHARE:
        return "saturated"
    return None


class Decoder:
    """Finds symbols in frames; `new_codes` reports each payload once per appearance.

    De-duplication: a payload seen in the previous frame, or within `dedup_window_s` of its
    last sighting, is not new (a person holds the phone in view for many frames; a blurred
    frame in between must not create a second passage). Out of view for longer than the window,
    it counts again. Keys are SHA-256 digests, so the dedup table keeps no personal data.
    """

    def __init__(self, symbols: Iterable[str] = ("QRCODE",), dedup_window_s: float = 1.5,
                 clock: Callable[[], float] = time.monotonic, *,
                 upscale_below_px: int = UPSCALE_BELOW_PX) -> None:
        names = tuple(symbols)
        unknown = [n for n in names if n not in ZBarSymbol.__members__]
        if unknown or not names:
            raise ValueError(f"unknown symbologies {unknown or names!r}: "
                             f"use names from {sorted(ZBarSymbol.__members__)}")
        if dedup_window_s < 0:
            raise ValueError(f"dedup_window_s must be >= 0, got {dedup_window_s}")
        self.symbols = tuple(ZBarSymbol[n] for n in names)
        self.dedup_window_s = dedup_window_s
        self.upscale_below_px = upscale_below_px
        self._clock = clock
        self._last_seen: dict[bytes, float] = {}
        self._in_view: set[bytes] = set()
        self.raw_bytes = zbar_binary_supported()
        self._scan = _scan_binary if self.raw_bytes else _scan_fallback
        log.info("zbar %s", "returns raw bytes (ZBAR_CFG_BINARY)" if self.raw_bytes else
                 "lacks ZBAR_CFG_BINARY: using the charset workaround; keep payloads ASCII")

    def decode(self, image: Any, t_mono: float | None = None) -> list[DecodedCode]:
        """All symbols in `image`; one cheap 2x (bicubic) retry for small frames."""
        t = self._clock() if t_mono is None else t_mono
        gray = to_gray(image)
        if gray.size == 0:
            return []
        found = self._scan(gray, self.symbols)
        if not found and max(gray.shape) < self.upscale_below_px:
            big = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
            found = [(data, kind, tuple((x // 2, y // 2) for x, y in poly))
                     for data, kind, poly in self._scan(big, self.symbols)]
        return [DecodedCode(data, kind, poly, t) for data, kind, poly in found]

    def new_codes(self, image: Any, t_mono: float) -> list[DecodedCode]:
        """Codes in this frame that were not already in view (see the class docstring)."""
        fresh: list[DecodedCode] = []
        now_in_view: set[bytes] = set()
        for code in self.decode(image, t_mono):
            key = hashlib.sha256(code.payload).digest()
            if key in now_in_view:
                continue
            now_in_view.add(key)
            last = self._last_seen.get(key)
            if last is None or (key not in self._in_view and t_mono - last > self.dedup_window_s):
                fresh.append(code)
                log.debug("new code %s", payload_tag(code.payload))
            self._last_seen[key] = t_mono
        self._in_view = now_in_view
        for key, seen in list(self._last_seen.items()):
            if key not in now_in_view and t_mono - seen > self.dedup_window_s:
                del self._last_seen[key]
        return fresh

    def reset(self) -> None:
        """Forget every sighting (e.g. after the lane was closed)."""
        self._last_seen.clear()
        self._in_view = set()
