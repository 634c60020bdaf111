"""Shared fixtures: a demo trust chain (made once per session), codes, lane configs."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import qrframes and emulated_mlx90614

from scanner.credentials import KeySet, Signer, TrustStore, generate_keys, issue_health, issue_residence


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return generate_keys(tmp_path_factory.mktemp("keys"), now=datetime.now(UTC) - timedelta(days=30))


@pytest.fixture(scope="session")
def trust(keyset: KeySet) -> TrustStore:
    return TrustStore.load(keyset.trust_list, keyset.anchor_cert)


class Codes:
    """Issue test codes with the session's signers."""

    def __init__(self, ks: KeySet) -> None:
        self.health = Signer.load(ks.health_key, ks.health_cert)
        self.street = Signer.load(ks.residence_key, ks.residence_cert)
        self.n = 0

    def hc(self, colour: str = "green", age_h: float = 1.0, valid_h: float = 24.0) -> str:
        self.n += 1
        iat = datetime.now(UTC) - timedelta(hours=age_h)
        return issue_health(self.health, colour=colour, sid=bytes([self.n % 256]) * 16, masked_name="陈*聪",
                            id_tail="123X", region="330381", iat=iat, exp=iat + timedelta(hours=valid_h))

    def ajm(self, village: str = "330381001001") -> str:
        self.n += 1
        now = datetime.now(UTC)
        return issue_residence(self.street, house_id="H1", village=village, grid="G7", unit_label="3幢2单元502",
                               tenant_sid=bytes([self.n % 256]) * 16, masked_name="林*", id_tail="0421",
                               verified_by="塘下街道", iat=now - timedelta(days=3), nbf=now - timedelta(days=2),
                               exp=now + timedelta(days=200))


@pytest.fixture(scope="session")
def codes(keyset: KeySet) -> Codes:
    return Codes(keyset)
