"""Payload hashes are keyed with a per-device secret (scanner/device_secret.py): a log line for a
QR holding an ID number cannot be matched by hashing candidate ID numbers, the secret file is
0600, and two devices give different hashes for the same provincial code."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from steplane import StepLane, step_config

from scanner import device_secret
from scanner.credentials import KeySet
from scanner.errors import ScannerError

ID_NUMBER = "11010519491231002X"  # the sample ID number of GB 11643 (not a real person)
RAHC = "RAHC:0123456789ABCDEFGHIJ4242"  # a provincial code (its layout is not public)


@pytest.fixture(autouse=True)
def _restore_process_key() -> Any:
    before = device_secret.current()
    yield
    device_secret.install(before)


def _id_candidates(n: int = 1000) -> list[str]:
    """What an attacker tries: the same region and birth date, every sequence number, each
    with its check digit (GB 11643: ISO 7064 MOD 11-2)."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    out = []
    for seq in range(n):
        body = f"11010519491231{seq:03d}"
        check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
        out.append(body + check)
    return out


def test_the_candidate_list_holds_the_id_number() -> None:
    assert ID_NUMBER in _id_candidates()  # the check digit rule is right: the attack would work unkeyed


def test_a_logged_id_number_cannot_be_matched_without_the_key(tmp_path: Path, trust: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scanner.lane")
    with StepLane(tmp_path, trust) as lane:
        lane.codes(ID_NUMBER)
        lane.run(0.2)
    hashes = re.findall(r"event=code_seen code_hash=([0-9a-f]+) ", caplog.text)
    assert len(hashes) == 1, caplog.text
    logged = hashes[0]
    assert ID_NUMBER not in caplog.text
    key = (tmp_path / "device-secret").read_bytes()
    assert len(key) == 32
    # the attack that used to work: SHA-256 prefixes of every candidate; none matches now
    plain = {hashlib.sha256(c.encode()).hexdigest()[:16] for c in _id_candidates()}
    assert logged not in plain
    assert logged != hashlib.sha256(ID_NUMBER.encode()).hexdigest()[:16]
    # with the device's key (and only with it) the line is the ID number's
    assert logged == hmac.new(key, ID_NUMBER.encode(), hashlib.sha256).hexdigest()[:16]


def test_the_secret_file_is_0600_32_bytes_and_kept(tmp_path: Path) -> None:
    old = os.umask(0o000)  # whatever the umask, the file is 0600
    try:
        s = device_secret.load_or_create(tmp_path / "device-secret")
    finally:
        os.umask(old)
    st = (tmp_path / "device-secret").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    again = device_secret.load_or_create(tmp_path / "device-secret")
    assert again.digest(b"x") == s.digest(b"x")  # the same key after a restart
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device-secret"]  # no temp file left


def test_racing_starts_all_read_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "device-secret"
    got: list[bytes] = []
    go = threading.Barrier(8)

    def start() -> None:
        go.wait(timeout=10)
        got.append(device_secret.load_or_create(path).digest(b"probe"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(got) == 8 and len(set(got)) == 1


def test_a_readable_secret_is_narrowed_to_0600(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "device-secret"
    path.write_bytes(b"k" * 32)
    path.chmod(0o644)
    s = device_secret.read(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "device_secret_narrowed" in caplog.text and s.source == str(path)


@pytest.mark.parametrize("content", [b"", b"short", b"k" * 33])
def test_a_damaged_secret_is_one_line_naming_file_and_fix(tmp_path: Path, content: bytes) -> None:
    """`read` (checkpoint-scanner decode --device-secret FILE) still refuses a damaged file."""
    path = tmp_path / "device-secret"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ScannerError) as e:
        device_secret.read(path)
    msg = str(e.value)
    assert str(path) in msg and "fix: delete" in msg and "\n" not in msg


@pytest.mark.parametrize("content", [b"", b"short", b"k" * 33])
def test_the_lane_replaces_an_emptied_secret_loudly_instead_of_not_starting(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Attacker input (F7): `: > device-secret` kept the lane from starting (a restart loop under
    systemd) over a key that only makes log hashes unguessable. Now it is replaced, with an ERROR."""
    path = tmp_path / "device-secret"
    path.write_bytes(content)
    caplog.set_level(logging.ERROR, logger="scanner.device_secret")
    s = device_secret.load_or_create(path)
    data = path.read_bytes()
    assert len(data) == 32 and data != content and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert s.digest(b"x") == hmac.new(data, b"x", hashlib.sha256).digest()[:16]  # the key on disk is the one used
    assert f"event=device_secret_replaced path={path} had_bytes={min(len(content), 33)}" in caplog.text
    assert "fix:" in caplog.text and sorted(p.name for p in tmp_path.iterdir()) == ["device-secret"]
    again = device_secret.load_or_create(path)  # kept from now on
    assert again.digest(b"x") == s.digest(b"x")


def test_a_lane_starts_with_an_emptied_secret(tmp_path: Path, trust: Any) -> None:
    (tmp_path / "device-secret").write_bytes(b"")
    with StepLane(tmp_path, trust) as lane:
        lane.codes(ID_NUMBER)
        lane.run(0.2)
    assert len((tmp_path / "device-secret").read_bytes()) == 32


def test_an_unreadable_secret_still_stops_the_lane(tmp_path: Path) -> None:
    (tmp_path / "device-secret").mkdir()  # not a file: replacing it could hide a real mistake
    with pytest.raises(ScannerError, match="fix:"):
        device_secret.load_or_create(tmp_path / "device-secret")


def test_check_config_reports_the_secret_in_one_line(tmp_path: Path, keyset: KeySet) -> None:
    from test_preflight import check, site

    f = site(tmp_path, keyset)
    (tmp_path / "data").mkdir()
    secret = tmp_path / "data" / "device-secret"
    assert check(f) == ([], [])  # absent: made at the first start
    secret.write_bytes(b"")
    problems, warnings = check(f)
    assert problems == [] and len(warnings) == 1
    assert str(secret) in warnings[0] and "holds 0 bytes" in warnings[0] and "fix:" in warnings[0]
    assert warnings[0].startswith("line ") and "\n" not in warnings[0]
    secret.unlink()
    secret.mkdir()
    problems, warnings = check(f)
    assert len(problems) == 1 and str(secret) in problems[0] and "fix:" in problems[0]


def test_an_unwritable_state_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScannerError) as e:
        device_secret.load_or_create(tmp_path / "missing-dir" / "device-secret")
    assert "cannot create device secret" in str(e.value) and "fix:" in str(e.value)


def test_two_devices_give_different_hashes_for_one_online_code(tmp_path: Path, trust: Any) -> None:
    token_hashes = []
    for name in ("gate-a", "gate-b"):
        (tmp_path / name).mkdir()
        cfg = step_config(tmp_path / name)
        cfg = replace(cfg, sync=replace(cfg.sync, online_patterns=(r"RAHC:[0-9A-Z]{20,64}",)))
        with StepLane(tmp_path / name, trust, cfg) as lane:  # no online check: REVIEW ONLINE_UNAVAILABLE
            lane.codes(RAHC)
            lane.skin(36.6)
            lane.run(3.0)
            rows = lane.records()
        assert rows and rows[0]["reasons"] and "ONLINE_UNAVAILABLE" in rows[0]["reasons"], rows
        key = (tmp_path / name / "device-secret").read_bytes()
        assert rows[0]["token_hash"] == hmac.new(key, RAHC.encode(), hashlib.sha256).hexdigest()[:32]
        token_hashes.append(rows[0]["token_hash"])
    assert token_hashes[0] != token_hashes[1]
    assert hashlib.sha256(RAHC.encode()).hexdigest()[:32] not in token_hashes


def test_signed_codes_keep_the_unkeyed_token_hash_the_centre_joins_on(tmp_path: Path, trust: Any,
                                                                      codes: Any) -> None:
    from scanner.clock import Clock
    from scanner.credentials.state import TrustState

    code, cfg = codes.hc("green"), step_config(tmp_path)
    hashes = []
    for _ in range(2):  # two devices: two different keys
        device_secret.install(device_secret.DeviceSecret.ephemeral())
        v = TrustState(trust).check(code, Clock("always"), cfg)
        assert v.code == "VALID" and v.token_hash is not None
        hashes.append(v.token_hash)
    # SHA-256(iss || cti)[:16] (tests/test_credentials.py checks the formula): the same everywhere
    assert hashes[0] == hashes[1]


def test_cli_decode_with_the_device_secret_prints_the_gates_hash(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import cv2
    from qrframes import make_frame

    from scanner.cli import main

    secret = device_secret.load_or_create(tmp_path / "device-secret")
    img = tmp_path / "id.png"
    cv2.imwrite(str(img), make_frame(ID_NUMBER))
    assert main(["decode", "--device-secret", str(tmp_path / "device-secret"), str(img)]) == 0
    out = capsys.readouterr().out
    assert f"hash={secret.hexdigest(ID_NUMBER.encode(), 16)}" in out
    assert ID_NUMBER not in out and hashlib.sha256(ID_NUMBER.encode()).hexdigest()[:16] not in out
