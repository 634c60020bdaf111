"""Demo trust chains: an anchor, signer certificates, their keys and a signed trust list.

Real anchors and signers belong to the health authority and street offices; these tools let a
technician stand up a complete chain on a laptop, and let tests build every failure case from
real signatures instead of mocks. `sign_trust_list` writes exactly the file format devices load.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import CredentialError
from . import cose
from .bundles import epoch_seconds

DEFAULT_HEALTH_ISSUER = "CN-330000-HC"
DEFAULT_RESIDENCE_ISSUER = "CN-330381-JD01"


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


class SignerEntry(NamedTuple):
    """One trust list entry: which certificate may issue which credential types."""

    cert: x509.Certificate
    types: tuple[str, ...]
    issuer: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    days: int,
    ca: bool,
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
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
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
        directory,
        directory / "anchor.key",
        directory / "anchor.pem",
        directory / "health.key",
        directory / "health.pem",
        directory / "residence.key",
        directory / "residence.pem",
        directory / "trust-list.cose",
        directory / "pseudonym.secret",
    )
    if not overwrite and ks.anchor_key.exists():
        raise CredentialError(
            f"{directory} already holds keys; fix: choose an empty directory "
            "or pass --force to replace them (old codes stop verifying)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    anchor_key = ec.generate_private_key(ec.SECP256R1())
    anchor = _make_cert(
        "checkpoint-scanner trust anchor",
        anchor_key,
        None,
        anchor_key,
        now,
        max(validity_days, 3650),
        ca=True,
    )
    entries: list[SignerEntry] = []
    for key_path, cert_path, cn, types, issuer in (
        (ks.health_key, ks.health_cert, "health code signer", ("health",), DEFAULT_HEALTH_ISSUER),
        (
            ks.residence_key,
            ks.residence_cert,
            "street office signer",
            ("residence",),
            DEFAULT_RESIDENCE_ISSUER,
        ),
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
    payload UTF-8 JSON (docs/credentials.md section 3)."""
    listed = []
    for cert, types, issuer in signers:
        der = cose.cert_der(cert)
        listed.append(
            {
                "kid": base64.b64encode(cose.kid_of(der)).decode("ascii"),
                "cert": base64.b64encode(der).decode("ascii"),
                "types": list(types),
                "issuer": issuer,
            }
        )
    doc = {
        "version": int(version),
        "generated_at": epoch_seconds(generated_at),
        "expires_at": epoch_seconds(expires_at),
        "signers": listed,
    }
    payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return cose.encode_sign1(anchor_key, cose.kid_of(cose.cert_der(anchor_cert)), payload)
