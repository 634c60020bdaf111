"""Issue 10 item 7: whoever answers on the sync URL must not set the clock. Server time counts only
over verified HTTPS, and no time source is trusted earlier than the newest signed `generated_at`
in force (a lower bound the anchor signed)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from refserver import Centre, RefServer, make_tls
from test_trust_lane import one_passage
from test_trust_sync import sync_config

from scanner.clock import BELOW_FLOOR, FLOOR_TOLERANCE_S, Clock, ServerOffset
from scanner.config import Config
from scanner.credentials import KeySet, TrustStore
from scanner.credentials.bundles import Policy
from scanner.credentials.state import TrustState
from scanner.credentials.status import StatusIndex
from scanner.sync.fetch import Http
from scanner.sync.trust_sync import TrustSync, load_state, newest_signed_at

TWO_HOURS = 2 * 3600
NOW = 1_700_000_000.0


def at(ts: float) -> Any:
    return lambda: datetime.fromtimestamp(ts, UTC)


class FakeTime:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 1000.0


# ---------------------------------------------------------------- the floor, unit


def test_a_reading_earlier_than_signed_data_is_untrusted_whatever_its_source() -> None:
    off = ServerOffset()
    off.set_floor(lambda: NOW)
    ntp = Clock("system", now=at(NOW - TWO_HOURS), trusted=lambda: True, offset=off)
    st = ntp.state()
    assert (st.trusted, st.source, st.reason) == (False, "ntp", BELOW_FLOOR)
    assert ntp.trusted() is False
    # Within the tolerance: the centre's signing clock may run a little ahead.
    assert Clock("system", now=at(NOW - FLOOR_TOLERANCE_S + 1), trusted=lambda: True, offset=off).trusted()
    assert not Clock("system", now=at(NOW - FLOOR_TOLERANCE_S - 1), trusted=lambda: True, offset=off).trusted()
    # An explicit bound works without an offset object.
    assert not Clock("system", now=at(NOW - TWO_HOURS), trusted=lambda: True, lower_bound=lambda: NOW).trusted()
    # No signed data yet: no floor.
    assert Clock("system", now=at(NOW - TWO_HOURS), trusted=lambda: True, offset=ServerOffset()).trusted()
    # Simulation's "always" is exempt (config refuses it with real devices).
    assert Clock("always", now=at(NOW - TWO_HOURS), offset=off).trusted()


def test_a_server_offset_below_the_floor_is_refused_and_drops_the_old_one() -> None:
    t = FakeTime()
    off = ServerOffset(wall=lambda: t.wall, mono=lambda: t.mono)
    off.set_floor(lambda: NOW)
    assert off.record(NOW + 60, t.wall, t.mono) == pytest.approx(60, abs=0.01)  # sane: kept
    assert off.record(NOW - TWO_HOURS, t.wall, t.mono) is None  # 2 h before signed data: refused
    assert off.current() is None  # and the earlier measurement from that server goes with it
    clock = Clock("system", now=at(t.wall), trusted=lambda: False, offset=off)
    assert clock.state().trusted is False and clock.state().source == "none"
    # A measurement that lands the corrected clock below a floor raised later is untrusted at read time.
    floor = {"v": NOW}
    off.set_floor(lambda: floor["v"])
    assert off.record(NOW + 10, t.wall, t.mono) is not None
    floor["v"] = NOW + TWO_HOURS  # a bundle signed later arrives
    st = clock.state()
    assert (st.trusted, st.source, st.reason) == (False, "server", BELOW_FLOOR)


def test_the_floor_is_the_newest_signed_generated_at_and_only_rises(trust: TrustStore) -> None:
    now = int(time.time())
    assert trust.generated_at is not None
    state = TrustState(trust)  # every TrustState binds its floor
    assert newest_signed_at(state) == state.clock_offset.floor_s() == trust.generated_at
    state.update(status=StatusIndex(version=3, generated_at=now - 60, expires_at=now + 86400))
    assert state.clock_offset.floor_s() == now - 60
    state.update(policy=Policy(2, now - 10, now + 86400))
    assert state.clock_offset.floor_s() == now - 10
    state.update(policy=None, status=None)  # never lowered by what is in force later
    assert state.clock_offset.floor_s() == now - 10


# ---------------------------------------------------------------- plain HTTP never sets the clock


def test_http_date_counts_only_over_verified_https(tmp_path: Path, keyset: KeySet,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    for server, ca_bundle, counted in ((RefServer(), "", False), (RefServer(tls=(cert, key)), str(ca), True)):
        with server:
            Centre(keyset, server).publish(trust=b"x")
            server.content.time_shift_s = TWO_HOURS
            off = ServerOffset()
            http = Http(offset=off, ca_bundle=ca_bundle, connect_timeout_s=2, read_timeout_s=2)
            try:
                assert http.get(server.url + "/api/v1/trust-list", "trust list", accept=("application/cose",)).status \
                    == 200
            finally:
                http.close()
            assert (off.current() is not None) is counted, server.url
            if counted:
                assert off.current() == pytest.approx(TWO_HOURS, abs=3)
    assert "event=server_time_ignored" in caplog.text


def _expired_an_hour_ago(codes: Any) -> str:
    return str(codes.hc("green", age_h=25, valid_h=24))


def _assert_not_pass_untrusted(row: dict[str, Any]) -> None:
    assert row["verdict"] != "PASS"
    assert row["reasons"] in (["CLOCK_UNTRUSTED"], ["EXPIRED"])
    assert row["clock_trusted"] is False


def test_issue_input_server_two_hours_behind_over_plain_http(tmp_path: Path, keyset: KeySet, codes: Any) -> None:
    """The issue's input: no NTP, the sync server's Date 2 h behind, a code that expired an hour
    ago. Before: the clock took the server's time, trusted, and the code PASSed back-dated."""
    with RefServer() as server:
        centre = Centre(keyset, server)
        # Signed three days ago: the floor alone would not catch this server; the HTTPS rule must.
        centre.publish(trust=centre.trust_list(2, generated_ago_s=3 * 86400))
        server.content.time_shift_s = -TWO_HOURS
        cfg = sync_config(tmp_path, keyset, server.url)
        state = load_state(cfg)
        assert TrustSync(cfg, state).run_once()["trust"] == "updated to version 2"
    assert state.clock_offset.current() is None
    clock = Clock("system", trusted=lambda: False, offset=state.clock_offset)
    st = clock.state()
    assert not st.trusted and abs(st.now.timestamp() - time.time()) < 60  # not moved back 2 h
    row = one_passage(tmp_path / "lane", state, _expired_an_hour_ago(codes), clock=clock)
    _assert_not_pass_untrusted(row)
    assert row["reasons"] == ["CLOCK_UNTRUSTED"]
    ts = datetime.fromisoformat(row["ts_utc"]).timestamp()
    assert abs(ts - time.time()) < 60  # the record is not back-dated


def _tls_cfg(tmp_path: Path, keyset: KeySet, server: RefServer, ca: Path) -> Config:
    cfg = sync_config(tmp_path, keyset, server.url)
    return replace(cfg, sync=replace(cfg.sync, ca_bundle=str(ca)))


def test_verified_server_earlier_than_signed_data_is_refused(tmp_path: Path, keyset: KeySet, codes: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    with RefServer(tls=(cert, key)) as server:
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2))  # generated_at: now
        cfg = _tls_cfg(tmp_path, keyset, server, ca)
        state = load_state(cfg)
        assert TrustSync(cfg, state).run_once()["trust"] == "updated to version 2"
        server.content.time_shift_s = -TWO_HOURS  # a verified server whose clock is 2 h behind the data
        with caplog.at_level(logging.WARNING):
            TrustSync(cfg, state).run_once()
    assert state.clock_offset.current() is None
    assert "event=server_time_refused" in caplog.text
    clock = Clock("system", trusted=lambda: False, offset=state.clock_offset)
    assert clock.trusted() is False
    row = one_passage(tmp_path / "lane", state, _expired_an_hour_ago(codes), clock=clock)
    _assert_not_pass_untrusted(row)


def test_saved_signed_data_bounds_a_wrong_ntp_clock_after_reboot(tmp_path: Path, keyset: KeySet,
                                                                 codes: Any) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    with RefServer(tls=(cert, key)) as server:
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2))
        cfg = _tls_cfg(tmp_path, keyset, server, ca)
        TrustSync(cfg, load_state(cfg)).run_once()
    state = load_state(cfg)  # a reboot, offline: the list the sync saved is the floor
    assert state.version == 2 and state.clock_offset.floor_s() == pytest.approx(centre.now.timestamp())
    behind = time.time() - TWO_HOURS  # "synchronised" to a wrong NTP server, or restored by fake-hwclock
    clock = Clock("system", now=at(behind), trusted=lambda: True, offset=state.clock_offset)
    st = clock.state()
    assert (st.trusted, st.reason) == (False, BELOW_FLOOR)
    row = one_passage(tmp_path / "lane", state, _expired_an_hour_ago(codes), clock=clock)
    _assert_not_pass_untrusted(row)
    # The same clock on true time is trusted and the expired code is EXPIRED (DENY), never PASS.
    row = one_passage(tmp_path / "lane2", state, _expired_an_hour_ago(codes),
                      clock=Clock("system", trusted=lambda: True, offset=state.clock_offset))
    assert row["clock_trusted"] is True and row["reasons"] == ["EXPIRED"] and row["verdict"] != "PASS"


def test_a_confirmation_is_stamped_only_by_a_trusted_clock(tmp_path: Path, keyset: KeySet) -> None:
    with RefServer() as server:
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2, generated_ago_s=3 * 86400))
        cfg = sync_config(tmp_path, keyset, server.url)
        state = load_state(cfg)
        ahead = Clock("system", now=at(time.time() + 30 * 86400), trusted=lambda: False)  # wall clock a month ahead
        TrustSync(cfg, state, clock=ahead).run_once()
        assert state.version == 2 and "trust" not in state.snapshot().confirmed_at
        TrustSync(cfg, state, clock=Clock("system", trusted=lambda: True)).run_once()  # 304: confirmed now
        assert state.snapshot().confirmed_at["trust"] == pytest.approx(time.time(), abs=60)
