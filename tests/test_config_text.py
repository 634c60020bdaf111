"""Issue 12 items 8, 10 and 11: configs as people save them (BOM, GBK, UTF-16, CRLF), every
problem listed even after a syntax error, duplicates named as such, keys above the first
section, and what was accepted but wrong (placeholder ids, LEDs on the thermometer's I2C pins).
Files are written as explicit bytes, the way the editors write them."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from scanner import cli
from scanner.config import load_config, parse_config
from scanner.config_text import load_toml
from scanner.errors import ConfigError
from scanner.textfile import NotUtf8Error, decode_text

ID = 'id = "RA-G104-EXIT-3"\ndevice_id = "pi-ra-0001"\n'
REAL = '[checkpoint]\nmode = "real"\n' + ID  # lines 1-4
SAVE_AS = "fix: save it as UTF-8 / 请另存为 UTF-8 编码 (Notepad: Save As, Encoding: UTF-8)"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "site.toml")
    return e.value.problems


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return e.value.problems


# -- item 8: encodings ----------------------------------------------------------------------


def test_a_config_saved_by_notepad_with_a_bom_and_crlf_loads(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_bytes(codecs.BOM_UTF8 + REAL.replace("\n", "\r\n").encode("utf-8")
                  + "[camera]\r\nfps = 10 # 帧率\r\n".encode())
    cfg = load_config(f)
    assert (cfg.checkpoint.mode, cfg.checkpoint.id, cfg.camera.fps) == ("real", "RA-G104-EXIT-3", 10)
    assert cfg.key_lines["camera.fps"] == 6


def test_a_bom_does_not_move_the_line_of_a_later_problem(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_bytes(codecs.BOM_UTF8 + (REAL + "[camera]\nfps = 500\n").encode())
    assert load_problems(f) == ["line 6: camera.fps: out of range 1..120 (got 500); fix: capture frames per second"]


def test_a_gbk_config_names_the_line_and_save_as_utf8(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_bytes((REAL + "# 收费站出口 3 号车道\n[camera]\n").encode("gbk"))
    assert load_problems(f) == [f"line 5: not UTF-8 text (byte 0xCA, probably GBK (the Chinese Windows encoding)); "
                                f"{SAVE_AS}"]
    r = cli.main(["check-config", str(f)])
    assert r == 2


def test_a_utf16_config_is_named(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_bytes(codecs.BOM_UTF16_LE + REAL.encode("utf-16-le"))
    assert load_problems(f) == [f'saved as UTF-16 (Notepad calls it "Unicode"), not UTF-8; {SAVE_AS}']


def test_check_config_on_a_bom_file_is_ok_and_on_gbk_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "site.toml"
    f.write_bytes(codecs.BOM_UTF8 + (REAL + "[simulation]\nbootstrap = false\n").encode())
    assert cli.main(["check-config", "--text-only", str(f)]) == 0
    assert "OK" in capsys.readouterr().out
    f.write_bytes("[checkpoint]\nmode = \"real\"\nid = \"高速出口\"\n".encode("gbk"))
    assert cli.main(["check-config", "--text-only", str(f)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "  line 3: not UTF-8 text" in err and "save it as UTF-8" in err


def test_decode_text() -> None:
    assert decode_text(codecs.BOM_UTF8 + b"a\r\nb") == "a\r\nb"
    assert decode_text("检查站".encode()) == "检查站"
    with pytest.raises(NotUtf8Error) as e:
        decode_text(b"ok\nok\n\xff\xfe\xfd")
    assert e.value.line == 3 and "GBK" not in e.value.problem  # 0xFF is no GB18030 lead byte either


# -- item 10: one syntax error no longer hides the rest ---------------------------------------


def test_a_duplicate_key_is_named_with_both_lines() -> None:
    text = REAL + "[camera]\nfps = 15\nwidth = 640\nfps = 20\n"
    assert problems(text) == ["line 8: camera.fps: duplicate key, already set on line 6 (TOML allows each key once "
                              "per section); fix: delete one of the two lines"]


def test_a_syntax_error_and_the_problems_after_it_are_all_listed() -> None:
    text = (REAL + "[camera]\nfps = 15\nfps = 20\n[decode]\nengine = zbar\n[thermometer]\nsamples = 1\n"
            "[indicators]\ngreen_pin = 99\n")
    assert problems(text) == [
        "line 7: camera.fps: duplicate key, already set on line 6 (TOML allows each key once per section); fix: "
        "delete one of the two lines",
        'line 9: decode.engine: TOML syntax error: Invalid value (column 10); fix: text goes in double quotes: '
        'engine = "zbar"',
        "line 11: thermometer.samples: out of range 3..50 (got 1); fix: samples per measurement; the median is "
        "reported",
        "line 13: indicators.green_pin: out of range 2..27 (got 99); fix: BCM number of the green LED",
    ]


def test_a_key_with_a_syntax_error_is_not_also_reported_missing() -> None:
    p = problems('[checkpoint]\nmode = real\n' + ID)
    assert p == ['line 2: checkpoint.mode: TOML syntax error: Invalid value (column 8); fix: text goes in double '
                 'quotes: mode = "real"']


def test_chinese_input_method_quotes_are_named() -> None:
    p = problems('[checkpoint]\nmode = “real”\n' + ID)
    assert len(p) == 1 and p[0].startswith("line 2: checkpoint.mode: TOML syntax error")
    assert "use the plain ASCII characters" in p[0]


def test_a_repeated_section_is_named_and_its_keys_still_checked() -> None:
    text = REAL + "[camera]\nfps = 15\n[decode]\nengine = \"zbar\"\n[camera]\nfps = 20\nheight = 9\n"
    assert problems(text) == [
        "line 9: [camera]: duplicate section, already on line 5; fix: merge the two [camera] blocks into one (the "
        "keys below this line are checked as part of the first)",
        "line 10: camera.fps: duplicate key, already set on line 6 (in the first [camera]); fix: delete one of the "
        "two lines",
        "line 11: camera.height: out of range 120..3072 (got 9); fix: capture height in pixels",
    ]


def test_a_broken_header_does_not_put_its_keys_into_another_section() -> None:
    p = problems(REAL + "[camera\nfps = 15\n[decode]\nengine = \"zz\"\n")
    assert p[0] == ("line 5: TOML syntax error: Expected ']' at the end of a table declaration (column 8); fix: "
                    "close the section name with ], e.g. [camera] (the keys under it are checked once it is fixed)")
    assert len(p) == 2 and p[1].startswith("line 8: decode.engine: must be one of auto, zxing, zbar")


def test_an_unclosed_array_at_the_end_is_one_line() -> None:
    p = problems('[checkpoint]\nmode = "real"\nvillages = ["330381001001",\n')
    assert len(p) == 1 and p[0].startswith("line 3: TOML syntax error at the end of the file")


def test_a_key_before_any_section_says_where_it_belongs() -> None:
    assert problems('mode = "real"\n[checkpoint]\n' + ID) == [
        "line 1: mode: a key before any [section] (got mode = 'real'); fix: move it under [checkpoint]"]
    p = problems('fps = 10\n' + REAL)
    assert p == ["line 1: fps: a key before any [section] (got fps = 10); fix: move it under [camera] (or [kiosk])"]


def test_locate_maps_a_continued_section_to_its_first() -> None:
    parsed = load_toml("[camera]\nfps = 1\n[log]\n[camera]\nwidth = 640\n")
    assert parsed.data["camera"] == {"fps": 1, "width": 640}
    assert parsed.keys["camera.width"] == 5 and parsed.sections["camera"] == 1


# -- item 11: accepted but wrong ----------------------------------------------------------------


@pytest.mark.parametrize(("pin_key", "pin", "name"), [
    ("green_pin", 2, "SDA (header pin 3)"), ("red_pin", 3, "SCL (header pin 5)"),
    ("buzzer_pin", 2, "SDA (header pin 3)"), ("relay_pin", 3, "SCL (header pin 5)"),
    ("override_button_pin", 2, "SDA (header pin 3)"),
])
def test_outputs_on_the_thermometers_i2c_pins_are_refused(pin_key: str, pin: int, name: str) -> None:
    p = problems(f"{REAL}[indicators]\n{pin_key} = {pin}\n")
    assert p == [f"line 6: indicators.{pin_key}: GPIO{pin} is {name} of I2C bus 1, wired to the MLX90614 "
                 "thermometer (got {pin}); fix: a free pin such as 17, 27, 22, 23 or 24".replace("{pin}", str(pin))]


def test_i2c_pins_are_free_when_the_thermometer_is_on_another_bus() -> None:
    cfg = parse_config(f"{REAL}[thermometer]\ni2c_bus = 3\n[indicators]\nrelay_pin = 2\n", "site.toml")
    assert cfg.indicators.relay_pin == 2


def test_a_real_gate_needs_its_own_ids() -> None:
    assert problems('[checkpoint]\nmode = "real"\n') == [
        "line 1: checkpoint.id: required on a real gate (got nothing: every such gate would upload as "
        "'CHECKPOINT-1'); fix: id = the checkpoint's id as the central platform lists it (卡口编号), under "
        "[checkpoint]",
        "line 1: checkpoint.device_id: required on a real gate (got nothing: every such gate would upload as "
        "'device-1'); fix: device_id = this Pi's own id, one per Pi (设备编号), under [checkpoint]",
    ]
    assert problems('[checkpoint]\nmode = "real"\nid = "CHECKPOINT-1"\ndevice_id = "device-1"\n') == [
        "line 3: checkpoint.id: a placeholder on a real gate (got 'CHECKPOINT-1'); fix: "
        "id = the checkpoint's id as the central platform lists it (卡口编号)",
        "line 4: checkpoint.device_id: a placeholder on a real gate (got 'device-1'); fix: "
        "device_id = this Pi's own id, one per Pi (设备编号)",
    ]


@pytest.mark.parametrize("mode", ["real", "simulated"])
def test_a_blank_id_is_refused_in_any_mode(mode: str) -> None:
    extra = "[simulation]\nbootstrap = true\n" if mode == "simulated" else ""
    p = problems(f'[checkpoint]\nmode = "{mode}"\nid = "X-1"\ndevice_id = "  "\n{extra}')
    assert p == ["line 4: checkpoint.device_id: blank (got '  '); fix: device_id = this Pi's own id, one per Pi "
                 "(设备编号)"]


def test_a_simulated_lane_may_keep_the_placeholders() -> None:
    cfg = parse_config('[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n', "demo.toml")
    assert (cfg.checkpoint.id, cfg.checkpoint.device_id) == ("CHECKPOINT-1", "device-1")


# -- issue 12 leftovers: fixes that misled ---------------------------------------------------------


SIM = '[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n'  # lines 1-4


@pytest.mark.parametrize("value", ["abc", "３.５"])
def test_a_word_or_full_width_digits_in_a_number_key_ask_for_a_number(value: str) -> None:
    """Before: "text goes in double quotes: offset_c = "３.５"", wrong for a number key."""
    assert problems(f"{SIM}[thermometer]\noffset_c = {value}\n") == [
        "line 6: thermometer.offset_c: TOML syntax error: Invalid value (column 12); fix: write a number such as "
        "2.0 (ASCII digits, a decimal point), without quotes"]


@pytest.mark.parametrize(("line", "fixed"), [("[thermometer]\noffset_c = 3,5", "offset_c = 3.5"),
                                             ("[camera]\nreplay_fps = 5,0", "replay_fps = 5.0")])
def test_a_decimal_comma_asks_for_a_decimal_point(line: str, fixed: str) -> None:
    p = problems(f"{SIM}{line}\n")
    assert len(p) == 1 and p[0].startswith("line 6: ") and p[0].endswith(f"fix: use a decimal point: {fixed}")


def test_a_full_width_section_header_is_one_line_and_keeps_its_keys() -> None:
    """Before: one syntax error plus 4 "checkpoint.source: unknown key" lines for camera's keys."""
    text = (f"{SIM}[thermometer]\noffset_c = 1.0\n［camera］\nfps = 500\nwidth = 640\nheight = 480\n"
            "source = \"replay\"\n")
    assert problems(text) == [
        "line 7: [camera]: TOML syntax error: the section name is in full-width brackets (got ［camera］); fix: use "
        "ASCII brackets [camera] (the keys under it are checked as [camera])",
        "line 8: camera.fps: out of range 1..120 (got 500); fix: capture frames per second"]


def test_a_full_width_equals_sign_names_the_key() -> None:
    p = problems(f"{SIM}[thermometer]\noffset_c ＝ 3.5\n")
    assert len(p) == 1 and p[0].startswith("line 6: thermometer.offset_c: TOML syntax error")
    assert "use the plain ASCII characters" in p[0]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_one_line(tmp_path: Path, encoding: str) -> None:
    """Before (LE): 21 syntax-error lines."""
    f = tmp_path / "site.toml"
    f.write_bytes((REAL + "[camera]\nfps = 10\n").encode(encoding))
    assert load_problems(f) == [f'saved as UTF-16 (Notepad calls it "Unicode"), not UTF-8; {SAVE_AS}']


def test_every_pin_problem_is_reported_at_once() -> None:
    """Before: only green_pin; relay_pin = 1 came after green_pin was fixed."""
    assert problems(f"{SIM}[indicators]\ngreen_pin = 0\nrelay_pin = 1\n") == [
        "line 6: indicators.green_pin: out of range 2..27 (got 0); fix: BCM number of the green LED",
        "line 7: indicators.relay_pin: GPIO1 is reserved for the HAT EEPROM (got 1); fix: use 0 for no relay or a "
        "free pin such as 23"]
