"""QR codes as camera-like frames, for the demo, simulation bootstrap and `codes issue --png`.

Payloads that are Base45 text (our codes, DCCs) are encoded in alphanumeric mode with error
correction Q (docs/credentials.md section 1): large modules survive sunlight and cracked phone screens.
Anything else is encoded as UTF-8 bytes, so Chinese text is not re-guessed as Shift-JIS kanji.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import segno

_ALNUM = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def make_qr(payload: str | bytes) -> segno.QRCode:
    if isinstance(payload, str) and set(payload) <= _ALNUM:
        return segno.make_qr(payload, error="q", mode="alphanumeric", boost_error=False)
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return segno.make_qr(data, error="q", mode="byte", boost_error=False)


def qr_image(payload: str | bytes, scale: int = 4, border: int = 4) -> np.ndarray:
    """Grayscale uint8 image of one QR code."""
    buf = io.BytesIO()
    make_qr(payload).save(buf, kind="png", scale=scale, border=border)
    img = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None  # segno always writes a valid PNG
    return np.asarray(img, dtype=np.uint8)


def frame_with_codes(payloads: list[str | bytes], size: tuple[int, int] = (480, 640),
                     background: int = 200, seed: int = 0) -> np.ndarray:
    """A 640x480 grayscale frame with the codes side by side on a mildly noisy background,
    like a phone held up to the camera."""
    h, w = size
    rng = np.random.default_rng(seed)
    frame = np.clip(rng.normal(background, 6, (h, w)), 0, 255).astype(np.uint8)
    if not payloads:
        return frame
    slot = w // len(payloads)
    for i, p in enumerate(payloads):
        scale = 4
        img = qr_image(p, scale=scale)
        while (img.shape[1] > slot - 8 or img.shape[0] > h - 8) and scale > 1:
            scale -= 1
            img = qr_image(p, scale=scale)
        y = (h - img.shape[0]) // 2
        x = i * slot + (slot - img.shape[1]) // 2
        frame[y:y + img.shape[0], x:x + img.shape[1]] = img
    return frame
