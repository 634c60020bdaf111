"""Issue 12 item 13 and the secret-file half of item 11: what the CLI answers to a mistyped path,
an unknown self-test, a red code, and what the help texts say."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from scanner import cli
from scanner.credentials import KeySet
from scanner.preflight import read_secret


def verify(keyset: KeySet, *args: str) -> int:
    return cli.main(["codes", "verify", "--keys", str(keyset.directory), *args])


def issue(keyset: KeySet, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["codes", "issue", *args[:1], "--signer-dir", str(keyset.directory), *args[1:]]) == 0
    return capsys.readouterr().out.strip()


# -- codes verify ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["photo.png", "shots/gate3.JPG", "./code", "~/code.jpeg"])
def test_verify_on_a_mistyped_path_says_the_file_does_not_exist(keyset: KeySet, capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path, name: str) -> None:
    """Before: "not a health code", exit 1, like an invalid code."""
    assert verify(keyset, name) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == (f"error: no such file: {name}; fix: check the path (the image must exist), "
                                         "or give the code text in quotes\n")


def test_verify_on_a_directory(keyset: KeySet, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert verify(keyset, str(tmp_path)) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path} is a directory; fix: give an image file in it, or the "
                                       "code text\n")


def test_text_that_is_no_code_is_still_verified_as_text(keyset: KeySet, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify(keyset, "https://pay.example.com/qr/123") == 1
    out = capsys.readouterr().out
    assert "FORMAT_UNSUPPORTED" in out
    assert ("闸机 Gate:     不是码，闸机忽略，继续等待健康码 / not a code: the gate ignores it and waits for a health "
            "code") in out


def test_red_code_says_what_the_gate_would_decide(keyset: KeySet, capsys: pytest.CaptureFixture[str]) -> None:
    red = issue(keyset, capsys, "health", "--colour", "red")
    assert verify(keyset, red) == 0  # the signature is valid: that is what verify checks
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "结果 Result:   有效 VALID"
    assert out[-1] == "闸机 Gate:     DENY 禁止通行: HEALTH_RED 健康码红码 / health code is red"


def test_green_code_passes_with_a_normal_temperature(keyset: KeySet, capsys: pytest.CaptureFixture[str]) -> None:
    green = issue(keyset, capsys, "health", "--colour", "green")
    assert verify(keyset, green) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "闸机 Gate:     PASS 通行: OK 核验通过 / all checks passed (体温正常时 / with a normal temperature)")


def test_a_code_from_an_unknown_signer_is_review(keyset: KeySet, capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert cli.main(["codes", "keygen", str(other)]) == 0
    capsys.readouterr()
    text = issue(keyset, capsys, "health")
    assert cli.main(["codes", "verify", "--keys", str(other), text]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "闸机 Gate:     REVIEW 工作人员核验: UNKNOWN_SIGNER 签发机构未知，请人工核验 / unknown signer: staff check "
        "(体温正常时 / with a normal temperature)")


def test_residence_code_says_it_needs_a_health_code(keyset: KeySet, capsys: pytest.CaptureFixture[str]) -> None:
    text = issue(keyset, capsys, "residence", "--village", "330381001001")
    assert verify(keyset, text) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "闸机 Gate:     本村（330381001001）闸机接受此安居码，另需绿码和正常体温 / accepted at a village gate of "
        "330381001001; a green health code and a normal temperature are still needed")


# -- selftest --only --------------------------------------------------------------------------


def test_selftest_only_with_a_typo_lists_the_checks_and_exits_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Before: ran nothing and exited 0."""
    f = tmp_path / "site.toml"
    f.write_text('[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n')
    assert cli.main(["selftest", "--config", str(f), "--only", "thermometr"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith("error: --only thermometr names no check; fix: one of config, thermometer.bus, ")
    assert "camera.opens" in cap.err and cap.err.count("\n") == 1


def test_selftest_only_with_a_group_prefix_still_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "site.toml"
    f.write_text('[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n')
    assert cli.main(["selftest", "--config", str(f), "--only", "config"]) == 0
    assert "PASS 通过  config" in capsys.readouterr().out


# -- help texts -------------------------------------------------------------------------------


def help_of(*command: str) -> str:
    """`checkpoint-scanner COMMAND --help`, in this process (argparse prints it and exits 0)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli.main([*command, "--help"])
    assert e.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("command", [(), ("run",), ("demo",), ("check-config",), ("decode",), ("codes",),
                                     ("codes", "verify"), ("codes", "bundle", "status"), ("queue",),
                                     ("queue", "export"), ("pull",), ("calibrate",), ("selftest",)])
def test_help_speaks_to_technicians(command: tuple[str, ...]) -> None:
    text = help_of(*command)
    for jargon in ("thin CLI", "thin layer", "Thin layer", "design card", "CODES" + ".md", "sqlite-utils style",
                   "see above"):
        assert jargon not in text, (command, jargon)


@pytest.mark.parametrize("command", [("run",), ("demo",), ("pull",), ("queue",), ("calibrate",), ("selftest",)])
def test_every_command_shows_examples_of_itself(command: tuple[str, ...]) -> None:
    text = help_of(*command)
    examples = text[text.index("examples:"):].splitlines()[1:]
    lines = [x.strip() for x in examples if x.strip().startswith("checkpoint-scanner ")]
    assert lines and all(x.startswith(f"checkpoint-scanner {command[0]}") for x in lines), (command, lines)


# -- secret files (item 11) --------------------------------------------------------------------


def test_a_pin_saved_with_a_bom_is_the_pin_without_it(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_bytes(codecs.BOM_UTF8 + b"482913\r\n")
    pin.chmod(0o600)
    s = read_secret(str(pin), "staff.pin_file")
    assert s.value == "482913" and s.warning == ""


@pytest.mark.parametrize(("mode", "what"), [(0o644, "readable"), (0o604, "readable"), (0o620, "writable"),
                                            (0o666, "readable and writable")])
def test_a_pin_file_others_can_read_or_write_is_a_warning(tmp_path: Path, mode: int, what: str) -> None:
    pin = tmp_path / "pin"
    pin.write_text("482913\n")
    pin.chmod(mode)
    assert read_secret(str(pin), "staff.pin_file").warning == (
        f"staff.pin_file: {pin} is {what} by other users (mode {mode:04o}); fix: chmod 600 {pin}")


def test_a_gbk_pin_file_is_one_line(tmp_path: Path) -> None:
    from scanner.preflight import SecretFileError

    pin = tmp_path / "pin"
    pin.write_bytes("口令482913".encode("gbk"))
    with pytest.raises(SecretFileError) as e:
        read_secret(str(pin), "staff.pin_file")
    assert e.value.problems == [f"staff.pin_file: {pin} is not UTF-8 text; fix: write a PIN of 6 or more characters "
                                "into it, save it as UTF-8 / 请另存为 UTF-8 编码 (Notepad: Save As, Encoding: UTF-8)"]



# -- issue 12 leftovers -------------------------------------------------------------------------


SIM = '[checkpoint]\nmode = "simulated"\n[simulation]\nbootstrap = true\n'


def test_verify_without_keys_on_a_mistyped_path_names_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "no trust data", which sent the person after the wrong option."""
    assert cli.main(["codes", "verify", "shots/gate3.png"]) == 2
    assert capsys.readouterr().err.startswith("error: no such file: shots/gate3.png; fix: check the path")


def test_verify_help_shows_the_paths_a_device_uses() -> None:
    text = help_of("codes", "verify")
    assert "/var/lib/checkpoint-scanner/trust/trust-list.cose" in text and "/etc/checkpoint-scanner/anchor.crt" in text
    assert "/var/lib/checkpoint/" not in text and "/etc/checkpoint/" not in text


def test_selftest_only_empty_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `--only ""` ran every check."""
    f = tmp_path / "site.toml"
    f.write_text(SIM)
    assert cli.main(["selftest", "--config", str(f), "--only", ""]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith('error: --only "" is empty') and cap.err.count("\n") == 1


def test_selftest_only_in_capitals_runs_the_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "site.toml"
    f.write_text(SIM)
    assert cli.main(["selftest", "--config", str(f), "--only", "CONFIG"]) == 0
    assert "PASS 通过  config" in capsys.readouterr().out


def test_top_help_counts_the_demo_people_and_kiosk_help_has_no_source_path() -> None:
    assert "14 simulated people" in help_of() and "12+" not in help_of()
    kiosk = help_of("kiosk")
    assert "scanner/reasons.py" not in kiosk and "--reason list" in kiosk


@pytest.mark.parametrize(("command", "title"), [(("pull",), "拉取记录 / "), (("check-config",), "检查配置文件 / "),
                                                (("decode",), "识读二维码图片 / "), (("codes",), "健康码工具 / "),
                                                (("queue",), "上报队列 / "), (("kiosk",), "屏幕预览 / ")])
def test_help_starts_with_a_chinese_title(command: tuple[str, ...], title: str) -> None:
    text = help_of(*command)
    assert text.split("\n\n")[1].startswith(title), text[:300]


def test_kiosk_reason_list_prints_the_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["kiosk", "--reason", "list"])
    assert e.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert any(x.split()[:2] == ["HEALTH_RED", "健康码红码"] for x in out)


@pytest.mark.parametrize(("name", "magic"), [("k.jpg", b"\xff\xd8\xff"), ("k.PNG", b"\x89PNG")])
def test_kiosk_writes_the_format_its_name_says(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                              magic: bytes) -> None:
    """Before: k.jpg held a PNG."""
    out = tmp_path / name
    assert cli.main(["kiosk", "--render", "PASS", "--size", "320x240", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


def test_kiosk_refuses_a_name_without_an_image_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kiosk", "--render", "PASS", "--out", str(tmp_path / "k.gif")]) == 1
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'k.gif'}: the name must end with .png or .jpg")
    assert not (tmp_path / "k.gif").exists()


def test_a_full_stdout_is_one_line_with_a_fix(tmp_path: Path) -> None:
    """Before: "error: [Errno 28] No space left on device"."""
    import subprocess
    import sys

    png = str(tmp_path / "k.png")
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-c", "import sys; from scanner import cli; sys.exit(cli.main(['kiosk', "
                            f"'--render', 'PASS', '--size', '320x240', '--out', {png!r}]))"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == ("error: cannot write the output (no space left on the device); fix: "
                                              "free space where the output goes, or redirect it to another file\n")
