"""Clock trust (kernel NTP or a recent server offset with no wall-clock jump since), the online path
for provincial codes (docs/credentials.md section 6), HTTPS with a pinned CA bundle, and EU DCCs through a
synced trust list."""

from __future__ import annotations

import base64
import json
import logging
import time
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest
from refserver import Centre, RefServer, make_tls
from test_trust_sync import sync_config

from scanner.clock import Clock, ServerOffset
from scanner.config import Config
from scanner.credentials import KeySet
from scanner.credentials.keygen import SignerEntry
from scanner.credentials.state import TrustState, online_text
from scanner.credentials.trust import TrustStore
from scanner.sync.online import OnlineVerifier
from scanner.sync.trust_sync import TrustSync, load_state

PATTERN = r"RAHC:[0-9A-Z]{20,64}"
PROVINCIAL = "RAHC:0123456789ABCDEFGHIJ4242"


class FakeTime:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 1000.0

    def tick(self, s: float) -> None:
        self.wall += s
        self.mono += s


# ---------------------------------------------------------------- clock


def test_server_offset_holds_until_stale_or_the_wall_clock_jumps() -> None:
    t = FakeTime()
    off = ServerOffset(max_age_s=3600, max_jump_s=5, wall=lambda: t.wall, mono=lambda: t.mono)
    assert off.current() is None
    sent_wall, sent_mono = t.wall, t.mono
    t.tick(0.2)
    offset = off.record(t.wall + 7200.1, sent_wall, sent_mono)  # the server is two hours ahead
    assert offset == pytest.approx(7200.2, abs=0.01)
    t.tick(1800)
    assert off.current() == pytest.approx(7200.2, abs=0.01)
    t.wall += 3.0  # drift and slewing: within tolerance
    assert off.current() is not None
    t.wall -= 600  # someone sets the clock back: a jump
    assert off.current() is None
    assert off.current() is None  # and it stays dropped until the next sync
    off.record(t.wall, t.wall, t.mono)
    t.tick(3601)
    assert off.current() is None  # too old


def test_slow_round_trip_gives_no_offset() -> None:
    t = FakeTime()
    off = ServerOffset(wall=lambda: t.wall, mono=lambda: t.mono, max_uncertainty_s=5)
    sent = (t.wall, t.mono)
    t.tick(20)
    assert off.record(t.wall, *sent) is None and off.current() is None


def test_clock_sources() -> None:
    t = FakeTime()
    wall = lambda: datetime.fromtimestamp(t.wall, UTC)  # noqa: E731
    off = ServerOffset(wall=lambda: t.wall, mono=lambda: t.mono)
    assert Clock("always", now=wall, trusted=lambda: False).state().source == "always"
    assert Clock("system", now=wall, trusted=lambda: True, offset=off).state().source == "ntp"
    untrusted = Clock("system", now=wall, trusted=lambda: False, offset=off)
    assert untrusted.state().trusted is False and untrusted.state().source == "none"
    off.record(t.wall + 3 * 3600, t.wall, t.mono)  # RTC-less Pi, three hours behind
    st = untrusted.state()
    assert st.trusted and st.source == "server"
    assert st.now.timestamp() == pytest.approx(t.wall + 3 * 3600, abs=1.1)


def test_sync_measures_the_server_offset_and_makes_the_clock_trusted(tmp_path: Path, keyset: KeySet) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    with RefServer(tls=(cert, key)) as server:  # server time counts only over verified HTTPS
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2))
        server.content.time_shift_s = 2 * 3600  # this device woke up two hours behind
        cfg = sync_config(tmp_path, keyset, server.url)
        cfg = replace(cfg, sync=replace(cfg.sync, ca_bundle=str(ca)))
        state = load_state(cfg)
        clock = Clock("system", trusted=lambda: False, offset=state.clock_offset)
        assert not clock.trusted()
        TrustSync(cfg, state).run_once()
        st = clock.state()
        assert st.trusted and st.source == "server"
        assert abs(st.now.timestamp() - (time.time() + 2 * 3600)) < 3


# ---------------------------------------------------------------- online path


def online_cfg(cfg: Config, url: str, budget_s: float = 2.0) -> Config:
    return replace(cfg, sync=replace(cfg.sync, server_url=url, online_patterns=(PATTERN,),
                                     online_timeout_s=budget_s, city_code="330381"))


@pytest.fixture()
def server() -> Any:
    with RefServer() as s:
        yield s


@pytest.fixture()
def ocfg(tmp_path: Path, keyset: KeySet, server: RefServer) -> Config:
    return online_cfg(sync_config(tmp_path, keyset, server.url), server.url)


def test_only_unknown_prefix_texts_matching_a_pattern_go_online(codes: Any) -> None:
    assert online_text(PROVINCIAL, [PATTERN]) == PROVINCIAL
    assert online_text(PROVINCIAL.encode() + b"\r\n", [PATTERN]) == PROVINCIAL
    assert online_text("RAHC:short", [PATTERN]) is None
    assert online_text("prefix " + PROVINCIAL, [PATTERN]) is None  # whole text, not a search
    assert online_text(codes.hc(), [".*"]) is None  # a signed code is always verified offline
    assert online_text(b"\xff\xfe", [".*"]) is None
    assert online_text(PROVINCIAL, []) is None


@pytest.mark.parametrize(("answer", "code", "colour"), [
    ("green", "VALID", "green"), ("yellow", "VALID", "yellow"), ("red", "VALID", "red"),
    ("init", "HEALTH_PENDING", None), ("purple", "ONLINE_UNAVAILABLE", None)])
def test_online_answers(ocfg: Config, server: RefServer, trust: TrustStore, answer: str, code: str,
                        colour: str | None) -> None:
    server.content.answers[PROVINCIAL] = {"code_color": answer}
    online = OnlineVerifier.from_config(ocfg)
    assert online is not None
    try:
        v = TrustState(trust).check(PROVINCIAL.encode(), Clock("always"), ocfg, online)
    finally:
        online.close()
    assert (v.code, v.colour, v.kind) == (code, colour, "health")
    assert v.token_hash is not None and len(v.token_hash) == 16
    sent = json.loads(server.requests_to("verify")[0].body)
    assert sent == {"code_content": PROVINCIAL, "city_code": "330381", "checkpoint_id": ocfg.checkpoint.id}


@pytest.mark.parametrize("mode", ["slow", "500", "wrong_content_type", "truncated", "huge"])
def test_online_failures_are_review_within_the_budget(ocfg: Config, server: RefServer, trust: TrustStore,
                                                      mode: str) -> None:
    delay_s = 3.0
    server.fault("verify", mode, delay_s=delay_s)
    cfg = online_cfg(ocfg, server.url, budget_s=0.4)
    online = OnlineVerifier.from_config(cfg)
    assert online is not None
    started = time.monotonic()
    try:
        v = TrustState(trust).check(PROVINCIAL, Clock("always"), cfg, online)
    finally:
        online.close()
    assert v.code == "ONLINE_UNAVAILABLE" and v.kind == "health"
    assert time.monotonic() - started < delay_s / 2  # it did not wait for the slow server


def test_online_unreachable_and_unconfigured(ocfg: Config, trust: TrustStore) -> None:
    cfg = online_cfg(ocfg, "http://127.0.0.1:9", budget_s=0.5)  # nothing listens on port 9
    online = OnlineVerifier.from_config(cfg)
    assert online is not None
    try:
        assert TrustState(trust).check(PROVINCIAL, Clock("always"), cfg, online).code == "ONLINE_UNAVAILABLE"
    finally:
        online.close()
    assert TrustState(trust).check(PROVINCIAL, Clock("always"), cfg, None).code == "ONLINE_UNAVAILABLE"
    plain = replace(cfg, sync=replace(cfg.sync, online_patterns=()))
    assert OnlineVerifier.from_config(plain) is None
    assert TrustState(trust).check(PROVINCIAL, Clock("always"), plain).code == "FORMAT_UNSUPPORTED"


def test_online_green_on_an_untrusted_clock_is_not_valid(ocfg: Config, trust: TrustStore) -> None:
    online = OnlineVerifier.from_config(ocfg)
    assert online is not None
    try:
        v = TrustState(trust).check(PROVINCIAL, Clock("system", trusted=lambda: False), ocfg, online)
    finally:
        online.close()
    assert v.code == "CLOCK_UNTRUSTED" and v.colour == "green"


def test_the_code_text_is_never_logged(ocfg: Config, server: RefServer, trust: TrustStore,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    online = OnlineVerifier.from_config(ocfg)
    assert online is not None
    try:
        for answer in ("green", "init"):
            server.content.answers[PROVINCIAL] = {"code_color": answer}
            TrustState(trust).check(PROVINCIAL, Clock("always"), ocfg, online)
        server.fault("verify", "500")
        TrustState(trust).check(PROVINCIAL, Clock("always"), ocfg, online)
    finally:
        online.close()
    assert "event=online_check" in caplog.text
    assert PROVINCIAL not in caplog.text and PROVINCIAL[5:] not in caplog.text
    assert len(server.requests_to("verify")) == 3  # sent only there


# ---------------------------------------------------------------- HTTPS


def test_https_with_the_configured_ca_bundle(tmp_path: Path, keyset: KeySet) -> None:
    ca, cert, key = make_tls(tmp_path / "tls")
    with RefServer(tls=(cert, key)) as server:
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2))
        cfg = sync_config(tmp_path, keyset, server.url)
        assert server.url.startswith("https://")
        state = load_state(cfg)
        results = TrustSync(cfg, state).run_once()  # system CAs do not know the test CA
        assert results["trust"].startswith("failed") and "ca_bundle" in results["trust"]
        cfg = replace(cfg, sync=replace(cfg.sync, ca_bundle=str(ca)))
        assert TrustSync(cfg, state).run_once()["trust"] == "updated to version 2"


# ---------------------------------------------------------------- EU DCC through a synced list

DCC = Path(__file__).resolve().parent / "fixtures" / "dgc-common"  # vendored, see its README


def _hc1(cose: Any) -> str:
    return "HC1:" + base45.b45encode(zlib.compress(cbor2.dumps(cose))).decode("ascii")


def test_dcc_variants_verify_through_a_synced_trust_list(tmp_path: Path, keyset: KeySet) -> None:
    """ES256 and PS256; tagged, untagged and CWT-wrapped; kid in the protected or the unprotected
    header: all through the lane's entry point with a trust list fetched by the sync."""
    from cryptography import x509

    cases = {n: json.loads((DCC / f"{n}.json").read_text()) for n in ("CO1", "CO3", "CO20")}
    certs = [x509.load_der_x509_certificate(base64.b64decode(c["TESTCTX"]["CERTIFICATE"])) for c in cases.values()]
    with RefServer() as server:
        centre = Centre(keyset, server)
        centre.publish(trust=centre.trust_list(2, extra=[SignerEntry(c, ("dcc",), "EU-TEST") for c in certs]))
        cfg = sync_config(tmp_path, keyset, server.url)
        state = load_state(cfg)
        TrustSync(cfg, state).run_once()
    assert state.version == 2

    def at(case: dict[str, Any]) -> Clock:
        when = datetime.fromisoformat(case["TESTCTX"]["VALIDATIONCLOCK"].replace("Z", "+00:00"))
        return Clock("system", now=lambda: when, trusted=lambda: True)

    co3 = cases["CO3"]
    tagged = cbor2.loads(bytes.fromhex(co3["COSE"]))
    variants = {
        "PS256 (CO1)": (cases["CO1"]["PREFIX"], cases["CO1"]),
        "ES256 tagged (CO3)": (co3["PREFIX"], co3),
        "ES256 untagged": (_hc1(tagged.value), co3),
        "ES256 CWT tag 61": (_hc1(cbor2.CBORTag(61, tagged)), co3),
        "kid unprotected (CO20)": (cases["CO20"]["PREFIX"], cases["CO20"]),
    }
    for name, (text, case) in variants.items():
        v = state.check(text, at(case), cfg)
        assert (v.code, v.kind) == ("VALID", "dcc"), name
    later = at(co3).now() + timedelta(days=3650)
    assert state.check(co3["PREFIX"], Clock("system", now=lambda: later, trusted=lambda: True), cfg).code == "EXPIRED"
