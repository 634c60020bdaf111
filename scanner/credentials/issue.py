"""Issuing tools for technicians, demos and tests: keys, certificates, trust lists and codes.

Real codes are issued by the health authority and street offices; these tools let a technician
stand up a complete demo trust chain on a laptop and let tests build every failure case from
real signatures instead of mocks. Payloads are kept small (8-byte cti, zlib level 9) so the QR
modules stay large enough for sunlight and phone screens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import base45
import cbor2
import segno
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import CredentialError
from . import cose
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
from .trust import load_certificate

COLOUR_CODES = {"green": 0, "yellow": 1, "red": 2}
DEFAULT_HEALTH_ISSUER = "CN-330000-HC"
DEFAULT_RESIDENCE_ISSUER = "CN-330381-JD01"


def _ts(value: int | datetime) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


@dataclass(frozen=True)
class KeySet:
    """Where `generate_keys` put everything. Keys are 0600; hand out only certs and the list."""

    directory: Path
    anchor_key: Path
    anchor_cert: Path
    health_key: Path
    health_cert: Path
    residence_key: Path
    residence_cert: Path
    trust_list: Path
    pseudonym_secret: Path


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
            raise CredentialError(f"cannot load signer key {key_path} ({exc}); fix: use an "
                                  "unencrypted PEM EC P-256 key") from None
        try:
            cert = load_certificate(cert_path, "signer certificate")
        except Exception as exc:
            raise CredentialError(str(exc)) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CredentialError(f"signer key {key_path} is not EC P-256; fix: use keys from keygen")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise CredentialError(f"signer key {key_path} does not match {cert_path}; fix: pair them")
        return cls(key, cert)


class SignerEntry(NamedTuple):
    """One trust list entry: which certificate may issue which credential types."""

    cert: x509.Certificate
    types: tuple[str, ...]
    issuer: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey, not_before: datetime, days: int, ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_private(path: Path, data: bytes) -> None:
    """Create with 0600 from the start: a key must never be readable, even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate_keys(
    out_dir: Path | str,
    *,
    now: datetime | None = None,
    validity_days: int = 730,
    trust_list_days: int = 90,
    overwrite: bool = False,
) -> KeySet:
    """A demo trust chain: anchor (self-signed), health and street-office signers certified by
    it, their keys (0600), a pseudonym secret and a signed `trust-list.cose` listing both."""
    directory = Path(out_dir)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    ks = KeySet(
        directory, directory / "anchor.key", directory / "anchor.pem", directory / "health.key",
        directory / "health.pem", directory / "residence.key", directory / "residence.pem",
        directory / "trust-list.cose", directory / "pseudonym.secret",
    )
    if not overwrite and ks.anchor_key.exists():
        raise CredentialError(f"{directory} already holds keys; fix: choose an empty directory "
                              "or pass --force to replace them (old codes stop verifying)")
    directory.mkdir(parents=True, exist_ok=True)
    anchor_key = ec.generate_private_key(ec.SECP256R1())
    anchor = _make_cert("checkpoint-scanner trust anchor", anchor_key, None, anchor_key, now,
                        max(validity_days, 3650), ca=True)
    entries: list[SignerEntry] = []
    for key_path, cert_path, cn, types, issuer in (
        (ks.health_key, ks.health_cert, "health code signer", ("health",), DEFAULT_HEALTH_ISSUER),
        (ks.residence_key, ks.residence_cert, "street office signer", ("residence",),
         DEFAULT_RESIDENCE_ISSUER),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_cert(cn, key, anchor, anchor_key, now, validity_days, ca=False)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(_cert_pem(cert))
        entries.append(SignerEntry(cert, types, issuer))
    _write_private(ks.anchor_key, _key_pem(anchor_key))
    ks.anchor_cert.write_bytes(_cert_pem(anchor))
    _write_private(ks.pseudonym_secret, os.urandom(32))
    expires = now + timedelta(days=trust_list_days)
    ks.trust_list.write_bytes(sign_trust_list(anchor_key, anchor, entries, 1, now, expires))
    return ks


def sign_trust_list(
    anchor_key: ec.EllipticCurvePrivateKey,
    anchor_cert: x509.Certificate,
    signers: Iterable[SignerEntry | tuple[x509.Certificate, Iterable[str], str]],
    version: int,
    generated_at: int | datetime,
    expires_at: int | datetime,
) -> bytes:
    """The trust list file: raw CBOR of a tagged COSE_Sign1, protected {1: -7, 4: anchor kid},
    payload UTF-8 JSON (CODES.md section 3)."""
    listed = []
    for cert, types, issuer in signers:
        der = cose.cert_der(cert)
        listed.append({
            "kid": base64.b64encode(cose.kid_of(der)).decode("ascii"),
            "cert": base64.b64encode(der).decode("ascii"),
            "types": list(types),
            "issuer": issuer,
        })
    doc = {"version": int(version), "generated_at": _ts(generated_at),
           "expires_at": _ts(expires_at), "signers": listed}
    payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return cose.encode_sign1(anchor_key, cose.kid_of(cose.cert_der(anchor_cert)), payload)


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
    cwt: dict[int, Any] = {CLAIM_ISS: issuer, CLAIM_IAT: _ts(iat), CLAIM_EXP: _ts(exp),
                           CLAIM_CTI: os.urandom(8) if cti is None else cti, claim_key: dict(claims)}
    if nbf is not None:
        cwt[CLAIM_NBF] = _ts(nbf)
    cose_bytes = cose.encode_sign1(signer.key, signer.kid, cbor2.dumps(cwt))
    return prefix + base45.b45encode(zlib.compress(cose_bytes, 9)).decode("ascii")


def issue_health(
    signer: Signer, *, colour: str | int, sid: bytes, masked_name: str, id_tail: str, region: str,
    issuer: str = DEFAULT_HEALTH_ISSUER, iat: int | datetime, exp: int | datetime,
    cti: bytes | None = None,
) -> str:
    """A ZHC1: health code. `sid` is a pseudonym (see `pseudonym`), never the ID itself."""
    col = COLOUR_CODES[colour] if isinstance(colour, str) else colour
    claims = {"v": "1", "col": col, "sid": sid, "nm": masked_name, "idt": id_tail, "rg": region}
    return issue_code("ZHC1:", CLAIM_HEALTH, claims, signer, issuer=issuer, iat=iat, exp=exp, cti=cti)


def issue_residence(
    signer: Signer, *, house_id: str, village: str, grid: str, unit_label: str, tenant_sid: bytes,
    masked_name: str, id_tail: str, verified_by: str, issuer: str = DEFAULT_RESIDENCE_ISSUER,
    iat: int | datetime, nbf: int | datetime, exp: int | datetime, cti: bytes | None = None,
) -> str:
    """An AJM1: residence code; nbf is the move-in date, exp the lease end."""
    claims = {"v": "1", "hid": house_id, "vg": village, "grid": grid, "adr": unit_label,
              "tsid": tenant_sid, "nm": masked_name, "idt": id_tail, "vb": verified_by}
    return issue_code("AJM1:", CLAIM_RESIDENCE, claims, signer, issuer=issuer, iat=iat, exp=exp,
                      nbf=nbf, cti=cti)


def pseudonym(secret: bytes, id_type: str, id_number: str) -> bytes:
    """HMAC-SHA256(secret, ID type + number)[:16] (CODES.md). The number is stripped and
    upper-cased first so "...123x" and "...123X" (the ID check digit) give one person."""
    message = (id_type + id_number.strip().upper()).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()[:16]


def qr_png(text: str, path: Path | str, scale: int = 8) -> Path:
    """A PNG QR: error correction Q (not boosted, to keep modules large), alphanumeric mode for
    Base45 text, which is exactly the QR alphanumeric character set."""
    alnum = all(c in base45.BASE45_CHARSET for c in text)
    qr = segno.make_qr(text, error="q", boost_error=False, mode="alphanumeric" if alnum else None)
    qr.save(str(path), kind="png", scale=scale, border=4)
    return Path(path)
