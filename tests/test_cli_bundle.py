"""`checkpoint-scanner codes bundle trust|status|policy`: bundles the devices accept, and
one-line errors for what a technician can get wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_codes import run

from scanner.credentials import TrustStore
from scanner.credentials.bundles import KIND_POLICY, KIND_STATUS_DIFF, KIND_STATUS_SNAPSHOT, open_bundle, parse_policy
from scanner.credentials.status import StatusIndex
from scanner.credentials.trust import load_certificate


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle") / "keys"
    assert run(["codes", "keygen", str(d)]) == 0
    return d


def test_trust_list_bundle_loads_on_a_device(keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trust.cose"
    assert run(["codes", "bundle", "trust", "--keys", str(keys), "--version", "7", "-o", str(out)]) == 0
    assert "trust list version 7 (2 signers)" in capsys.readouterr().out
    store = TrustStore.load(out, keys / "anchor.pem")
    assert store.version == 7 and len(store) == 2
    assert run(["codes", "bundle", "trust", "--anchor-key", str(keys / "anchor.key"), "--anchor-cert",
                str(keys / "anchor.pem"), "--version", "8", "--signer", f"{keys / 'health.pem'}:health,dcc:CN-X",
                "-o", str(out)]) == 0
    store = TrustStore.load(out, keys / "anchor.pem")
    signer = store.signers_for(next(iter(store._by_kid)))[0]
    assert signer.types == {"health", "dcc"} and signer.issuer == "CN-X"


def test_policy_bundle(keys: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.cose"
    assert run(["codes", "bundle", "policy", "--keys", str(keys), "--version", "3", "--fever-threshold-c", "37.0",
                "--clock-skew-s", "120", "--status-max-age-s", "3600", "-o", str(out)]) == 0
    p = parse_policy(open_bundle(out.read_bytes(), load_certificate(keys / "anchor.pem"), KIND_POLICY))
    assert (p.version, p.fever_threshold_c, p.clock_skew_s, dict(p.max_age_s)) == (3, 37.0, 120, {"status": 3600})


def test_status_snapshot_and_diff(keys: Path, tmp_path: Path) -> None:
    anchor = load_certificate(keys / "anchor.pem")
    entries = tmp_path / "s.json"
    entries.write_text(json.dumps({"revoked": ["00" * 16, "ab" * 16], "colour_updates": {"cd" * 16: 2}}))
    snap, diff = tmp_path / "snap.cose", tmp_path / "diff.cose"
    assert run(["codes", "bundle", "status", "--keys", str(keys), "--version", "4", "--in", str(entries),
                "-o", str(snap)]) == 0
    idx = StatusIndex.from_bundle(open_bundle(snap.read_bytes(), anchor, KIND_STATUS_SNAPSHOT))
    assert idx.is_revoked(bytes(16)) and idx.colour_update(bytes.fromhex("cd" * 16)) == 2 and len(idx) == 3
    entries.write_text(json.dumps({"add": {"denylisted": ["ef" * 16]}, "remove": {"revoked": ["ab" * 16]}}))
    assert run(["codes", "bundle", "status", "--keys", str(keys), "--version", "5", "--from-version", "4",
                "--total", "3", "--in", str(entries), "-o", str(diff)]) == 0
    idx = idx.apply_diff(open_bundle(diff.read_bytes(), anchor, KIND_STATUS_DIFF))
    assert idx.version == 5 and len(idx) == 3 and idx.is_denylisted(bytes.fromhex("ef" * 16))


@pytest.mark.parametrize("argv", [
    ["policy", "--version", "1", "--fever-threshold-c", "3.73"],
    ["trust", "--version", "1", "--signer", "nowhere.pem:health"],
    ["trust", "--version", "1", "--signer", "x.pem"],
    ["status", "--version", "2", "--from-version", "1"],
    ["status", "--version", "1", "--in", "missing.json"],
])
def test_mistakes_are_one_line_with_a_fix(keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          argv: list[str]) -> None:
    capsys.readouterr()
    assert run(["codes", "bundle", argv[0], "--keys", str(keys), *argv[1:], "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fix" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_no_anchor_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["codes", "bundle", "policy", "--version", "1", "-o", str(tmp_path / "o")]) == 2
    assert "--keys" in capsys.readouterr().err
