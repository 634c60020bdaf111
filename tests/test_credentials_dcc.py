"""The EU DCC public test vectors (tests/fixtures/dgc-common, vendored with their Apache-2.0
licence; see the README there) through the stages their EXPECTED* flags name. A missing flag
means "not tested"; every present flag must agree. Without the vectors this module fails at
collection: it never passes by collecting nothing.

How each flag maps onto our pipeline:
  EXPECTEDUNPREFIX          split_prefix(PREFIX) is HC1: + BASE45, else FORMAT_UNSUPPORTED
  EXPECTEDB45DECODE         Base45(BASE45) == COMPRESSED, else FORMAT_INVALID
  EXPECTEDCOMPRESSION       inflate(COMPRESSED) == COSE, else FORMAT_INVALID
  EXPECTEDVERIFY            the signature verifies with TESTCTX.CERTIFICATE, else the result is
                            FORMAT_INVALID / UNKNOWN_SIGNER / SIGNATURE_INVALID
  EXPECTEDDECODE            the signed payload's hcert equals CBOR (semantically), else not VALID
  EXPECTEDVALIDJSON         the whole chain from PREFIX yields JSON
  EXPECTEDEXPIRATIONCHECK   VALID at VALIDATIONCLOCK, else EXPIRED / NOT_YET_VALID
  EXPECTEDKEYUSAGE          VALID, else SIGNER_NOT_ALLOWED (certificate EKU vs DCC type)
  EXPECTEDSCHEMAVALIDATION  VALID, else CLAIMS_INVALID
  EXPECTEDPICTUREDECODE     2DCODE (PNG) decodes to PREFIX with OpenCV + pyzbar, else it does not
Signer fitness on certificate validity stays on for DCCs: every vector's iat/exp lie inside its
certificate's validity, so the flags do not require skipping it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest

from scanner.cli_codes import read_qr_image
from scanner.credentials import TrustStore, Verification, cose, verify
from scanner.credentials.claims import decode_claims
from scanner.credentials.envelope import (
    EnvelopeError,
    b45decode,
    cbor_loads,
    decode_text,
    inflate,
    parse_sign1,
    split_prefix,
)
from scanner.errors import CredentialError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dgc-common"
CASES = sorted(FIXTURES.glob("*.json"))
#: The vectors vendored from dgc-testdata common/2DCode/raw. Checked at import, so a missing or
#: emptied folder is a collection error, never an empty parametrisation that pytest would skip.
EXPECTED_CASES = 38
if len(CASES) < EXPECTED_CASES:
    raise RuntimeError(f"{FIXTURES}: {len(CASES)} DCC test vectors, expected {EXPECTED_CASES}: "
                       "restore tests/fixtures/dgc-common from git")
HANDLED = {
    "EXPECTEDUNPREFIX",
    "EXPECTEDB45DECODE",
    "EXPECTEDCOMPRESSION",
    "EXPECTEDVERIFY",
    "EXPECTEDDECODE",
    "EXPECTEDVALIDJSON",
    "EXPECTEDEXPIRATIONCHECK",
    "EXPECTEDKEYUSAGE",
    "EXPECTEDSCHEMAVALIDATION",
    "EXPECTEDPICTUREDECODE",
}
NOT_VERIFIED = {"FORMAT_INVALID", "UNKNOWN_SIGNER", "SIGNATURE_INVALID"}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _plain(value: Any) -> Any:
    """CBOR-decoded values as JSON-comparable ones (maps/arrays may come back immutable)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _case_flags() -> list[tuple[str, str, bool]]:
    return [
        (p.name, flag, value) for p in CASES for flag, value in _load(p)["EXPECTEDRESULTS"].items()
    ]


def _run(case: dict[str, Any]) -> Verification:
    ctx = case["TESTCTX"]
    trust = TrustStore.from_certificates([base64.b64decode(ctx["CERTIFICATE"])], ["dcc"])
    now = datetime.fromisoformat(ctx["VALIDATIONCLOCK"].replace("Z", "+00:00"))
    return verify(case["PREFIX"], trust, now)


def _hcert(prefix_text: str) -> Any:
    return _plain(decode_claims(decode_text(prefix_text).sign1.payload)[-260][1])


def test_fixtures_present_and_every_flag_handled() -> None:
    assert len(CASES) >= EXPECTED_CASES, FIXTURES
    assert len(_case_flags()) >= 63  # the flags of all files: each is one case of test_dcc_vector
    assert (FIXTURES / "LICENSE").is_file() and "Apache License" in (FIXTURES / "LICENSE").read_text()
    flags = {flag for _, flag, _ in _case_flags()}
    assert flags <= HANDLED, f"unhandled EXPECTED* flags: {flags - HANDLED}"


@pytest.mark.parametrize("name,flag,expected", _case_flags(), ids=lambda v: str(v))
def test_dcc_vector(name: str, flag: str, expected: bool) -> None:
    case = _load(FIXTURES / name)
    result = _run(case)
    assert result.kind in (None, "dcc")
    if result.ok:
        assert (result.kind, result.colour) == ("dcc", None)

    if flag == "EXPECTEDUNPREFIX":
        split = split_prefix(case["PREFIX"])
        if expected:
            assert split == ("HC1:", case["BASE45"])
        else:
            assert split is None and result.code == "FORMAT_UNSUPPORTED"

    elif flag == "EXPECTEDB45DECODE":
        if expected:
            assert b45decode(case["BASE45"]) == bytes.fromhex(case["COMPRESSED"])
        else:
            with pytest.raises(EnvelopeError):
                b45decode(case["BASE45"])
            assert result.code == "FORMAT_INVALID"

    elif flag == "EXPECTEDCOMPRESSION":
        if expected:
            assert inflate(bytes.fromhex(case["COMPRESSED"])) == bytes.fromhex(case["COSE"])
        else:
            with pytest.raises(EnvelopeError):
                inflate(bytes.fromhex(case["COMPRESSED"]))
            assert result.code == "FORMAT_INVALID"

    elif flag == "EXPECTEDVERIFY":
        if expected:
            cert = TrustStore.from_certificates(
                [base64.b64decode(case["TESTCTX"]["CERTIFICATE"])], ["dcc"]
            )
            sign1 = parse_sign1(bytes.fromhex(case["COSE"]))
            [signer] = cert.signers_for(sign1.kid)
            assert cose.verify_signature(
                sign1.alg, signer.public_key, sign1.protected_bstr, sign1.payload, sign1.signature
            )
            assert result.code not in NOT_VERIFIED | {"FORMAT_UNSUPPORTED"}
        else:
            assert result.code in NOT_VERIFIED

    elif flag == "EXPECTEDDECODE":
        if expected:
            assert _hcert(case["PREFIX"]) == _plain(cbor_loads(bytes.fromhex(case["CBOR"])))
            assert result.ok
        else:
            with pytest.raises(EnvelopeError):
                cbor_loads(bytes.fromhex(case["CBOR"]))
            assert result.code in {"CLAIMS_INVALID", "FORMAT_INVALID"}

    elif flag == "EXPECTEDVALIDJSON":
        assert expected  # the vectors only test the positive case
        assert _hcert(case["PREFIX"]) == case["JSON"]

    elif flag == "EXPECTEDEXPIRATIONCHECK":
        if expected:
            assert result.ok
        else:
            assert result.code in {"EXPIRED", "NOT_YET_VALID"}

    elif flag == "EXPECTEDKEYUSAGE":
        assert result.code == ("VALID" if expected else "SIGNER_NOT_ALLOWED")

    elif flag == "EXPECTEDSCHEMAVALIDATION":
        assert result.code == ("VALID" if expected else "CLAIMS_INVALID")

    elif flag == "EXPECTEDPICTUREDECODE":
        if "2DCODE" not in case:
            pytest.skip("no 2DCODE image in this vector (nothing to decode)")
        _check_picture(case, expected)


def _check_picture(case: dict[str, Any], expected: bool) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "code.png"
        png.write_bytes(base64.b64decode(case["2DCODE"]))
        try:
            decoded = read_qr_image(png)
        except CredentialError:
            decoded = []
    if expected:
        assert decoded == [case["PREFIX"].encode("ascii")]
    else:
        assert case["PREFIX"].encode("ascii") not in decoded


def test_co20_alg_only_in_unprotected_header() -> None:
    """CO20's protected header is empty: alg and kid come from the unprotected header."""
    case = _load(FIXTURES / "CO20.json")
    sign1 = parse_sign1(bytes.fromhex(case["COSE"]))
    assert sign1.protected == {} and sign1.alg == cose.ALG_ES256 and sign1.kid is not None
    assert _run(case).ok


def test_co28_cwt_tag_wrapping_cose_tag() -> None:
    case = _load(FIXTURES / "CO28.json")
    assert cbor2.loads(bytes.fromhex(case["COSE"])).tag == 61
    assert _run(case).ok


def test_dcc_signer_must_be_listed_for_dcc() -> None:
    case = _load(FIXTURES / "CO3.json")
    ctx = case["TESTCTX"]
    trust = TrustStore.from_certificates([base64.b64decode(ctx["CERTIFICATE"])], ["health"])
    now = datetime.fromisoformat(ctx["VALIDATIONCLOCK"].replace("Z", "+00:00"))
    assert verify(case["PREFIX"], trust, now).code == "SIGNER_NOT_ALLOWED"


def test_ps256_is_accepted_for_dcc_only() -> None:
    """CO1 is PS256 (RSA 2048): fine as HC1:, refused when relabelled as our own ZHC1: code."""
    case = _load(FIXTURES / "CO1.json")
    ctx = case["TESTCTX"]
    trust = TrustStore.from_certificates([base64.b64decode(ctx["CERTIFICATE"])], ["dcc", "health"])
    now = datetime.fromisoformat(ctx["VALIDATIONCLOCK"].replace("Z", "+00:00"))
    assert verify(case["PREFIX"], trust, now).ok
    relabelled = "ZHC1:" + case["PREFIX"][4:]
    assert verify(relabelled, trust, now).code == "SIGNATURE_INVALID"
