"""The signed-code envelope: `PREFIX` + Base45( zlib( COSE_Sign1( CWT ) ) ) (docs/credentials.md section 1).

Everything here parses bytes an attacker chose, so every function either returns a plain value or
raises `EnvelopeError`; callers map that to FORMAT_INVALID. Nothing here trusts what it parsed:
the signature is checked by `cose.py` before any claim is read.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import base45
import cbor2

#: Prefix -> credential kind. The prefix routes the code; it is not signed, so the kind it names
#: is also checked against the signer's allowed types and the private claim key.
PREFIXES: dict[str, str] = {"ZHC1:": "health", "AJM1:": "residence", "HC1:": "dcc"}

#: A QR code holds at most 4,296 alphanumeric characters: anything longer did not come from a
#: scanner and is refused before any decoding work.
MAX_TEXT_CHARS = 4296

#: Inflated COSE size cap. Our codes are ~200 bytes and DCCs ~1 KiB; the cap turns a zip bomb
#: into a FORMAT_INVALID instead of memory exhaustion on a Pi.
MAX_INFLATED_BYTES = 8 * 1024

TAG_COSE_SIGN1 = 18
TAG_CWT = 61
HDR_ALG = 1
HDR_KID = 4


class EnvelopeError(ValueError):
    """The envelope is malformed (maps to FORMAT_INVALID). The message never quotes input."""


def _passthrough(tag: int) -> Any:
    return lambda value, immutable: cbor2.CBORTag(tag, value)


# cbor2 decodes well-known tags (dates, bignums, regexps, shared references ...) into Python
# objects by default. Untrusted input has no business creating those: keep every such tag as a
# plain CBORTag so the decoded value is only ints, strings, bytes, lists, maps and tags.
_PLAIN_TAGS: dict[int, Any] = {t: _passthrough(t) for t in [*range(0, 300), 1004, 1040, 55799]}


def cbor_loads(data: bytes) -> Any:
    """Decode exactly one CBOR item; trailing bytes are an error (nothing may hide after it)."""
    if not isinstance(data, bytes | bytearray):
        raise EnvelopeError("expected a CBOR byte string")
    fp = io.BytesIO(bytes(data))
    try:
        value = cbor2.CBORDecoder(fp, semantic_decoders=_PLAIN_TAGS, max_depth=32).decode()
    except Exception as exc:  # cbor2 raises several types on bad input; all mean "not CBOR"
        raise EnvelopeError("not valid CBOR") from exc
    if fp.tell() != len(data):
        raise EnvelopeError("trailing bytes after the CBOR item")
    return value


def split_prefix(text: str) -> tuple[str, str] | None:
    """Return (prefix, body) for a known prefix, else None (FORMAT_UNSUPPORTED upstream)."""
    for prefix in PREFIXES:
        if text.startswith(prefix):
            return prefix, text[len(prefix) :]
    return None


def b45decode(body: str) -> bytes:
    """Strict Base45 (RFC 9285) via the `base45` package."""
    try:
        return base45.b45decode(body)
    except Exception as exc:
        raise EnvelopeError("invalid Base45") from exc


def inflate(data: bytes, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """zlib-inflate with an output cap; an incomplete stream or trailing bytes are errors."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise EnvelopeError("invalid zlib data") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise EnvelopeError(f"inflated data exceeds {max_bytes} bytes")
    if not inflater.eof:
        raise EnvelopeError("truncated zlib data")
    if inflater.unused_data:
        raise EnvelopeError("trailing bytes after the zlib stream")
    return out


@dataclass(frozen=True)
class Sign1:
    """A parsed, not yet verified COSE_Sign1. `protected_bstr` is kept byte-exact because the
    signature covers those bytes, not our re-encoding of them."""

    protected_bstr: bytes
    protected: Mapping[Any, Any]
    unprotected: Mapping[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> Any:
        """alg from the protected header, else the unprotected one (DCC case CO20 carries it
        only there). Safe: the key type pins the algorithm family, see `cose.verify_signature`."""
        if HDR_ALG in self.protected:
            return self.protected[HDR_ALG]
        return self.unprotected.get(HDR_ALG)

    @property
    def kid(self) -> bytes | None:
        """The protected kid wins; the unprotected one is used only when the protected header
        has none (docs/credentials.md section 1; DCC cases CO19-CO23)."""
        kid = self.protected.get(HDR_KID)
        if kid is None:
            kid = self.unprotected.get(HDR_KID)
        return kid if isinstance(kid, bytes) else None


def parse_sign1(data: bytes) -> Sign1:
    """COSE_Sign1 from CBOR: tag 18, untagged, or tag 61 (CWT) wrapping tag 18 (DCC CO28)."""
    item = cbor_loads(data)
    if isinstance(item, cbor2.CBORTag) and item.tag == TAG_CWT:
        item = item.value
        if not (isinstance(item, cbor2.CBORTag) and item.tag == TAG_COSE_SIGN1):
            raise EnvelopeError("CWT tag 61 must wrap a COSE_Sign1 (tag 18)")
    if isinstance(item, cbor2.CBORTag):
        if item.tag != TAG_COSE_SIGN1:
            raise EnvelopeError("not a COSE_Sign1 tag")
        item = item.value
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise EnvelopeError("COSE_Sign1 must be an array of 4 items")
    protected_bstr, unprotected, payload, signature = item
    if not isinstance(protected_bstr, bytes):
        raise EnvelopeError("protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise EnvelopeError("unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise EnvelopeError("payload must be an attached byte string")
    if not isinstance(signature, bytes):
        raise EnvelopeError("signature must be a byte string")
    protected: Any = cbor_loads(protected_bstr) if protected_bstr else {}
    if not isinstance(protected, Mapping):
        raise EnvelopeError("protected header must encode a map")
    for header in (protected, unprotected):
        kid = header.get(HDR_KID)
        if kid is not None and not isinstance(kid, bytes):
            raise EnvelopeError("kid must be a byte string")
    return Sign1(protected_bstr, protected, unprotected, payload, signature)


@dataclass(frozen=True)
class Envelope:
    """A code taken apart down to its (unverified) COSE_Sign1."""

    prefix: str
    kind: str
    sign1: Sign1


def decode_text(text: str) -> Envelope:
    """Prefixed text -> Envelope. The caller has already routed the prefix (a text without a
    known prefix is FORMAT_UNSUPPORTED, not an envelope error)."""
    if len(text) > MAX_TEXT_CHARS:
        raise EnvelopeError("longer than any QR code can hold")
    split = split_prefix(text)
    if split is None:
        raise EnvelopeError("unknown prefix")
    prefix, body = split
    cose_bytes = inflate(b45decode(body))
    return Envelope(prefix, PREFIXES[prefix], parse_sign1(cose_bytes))
