"""HC1 (EU DCC) codes in every spelling their format allows verify VALID; our ZHC1/AJM1 stay strict.

Issue 12 item 16: genuine DCCs were refused (CLAIMS_INVALID, a DENY at the gate) because a test's
sample time came under CBOR tag 0 or iat/exp were floats. RFC 8392 section 2 (NumericDate: int
or float), RFC 8949 section 3.4 (tags 0, 1), RFC 8943 (tags 100, 1004).
"""

from __future__ import annotations

import math
import os
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import base45
import cbor2
import pytest

from scanner.credentials import KeySet, Signer, TrustStore, cose, verify
from scanner.credentials.claims import (
    CLAIM_CTI,
    CLAIM_DCC,
    CLAIM_EXP,
    CLAIM_HEALTH,
    CLAIM_IAT,
    CLAIM_ISS,
    CLAIM_NBF,
    CLAIM_RESIDENCE,
)

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = int(NOW.timestamp())


@pytest.fixture(scope="module")
def signer(keyset: KeySet) -> Signer:
    return Signer.load(keyset.health_key, keyset.health_cert)


@pytest.fixture(scope="module")
def dcc_trust(signer: Signer) -> TrustStore:
    return TrustStore.from_certificates([signer.cert], ["dcc"])


def _sign(signer: Signer, prefix: str, cwt: dict[int, Any]) -> str:
    cose_bytes = cose.encode_sign1(signer.key, signer.kid, cbor2.dumps(cwt))
    return prefix + base45.b45encode(zlib.compress(cose_bytes, 9)).decode("ascii")


def _entry(kind: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "v": {"tg": "840539006", "vp": "1119349007", "mp": "EU/1/20/1528", "ma": "ORG-100030215",
              "dn": 2, "sd": 2, "dt": "2021-05-01"},
        "t": {"tg": "840539006", "tt": "LP6464-4", "sc": "2021-05-01T08:00:00Z", "tr": "260415000"},
        "r": {"tg": "840539006", "fr": "2021-04-01", "df": "2021-04-12", "du": "2021-10-01"},
    }  # fmt: skip
    entry = {**base[kind], "co": "AT", "is": "Ministry of Health", "ci": "URN:UVCI:01:AT:TEST#X"}
    entry.update(fields)
    return entry


def _hc1(signer: Signer, kind: str, *, iat: Any = T0 - 3600, exp: Any = T0 + 86400,
         dob: Any = "1990-01-01", **fields: Any) -> str:
    hcert = {"ver": "1.3.0", "nam": {"fnt": "MUSTER", "gnt": "ERIKA"}, "dob": dob,
             kind: [_entry(kind, **fields)]}
    return _sign(signer, "HC1:", {CLAIM_ISS: "AT", CLAIM_IAT: iat, CLAIM_EXP: exp,
                                  CLAIM_DCC: {1: hcert}})  # fmt: skip


def _code(signer: Signer, trust: TrustStore, text: str) -> str:
    return verify(text, trust, NOW).code


def test_plain_control_is_valid(signer: Signer, dcc_trust: TrustStore) -> None:
    for kind in ("v", "t", "r"):
        assert _code(signer, dcc_trust, _hc1(signer, kind)) == "VALID", kind


@pytest.mark.parametrize(
    "kind,fields",
    [
        ("t", {"sc": cbor2.CBORTag(0, "2021-05-01T08:00:00Z")}),
        ("t", {"sc": cbor2.CBORTag(0, "2021-05-01T10:00:00.5+02:00")}),
        ("t", {"sc": cbor2.CBORTag(1, 1619856000)}),
        ("t", {"sc": cbor2.CBORTag(1, 1619856000.25)}),
        ("v", {"dt": cbor2.CBORTag(1004, "2021-05-01")}),
        ("v", {"dt": cbor2.CBORTag(100, 18748)}),
        ("v", {"dn": 2.0, "sd": 2.0}),
        ("r", {"fr": cbor2.CBORTag(1004, "2021-04-01"), "df": cbor2.CBORTag(1004, "2021-04-12"),
               "du": cbor2.CBORTag(1004, "2021-10-01")}),
    ],
    ids=["t-sc-tag0", "t-sc-tag0-offset", "t-sc-tag1-int", "t-sc-tag1-float", "v-dt-tag1004",
         "v-dt-tag100", "v-dn-float", "r-dates-tag1004"],
)  # fmt: skip
def test_tagged_dates_verify_valid(
    signer: Signer, dcc_trust: TrustStore, kind: str, fields: dict[str, Any]
) -> None:
    assert _code(signer, dcc_trust, _hc1(signer, kind, **fields)) == "VALID"


def test_tag1004_dob_is_valid(signer: Signer, dcc_trust: TrustStore) -> None:
    text = _hc1(signer, "t", dob=cbor2.CBORTag(1004, "1990-01-01"))
    assert _code(signer, dcc_trust, text) == "VALID"


def test_float_iat_exp_verify_valid_rounded_to_the_safe_side(
    signer: Signer, dcc_trust: TrustStore
) -> None:
    iat, exp = T0 - 3600.4, T0 + 86400.7
    result = verify(_hc1(signer, "t", iat=iat, exp=exp, sc=cbor2.CBORTag(0, "2021-05-01T08:00:00Z")),
                    dcc_trust, NOW)
    assert result.code == "VALID"
    assert (result.issued_at, result.expires_at) == (math.ceil(iat), math.floor(exp))


def test_float_exp_in_the_past_is_expired(signer: Signer, dcc_trust: TrustStore) -> None:
    assert _code(signer, dcc_trust, _hc1(signer, "t", iat=T0 - 7200.5, exp=T0 - 60.5)) == "EXPIRED"


@pytest.mark.parametrize(
    "iat,exp",
    [(T0 - 3600, math.nan), (math.nan, T0 + 3600), (T0 - 3600, math.inf), (-math.inf, T0 + 3600),
     (T0 - 3600, 1e300), (T0 - 3600, "1700000000"), (T0 - 3600, None), (True, T0 + 3600)],
    ids=["exp-nan", "iat-nan", "exp-inf", "iat-minus-inf", "exp-1e300", "exp-text", "exp-missing",
         "iat-bool"],
)  # fmt: skip
def test_non_finite_or_wrong_times_are_claims_invalid(
    signer: Signer, dcc_trust: TrustStore, iat: Any, exp: Any
) -> None:
    assert _code(signer, dcc_trust, _hc1(signer, "t", iat=iat, exp=exp)) == "CLAIMS_INVALID"


@pytest.mark.parametrize(
    "kind,fields",
    [
        ("t", {"sc": cbor2.CBORTag(0, "not a date")}),
        ("t", {"sc": cbor2.CBORTag(0, "2021-05-01T08:00:00")}),  # no offset: RFC 3339 needs one
        ("t", {"sc": cbor2.CBORTag(0, "2021-02-30T08:00:00Z")}),
        ("t", {"sc": cbor2.CBORTag(0, 1619856000)}),
        ("t", {"sc": cbor2.CBORTag(1, math.nan)}),
        ("t", {"sc": cbor2.CBORTag(1, "1619856000")}),
        ("t", {"sc": cbor2.CBORTag(2, b"\x01")}),  # a bignum is no date
        ("t", {"sc": 1619856000}),  # a bare number: no tag says it is a time
        ("v", {"dt": cbor2.CBORTag(1004, "2021-02-30")}),
        ("v", {"dt": cbor2.CBORTag(1004, "20210501")}),
        ("v", {"dt": cbor2.CBORTag(100, 18748.5)}),
        ("v", {"dn": 1.5}),
        ("v", {"dn": math.nan}),
    ],
    ids=["tag0-text", "tag0-no-offset", "tag0-feb30", "tag0-int", "tag1-nan", "tag1-text",
         "tag2", "bare-int", "tag1004-feb30", "tag1004-basic", "tag100-float", "dn-1.5", "dn-nan"],
)  # fmt: skip
def test_malformed_tagged_dates_are_claims_invalid(
    signer: Signer, dcc_trust: TrustStore, kind: str, fields: dict[str, Any]
) -> None:
    assert _code(signer, dcc_trust, _hc1(signer, kind, **fields)) == "CLAIMS_INVALID"


def _health_cwt(iat: Any, exp: Any) -> dict[int, Any]:
    private = {"v": "1", "col": 0, "sid": b"\x07" * 16, "nm": "陈*聪", "idt": "123X", "rg": "330381"}
    return {CLAIM_ISS: "health", CLAIM_IAT: iat, CLAIM_EXP: exp, CLAIM_CTI: os.urandom(8),
            CLAIM_HEALTH: private}  # fmt: skip


def test_zhc1_stays_strict_about_integer_times(signer: Signer, trust: TrustStore) -> None:
    assert verify(_sign(signer, "ZHC1:", _health_cwt(T0 - 60, T0 + 3600)), trust, NOW).code == "VALID"
    for iat, exp in [(T0 - 60.0, T0 + 3600), (T0 - 60, T0 + 3600.0), (T0 - 60.5, T0 + 3600)]:
        result = verify(_sign(signer, "ZHC1:", _health_cwt(iat, exp)), trust, NOW)
        assert result.code == "CLAIMS_INVALID" and "integer" in result.detail


def test_ajm1_stays_strict_about_integer_times(keyset: KeySet, trust: TrustStore) -> None:
    street = Signer.load(keyset.residence_key, keyset.residence_cert)
    private = {"v": "1", "hid": "H1", "vg": "330381001001", "grid": "G7", "adr": "3幢", "tsid": b"\x01" * 16,
               "nm": "林*", "idt": "0421", "vb": "塘下街道"}  # fmt: skip

    def code(nbf: Any) -> str:
        cwt = {CLAIM_ISS: "street", CLAIM_IAT: T0 - 86400, CLAIM_NBF: nbf, CLAIM_EXP: T0 + 86400 * 30,
               CLAIM_CTI: os.urandom(8), CLAIM_RESIDENCE: private}  # fmt: skip
        return verify(_sign(street, "AJM1:", cwt), trust, NOW).code

    assert code(T0 - 3600) == "VALID"
    assert code(T0 - 3600.0) == "CLAIMS_INVALID"


def test_dcc_float_times_still_judged_against_the_signer_certificate(
    signer: Signer, dcc_trust: TrustStore
) -> None:
    not_after = signer.cert.not_valid_after_utc.timestamp()
    text = _hc1(signer, "t", iat=T0 - 3600.0, exp=not_after + 0.5 + 86400 * 365)
    assert _code(signer, dcc_trust, text) == "SIGNER_NOT_ALLOWED"


def test_now_is_inside_the_signer_validity(signer: Signer) -> None:
    # The fixtures above rely on it: otherwise VALID would fail for an unrelated reason.
    assert signer.cert.not_valid_before_utc < NOW - timedelta(hours=2) < NOW < signer.cert.not_valid_after_utc
