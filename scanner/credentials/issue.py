"""Issuing tools for technicians, demos and tests: signers, codes, pseudonyms and QR images.

Payloads are kept small (8-byte cti, zlib level 9) so the QR modules stay large enough for
sunlight and phone screens; a typical health code is about 300 characters. The keygen tools
live in `keygen.py` and are re-exported here so `issue` is the one place to import from.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import base45
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import CredentialError, TrustDataError
from . import cose
from .bundles import epoch_seconds
from .claims import (
    CLAIM_CTI,
    CLAIM_EXP,
    CLAIM_HEALTH,
    CLAIM_IAT,
    CLAIM_ISS,
    CLAIM_NBF,
    CLAIM_RESIDENCE,
)
from .envelope import PREFIXES
from .keygen import (
    DEFAULT_HEALTH_ISSUER,
    DEFAULT_RESIDENCE_ISSUER,
    KeySet,
    SignerEntry,
    generate_keys,
    sign_trust_list,
)
from .trust import load_certificate

__all__ = [
    "COLOUR_CODES",
    "KeySet",
    "Signer",
    "SignerEntry",
    "generate_keys",
    "issue_code",
    "issue_health",
    "issue_residence",
    "pseudonym",
    "qr_png",
    "sign_trust_list",
]

COLOUR_CODES = {"green": 0, "yellow": 1, "red": 2}


@dataclass(frozen=True)
class Signer:
    """A private key with its certificate; kid = SHA-256(cert DER)[:8]."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def kid(self) -> bytes:
        return cose.kid_of(cose.cert_der(self.cert))

    @classmethod
    def load(cls, key_path: Path | str, cert_path: Path | str) -> Signer:
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except FileNotFoundError:
            raise CredentialError(
                f"signer key not found: {key_path}; fix: run `checkpoint-scanner codes keygen DIR` "
                "or pass --signer-dir"
            ) from None
        except (OSError, ValueError, TypeError) as exc:
            raise CredentialError(
                f"cannot load signer key {key_path} ({exc}); fix: use an "
                "unencrypted PEM EC P-256 key"
            ) from None
        try:
            cert = load_certificate(cert_path, "signer certificate")
        except TrustDataError as exc:  # same one-line message, under the issuing tools' error
            raise CredentialError(str(exc)) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise CredentialError(
                f"signer key {key_path} is not EC P-256; fix: use keys from keygen"
            )
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            raise CredentialError(
                f"signer key {key_path} does not match {cert_path}; fix: pair them"
            )
        return cls(key, cert)


def issue_code(
    prefix: str,
    claim_key: int,
    claims: Mapping[str, Any],
    signer: Signer,
    *,
    issuer: str,
    iat: int | datetime,
    exp: int | datetime,
    nbf: int | datetime | None = None,
    cti: bytes | None = None,
) -> str:
    """Sign any private claim map into a prefixed code (no schema check: tests need bad ones)."""
    if prefix not in PREFIXES:
        raise CredentialError(f"unknown prefix {prefix!r}; fix: use one of {', '.join(PREFIXES)}")
    cwt: dict[int, Any] = {
        CLAIM_ISS: issuer,
        CLAIM_IAT: epoch_seconds(iat),
        CLAIM_EXP: epoch_seconds(exp),
        CLAIM_CTI: os.urandom(8) if cti is None else cti,
        claim_key: dict(claims),
    }
    if nbf is not None:
        cwt[CLAIM_NBF] = epoch_seconds(nbf)
    cose_bytes = cose.encode_sign1(signer.key, signer.kid, cbor2.dumps(cwt))
    return prefix + base45.b45encode(zlib.compress(cose_bytes, 9)).decode("ascii")


def issue_health(
    signer: Signer,
    *,
    colour: str | int,
    sid: bytes,
    masked_name: str,
    id_tail: str,
    region: str,
    issuer: str = DEFAULT_HEALTH_ISSUER,
    iat: int | datetime,
    exp: int | datetime,
    cti: bytes | None = None,
) -> str:
    """A ZHC1: health code. `sid` is a pseudonym (see `pseudonym`), never the ID itself."""
    col = COLOUR_CODES[colour] if isinstance(colour, str) else colour
    claims = {"v": "1", "col": col, "sid": sid, "nm": masked_name, "idt": id_tail, "rg": region}
    return issue_code(
        "ZHC1:", CLAIM_HEALTH, claims, signer, issuer=issuer, iat=iat, exp=exp, cti=cti
    )


def issue_residence(
    signer: Signer,
    *,
    house_id: str,
    village: str,
    grid: str,
    unit_label: str,
    tenant_sid: bytes,
    masked_name: str,
    id_tail: str,
    verified_by: str,
    issuer: str = DEFAULT_RESIDENCE_ISSUER,
    iat: int | datetime,
    nbf: int | datetime,
    exp: int | datetime,
    cti: bytes | None = None,
) -> str:
    """An AJM1: residence code; nbf is the move-in date, exp the lease end."""
    claims = {
        "v": "1",
        "hid": house_id,
        "vg": village,
        "grid": grid,
        "adr": unit_label,
        "tsid": tenant_sid,
        "nm": masked_name,
        "idt": id_tail,
        "vb": verified_by,
    }
    return issue_code(
        "AJM1:", CLAIM_RESIDENCE, claims, signer, issuer=issuer, iat=iat, exp=exp, nbf=nbf, cti=cti
    )


def pseudonym(secret: bytes, id_type: str, id_number: str) -> bytes:
    """HMAC-SHA256(secret, ID type + number)[:16] (docs/credentials.md section 2). The number is stripped and
    upper-cased first so "...123x" and "...123X" (the ID check digit) give one person."""
    message = (id_type + id_number.strip().upper()).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()[:16]


def qr_png(text: str, path: Path | str, scale: int = 8) -> Path:
    """A PNG QR: error correction Q (not boosted, to keep modules large), alphanumeric mode for
    Base45 text, which is exactly the QR alphanumeric character set (scanner.qrimage)."""
    from scanner.qrimage import make_qr

    make_qr(text).save(str(path), kind="png", scale=scale, border=4)
    return Path(path)
