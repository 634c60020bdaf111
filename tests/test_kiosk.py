"""Kiosk screens rendered offscreen: banner colour per state, Chinese text drawn with real
glyphs, the found code outlined, nothing drawn over the footer on a small screen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scanner.kiosk import BANNERS, FOOTER_BG, KioskView, Renderer, demo_view, find_cjk_font
from scanner.qrimage import frame_with_codes
from scanner.reasons import PROMPTS, REASONS

ROOT = Path(__file__).resolve().parents[1]
needs_cjk = pytest.mark.skipif(find_cjk_font() is None, reason="no CJK font (apt-get install fonts-noto-cjk)")


def banner_colour(img: Image.Image) -> tuple[int, int, int]:
    w, h = img.size
    px = img.getpixel((w - 30, int(h * 0.20)))  # inside the banner, right of the text, at every size
    assert isinstance(px, tuple)
    return px[0], px[1], px[2]


@needs_cjk
@pytest.mark.parametrize("state", list(BANNERS))
def test_each_state_has_its_banner_colour_and_texts(state: str) -> None:
    r = Renderer((1280, 720))
    img, drawn = r.render(demo_view(state, preview=frame_with_codes(["HELLO"])))
    assert banner_colour(img) == BANNERS[state][0]
    texts = [d.text for d in drawn]
    colour, zh, en = BANNERS[state]
    head = zh.split(" ")[0]
    assert en in texts and all(part in texts for part in zh.split(" "))
    assert r.has_glyphs(zh)  # real glyphs, not boxes
    big = next(d for d in drawn if d.text == head)
    assert big.size >= 90  # readable from two metres
    # the drawn text really changed pixels inside its box
    x0, y0, x1, y1 = big.box
    region = np.asarray(img.crop((x0, y0, x1, y1)).convert("L"))
    assert region.std() > 40


@needs_cjk
def test_reason_and_temperature_shown_for_deny() -> None:
    img, drawn = Renderer().render(demo_view("DENY", reasons=("FEVER",), temperature_c=38.2))
    texts = " ".join(d.text for d in drawn)
    sources = {d.source for d in drawn}
    assert "38.2 °C" in texts and set(REASONS["FEVER"]) <= sources


def test_found_code_is_outlined_in_green() -> None:
    frame = frame_with_codes(["HELLO"])
    outline = ((200, 140), (440, 140), (440, 340), (200, 340))
    img, _ = Renderer((1280, 720)).render(KioskView(preview=frame, outlines=(outline,)))
    arr = np.asarray(img)
    green = (arr[:, :, 1] > 180) & (arr[:, :, 0] < 40) & (arr[:, :, 2] < 120)
    assert green[: int(720 * 0.6), : int(1280 * 0.45)].sum() > 500


@needs_cjk
def test_small_screen_never_draws_over_the_footer() -> None:
    r = Renderer((800, 480))
    img, drawn = r.render(demo_view("READY", prompts=("NOT_A_CODE", "SHOW_RESIDENCE", "HOLD_WRIST"),
                                    hint="too_dark"))
    arr = np.asarray(img)
    footer_top = 479
    while tuple(arr[footer_top - 1, 2]) == FOOTER_BG:
        footer_top -= 1
    assert 400 < footer_top < 480
    footer = [d for d in drawn if d.box[1] >= footer_top]
    assert len(footer) == 2 and any(d.text.startswith("今日") for d in footer)
    for d in drawn:
        if d not in footer:
            assert d.box[3] <= footer_top, d
    for key in ("NOT_A_CODE", "SHOW_RESIDENCE", "HOLD_WRIST"):  # every prompt still there
        assert set(PROMPTS[key]) <= {d.source for d in drawn}
    assert all(d.box[2] <= 800 for d in drawn)


def test_render_cli_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "fault.png"
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "kiosk", "--render", "FAULT", "--size", "1024x600",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    img = Image.open(out)
    assert img.size == (1024, 600) and banner_colour(img) == BANNERS["FAULT"][0]
    bad = subprocess.run([sys.executable, "-m", "scanner.cli", "kiosk", "--render", "PASS", "--size", "big",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "fix: e.g. --size 1280x720" in bad.stderr and "Traceback" not in bad.stderr


# -- live kiosk: the lane's state on a display ---------------------------------------------

def fake_framebuffer(tmp_path: Path, w: int, h: int, bpp: int, stride: int | None = None) -> tuple[Path, Path]:
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    (sysfs / "virtual_size").write_text(f"{w},{h}\n")
    (sysfs / "bits_per_pixel").write_text(f"{bpp}\n")
    stride = stride or w * bpp // 8
    (sysfs / "stride").write_text(f"{stride}\n")
    dev = tmp_path / "fb0"
    dev.write_bytes(b"\0" * stride * h)
    return dev, sysfs


@pytest.mark.parametrize("bpp,stride_pad", [(32, 0), (16, 0), (16, 64)])
def test_framebuffer_gets_the_right_pixels(tmp_path: Path, bpp: int, stride_pad: int) -> None:
    from drivers.display import FramebufferDisplay

    w, h = 64, 48
    stride = w * bpp // 8 + stride_pad
    dev, sysfs = fake_framebuffer(tmp_path, w, h, bpp, stride)
    fb = FramebufferDisplay(str(dev), str(sysfs))
    img = Image.new("RGB", (w, h), (198, 40, 40))  # DENY red
    img.putpixel((5, 7), (27, 135, 63))
    fb.show(img)
    raw = dev.read_bytes()
    assert len(raw) == stride * h

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        off = y * stride + x * bpp // 8
        if bpp == 32:
            b, g, r = raw[off], raw[off + 1], raw[off + 2]
            return r, g, b
        v = raw[off] | raw[off + 1] << 8
        return (v >> 11) << 3, ((v >> 5) & 0x3F) << 2, (v & 0x1F) << 3

    for (x, y), want in (((0, 0), (198, 40, 40)), ((5, 7), (27, 135, 63)), ((63, 47), (198, 40, 40))):
        got = pixel(x, y)
        assert all(abs(a - b) <= 8 for a, b in zip(got, want, strict=True)), (x, y, got)


def test_missing_framebuffer_names_the_fix(tmp_path: Path) -> None:
    from drivers.base import DriverError
    from drivers.display import FramebufferDisplay

    with pytest.raises(DriverError, match='display = "file"'):
        FramebufferDisplay(str(tmp_path / "fb9"), str(tmp_path / "nosys"))


@needs_cjk
def test_kiosk_shows_the_lanes_verdict(tmp_path: Path, trust: object, codes: object) -> None:
    from qrframes import make_frame
    from test_lane import Harness
    from waiting import wait_until

    from drivers.display import FileDisplay
    from scanner.kiosk import KioskThread

    out = tmp_path / "screen.png"
    with Harness(tmp_path, trust, [make_frame(codes.hc("green"))], skin_c=34.6) as h:  # type: ignore[attr-defined]
        display = FileDisplay(str(out), (800, 480))
        spoken: list[str] = []

        class Speaker:
            def say(self, text: str) -> None:
                spoken.append(text)

        kiosk = KioskThread(h.lane.monitor, display, h.lane.stop_event, fps=20, speaker=Speaker()).start()
        assert wait_until(lambda: len(h.rows) == 1)
        assert wait_until(lambda: "通行" in spoken)
        assert wait_until(lambda: out.exists() and banner_colour(Image.open(out)) == BANNERS["PASS"][0])
        assert kiosk.view().temperature_c == pytest.approx(36.6, abs=0.15)
        # after verdict_hold_s the screen asks the next person for the code again
        assert wait_until(lambda: banner_colour(Image.open(out)) == BANNERS["READY"][0])
        assert kiosk.errors == 0
