"""The kiosk screen: what a passer-by reads from two metres, Chinese first.

Rendering is a pure function of a `KioskView` (state, reasons, temperature, prompts, the day's
counts, the camera preview with the found code outlined) to an image, so every screen can be
rendered offscreen and checked in tests: `checkpoint-scanner kiosk --render STATE --out F.png`.
Glyphs come from a real CJK font (Noto Sans CJK or WenQuanYi, installed by the setup); a
renderer without one would draw boxes, so `find_cjk_font` says which font it uses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scanner.decode import HINT_TEXT
from scanner.reasons import PROMPTS, REASONS

FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)

# state -> (banner colour RGB, Chinese, English)
BANNERS: dict[str, tuple[tuple[int, int, int], str, str]] = {
    "READY": ((21, 101, 192), "请出示健康码", "Show your health code"),
    "PASS": ((27, 135, 63), "通行", "PASS"),
    "DENY": ((198, 40, 40), "禁止通行", "DENY"),
    "REVIEW": ((230, 145, 0), "请稍候 工作人员核验", "Please wait: staff will check"),
    "FAULT": ((69, 69, 69), "设备故障", "Device fault: please call staff"),
}
COUNT_LABELS = (("PASS", "通行", "passed"), ("DENY", "拦截", "denied"), ("HEALTH_RED", "红码", "red codes"),
                ("FEVER", "发热", "fevers"), ("REVIEW", "核验", "reviews"))
BACKGROUND = (250, 250, 247)
INK = (20, 20, 20)


def find_cjk_font(candidates: tuple[str, ...] = FONT_CANDIDATES) -> str | None:
    for path in candidates:
        if os.path.exists(path):
            return path
    return None


@dataclass(frozen=True)
class KioskView:
    state: str = "READY"
    reasons: tuple[str, ...] = ()
    temperature_c: float | None = None
    prompts: tuple[str, ...] = ("READY",)
    counts: dict[str, int] = field(default_factory=dict)
    checkpoint: str = ""
    fault: str = ""
    hint: str | None = None  # "too_dark" | "saturated" | "low_contrast": for the technician
    preview: Any = None  # grayscale or BGR numpy frame
    outlines: tuple[tuple[tuple[int, int], ...], ...] = ()
    clock_text: str = ""


@dataclass(frozen=True)
class DrawnText:
    text: str
    box: tuple[int, int, int, int]
    size: int



class Renderer:
    def __init__(self, size: tuple[int, int] = (1280, 720), font_path: str | None = None) -> None:
        self.size = size
        self.font_path = font_path or find_cjk_font()
        self._fonts: dict[int, Any] = {}

    def font(self, px: int) -> Any:
        if px not in self._fonts:
            self._fonts[px] = (ImageFont.truetype(self.font_path, px) if self.font_path
                               else ImageFont.load_default(px))
        return self._fonts[px]

    def has_glyphs(self, text: str) -> bool:
        """True when the font draws `text` with real glyphs, not the .notdef box."""
        f = self.font(40)

        def sig(ch: str) -> tuple[tuple[int, int], bytes]:
            m = f.getmask(ch)
            return m.size, bytes(m[i] for i in range(m.size[0] * m.size[1]))

        tofu = sig("\U0010fffd")
        return all(sig(ch) != tofu for ch in text if not ch.isspace())

    def _line_height(self, s: str, px: int, max_w: int) -> int:
        while px > 14 and self.font(px).getlength(s) > max_w:
            px -= 2
        box = self.font(px).getbbox(s)
        return int(box[3])

    def render(self, view: KioskView) -> tuple[Image.Image, list[DrawnText]]:
        w, h = self.size
        img = Image.new("RGB", self.size, BACKGROUND)
        d = ImageDraw.Draw(img)
        drawn: list[DrawnText] = []

        k = min(w / 1280, h / 720)  # font sizes are designed for 1280x720 and scale with the screen

        def text(xy: tuple[int, int], s: str, px: int, fill: tuple[int, int, int] = INK,
                 max_w: int | None = None) -> int:
            px = max(12, int(px * k))
            while max_w and px > 14 and d.textlength(s, font=self.font(px)) > max_w:
                px -= 2
            d.text(xy, s, font=self.font(px), fill=fill)
            box = d.textbbox(xy, s, font=self.font(px))
            drawn.append(DrawnText(s, (int(box[0]), int(box[1]), int(box[2]), int(box[3])), px))
            return int(box[3])

        colour, zh, en = BANNERS.get(view.state, BANNERS["FAULT"])
        pad = 24
        # camera preview, left
        pw = min(int(w * 0.40), int((h - 230) * 4 / 3))
        ph = int(pw * 3 / 4)
        self._preview(img, d, view, (pad, pad, pw, ph))
        # banner, right
        bx = pad * 2 + pw
        bw = w - bx - pad
        head, _, tail = zh.partition(" ")  # "请稍候 工作人员核验": the first words big, the rest below
        lines = [(head, 120), (tail, 64), (en, 48)] if tail else [(head, 120), (en, 48)]
        heights = [self._line_height(t, max(12, int(px * k)), bw - 60) + 12 for t, px in lines if t]
        bh = max(int(h * 0.42), sum(heights) + 40)
        d.rounded_rectangle((bx, pad, bx + bw, pad + bh), radius=24, fill=colour)
        y = pad + 20
        for t, px in lines:
            y = text((bx + 30, y), t, px, (255, 255, 255), bw - 60) + 12
        # details under the banner
        y = pad + bh + 24
        if view.temperature_c is not None:
            y = text((bx, y), f"体温 {view.temperature_c:.1f} °C", 56, max_w=bw) + 12
        for r in view.reasons[:3]:
            if r == "OK" or y + 110 * k > h - 72:
                continue
            rz, re_ = REASONS.get(r, (r, r))
            y = text((bx, y), rz, 40, max_w=bw) + 2
            y = text((bx, y), re_, 26, (90, 90, 90), bw) + 12
        if view.state == "FAULT" and view.fault:
            y = text((bx, y), view.fault, 26, (90, 90, 90), bw) + 12
        # prompts under the preview
        py = pad + ph + 24
        for key in view.prompts[:2]:
            if py + 110 * k > h - 72:
                break  # never draw over the footer on a small screen
            pz, pe = PROMPTS.get(key, (key, key))
            py = text((pad, py), pz, 44, max_w=pw) + 2
            py = text((pad, py), pe, 26, (90, 90, 90), pw) + 12
        if view.hint in HINT_TEXT:
            text((pad, py), HINT_TEXT[view.hint], 22, (160, 90, 0), pw)
        # footer: the day's counts, checkpoint, time
        fy = h - 64
        d.rectangle((0, fy - 8, w, h), fill=(235, 235, 230))
        right = f"{view.checkpoint}  {view.clock_text}".strip()
        tw = int(d.textlength(right, font=self.font(max(12, int(26 * k))))) if right else 0
        if right:
            text((w - pad - tw, fy + 4), right, 26, (90, 90, 90))
        parts = [f"{zh_} {view.counts.get(key, 0)}" for key, zh_, _ in COUNT_LABELS]
        text((pad, fy), "今日 " + "  ".join(parts), 30, max_w=w - 3 * pad - tw)
        return img, drawn

    def _preview(self, img: Image.Image, d: ImageDraw.ImageDraw, view: KioskView,
                 rect: tuple[int, int, int, int]) -> None:
        x, y, pw, ph = rect
        if view.preview is None:
            d.rectangle((x, y, x + pw, y + ph), fill=(40, 40, 40))
            return
        frame = np.asarray(view.preview)
        sh, sw = frame.shape[:2]
        mode = "L" if frame.ndim == 2 else "RGB"
        src = frame if frame.ndim == 2 else frame[:, :, ::-1]  # BGR -> RGB
        pic = Image.fromarray(np.ascontiguousarray(src), mode).convert("RGB").resize((pw, ph))
        img.paste(pic, (x, y))
        sx, sy = pw / sw, ph / sh
        for poly in view.outlines:
            pts = [(x + px * sx, y + py * sy) for px, py in poly]
            if len(pts) >= 3:
                d.line(pts + [pts[0]], fill=(0, 200, 80), width=5)


def demo_view(state: str, **kw: Any) -> KioskView:
    """A representative screen per state, for `kiosk --render` and the tests."""
    defaults: dict[str, dict[str, Any]] = {
        "READY": {"prompts": ("SHOW_CODE", "HOLD_WRIST")},
        "PASS": {"reasons": ("OK",), "temperature_c": 36.5, "prompts": ()},
        "DENY": {"reasons": ("HEALTH_RED",), "temperature_c": 36.7, "prompts": ()},
        "REVIEW": {"reasons": ("UNKNOWN_SIGNER",), "temperature_c": 36.4, "prompts": ()},
        "FAULT": {"fault": "camera: no frame for 2 s: check the camera cable", "prompts": ()},
    }
    args = {"counts": {"PASS": 812, "DENY": 3, "HEALTH_RED": 2, "FEVER": 1, "REVIEW": 14},
            "checkpoint": "RA-G104-EXIT-3", "clock_text": "2026-11-28 08:15", **defaults.get(state, {}), **kw}
    return KioskView(state=state, **args)


SPOKEN = {"PASS": "通行", "DENY": "禁止通行", "REVIEW": "请稍候，工作人员核验", "FAULT": "设备故障，请联系工作人员"}


class KioskThread:
    """Draws the monitor's state on a display a few times a second; speaks verdicts if asked.
    A display error is logged (once a minute) and retried: the lane never waits on the screen."""

    def __init__(self, monitor: Any, display: Any, stop: Any, *, fps: float = 4.0, speaker: Any = None,
                 renderer: Renderer | None = None, clock_text: Any = None) -> None:
        self.monitor = monitor
        self.display = display
        self.renderer = renderer or Renderer(getattr(display, "size", (1280, 720)))
        self.stop = stop
        self.period = 1.0 / fps
        self.speaker = speaker
        self.frames_drawn = 0
        self.errors = 0
        self._last_state = ""
        self._last_error_log = -1e9
        self._clock_text = clock_text or (lambda: time.strftime("%Y-%m-%d %H:%M"))
        self.thread = threading.Thread(target=self._run, name="kiosk", daemon=True)

    def start(self) -> KioskThread:
        self.thread.start()
        return self

    def view(self) -> KioskView:
        s = self.monitor.snapshot()
        image, outlines, hint = self.monitor.preview()
        last = s.get("last") or {}
        shows_verdict = s["state"] in ("PASS", "DENY", "REVIEW")
        return KioskView(
            state=s["state"], reasons=tuple(last.get("reasons") or ()) if shows_verdict else (),
            temperature_c=last.get("temperature_c") if shows_verdict else None,
            prompts=tuple(s.get("prompts") or ()) if s["state"] == "READY" else (),
            counts={"PASS": s["counts"]["passed"], "DENY": s["counts"]["denied"],
                    "HEALTH_RED": s["counts"]["red_codes"], "FEVER": s["counts"]["fevers"],
                    "REVIEW": s["counts"]["reviews"]},
            checkpoint=s["checkpoint_id"], fault="; ".join(s["faults"]), hint=hint, preview=image,
            outlines=outlines, clock_text=self._clock_text())

    def draw_once(self) -> None:
        view = self.view()
        if view.state != self._last_state:
            if self.speaker is not None and view.state in SPOKEN:
                self.speaker.say(SPOKEN[view.state])
            self._last_state = view.state
        img, _ = self.renderer.render(view)
        self.display.show(img)
        self.frames_drawn += 1

    def _run(self) -> None:
        log = logging.getLogger("scanner.kiosk")
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                self.draw_once()
            except Exception as e:  # noqa: BLE001 - the screen must never take the lane down
                self.errors += 1
                if t0 - self._last_error_log > 60:
                    log.error("event=kiosk_draw_failed error=%r", str(e))
                    self._last_error_log = t0
            self.stop.wait(max(0.0, self.period - (time.monotonic() - t0)))
