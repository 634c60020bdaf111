"""Our own signed codes (ZHC1: health, AJM1: residence): every reason code of docs/credentials.md section 4,
reached with real signatures from the issuing tools, plus trust list loading and fuzzing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.credentials import (
    REASON_CODES,
    KeySet,
    Signer,
    StatusList,
    TrustStore,
    Verification,
    cose,
    generate_keys,
    issue_code,
    issue_health,
    issue_residence,
    pseudonym,
    sign_trust_list,
    verify,
)
from scanner.credentials.envelope import EnvelopeError, inflate, parse_sign1
from scanner.credentials.trust import load_certificate, make_signer
from scanner.errors import TrustDataError

NOW = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SID = pseudonym(b"s" * 32, "01", "330381199001011234")
NAME = "陈*聪"
ALL_CODES = {
    "VALID",
    "FORMAT_UNSUPPORTED",
    "FORMAT_INVALID",
    "UNKNOWN_SIGNER",
    "SIGNATURE_INVALID",
    "SIGNER_NOT_ALLOWED",
    "NOT_YET_VALID",
    "EXPIRED",
    "CLOCK_UNTRUSTED",
    "REVOKED",
    "DENYLISTED",
    "CLAIMS_INVALID",
}
HEALTH_CLAIMS = {"v": "1", "col": 0, "sid": SID, "nm": NAME, "idt": "1234", "rg": "330381"}
RESIDENCE_CLAIMS = {
    "v": "1",
    "hid": "HZ-1",
    "vg": "330381001001",
    "grid": "G-7",
    "adr": "3幢2单元502",
    "tsid": SID,
    "nm": NAME,
    "idt": "1234",
    "vb": "安阳街道",
}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return generate_keys(tmp_path_factory.mktemp("keys"), now=NOW - timedelta(days=30))


@pytest.fixture(scope="module")
def trust(keys: KeySet) -> TrustStore:
    return TrustStore.load(keys.trust_list, keys.anchor_cert)


@pytest.fixture(scope="module")
def health(keys: KeySet) -> Signer:
    return Signer.load(keys.health_key, keys.health_cert)


@pytest.fixture(scope="module")
def residence(keys: KeySet) -> Signer:
    return Signer.load(keys.residence_key, keys.residence_cert)


@pytest.fixture(scope="module")
def rogue() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def health_code(signer: Signer, **kw: Any) -> str:
    args: dict[str, Any] = dict(
        colour="green",
        sid=SID,
        masked_name=NAME,
        id_tail="1234",
        region="330381",
        issuer="CN-330000-HC",
        iat=T - 60,
        exp=T + 23 * 3600,
        cti=b"\x01" * 8,
    )
    args.update(kw)
    return issue_health(signer, **args)


def residence_code(signer: Signer, **kw: Any) -> str:
    args: dict[str, Any] = dict(
        house_id="HZ-1",
        village="330381001001",
        grid="G-7",
        unit_label="3幢2单元502",
        tenant_sid=SID,
        masked_name=NAME,
        id_tail="1234",
        verified_by="安阳街道",
        issuer="CN-330381-JD01",
        iat=T - 60,
        nbf=T - 60,
        exp=T + 200 * 86400,
    )
    args.update(kw)
    return issue_residence(signer, **args)


def cwt(private: dict[str, Any], key: int = -65537, **over: Any) -> dict[int, Any]:
    claims: dict[int, Any] = {
        1: "CN-330000-HC",
        6: T - 60,
        4: T + 3600,
        7: b"\x02" * 8,
        key: private,
    }
    claims.update({int(k[1:]): v for k, v in over.items()})  # c5=... sets claim 5
    return claims


def craft(
    prefix: str,
    claims: Any,
    key: ec.EllipticCurvePrivateKey,
    kid: bytes | None,
    *,
    alg: Any = -7,
    protected: dict[Any, Any] | None = None,
    unprotected: dict[Any, Any] | None = None,
    sig: Any = None,
    wrap: str = "tag18",
) -> str:
    """A code built field by field, to reach every branch with a real signature."""
    pmap = {1: alg, 4: kid} if protected is None else protected
    pbytes = cbor2.dumps(pmap) if pmap else b""
    payload = cbor2.dumps(claims)
    signature = cose.sign_es256(key, pbytes, payload)
    if sig is not None:
        signature = sig(signature)
    arr = [pbytes, unprotected or {}, payload, signature]
    obj: Any = {
        "tag18": cbor2.CBORTag(18, arr),
        "none": arr,
        "tag61": cbor2.CBORTag(61, cbor2.CBORTag(18, arr)),
    }[wrap]
    return prefix + base45.b45encode(zlib.compress(cbor2.dumps(obj), 9)).decode()


def ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def cose_of(code: str) -> bytes:
    return zlib.decompress(base45.b45decode(code.split(":", 1)[1]))


def recode(prefix: str, cose_bytes: bytes) -> str:
    return prefix + base45.b45encode(zlib.compress(cose_bytes, 9)).decode()


def check(code: str, trust: TrustStore, **kw: Any) -> Verification:
    result = verify(code, trust, kw.pop("now", NOW), **kw)
    assert result.code in ALL_CODES
    assert "internal error" not in result.detail  # the catch-all must stay a safety net only
    assert NAME not in result.detail and NAME not in repr(result) and "1234" not in result.detail
    return result


# ---------------------------------------------------------------- valid codes


def test_valid_health_code(trust: TrustStore, health: Signer) -> None:
    code = health_code(health)
    r = check(code, trust)
    assert (r.code, r.ok, r.kind, r.colour, r.region) == (
        "VALID",
        True,
        "health",
        "green",
        "330381",
    )
    assert r.issuer == "CN-330000-HC" and r.kid == health.kid and r.trust_version == 1
    assert r.token_hash == hashlib.sha256(b"CN-330000-HC" + b"\x01" * 8).digest()[:16]
    assert r.subject_hash == hashlib.sha256(SID).digest()[:16]
    assert (r.issued_at, r.expires_at, r.not_before) == (T - 60, T + 23 * 3600, None)
    assert (r.masked_name, r.id_tail, r.warnings) == (NAME, "1234", ())
    assert (
        "masked_name" not in r.as_dict() and r.as_dict(include_personal=True)["masked_name"] == NAME
    )
    assert verify(code.encode("ascii"), trust, NOW).ok  # bytes from a scanner work too
    assert verify(code + "\r\n", trust, NOW).ok  # keyboard-wedge scanners append CR/LF


def test_typical_health_code_is_small(health: Signer) -> None:
    """Under 350 characters keeps QR modules large for sunlight and phone screens."""
    lengths = [len(health_code(health, cti=os.urandom(8), sid=os.urandom(16))) for _ in range(20)]
    assert max(lengths) < 350


def test_valid_residence_code(trust: TrustStore, residence: Signer) -> None:
    r = check(residence_code(residence), trust)
    assert (r.code, r.kind, r.colour) == ("VALID", "residence", None)
    assert (r.village, r.grid, r.house_id, r.not_before) == ("330381001001", "G-7", "HZ-1", T - 60)
    assert r.subject_hash == hashlib.sha256(SID).digest()[:16]


def test_untagged_and_cwt_tagged_cose_are_accepted(trust: TrustStore, health: Signer) -> None:
    for wrap in ("none", "tag61"):
        assert check(
            craft("ZHC1:", cwt(HEALTH_CLAIMS), health.key, health.kid, wrap=wrap), trust
        ).ok


def test_kid_header_rules(trust: TrustStore, health: Signer) -> None:
    only_unprotected = craft(
        "ZHC1:",
        cwt(HEALTH_CLAIMS),
        health.key,
        None,
        protected={1: -7},
        unprotected={4: health.kid},
    )
    assert check(only_unprotected, trust).ok
    protected_wins = craft(
        "ZHC1:", cwt(HEALTH_CLAIMS), health.key, b"wrongkid", unprotected={4: health.kid}
    )
    assert check(protected_wins, trust).code == "UNKNOWN_SIGNER"
    no_kid = craft("ZHC1:", cwt(HEALTH_CLAIMS), health.key, None, protected={1: -7})
    assert check(no_kid, trust).code == "FORMAT_INVALID"


# ---------------------------------------------------------------- time


def test_expired_screenshot(trust: TrustStore, health: Signer) -> None:
    r = check(health_code(health, iat=T - 25 * 3600, exp=T - 3600), trust)
    assert r.code == "EXPIRED" and r.colour == "green"  # what it showed yesterday


def test_not_yet_valid(trust: TrustStore, health: Signer, residence: Signer) -> None:
    assert check(health_code(health, iat=T + 3600, exp=T + 7200), trust).code == "NOT_YET_VALID"
    assert check(health_code(health, iat=T + 200, exp=T + 7200), trust).ok  # inside the 300 s skew
    assert (
        check(health_code(health, iat=T + 200, exp=T + 7200), trust, skew_s=0).code
        == "NOT_YET_VALID"
    )
    moving_in = residence_code(residence, nbf=T + 86400)
    assert check(moving_in, trust).code == "NOT_YET_VALID"


def test_untrusted_clock(trust: TrustStore, health: Signer) -> None:
    r = check(health_code(health), trust, clock_trusted=False)
    assert (r.code, r.colour, r.kind, r.ok) == ("CLOCK_UNTRUSTED", "green", "health", False)
    r = check(health_code(health, iat=T - 25 * 3600, exp=T - 3600), trust, clock_trusted=False)
    assert r.code == "CLOCK_UNTRUSTED" and "EXPIRED_BY_UNTRUSTED_CLOCK" in r.warnings
    code = health_code(health, cti=b"r" * 8)
    revoked = StatusList(revoked=[hashlib.sha256(b"CN-330000-HC" + b"r" * 8).digest()[:16]])
    assert check(code, trust, clock_trusted=False, status=revoked).code == "REVOKED"


def test_reason_codes_are_exported() -> None:
    assert REASON_CODES == ALL_CODES


def test_internal_error_fails_closed(health: Signer) -> None:
    """Even a broken trust store cannot make verify() raise: the result is a refusal."""

    class BrokenTrust(TrustStore):
        def signers_for(self, kid: bytes | None) -> list[Any]:
            raise RuntimeError("bug")

    r = verify(health_code(health), BrokenTrust([]), NOW)
    assert (r.code, r.ok) == ("FORMAT_INVALID", False) and "internal error" in r.detail


def test_naive_now_is_a_caller_bug(trust: TrustStore, health: Signer) -> None:
    with pytest.raises(ValueError):
        verify(health_code(health), trust, datetime(2024, 3, 1, 8, 0))


# ---------------------------------------------------------------- signer and signature


def test_forged_signature_byte_flip(trust: TrustStore, health: Signer) -> None:
    arr = cbor2.loads(cose_of(health_code(health))).value
    sig = bytearray(arr[3])
    sig[10] ^= 0x01
    forged = recode("ZHC1:", cbor2.dumps(cbor2.CBORTag(18, [arr[0], arr[1], arr[2], bytes(sig)])))
    assert check(forged, trust).code == "SIGNATURE_INVALID"


def test_tampered_colour_breaks_signature(trust: TrustStore, health: Signer) -> None:
    arr = cbor2.loads(cose_of(health_code(health, colour="red"))).value
    claims = cbor2.loads(arr[2])
    claims[-65537]["col"] = 0
    forged = recode(
        "ZHC1:", cbor2.dumps(cbor2.CBORTag(18, [arr[0], arr[1], cbor2.dumps(claims), arr[3]]))
    )
    assert check(forged, trust).code == "SIGNATURE_INVALID"


def test_rogue_key_same_kid_vs_unknown_kid(trust: TrustStore, health: Signer, rogue: Any) -> None:
    assert (
        check(craft("ZHC1:", cwt(HEALTH_CLAIMS), rogue, health.kid), trust).code
        == "SIGNATURE_INVALID"
    )
    assert (
        check(craft("ZHC1:", cwt(HEALTH_CLAIMS), rogue, b"\x00" * 8), trust).code
        == "UNKNOWN_SIGNER"
    )


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:63],
        lambda s: s + b"\x00",
        lambda s: b"",
        lambda s: s * 2,
        lambda s: encode_dss_signature(
            int.from_bytes(s[:32], "big"), int.from_bytes(s[32:], "big")
        ),
    ],
)
def test_ecdsa_signature_of_wrong_length(trust: TrustStore, health: Signer, mangle: Any) -> None:
    code = craft("ZHC1:", cwt(HEALTH_CLAIMS), health.key, health.kid, sig=mangle)
    assert check(code, trust).code == "SIGNATURE_INVALID"


@pytest.mark.parametrize("alg", [-35, -36, -37, -8, 0, None, "ES256", True, 7, [-7], {1: -7}])
def test_algorithm_not_allowed(trust: TrustStore, health: Signer, alg: Any) -> None:
    """ES256 only for our codes; PS256 (-37) is for DCCs alone; garbage alg is no crash."""
    code = craft("ZHC1:", cwt(HEALTH_CLAIMS), health.key, health.kid, alg=alg)
    assert check(code, trust).code == "SIGNATURE_INVALID"


def test_signers_sharing_a_kid_are_all_tried(health: Signer, rogue: Any) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    rogue_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rogue.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(rogue, hashes.SHA256())
    )
    other = make_signer(cose.cert_der(rogue_cert), ["health"], kid=health.kid)
    real = make_signer(cose.cert_der(health.cert), ["health"])
    for order in ([other, real], [real, other]):
        store = TrustStore(order)
        assert len(store.signers_for(health.kid)) == 2
        assert check(health_code(health), store).ok
        assert check(craft("ZHC1:", cwt(HEALTH_CLAIMS), rogue, health.kid), store).ok


def test_signer_not_allowed_for_type(trust: TrustStore, health: Signer, residence: Signer) -> None:
    r = check(
        issue_code(
            "AJM1:",
            -65538,
            RESIDENCE_CLAIMS,
            health,
            issuer="x",
            iat=T - 60,
            nbf=T - 60,
            exp=T + 3600,
        ),
        trust,
    )
    assert r.code == "SIGNER_NOT_ALLOWED"
    wrong_prefix = issue_code(
        "ZHC1:", -65537, HEALTH_CLAIMS, residence, issuer="x", iat=T - 60, exp=T + 60
    )
    assert check(wrong_prefix, trust).code == "SIGNER_NOT_ALLOWED"


def test_signer_outside_certificate_validity(
    tmp_path: Path, trust: TrustStore, health: Signer
) -> None:
    before_cert = health_code(health, iat=T - 31 * 86400, exp=T - 31 * 86400 + 3600)
    assert check(before_cert, trust, now=NOW - timedelta(days=31)).code == "SIGNER_NOT_ALLOWED"
    short = generate_keys(tmp_path, now=NOW - timedelta(days=1), validity_days=10)
    store = TrustStore.load(short.trust_list, short.anchor_cert)
    signer = Signer.load(short.residence_key, short.residence_cert)
    assert check(residence_code(signer, exp=T + 5 * 86400), store).ok
    assert check(residence_code(signer, exp=T + 30 * 86400), store).code == "SIGNER_NOT_ALLOWED"


# ---------------------------------------------------------------- status list


def test_revoked_denylisted_and_colour_update(trust: TrustStore, health: Signer) -> None:
    code = health_code(health, cti=b"t" * 8)
    token = hashlib.sha256(b"CN-330000-HC" + b"t" * 8).digest()[:16]
    subject = hashlib.sha256(SID).digest()[:16]
    assert check(code, trust, status=StatusList(revoked=[token])).code == "REVOKED"
    assert check(code, trust, status=StatusList(denylisted=[token])).code == "DENYLISTED"
    r = check(code, trust, status=StatusList(colour_updates={subject: 2}))
    assert (r.code, r.colour) == ("VALID", "red")
    assert check(code, trust, status=StatusList(revoked=[b"\x00" * 16])).colour == "green"
    expired = health_code(health, cti=b"t" * 8, iat=T - 9000, exp=T - 10)
    assert (
        check(expired, trust, status=StatusList(revoked=[token])).code == "EXPIRED"
    )  # step 4 first


def test_status_list_validates_entries() -> None:
    with pytest.raises(ValueError):
        StatusList(revoked=[b"short"])
    with pytest.raises(ValueError):
        StatusList(colour_updates={b"\x00" * 16: 7})
    assert len(StatusList(revoked=[b"\x01" * 16], colour_updates={b"\x02" * 16: 1})) == 2


def test_failing_status_source_warns_not_crashes(trust: TrustStore, health: Signer) -> None:
    class Broken:
        def is_revoked(self, token_hash: bytes) -> bool:
            raise OSError("disk gone")

        def is_denylisted(self, token_hash: bytes) -> bool:
            return False

        def colour_update(self, subject_hash: bytes) -> int | None:
            return None

    r = check(health_code(health), trust, status=Broken())
    assert r.ok and "STATUS_UNAVAILABLE" in r.warnings


# ---------------------------------------------------------------- claims


@pytest.mark.parametrize(
    "key,private,over",
    [
        (-65537, {k: v for k, v in HEALTH_CLAIMS.items() if k != "col"}, {}),
        (-65537, {**HEALTH_CLAIMS, "col": 7}, {}),
        (-65537, {**HEALTH_CLAIMS, "col": True}, {}),
        (-65537, {**HEALTH_CLAIMS, "sid": SID[:15]}, {}),
        (-65537, {**HEALTH_CLAIMS, "sid": SID + b"\x00"}, {}),
        (-65537, {**HEALTH_CLAIMS, "v": "2"}, {}),
        (-65537, {**HEALTH_CLAIMS, "rg": "33038"}, {}),
        (-65537, HEALTH_CLAIMS, {"c4": T + 25 * 3600}),  # a health code lives a day at most
        (-65537, HEALTH_CLAIMS, {"c7": None}),
        (-65538, HEALTH_CLAIMS, {}),  # residence claim under a ZHC1: prefix
    ],
)
def test_health_claims_invalid(
    trust: TrustStore, health: Signer, key: int, private: Any, over: Any
) -> None:
    assert (
        check(craft("ZHC1:", cwt(private, key, **over), health.key, health.kid), trust).code
        == "CLAIMS_INVALID"
    )


def test_residence_claims_invalid(trust: TrustStore, residence: Signer) -> None:
    no_vg = {k: v for k, v in RESIDENCE_CLAIMS.items() if k != "vg"}
    code = craft("AJM1:", cwt(no_vg, -65538, c5=T - 60), residence.key, residence.kid)
    assert check(code, trust).code == "CLAIMS_INVALID"
    no_nbf = craft("AJM1:", cwt(RESIDENCE_CLAIMS, -65538), residence.key, residence.kid)
    assert check(no_nbf, trust).code == "CLAIMS_INVALID"


@pytest.mark.parametrize("claims", [[1, 2], b"raw", {6: "yesterday", 4: T + 60}, {6: T}])
def test_signed_payload_without_usable_cwt(trust: TrustStore, health: Signer, claims: Any) -> None:
    assert check(craft("ZHC1:", claims, health.key, health.kid), trust).code == "CLAIMS_INVALID"


# ---------------------------------------------------------------- malformed input


def test_format_unsupported(trust: TrustStore) -> None:
    for text in ["", "https://example.com/pay?id=1", "hello", "HC2:NCF", "zhc1:ABC", "A" * 3000]:
        assert check(text, trust).code == "FORMAT_UNSUPPORTED"


def test_format_invalid(trust: TrustStore, health: Signer) -> None:
    code = health_code(health)
    for text in [
        code[:-1],
        code[:-2],
        code[:40],
        "ZHC1:",
        "ZHC1:" + "A" * 3000,
        "ZHC1:" + "A" * 5000,
        "ZHC1:abc",
        "ZHC1:" + base45.b45encode(b"not zlib").decode(),
        recode("ZHC1:", b"\xff\xff"),
        recode("ZHC1:", cbor2.dumps(cbor2.CBORTag(99, [1, 2, 3, 4]))),
        recode("ZHC1:", cose_of(code) + b"\x00"),
        code + "00",
    ]:
        assert check(text, trust).code == "FORMAT_INVALID", text[:20]


def test_random_and_non_utf8_bytes(trust: TrustStore) -> None:
    rng = random.Random(7)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        assert check(blob, trust).code in {"FORMAT_UNSUPPORTED", "FORMAT_INVALID"}  # type: ignore[arg-type]
    assert verify(b"ZHC1:\xff\xfe\x00", trust, NOW).code == "FORMAT_INVALID"
    assert verify(b"\xff\xfeZHC1:", trust, NOW).code == "FORMAT_UNSUPPORTED"
    assert verify(None, trust, NOW).code == "FORMAT_UNSUPPORTED"  # type: ignore[arg-type]


def test_zip_bomb_is_format_invalid_quickly(trust: TrustStore) -> None:
    bomb = zlib.compress(b"\x00" * 10_000_000, 9)
    start = time.monotonic()
    assert check("ZHC1:" + base45.b45encode(bomb).decode(), trust).code == "FORMAT_INVALID"
    small_bomb = zlib.compress(b"\x00" * 1_000_000, 9)  # fits in a QR code: reaches the inflate cap
    r = check("ZHC1:" + base45.b45encode(small_bomb).decode(), trust)
    assert r.code == "FORMAT_INVALID" and "exceeds" in r.detail
    with pytest.raises(EnvelopeError):
        inflate(bomb)
    assert time.monotonic() - start < 1.0


def test_trailing_cbor_and_odd_structures() -> None:
    for bad in [
        cbor2.dumps([b"", {}, b"", b""]) + b"\x00",
        cbor2.dumps([b"", {}, None, b""]),
        cbor2.dumps(cbor2.CBORTag(61, [b"", {}, b"", b""])),
        cbor2.dumps([b"\x01", {}, b"", b""]),
        cbor2.dumps([cbor2.dumps([1]), {}, b"", b""]),
        cbor2.dumps([b"", {4: "text"}, b"", b""]),
    ]:
        with pytest.raises(EnvelopeError):
            parse_sign1(bad)


# ---------------------------------------------------------------- trust list


def test_trust_store_exposes_list_metadata(trust: TrustStore, keys: KeySet, health: Signer) -> None:
    assert trust.version == 1 and trust.problems == ()
    assert trust.generated_at == T - 30 * 86400 and trust.expires_at == T + 60 * 86400
    assert trust.anchor_kid == cose.kid_of(cose.cert_der(load_certificate(keys.anchor_cert)))
    [signer] = trust.signers_for(health.kid)
    assert signer.types == {"health"} and signer.issuer == "CN-330000-HC"
    assert trust.signers_for(b"nope") == [] and trust.signers_for(None) == []


def test_key_files_are_private(keys: KeySet) -> None:
    for path in (keys.anchor_key, keys.health_key, keys.residence_key, keys.pseudonym_secret):
        assert os.stat(path).st_mode & 0o777 == 0o600


def test_anchor_in_der_is_accepted(tmp_path: Path, keys: KeySet) -> None:
    der = tmp_path / "anchor.der"
    der.write_bytes(cose.cert_der(load_certificate(keys.anchor_cert)))
    assert TrustStore.load(keys.trust_list, der).version == 1


def test_tampered_trust_list_is_refused_at_every_byte(tmp_path: Path, keys: KeySet) -> None:
    raw = Path(keys.trust_list).read_bytes()
    target = tmp_path / "list.cose"
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        target.write_bytes(bytes(flipped))
        with pytest.raises(TrustDataError):
            TrustStore.load(target, keys.anchor_cert)


def test_trust_list_errors_name_the_fix(tmp_path: Path, keys: KeySet) -> None:
    other = generate_keys(tmp_path / "other", now=NOW)
    garbage = tmp_path / "garbage.cose"
    garbage.write_bytes(b"\x00not cbor at all")
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_bytes(b'{"version": 9, "signers": []}')
    cases = [
        (tmp_path / "missing.cose", keys.anchor_cert, "not found"),
        (garbage, keys.anchor_cert, "not a signed"),
        (unsigned, keys.anchor_cert, "not a signed"),
        (keys.trust_list, other.anchor_cert, "not signed by the pinned anchor"),
        (keys.trust_list, tmp_path / "no-anchor.pem", "anchor certificate not found"),
        (keys.trust_list, garbage, "not a PEM or DER"),
    ]
    for list_path, anchor_path, phrase in cases:
        with pytest.raises(TrustDataError) as info:
            TrustStore.load(list_path, anchor_path)
        message = str(info.value)
        assert phrase in message and "fix:" in message and "\n" not in message


def test_list_signed_by_other_anchor_with_forged_kid(tmp_path: Path, keys: KeySet) -> None:
    """A foreign anchor that copies our anchor's kid still fails the signature check."""
    other = generate_keys(tmp_path / "other", now=NOW)
    other_key = ec_key(other.anchor_key)
    our_kid = cose.kid_of(cose.cert_der(load_certificate(keys.anchor_cert)))
    payload = b'{"version":5,"generated_at":1,"expires_at":2,"signers":[]}'
    forged = tmp_path / "forged.cose"
    forged.write_bytes(cose.encode_sign1(other_key, our_kid, payload))
    with pytest.raises(TrustDataError, match="tampered"):
        TrustStore.load(forged, keys.anchor_cert)


def test_bad_signer_entries_are_skipped_not_fatal(
    tmp_path: Path, keys: KeySet, health: Signer
) -> None:
    anchor_key = ec_key(keys.anchor_key)
    anchor = load_certificate(keys.anchor_cert)
    good = sign_trust_list(anchor_key, anchor, [(health.cert, ["health"], "HC")], 2, T, T + 1)
    protected, _, payload, _ = cbor2.loads(good).value
    doc = json.loads(payload)
    doc["signers"].append({"kid": "!!", "cert": "AAAA", "types": ["health"]})
    path = tmp_path / "list.cose"
    path.write_bytes(
        cose.encode_sign1(anchor_key, cbor2.loads(protected)[4], json.dumps(doc).encode())
    )
    store = TrustStore.load(path, keys.anchor_cert)
    assert len(store) == 1 and len(store.problems) == 1 and store.version == 2


def test_expired_and_stale_trust_data_warn(trust: TrustStore, health: Signer) -> None:
    later = NOW + timedelta(days=61)
    code = health_code(health, iat=int(later.timestamp()) - 60, exp=int(later.timestamp()) + 3600)
    r = check(code, trust, now=later)
    assert r.code == "VALID" and "TRUST_DATA_EXPIRED" in r.warnings
    r = check(health_code(health), trust, trust_max_age_s=7 * 86400)
    assert r.code == "VALID" and r.warnings == ("TRUST_DATA_STALE",)


def test_from_certificates_types(health: Signer, residence: Signer) -> None:
    certs: list[bytes | x509.Certificate] = [cose.cert_der(health.cert), residence.cert]
    shared = TrustStore.from_certificates(certs, ["health", "residence"])
    assert all(s.types == {"health", "residence"} for s in shared.signers_for(health.kid))
    per = TrustStore.from_certificates(certs, [["health"], ["residence"]])
    assert per.signers_for(health.kid)[0].types == {"health"}
    assert per.signers_for(residence.kid)[0].types == {"residence"}
    assert (per.version, per.expires_at) == (0, None)
    with pytest.raises(TrustDataError):
        TrustStore.from_certificates(certs, [["health"]])


def test_pseudonym_is_stable_and_keyed() -> None:
    a = pseudonym(b"k" * 32, "01", "33038119900101123x")
    assert a == pseudonym(b"k" * 32, "01", " 33038119900101123X ") and len(a) == 16
    assert a != pseudonym(b"j" * 32, "01", "33038119900101123X")


# ---------------------------------------------------------------- fuzzing: verify never raises

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.one_of(
        st.text(max_size=600),
        st.binary(max_size=600),
        st.text(alphabet=base45.BASE45_CHARSET, max_size=600).map(lambda s: "ZHC1:" + s),
    )
)
def test_verify_never_raises_on_arbitrary_input(trust_for_fuzz: TrustStore, payload: Any) -> None:
    r = verify(payload, trust_for_fuzz, NOW)
    assert r.code in ALL_CODES and "internal error" not in r.detail


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.sampled_from(base45.BASE45_CHARSET + "a\x00é")),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 400),
)
def test_verify_never_raises_on_mutated_text(
    trust_for_fuzz: TrustStore, fuzz_code: str, edits: list[tuple[int, str]], cut: int
) -> None:
    text = list(fuzz_code)
    for pos, ch in edits:
        text[pos % len(text)] = ch
    mutated = "".join(text)[: len(text) - cut % 3]
    r = verify(mutated, trust_for_fuzz, NOW)
    assert r.code in ALL_CODES and "internal error" not in r.detail
    if r.ok:
        assert mutated == fuzz_code


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=3))
def test_mutated_cose_never_verifies_changed_content(
    trust_for_fuzz: TrustStore, fuzz_code: str, flips: list[tuple[int, int]]
) -> None:
    original = cose_of(fuzz_code)
    mutated = bytearray(original)
    for pos, mask in flips:
        mutated[pos % len(mutated)] ^= mask
    r = verify(recode("ZHC1:", bytes(mutated)), trust_for_fuzz, NOW)
    assert r.code in ALL_CODES and "internal error" not in r.detail
    if r.ok:  # only bytes outside what the signature covers may have changed
        before, after = parse_sign1(original), parse_sign1(bytes(mutated))
        assert (after.protected_bstr, after.payload) == (before.protected_bstr, before.payload)


@pytest.fixture(scope="module")
def trust_for_fuzz(trust: TrustStore) -> TrustStore:
    return trust


@pytest.fixture(scope="module")
def fuzz_code(health: Signer) -> str:
    return health_code(health)


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20)
    | st.binary(max_size=20) | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.integers(-70000, 10) | st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@FUZZ
@given(
    _cbor_values, st.sampled_from(["ZHC1:", "AJM1:"]), st.sampled_from(["col", "sid", "vg", "v"])
)
def test_signed_garbage_claims_never_raise(
    health: Signer, value: Any, prefix: str, field: str
) -> None:
    """Claims are read only after the signature: fuzz what a (buggy) issuer could sign."""
    store = TrustStore.from_certificates([health.cert], ["health", "residence"])
    for claims in (
        value,
        cwt(value),
        cwt({**HEALTH_CLAIMS, field: value}),
        cwt(HEALTH_CLAIMS, c6=value),
    ):
        r = verify(craft(prefix, claims, health.key, health.kid), store, NOW)
        assert r.code in ALL_CODES and "internal error" not in r.detail
