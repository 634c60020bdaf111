"""Issue 10 item 9: `check-config` refuses exactly what `run` refuses, before anything starts, in
the config's one-line format; the same lines from both commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scanner import cli
from scanner.config import load_config
from scanner.credentials import KeySet
from scanner.errors import ConfigError
from scanner.preflight import SecretFileError, preflight, read_pin, read_secret

ROOT = Path(__file__).resolve().parents[1]


def site(tmp_path: Path, keyset: KeySet, extra: str = "", *, sync: bool = False) -> Path:
    """A simulated lane with real keys (no bootstrap) plus `extra` sections."""
    shutil.copytree(keyset.directory, tmp_path / "keys", dirs_exist_ok=True)
    (tmp_path / "frames").mkdir(exist_ok=True)
    f = tmp_path / "site.toml"
    f.write_text(f"""[checkpoint]
mode = "simulated"
[camera]
replay_path = "{tmp_path}/frames"
[trust]
trust_list = "{tmp_path}/keys/trust-list.cose"
anchor_cert = "{tmp_path}/keys/anchor.pem"
[store]
path = "{tmp_path}/data/o.db"
[clock]
trust = "always"
{extra}""")
    return f


def check(f: Path) -> tuple[list[str], list[str]]:
    found = preflight(load_config(f))
    return found.problems, found.warnings


def line_of(f: Path, key: str) -> int:
    return next(n for n, line in enumerate(f.read_text().splitlines(), 1) if line.startswith(key))


def cli_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_a_good_site_has_no_findings(tmp_path: Path, keyset: KeySet) -> None:
    assert check(site(tmp_path, keyset)) == ([], [])


def test_staff_without_pin_file_same_line_from_check_config_and_run(tmp_path: Path, keyset: KeySet) -> None:
    f = site(tmp_path, keyset, f'[staff]\nenabled = true\npin_file = "{tmp_path}/no-pin"\n')
    n = line_of(f, "pin_file")
    want = (f"  line {n}: staff.pin_file: cannot read {tmp_path}/no-pin (No such file or directory); fix: write a "
            "PIN of 6 or more characters into it, chmod 600, owned by the service user")
    checked = cli_run("check-config", str(f))
    assert checked.returncode == 2 and checked.stderr.splitlines() == [f"{f}: 1 problem(s) / 配置错误:", want]
    ran = cli_run("run", "--config", str(f), "--duration", "1")
    assert ran.returncode == 2 and ran.stderr.splitlines()[-2:] == checked.stderr.splitlines()
    assert not (tmp_path / "data" / "o.db").exists()  # refused before anything started
    assert "None:" not in ran.stderr and "Traceback" not in ran.stderr


@pytest.mark.parametrize(("content", "message"), [
    ("", "the PIN in {f} is shorter than 6 characters (got 0)"),
    ("1234\n", "the PIN in {f} is shorter than 6 characters (got 4)"),
    ("  12345 \n", "the PIN in {f} is shorter than 6 characters (got 5)"),
])
def test_empty_or_short_pin(tmp_path: Path, keyset: KeySet, content: str, message: str) -> None:
    pin = tmp_path / "pin"
    pin.write_text(content)
    pin.chmod(0o600)
    f = site(tmp_path, keyset, f'[staff]\nenabled = true\npin_file = "{pin}"\n')
    problems, _ = check(f)
    assert problems == [f"line {line_of(f, 'pin_file')}: staff.pin_file: " + message.format(f=pin)
                        + "; fix: write a PIN of 6 or more characters into it"]


def test_pin_readable_by_others_is_a_warning_not_an_error(tmp_path: Path, keyset: KeySet,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pin = tmp_path / "pin"
    pin.write_text("482913\n")
    pin.chmod(0o644)
    f = site(tmp_path, keyset, f'[staff]\nenabled = true\npin_file = "{pin}"\n')
    problems, warnings = check(f)
    assert problems == []
    assert warnings == [f"line {line_of(f, 'pin_file')}: staff.pin_file: {pin} is readable by other users "
                        f"(mode 0644); fix: chmod 600 {pin}"]
    assert cli.main(["check-config", str(f)]) == 0
    out = capsys.readouterr()
    assert "OK" in out.out and "warning: line" in out.err
    pin.chmod(0o600)
    assert check(f) == ([], [])
    assert read_pin(load_config(f)) == "482913"


def test_api_and_upload_tokens(tmp_path: Path, keyset: KeySet) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    f = site(tmp_path, keyset, f'[sync]\nserver_url = "https://example.org"\n[api]\nenabled = true\n'
                               f'token_file = "{tmp_path}/missing"\n[upload]\nenabled = true\ntoken_file = "{short}"\n')
    problems, _ = check(f)
    assert len(problems) == 2
    api_line = line_of(f, f'token_file = "{tmp_path}/missing')
    assert problems[0].startswith(f"line {api_line}: api.token_file: cannot read {tmp_path}/missing (No such "
                                  "file or directory)")
    assert "upload.token_file: the token in" in problems[1] and "shorter than 16 characters (got 3)" in problems[1]


def test_unset_credentials_directory(tmp_path: Path, keyset: KeySet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    f = site(tmp_path, keyset, '[staff]\nenabled = true\npin_file = "$CREDENTIALS_DIRECTORY/staff-pin"\n')
    problems, _ = check(f)
    assert len(problems) == 1 and "staff.pin_file: $CREDENTIALS_DIRECTORY is not set" in problems[0]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "staff-pin").write_text("9182736\n")
    (creds / "staff-pin").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))  # as systemd's LoadCredential= sets it
    assert check(f) == ([], [])


def test_trust_files(tmp_path: Path, keyset: KeySet) -> None:
    f = site(tmp_path, keyset)
    (tmp_path / "keys" / "trust-list.cose").unlink()
    problems, _ = check(f)
    assert len(problems) == 1 and problems[0].startswith(f"line {line_of(f, 'trust_list')}: trust.trust_list: "
                                                         "trust list not found")
    # with the sync on, `run` starts without it (the sync fetches one): a warning, not a refusal
    f = site(tmp_path, keyset, '[sync]\nenabled = true\nserver_url = "https://example.org"\n'
                               f'state_dir = "{tmp_path}/state"\n')
    (tmp_path / "keys" / "trust-list.cose").unlink()
    problems, warnings = check(f)
    assert problems == [] and len(warnings) == 1 and "trust.trust_list: trust list not found" in warnings[0]
    (tmp_path / "keys" / "anchor.pem").write_text("not a certificate")
    problems, _ = check(f)
    assert len(problems) == 1 and "trust.anchor_cert: anchor certificate" in problems[0] and "PEM or DER" in problems[0]


def test_directories_and_tls(tmp_path: Path, keyset: KeySet) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    token.chmod(0o600)
    f = site(tmp_path, keyset, f'[sync]\nenabled = true\nserver_url = "https://example.org"\n'
                               f'state_dir = "{blocker}/state"\nca_bundle = "{tmp_path}/no-ca.pem"\n'
                               f'[api]\nenabled = true\ntoken_file = "{token}"\ntls_cert = "{bad_pem}"\n'
                               f'tls_key = "{bad_pem}"\n')
    text = f.read_text().replace(f'path = "{tmp_path}/data/o.db"', f'path = "{blocker}/sub/o.db"')
    f.write_text(text)
    problems, _ = check(f)
    keys = [p.split(": ")[1] for p in problems]
    assert keys == ["store.path", "sync.state_dir", "sync.ca_bundle", "api.tls_cert"], problems
    assert "is not a directory" in problems[0] and "fix:" in problems[0]


def test_missing_replay_frames(tmp_path: Path, keyset: KeySet) -> None:
    f = site(tmp_path, keyset)
    (tmp_path / "frames").rmdir()
    problems, _ = check(f)
    assert len(problems) == 1 and "camera.replay_path: not found" in problems[0]


def test_read_secret_is_one_line_for_every_key(tmp_path: Path) -> None:
    for key in ("staff.pin_file", "api.token_file", "upload.token_file"):
        with pytest.raises(SecretFileError) as e:
            read_secret(str(tmp_path / "nothing"), key)
        assert e.value.problems[0].startswith(f"{key}: cannot read ") and "\n" not in str(e.value)


def test_a_config_error_without_a_path_names_the_config_not_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(args: object) -> int:
        raise ConfigError(["staff.port: cannot listen on 0.0.0.0:80 (Permission denied); fix: choose a free port"])

    monkeypatch.setattr(cli, "_cmd_check_config", refuse)
    assert cli.main(["check-config", str(tmp_path / "x.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'x.toml'}: 1 problem(s)") and "None" not in err


def test_text_only_skips_the_files(tmp_path: Path) -> None:
    site = tmp_path / "highway-exit.toml"  # the shipped example with its ids set, as a technician would
    site.write_text((ROOT / "config" / "highway-exit.toml").read_text(encoding="utf-8").replace("CHANGE_ME", "T1"),
                    encoding="utf-8")
    r = cli_run("check-config", str(site))
    assert r.returncode == (0 if os.path.exists("/etc/checkpoint-scanner/anchor.crt") else 2)
    r = cli_run("check-config", "--text-only", str(site))
    assert r.returncode == 0 and "real devices, files not checked" in r.stdout
