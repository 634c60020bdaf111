"""`checkpoint-scanner decode [--json] IMAGE...`: one line per image, hashes never contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qrframes import blank_frame, encode_jpeg, encode_png, make_frame

from scanner.cli import main
from scanner.service import payload_key

SECRET = "陈*聪 330381199001011234"  # a name and an ID number: must never be printed


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def images(tmp_path: Path, codes: object) -> dict[str, str]:
    hc = codes.hc()  # type: ignore[attr-defined]
    return {
        "credential": write(tmp_path, "hc.png", encode_png(make_frame(hc, module_px=3))),
        "two": write(tmp_path, "two.jpg", encode_jpeg(make_frame(b"HC1:LEFT-0001", SECRET, module_px=4))),
        "blank": write(tmp_path, "blank.png", encode_png(blank_frame())),
        "missing": str(tmp_path / "nope.png"),
        "hc_text": hc,
    }


def test_one_line_per_image_in_order(images: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", images["credential"], images["two"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith(images["credential"] + ": 1 code: ") and "ZHC1:" in out[0]
    assert f"hash={payload_key(images['hc_text'].encode())}" in out[0]
    assert out[1].startswith(images["two"] + ": 2 codes: ") and "HC1:" in out[1] and "text" in out[1]
    assert SECRET not in "\n".join(out) and "330381199001011234" not in "\n".join(out)
    assert images["hc_text"] not in "\n".join(out)


def test_json_lines_and_exit_codes(images: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["decode", "--json", images["credential"], images["blank"], images["missing"]])
    assert rc == 2  # an unreadable file is the worst outcome
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["image"] for d in lines] == [images["credential"], images["blank"], images["missing"]]
    [code] = lines[0]["codes"]
    assert code["prefix"] == "ZHC1:" and code["text"] is True and code["symbology"] == "QRCODE"
    assert code["hash"] == payload_key(images["hc_text"].encode()) and len(code["polygon"]) == 4
    assert lines[1]["codes"] == []
    assert "give a PNG, JPEG or BMP file" in lines[2]["error"]
    assert main(["decode", images["blank"]]) == 1
    assert "no code found / 未识别到二维码" in capsys.readouterr().out


def test_engine_zbar_reads_too(images: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--engine", "zbar", images["two"]]) == 0
    assert ": 2 codes: " in capsys.readouterr().out


def test_codes_verify_reads_a_photo_through_the_same_pipeline(images: dict[str, str]) -> None:
    from scanner.cli_codes import read_qr_image

    assert read_qr_image(images["credential"]) == [images["hc_text"].encode()]
