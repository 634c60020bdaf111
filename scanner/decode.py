"""Camera frame -> QR payloads as exact BYTES; de-duplication, motion gating and exposure hints.

Contract: `decode_frame(frame) -> list[DecodedCode]`, `frame` a uint8 gray (H x W) or BGR/BGRA
image; each `DecodedCode` has `data: bytes` (exactly the bytes in the symbol, no charset guess)
and `text: str | None` (UTF-8 text, or the decoder's reading of a Kanji/Latin-1 text symbol,
None for binary data). `payload` is kept as an alias of `data`.

Decoders (decode_engines.py): zxing-cpp when installed, zbar (pyzbar + ZBAR_CFG_BINARY) always
supported. Both feed one ladder (decode_ladder.py) under a per-frame time budget: a whole-frame
pass, then regions that look like codes, enlarged and contrast-stretched, then sharpened or
smoothed, then the other decoder. Why each step: see decode_ladder.py and scripts/bench_decode.py.

In the lane, `Decoder.new_codes` adds:
- de-duplication: a payload seen in the previous frame, or within `dedup_window_s` of its last
  sighting, is not new (a person holds the phone in view for many frames);
- motion gating: a frame that differs too little from the last decoded one, when that one held
  no code, is not decoded at all (an idle lane then costs about one decode per `gate_max_skip_s`);
- presentation hints: a scene that stays too dark, saturated (glare) or shows a code-like region
  too faint to read sets `Decoder.hint` (for the kiosk) and logs it, at most once a minute.
Payloads are never logged; `payload_tag` gives a short keyed hash (HMAC-SHA256) for logs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import cv2
import numpy as np
from pyzbar.wrapper import ZBarSymbol

from scanner import device_secret
from scanner.decode_engines import (
    Polygon,
    ZbarEngine,
    ZxingEngine,
    make_engine,
    text_of,
    undo_zbar_charset,
    zbar_binary_supported,
)
from scanner.decode_ladder import run_ladder

log = logging.getLogger(__name__)

__all__ = ["DecodedCode", "Decoder", "decode_frame", "frame_brightness_hint", "payload_tag", "to_gray",
           "zbar_binary_supported", "HINT_TEXT"]

_undo_zbar_charset = undo_zbar_charset  # kept for callers of the old private name

DEFAULT_BUDGET_MS = 80.0  # per 640x480 frame; a few ms on a desktop core, tens of ms on a Pi 4
DARK_MEAN = 40.0  # mean gray level below which the scene is too dark to decode reliably
SATURATED_SHARE = 0.5  # share of pixels >= 250 above which the exposure is blown out
GATE_THUMB = (80, 60)  # motion gating compares 80x60 area-averaged thumbnails ...
GATE_PIXEL_DELTA = 12  # ... a thumbnail pixel counts as changed past this many grey levels ...
GATE_CHANGED_SHARE = 0.005  # ... and the frame as changed when this share of them did
HINT_AFTER_S = 2.0  # a hint must hold this long before it is shown (one dark frame is no problem)
HINT_LOG_EVERY_S = 60.0
HINT_TEXT = {
    "too_dark": "画面太暗：请补光或调高曝光 / too dark: add light or raise the camera exposure",
    "saturated": "画面过曝或反光：调低曝光、避开直射光 / overexposed or glare: lower the exposure, shade the camera",
    "low_contrast": "二维码太淡：请调亮手机屏幕 / code too faint: turn up the phone's screen brightness",
}


def payload_tag(payload: bytes) -> str:
    """12 hex for logs, keyed with the device secret (scanner/device_secret.py): the payload
    may be an ID number, which an unkeyed hash would give away."""
    return device_secret.payload_tag(payload)


@dataclass(frozen=True)
class DecodedCode:
    """One symbol found in one frame. `data` is exactly the bytes in the symbol."""

    data: bytes = field(repr=False)
    symbology: str = "QRCODE"
    polygon: Polygon = ()
    t_mono: float = 0.0
    text: str | None = field(default=None, repr=False)  # filled from `data` when not given
    rung: str = ""  # which ladder step read it ("frame", "region", ...): for stats, not decisions

    def __post_init__(self) -> None:
        if self.text is None:
            object.__setattr__(self, "text", text_of(self.data))

    @property
    def payload(self) -> bytes:
        """Alias of `data` (the name used before the decoding pipeline)."""
        return self.data

    def __repr__(self) -> str:  # never show the payload, even in a traceback or debug log
        return (f"DecodedCode(tag={payload_tag(self.data)}, symbology={self.symbology!r}, "
                f"len={len(self.data)}, rung={self.rung!r}, t_mono={self.t_mono:.3f})")


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


def _exposure_hint(gray: np.ndarray) -> str | None:
    sample = gray[::4, ::4] if gray.size > 40_000 else gray
    if sample.size == 0:
        return None
    if float(sample.mean()) < DARK_MEAN:
        return "too_dark"
    if float(np.count_nonzero(sample >= 250)) / sample.size > SATURATED_SHARE:
        return "saturated"
    return None


def frame_brightness_hint(image: Any) -> str | None:
    """Return "too_dark", "saturated" or None: tells the operator why nothing decodes.
    Cheap heuristics (mean level, share of blown-out pixels); advisory only, never a verdict."""
    return _exposure_hint(to_gray(image))


def _scaled_budget_s(budget_ms: float, gray: np.ndarray) -> float:
    """The budget is for a 640x480 frame; a larger photo gets proportionally more, or its
    whole-frame pass alone would use it up and the ladder would never run."""
    return budget_ms / 1000.0 * max(1.0, gray.size / (640 * 480))


@cache
def _default_engines(engine: str) -> tuple[ZxingEngine | ZbarEngine, ZxingEngine | ZbarEngine | None]:
    return _engines(engine, ("QRCODE",))


def _engines(engine: str, symbols: tuple[str, ...]) -> tuple[ZxingEngine | ZbarEngine,
                                                             ZxingEngine | ZbarEngine | None]:
    primary = make_engine(engine, symbols)
    secondary = ZbarEngine(symbols) if isinstance(primary, ZxingEngine) else None
    return primary, secondary


def decode_frame(frame: Any, *, budget_ms: float = DEFAULT_BUDGET_MS, engine: str = "auto",
                 t_mono: float | None = None) -> list[DecodedCode]:
    """Every QR code in one image (gray or BGR uint8), read by the ladder within `budget_ms`.
    Stateless: no de-duplication, no gating (that is `Decoder.new_codes`)."""
    gray = to_gray(frame)
    if gray.size == 0 or min(gray.shape) < 8:
        return []
    primary, secondary = _default_engines(engine)
    t = time.monotonic() if t_mono is None else t_mono
    result = run_ladder(gray, primary, secondary, _scaled_budget_s(budget_ms, gray))
    return [DecodedCode(h.data, h.symbology, h.polygon, t, h.text, rung) for h, rung in result.hits]


@dataclass
class DecoderStats:
    frames_decoded: int = 0
    frames_skipped: int = 0  # motion gating: unchanged frames without a code
    out_of_time: int = 0  # frames whose ladder hit the budget
    reads_by_rung: Counter[str] = field(default_factory=Counter)


class Decoder:
    """Finds symbols in frames; `new_codes` reports each payload once per appearance.

    De-duplication keys are SHA-256 digests, so the table keeps no personal data. A payload
    out of view for longer than the window counts again.
    """

    def __init__(self, symbols: Iterable[str] = ("QRCODE",), dedup_window_s: float = 1.5,
                 clock: Callable[[], float] = time.monotonic, *, engine: str = "auto",
                 budget_ms: float = DEFAULT_BUDGET_MS, motion_gate: bool = True,
                 gate_max_skip_s: float = 1.0) -> None:
        names = tuple(symbols)
        unknown = [n for n in names if n not in ZBarSymbol.__members__]
        if unknown or not names:
            raise ValueError(f"unknown symbologies {unknown or names!r}: "
                             f"use names from {sorted(ZBarSymbol.__members__)}")
        if dedup_window_s < 0:
            raise ValueError(f"dedup_window_s must be >= 0, got {dedup_window_s}")
        if budget_ms <= 0:
            raise ValueError(f"budget_ms must be > 0, got {budget_ms}")
        self.symbols = names
        self.dedup_window_s = dedup_window_s
        self.budget_s = budget_ms / 1000.0
        self.motion_gate = motion_gate
        self.gate_max_skip_s = gate_max_skip_s
        self._clock = clock
        self.primary, self.secondary = _engines(engine, names)
        self.engine = self.primary.name
        self.raw_bytes = self.primary.raw_bytes
        self.stats = DecoderStats()
        self.hint: str | None = None  # shown on the kiosk: see HINT_TEXT
        self._last_seen: dict[bytes, float] = {}
        self._in_view: set[bytes] = set()
        self._gate_ref: np.ndarray | None = None
        self._gate_ref_t = 0.0
        self._gate_ref_had_code = True
        self._hint_candidate: str | None = None
        self._hint_since = 0.0
        self._hint_logged: dict[str, float] = {}
        log.info("decoder engine=%s fallback=%s raw_bytes=%s budget_ms=%.0f motion_gate=%s", self.engine,
                 self.secondary.name if self.secondary else None, self.raw_bytes, budget_ms, motion_gate)
        if not self.raw_bytes:
            log.warning("zbar lacks ZBAR_CFG_BINARY: using the charset workaround; keep payloads ASCII, "
                        "or pip install zxing-cpp")

    def _decode_gray(self, gray: np.ndarray, t: float) -> tuple[list[DecodedCode], bool]:
        result = run_ladder(gray, self.primary, self.secondary, _scaled_budget_s(self.budget_s * 1000.0, gray))
        self.stats.frames_decoded += 1
        self.stats.out_of_time += result.out_of_time
        codes = [DecodedCode(h.data, h.symbology, h.polygon, t, h.text, rung) for h, rung in result.hits]
        for c in codes:
            self.stats.reads_by_rung[c.rung] += 1
        return codes, result.low_contrast

    def decode(self, image: Any, t_mono: float | None = None) -> list[DecodedCode]:
        """All symbols in `image` (no gating, no de-duplication)."""
        t = self._clock() if t_mono is None else t_mono
        gray = to_gray(image)
        if gray.size == 0 or min(gray.shape) < 8:
            return []
        return self._decode_gray(gray, t)[0]

    # -- the lane's entry point ----------------------------------------------------------
    def _unchanged(self, gray: np.ndarray, t: float) -> bool:
        """True when this frame may be skipped (see the module docstring). Updates nothing."""
        if not self.motion_gate or self._gate_ref is None or self._gate_ref_had_code:
            return False
        if t - self._gate_ref_t >= self.gate_max_skip_s:
            return False
        thumb = cv2.resize(gray, GATE_THUMB, interpolation=cv2.INTER_AREA)
        if thumb.shape != self._gate_ref.shape:
            return False
        changed = np.count_nonzero(cv2.absdiff(thumb, self._gate_ref) > GATE_PIXEL_DELTA)
        return bool(changed < GATE_CHANGED_SHARE * thumb.size)

    def new_codes(self, image: Any, t_mono: float) -> list[DecodedCode]:
        """Codes in this frame that were not already in view (see the class docstring)."""
        gray = to_gray(image)
        if gray.size == 0 or min(gray.shape) < 8:
            return []
        if self._unchanged(gray, t_mono):
            self.stats.frames_skipped += 1
            return []
        codes, low_contrast = self._decode_gray(gray, t_mono)
        if self.motion_gate:
            self._gate_ref = cv2.resize(gray, GATE_THUMB, interpolation=cv2.INTER_AREA)
            self._gate_ref_t = t_mono
            self._gate_ref_had_code = bool(codes)
        self._update_hint(None if codes else (_exposure_hint(gray) or ("low_contrast" if low_contrast else None)),
                          t_mono)
        fresh: list[DecodedCode] = []
        now_in_view: set[bytes] = set()
        for code in codes:
            key = code.data  # in memory only, for the dedup window
            if key in now_in_view:
                continue
            now_in_view.add(key)
            last = self._last_seen.get(key)
            if last is None or (key not in self._in_view and t_mono - last > self.dedup_window_s):
                fresh.append(code)
                log.debug("new code %s rung=%s", payload_tag(code.data), code.rung)
            self._last_seen[key] = t_mono
        self._in_view = now_in_view
        for key, seen in list(self._last_seen.items()):
            if key not in now_in_view and t_mono - seen > self.dedup_window_s:
                del self._last_seen[key]
        return fresh

    def _update_hint(self, hint: str | None, t: float) -> None:
        if hint != self._hint_candidate:
            self._hint_candidate, self._hint_since = hint, t
        shown = hint if hint is not None and t - self._hint_since >= HINT_AFTER_S else None
        if shown is not None and shown != self.hint:
            last = self._hint_logged.get(shown)
            if last is None or t - last >= HINT_LOG_EVERY_S:
                self._hint_logged[shown] = t
                log.warning("event=presentation_hint hint=%s text=%r", shown, HINT_TEXT[shown])
        self.hint = shown

    @property
    def hint_text(self) -> str | None:
        """The current hint in Chinese and English, for the kiosk screen."""
        return HINT_TEXT[self.hint] if self.hint else None

    def reset(self) -> None:
        """Forget every sighting (e.g. after the lane was closed)."""
        self._last_seen.clear()
        self._in_view = set()
        self._gate_ref = None
