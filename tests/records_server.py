"""A central records server on 127.0.0.1 for tests: stores each record once under its record_id
(a permanent unique key), answers per record, and misbehaves on request from a fault script."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "upload-token-0123456789abcdef"

# Faults, one per request in order (then "ok"):
#   ok         store and answer 200 with per-record results
#   drop       read the request, close the connection without an answer
#   store-drop store the batch, then close without an answer (the ack is lost)
#   500        answer 500
#   429        answer 429 with Retry-After: 1
#   503date    answer 503 with Retry-After as an HTTP date 1 s ahead
#   sleep      store the batch, then stay silent for `sleep_s` before answering
#   413        answer 413 when the batch has more than `max_records_413` records


class RecordsServer:
    def __init__(self, faults: list[str] | None = None, *, sleep_s: float = 1.0, max_records_413: int = 0,
                 reject: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.faults = deque(faults or [])
        self.sleep_s = sleep_s
        self.max_records_413 = max_records_413
        self.reject = reject or (lambda r: None)
        self.stored: dict[str, dict[str, Any]] = {}
        self.arrivals: dict[str, int] = {}
        self.order: list[int] = []  # seq of each record when first stored
        self.requests: list[tuple[float, str, int]] = []  # (monotonic time, fault, batch size)
        self.gzipped = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v1/records"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> RecordsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def store(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        with self.lock:
            for r in records:
                rid = r["record_id"]
                self.arrivals[rid] = self.arrivals.get(rid, 0) + 1
                if rid in self.stored:
                    out.append({"record_id": rid, "status": "duplicate"})
                elif (why := self.reject(r)) is not None:
                    out.append({"record_id": rid, "status": "rejected", "reason": why})
                else:
                    self.stored[rid] = r
                    self.order.append(r["seq"])
                    out.append({"record_id": rid, "status": "accepted"})
        return out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def reply(self, code: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def drop(self) -> None:
                import socket

                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                    srv.gzipped += 1
                body = json.loads(raw)
                with srv.lock:
                    fault = srv.faults.popleft() if srv.faults else "ok"
                    srv.requests.append((time.monotonic(), fault, len(body["records"])))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.reply(401, b'{"error":"bad token"}')
                if fault == "drop":
                    return self.drop()
                if fault == "500":
                    return self.reply(500, b'{"error":"boom"}')
                if fault == "429":
                    return self.reply(429, b"{}", {"Retry-After": "1"})
                if fault == "503date":
                    return self.reply(503, b"{}", {"Retry-After": formatdate(time.time() + 1, usegmt=True)})
                if srv.max_records_413 and len(body["records"]) > srv.max_records_413:
                    return self.reply(413, b'{"error":"too large"}')
                results = srv.store(body["records"])
                if fault == "store-drop":
                    return self.drop()
                if fault == "sleep":
                    time.sleep(srv.sleep_s)
                try:
                    self.reply(200, json.dumps({"results": results}).encode())
                except OSError:
                    pass

        return H
