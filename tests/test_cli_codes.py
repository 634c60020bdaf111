"""`checkpoint-scanner codes ...`: keygen -> issue -> verify, as text and as a PNG photo."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scanner import cli_codes
from scanner.credentials import pseudonym


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="checkpoint-scanner")
    cli_codes.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "keys"
    assert run(["codes", "keygen", str(directory)]) == 0
    return directory


def issue(capsys: pytest.CaptureFixture[str], key_dir: Path, *extra: str) -> str:
    capsys.readouterr()
    assert run(["codes", "issue", *extra[:1], "--signer-dir", str(key_dir), *extra[1:]]) == 0
    return capsys.readouterr().out.strip()


def test_keygen_writes_private_keys(key_dir: Path) -> None:
    for name in ("anchor.key", "health.key", "residence.key", "pseudonym.secret"):
        assert os.stat(key_dir / name).st_mode & 0o777 == 0o600
    for name in ("anchor.pem", "health.pem", "residence.pem", "trust-list.cose"):
        assert (key_dir / name).is_file()


def test_keygen_refuses_to_overwrite(key_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["codes", "keygen", str(key_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fix:" in err and err.count("\n") == 1


def test_issue_and_verify_text(key_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = issue(capsys, key_dir, "health", "--colour", "yellow")
    assert text.startswith("ZHC1:") and len(text) < 350
    assert run(["codes", "verify", "--keys", str(key_dir), text]) == 0
    out = capsys.readouterr().out
    assert "有效 VALID" in out and "黄码 yellow" in out and "陈*聪" in out
    assert run(["codes", "verify", "--json", "--keys", str(key_dir), text]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["code"], doc["colour"], doc["kind"]) == ("VALID", "yellow", "health")
    assert "masked_name" not in doc
    assert (
        run(
            [
                "codes",
                "verify",
                "--json",
                "--show-personal",
                "--trust-list",
                str(key_dir / "trust-list.cose"),
                "--anchor",
                str(key_dir / "anchor.pem"),
                text,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["masked_name"] == "陈*聪"


def test_issue_png_and_verify_image(
    key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    health_png, residence_png = tmp_path / "h.png", tmp_path / "r.png"
    issue(capsys, key_dir, "health", "--png", str(health_png))
    issue(capsys, key_dir, "residence", "--village", "330381002003", "--png", str(residence_png))
    assert run(["codes", "verify", "--keys", str(key_dir), str(health_png)]) == 0
    assert "健康码" in capsys.readouterr().out
    assert run(["codes", "verify", "--json", "--keys", str(key_dir), str(residence_png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["code"], doc["kind"], doc["village"]) == ("VALID", "residence", "330381002003")


def test_id_number_becomes_a_pseudonym(key_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    number = "33038119900101123X"
    text = issue(capsys, key_dir, "health", "--id-number", number)
    assert number not in text
    run(["codes", "verify", "--json", "--show-personal", "--keys", str(key_dir), text])
    doc = json.loads(capsys.readouterr().out)
    sid = pseudonym((key_dir / "pseudonym.secret").read_bytes(), "01", number)
    assert (
        doc["subject_hash"] == hashlib.sha256(sid).digest()[:16].hex() and doc["id_tail"] == "123X"
    )


def test_verify_failures_exit_1(
    key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = issue(capsys, key_dir, "health", "--valid-hours", "1")
    assert (
        run(["codes", "verify", "--keys", str(key_dir), "--now", "2099-01-01T00:00:00Z", text]) == 1
    )
    assert "已过期 EXPIRED" in capsys.readouterr().out
    assert run(["codes", "verify", "--keys", str(key_dir), "https://pay.example/qr"]) == 1
    assert "FORMAT_UNSUPPORTED" in capsys.readouterr().out
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200), 255, np.uint8))
    assert run(["codes", "verify", "--keys", str(key_dir), str(blank)]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["codes", "verify", "ZHC1:ABC"],
        ["codes", "verify", "--keys", "/nonexistent", "ZHC1:ABC"],
        ["codes", "verify", "--keys", "K", "--trust-list", "x", "ZHC1:ABC"],
        ["codes", "issue", "health", "--signer-dir", "/nonexistent"],
        ["codes", "issue"],
        ["codes"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fix" in err and err.count("\n") == 1


def test_unreadable_image_and_bad_options(
    key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "photo.png"
    junk.write_bytes(b"not an image")
    assert run(["codes", "verify", "--keys", str(key_dir), str(junk)]) == 2
    assert run(["codes", "verify", "--keys", str(key_dir), "--now", "yesterday", "x"]) == 2
    health = ["codes", "issue", "health", "--signer-dir", str(key_dir)]
    assert run([*health, "--valid-hours", "48"]) == 2
    assert run([*health, "--region", "33"]) == 2  # self-check: would be CLAIMS_INVALID at a gate
    assert run(["codes", "keygen", str(tmp_path / "k"), "--validity-days", "0"]) == 2
    assert all(line.startswith("error: ") for line in capsys.readouterr().err.splitlines())


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["codes", "--help"],
        ["codes", "verify", "--help"],
        ["codes", "keygen", "--help"],
        ["codes", "issue", "health", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            run(argv)
        assert info.value.code == 0
        assert "example" in capsys.readouterr().out


def test_module_entry_point_round_trip(key_dir: Path, tmp_path: Path) -> None:
    """The real process: no traceback, exit codes as documented."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    base = [sys.executable, "-m", "scanner.cli_codes", "codes"]
    png = tmp_path / "code.png"
    issued = subprocess.run(
        [*base, "issue", "health", "--signer-dir", str(key_dir), "--png", str(png)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert issued.returncode == 0 and issued.stdout.startswith("ZHC1:")
    ok = subprocess.run(
        [*base, "verify", "--keys", str(key_dir), str(png)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0 and "VALID" in ok.stdout
    bad = subprocess.run(
        [*base, "verify", "--keys", str(tmp_path / "none"), "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (
        bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.startswith("error: ")
    )
