"""The lane with live trust data: the clock, the status list, the centre's policy and staleness
decide through the real lane loop (replayed QR frames, scripted thermometer, mock pins), and a
misbehaving server never disturbs a passage."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from qrframes import make_frame
from refserver import Centre, RefServer
from test_lane import Harness, lane_config
from test_trust_sync import sync_config
from waiting import wait_until

from scanner.clock import Clock
from scanner.credentials import KeySet, StatusList, TrustStore
from scanner.credentials.bundles import Policy
from scanner.credentials.state import TrustState
from scanner.credentials.status import StatusIndex
from scanner.sync import trust_sync
from scanner.sync.trust_sync import TrustSync, load_state

NORMAL_SKIN_C = 34.6  # 36.6 °C after the lane config's +2.0 offset


def one_passage(tmp_path: Path, trust: Any, code: str, skin_c: float | None = NORMAL_SKIN_C,
                clock: Clock | None = None) -> dict[str, Any]:
    h = Harness(tmp_path, trust, [make_frame(code)], skin_c=skin_c)
    if clock is not None:
        h.lane.clock = clock
    with h:
        assert wait_until(lambda: len(h.rows) == 1)
        return h.store.rows()[0]


def test_an_untrusted_clock_never_yields_pass(tmp_path: Path, trust: TrustStore, codes: Any) -> None:
    row = one_passage(tmp_path, trust, codes.hc("green"), clock=Clock("system", trusted=lambda: False))
    assert row["verdict"] == "REVIEW" and row["reasons"] == ["CLOCK_UNTRUSTED"]
    assert row["clock_trusted"] is False


def test_the_centres_fever_threshold_overrides_the_config(tmp_path: Path, trust: TrustStore, codes: Any) -> None:
    now = int(datetime.now(UTC).timestamp())
    state = TrustState(trust, policy=Policy(3, now, now + 86400, fever_threshold_c=36.5))
    row = one_passage(tmp_path, state, codes.hc("green"))
    assert row["verdict"] == "DENY" and row["reasons"] == ["FEVER"]
    assert row["temperature_c"] < 37.3  # below the config's threshold: the policy decided


def test_status_list_revocation_and_colour_update_through_the_lane(tmp_path: Path, trust: TrustStore,
                                                                   codes: Any) -> None:
    revoked_code = codes.hc("green")
    token = TrustState(trust).check(revoked_code, Clock("always"), lane_config(tmp_path)).token_hash
    assert token is not None
    state = TrustState(trust, StatusList(revoked=[token]))
    row = one_passage(tmp_path / "a", state, revoked_code, skin_c=None)
    assert row["verdict"] == "DENY" and row["reasons"] == ["REVOKED"]
    green = codes.hc("green")
    v = TrustState(trust).check(green, Clock("always"), lane_config(tmp_path))
    state = TrustState(trust, StatusIndex.from_packed(subjects=v.subject_hash or b"", colours=b"\x02"))
    row = one_passage(tmp_path / "b", state, green, skin_c=None)
    assert row["verdict"] == "DENY" and row["reasons"] == ["HEALTH_RED"]  # turned red after issue


def test_expired_status_list_turns_green_into_review(tmp_path: Path, trust: TrustStore, codes: Any) -> None:
    now = int(datetime.now(UTC).timestamp())
    stale = StatusIndex(version=4, generated_at=now - 3 * 86400, expires_at=now - 3600)
    row = one_passage(tmp_path, TrustState(trust, stale), codes.hc("green"))
    assert row["verdict"] == "REVIEW" and row["reasons"] == ["TRUST_DATA_EXPIRED"]


def test_stale_data_is_review_until_the_server_confirms_it(tmp_path: Path, trust: TrustStore, codes: Any) -> None:
    """Issue 10 item 6: trust data past its max age withholds a PASS (REVIEW TRUST_DATA_STALE)."""
    now = int(datetime.now(UTC).timestamp())
    old = StatusIndex(version=4, generated_at=now - 3 * 86400, expires_at=now + 86400)
    state = TrustState(trust, old)
    cfg = lane_config(tmp_path)
    v = state.check(codes.hc("green"), Clock("always"), cfg)
    assert v.ok and "STATUS_DATA_STALE" in v.warnings and "TRUST_DATA_EXPIRED" not in v.warnings
    row = one_passage(tmp_path / "a", state, codes.hc("green"))
    assert row["verdict"] == "REVIEW" and row["reasons"] == ["TRUST_DATA_STALE"]
    state.confirm("status", now)  # the server just said it is still current
    assert "STATUS_DATA_STALE" not in state.check(codes.hc("green"), Clock("always"), cfg).warnings
    row = one_passage(tmp_path / "b", state, codes.hc("green"))
    assert row["verdict"] == "PASS"


def test_lane_keeps_passing_people_while_the_server_misbehaves(tmp_path: Path, keyset: KeySet, codes: Any) -> None:
    with RefServer() as server:
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2))
        centre.status_version = 1
        centre.publish_snapshot()
        cfg = sync_config(tmp_path, keyset, server.url)
        state = load_state(cfg)
        TrustSync(cfg, state).run_once()
        assert state.version == 2
        centre.publish(trust=centre.trust_list(3))
        centre.status_version = 2
        centre.publish_snapshot()
        server.content.diffs.clear()
        server.fault("trust", "wrong_signature")
        server.fault("snapshot", "truncated")
        server.fault("diff", "slow")
        stop = threading.Event()
        thread = trust_sync.start(cfg, state, stop)
        try:
            row = one_passage(tmp_path / "lane", state, codes.hc("green"))
            # the sync's round against the misbehaving server really happened meanwhile
            assert wait_until(lambda: len(server.requests_to("trust")) >= 2
                              and len(server.requests_to("snapshot")) >= 2)
        finally:
            stop.set()
            thread.join(timeout=5)
        assert row["verdict"] == "PASS" and row["trust_version"] == 2
        assert state.snapshot().version("status") == 1


def test_provincial_code_through_the_lane_online(tmp_path: Path, trust: TrustStore,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import hashlib
    import logging
    from dataclasses import replace

    from scanner import device_secret
    from scanner.sync.online import OnlineVerifier

    text = "RAHC:0123456789ABCDEFGHIJ4242"
    caplog.set_level(logging.DEBUG)
    with RefServer() as server:
        server.content.answers[text] = {"code_color": "init"}
        for answer, verdict, reasons in (("green", "PASS", ["OK"]), ("init", "REVIEW", ["HEALTH_PENDING"])):
            server.content.answers[text] = {"code_color": answer}
            h = Harness(tmp_path / answer, trust, [make_frame(text)], skin_c=NORMAL_SKIN_C)
            h.lane.cfg = replace(h.cfg, sync=replace(h.cfg.sync, server_url=server.url,
                                                     online_patterns=(r"RAHC:[0-9A-Z]{20,64}",)))
            h.lane.online = OnlineVerifier.from_config(h.lane.cfg)
            with h:
                assert wait_until(lambda h=h: len(h.rows) == 1)  # type: ignore[misc]
                row = h.store.rows()[0]
            h.lane.online.close()  # type: ignore[union-attr]
            assert (row["verdict"], row["reasons"]) == (verdict, reasons)
            # keyed with this device's secret, never the plain SHA-256 anyone could recompute
            secret = device_secret.read(device_secret.path_for_store(h.cfg.store.path))
            assert row["token_hash"] == secret.hexdigest(text.encode(), 32)
            assert row["token_hash"] != hashlib.sha256(text.encode()).hexdigest()[:32]
        assert len(server.requests_to("verify")) == 2
    assert text not in caplog.text and text[5:] not in caplog.text


def test_policy_clock_skew_and_max_code_age_override_the_config(tmp_path: Path, trust: TrustStore,
                                                                codes: Any) -> None:
    cfg = lane_config(tmp_path)  # clock_skew_s = 300 by default
    now = int(datetime.now(UTC).timestamp())
    early = codes.hc(age_h=-10 / 60)  # issued "10 minutes from now": this device's clock is behind
    old = codes.hc(age_h=5)
    plain = TrustState(trust)
    assert plain.check(early, Clock("always"), cfg).code == "NOT_YET_VALID"
    assert plain.check(old, Clock("always"), cfg).code == "VALID"
    centre = TrustState(trust, policy=Policy(2, now, now + 86400, clock_skew_s=900, max_code_age_s=4 * 3600))
    assert centre.check(early, Clock("always"), cfg).code == "VALID"
    assert centre.check(old, Clock("always"), cfg).code == "EXPIRED"  # screenshots age out sooner
    expired_policy = TrustState(trust, policy=Policy(2, now - 7200, now - 3600))
    v = expired_policy.check(codes.hc(), Clock("always"), cfg)
    assert v.ok and {"POLICY_EXPIRED", "TRUST_DATA_EXPIRED"} <= set(v.warnings)
