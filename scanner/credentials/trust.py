"""The trust list: which signer certificates may issue which credential types (docs/credentials.md section 3).

The list is a COSE_Sign1 (ES256) over UTF-8 JSON, signed by the trust anchor whose certificate is
pinned in the device config. `TrustStore.load` refuses anything the anchor did not sign, so a
tampered or foreign list can never add a signer; its errors name the fix because a technician
reads them at a gate.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import TrustDataError
from . import cose

KNOWN_TYPES = frozenset({"health", "residence", "dcc"})

#: EU DCC extended key usage OIDs -> the DCC entry type a signer may issue. The ".0." variants
#: are in the DCC test data and accepted by the EU reference apps, so both are honoured here.
_DCC_USAGE_OIDS: dict[str, str] = {
    "1.3.6.1.4.1.1847.2021.1.1": "t",
    "1.3.6.1.4.1.1847.2021.1.2": "v",
    "1.3.6.1.4.1.1847.2021.1.3": "r",
    "1.3.6.1.4.1.0.1847.2021.1.1": "t",
    "1.3.6.1.4.1.0.1847.2021.1.2": "v",
    "1.3.6.1.4.1.0.1847.2021.1.3": "r",
}


@dataclass(frozen=True)
class TrustedSigner:
    """One signer certificate from the trust list, reduced to what verification needs."""

    kid: bytes
    cert: x509.Certificate
    public_key: Any
    types: frozenset[str]
    issuer: str | None
    not_before: int
    not_after: int
    #: DCC entry types ("t", "v", "r") this cert may sign, or None when its EKU names none
    #: (then all are allowed, as in the EU rules; DCC case CO15).
    dcc_usage: frozenset[str] | None = None


def _dcc_usage(cert: x509.Certificate) -> frozenset[str] | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except Exception:  # absent, or present but unparsable (CO15 has an empty EKU): no limit
        return None
    usage = frozenset(
        _DCC_USAGE_OIDS[o.dotted_string] for o in eku if o.dotted_string in _DCC_USAGE_OIDS
    )
    return usage or None


def make_signer(
    cert_der: bytes, types: Iterable[str], issuer: str | None = None, kid: bytes | None = None
) -> TrustedSigner:
    """Build a TrustedSigner; ValueError when the certificate or its key is unusable."""
    cert = x509.load_der_x509_certificate(cert_der)
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("EC signer keys must be P-256")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < cose.MIN_RSA_BITS:
            raise ValueError("RSA signer keys must have at least 2048 bits")
    else:
        raise ValueError("signer key must be EC P-256 or RSA")
    return TrustedSigner(
        kid=kid if kid is not None else cose.kid_of(cert_der),
        cert=cert,
        public_key=key,
        types=frozenset(types),
        issuer=issuer,
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()),
        dcc_usage=_dcc_usage(cert),
    )


def load_certificate(path: Path | str, what: str = "anchor certificate") -> x509.Certificate:
    """A certificate from a PEM or DER file, with one-line errors that name the fix."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrustDataError(
            f"{what} not found: {path}; fix: check the path (certificates come from the central "
            "server, or from `checkpoint-scanner codes keygen DIR` for a demo)"
        ) from None
    except OSError as exc:
        raise TrustDataError(
            f"cannot read {what} {path}: {exc.strerror}; fix: check permissions"
        ) from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise TrustDataError(
            f"{what} {path} is not a PEM or DER X.509 certificate; fix: copy the right file"
        ) from None


class TrustStore:
    """Signers by kid, plus the list's version and validity. Immutable after construction:
    the sync thread swaps in a whole new store, so a scan never sees half a list."""

    def __init__(
        self,
        signers: Iterable[TrustedSigner],
        *,
        version: int = 0,
        generated_at: int | None = None,
        expires_at: int | None = None,
        anchor_kid: bytes | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        self.version = version
        self.generated_at = generated_at
        self.expires_at = expires_at
        self.anchor_kid = anchor_kid
        #: Signer entries skipped while loading (bad certificate, bad base64), one line each.
        self.problems: tuple[str, ...] = tuple(problems)
        by_kid: dict[bytes, list[TrustedSigner]] = {}
        for signer in signers:
            by_kid.setdefault(signer.kid, []).append(signer)
        self._by_kid = by_kid

    def signers_for(self, kid: bytes | None) -> list[TrustedSigner]:
        """All signers with this kid: kids are 8 bytes, so several may collide; try them all."""
        if kid is None:
            return []
        return list(self._by_kid.get(kid, ()))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_kid.values())

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now.timestamp() > self.expires_at

    @classmethod
    def from_certificates(
        cls, certs_der: Iterable[bytes | x509.Certificate], types: Iterable[Any] | str
    ) -> TrustStore:
        """A store without a signed list (tests, DCC vectors, tools). `types` is one iterable of
        type names for every certificate, or one iterable per certificate."""
        ders = [c if isinstance(c, bytes) else cose.cert_der(c) for c in certs_der]
        type_list = [types] if isinstance(types, str) else list(types)
        if all(isinstance(t, str) for t in type_list):
            per_cert: list[Iterable[str]] = [type_list] * len(ders)
        else:
            per_cert = [[t] if isinstance(t, str) else list(t) for t in type_list]
            if len(per_cert) != len(ders):
                raise TrustDataError("from_certificates: give one list of types per certificate")
        try:
            signers = [make_signer(d, t) for d, t in zip(ders, per_cert, strict=True)]
        except ValueError as exc:
            raise TrustDataError(f"unusable signer certificate: {exc}") from None
        return cls(signers)

    @classmethod
    def load(cls, trust_list_path: Path | str, anchor_cert_path: Path | str) -> TrustStore:
        """Read and verify a signed trust list against the pinned anchor certificate.

        Raises TrustDataError (one line, names the fix) when the list is missing, unreadable,
        not a COSE_Sign1, signed by another anchor, or its signature does not verify."""
        path = Path(trust_list_path)
        anchor = load_certificate(anchor_cert_path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise TrustDataError(
                f"trust list not found: {path}; fix: copy trust-list.cose from the central server "
                "(or create a demo one with `checkpoint-scanner codes keygen DIR`)"
            ) from None
        except OSError as exc:
            raise TrustDataError(
                f"cannot read trust list {path}: {exc.strerror}; fix: check permissions"
            ) from None
        return cls.from_bytes(raw, anchor, source=str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, anchor: x509.Certificate, source: str = "") -> TrustStore:
        """Verify a signed trust list (file contents or a download) against the pinned anchor.
        TrustDataError, one line naming the fix, when it is not exactly what the anchor signed."""
        from .bundles import KIND_TRUST, open_bundle

        bundle = open_bundle(raw, anchor, KIND_TRUST, source)
        doc = bundle.doc
        if not isinstance(doc.get("signers"), list):
            raise TrustDataError(
                f"trust list {source} has no 'signers' array; fix: download the trust list again; "
                "the previous list stays in force"
            )
        signers, problems = _parse_signers(doc["signers"])
        return cls(
            signers,
            version=bundle.version,
            generated_at=bundle.generated_at,
            expires_at=bundle.expires_at,
            anchor_kid=cose.kid_of(cose.cert_der(anchor)),
            problems=problems,
        )


def _parse_signers(entries: list[Any]) -> tuple[list[TrustedSigner], list[str]]:
    """Signed but malformed entries are skipped and reported, not fatal: one bad certificate
    from the server must not leave the gate without any trusted signer."""
    signers: list[TrustedSigner] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise ValueError("entry is not an object")
            kid = base64.b64decode(entry["kid"], validate=True)
            der = base64.b64decode(entry["cert"], validate=True)
            types = entry["types"]
            if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
                raise ValueError("'types' must be a list of strings")
            issuer = entry.get("issuer")
            if issuer is not None and not isinstance(issuer, str):
                raise ValueError("'issuer' must be text")
            signers.append(make_signer(der, types, issuer, kid=kid))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            problems.append(f"signer #{i} skipped: {exc}")
    return signers, problems
