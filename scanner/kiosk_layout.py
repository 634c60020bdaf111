"""Fitting bilingual text into a box of the kiosk screen: wrap, then shrink, then tighten; never drop.

`fit(blocks, box, font)` places every `Block` inside `box` (pixels `(x0, y0, x1, y1)`) and returns
the `Line`s to draw, trying in this order:

1. wrap each block to the line width: Chinese may break between any two characters, English only
   between words (a word wider than the line between characters); closing punctuation never
   starts a line and opening brackets never end one (the line-start/line-end prohibitions of the
   W3C "Requirements for Chinese Text Layout", a small subset of Unicode UAX #14). Headlines
   (`shrink_first`) shrink to the width before they wrap;
2. shrink all blocks together, none below its `min_px` (legible at 1-2 m on the 7" 800x480
   display), trying a second column when the box is wide enough;
3. at the minimum sizes, tighten the line spacing and the gaps between blocks;
4. only then go below `min_px`, down to `FLOOR_PX`, and say so (`Fit.cramped`).

Pillow's `ImageText.Text.wrap` breaks at spaces only, so it cannot wrap Chinese; hence this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

FLOOR_PX = 7  # below every block's minimum: only when the text cannot fit otherwise
INK_REF = "国Ágjy（"  # the tallest and deepest glyphs the kiosk draws, for a line's ink extent
_CJK = re.compile(r"[\u2e80-\u2fff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
NO_START = frozenset("，。、；：？！）》」』】〕〉,.;:?!)]}%")
NO_END = frozenset("（《「『【〔〈([{")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


@dataclass(frozen=True)
class Block:
    """One paragraph. `px` is the preferred size and `min_px` the smallest legible one (pixels);
    `gap` the space after it (pixels, at full spacing); `keep` holds it in the column of the next
    block (a reason's Chinese with its English)."""

    text: str
    px: int
    min_px: int
    fill: RGB = (20, 20, 20)
    gap: int = 0
    keep: bool = False
    shrink_first: bool = False


@dataclass(frozen=True)
class Line:
    text: str
    xy: tuple[int, int]  # top-left anchor ("la") for ImageDraw.text
    px: int
    fill: RGB
    block: int  # index into the blocks given to `fit`
    source: str  # the whole text of that block


@dataclass(frozen=True)
class Fit:
    lines: tuple[Line, ...]
    height: int  # pixels used from the box's top
    columns: int
    cramped: bool  # some block is below its min_px: the box is too small for all the text
    overflow: bool = False  # not even FLOOR_PX fits: lines run past the box (never seen in practice)

    def shifted(self, dy: int) -> Fit:
        return replace(self, lines=tuple(replace(ln, xy=(ln.xy[0], ln.xy[1] + dy)) for ln in self.lines))


def units(text: str) -> list[tuple[str, str]]:
    """Split `text` into `(whitespace before, unit)`: a line may break before any unit."""
    out: list[list[str]] = []
    sep = ""
    for ch in text:
        if ch.isspace():
            sep += ch
            continue
        prev = out[-1][1] if out else ""
        joins = bool(prev) and not sep and (
            ch in NO_START or prev[-1] in NO_END or not (has_cjk(ch) or has_cjk(prev[-1])))
        if joins:
            out[-1][1] += ch
        else:
            out.append([sep if out else "", ch])
            sep = ""
    return [(s, u) for s, u in out]


def wrap(text: str, width: float, measure: Callable[[str], float],
         advance: Callable[[str], float] | None = None) -> list[str]:
    """Lines of `text` no wider than `width` by `measure` (pixels); each line is a slice of `text`,
    the breaks drop only the whitespace they fall on. With `advance` (a fast, cached width of one
    unit), lines are built from summed advances and only checked whole with `measure`."""
    if advance is not None:
        lines = _wrap(text, width, advance, additive=True)
        near = width - 0.2 * advance("国")  # ink may pass the advance by an overhang, never by 0.2 em
        if all(sum(advance(u) + advance(sp) for sp, u in units(ln)) <= near or measure(ln) <= width
               for ln in lines):
            return lines
    return _wrap(text, width, measure, additive=False)


def _wrap(text: str, width: float, measure: Callable[[str], float], additive: bool) -> list[str]:
    lines: list[str] = []
    line, lw = "", 0.0

    def wider(cand: str, extra: float) -> bool:
        return (lw + extra if additive else measure(cand)) > width

    for sep, unit in units(text):
        extra = (measure(sep) if line and sep else 0.0) + measure(unit) if additive else 0.0
        if line and not wider(line + sep + unit, extra):
            line, lw = line + sep + unit, lw + extra
            continue
        if line:
            lines.append(line)
        line, lw = "", 0.0
        if measure(unit) <= width:
            line, lw = unit, measure(unit) if additive else 0.0
            continue
        for ch in unit:  # a word wider than the line: break between its characters
            cw = measure(ch) if additive else 0.0
            if line and wider(line + ch, cw):
                lines.append(line)
                line, lw = "", 0.0
            line, lw = line + ch, lw + cw
    if line:
        lines.append(line)
    return lines or [""]


class _Fitter:
    def __init__(self, blocks: tuple[Block, ...], box: Box, font: Callable[[int], Any], col_gap: int) -> None:
        self.blocks, self.box, self.font, self.col_gap = blocks, box, font, col_gap
        self._wraps: dict[tuple[str, int, int], list[str]] = {}
        self._ink: dict[int, tuple[int, int]] = {}
        self._adv: dict[tuple[str, int], float] = {}

    def width(self, s: str, px: int) -> float:
        return float(self.font(px).getbbox(s)[2]) if s else 0.0

    def advance(self, s: str, px: int) -> float:
        key = (s, px)
        if key not in self._adv:
            self._adv[key] = float(self.font(px).getlength(s))
        return self._adv[key]

    def ink(self, px: int) -> tuple[int, int]:
        if px not in self._ink:
            bb = self.font(px).getbbox(INK_REF)
            self._ink[px] = (int(bb[1]), int(bb[3]))
        return self._ink[px]

    def lines_of(self, b: Block, px: int, col_w: int) -> list[str]:
        key = (b.text, px, col_w)
        if key not in self._wraps:
            self._wraps[key] = wrap(b.text, col_w, lambda s: self.width(s, px), lambda s: self.advance(s, px))
        return self._wraps[key]

    def size(self, b: Block, s: float, below_min: bool, col_w: int) -> int:
        low = FLOOR_PX if below_min else b.min_px
        px = max(low, min(b.px, round(b.px * s)))
        while b.shrink_first and px > low and self.width(b.text, px) > col_w:
            px -= 1
        return px

    def place(self, s: float, cols: int, t: float, below_min: bool, force: bool = False) -> Fit | None:
        x0, y0, x1, y1 = self.box
        col_w = (x1 - x0 - (cols - 1) * self.col_gap) // cols
        if col_w < 8 and not force:
            return None
        lead = 1.12 + 0.18 * t
        out: list[Line] = []
        col, y, used, cramped = 0, 0, 0, False
        i = 0
        while i < len(self.blocks):
            j = i
            while j < len(self.blocks) - 1 and self.blocks[j].keep:
                j += 1
            group: list[tuple[int, int, list[str], int]] = []  # (block, px, lines, y offset)
            gy = 0
            for n in range(i, j + 1):
                b = self.blocks[n]
                px = self.size(b, s, below_min, col_w)
                cramped |= px < b.min_px
                lines = self.lines_of(b, px, col_w)
                top, bottom = self.ink(px)
                group.append((n, px, lines, gy - top))
                gy += (len(lines) - 1) * round(px * lead) + bottom - top
                if n < j:
                    gy += round(b.gap * t)
            if y and y + gy > y1 - y0 and col + 1 < cols:
                col, y = col + 1, 0
            if y + gy > y1 - y0 and not force:
                return None
            x = x0 + col * (col_w + self.col_gap)
            for n, px, lines, off in group:
                b = self.blocks[n]
                for k, text in enumerate(lines):
                    out.append(Line(text, (x, y0 + y + off + k * round(px * lead)), px, b.fill, n, b.text))
            y += gy
            used = max(used, y)
            y += round(self.blocks[j].gap * t)
            i = j + 1
        return Fit(tuple(out), used, cols, cramped, overflow=used > y1 - y0)


def fit(blocks: tuple[Block, ...] | list[Block], box: Box, font: Callable[[int], Any], *,
        col_gap: int = 24, min_col_w: int = 300) -> Fit:
    """Place every block inside `box`; `font(px)` gives a Pillow FreeTypeFont of that size.

    Returns the largest layout that fits (one column preferred over two at a slightly larger
    size), at the minimum sizes with tight spacing if need be, below the minimums only when
    nothing else fits. Every block's text is in the result, whole: no line is ever dropped."""
    blocks = tuple(blocks)
    if not blocks:
        return Fit((), 0, 1, False)
    f = _Fitter(blocks, box, font, col_gap)
    w = box[2] - box[0]
    wide, narrow = max(1, min(2, w // min_col_w)), max(1, w // max(1, min_col_w // 2))
    s_min = min(1.0, max(b.min_px / b.px for b in blocks))
    s_floor = min(FLOOR_PX / b.px for b in blocks)
    scales = [1.0]
    while scales[-1] * 0.94 > s_floor:
        scales.append(scales[-1] * 0.94)
    scales.append(s_floor)
    first = sorted(((s * (1.0 if c == 1 else 0.85), s, c) for s in [*scales, s_min] if s >= s_min
                    for c in range(1, wide + 1)), reverse=True)
    tries = [(s, c, 1.0, False) for _, s, c in first]
    tries += [(s_min, c, t, False) for t in (0.5, 0.0) for c in range(1, wide + 1)]
    for s, c, t, below in tries:
        got = f.place(s, c, t, below)
        if got is not None:
            return got

    def below_min(s: float) -> Fit | None:
        return next((g for c in range(1, narrow + 1) if (g := f.place(s, c, 0.0, True)) is not None), None)

    small = [s for s in scales if s < s_min]  # descending; smaller text fits wherever larger does
    lo, hi, best = 0, len(small) - 1, None
    while lo <= hi:  # bisect for the largest size that fits
        mid = (lo + hi) // 2
        got = below_min(small[mid])
        if got is not None:
            best, hi = got, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return best
    forced = f.place(s_floor, narrow, 0.0, True, force=True)
    assert forced is not None
    return forced
