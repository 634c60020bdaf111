"""The decoding ladder: cheap whole-frame pass first, then work only where a code may be.

Measured on hard camera-like frames (scripts/bench_decode.py) and the failure modes behind it:
- Most misses of a whole-frame pass are small modules (2-3 px, tilted: the sampling grid falls
  between pixels), low contrast (a phone at low brightness: zxing-cpp's local binariser treats
  blocks with less than 24 grey levels of range as flat) and blur. A region cut around the code,
  stretched to the full grey range and enlarged 2-4x with linear interpolation fixes most of
  the first two; an unsharp mask or a light smoothing, and the other decoder, fix some blur and
  noise. Enlarging the whole frame does the same at 5-10x the cost, so the ladder finds the
  regions first: a texture map (gradient in x AND y, as a QR has and a plain edge has not) on a
  half-size copy, a handful of candidate boxes, each tried in turn.
- Extra passes on a region run only when the decoder LOCATED a symbol there but could not read
  it: a clutter region (text, a checkerboard, a poster) costs one cheap pass, not five. That
  keeps frames without a code within a few times the cost of a bare pass, which matters
  because an idle lane decodes empty frames all day.
- A code found by the whole-frame pass does not end the search: a second one of similar size
  (health and residence codes side by side) is looked for in the remaining candidates.
- Every step runs under a per-frame deadline; what is found before it is returned.
No step can invent data: every hit is a symbol whose Reed-Solomon check passed in the decoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from scanner.decode_engines import Hit, Polygon, Scan

Box = tuple[float, float, float, float]  # x, y, width, height in frame pixels

MAX_CANDIDATES = 3
ROI_TARGET_PX = 600  # a region is enlarged until its longer side is about this ...
ROI_MAX_SCALE = 4.0  # ... but never more than 4x ...
ROI_MAX_PIXELS = 500_000  # ... and never to more pixels than this (large photos are reduced)
SMALL_FRAME_PX = 400  # frames whose longer side is below this also get a whole-frame 2x pass
LOW_CONTRAST_RANGE = 48  # grey levels (1st..99th percentile): an unread code region with less is "faint"
TEXTURE_MIN, TEXTURE_GAIN, TEXTURE_OFFSET = 2.5, 2.0, 1.5  # texture threshold: above the noise floor
_K3 = np.ones((3, 3), np.uint8)


class Engine(Protocol):
    name: str

    def scan(self, gray: np.ndarray, *, whole_frame: bool = True, invert: bool = False) -> Scan: ...


@dataclass
class LadderResult:
    hits: list[tuple[Hit, str]] = field(default_factory=list)  # (hit, rung that read it)
    rungs: list[str] = field(default_factory=list)  # every pass that ran, in order
    out_of_time: bool = False
    low_contrast: bool = False  # a code-like region had too little contrast and stayed unread


def find_candidates(gray: np.ndarray, max_n: int | None = None) -> list[Box]:
    """Boxes where a 2D code may be: dense gradients in both directions, roughly square.

    Work on a half-size copy (for large photos at most 640 px wide, for tiny frames full size);
    the noise floor is the median texture, so a dark, noisy frame needs more texture to count.
    """
    h, w = gray.shape
    work_w = w if w <= SMALL_FRAME_PX else min(max(w / 2, 320), 640)
    s = work_w / w
    small = gray if s >= 1 else cv2.resize(gray, (max(8, round(w * s)), max(8, round(h * s))),
                                           interpolation=cv2.INTER_AREA)
    th, tw = (small.shape[0] - 1) // 2, (small.shape[1] - 1) // 2  # exact halving: OpenCV's fast path
    gx = cv2.absdiff(small[:2 * th, 1:2 * tw + 1], small[:2 * th, :2 * tw])
    gy = cv2.absdiff(small[1:2 * th + 1, :2 * tw], small[:2 * th, :2 * tw])
    gx = cv2.blur(cv2.resize(gx, (tw, th), interpolation=cv2.INTER_AREA), (4, 4))
    gy = cv2.blur(cv2.resize(gy, (tw, th), interpolation=cv2.INTER_AREA), (4, 4))
    texture = cv2.min(gx, gy)
    s2 = tw / w
    hist = cv2.calcHist([texture], [0], None, [256], [0, 256]).ravel().cumsum()
    floor = float(np.searchsorted(hist, hist[-1] / 2))
    _, mask = cv2.threshold(texture, max(TEXTURE_MIN, TEXTURE_GAIN * floor + TEXTURE_OFFSET), 255,
                            cv2.THRESH_BINARY)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _K3)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_side = max(24.0, 0.06 * min(h, w)) * s2
    scored: list[tuple[float, Box]] = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if bw < min_side or bh < min_side or max(bw, bh) > 3 * min(bw, bh):
            continue
        area = cv2.contourArea(c)
        if area < 0.35 * bw * bh:  # a thin ring or a diagonal streak, not a filled patch
            continue
        score = area * float(cv2.mean(texture[y:y + bh, x:x + bw])[0])
        scored.append((score, (x / s2, y / s2, bw / s2, bh / s2)))
    scored.sort(key=lambda t: -t[0])
    return [b for _, b in scored[:MAX_CANDIDATES if max_n is None else max_n]]


def _bbox(poly: Polygon) -> Box:
    xs = [p[0] for p in poly] or [0]
    ys = [p[1] for p in poly] or [0]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def _overlap(a: Box, b: Box) -> float:
    """Share of box a that lies inside box b."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1.0, a[2] * a[3])


@dataclass
class Region:
    image: np.ndarray  # stretched to 0..255 and rescaled
    x0: int
    y0: int
    scale: float
    contrast: int  # grey-level range of the region before stretching

    def to_frame(self, poly: Polygon) -> Polygon:
        return tuple((int(round(x / self.scale + self.x0)), int(round(y / self.scale + self.y0)))
                     for x, y in poly)


def prepare_region(gray: np.ndarray, box: Box, margin: float = 0.25) -> Region:
    """Cut the box with a margin (the quiet zone, and what the texture map missed), stretch its
    grey range and rescale it so modules get several pixels each."""
    x, y, bw, bh = box
    h, w = gray.shape
    m = max(bw, bh) * margin + 4
    x0, y0 = max(0, int(x - m)), max(0, int(y - m))
    x1, y1 = min(w, int(x + bw + m)), min(h, int(y + bh + m))
    roi = gray[y0:y1, x0:x1]
    # stretch between the 1st and 99th percentile: a glare spot or a black phone body must not
    # squeeze the code's own range
    cum = cv2.calcHist([roi], [0], None, [256], [0, 256]).ravel().cumsum()
    lo = int(np.searchsorted(cum, 0.01 * cum[-1]))
    hi = max(int(np.searchsorted(cum, 0.99 * cum[-1])), lo + 1)
    alpha = 255.0 / (hi - lo)
    stretched = cv2.convertScaleAbs(np.maximum(roi, np.uint8(lo)), alpha=alpha, beta=-lo * alpha)
    # Enlarging to a fixed size beat sizing by a module-pitch estimate (edge density): blur makes
    # small modules look large, and those are the ones that need it (bench: 345 vs 330 reads)
    f = min(ROI_MAX_SCALE, max(1.0, ROI_TARGET_PX / max(roi.shape)), (ROI_MAX_PIXELS / roi.size) ** 0.5)
    if f > 1.05:
        img = cv2.resize(stretched, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    elif f < 0.95:
        img = cv2.resize(stretched, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    else:
        f = 1.0
        img = stretched
    return Region(img, x0, y0, f, int(hi - lo))


def _sharpen(img: np.ndarray) -> np.ndarray:
    return cv2.addWeighted(img, 2.0, cv2.GaussianBlur(img, (0, 0), 2.0), -1.0, 0)


def _smooth(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 1.2)


def run_ladder(gray: np.ndarray, primary: Engine, secondary: Engine | None, budget_s: float,
               clock: Callable[[], float] = time.perf_counter) -> LadderResult:
    """All codes found in `gray` within `budget_s` (the whole-frame pass always runs)."""
    deadline = clock() + budget_s
    out = LadderResult()
    seen: set[bytes] = set()

    def add(hits: list[Hit], rung: str, region: Region | None = None) -> int:
        n = 0
        for hit in hits:
            if hit.data in seen:
                continue
            seen.add(hit.data)
            if region is not None:
                hit = hit._replace(polygon=region.to_frame(hit.polygon))
            out.hits.append((hit, rung))
            n += 1
        return n

    def in_time() -> bool:
        if clock() < deadline:
            return True
        out.out_of_time = True
        return False

    out.rungs.append("frame")
    add(primary.scan(gray).hits, "frame")
    found_boxes = [_bbox(h.polygon) for h, _ in out.hits]
    if not in_time():
        return out
    second_tries = 1  # a frame that already gave a code pays for one more region at most
    first_region = True
    for box in find_candidates(gray):
        if any(_overlap(box, fb) > 0.3 for fb in found_boxes):
            continue
        if found_boxes:  # looking for a second code: it has about the size of the first
            ref = max(fb[2] * fb[3] for fb in found_boxes)
            if not 0.4 * ref <= box[2] * box[3] <= 2.5 * ref or second_tries == 0:
                continue
            second_tries -= 1
        if not in_time():
            return out
        region = prepare_region(gray, box)
        out.rungs.append("region")
        # light modules on a dark screen ("dark mode", rare at a gate): zxing-cpp's inverted pass
        # costs a third of a pass, so only the most code-like region of a frame without a code
        # gets it (whether a region is inverted could not be told cheaply from its surround)
        scan = primary.scan(region.image, whole_frame=False, invert=first_region and not found_boxes)
        first_region = False
        if add(scan.hits, "region", region) or scan.hits:
            continue
        # zbar cannot say "located but unreadable": with it as primary every region gets the extra passes
        if not scan.detected and primary.name != "zbar":
            if region.contrast < LOW_CONTRAST_RANGE:
                out.low_contrast = True
            continue
        for rung, engine, img in (("region-sharpen", primary, _sharpen), ("region-smooth", primary, _smooth),
                                  ("region-other", secondary, None)):
            if engine is None or not in_time():
                break
            out.rungs.append(rung)
            hits = engine.scan(img(region.image) if img else region.image, whole_frame=False).hits
            if add(hits, rung, region) or hits:
                break
        else:
            if region.contrast < LOW_CONTRAST_RANGE:
                out.low_contrast = True
    if not out.hits and max(gray.shape) < SMALL_FRAME_PX and in_time():
        big = cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
        out.rungs.append("frame-2x")
        add(primary.scan(big).hits, "frame-2x", Region(big, 0, 0, 2.0, 255))
    return out
