"""COSE_Sign1 signatures (RFC 9052) with the `cryptography` package: Sig_structure, ES256, PS256.

Only two algorithms exist here on purpose: ES256 (-7) for everything and PS256 (-37) for EU DCCs.
The algorithm must also match the key type, so a header cannot steer an EC key into RSA code or
the other way round (DCC case CO27).
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ALG_ES256 = -7
ALG_PS256 = -37

#: ES256 signatures are raw r||s, 32 bytes each (RFC 9053 section 2.1). DER or any other length
#: is refused rather than "repaired" (DCC case CO24: a wrong signature must not crash).
ES256_SIGNATURE_BYTES = 64
MIN_RSA_BITS = 2048


def kid_of(cert_der: bytes) -> bytes:
    """kid = first 8 bytes of SHA-256 over the signer certificate DER (docs/credentials.md section 1, as in the DCC)."""
    return hashlib.sha256(cert_der).digest()[:8]


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def sig_structure(protected_bstr: bytes, payload: bytes) -> bytes:
    """["Signature1", protected, external_aad = b"", payload]: the bytes actually signed."""
    return cbor2.dumps(["Signature1", protected_bstr, b"", payload])


def allowed_algs(kind: str) -> frozenset[int]:
    """PS256 is allowed only for DCCs; our own codes are always ES256."""
    return frozenset({ALG_ES256, ALG_PS256}) if kind == "dcc" else frozenset({ALG_ES256})


def verify_signature(
    alg: Any, public_key: Any, protected_bstr: bytes, payload: bytes, signature: bytes
) -> bool:
    """True only for a good signature by `public_key` under an algorithm that fits the key.
    Never raises for bad input: a wrong length, a wrong key type or garbage is just False."""
    if isinstance(alg, bool) or not isinstance(alg, int):
        return False
    data = sig_structure(protected_bstr, payload)
    try:
        if alg == ALG_ES256:
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                return False
            if not isinstance(public_key.curve, ec.SECP256R1):
                return False
            if len(signature) != ES256_SIGNATURE_BYTES:
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == ALG_PS256:
            if not isinstance(public_key, rsa.RSAPublicKey):
                return False
            if public_key.key_size < MIN_RSA_BITS or len(signature) != public_key.key_size // 8:
                return False
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            public_key.verify(signature, data, pss, hashes.SHA256())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def sign_es256(
    private_key: ec.EllipticCurvePrivateKey, protected_bstr: bytes, payload: bytes
) -> bytes:
    """Sign the Sig_structure and return raw r||s (64 bytes), the COSE wire form."""
    der = private_key.sign(sig_structure(protected_bstr, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def encode_sign1(
    private_key: ec.EllipticCurvePrivateKey, kid: bytes, payload: bytes, *, tagged: bool = True
) -> bytes:
    """A COSE_Sign1 with protected {1: -7, 4: kid}, empty unprotected header, attached payload."""
    protected_bstr = cbor2.dumps({1: ALG_ES256, 4: kid})
    signature = sign_es256(private_key, protected_bstr, payload)
    body = [protected_bstr, {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)
