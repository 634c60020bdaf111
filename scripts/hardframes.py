"""A seeded set of hard, camera-like 640x480 frames with known QR payloads (for bench_decode.py).

What a gate camera sees, one degradation drawn per frame and often several together:
- geometry: a pinhole camera looking at a code tilted up to 40 degrees out of plane, any in-plane
  rotation, 2-3 pixels per module for a good share of frames (a phone held far away);
- printed paper or a phone screen (dark bezel, raised black level: low contrast when the
  brightness is turned down), one or two codes per frame (health and residence side by side);
- optics and light: motion blur, defocus, a street lamp (low light with shot and read noise),
  sun glare (a saturated blob), an uneven light field, JPEG artefacts from an MJPG webcam;
- frames with no code: clutter, text, stripes, checkerboards and code-like patches (module
  grids with and without finder patterns, a QR finder trio around noise) to catch wrong decodes.

The scene is rendered at 2x and reduced with area averaging, so small modules are blurred by the
sensor like in a real camera rather than aliased. Nothing here is tuned to a decoder: every
parameter range is set from what the gate sees, and the same generator feeds every decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from scanner.qrimage import make_qr

W, H = 640, 480
SS = 2  # supersampling factor of the rendered scene


@dataclass
class HardFrame:
    image: np.ndarray
    truth: list[bytes]
    tags: list[str] = field(default_factory=list)


def qr_modules(payload: str | bytes) -> np.ndarray:
    """bool matrix (True = dark) with a 4-module quiet zone, as our issuer encodes it."""
    qr = make_qr(payload)
    return np.array(list(qr.matrix_iter(scale=1, border=4)), dtype=bool)


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def project_rect(rng: np.random.Generator, w_px: float, h_px: float, center: tuple[float, float],
                 tilt_max_deg: float) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of a w x h rectangle (pixels at its centre depth) seen tilted."""
    f = 700.0 * SS
    tilt = math.radians(rng.uniform(0, tilt_max_deg))
    phi = rng.uniform(0, 2 * math.pi)
    spin = rng.uniform(0, 2 * math.pi)
    r = _rot(np.array([math.cos(phi), math.sin(phi), 0.0]), tilt) @ _rot(np.array([0, 0, 1.0]), spin)
    pts = []
    for x, y in ((-w_px / 2, -h_px / 2), (w_px / 2, -h_px / 2), (w_px / 2, h_px / 2), (-w_px / 2, h_px / 2)):
        p = r @ np.array([x, y, 0.0]) + np.array([0, 0, f])  # at depth f one world unit is one pixel
        pts.append((f * p[0] / p[2] + center[0], f * p[1] / p[2] + center[1]))
    return np.array(pts, dtype=np.float32)


def fit_quad(quad: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Shrink (about its centre) and shift a quad so it lies inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    shrink = min(1.0, 0.98 * (x1 - x0) / float(hi[0] - lo[0]), 0.98 * (y1 - y0) / float(hi[1] - lo[1]))
    centre = quad.mean(axis=0)
    quad = centre + (quad - centre) * shrink
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    shift = np.clip(np.array([x0, y0]) - lo, 0, None) - np.clip(hi - np.array([x1, y1]), 0, None)
    return (quad + shift).astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth gradient, a few objects and some text: no scene is a flat grey card."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-0.15, 0.15, 2)
    bg = rng.uniform(70, 190) + a * xx / SS + b * yy / SS
    img = np.clip(bg, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 7)):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(40, 300)), y0 + int(rng.integers(40, 300))
        cv2.rectangle(img, (x0, y0), (x1, y1), int(rng.integers(20, 240)), -1)
    for _ in range(rng.integers(0, 5)):
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(4, 12))))
        cv2.putText(img, text, (int(rng.integers(0, w - 100)), int(rng.integers(20, h))),
                    cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.6, 2.0)), int(rng.integers(0, 255)),
                    int(rng.integers(1, 5)))
    return img.astype(np.float32)


def code_like_patch(rng: np.random.Generator) -> np.ndarray:
    """Things that look like codes to a detector but carry none (gray 0..255 float)."""
    kind = rng.integers(0, 4)
    n = int(rng.integers(21, 45))
    if kind == 0:  # random module grid with three finder patterns: a QR that decodes to nothing
        m = rng.random((n, n)) < 0.5
        for oy, ox in ((0, 0), (0, n - 7), (n - 7, 0)):
            f = np.ones((7, 7), bool)
            f[1:6, 1:6] = False
            f[2:5, 2:5] = True
            m[oy:oy + 7, ox:ox + 7] = f
        m = np.pad(m, 4)
    elif kind == 1:  # random grid without finders (a DataMatrix-like print)
        m = np.pad(rng.random((n, n)) < 0.5, 2)
    elif kind == 2:  # checkerboard
        m = (np.add.outer(np.arange(n), np.arange(n)) % 2).astype(bool)
    else:  # 1D stripes
        m = np.tile(rng.random(n) < 0.5, (n, 1))
    return np.where(m, 15.0, 235.0).astype(np.float32)


def _paste(scene: np.ndarray, tile: np.ndarray, corners: np.ndarray, *, mask_val: float | None = None) -> None:
    """Warp `tile` (float gray) onto `scene` at the quad `corners` (TL, TR, BR, BL)."""
    th, tw = tile.shape
    src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, corners)
    warped = cv2.warpPerspective(tile, m, (scene.shape[1], scene.shape[0]), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones_like(tile), m, (scene.shape[1], scene.shape[0]), flags=cv2.INTER_LINEAR)
    scene *= 1 - mask
    scene += warped * mask


def code_card(rng: np.random.Generator, modules: np.ndarray, screen: bool, px: int) -> tuple[np.ndarray, int]:
    """The code on paper or on a phone: returns (float image, pixels per module in it)."""
    dark, light = 20.0, 235.0
    if screen:
        light = rng.uniform(120, 250)
        dark = light - rng.uniform(25, 110) if rng.random() < 0.5 else rng.uniform(5, 40)
        dark = max(dark, 0.0)
    else:
        light, dark = rng.uniform(190, 245), rng.uniform(10, 60)
    tile = np.where(modules, dark, light).astype(np.float32)
    tile = cv2.resize(tile, None, fx=px, fy=px, interpolation=cv2.INTER_NEAREST)
    if screen:  # phone: screen margin around the code, then the dark body
        margin = int(rng.integers(0, 6)) * px
        tile = cv2.copyMakeBorder(tile, margin, margin * 3, margin, margin * 3 // 2 + px,
                                  cv2.BORDER_CONSTANT, value=light)
        bezel = int(rng.integers(2, 6)) * px
        tile = cv2.copyMakeBorder(tile, bezel * 2, bezel * 2, bezel, bezel, cv2.BORDER_CONSTANT,
                                  value=float(rng.uniform(5, 40)))
    return tile, px


def motion_kernel(length: float, angle: float) -> np.ndarray:
    k = int(math.ceil(length)) | 1
    ker = np.zeros((k, k), np.float32)
    c = k // 2
    dx, dy = math.cos(angle), math.sin(angle)
    for t in np.linspace(-length / 2, length / 2, 4 * k):
        ker[int(round(c + t * dy)), int(round(c + t * dx))] = 1
    return ker / ker.sum()


def disk_kernel(radius: float) -> np.ndarray:
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    ker = (xx * xx + yy * yy <= radius * radius + 0.5).astype(np.float32)
    return ker / ker.sum()


def render(rng: np.random.Generator, payloads: list[str | bytes], *, patches: int = 0) -> HardFrame:
    tags: list[str] = []
    scene = background(rng, H * SS, W * SS)
    for _ in range(patches):
        patch = code_like_patch(rng)
        side = rng.uniform(60, 200) * SS
        c = (rng.uniform(side, W * SS - side), rng.uniform(side, H * SS - side))
        _paste(scene, patch, project_rect(rng, side, side, c, 40))
    if patches:
        tags.append("patches")
    small = rng.random() < 0.45
    screen = rng.random() < 0.5
    tags.append("screen" if screen else "paper")
    n = len(payloads)
    for i, p in enumerate(payloads):
        mods = qr_modules(p)
        module_px = rng.uniform(2.0, 3.0) if small else rng.uniform(3.0, 5.5)
        card, cpx = code_card(rng, mods, screen, 8)
        slot = (W * SS * i / n, 0.0, W * SS * (i + 1) / n, float(H * SS))
        scale = module_px * SS / cpx  # scene pixels per card pixel
        cx = (slot[0] + slot[2]) / 2 + rng.uniform(-0.15, 0.15) * (slot[2] - slot[0])
        cy = H * SS / 2 + rng.uniform(-0.15, 0.15) * H * SS
        quad = fit_quad(project_rect(rng, card.shape[1] * scale, card.shape[0] * scale, (cx, cy), 40), slot)
        _paste(scene, card, quad.astype(np.float32))
    tags.append(f"{'2-3' if small else '3-5'}px")
    # light field: uneven, and sometimes very dim (street lamp at night)
    yy, xx = np.mgrid[0:H * SS, 0:W * SS].astype(np.float32)
    field_ = 1 + rng.uniform(-0.3, 0.3) * (xx / (W * SS) - 0.5) + rng.uniform(-0.3, 0.3) * (yy / (H * SS) - 0.5)
    gain = 1.0
    if rng.random() < 0.25:
        gain = rng.uniform(0.12, 0.35)
        tags.append("lowlight")
    scene = scene * field_ * gain
    if rng.random() < 0.2:  # glare: a saturated highlight, often over part of the code
        gx, gy = rng.uniform(0.25, 0.75) * W * SS, rng.uniform(0.3, 0.7) * H * SS
        sigma = rng.uniform(15, 45) * SS
        scene += rng.uniform(150, 300) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * sigma * sigma))
        tags.append("glare")
    frame = cv2.resize(scene, (W, H), interpolation=cv2.INTER_AREA)
    r = rng.random()
    if r < 0.25:
        frame = cv2.filter2D(frame, -1, motion_kernel(rng.uniform(2, 7), rng.uniform(0, math.pi)))
        tags.append("motion")
    elif r < 0.45:
        frame = cv2.filter2D(frame, -1, disk_kernel(rng.uniform(0.8, 2.2)))
        tags.append("defocus")
    # sensor: shot noise grows with the signal, read noise is constant; more amplification in the dark
    read = rng.uniform(1.5, 4.0) / math.sqrt(gain)
    frame = frame + rng.normal(0, 1, frame.shape) * np.sqrt(read ** 2 + np.clip(frame, 0, None) * 0.05)
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        q = int(rng.integers(25, 80))
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        frame = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        tags.append("jpeg")
    truth = [p.encode("utf-8") if isinstance(p, str) else p for p in payloads]
    return HardFrame(frame, truth, tags)


def other_payloads(rng: np.random.Generator) -> list[str | bytes]:
    """Codes that are not our credentials: a person also shows these at the gate."""
    return [
        "https://example.gov.cn/hc?id=" + "".join(chr(int(c)) for c in rng.integers(97, 123, 24)),
        "陈*聪 健康码 绿码 " + str(int(rng.integers(10 ** 5, 10 ** 6))),
        "北京市朝阳区 核酸阴性 48小时",
        "2" + "".join(str(int(d)) for d in rng.integers(0, 10, 17)),  # payment-code-like digits
        bytes(rng.integers(0, 256, int(rng.integers(20, 90)), dtype=np.uint8).tobytes()),
    ]


def build_set(seed: int, n_code: int, n_empty: int, credentials: list[str]) -> list[HardFrame]:
    """`n_code` frames with one or two codes and `n_empty` frames without any (half with patches)."""
    rng = np.random.default_rng(seed)
    frames: list[HardFrame] = []
    for i in range(n_code):
        pool: list[str | bytes] = list(credentials) + other_payloads(rng)
        if i % 4 == 3 and len(credentials) >= 2:  # health and residence side by side
            payloads: list[str | bytes] = [credentials[0], credentials[1]]
        else:
            payloads = [pool[int(rng.integers(0, len(pool)))]]
        frames.append(render(rng, payloads))
    for i in range(n_empty):
        frames.append(render(rng, [], patches=int(rng.integers(1, 4)) if i % 2 else 0))
    return frames
