"""The online path for provincial health codes (docs/credentials.md section 6).

Their byte layout is not public, so the scanner does not parse them: a text matching a
configured pattern is sent, and only here, to `POST {server}/api/v1/verify` with
`{"code_content", "city_code", "checkpoint_id"}`. The answer's `code_color` decides: green /
yellow / red as for our own codes, `init` -> REVIEW HEALTH_PENDING. No answer within the budget
(2 s by default, measured from the call, enforced from outside the HTTP stack so a slow-dripping
server cannot stretch it) -> REVIEW ONLINE_UNAVAILABLE. The text is never logged; records and log
lines carry HMAC-SHA256(device secret, text)[:16] (scanner/device_secret.py).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import TYPE_CHECKING, Any

from ..credentials.state import HEALTH_PENDING, ONLINE_UNAVAILABLE, online_token_hash
from ..credentials.verify import VALID, Verification
from .fetch import FetchError, Http

if TYPE_CHECKING:
    from ..clock import ServerOffset
    from ..config import Config

log = logging.getLogger(__name__)

VERIFY_PATH = "/api/v1/verify"
COLOURS = ("green", "yellow", "red")


class OnlineVerifier:
    """Callable: text -> Verification. Calls run on a small pool so the caller's wait is a hard
    budget; when every worker is still stuck on an earlier call, the answer is at once
    ONLINE_UNAVAILABLE rather than a queue behind it."""

    def __init__(self, server_url: str, *, checkpoint_id: str, city_code: str = "", budget_s: float = 2.0,
                 ca_bundle: str = "", device_id: str = "", offset: ServerOffset | None = None,
                 workers: int = 2) -> None:
        self.url = server_url.rstrip("/") + VERIFY_PATH
        self.checkpoint_id = checkpoint_id
        self.city_code = city_code
        self.budget_s = budget_s
        self._http_args: dict[str, Any] = {
            "connect_timeout_s": budget_s, "read_timeout_s": budget_s, "download_timeout_s": budget_s,
            "ca_bundle": ca_bundle, "offset": offset,
            "headers": {"X-Device-Id": device_id} if device_id else None}
        self._local = threading.local()
        self._slots = threading.BoundedSemaphore(workers)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="online-verify")

    @classmethod
    def from_config(cls, cfg: Config, offset: ServerOffset | None = None) -> OnlineVerifier | None:
        """None when no provincial patterns are configured (no online path)."""
        sy = cfg.sync
        if not sy.online_patterns or not sy.server_url:
            return None
        return cls(sy.server_url, checkpoint_id=cfg.checkpoint.id, city_code=sy.city_code,
                   budget_s=sy.online_timeout_s, ca_bundle=sy.ca_bundle, device_id=cfg.checkpoint.device_id,
                   offset=offset)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _http(self) -> Http:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = Http(**self._http_args)
        return http

    def _call(self, text: str) -> Any:
        try:
            body = {"code_content": text, "city_code": self.city_code, "checkpoint_id": self.checkpoint_id}
            return self._http().post_json(self.url, body, "online check", budget_s=self.budget_s)
        finally:
            self._slots.release()

    def __call__(self, text: str) -> Verification:
        token = online_token_hash(text)

        def unavailable(detail: str) -> Verification:
            log.warning("event=online_check result=%s token=%s detail=%r", ONLINE_UNAVAILABLE, token.hex(), detail)
            return Verification(ONLINE_UNAVAILABLE, kind="health", issuer="online", token_hash=token,
                                detail=detail)

        if not self._slots.acquire(blocking=False):
            return unavailable("earlier online checks are still waiting for the server")
        try:
            future = self._pool.submit(self._call, text)
        except RuntimeError:  # pool shut down
            self._slots.release()
            return unavailable("online check is shut down")
        try:
            answer = future.result(timeout=self.budget_s)
        except concurrent.futures.TimeoutError:
            return unavailable(f"no answer within {self.budget_s:g} s")
        except FetchError as e:
            return unavailable(str(e).split(";")[0])
        except Exception as e:  # noqa: BLE001 - never let the network break a scan
            return unavailable(f"online check failed ({e.__class__.__name__})")
        return self._result(answer, token)

    def _result(self, answer: Any, token: bytes) -> Verification:
        colour = answer.get("code_color") if isinstance(answer, dict) else None
        masked = answer.get("masked_name") if isinstance(answer, dict) else None
        masked = masked if isinstance(masked, str) else None
        if colour in COLOURS:
            v = Verification(VALID, kind="health", issuer="online", token_hash=token, colour=colour,
                             masked_name=masked, detail="checked online by the issuing platform")
        elif colour == "init":
            v = Verification(HEALTH_PENDING, kind="health", issuer="online", token_hash=token, masked_name=masked,
                             detail="the platform has no colour for this code yet (init)")
        else:
            log.warning("event=online_check result=%s token=%s detail=unexpected answer", ONLINE_UNAVAILABLE,
                        token.hex())
            return Verification(ONLINE_UNAVAILABLE, kind="health", issuer="online", token_hash=token,
                                detail="the server's answer has no known code_color")
        log.info("event=online_check result=%s colour=%s token=%s", v.code, v.colour, token.hex())
        return v
