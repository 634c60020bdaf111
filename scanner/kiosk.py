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
from scanner.kiosk_layout import Block, Box, Fit, fit, has_cjk
from scanner.reasons import PROMPTS, REASONS
from scanner.watchdog import stall_text

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
FOOTER_BG = (235, 235, 230)
SUBTLE = (60, 60, 60)  # English under Chinese: 10:1 on the background
WHITE = (255, 255, 255)
FEVER_RED = (198, 40, 40)
#: Banner text colour per state: white, but dark on the amber REVIEW banner (white on it is 2.8:1).
BANNER_INK: dict[str, tuple[int, int, int]] = {"REVIEW": INK}
#: Chinese for the device an English-only fault names ("camera: no frame for 2 s: ...").
FAULT_ZH = {"camera": "摄像头故障，请联系工作人员", "thermometer": "测温传感器故障，请联系工作人员"}
FAULT_GENERAL = "设备故障，请联系工作人员"


def find_cjk_font(candidates: tuple[str, ...] = FONT_CANDIDATES) -> str | None:
    for path in candidates:
        if os.path.exists(path):
            return path
    return None


def fault_texts(fault: str) -> tuple[str, str]:
    """(Chinese, English) of one fault line: "中文 / English" splits in two (scanner/watchdog.py);
    an English-only text gets a Chinese line naming the device and asking for staff."""
    zh, sep, en = fault.partition(" / ")
    if sep and has_cjk(zh):
        return zh.strip(), en.strip()
    if has_cjk(fault):
        return fault, ""
    device = fault.split(":", 1)[0].strip().lower()
    return FAULT_ZH.get(device, FAULT_GENERAL), fault


@dataclass(frozen=True)
class KioskView:
    state: str = "READY"
    reasons: tuple[str, ...] = ()
    temperature_c: float | None = None
    prompts: tuple[str, ...] = ("READY",)
    counts: dict[str, int] = field(default_factory=dict)
    checkpoint: str = ""
    faults: tuple[str, ...] = ()  # each "中文 / English" or English only
    hint: str | None = None  # "too_dark" | "saturated" | "low_contrast": for the technician
    preview: Any = None  # grayscale or BGR numpy frame
    outlines: tuple[tuple[tuple[int, int], ...], ...] = ()
    clock_text: str = ""


@dataclass(frozen=True)
class DrawnText:
    text: str  # one drawn line
    box: tuple[int, int, int, int]  # its ink box on the screen, pixels
    size: int  # font size, pixels
    source: str = ""  # the whole text the line is part of (a wrapped reason has several lines)


class Renderer:
    """Draws a `KioskView` at `size` (W, H pixels); designed at 1280x720, laid out for any screen
    from 800x480 up: every text wraps or shrinks into its region (scanner/kiosk_layout.py)."""

    def __init__(self, size: tuple[int, int] = (1280, 720), font_path: str | None = None) -> None:
        self.size = size
        self.font_path = font_path or find_cjk_font()
        self._fonts: dict[int, Any] = {}
        self._fits: dict[tuple[tuple[Block, ...], Box], Fit] = {}

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

    def fit(self, blocks: tuple[Block, ...], box: Box) -> Fit:
        """`kiosk_layout.fit`, remembered: a screen redrawn 4 times a second fits its texts once."""
        key = (blocks, box)
        if key not in self._fits:
            if len(self._fits) > 64:
                self._fits.clear()
            self._fits[key] = fit(blocks, box, self.font, col_gap=max(16, box[2] // 40))
        return self._fits[key]

    def render(self, view: KioskView) -> tuple[Image.Image, list[DrawnText]]:
        w, h = self.size
        img = Image.new("RGB", self.size, BACKGROUND)
        d = ImageDraw.Draw(img)
        drawn: list[DrawnText] = []
        k = min(w / 1280, h / 720)  # sizes are designed for 1280x720 and scale with the screen

        def px(design: float) -> int:
            return max(1, round(design * k))

        def place(blocks: list[Block], box: Box, valign: str = "top") -> Fit:
            got = self.fit(tuple(blocks), box)
            if valign == "middle":
                got = got.shifted(max(0, (box[3] - box[1] - got.height) // 2))
            for ln in got.lines:
                f = self.font(ln.px)
                d.text(ln.xy, ln.text, font=f, fill=ln.fill)
                b = d.textbbox(ln.xy, ln.text, font=f)
                drawn.append(DrawnText(ln.text, (int(b[0]), int(b[1]), int(b[2]), int(b[3])), ln.px, ln.source))
            return got

        pad, fh = max(16, px(24)), max(48, px(64))
        fy = h - fh  # footer top
        verdict = view.state != "READY"
        details = self._details(view, px) if verdict else []
        bh = int(h * 0.42)
        if details and self.fit(tuple(details), (pad, pad * 2 + bh, w - pad, fy - pad // 2)).cramped:
            bh = int(h * 0.32)  # many reasons: a lower banner (its verdict still the largest text) gives them room
        if verdict:  # a smaller preview beside the banner leaves the full width for the reasons
            pw, ph = bh * 4 // 3, bh
        else:
            pw = min(int(w * 0.40), int((h - 230) * 4 / 3))
            ph = pw * 3 // 4
        self._preview(img, d, view, (pad, pad, pw, ph))
        colour, zh, en = BANNERS.get(view.state, BANNERS["FAULT"])
        ink = BANNER_INK.get(view.state, WHITE)
        bx = pad * 2 + pw
        d.rounded_rectangle((bx, pad, w - pad, pad + bh), radius=px(24), fill=colour)
        head, _, tail = zh.partition(" ")  # "请稍候 工作人员核验": the first words big, the rest below
        banner = [Block(head, px(140), 48, ink, px(10), shrink_first=True)]
        if tail:
            banner.append(Block(tail, px(64), 28, ink, px(10), shrink_first=True))
        banner.append(Block(en, px(48), 22, ink, shrink_first=True))
        inset = max(12, px(28))
        place(banner, (bx + inset, pad + inset, w - pad - inset, pad + bh - inset), "middle")
        if verdict:
            place(details, (pad, pad * 2 + bh, w - pad, fy - pad // 2))
        else:
            blocks = []
            for key in view.prompts:
                pz, pe = PROMPTS.get(key, (key, key))
                blocks += [Block(pz, px(44), 22, INK, px(2), keep=True), Block(pe, px(26), 15, SUBTLE, px(14))]
            if view.hint in HINT_TEXT:
                blocks.append(Block(HINT_TEXT[view.hint], px(22), 13, (160, 90, 0)))
            place(blocks, (pad, pad + ph + pad, pad + pw, fy - pad // 2))
        # footer: the day's counts, checkpoint, time
        d.rectangle((0, fy, w, h), fill=FOOTER_BG)
        right = f"{view.checkpoint}  {view.clock_text}".strip()
        rw = int(self.font(max(12, px(26))).getlength(right)) + 2 if right else 0
        if right:
            place([Block(right, px(26), 12, SUBTLE, shrink_first=True)], (w - pad - rw, fy + 4, w - pad, h - 4),
                  "middle")
        parts = [f"{zh_} {view.counts.get(key, 0)}" for key, zh_, _ in COUNT_LABELS]
        place([Block("今日 " + "  ".join(parts), px(30), 13, INK, shrink_first=True)],
              (pad, fy + 4, w - 2 * pad - rw, h - 4), "middle")
        return img, drawn

    @staticmethod
    def _details(view: KioskView, px: Any) -> list[Block]:
        """Under the banner: temperature, then every reason and fault, Chinese above English."""
        blocks = []
        if view.temperature_c is not None:
            hot = "FEVER" in view.reasons
            blocks.append(Block(f"体温 {view.temperature_c:.1f} °C", px(56), 26, FEVER_RED if hot else INK, px(16)))
        pairs = [REASONS.get(r, ("其他原因，请人工核验", r)) for r in view.reasons if r != "OK"]
        faults = [fault_texts(f) for f in view.faults] if view.state == "FAULT" else []
        big = 48 if faults and not pairs else 40  # a fault's few lines are the whole message: larger
        for rz, re_ in pairs + faults:
            blocks.append(Block(rz, px(big), 20, INK, px(2), keep=bool(re_)))
            if re_:
                blocks.append(Block(re_, px(big * 0.7), 16, SUBTLE, px(16)))
        return blocks

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
        "FAULT": {"faults": ("camera: no frame for 2 s: check the camera cable", stall_text("commit", 6)),
                  "prompts": ()},
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
            checkpoint=s["checkpoint_id"], faults=tuple(s["faults"]), hint=hint, preview=image,
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
