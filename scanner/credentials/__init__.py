"""Signed credentials: health codes (ZHC1:), residence codes (AJM1:) and EU DCCs (HC1:).

One pipeline (docs/credentials.md): prefix -> Base45 -> zlib -> COSE_Sign1 -> signature -> signer fitness ->
time -> status list -> claims. `verify()` never raises on a payload; `TrustStore.load()` raises
TrustDataError with a message that names the fix. The issuing tools build demo trust chains.
Signed trust-data bundles (trust list, status list, policy) are in `bundles`; `TrustState` holds
the snapshot in force that the sync replaces and the lane checks against.
"""

from __future__ import annotations

from .issue import (
    KeySet,
    Signer,
    SignerEntry,
    generate_keys,
    issue_code,
    issue_health,
    issue_residence,
    pseudonym,
    qr_png,
    sign_trust_list,
)
from .state import TrustSnapshot, TrustState
from .status import StatusIndex, StatusList, StatusSource
from .trust import TrustedSigner, TrustStore
from .verify import REASON_CODES, Verification, verify

__all__ = [
    "REASON_CODES",
    "KeySet",
    "Signer",
    "SignerEntry",
    "StatusIndex",
    "StatusList",
    "StatusSource",
    "TrustSnapshot",
    "TrustState",
    "TrustStore",
    "TrustedSigner",
    "Verification",
    "generate_keys",
    "issue_code",
    "issue_health",
    "issue_residence",
    "pseudonym",
    "qr_png",
    "sign_trust_list",
    "verify",
]
