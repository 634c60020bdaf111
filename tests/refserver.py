"""A small reference central server for tests: a real ThreadingHTTPServer on 127.0.0.1 (plain or
TLS) serving signed bundles and the online verify call, with misbehaviours on demand.

Routes (scanner/sync/trust_sync.py):
  GET  /api/v1/trust-list  /api/v1/policy  /api/v1/status/snapshot (Range, If-Range)
  GET  /api/v1/status/diff?from=N   200 diff | 204 up to date (X-Status-Version/-Total) | 410
  POST /api/v1/verify               docs/credentials.md section 6

Faults, per route ("trust", "policy", "snapshot", "diff", "verify"), for `times` requests or
until cleared: wrong_signature, older (serves `body`), truncated, 500, slow, huge (no length,
endless), huge_declared (Content-Length: 10 GiB), wrong_content_type, resume_flood (every answer
"resumes" from the Range asked, claims more than it sends and cuts off; `total` is the
Content-Range's complete length: "" for an honest-looking one, "*" for unknown).

`Centre` signs what the server serves, with the demo anchor of a keygen directory.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from scanner.credentials import KeySet, Signer
from scanner.credentials.bundles import policy_doc, sign_bundle, status_diff_doc, status_snapshot_doc
from scanner.credentials.keygen import SignerEntry, sign_trust_list

ROUTES = {"/api/v1/trust-list": "trust", "/api/v1/policy": "policy", "/api/v1/status/snapshot": "snapshot",
          "/api/v1/status/diff": "diff", "/api/v1/verify": "verify"}
COSE = "application/cose"


@dataclass
class Fault:
    mode: str
    times: int | None = None  # None: until cleared
    body: bytes = b""
    delay_s: float = 3.0
    total: str = ""
    chunk: int = 600 * 1024


@dataclass
class Seen:
    method: str
    route: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def flip(raw: bytes, index: int = -5) -> bytes:
    out = bytearray(raw)
    out[index] ^= 0x01
    return bytes(out)


@dataclass
class Content:
    bundles: dict[str, bytes] = field(default_factory=dict)  # trust, policy, snapshot
    diffs: dict[int, bytes] = field(default_factory=dict)  # from_version -> raw diff
    status_version: int = 0
    status_total: int = 0
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # code_content -> verify answer
    time_shift_s: float = 0.0  # the server's Date runs this far ahead of the machine's clock


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on a huge or slow body is the point of those tests


class RefServer:
    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.content = Content()
        self.faults: dict[str, Fault] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                return formatdate(time.time() + server.content.time_shift_s, usegmt=True)

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> RefServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fault(self, route: str, mode: str, times: int | None = None, **kw: Any) -> None:
        with self._lock:
            self.faults[route] = Fault(mode, times, **kw)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests_to(self, route: str) -> list[Seen]:
        return [s for s in self.seen if s.route == route]

    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            f = self.faults.get(route)
            if f is None:
                return None
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    del self.faults[route]
            return f

    # -- responses -----------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", ctype: str = COSE,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        if status not in (204, 304):
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if status not in (204, 304):
            h.wfile.write(body)

    def _misbehave(self, h: BaseHTTPRequestHandler, f: Fault, body: bytes, ctype: str) -> bool:
        """Send a faulty answer; False when the fault changes only the body (then sent normally)."""
        if f.mode == "500":
            self._send(h, 500, b"internal error", "text/plain")
        elif f.mode == "wrong_content_type":
            self._send(h, 200, b"<html><body>Welcome to the hotel Wi-Fi</body></html>", "text/html")
        elif f.mode == "truncated":
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("ETag", etag_of(body))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
        elif f.mode == "slow":
            if ctype != COSE:  # the verify call: answer late
                time.sleep(f.delay_s)
                self._send(h, 200, body, ctype)
                return True
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            deadline = time.monotonic() + f.delay_s
            try:
                for i in range(0, len(body), 4):  # 80 bytes a second: never a read timeout, never done
                    if time.monotonic() > deadline:
                        break
                    h.wfile.write(body[i:i + 4])
                    h.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            h.close_connection = True
        elif f.mode == "huge":
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Connection", "close")
            h.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(4096):  # 256 MiB at most; the client hangs up long before
                    h.wfile.write(chunk)
            except OSError:
                pass
            h.close_connection = True
        elif f.mode == "resume_flood":
            rng = h.headers.get("Range", "")
            first = int(rng[6:].split("-")[0]) if rng.startswith("bytes=") else 0
            declared = f.chunk + f.chunk // 2
            h.send_response(206 if first else 200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(declared))
            h.send_header("ETag", '"flood"')
            if first:
                total = f.total or str(first + 4 * f.chunk)
                h.send_header("Content-Range", f"bytes {first}-{first + declared - 1}/{total}")
            h.send_header("Connection", "close")
            h.end_headers()
            try:
                h.wfile.write(b"\xa5" * f.chunk)
                h.wfile.flush()
            except OSError:
                pass
            h.close_connection = True
        elif f.mode == "huge_declared":
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(10 << 30))
            h.send_header("Connection", "close")
            h.end_headers()
            try:
                h.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            h.close_connection = True
        else:
            return False
        return True

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(h.path)
        route = ROUTES.get(parsed.path, "")
        length = int(h.headers.get("Content-Length") or 0)
        req_body = h.rfile.read(length) if length else b""
        seen = Seen(method, route, h.path, dict(h.headers.items()), req_body)
        self.seen.append(seen)
        c = self.content
        if not route:
            seen.status = 404
            self._send(h, 404, b"not found", "text/plain")
            return
        if route == "verify":
            try:
                doc = json.loads(req_body)
                answer = c.answers.get(doc["code_content"], {"code_color": "green"})
            except (ValueError, KeyError, TypeError):
                self._send(h, 400, b"{}", "application/json")
                return
            body = json.dumps({"masked_name": "王*", "refresh_time": "2024-01-01 08:00:00",
                               "server_time": int(time.time()), **answer}).encode()
            f = self._take_fault(route)
            if f is None or not self._misbehave(h, f, body, "application/json"):
                self._send(h, 200, body, "application/json")
            return
        f = self._take_fault(route)
        if route == "diff":
            start = int(parse_qs(parsed.query).get("from", ["-1"])[0])
            body = c.diffs.get(start, b"")
            if not body:
                if start == c.status_version:
                    seen.status = 204
                    self._send(h, 204, headers={"X-Status-Version": str(c.status_version),
                                                "X-Status-Total": str(c.status_total)})
                else:
                    seen.status = 410
                    self._send(h, 410, b"gone", "text/plain")
                return
        else:
            body = c.bundles.get(route, b"")
            if not body:
                seen.status = 404
                self._send(h, 404, b"none", "text/plain")
                return
        if f is not None and f.mode == "wrong_signature":
            body = flip(body)
        elif f is not None and f.mode == "older":
            body = f.body
        elif f is not None and self._misbehave(h, f, body, COSE):
            seen.status = -1
            return
        tag = etag_of(body)
        if h.headers.get("If-None-Match") == tag:
            seen.status = 304
            self._send(h, 304, headers={"ETag": tag})
            return
        rng = h.headers.get("Range", "")
        if rng.startswith("bytes=") and h.headers.get("If-Range", tag) == tag:
            first = int(rng[6:].split("-")[0])
            seen.status = 206
            self._send(h, 206, body[first:], headers={"ETag": tag,
                                                      "Content-Range": f"bytes {first}-{len(body) - 1}/{len(body)}"})
            return
        seen.status = 200
        self._send(h, 200, body, headers={"ETag": tag})


class Centre:
    """The central side: signs trust lists, policies and status data with a keygen anchor, and
    keeps the status list it publishes so totals are right."""

    def __init__(self, keys: KeySet, server: RefServer | None = None) -> None:
        self.keys = keys
        self.anchor = Signer.load(keys.anchor_key, keys.anchor_cert)
        self.health = Signer.load(keys.health_key, keys.health_cert)
        self.street = Signer.load(keys.residence_key, keys.residence_cert)
        self.server = server
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.revoked: set[bytes] = set()
        self.denylisted: set[bytes] = set()
        self.colours: dict[bytes, int] = {}
        self.status_version = 0

    def trust_list(self, version: int, *, extra: list[SignerEntry] | None = None, expires_in_s: float = 30 * 86400,
                   generated_ago_s: float = 0) -> bytes:
        entries = [SignerEntry(self.health.cert, ("health",), "CN-330000-HC"),
                   SignerEntry(self.street.cert, ("residence",), "CN-330381-JD01"), *(extra or [])]
        gen = self.now - timedelta(seconds=generated_ago_s)
        return sign_trust_list(self.anchor.key, self.anchor.cert, entries, version, gen,
                               self.now + timedelta(seconds=expires_in_s))

    def policy(self, version: int, *, expires_in_s: float = 30 * 86400, **values: Any) -> bytes:
        return sign_bundle(self.anchor.key, self.anchor.cert,
                           policy_doc(version, self.now, self.now + timedelta(seconds=expires_in_s), **values))

    def total(self) -> int:
        return len(self.revoked) + len(self.denylisted) + len(self.colours)

    def snapshot(self, *, expires_in_s: float = 86400, generated_ago_s: float = 0) -> bytes:
        gen = self.now - timedelta(seconds=generated_ago_s)
        return sign_bundle(self.anchor.key, self.anchor.cert, status_snapshot_doc(
            self.status_version, gen, self.now + timedelta(seconds=expires_in_s), revoked=sorted(self.revoked),
            denylisted=sorted(self.denylisted), colour_updates=self.colours))

    def diff(self, *, revoke: Sequence[bytes] = (), unrevoke: Sequence[bytes] = (), deny: Sequence[bytes] = (),
             colours: dict[bytes, int] | None = None, uncolour: Sequence[bytes] = (), total: int | None = None,
             expires_in_s: float = 86400) -> tuple[int, bytes]:
        """Change the published list and return (from_version, signed diff)."""
        start = self.status_version
        self.status_version += 1
        self.revoked |= set(revoke)
        self.revoked -= set(unrevoke)
        self.denylisted |= set(deny)
        self.colours.update(colours or {})
        for s in uncolour:
            self.colours.pop(s, None)
        raw = sign_bundle(self.anchor.key, self.anchor.cert, status_diff_doc(
            start, self.status_version, self.now, self.now + timedelta(seconds=expires_in_s),
            self.total() if total is None else total, add_revoked=revoke, add_denylisted=deny,
            add_colours=colours or {}, remove_revoked=unrevoke, remove_colours=uncolour))
        return start, raw

    # -- publishing to the server --------------------------------------------------------
    def publish(self, **bundles: bytes) -> None:
        assert self.server is not None
        self.server.content.bundles.update(bundles)

    def publish_snapshot(self, **kw: Any) -> bytes:
        raw = self.snapshot(**kw)
        self.publish(snapshot=raw)
        self._sync_head()
        return raw

    def publish_diff(self, **kw: Any) -> bytes:
        assert self.server is not None
        start, raw = self.diff(**kw)
        self.server.content.diffs[start] = raw
        self._sync_head()
        return raw

    def _sync_head(self) -> None:
        assert self.server is not None
        self.server.content.status_version = self.status_version
        self.server.content.status_total = self.total()


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
