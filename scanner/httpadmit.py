"""Which connection to close when a server of scanner/httpserve.py is full: fair share by
client address, and young connections spared.

A newcomer at the server's cap takes the place of one open connection that is not being
served (the caller's `state`: no request being handled or answered). The victim is found in
this order:

1. from the address holding the most connections, the newcomer counted with its own address
   (so a few addresses that fill the server lose their own connections, never a client with
   one or two), and never from one holding fewer than the newcomer's would: then it is 503;
2. among the connections of that size of holder, a quiet one older than `young_s` first (a
   newcomer still in its TLS handshake is never the first to go while an older one could),
   then a young one, the least recently active first;
3. then one whose request has just arrived (bytes unread in its socket), but only from an
   address holding more than the newcomer's: an attacker who reconnects at once always has
   a request arriving, and that must not make its connections untouchable.

At the per-address cap the newcomer's own address gives up a quiet one, older than `young_s`
first. Plain Python; the loop thread is the only caller.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from itertools import groupby
from typing import Any, Protocol


class Tracked(Protocol):
    client: str
    opened: float  # loop time of accept
    last_active: float  # loop time of accept or of the last response written


class ConnTable:
    """Open connections, least recently active first, overall and per client address."""

    def __init__(self, young_s: float) -> None:
        self.young_s = young_s
        self.conns: OrderedDict[Any, None] = OrderedDict()
        self.by_client: dict[str, OrderedDict[Any, None]] = {}

    def __len__(self) -> int:
        return len(self.conns)

    def count(self, client: str) -> int:
        return len(self.by_client.get(client, ()))

    def add(self, conn: Tracked) -> None:
        self.conns[conn] = None
        self.by_client.setdefault(conn.client, OrderedDict())[conn] = None

    def forget(self, conn: Tracked) -> None:
        self.conns.pop(conn, None)
        mine = self.by_client.get(conn.client)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_client[conn.client]

    def touch(self, conn: Tracked, now: float) -> None:
        """`conn` just wrote a response: it becomes the most recently active."""
        conn.last_active = now
        if conn in self.conns:
            self.conns.move_to_end(conn)
            self.by_client[conn.client].move_to_end(conn)

    def victim(self, client: str, now: float, state: Callable[[Any], str], own: bool = False) -> Any:
        """The connection to close so that a newcomer from `client` fits, or None if none may
        be. `state(conn)`: "busy" (being served: never), "quiet" (may go), or "arriving" (a
        request sits unread in its socket: may go only from an address holding more than the
        newcomer's would, so a client's own request is never traded for its next connection).
        `own`: only among `client`'s own (the per-address cap)."""
        mine = self.count(client) + 1

        def size(item: tuple[str, OrderedDict[Any, None]]) -> int:
            return len(item[1]) + (item[0] == client)

        groups: list[tuple[int, list[OrderedDict[Any, None]]]]
        if own:
            groups = [(mine, [self.by_client.get(client, OrderedDict())])]
        else:
            ranked = sorted(self.by_client.items(), key=lambda it: (-size(it), next(iter(it[1])).last_active))
            groups = [(n, [m for _, m in same]) for n, same in groupby(ranked, key=size)]
        for n, group in groups:
            if n < mine:
                break  # never displace an address holding fewer than the newcomer's would
            conns = self._merged(group)
            states = {c: state(c) for c in conns}
            for old in (True, False):
                for c in conns:
                    if (now - c.opened >= self.young_s) == old and states[c] == "quiet":
                        return c
            if n > mine:
                for c in conns:
                    if states[c] == "arriving":
                        return c
        return None

    @staticmethod
    def _merged(group: list[OrderedDict[Any, None]]) -> list[Any]:
        """The connections of addresses holding equally many, least recently active first."""
        if len(group) == 1:
            return list(group[0])
        return sorted((c for mine in group for c in mine), key=lambda c: c.last_active)
