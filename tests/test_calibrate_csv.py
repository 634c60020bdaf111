"""Issue 12 item 9: `calibrate --pairs` on the CSV files Excel, WPS and Notepad write. Each file
is written as the bytes those programs produce (BOM, CRLF, GBK header, `;` and decimal commas)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from scanner import cli
from scanner.calibrate import CalibrationError, Pair, read_pairs_csv

PAIRS = [Pair(32.2, 5.0, 36.7), Pair(33.4, 12.0, 36.8), Pair(34.6, 19.0, 36.6)]


def write(tmp_path: Path, data: bytes, name: str = "pairs.csv") -> Path:
    f = tmp_path / name
    f.write_bytes(data)
    return f


def refused(f: Path) -> str:
    with pytest.raises(CalibrationError) as e:
        read_pairs_csv(f)
    return str(e.value)


def test_excel_csv_utf8_with_bom_and_crlf(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8": a BOM before the header, CRLF line ends. Before: "header lacks object_c"."""
    f = write(tmp_path, codecs.BOM_UTF8 + b"object_c,ambient_c,reference_c\r\n32.2,5.0,36.7\r\n33.4,12,36.8\r\n"
              b"34.6,19.0,36.6\r\n")
    assert read_pairs_csv(f) == PAIRS


def test_bom_before_a_file_without_header(tmp_path: Path) -> None:
    f = write(tmp_path, codecs.BOM_UTF8 + b"32.2,5.0,36.7\r\n33.4,12,36.8\r\n34.6,19.0,36.6\r\n")
    assert read_pairs_csv(f) == PAIRS


def test_header_in_another_case_with_spaces_and_trailing_empty_cells(tmp_path: Path) -> None:
    f = write(tmp_path, b"Object_C, Ambient_C ,REFERENCE_C,,\r\n32.2,5.0,36.7,,\r\n33.4,12,36.8,,\r\n"
              b"34.6,19.0,36.6,,\r\n")
    assert read_pairs_csv(f) == PAIRS


def test_gbk_file_names_the_line_and_save_as_utf8(tmp_path: Path) -> None:
    """Excel's plain "CSV" on a Chinese Windows: GBK. Before: a UnicodeDecodeError traceback."""
    f = write(tmp_path, "object_c,ambient_c,reference_c,备注\r\n32.2,5.0,36.7,早班\r\n".encode("gbk"))
    assert refused(f) == (f"{f} line 1: not UTF-8 text (byte 0xB1, probably GBK (the Chinese Windows encoding)); "
                          "fix: save it as UTF-8 / 请另存为 UTF-8 编码 (Notepad: Save As, Encoding: UTF-8)")


def test_gbk_calibrate_cli_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n')
    f = write(tmp_path, "# 夜班\n32.2,5.0,36.7\n".encode("gbk"))
    assert cli.main(["calibrate", "--config", str(site), "--pairs", str(f), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 1: not UTF-8 text" in err and "Traceback" not in err


def test_a_fourth_column_without_header_is_refused_not_dropped(tmp_path: Path) -> None:
    f = write(tmp_path, b"32.2,5.0,36.7\n33.4,12.0,36.8,36.9\n")
    assert refused(f) == (f"{f} line 2: 4 columns where 3 are named (got '33.4,12.0,36.8,36.9'); fix: one pair per "
                          "line, object_c,ambient_c,reference_c in °C, or a header line naming every column (other "
                          "named columns are ignored)")


def test_a_named_extra_column_is_ignored(tmp_path: Path) -> None:
    f = write(tmp_path, b"time,object_c,ambient_c,reference_c,note\n06:10,32.2,5.0,36.7,x\n11:00,33.4,12,36.8,\n"
              b"20:30,34.6,19.0,36.6,y\n")
    assert read_pairs_csv(f) == PAIRS


def test_decimal_commas_split_into_columns_are_named(tmp_path: Path) -> None:
    """Before: `33,1,24,0,36,8` read as 33, 1, 24 and a range error about "reference 24"."""
    f = write(tmp_path, b"object_c,ambient_c,reference_c\n33,1,24,0,36,8\n")
    assert refused(f) == (f"{f} line 2: looks like decimal commas split into 6 columns (got '33,1,24,0,36,8'); fix: "
                          "write 33.1 with a dot, or separate the columns with ';'")


def test_semicolons_with_decimal_commas_as_a_european_excel_saves_them(tmp_path: Path) -> None:
    f = write(tmp_path, b"sep=;\r\nobject_c;ambient_c;reference_c\r\n32,2;5,0;36,7\r\n33,4;12;36,8\r\n"
              b"34,6;19,0;36,6\r\n")
    assert read_pairs_csv(f) == PAIRS
    g = write(tmp_path, b"32,2;5,0;36,7\n33,4;12;36,8\n34,6;19;36,6\n", "plain.csv")
    assert read_pairs_csv(g) == PAIRS


def test_tabs_as_copied_from_a_spreadsheet(tmp_path: Path) -> None:
    f = write(tmp_path, b"object_c\tambient_c\treference_c\n32.2\t5.0\t36.7\n33.4\t12\t36.8\n34.6\t19.0\t36.6\n")
    assert read_pairs_csv(f) == PAIRS


def test_a_quoted_decimal_comma_in_a_comma_file(tmp_path: Path) -> None:
    f = write(tmp_path, b'"32,2","5,0","36,7"\n')
    assert read_pairs_csv(f) == [Pair(32.2, 5.0, 36.7)]


def test_an_implausible_pair_still_names_its_line(tmp_path: Path) -> None:
    f = write(tmp_path, codecs.BOM_UTF8 + b"# shift\r\n32.2,5.0,36.7\r\n32.2,5.0,367\r\n")
    assert refused(f).startswith(f"{f} line 3: reference 367.0 °C outside 34.0..42.5")


def test_a_directory_is_one_line(tmp_path: Path) -> None:
    assert refused(tmp_path).startswith(f"cannot read {tmp_path} (Is a directory); fix: give the path of a CSV file")


def test_the_excel_file_calibrates_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.toml"
    site.write_bytes(codecs.BOM_UTF8 + b'[checkpoint]\r\nmode = "simulated"\r\n[simulation]\r\nbootstrap = true\r\n')
    rows = [(32.2, 5.0, 36.7), (33.9, 12.0, 36.8), (35.2, 19.0, 36.6), (36.0, 25.0, 36.9)]
    f = write(tmp_path, codecs.BOM_UTF8 + b"object_c;ambient_c;reference_c\r\n"
              + b"".join(f"{o};{a};{r}\r\n".replace(".", ",").encode() for o, a, r in rows))
    assert cli.main(["calibrate", "--config", str(site), "--pairs", str(f), "--version", "site-1"]) == 0
    assert "written to" in capsys.readouterr().out
    from scanner.config import load_config

    th = load_config(site).thermometer
    assert th.calibration_version == "site-1" and th.offset_c != 0.0


# -- issue 12 leftovers: every bad row at once, a file without rows named -----------------------------


def test_every_bad_row_is_reported_not_only_the_first(tmp_path: Path) -> None:
    """Before: stopped at line 2; the person fixed one row per run."""
    f = write(tmp_path, b"object_c,ambient_c,reference_c\n32.2,5.0,x\n33.4,12.0,36.8\n33,1,24,0,36,8\n"
              b"32.2,5.0,367\n")
    assert refused(f).splitlines() == [
        f"{f}: 3 bad rows, fix each one:",
        f"  {f} line 2: expected three numbers object_c,ambient_c,reference_c, each finite (value: not a number "
        "(got 'x')); fix: one pair per line, object_c,ambient_c,reference_c in °C",
        f"  {f} line 4: looks like decimal commas split into 6 columns (got '33,1,24,0,36,8'); fix: write 33.1 with a "
        "dot, or separate the columns with ';'",
        f"  {f} line 5: reference 367.0 °C outside 34.0..42.5" + refused(f).splitlines()[3].split("42.5", 1)[1],
    ]


def test_more_than_twenty_bad_rows_are_counted(tmp_path: Path) -> None:
    f = write(tmp_path, b"object_c,ambient_c,reference_c\n" + b"x,y,z\n" * 25)
    lines = refused(f).splitlines()
    assert lines[0] == f"{f}: 25 bad rows, fix each one:" and len(lines) == 22
    assert lines[-1] == f"  {f}: 5 more bad row(s) not shown"


@pytest.mark.parametrize(("data", "got"), [(b"", "an empty file"), (b"\xef\xbb\xbfobject_c,ambient_c,reference_c\r\n",
                                                                      "only a header")])
def test_a_file_without_data_rows_names_the_file(tmp_path: Path, data: bytes, got: str) -> None:
    """Before: no pairs and a fit error that named no file."""
    f = write(tmp_path, data)
    assert refused(f) == (f"{f}: no data rows (got {got}); fix: one pair per line, object_c,ambient_c,reference_c "
                          "in °C, e.g. 32.2,5.0,36.7")
