"""The two QR decoders behind scanner.decode, both returning the exact bytes in the symbol.

zxing-cpp (preferred when installed): on our hard-frame bench and on camera-like frames it reads
more codes than zbar at a small fraction of the time (about 0.5 ms against 7 ms per 640x480
frame on one x86 core); `Barcode.bytes` is the symbol's content as bytes, with no charset guess.
Binary wheels exist for x86_64 and aarch64 (Raspberry Pi OS 64-bit).

zbar through pyzbar (always supported, the design card's decoder): zbar guesses a text encoding
for byte-mode data without an ECI header (Shift-JIS, Latin-1, Big5, UTF-8, in that order) and
hands back its UTF-8 re-encoding, so UTF-8 Chinese such as "北京市朝阳区" (also valid Shift-JIS)
comes back as mojibake and binary payloads are inflated byte by byte (pyzbar #14/#55, zbar
#55/#212). zbar >= 0.23.1 has `ZBAR_CFG_BINARY` (QR only): the bytes as they are in the symbol.
pyzbar 0.1.9 does not expose it (its PR #82 was never merged), so `scan_zbar` drives the same
libzbar through pyzbar's ctypes wrapper and sets it. On an older zbar (Buster ships 0.22) the
option is refused; we then fall back to `pyzbar.decode` + `undo_zbar_charset`, the known
Shift-JIS/Big5 round trip, which repairs UTF-8 text but not arbitrary binary data: credential
payloads are ASCII (Base45), so both paths give identical bytes for them.
With BINARY, text that a generator put in Kanji mode or as Latin-1 comes back in that encoding
(Shift-JIS / Latin-1 bytes), exactly as zxing-cpp's `bytes` does.

pyzbar uses only channel 0 (blue) of a 3-channel array: callers pass gray images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from ctypes import string_at
from functools import cache
from typing import Any, NamedTuple

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

log = logging.getLogger("scanner.decode")

ZBAR_CFG_BINARY = 4  # zbar.h enum zbar_config_e (zbar >= 0.23.1); missing from pyzbar's ZBarConfig
_FOURCC_Y800 = 0x30303859  # fourcc('Y','8','0','0'): 8-bit gray, what pyzbar also passes

Polygon = tuple[tuple[int, int], ...]


class Hit(NamedTuple):
    """One symbol read by an engine, in the coordinates of the image it was given."""

    data: bytes
    symbology: str
    polygon: Polygon
    text: str | None = None  # the engine's own reading of a text payload that is not UTF-8


class Scan(NamedTuple):
    hits: list[Hit]
    detected: bool  # a symbol was located but could not be read (worth another try)


def text_of(data: bytes, engine_text: str | None = None) -> str | None:
    """UTF-8 text when the bytes are UTF-8; else the engine's reading of a text symbol (Kanji
    mode, Latin-1); None for binary data. Never raises."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return engine_text


# -- zbar ---------------------------------------------------------------------------------------

def undo_zbar_charset(data: bytes) -> bytes:
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


def scan_zbar_binary(gray: np.ndarray, symbols: Sequence[ZBarSymbol]) -> list[Hit]:
    """pyzbar.decode's steps, plus ZBAR_CFG_BINARY. One scanner per call, like pyzbar (a
    long-lived zbar QR scanner grows its recycled-symbol pool without bound: zbar #258)."""
    height, width = gray.shape
    pixels = gray.tobytes()  # must stay referenced until zbar_scan_image returns
    found: list[Hit] = []
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
                found.append(Hit(data, _symbol_name(symbol.contents.type), polygon))
                symbol = zbar_symbol_next(symbol)
        finally:
            zbar_image_destroy(image)
    finally:
        zbar_image_scanner_destroy(scanner)
    return found


def scan_zbar_fallback(gray: np.ndarray, symbols: Sequence[ZBarSymbol]) -> list[Hit]:
    found: list[Hit] = []
    for d in pyzbar.decode(gray, symbols=list(symbols)):
        data = undo_zbar_charset(d.data) if d.type == "QRCODE" else d.data
        found.append(Hit(data, d.type, tuple((int(p.x), int(p.y)) for p in d.polygon)))
    return found


class ZbarEngine:
    """zbar via pyzbar's ctypes wrapper; exact bytes when libzbar has ZBAR_CFG_BINARY."""

    name = "zbar"

    def __init__(self, symbols: Sequence[str] = ("QRCODE",)) -> None:
        self.symbols = tuple(ZBarSymbol[n] for n in symbols)
        self.raw_bytes = zbar_binary_supported()
        self._scan = scan_zbar_binary if self.raw_bytes else scan_zbar_fallback

    def scan(self, gray: np.ndarray, *, whole_frame: bool = True, invert: bool = False) -> Scan:
        hits = self._scan(np.ascontiguousarray(gray), self.symbols)
        if not hits and invert:  # zbar has no inverted pass of its own
            hits = self._scan(np.ascontiguousarray(255 - gray), self.symbols)
        return Scan(hits, False)


# -- zxing-cpp ----------------------------------------------------------------------------------

def zxing_module() -> Any:
    """The zxingcpp module, or None when it is not installed (pyzbar then reads alone)."""
    try:
        import zxingcpp
    except ImportError:
        return None
    return zxingcpp


_ZXING_FORMATS = {"QRCODE": "QRCode", "EAN13": "EAN13", "EAN8": "EAN8", "CODE128": "Code128",
                  "CODE39": "Code39", "PDF417": "PDF417", "I25": "ITF", "UPCA": "UPCA", "UPCE": "UPCE",
                  "CODABAR": "Codabar", "CODE93": "Code93", "DATABAR": "DataBar"}


class ZxingEngine:
    """zxing-cpp. On a whole frame: the library's pass with its downscaled pyramid (large photos)
    but without the inverted pass, which zxing-cpp runs even after a success and which doubles
    the time; on a prepared region: one plain pass that also reports a located-but-unread symbol."""

    name = "zxing"
    raw_bytes = True

    def __init__(self, symbols: Sequence[str] = ("QRCODE",)) -> None:
        zx = zxing_module()
        if zx is None:
            raise ImportError("zxing-cpp is not installed: pip install zxing-cpp, or use engine 'zbar'")
        self._zx = zx
        unsupported = [s for s in symbols if s not in _ZXING_FORMATS]
        if unsupported:
            raise ValueError(f"zxing-cpp engine does not read {unsupported}: use engine 'zbar'")
        formats = [getattr(zx.BarcodeFormat, _ZXING_FORMATS[s]) for s in symbols]
        fmt = formats[0]
        for f in formats[1:]:
            fmt = fmt | f
        self._formats = fmt
        self._names = {str(getattr(zx.BarcodeFormat, v)): k for k, v in _ZXING_FORMATS.items()}
        self._text_type = zx.ContentType.Text

    def _hit(self, r: Any) -> Hit:
        p = r.position
        poly = tuple((int(q.x), int(q.y)) for q in (p.top_left, p.top_right, p.bottom_right, p.bottom_left))
        name = self._names.get(str(r.format), str(r.format))
        engine_text = r.text if r.content_type == self._text_type else None
        return Hit(bytes(r.bytes), name, poly, engine_text)

    def scan(self, gray: np.ndarray, *, whole_frame: bool = True, invert: bool = False) -> Scan:
        zx = self._zx
        if whole_frame:  # rotation is for 1D codes and inversion doubles the cost: the ladder
            # looks for light-on-dark codes in candidate regions instead (polarity-blind texture map)
            results = zx.read_barcodes(gray, formats=self._formats, try_rotate=False, try_invert=False)
            return Scan([self._hit(r) for r in results], False)
        results = zx.read_barcodes(gray, formats=self._formats, try_rotate=False, try_invert=invert,
                                   try_downscale=False, return_errors=True)
        hits = [self._hit(r) for r in results if r.valid]
        return Scan(hits, any(not r.valid for r in results))


def make_engine(name: str, symbols: Sequence[str] = ("QRCODE",)) -> ZxingEngine | ZbarEngine:
    """'auto' = zxing-cpp when installed, else zbar; 'zxing' or 'zbar' to force one."""
    if name not in ("auto", "zxing", "zbar"):
        raise ValueError(f"unknown decoder engine {name!r}: use 'auto', 'zxing' or 'zbar'")
    if name == "zbar" or (name == "auto" and (zxing_module() is None
                                              or any(s not in _ZXING_FORMATS for s in symbols))):
        return ZbarEngine(symbols)
    return ZxingEngine(symbols)
