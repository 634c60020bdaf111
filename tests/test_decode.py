"""scanner.decode against real segno-made codes in camera-like frames: exact bytes, the ladder,
motion gating, presentation hints, de-duplication."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import segno
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol
from qrframes import blank_frame, make_frame, qr_tile, to_bgr

from scanner import decode_engines
from scanner.decode import (
    HINT_TEXT,
    DecodedCode,
    Decoder,
    decode_frame,
    frame_brightness_hint,
    payload_tag,
    zbar_binary_supported,
)
from scanner.decode_engines import ZbarEngine, ZxingEngine, make_engine, undo_zbar_charset, zxing_module
from scanner.decode_ladder import find_candidates, run_ladder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

BASE45 = b"HC1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3/XIV0W23NTDEXWK G2EP4J0B3KL6QM5/OVGA/MAT%ZSGO-6I9A"
CHINESE = "陈*聪 健康码 绿码"
# Valid UTF-8 that is ALSO valid Shift-JIS: zbar's guess turns these into mojibake.
MOJIBAKE_PRONE = ["北京市朝阳区", "健康", "核酸阴性 48小时"]
ENGINES = ["zxing", "zbar"] if zxing_module() is not None else ["zbar"]
# Every decode in these tests gets this budget, not the lane's 80 ms default: under emulation, on a
# Pi Zero 2 W or a loaded CI machine a frame runs out of 80 ms and a test would then depend on the
# machine's speed. The budget itself is tested with an injected clock (test_budget_stops_...).
BUDGET_MS = 60_000.0


def paste(tile: np.ndarray, size: tuple[int, int] = (640, 480), at: tuple[int, int] = (100, 80),
          background: int = 190) -> np.ndarray:
    frame = np.full((size[1], size[0]), background, np.uint8)
    frame[at[1]:at[1] + tile.shape[0], at[0]:at[0] + tile.shape[1]] = tile
    return frame


def decode_in_budget(frame: np.ndarray, **kwargs: Any) -> list[DecodedCode]:
    """decode_frame with the tests' budget."""
    return decode_frame(frame, budget_ms=BUDGET_MS, **kwargs)


def bare_zxing(frame: np.ndarray) -> list[bytes]:
    zx = zxing_module()
    return [bytes(r.bytes) for r in zx.read_barcodes(frame, formats=zx.BarcodeFormat.QRCode)]


needs_zxing = pytest.mark.skipif(zxing_module() is None, reason="zxing-cpp not installed")


# -- the contract ---------------------------------------------------------------------------------

def test_decode_frame_returns_exact_bytes_and_text() -> None:
    codes = decode_in_budget(make_frame(BASE45), t_mono=5.0)
    assert len(codes) == 1
    code = codes[0]
    assert isinstance(code.data, bytes) and code.data == BASE45
    assert code.text == BASE45.decode() and code.payload == code.data
    assert code.symbology == "QRCODE" and code.t_mono == 5.0 and code.rung == "frame"
    assert len(code.polygon) == 4 and all(isinstance(v, int) for p in code.polygon for v in p)


def test_two_codes_in_one_frame() -> None:
    frame = make_frame(b"HC1:LEFT-CODE-0001", b"HC1:RIGHT-CODE-0002", module_px=5)
    codes = decode_in_budget(to_bgr(frame))
    assert sorted(c.data for c in codes) == [b"HC1:LEFT-CODE-0001", b"HC1:RIGHT-CODE-0002"]
    left = min(codes, key=lambda c: c.polygon[0][0])
    assert left.data == b"HC1:LEFT-CODE-0001"  # polygons are in frame coordinates


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("text", [CHINESE, *MOJIBAKE_PRONE, "Grüße é"])
def test_utf8_text_comes_back_exactly(engine: str, text: str) -> None:
    codes = Decoder(budget_ms=BUDGET_MS, engine=engine).decode(make_frame(text))
    assert [c.data for c in codes] == [text.encode("utf-8")]
    assert codes[0].text == text


@pytest.mark.parametrize("engine", ENGINES)
def test_binary_payloads_never_crash_and_have_no_text(engine: str) -> None:
    payload = np.random.default_rng(7).bytes(64)
    codes = Decoder(budget_ms=BUDGET_MS, engine=engine).decode(make_frame(payload))
    assert [c.data for c in codes] == [payload] and codes[0].text is None
    every = bytes(range(256))
    decoder = Decoder(budget_ms=BUDGET_MS, engine=engine)
    assert [c.data for c in decoder.decode(make_frame(every, module_px=3))] == [every]


@needs_zxing
def test_kanji_mode_text_keeps_its_bytes_and_gets_text() -> None:
    qr = segno.make("点茗", mode="kanji", micro=False)
    tile = np.where(np.array(list(qr.matrix_iter(scale=5, border=4)), bool), 0, 255).astype(np.uint8)
    [code] = decode_in_budget(paste(tile))
    assert code.data == "点茗".encode("shift_jis") and code.text == "点茗"


def test_installed_zbar_supports_binary_and_plain_pyzbar_shows_the_bug() -> None:
    """Why the zbar engine bypasses pyzbar.decode: libzbar0 0.23.92 has ZBAR_CFG_BINARY,
    and without it this text comes back as Shift-JIS mojibake."""
    assert zbar_binary_supported()
    text = "北京市朝阳区".encode()
    plain = pyzbar.decode(make_frame(text), symbols=[ZBarSymbol.QRCODE])
    assert plain and plain[0].data != text
    assert undo_zbar_charset(plain[0].data) == text


@pytest.mark.parametrize("text", MOJIBAKE_PRONE)
def test_undo_charset_repairs_sjis_mojibake(text: str) -> None:
    raw = text.encode("utf-8")
    mojibake = raw.decode("shift_jis").encode("utf-8")
    assert undo_zbar_charset(mojibake) == raw
    assert undo_zbar_charset(raw) == raw  # correct text is left alone


@pytest.mark.parametrize("data", [BASE45, b"", b"NCFOXN%TS3DH3ZSUZK+.V0ETD", b"\xff\xfe\x00"])
def test_undo_charset_leaves_ascii_and_non_utf8_unchanged(data: bytes) -> None:
    assert undo_zbar_charset(data) == data


def test_old_zbar_fallback_repairs_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old zbar without BINARY: the pyzbar + workaround path still returns UTF-8 bytes."""
    monkeypatch.setattr(decode_engines, "zbar_binary_supported", lambda: False)
    old = Decoder(budget_ms=BUDGET_MS, engine="zbar")
    assert not old.raw_bytes
    for text in (BASE45.decode(), "北京市朝阳区"):
        assert [c.data for c in old.decode(make_frame(text))] == [text.encode()]


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_engine("zbar"), ZbarEngine)
    if zxing_module() is not None:
        assert isinstance(make_engine("auto"), ZxingEngine)
    monkeypatch.setattr(decode_engines, "zxing_module", lambda: None)
    assert isinstance(make_engine("auto"), ZbarEngine)  # pyzbar alone still reads
    with pytest.raises(ImportError, match="pip install zxing-cpp"):
        make_engine("zxing")
    with pytest.raises(ValueError, match="auto"):
        make_engine("fastest")


def test_empty_and_blank_frames_give_nothing() -> None:
    assert decode_in_budget(blank_frame()) == []
    assert decode_in_budget(np.zeros((480, 640), np.uint8)) == []
    assert decode_in_budget(np.zeros((0, 0), np.uint8)) == []
    assert decode_in_budget(np.zeros((3, 3), np.uint8)) == []


def test_bgr_and_bgra_input_is_converted_not_channel_zero() -> None:
    bgr = to_bgr(make_frame(BASE45))
    tinted = bgr.copy()
    tinted[:, :, 0] = 255  # pyzbar alone reads only channel 0 (blue): the code vanishes for it
    assert pyzbar.decode(tinted, symbols=[ZBarSymbol.QRCODE]) == []
    assert [c.data for c in decode_in_budget(tinted)] == [BASE45]
    assert [c.data for c in decode_in_budget(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))] == [BASE45]


def test_rotated_and_slightly_blurred_code() -> None:
    frame = make_frame(BASE45, rotate_deg=17, blur_px=3, module_px=5)
    assert [c.data for c in decode_in_budget(frame)] == [BASE45]


# -- the ladder -----------------------------------------------------------------------------------

def small_module_frame() -> np.ndarray:
    """1.25 px modules in a 320x240 frame: whole-frame passes miss them."""
    tile = qr_tile(BASE45, module_px=8)
    side = round(tile.shape[0] / 8 * 1.25)
    small = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 320), 200.0)
    canvas[30:30 + side, 40:40 + side] = small
    canvas += np.random.default_rng(0).normal(0, 5, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def test_small_modules_are_read_by_the_ladder_not_by_a_plain_pass() -> None:
    frame = small_module_frame()
    assert pyzbar.decode(frame, symbols=[ZBarSymbol.QRCODE]) == []
    if zxing_module() is not None:
        assert bare_zxing(frame) == []
    codes = decode_in_budget(frame)
    assert [c.data for c in codes] == [BASE45] and codes[0].rung != "frame"
    xs = [x for x, _ in codes[0].polygon]
    assert 25 <= min(xs) and max(xs) <= 40 + 90  # polygon mapped back to frame pixels


@needs_zxing
def test_low_contrast_phone_screen_is_read_by_the_region_pass() -> None:
    """A phone at low brightness: 18 grey levels between dark and light modules. zxing-cpp's
    binariser sees flat blocks; the stretched region reads."""
    tile = qr_tile(BASE45, module_px=4)
    faint = (100 + (tile > 0) * 18).astype(np.uint8)
    frame = paste(faint, background=60)
    frame = np.clip(frame + np.random.default_rng(1).normal(0, 1.5, frame.shape), 0, 255).astype(np.uint8)
    assert bare_zxing(frame) == []
    codes = decode_in_budget(frame)
    assert [c.data for c in codes] == [BASE45] and codes[0].rung.startswith("region")


@needs_zxing
def test_light_on_dark_code_is_read() -> None:
    tile = 255 - qr_tile(BASE45, module_px=4)
    frame = paste(tile, background=30)
    codes = decode_in_budget(frame)
    assert [c.data for c in codes] == [BASE45] and codes[0].rung == "region"


def test_code_like_patches_never_decode_to_anything() -> None:
    """Three finder patterns around random modules (a QR that carries nothing), a random grid,
    a checkerboard: candidates for the ladder, but nothing may come out."""
    rng = np.random.default_rng(3)
    frame = np.full((480, 640), 180, np.uint8)
    m = rng.random((33, 33)) < 0.5
    finder = np.ones((7, 7), bool)
    finder[1:6, 1:6] = False
    finder[2:5, 2:5] = True
    for oy, ox in ((0, 0), (0, 26), (26, 0)):
        m[oy:oy + 7, ox:ox + 7] = finder
    for i, grid in enumerate((m, rng.random((30, 30)) < 0.5, np.add.outer(np.arange(30), np.arange(30)) % 2 == 1)):
        tile = cv2.resize(np.where(np.pad(grid, 4), 20, 235).astype(np.uint8), None, fx=4, fy=4,
                          interpolation=cv2.INTER_NEAREST)
        frame[40:40 + tile.shape[0], 20 + i * 205:20 + i * 205 + tile.shape[1]] = tile[:, :200]
    assert find_candidates(frame)  # the ladder does look at them
    assert decode_in_budget(frame) == []
    assert Decoder(budget_ms=BUDGET_MS, engine="zbar").decode(frame) == []


def test_ladder_reads_more_than_a_bare_pass_on_hard_frames_without_wrong_decodes() -> None:
    import hardframes

    frames = hardframes.build_set(11, 24, 6, [BASE45.decode(), "AJM1:" + "X" * 120])
    read = plain = 0
    for f in frames:
        got = {c.data for c in decode_in_budget(f.image)}
        assert got <= set(f.truth), f"wrong decode in a frame tagged {f.tags}"
        read += len(got)
        plain += len(set(bare_zxing(f.image) if zxing_module() else []) & set(f.truth))
    assert read > plain


def test_budget_stops_the_ladder_after_the_whole_frame_pass() -> None:
    frame = small_module_frame()
    primary, _ = (make_engine("auto"), None)
    ticks = iter(range(1000))
    result = run_ladder(frame, primary, None, budget_s=0.5, clock=lambda: float(next(ticks)))
    assert result.rungs == ["frame"] and result.out_of_time and result.hits == []
    result = run_ladder(frame, primary, None, budget_s=1000.0)
    assert len(result.rungs) > 1 and [h.data for h, _ in result.hits] == [BASE45]


# -- Decoder: motion gating, hints, de-duplication ------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_motion_gate_skips_unchanged_empty_frames_but_never_a_code() -> None:
    decoder = Decoder(budget_ms=BUDGET_MS, gate_max_skip_s=1.0)
    empty, other_noise = blank_frame(seed=1), blank_frame(seed=2)  # same scene, new sensor noise
    assert decoder.new_codes(empty, 0.0) == []
    assert decoder.new_codes(other_noise, 0.1) == []
    assert decoder.new_codes(empty, 0.2) == []
    assert decoder.stats.frames_skipped == 2 and decoder.stats.frames_decoded == 1
    assert decoder.new_codes(empty, 1.1) == []  # decoded anyway: at least once a second
    assert decoder.stats.frames_decoded == 2
    with_code = make_frame(BASE45)
    assert [c.data for c in decoder.new_codes(with_code, 1.2)] == [BASE45]  # a code appears: decoded at once
    decoder.new_codes(with_code, 1.3)
    decoder.new_codes(with_code, 1.4)
    assert decoder.stats.frames_decoded == 5  # a code in view: every frame is decoded
    ungated = Decoder(budget_ms=BUDGET_MS, motion_gate=False)
    for t in (0.0, 0.1, 0.2):
        ungated.new_codes(empty, t)
    assert ungated.stats.frames_decoded == 3 and ungated.stats.frames_skipped == 0


def test_motion_gate_sees_a_small_code_arrive() -> None:
    decoder = Decoder(budget_ms=BUDGET_MS)
    scene = blank_frame()
    decoder.new_codes(scene, 0.0)
    tile = qr_tile(b"HC1:SMALL", module_px=3)
    with_code = scene.copy()
    with_code[200:200 + tile.shape[0], 300:300 + tile.shape[1]] = tile
    assert [c.data for c in decoder.new_codes(with_code, 0.1)] == [b"HC1:SMALL"]


def test_hint_needs_two_seconds_is_logged_once_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="scanner.decode")
    decoder = Decoder(budget_ms=BUDGET_MS, motion_gate=False)
    dark = blank_frame(level=15)
    for i in range(30):
        decoder.new_codes(dark, i * 0.1)
        assert decoder.hint == ("too_dark" if i * 0.1 >= 2.0 else None)
    assert decoder.hint_text == HINT_TEXT["too_dark"] and "too dark" in decoder.hint_text
    assert caplog.text.count("event=presentation_hint hint=too_dark") == 1
    decoder.new_codes(make_frame(BASE45), 3.1)
    assert decoder.hint is None
    for i in range(25):
        decoder.new_codes(np.full((480, 640), 255, np.uint8), 4.0 + i * 0.1)
    assert decoder.hint == "saturated"


@needs_zxing
def test_unreadable_faint_code_gives_the_low_contrast_hint() -> None:
    tile = qr_tile(BASE45, module_px=3)
    faint = cv2.GaussianBlur((100 + (tile > 0) * 25).astype(np.uint8), (0, 0), 1.5)
    frame = paste(faint, background=90)
    frame = np.clip(frame + np.random.default_rng(1).normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
    decoder = Decoder(budget_ms=BUDGET_MS, motion_gate=False)
    for i in range(25):
        assert decoder.new_codes(frame, i * 0.1) == []
    assert decoder.hint == "low_contrast"


def test_dedup_counts_once_while_in_view_and_again_after_the_window() -> None:
    decoder = Decoder(budget_ms=BUDGET_MS, dedup_window_s=1.5)
    with_code, without = make_frame(BASE45), blank_frame()
    assert len(decoder.new_codes(with_code, 0.0)) == 1
    assert decoder.new_codes(with_code, 0.1) == []
    assert decoder.new_codes(with_code, 5.0) == []  # still in view (consecutive frames)
    assert decoder.new_codes(without, 5.1) == []
    assert decoder.new_codes(with_code, 6.0) == []  # back within the window: same person
    assert decoder.new_codes(without, 6.1) == []
    assert decoder.new_codes(without, 7.0) == []
    again = decoder.new_codes(with_code, 7.7)  # out of view for 1.7 s > 1.5 s
    assert [c.data for c in again] == [BASE45] and again[0].t_mono == 7.7


def test_dedup_tracks_payloads_independently() -> None:
    decoder = Decoder(budget_ms=BUDGET_MS, dedup_window_s=1.0)
    a, b = b"HC1:AAAA-1111", b"HC1:BBBB-2222"
    assert [c.data for c in decoder.new_codes(make_frame(a), 0.0)] == [a]
    both = decoder.new_codes(make_frame(a, b, module_px=5), 0.1)
    assert [c.data for c in both] == [b]
    decoder.reset()
    assert len(decoder.new_codes(make_frame(a), 0.2)) == 1


def test_decode_uses_the_injected_clock() -> None:
    decoder = Decoder(budget_ms=BUDGET_MS, clock=lambda: 42.0)
    assert decoder.decode(make_frame(BASE45))[0].t_mono == 42.0


def test_payload_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="scanner.decode")
    codes = Decoder(budget_ms=BUDGET_MS).new_codes(make_frame(BASE45), 1.0)
    text = repr(codes) + caplog.text
    assert "HC1:" not in text and payload_tag(BASE45) in text
    assert len(payload_tag(BASE45)) == 12


def test_decoded_code_is_frozen_and_fills_text() -> None:
    code = DecodedCode(b"x", "QRCODE", ((0, 0),), 1.0)
    assert code.text == "x" and code.payload == b"x"
    assert DecodedCode(b"\xff\x00").text is None
    with pytest.raises(AttributeError):
        code.data = b"y"  # type: ignore[misc]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="QRCODE"):
        Decoder(symbols=("QR",), budget_ms=BUDGET_MS)
    with pytest.raises(ValueError, match="budget_ms"):
        Decoder(budget_ms=0)
    with pytest.raises(ValueError, match="uint8"):
        decode_frame(np.zeros((10, 10), np.float32), budget_ms=BUDGET_MS)


def test_brightness_hint() -> None:
    assert frame_brightness_hint(np.full((48, 64), 10, np.uint8)) == "too_dark"
    assert frame_brightness_hint(np.full((48, 64), 255, np.uint8)) == "saturated"
    assert frame_brightness_hint(make_frame(BASE45)) is None
    assert frame_brightness_hint(to_bgr(np.full((48, 64), 5, np.uint8))) == "too_dark"


def test_budget_grows_with_the_frame_size() -> None:
    from scanner.decode import _scaled_budget_s

    assert _scaled_budget_s(80, np.zeros((480, 640), np.uint8)) == pytest.approx(0.08)
    assert _scaled_budget_s(80, np.zeros((240, 320), np.uint8)) == pytest.approx(0.08)
    assert _scaled_budget_s(80, np.zeros((3000, 4000), np.uint8)) == pytest.approx(0.08 * 39.0625)


def test_no_test_decodes_within_the_lanes_default_budget() -> None:
    """Every Decoder(...) and decode_frame(...) in the tests names its budget: the 80 ms default is
    the lane's, for a 640x480 frame on a Pi 4, and a test relying on it depends on the machine."""
    import ast

    missing = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("Decoder", "decode_frame") and not any(
                    k.arg in ("budget_ms", None) for k in node.keywords):  # None: **kwargs passed on
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"give these decodes an explicit budget_ms: {missing}"
