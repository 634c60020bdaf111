"""sd_notify in a dozen lines (systemd's protocol: a datagram to $NOTIFY_SOCKET), so the unit
can be Type=notify with a watchdog. Errors are logged once, not swallowed silently (the
`sdnotify` package hides them unless debug=True)."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None) -> None:
        self._addr = address
        self._warned = False
        if address and address.startswith("@"):
            self._addr = "\0" + address[1:]

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def send(self, **fields: str | int) -> None:
        if not self._addr:
            return
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self._addr)
                s.sendall(msg)
        except OSError as e:
            if not self._warned:
                log.warning("event=sd_notify_failed error=%s", e)
                self._warned = True
