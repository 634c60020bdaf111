"""CWT claims and the three private claim schemas (docs/credentials.md section 2; EU DCC hcert).

Called only after the signature has verified. Errors are `ClaimsError` with a message naming
the claim key, never its value: names and IDs must not reach a log line.

Our own ZHC1/AJM1 formats are strict (integer seconds, text fields). An HC1 (EU DCC) is read in
the whole value space its issuers use, as the reference verifiers do: float NumericDates
(RFC 8392 section 2) and dates under CBOR tags 0/1 (RFC 8949 section 3.4.1/3.4.2) or 100/1004
(RFC 8943) besides the JSON schema's plain text. A genuine DCC is never refused for its spelling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cbor2 import CBORTag

from ..numbers import is_finite_number
from .envelope import EnvelopeError, cbor_loads

CLAIM_ISS, CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_CTI = 1, 4, 5, 6, 7
CLAIM_HEALTH = -65537
CLAIM_RESIDENCE = -65538
CLAIM_DCC = -260

#: Health codes carry a dynamic colour: a day at most, so a screenshot goes stale fast.
HEALTH_MAX_LIFETIME_S = 24 * 3600
RESIDENCE_MAX_LIFETIME_S = 365 * 24 * 3600
SID_BYTES = 16

_DIGITS6 = re.compile(r"[0-9]{6}")
_DIGITS12 = re.compile(r"[0-9]{12}")
_ID_TAIL = re.compile(r"[0-9A-Za-z]{4}")
#: RFC 3339 section 5.6 date-time and full-date (the text under CBOR tags 0 and 1004).
_RFC3339_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_RFC3339_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: A float time beyond 2**53 s is not an integer any more and no real date: refused.
_MAX_FLOAT_TIME = 2.0**53


class ClaimsError(ValueError):
    """Signed claims that do not fit the schema (CLAIMS_INVALID). Names keys, never values."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_claims(payload: bytes) -> Mapping[Any, Any]:
    """The signed payload as a CBOR map."""
    try:
        claims = cbor_loads(payload)
    except EnvelopeError:
        raise ClaimsError("signed payload is not CBOR") from None
    if not isinstance(claims, Mapping):
        raise ClaimsError("signed payload is not a CBOR map")
    return claims


@dataclass(frozen=True)
class Times:
    """iat / exp / nbf, validated first because signer fitness and the time checks need them."""

    iat: int
    exp: int
    nbf: int | None


def _numeric_date(value: Any, name: str, allow_float: bool, to_int: Callable[[float], int]) -> int:
    if _is_int(value):
        return int(value)
    if allow_float and isinstance(value, float):
        if not is_finite_number(value) or abs(value) > _MAX_FLOAT_TIME:
            raise ClaimsError(f"{name} is not a finite NumericDate")
        return to_int(value)
    raise ClaimsError(f"{name} missing or not {'a number' if allow_float else 'an integer'}")


def parse_times(claims: Mapping[Any, Any], *, allow_float: bool = False) -> Times:
    """iat (claim 6) and exp (claim 4) required, nbf (claim 5) optional; ClaimsError otherwise.

    NumericDate (RFC 8392 section 2) is an int or a float. `allow_float` (HC1 only) takes a
    finite float and rounds it to the safe side: iat and nbf up, exp down, so a fraction never
    makes a code valid sooner or longer. NaN, infinity and |t| > 2**53 are CLAIMS_INVALID.
    Without it (ZHC1/AJM1, docs/credentials.md section 2) only integer seconds are accepted."""
    iat = _numeric_date(claims.get(CLAIM_IAT), "claim 6 (iat)", allow_float, math.ceil)
    exp = _numeric_date(claims.get(CLAIM_EXP), "claim 4 (exp)", allow_float, math.floor)
    raw_nbf = claims.get(CLAIM_NBF)
    nbf = None if raw_nbf is None else _numeric_date(raw_nbf, "claim 5 (nbf)", allow_float, math.ceil)
    return Times(iat, exp, nbf)


def issuer_and_cti(claims: Mapping[Any, Any]) -> tuple[str | None, bytes | None]:
    """Lenient read for the token hash: wrong types give None (the schema step reports them)."""
    iss, cti = claims.get(CLAIM_ISS), claims.get(CLAIM_CTI)
    return (iss if isinstance(iss, str) else None, cti if isinstance(cti, bytes) else None)


@dataclass(frozen=True)
class HealthClaims:
    col: int
    sid: bytes
    masked_name: str
    id_tail: str
    region: str


@dataclass(frozen=True)
class ResidenceClaims:
    house_id: str
    village: str
    grid: str
    unit_label: str
    tenant_sid: bytes
    masked_name: str
    id_tail: str
    verified_by: str


@dataclass(frozen=True)
class DccClaims:
    entry_type: str  # "v" vaccination, "t" test, "r" recovery
    hcert: Mapping[Any, Any]


def _text(
    m: Mapping[Any, Any], key: str, max_len: int, pattern: re.Pattern[str] | None = None
) -> str:
    value = m.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ClaimsError(f"'{key}' missing, empty or too long")
    if pattern is not None and not pattern.fullmatch(value):
        raise ClaimsError(f"'{key}' has the wrong format")
    return value


def _sid(m: Mapping[Any, Any], key: str) -> bytes:
    value = m.get(key)
    if not isinstance(value, bytes) or len(value) != SID_BYTES:
        raise ClaimsError(f"'{key}' must be {SID_BYTES} bytes")
    return value


def _outer(claims: Mapping[Any, Any], times: Times, max_lifetime_s: int) -> None:
    iss, cti = issuer_and_cti(claims)
    if not iss or len(iss) > 64:
        raise ClaimsError("claim 1 (iss) missing or not text")
    if cti is None or not 1 <= len(cti) <= 32:
        raise ClaimsError("claim 7 (cti) missing or not 1-32 bytes")
    if times.exp <= times.iat:
        raise ClaimsError("exp is not after iat")
    if times.exp - times.iat > max_lifetime_s:
        raise ClaimsError("exp is further after iat than this credential type allows")


def _private(claims: Mapping[Any, Any], key: int) -> Mapping[Any, Any]:
    value = claims.get(key)
    if not isinstance(value, Mapping):
        raise ClaimsError(f"private claim {key} missing or not a map")
    if value.get("v") != "1":
        raise ClaimsError("schema version 'v' is not \"1\"")
    return value


def parse_health(claims: Mapping[Any, Any], times: Times) -> HealthClaims:
    _outer(claims, times, HEALTH_MAX_LIFETIME_S)
    m = _private(claims, CLAIM_HEALTH)
    col = m.get("col")
    if not _is_int(col) or col not in (0, 1, 2):
        raise ClaimsError("'col' must be 0, 1 or 2")
    return HealthClaims(
        col=col,
        sid=_sid(m, "sid"),
        masked_name=_text(m, "nm", 32),
        id_tail=_text(m, "idt", 4, _ID_TAIL),
        region=_text(m, "rg", 6, _DIGITS6),
    )


def parse_residence(claims: Mapping[Any, Any], times: Times) -> ResidenceClaims:
    _outer(claims, times, RESIDENCE_MAX_LIFETIME_S)
    if times.nbf is None:
        raise ClaimsError("claim 5 (nbf, move-in date) missing")
    if times.nbf > times.exp:
        raise ClaimsError("nbf is after exp")
    m = _private(claims, CLAIM_RESIDENCE)
    return ResidenceClaims(
        house_id=_text(m, "hid", 64),
        village=_text(m, "vg", 12, _DIGITS12),
        grid=_text(m, "grid", 32),
        unit_label=_text(m, "adr", 64),
        tenant_sid=_sid(m, "tsid"),
        masked_name=_text(m, "nm", 32),
        id_tail=_text(m, "idt", 4, _ID_TAIL),
        verified_by=_text(m, "vb", 64),
    )


# Required fields of each DCC entry type (eu-dcc-schema 1.3), and the ones that are integers.
_DCC_REQUIRED: dict[str, tuple[str, ...]] = {
    "v": ("tg", "vp", "mp", "ma", "dn", "sd", "dt", "co", "is", "ci"),
    "t": ("tg", "tt", "sc", "tr", "co", "is", "ci"),
    "r": ("tg", "fr", "co", "is", "df", "du", "ci"),
}
_DCC_INTS = frozenset({"dn", "sd"})
_DCC_DATES = frozenset({"dt", "sc", "fr", "df", "du"})


def _dcc_date(value: Any) -> bool:
    """A DCC date or date-time as issuers write it: text (the JSON schema's spelling), tag 0
    (RFC 3339 date-time text with an offset), tag 1 (finite epoch seconds), tag 1004 (RFC 3339
    full-date text) or tag 100 (integer days since 1970-01-01), RFC 8949 / RFC 8943. A tagged
    value that is not what its tag says is refused (fail closed)."""
    if isinstance(value, str):
        return True
    if not isinstance(value, CBORTag):
        return False
    tag, inner = value.tag, value.value
    try:
        if tag == 0 and isinstance(inner, str) and _RFC3339_DATETIME.fullmatch(inner):
            return datetime.fromisoformat(inner.upper().replace("Z", "+00:00")).tzinfo is not None
        if tag == 1004 and isinstance(inner, str) and _RFC3339_FULL_DATE.fullmatch(inner):
            date.fromisoformat(inner)
            return True
    except ValueError:  # 2021-02-30, 25:00 ...
        return False
    if tag == 1:
        return is_finite_number(inner) and abs(inner) <= _MAX_FLOAT_TIME
    return tag == 100 and _is_int(inner)


def _dcc_int(value: Any) -> bool:
    """dn/sd: a JSON-schema integer, which a CBOR encoder may also write as an integral float."""
    return _is_int(value) or (isinstance(value, float) and value.is_integer())


def dcc_entry_type(claims: Mapping[Any, Any]) -> str | None:
    """Lenient: which entry type the hcert holds, for the signer key-usage check (step 3)."""
    hc = claims.get(CLAIM_DCC)
    h = hc.get(1) if isinstance(hc, Mapping) else None
    if not isinstance(h, Mapping):
        return None
    present = [k for k in ("v", "t", "r") if k in h]
    return present[0] if len(present) == 1 else None


def parse_dcc(claims: Mapping[Any, Any], times: Times) -> DccClaims:
    """A minimal eu-dcc-schema check: the parts a gate relies on, not the whole JSON schema.

    Dates may be text or CBOR-tagged (see `_dcc_date`); `DccClaims.hcert` keeps them as
    decoded (str or cbor2.CBORTag). `times` must come from `parse_times(allow_float=True)`."""
    if times.exp <= times.iat:
        raise ClaimsError("exp is not after iat")
    iss = claims.get(CLAIM_ISS)
    if iss is not None and not isinstance(iss, str):
        raise ClaimsError("claim 1 (iss) is not text")
    hc = claims.get(CLAIM_DCC)
    h = hc.get(1) if isinstance(hc, Mapping) else None
    if not isinstance(h, Mapping):
        raise ClaimsError("claim -260 must hold the hcert map under key 1")
    if not isinstance(h.get("ver"), str):
        raise ClaimsError("hcert 'ver' missing or not text")
    if not _dcc_date(h.get("dob")):
        raise ClaimsError("hcert 'dob' missing or not a date")
    nam = h.get("nam")
    if not isinstance(nam, Mapping) or not isinstance(nam.get("fnt"), str):
        raise ClaimsError("hcert 'nam.fnt' missing")
    present = [k for k in ("v", "t", "r") if k in h]
    if len(present) != 1:
        raise ClaimsError("hcert must hold exactly one of v, t, r")
    entries = h[present[0]]
    if not isinstance(entries, list | tuple) or len(entries) != 1:
        raise ClaimsError("hcert must hold exactly one certificate entry")
    entry = entries[0]
    if not isinstance(entry, Mapping):
        raise ClaimsError("hcert entry is not a map")
    for field in _DCC_REQUIRED[present[0]]:
        value = entry.get(field)
        if field in _DCC_INTS:
            ok = _dcc_int(value)
        elif field in _DCC_DATES:
            ok = _dcc_date(value)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ClaimsError(f"hcert {present[0]}.{field} missing or of the wrong type")
    return DccClaims(present[0], h)
