"""Signed trust-data bundles (docs/credentials.md section 3): trust list, status list (snapshot and diffs), policy.

All of them use the trust list's envelope: the raw CBOR of a tagged COSE_Sign1 (ES256), protected
header `{1: -7, 4: anchor kid}`, payload UTF-8 JSON, signed by the pinned trust anchor. One
function opens them all, so the checks (anchor kid, algorithm, signature, JSON, version, times)
cannot drift apart between kinds. Every bundle but the trust list (whose format predates this)
names its `kind`, so a signed policy can never be accepted in place of a status list.

Status lists carry hashes packed: one standard-base64 string of concatenated 16-byte hashes per
category, not a JSON array of a million strings (a 1M-entry snapshot is ~22 MB and parses in
tens of milliseconds). Wire formats:

  policy           {"kind": "policy", "version", "generated_at", "expires_at",
                    "fever_threshold_c"?, "clock_skew_s"?, "max_code_age_s"?,
                    "max_age_s"?: {"trust"?, "status"?, "policy"?}}
  status-snapshot  {"kind": "status-snapshot", "version", "generated_at", "expires_at",
                    "revoked": B64, "denylisted": B64,
                    "colour_updates": {"subjects": B64, "colours": B64 (one byte 0/1/2 each)}}
  status-diff      {"kind": "status-diff", "from_version", "version", "generated_at", "expires_at",
                    "total": entries after applying,
                    "add": {"revoked": B64, "denylisted": B64, "colour_updates": {...}},
                    "remove": {"revoked": B64, "denylisted": B64, "colour_updates": B64 subjects}}
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import TrustDataError
from ..numbers import NotFiniteJSONError, in_range, is_finite_number, loads_json
from . import cose
from .envelope import EnvelopeError, parse_sign1

KIND_TRUST = "trust"
KIND_STATUS_SNAPSHOT = "status-snapshot"
KIND_STATUS_DIFF = "status-diff"
KIND_POLICY = "policy"
KINDS = (KIND_TRUST, KIND_STATUS_SNAPSHOT, KIND_STATUS_DIFF, KIND_POLICY)
WHAT = {KIND_TRUST: "trust list", KIND_STATUS_SNAPSHOT: "status list", KIND_STATUS_DIFF: "status diff",
        KIND_POLICY: "policy bundle"}
HASH_BYTES = 16

#: Policy values the centre may set, with the same bounds as the config keys they override.
POLICY_BOUNDS: dict[str, tuple[float, float]] = {
    "fever_threshold_c": (35.0, 40.0),
    "clock_skew_s": (0, 3600),
    "max_code_age_s": (60, 400 * 86400),
}
#: Bounds for `max_age_s` per bundle (seconds): a minute to a year.
MAX_AGE_BOUNDS = (60, 365 * 86400)
BUNDLE_NAMES = ("trust", "status", "policy")


def epoch_seconds(value: int | datetime) -> int:
    """Integer seconds UTC, the unit of every time in our bundles and CWT claims."""
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


@dataclass(frozen=True)
class Bundle:
    """An opened, signature-checked bundle. `doc` is the JSON payload."""

    kind: str
    version: int
    generated_at: int
    expires_at: int
    doc: Mapping[str, Any] = field(repr=False)


def sign_bundle(anchor_key: ec.EllipticCurvePrivateKey, anchor_cert: x509.Certificate,
                doc: Mapping[str, Any]) -> bytes:
    """The bundle file: tagged COSE_Sign1 over compact UTF-8 JSON, signed by the anchor."""
    payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return cose.encode_sign1(anchor_key, cose.kid_of(cose.cert_der(anchor_cert)), payload)


def _int(doc: Mapping[str, Any], key: str, what: str, refetch: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrustDataError(f"{what}: '{key}' must be an integer; {refetch}")
    return value


def open_bundle(raw: bytes, anchor: x509.Certificate, kind: str, source: str = "") -> Bundle:
    """Verify `raw` against the pinned anchor and return its JSON. TrustDataError (one line, names
    the fix) when it is not a COSE_Sign1, not signed by the anchor, tampered, not JSON, of another
    kind, or missing version / generated_at / expires_at."""
    what = f"{WHAT[kind]} {source}".strip()
    refetch = f"fix: download the {WHAT[kind]} again; the previous one stays in force"
    try:
        sign1 = parse_sign1(raw)
    except EnvelopeError:
        raise TrustDataError(f"{what} is not a signed COSE_Sign1 file; {refetch}") from None
    if sign1.protected.get(1) != cose.ALG_ES256:
        raise TrustDataError(f"{what} is not signed with ES256 by an anchor; {refetch}")
    anchor_kid = cose.kid_of(cose.cert_der(anchor))
    kid = sign1.protected.get(4)
    if kid != anchor_kid:
        raise TrustDataError(
            f"{what} was not signed by the pinned anchor (kid "
            f"{kid.hex() if isinstance(kid, bytes) else 'missing'}, anchor kid {anchor_kid.hex()}); "
            "fix: pin the anchor certificate that signed it, or fetch one signed by the pinned anchor")
    if not cose.verify_signature(cose.ALG_ES256, anchor.public_key(), sign1.protected_bstr,
                                 sign1.payload, sign1.signature):
        raise TrustDataError(
            f"{what} signature does not verify against the pinned anchor (tampered or corrupted); {refetch}")
    try:
        doc = loads_json(sign1.payload.decode("utf-8"))
    except NotFiniteJSONError as e:  # signed, but NaN/Infinity: refused as a whole, as a bad value is
        raise TrustDataError(f"{what} payload holds {e.doc} (not a finite number); {refetch}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TrustDataError(f"{what} payload is not UTF-8 JSON; {refetch}") from None
    if not isinstance(doc, dict):
        raise TrustDataError(f"{what} payload is not a JSON object; {refetch}")
    got = doc.get("kind", KIND_TRUST if kind == KIND_TRUST else None)  # trust lists predate "kind"
    if got != kind:
        raise TrustDataError(f"{what} is a {WHAT.get(str(got), repr(got))}, not a {WHAT[kind]}; "
                             "fix: check the server's URL paths")
    version = _int(doc, "version", what, refetch)
    if version < 0:
        raise TrustDataError(f"{what}: 'version' must not be negative; {refetch}")
    return Bundle(kind, version, _int(doc, "generated_at", what, refetch), _int(doc, "expires_at", what, refetch),
                  doc)


# ------------------------------------------------------------------------------ policy


@dataclass(frozen=True)
class Policy:
    """Thresholds the centre may change. None = not set by the centre: the config value holds."""

    version: int
    generated_at: int
    expires_at: int
    fever_threshold_c: float | None = None
    clock_skew_s: int | None = None
    max_code_age_s: int | None = None
    #: Staleness limit per bundle ("trust", "status", "policy"), seconds.
    max_age_s: Mapping[str, int] = field(default_factory=dict)


def _number(doc: Mapping[str, Any], key: str, lo: float, hi: float, integer: bool) -> float | int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not is_finite_number(value) or (integer and not isinstance(value, int)):
        raise TrustDataError(f"policy bundle: '{key}' must be {'an integer' if integer else 'a finite number'} "
                             f"(got {value!r}); fix: correct the policy on the server and sign it again")
    if not in_range(value, lo, hi):
        raise TrustDataError(f"policy bundle: '{key}' = {value} is outside {lo}..{hi}; "
                             "fix: correct the policy on the server and sign it again")
    return value


def parse_policy(bundle: Bundle) -> Policy:
    """Policy from an opened bundle. A value out of its bounds refuses the whole bundle: a typo at
    the centre (fever threshold 3.73) must not reach every gate."""
    doc = bundle.doc
    fever = _number(doc, "fever_threshold_c", *POLICY_BOUNDS["fever_threshold_c"], integer=False)
    skew = _number(doc, "clock_skew_s", *POLICY_BOUNDS["clock_skew_s"], integer=True)
    code_age = _number(doc, "max_code_age_s", *POLICY_BOUNDS["max_code_age_s"], integer=True)
    ages_doc = doc.get("max_age_s", {})
    if not isinstance(ages_doc, dict) or set(ages_doc) - set(BUNDLE_NAMES):
        raise TrustDataError("policy bundle: 'max_age_s' must map trust/status/policy to seconds; "
                             "fix: correct the policy on the server and sign it again")
    ages = {k: int(_number(ages_doc, k, *MAX_AGE_BOUNDS, integer=True) or 0) for k in ages_doc}
    return Policy(bundle.version, bundle.generated_at, bundle.expires_at,
                  float(fever) if fever is not None else None,
                  int(skew) if skew is not None else None,
                  int(code_age) if code_age is not None else None, ages)


def policy_doc(version: int, generated_at: int | datetime, expires_at: int | datetime,
               **values: Any) -> dict[str, Any]:
    """A policy document for `sign_bundle` (tools and tests); None values are left out."""
    doc: dict[str, Any] = {"kind": KIND_POLICY, "version": int(version), "generated_at": epoch_seconds(generated_at),
                           "expires_at": epoch_seconds(expires_at)}
    doc.update({k: v for k, v in values.items() if v is not None})
    return doc


# ------------------------------------------------------------------------------ status


def pack_hashes(hashes: Iterable[bytes]) -> str:
    """16-byte hashes -> one base64 string (the wire form of a hash list)."""
    out = bytearray()
    for h in hashes:
        if not isinstance(h, bytes | bytearray) or len(h) != HASH_BYTES:
            raise ValueError(f"status entries must be {HASH_BYTES}-byte hashes")
        out += h
    return base64.b64encode(bytes(out)).decode("ascii")


def unpack_hashes(value: Any, what: str) -> bytes:
    """Base64 string -> concatenated 16-byte hashes (bytes); TrustDataError when malformed."""
    if value is None or value == "":
        return b""
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise TrustDataError(f"status list: '{what}' is not base64; fix: download the status list again") from None
    if len(raw) % HASH_BYTES:
        raise TrustDataError(f"status list: '{what}' is not a whole number of {HASH_BYTES}-byte hashes; "
                             "fix: download the status list again")
    return raw


def pack_colours(updates: Mapping[bytes, int]) -> dict[str, str]:
    subjects = pack_hashes(updates.keys())
    cols = bytes(updates.values())
    return {"subjects": subjects, "colours": base64.b64encode(cols).decode("ascii")}


def unpack_colours(value: Any, what: str) -> tuple[bytes, bytes]:
    """{"subjects", "colours"} -> (packed subjects, one colour byte each)."""
    if value is None:
        return b"", b""
    if not isinstance(value, dict):
        raise TrustDataError(f"status list: '{what}' must be an object with subjects and colours; "
                             "fix: download the status list again")
    subjects = unpack_hashes(value.get("subjects"), f"{what}.subjects")
    try:
        cols = base64.b64decode(value.get("colours") or "", validate=True)
    except (ValueError, binascii.Error, TypeError):
        raise TrustDataError(f"status list: '{what}.colours' is not base64; "
                             "fix: download the status list again") from None
    if len(cols) * HASH_BYTES != len(subjects) or max(cols, default=0) > 2:
        raise TrustDataError(f"status list: '{what}' needs one colour (0, 1 or 2) per subject; "
                             "fix: download the status list again")
    return subjects, cols


def status_snapshot_doc(version: int, generated_at: int | datetime, expires_at: int | datetime, *,
                        revoked: Iterable[bytes] = (), denylisted: Iterable[bytes] = (),
                        colour_updates: Mapping[bytes, int] | None = None) -> dict[str, Any]:
    """Hashes are sent sorted: devices then build their index with a linear check, not a sort."""
    return {"kind": KIND_STATUS_SNAPSHOT, "version": int(version), "generated_at": epoch_seconds(generated_at),
            "expires_at": epoch_seconds(expires_at), "revoked": pack_hashes(sorted(revoked)),
            "denylisted": pack_hashes(sorted(denylisted)),
            "colour_updates": pack_colours(dict(sorted((colour_updates or {}).items())))}


def status_diff_doc(from_version: int, version: int, generated_at: int | datetime,
                    expires_at: int | datetime, total: int, *,
                    add_revoked: Iterable[bytes] = (), add_denylisted: Iterable[bytes] = (),
                    add_colours: Mapping[bytes, int] | None = None,
                    remove_revoked: Iterable[bytes] = (), remove_denylisted: Iterable[bytes] = (),
                    remove_colours: Iterable[bytes] = ()) -> dict[str, Any]:
    return {"kind": KIND_STATUS_DIFF, "from_version": int(from_version), "version": int(version),
            "generated_at": epoch_seconds(generated_at), "expires_at": epoch_seconds(expires_at), "total": int(total),
            "add": {"revoked": pack_hashes(add_revoked), "denylisted": pack_hashes(add_denylisted),
                    "colour_updates": pack_colours(add_colours or {})},
            "remove": {"revoked": pack_hashes(remove_revoked), "denylisted": pack_hashes(remove_denylisted),
                       "colour_updates": pack_hashes(remove_colours)}}
