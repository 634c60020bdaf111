"""scanner.decode against real segno-made codes in noisy frames."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from pyzbar import pyzbar
from pyzbar.pyzbar import ZBarSymbol
from qrframes import blank_frame, make_frame, qr_tile, to_bgr

from scanner import decode as dec
from scanner.decode import (
    DecodedCode,
    Decoder,
    _undo_zbar_charset,
    frame_brightness_hint,
    payload_tag,
    zbar_binary_supported,
)

BASE45 = b"HC1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3/XIV0W23NTDEXWK G2EP4J0B3KL6QM5/OVGA/MAT%ZSGO-6I9A"
CHINESE = "陈*聪 健康码 绿码"
# Valid UTF-8 that is ALSO valid Shift-JIS: zbar's guess turns these into mojibake.
MOJIBAKE_PRONE = ["北京市朝阳区", "健康", "核酸阴性 48小时"]


@pytest.fixture
def decoder() -> Decoder:
    return Decoder()


def test_base45_payload_round_trips_as_bytes(decoder: Decoder) -> None:
    codes = decoder.decode(make_frame(BASE45), t_mono=5.0)
    assert len(codes) == 1
    code = codes[0]
    assert isinstance(code.payload, bytes) and code.payload == BASE45
    assert code.symbology == "QRCODE"
    assert code.t_mono == 5.0
    assert len(code.polygon) == 4 and all(isinstance(v, int) for p in code.polygon for v in p)


def test_two_codes_in_one_frame(decoder: Decoder) -> None:
    frame = make_frame(b"HC1:LEFT-CODE-0001", b"HC1:RIGHT-CODE-0002", module_px=5)
    codes = decoder.decode(frame)
    assert sorted(c.payload for c in codes) == [b"HC1:LEFT-CODE-0001", b"HC1:RIGHT-CODE-0002"]
    left = min(codes, key=lambda c: c.polygon[0][0])
    assert left.payload == b"HC1:LEFT-CODE-0001"  # polygons are in frame coordinates


@pytest.mark.parametrize("text", [CHINESE, *MOJIBAKE_PRONE, "Grüße é"])
def test_utf8_text_comes_back_exactly(decoder: Decoder, text: str) -> None:
    codes = decoder.decode(make_frame(text))
    assert [c.payload for c in codes] == [text.encode("utf-8")]
    assert codes[0].payload.decode("utf-8") == text


def test_installed_zbar_supports_binary_and_plain_pyzbar_shows_the_bug() -> None:
    """Documents why decode.py bypasses pyzbar.decode: libzbar0 0.23.92 has ZBAR_CFG_BINARY,
    and without it this text comes back as Shift-JIS mojibake."""
    assert zbar_binary_supported()
    text = "北京市朝阳区".encode()
    plain = pyzbar.decode(make_frame(text), symbols=[ZBarSymbol.QRCODE])
    assert plain and plain[0].data != text
    assert _undo_zbar_charset(plain[0].data) == text


@pytest.mark.parametrize("text", [CHINESE, *MOJIBAKE_PRONE])
def test_undo_charset_repairs_sjis_mojibake(text: str) -> None:
    raw = text.encode("utf-8")
    mojibake = raw.decode("shift_jis", errors="strict").encode("utf-8") if _is_sjis(raw) else raw
    assert _undo_zbar_charset(mojibake) == raw
    assert _undo_zbar_charset(raw) == raw  # correct text is left alone


def _is_sjis(raw: bytes) -> bool:
    try:
        raw.decode("shift_jis")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.parametrize("data", [BASE45, b"", b"NCFOXN%TS3DH3ZSUZK+.V0ETD", b"\xff\xfe\x00"])
def test_undo_charset_leaves_ascii_and_non_utf8_unchanged(data: bytes) -> None:
    assert _undo_zbar_charset(data) == data


def test_fallback_path_repairs_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old zbar without BINARY: the pyzbar + workaround path still returns UTF-8 bytes."""
    monkeypatch.setattr(dec, "zbar_binary_supported", lambda: False)
    old = Decoder()
    assert not old.raw_bytes
    for text in (BASE45.decode(), "北京市朝阳区"):
        assert [c.payload for c in old.decode(make_frame(text))] == [text.encode()]


def test_random_binary_payload_does_not_crash(decoder: Decoder) -> None:
    payload = np.random.default_rng(7).bytes(64)
    codes = decoder.decode(make_frame(payload))
    assert [c.payload for c in codes] == [payload]
    assert isinstance(codes[0].payload, bytes)


def test_every_byte_value_round_trips(decoder: Decoder) -> None:
    payload = bytes(range(256))
    assert [c.payload for c in decoder.decode(make_frame(payload, module_px=3))] == [payload]


def test_empty_and_blank_frames_give_nothing(decoder: Decoder) -> None:
    assert decoder.decode(blank_frame()) == []
    assert decoder.decode(np.zeros((480, 640), np.uint8)) == []
    assert decoder.decode(np.zeros((0, 0), np.uint8)) == []


def test_bgr_input_is_converted_not_channel_zero(decoder: Decoder) -> None:
    bgr = to_bgr(make_frame(BASE45))
    assert [c.payload for c in decoder.decode(bgr)] == [BASE45]
    # pyzbar alone reads only channel 0 (blue): a code drawn in blue-free ink vanishes for it
    tinted = bgr.copy()
    tinted[:, :, 0] = 255
    assert pyzbar.decode(tinted, symbols=[ZBarSymbol.QRCODE]) == []
    assert [c.payload for c in decoder.decode(tinted)] == [BASE45]


def test_rotated_and_slightly_blurred_code(decoder: Decoder) -> None:
    frame = make_frame(BASE45, rotate_deg=17, blur_px=3, module_px=5)
    assert [c.payload for c in decoder.decode(frame)] == [BASE45]


def test_small_frame_gets_an_upscaled_retry(decoder: Decoder) -> None:
    """1.4 px modules in a 320x240 frame: zbar misses them raw, finds them at 2x."""
    tile = qr_tile(BASE45, module_px=8)
    side = round(tile.shape[0] / 8 * 1.4)
    small = cv2.resize(tile, (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 320), 200.0)
    canvas[30:30 + side, 40:40 + side] = small
    canvas += np.random.default_rng(0).normal(0, 5, canvas.shape)
    frame = np.clip(canvas, 0, 255).astype(np.uint8)
    assert pyzbar.decode(frame, symbols=[ZBarSymbol.QRCODE]) == []
    codes = decoder.decode(frame)
    assert [c.payload for c in codes] == [BASE45]
    xs = [x for x, _ in codes[0].polygon]
    assert 30 <= min(xs) and max(xs) <= 40 + side + 5  # polygon mapped back to frame pixels
    assert Decoder(upscale_below_px=0).decode(frame) == []


def test_dedup_counts_once_while_in_view_and_again_after_the_window() -> None:
    decoder = Decoder(dedup_window_s=1.5)
    with_code, without = make_frame(BASE45), blank_frame()
    assert len(decoder.new_codes(with_code, 0.0)) == 1
    assert decoder.new_codes(with_code, 0.1) == []
    assert decoder.new_codes(with_code, 5.0) == []  # still in view (consecutive frames)
    assert decoder.new_codes(without, 5.1) == []
    assert decoder.new_codes(with_code, 6.0) == []  # back within the window: same person
    assert decoder.new_codes(without, 6.1) == []
    assert decoder.new_codes(without, 7.0) == []
    again = decoder.new_codes(with_code, 7.7)  # out of view for 1.7 s > 1.5 s
    assert [c.payload for c in again] == [BASE45] and again[0].t_mono == 7.7


def test_dedup_tracks_payloads_independently() -> None:
    decoder = Decoder(dedup_window_s=1.0)
    a, b = b"HC1:AAAA-1111", b"HC1:BBBB-2222"
    assert [c.payload for c in decoder.new_codes(make_frame(a), 0.0)] == [a]
    both = decoder.new_codes(make_frame(a, b, module_px=5), 0.1)
    assert [c.payload for c in both] == [b]
    decoder.reset()
    assert len(decoder.new_codes(make_frame(a), 0.2)) == 1


def test_decode_uses_the_injected_clock() -> None:
    decoder = Decoder(clock=lambda: 42.0)
    assert decoder.decode(make_frame(BASE45))[0].t_mono == 42.0


def test_payload_never_in_repr_or_logs(decoder: Decoder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="scanner.decode")
    codes = decoder.new_codes(make_frame(BASE45), 1.0)
    text = repr(codes) + caplog.text
    assert "HC1:" not in text and payload_tag(BASE45) in text
    assert len(payload_tag(BASE45)) == 12


def test_decoded_code_is_frozen() -> None:
    code = DecodedCode(b"x", "QRCODE", ((0, 0),), 1.0)
    with pytest.raises(AttributeError):
        code.payload = b"y"  # type: ignore[misc]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="QRCODE"):
        Decoder(symbols=("QR",))
    with pytest.raises(ValueError, match="uint8"):
        Decoder().decode(np.zeros((10, 10), np.float32))


def test_brightness_hint() -> None:
    assert frame_brightness_hint(np.full((48, 64), 10, np.uint8)) == "too_dark"
    assert frame_brightness_hint(np.full((48, 64), 255, np.uint8)) == "saturated"
    assert frame_brightness_hint(make_frame(BASE45)) is None
    assert frame_brightness_hint(to_bgr(np.full((48, 64), 5, np.uint8))) == "too_dark"

