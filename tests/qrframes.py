"""Real camera-like frames with real QR codes in them, for decoder and camera tests.

The codes are made by segno, so the decoder is tested against a real encoder, and placed on a
noisy 640x480 background (a blank synthetic image is far easier than any camera frame).
Payloads are always given to segno as BYTES: segno would otherwise pick Latin-1 or Kanji mode
for some text, and the test could not know which bytes to expect back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import segno

FRAME_SIZE = (640, 480)  # width, height
BACKGROUND = 190


def as_bytes(payload: bytes | str) -> bytes:
    return payload if isinstance(payload, bytes) else payload.encode("utf-8")


def qr_tile(payload: bytes | str, *, module_px: int = 4, border: int = 4, error: str = "m",
            eci: bool = False) -> np.ndarray:
    """The bare symbol: uint8 gray, black modules on white, `border` quiet-zone modules."""
    qr = segno.make(as_bytes(payload), error=error, micro=False, eci=eci)
    dark = np.array(list(qr.matrix_iter(scale=module_px, border=border)), dtype=bool)
    return np.where(dark, 0, 255).astype(np.uint8)


def rotate(tile: np.ndarray, degrees: float, fill: int = 255) -> np.ndarray:
    """Rotate on an enlarged canvas so no module is cut off."""
    h, w = tile.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(h * sin + w * cos) + 1, int(h * cos + w * sin) + 1
    matrix[0, 2] += new_w / 2 - w / 2
    matrix[1, 2] += new_h / 2 - h / 2
    return cv2.warpAffine(tile, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR,
                          borderValue=fill)


def make_frame(*payloads: bytes | str, module_px: int = 4, rotate_deg: float = 0.0,
               blur_px: int = 0, noise_sigma: float = 4.0, size: tuple[int, int] = FRAME_SIZE,
               seed: int = 0) -> np.ndarray:
    """A gray frame with each payload's code side by side, left to right, vertically centred.

    Raises ValueError if the codes do not fit, rather than silently cropping a symbol.
    """
    width, height = size
    rng = np.random.default_rng(seed)
    frame = np.full((height, width), BACKGROUND, dtype=np.float32)
    tiles = [qr_tile(p, module_px=module_px) for p in payloads]
    if rotate_deg:
        tiles = [rotate(t, rotate_deg) for t in tiles]
    gap = (width - sum(t.shape[1] for t in tiles)) // (len(tiles) + 1)
    if gap < 0 or any(t.shape[0] > height for t in tiles):
        raise ValueError("codes do not fit in the frame: lower module_px or use fewer codes")
    x = gap
    for tile in tiles:
        th, tw = tile.shape
        y = (height - th) // 2
        frame[y:y + th, x:x + tw] = tile
        x += tw + gap
    if noise_sigma:
        frame += rng.normal(0.0, noise_sigma, frame.shape)
    out = np.clip(frame, 0, 255).astype(np.uint8)
    if not blur_px:
        return out
    k = blur_px | 1  # odd kernel
    return np.asarray(cv2.GaussianBlur(out, (k, k), 0), dtype=np.uint8)


def blank_frame(size: tuple[int, int] = FRAME_SIZE, level: int = BACKGROUND, seed: int = 0,
                noise_sigma: float = 4.0) -> np.ndarray:
    width, height = size
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, noise_sigma, (height, width)), 0, 255).astype(np.uint8)


def to_bgr(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok, "PNG encoding failed"
    return buf.tobytes()


def encode_jpeg(img: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "JPEG encoding failed"
    return buf.tobytes()


def write_images(folder: Path, frames: Sequence[np.ndarray], ext: str = "png",
                 prefix: str = "frame") -> list[Path]:
    """frame_0000.png, frame_0001.png, ...: names sort in replay order."""
    folder.mkdir(parents=True, exist_ok=True)
    encode = encode_png if ext == "png" else encode_jpeg
    paths = []
    for i, img in enumerate(frames):
        path = folder / f"{prefix}_{i:04d}.{ext}"
        path.write_bytes(encode(img))
        paths.append(path)
    return paths


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    """An MJPG .avi (OpenCV's built-in writer, no codec package needed)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    try:
        for img in frames:
            writer.write(to_bgr(img) if img.ndim == 2 else img)
    finally:
        writer.release()
    return path
