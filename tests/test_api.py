"""Pull API against a real server on 127.0.0.1: token, cursor paging, idempotent ack, limit cap,
rate limit, metrics, and a schemathesis property test against docs/openapi.yaml."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from promtext import samples

from scanner import outbox
from scanner.api import Api, TokenBucket
from scanner.config import ApiSection
from scanner.errors import ScannerError
from scanner.models import PassageRecord
from scanner.store import Store, connect

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rec() -> PassageRecord:
    return PassageRecord(record_id=uuid.uuid4().hex, device_id="d1", checkpoint_id="c1",
                         checkpoint_kind="highway_exit", ts_utc="2026-11-28T10:00:00.000+00:00",
                         clock_trusted=True, boot_id="b", mono_s=1.0, verdict="PASS", reasons=("OK",))


class Running:
    def __init__(self, tmp: Path, n: int, **api_kw: object) -> None:
        self.db = tmp / "o.db"
        self.store = Store.open(self.db)
        for _ in range(n):
            self.store.record(rec())
        cfg = replace(ApiSection(), bind="127.0.0.1", port=0, **api_kw)  # type: ignore[arg-type]
        self.api = Api(cfg, str(self.db), TOKEN, clock_trusted=lambda: True)
        self.stop = threading.Event()
        host, port = self.api.bind()
        self.threads = self.api.serve(self.stop)
        self.url = f"http://{host}:{port}"

    def get(self, path: str, **kw: object) -> requests.Response:
        kw.setdefault("headers", AUTH)
        return requests.get(self.url + path, timeout=5, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        self.store.close()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path, 25, max_limit=10, rate_per_s=1000.0, burst=1000)
    yield r
    r.close()


def test_token_is_required_and_compared(srv: Running) -> None:
    assert srv.get("/api/v1/records", headers={}).status_code == 401
    r = srv.get("/api/v1/records", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert srv.get("/metrics", headers={}).status_code == 401
    assert srv.get("/healthz", headers={}).json() == {"status": "ok"}  # no token, no data
    with pytest.raises(ScannerError, match="needs a token"):
        Api(ApiSection(), str(srv.db), "")


def test_pages_in_seq_order_with_capped_limit_and_idempotent_ack(srv: Running) -> None:
    seen: list[int] = []
    cursor = ""
    while True:
        page = srv.get("/api/v1/records", params={"after": cursor, "limit": 500}).json()
        assert len(page["records"]) <= 10  # capped
        seen += [r["seq"] for r in page["records"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == list(range(1, 26))
    assert "payload" not in page["records"][-1] and page["records"][-1]["reasons"] == ["OK"]
    mid = f"{cursor.split('.')[0]}.12"
    ack = requests.post(srv.url + "/api/v1/records/ack", json={"cursor": mid}, headers=AUTH, timeout=5)
    assert ack.status_code == 200 and ack.json()["delivered_cursor"].endswith(".12")
    older = requests.post(srv.url + "/api/v1/records/ack", json={"cursor": f"{cursor.split('.')[0]}.3"},
                          headers=AUTH, timeout=5)
    assert older.json()["delivered_cursor"].endswith(".12")  # no-op
    c = connect(srv.db)
    assert outbox.delivered_upto(c) == 12 and len(outbox.pending(c, 100)) == 13
    c.close()
    foreign = requests.post(srv.url + "/api/v1/records/ack", json={"cursor": "abcdef.25"}, headers=AUTH, timeout=5)
    assert foreign.status_code == 200 and foreign.json()["cursor_reset"] is True
    assert srv.get("/api/v1/records", params={"after": "abcdef.20"}).json()["records"][0]["seq"] == 1


def test_bad_requests_say_what_to_send(srv: Running) -> None:
    assert srv.get("/api/v1/records", params={"limit": "0"}).status_code == 400
    assert srv.get("/api/v1/records", params={"limit": "x"}).status_code == 400
    assert srv.get("/api/v1/records", params={"after": "'; drop"}).status_code == 400
    r = requests.post(srv.url + "/api/v1/records/ack", data=b"not json", headers=AUTH, timeout=5)
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    r = requests.post(srv.url + "/api/v1/records/ack", data=b"x" * 5000, headers=AUTH, timeout=5)
    assert r.status_code == 413
    assert srv.get("/nope").status_code == 404
    assert requests.delete(srv.url + "/api/v1/records", headers=AUTH, timeout=5).status_code == 405


def test_malformed_acks_are_400_or_408_with_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11.4 on the pull API: nested JSON, a bad or negative Content-Length, a short body."""
    import logging
    import socket

    caplog.set_level(logging.INFO)
    r = Running(tmp_path, 3, request_timeout_s=1.0)
    port = int(r.url.rsplit(":", 1)[1])

    def raw(head: str, body: bytes = b"") -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=8) as c:
            c.sendall(head.encode() + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode() + body)
            return int(c.recv(4096).split(b" ", 2)[1])

    try:
        nested = requests.post(r.url + "/api/v1/records/ack", data=b"[" * 4000, headers=AUTH, timeout=5)
        assert nested.status_code == 400 and "cursor" in nested.json()["error"]
        ack = "POST /api/v1/records/ack HTTP/1.1\r\nHost: x\r\n"
        assert raw(ack + "Content-Length: abc\r\n") == 400
        assert raw(ack + "Content-Length: -1\r\n") == 400
        assert raw(ack + "Content-Length: 40\r\n", b'{"cursor": ') == 408  # shorter than its length
        assert "Traceback" not in caplog.text and not [x for x in caplog.records if x.exc_info]
        assert len([x for x in caplog.records if "event=http_" in x.getMessage()]) == 3
    finally:
        r.close()


def test_idle_tls_connections_leave_healthz_answering(tmp_path: Path) -> None:
    """Issue 11.2: 17 idle connections (handshake never started) froze the old server."""
    from test_httpserve import self_signed

    cert = self_signed(tmp_path)
    r = Running(tmp_path, 1, tls_cert=str(cert), tls_key=str(tmp_path / "k.pem"), max_clients=16,
                request_timeout_s=30.0)
    import socket

    port = int(r.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        url = r.url.replace("http://", "https://")
        assert requests.get(url + "/healthz", verify=str(cert), timeout=5).json() == {"status": "ok"}
        page = requests.get(url + "/api/v1/records", headers=AUTH, verify=str(cert), timeout=5)
        assert page.status_code == 200 and len(page.json()["records"]) == 1
    finally:
        for c in idle:
            c.close()
        r.close()


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    r = Running(tmp_path, 1, rate_per_s=0.5, burst=3)
    try:
        codes = [r.get("/api/v1/records").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        last = r.get("/api/v1/records")
        assert last.status_code == 429 and int(last.headers["Retry-After"]) >= 1
    finally:
        r.close()
    clock = [0.0]
    b = TokenBucket(1.0, 2, clock=lambda: clock[0])
    assert [b.take("a"), b.take("a")] == [0, 0] and b.take("a") == pytest.approx(1.0)
    assert b.take("b") == 0  # per client
    clock[0] = 1.0
    assert b.take("a") == 0


def test_metrics_expose_queue_state(srv: Running) -> None:
    r = srv.get("/metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = samples(r.text)
    expected = {"checkpoint_outbox_queue_depth": 25, "checkpoint_outbox_last_delivery_timestamp_seconds": 0,
                'checkpoint_upload_failures_total{reason="none"}': 0, "checkpoint_outbox_dead_letters": 0,
                "checkpoint_clock_synced": 1, "checkpoint_outbox_disk_alarm": 0,
                "checkpoint_outbox_corruption_alarm": 0}
    assert {k: m.get(k) for k in expected} == expected
    for name in ("checkpoint_outbox_oldest_unsent_age_seconds", "checkpoint_outbox_db_bytes",
                 "checkpoint_outbox_wal_bytes", 'checkpoint_outbox_commit_seconds_bucket{le="+Inf"}'):
        assert name in m, name
    assert "# TYPE checkpoint_outbox_queue_depth gauge" in r.text


def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    r = Running(tmp_path, 2, tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    try:
        url = r.url.replace("http://", "https://")
        ok = requests.get(url + "/api/v1/records", headers=AUTH, verify=str(tmp_path / "c.pem"), timeout=5)
        assert ok.status_code == 200 and len(ok.json()["records"]) == 2
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/healthz", timeout=5)  # not trusted without the CA
    finally:
        r.close()


# -- property-based: every documented operation, generated inputs, responses match the spec --

@pytest.fixture
def live(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path, 30, max_limit=1000, rate_per_s=1000.0, burst=1000)
    yield r
    r.close()


schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_openapi(case: schemathesis.Case, live: Running) -> None:
    case.call_and_validate(base_url=live.url, headers=AUTH)


def test_token_is_checked_before_the_body(tmp_path: Path) -> None:
    """F1: a POST head with Content-Length: 4000 and no token is answered 401 at once; the
    body is never waited for (the deadline here is 30 s, and its answer would be 408)."""
    import socket

    r = Running(tmp_path, 1, request_timeout_s=30.0)
    port = int(r.url.rsplit(":", 1)[1])

    def head_only(head: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=8) as c:
            c.sendall(f"{head}Host: x\r\nContent-Length: 4000\r\n\r\n".encode())
            return c.recv(4096)

    try:
        raw = head_only("POST /api/v1/records/ack HTTP/1.1\r\n")
        assert raw.startswith(b"HTTP/1.1 401") and b"WWW-Authenticate: Bearer" in raw, raw[:200]
        assert head_only(f"DELETE /api/v1/records HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n").startswith(
            b"HTTP/1.1 405")
        assert head_only("POST /healthz HTTP/1.1\r\n").startswith(b"HTTP/1.1 405")
        assert head_only("POST /nope HTTP/1.1\r\n").startswith(b"HTTP/1.1 404")
        assert r.api.server is not None and r.api.server.stats["early"] == 4
        assert r.api.counts == {"401": 1, "405": 2, "404": 1}
    finally:
        r.close()


def test_slow_bodies_from_ten_addresses_leave_healthz_answering(tmp_path: Path) -> None:
    """F1 as found on the API: 10 addresses x 32 connections POST /api/v1/records/ack without a
    token, Content-Length: 4000, a byte every 0.5 s, reconnecting after each answer."""
    from slowclients import Flood, legit_tries

    r = Running(tmp_path, 1)
    port = int(r.url.rsplit(":", 1)[1])
    try:
        with Flood(port, 10, 32, "slowbody", path="/api/v1/records/ack", reconnect_s=0.1) as flood:
            assert flood.wait_open(320)
            got = legit_tries(port, "/healthz", tries=20)
        assert got["200"] >= 18, (got, flood.answers)
        assert flood.answers["401"] + flood.answers["429"] >= 320  # refused on their headers (429: rate limit)
    finally:
        r.close()


@pytest.mark.parametrize("query", ["limit=1_0", "limit=%D9%A3", "limit=%20%205", "limit=+5", "limit=5%0A",
                                   "after=%s.5%%0A", "after=%s.5%%20", "after=%%20%s.5"])
def test_query_values_are_ascii_and_matched_whole(srv: Running, query: str) -> None:
    """int() takes "1_0", "٣" and " 5"; a regex .match with $ takes "oid.5\\n": all are 400."""
    oid = srv.get("/api/v1/records", params={"limit": 1}).json()["next_cursor"].split(".")[0]
    r = srv.get("/api/v1/records?" + (query % oid if "%s" in query else query))
    assert r.status_code == 400, r.text
    assert srv.get("/api/v1/records?limit=05").status_code == 200  # ASCII digits, leading zero: fine


def test_ack_cursor_is_matched_whole(srv: Running) -> None:
    page = srv.get("/api/v1/records", params={"limit": 5}).json()
    r = requests.post(srv.url + "/api/v1/records/ack", json={"cursor": page["next_cursor"] + "\n"}, headers=AUTH,
                      timeout=5)
    assert r.status_code == 400
    c = connect(srv.db)
    assert outbox.delivered_upto(c) == 0
    c.close()


def test_absolute_form_request_target_is_routed(srv: Running) -> None:
    """RFC 9112 3.2.2: `GET http://host/api/v1/records` is the same request as `GET /api/v1/records`."""
    import socket

    port = int(srv.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=8) as c:
        c.sendall(f"GET http://gate.example/api/v1/records?limit=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  f"{TOKEN}\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200") and out.count(b'"record_id"') == 2, out[:200]
