"""The kiosk layout on rendered pixels, at every screen from the 7" Pi display (800x480) up: every
reason and fault drawn whole (Chinese and English), nothing outside the screen or over other
text, long texts wrapped or shrunk but never below a legible size, never dropped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scanner.kiosk import (
    BACKGROUND,
    BANNER_INK,
    BANNERS,
    FAULT_GENERAL,
    FOOTER_BG,
    WHITE,
    DrawnText,
    Renderer,
    demo_view,
    fault_texts,
    find_cjk_font,
)
from scanner.kiosk_layout import NO_END, NO_START, Block, fit, units, wrap
from scanner.reasons import REASONS
from scanner.watchdog import stall_text

ROOT = Path(__file__).resolve().parents[1]
needs_cjk = pytest.mark.skipif(find_cjk_font() is None, reason="no CJK font (apt-get install fonts-noto-cjk)")

SIZES = [(800, 480), (1024, 600), (1280, 720), (1920, 1080)]
MIN_ZH, MIN_EN = 20, 16  # the renderer's smallest legible sizes for a reason's Chinese and English
ENGLISH_ONLY = "camera: cannot open /dev/video0 (Device or resource busy): check the camera cable and 'dmesg'"
CASES = {
    "deny-two": ("DENY", {"reasons": ("HEALTH_RED", "FEVER"), "temperature_c": 38.4}),
    "deny-four": ("DENY", {"reasons": ("HEALTH_RED", "FEVER", "TEMP_UNRELIABLE", "RECENTLY_DENIED")}),
    "review-three": ("REVIEW", {"reasons": ("UNKNOWN_SIGNER", "TRUST_DATA_STALE", "CLOCK_UNTRUSTED")}),
    "fault-three": ("FAULT", {"faults": (ENGLISH_ONLY, stall_text("commit", 6), stall_text("thermometer", 12))}),
}


def whole(drawn: list[DrawnText], text: str) -> list[DrawnText]:
    """The lines drawn for `text`, asserted to be all of it, in order, each a slice of it."""
    lines = [d for d in drawn if d.source == text]
    assert lines, f"not drawn: {text!r}"
    assert all(d.text in text for d in lines), [d.text for d in lines]
    assert "".join(d.text for d in lines).replace(" ", "") == text.replace(" ", ""), [d.text for d in lines]
    return lines


def expected_texts(state: str, kw: dict[str, object]) -> list[str]:
    out = []
    for r in kw.get("reasons", ()):  # type: ignore[attr-defined]
        out += list(REASONS[r])
    for f in kw.get("faults", ()):  # type: ignore[attr-defined]
        out += [t for t in fault_texts(f) if t]
    return out


def footer_top(img: Image.Image) -> int:
    arr = np.asarray(img)
    y = img.size[1] - 1
    while y > 0 and tuple(arr[y - 1, 2]) == FOOTER_BG:
        y -= 1
    return y


# -- wrapping, with a width of 10 px per character (no font needed) ---------------------------

def width10(s: str) -> float:
    return 10.0 * len(s)


def test_chinese_wraps_per_character_english_per_word() -> None:
    zh = REASONS["TEMP_UNRELIABLE"][0]  # 环境温度过低、过高或变化过快，请人工测温
    lines = wrap(zh, 75, width10)
    assert "".join(lines) == zh and all(len(ln) <= 7 for ln in lines) and len(lines) >= 3
    assert not any(ln[0] in NO_START for ln in lines)  # "、" and "，" never start a line
    en = "ambient too cold, too hot or changing fast: measure by hand"
    lines = wrap(en, 120, width10)
    assert " ".join(lines) == en and all(len(ln) <= 12 for ln in lines)
    assert set(" ".join(lines).split()) == set(en.split())  # no word split


def test_brackets_stay_with_their_text_and_long_words_break() -> None:
    lines = wrap("信任数据过旧（设备离线？），请人工核验", 60, width10)
    assert not any(ln[-1] in NO_END or ln[0] in NO_START for ln in lines), lines
    assert wrap("/dev/v4l/by-id/usb-camera-video-index0", 100, width10)[0] == "/dev/v4l/b"
    assert units("体温 36.7 °C") == [("", "体"), ("", "温"), (" ", "36.7"), (" ", "°C")]


def test_fit_shrinks_to_min_then_tightens_then_goes_below_only_when_it_must() -> None:
    class Font:
        def __init__(self, px: int) -> None:
            self.px = px

        def getbbox(self, s: str) -> tuple[int, int, int, int]:
            return 0, 0, self.px * len(s), self.px

        def getlength(self, s: str) -> float:
            return float(self.px * len(s))

    blocks = [Block("红码" * 3, 40, 20, gap=10, keep=True), Block("red code", 28, 14, gap=20)] * 3
    roomy = fit(blocks, (0, 0, 1000, 1000), Font)
    assert {ln.px for ln in roomy.lines} == {40, 28} and not roomy.cramped
    tight = fit(blocks, (0, 0, 200, 160), Font)
    assert min(ln.px for ln in tight.lines if ln.block % 2 == 0) >= 20 and not tight.cramped
    assert tight.height <= 160
    tiny = fit(blocks, (0, 0, 200, 60), Font)
    assert tiny.cramped and tiny.height <= 60 and len({ln.block for ln in tiny.lines}) == 6  # none dropped


def test_fault_texts_are_bilingual() -> None:
    assert fault_texts(stall_text("commit", 6)) == ("记录写入卡住（存储卡故障？） 6 秒",
                                                    "outbox write stalled (SD card not answering?) for 6 s")
    assert fault_texts("camera: no frame for 2 s")[0].startswith("摄像头故障")
    assert fault_texts("disk: full") == (FAULT_GENERAL, "disk: full")


def test_banner_text_has_high_contrast() -> None:
    def lum(c: tuple[int, int, int]) -> float:  # WCAG 2.x relative luminance
        lin = [(v / 255) / 12.92 if v <= 10 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    for state, (colour, _, _) in BANNERS.items():
        a, b = sorted((lum(colour), lum(BANNER_INK.get(state, WHITE))))
        assert (b + 0.05) / (a + 0.05) >= 4.5, state


# -- rendered screens --------------------------------------------------------------------------

@needs_cjk
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", list(CASES))
def test_every_reason_drawn_whole_inside_the_screen(size: tuple[int, int], case: str) -> None:
    state, kw = CASES[case]
    w, h = size
    img, drawn = Renderer(size).render(demo_view(state, **kw))
    for text in expected_texts(state, kw):
        for d in whole(drawn, text):
            assert d.size >= (MIN_ZH if any("\u4e00" <= c <= "\u9fff" for c in text) else MIN_EN), d
    for d in drawn:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h, d
    # no text drawn over other text
    for i, a in enumerate(drawn):
        for b in drawn[i + 1:]:
            assert (a.box[2] <= b.box[0] or b.box[2] <= a.box[0] or a.box[3] <= b.box[1]
                    or b.box[3] <= a.box[1]), (a, b)
    # on the pixels: the screen's edge columns above the footer hold no text (the old DENY English was cut there)
    arr = np.asarray(img)
    fy = footer_top(img)
    assert fy > h * 0.75
    for strip in (arr[:fy, w - 8:], arr[:fy, :8]):
        assert (strip == np.array(BACKGROUND, np.uint8)).all()
    # nothing but the footer's own text is drawn on the footer
    footer_lines = [d for d in drawn if d.box[1] >= fy]
    assert all(d.box[3] <= fy for d in drawn if d not in footer_lines)
    assert len(footer_lines) == 2


@needs_cjk
def test_long_reason_on_the_small_screen_wraps_or_shrinks_legibly() -> None:
    img, drawn = Renderer((800, 480)).render(demo_view("DENY", reasons=("HEALTH_RED", "FEVER", "TRUST_DATA_STALE")))
    zh, en = REASONS["FEVER"]
    en_lines = whole(drawn, en)
    preferred = Renderer((800, 480)).render(demo_view("DENY", reasons=("HEALTH_RED",)))[1]
    short_en = next(d for d in preferred if d.source == REASONS["HEALTH_RED"][1])
    assert len(en_lines) > 1 or en_lines[0].size < short_en.size  # wrapped or shrunk
    assert all(d.size >= MIN_EN for d in en_lines) and all(d.size >= MIN_ZH for d in whole(drawn, zh))
    assert max(d.box[2] for d in en_lines) <= 800 - 16


@needs_cjk
@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_full_list_of_reasons_is_never_cut(size: tuple[int, int]) -> None:
    codes = tuple(r for r in REASONS if r != "OK")
    img, drawn = Renderer(size).render(demo_view("DENY", reasons=codes))
    for code in codes:
        for text in REASONS[code]:
            assert all(d.box[2] <= size[0] and d.box[3] <= size[1] for d in whole(drawn, text))
    head = next(d for d in drawn if d.text == BANNERS["DENY"][1])
    assert head.size >= 48  # the verdict stays the largest text on the screen
    assert head.size == max(d.size for d in drawn)


@needs_cjk
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fault_detail_in_chinese_and_english(size: tuple[int, int]) -> None:
    view = demo_view("FAULT", faults=(ENGLISH_ONLY, stall_text("commit", 6)))
    _, drawn = Renderer(size).render(view)
    general = whole(drawn, "摄像头故障，请联系工作人员")
    english = whole(drawn, ENGLISH_ONLY)
    assert general[-1].box[3] <= english[0].box[1]  # the Chinese line first
    zh_lines = whole(drawn, "记录写入卡住（存储卡故障？） 6 秒")
    assert min(d.size for d in zh_lines) >= max(MIN_ZH, round(40 * min(size[0] / 1280, size[1] / 720)))
    whole(drawn, "outbox write stalled (SD card not answering?) for 6 s")


@needs_cjk
def test_render_cli_names_states_in_any_case_and_refuses_unknown_reasons(tmp_path: Path) -> None:
    out = tmp_path / "deny.png"
    cli = [sys.executable, "-m", "scanner.cli", "kiosk", "--size", "800x480", "--out", str(out)]
    r = subprocess.run([*cli, "--render", "deny", "--reason", "health_red", "--reason", "Fever"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).getpixel((770, 96)) == BANNERS["DENY"][0]
    bad = subprocess.run([*cli, "--render", "DENY", "--reason", "RED"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown reason 'RED'" in bad.stderr and "HEALTH_RED" in bad.stderr
    assert "Traceback" not in bad.stderr
    fault = subprocess.run([*cli, "--render", "Fault", "--fault", "disk: full"], capture_output=True, text=True,
                           cwd=ROOT)
    assert fault.returncode == 0, fault.stderr
