"""Status list lookups for `verify()`: revoked tokens, the deny list and subject colour updates.

`verify()` only needs the three questions of the `StatusSource` protocol, so the sync code can
later back them with SQLite without touching verification. `StatusList` is the in-memory
implementation used by tests, tools and small deployments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

#: CODES.md section 2: col 0 green, 1 yellow, 2 red.
COLOURS: dict[int, str] = {0: "green", 1: "yellow", 2: "red"}
HASH_BYTES = 16


@runtime_checkable
class StatusSource(Protocol):
    """What verification asks the status list. Hashes are 16 bytes (CODES.md section 3)."""

    def is_revoked(self, token_hash: bytes) -> bool: ...

    def is_denylisted(self, token_hash: bytes) -> bool: ...

    def colour_update(self, subject_hash: bytes) -> int | None: ...


def _hash16(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_BYTES:
        raise ValueError(f"{what} entries must be {HASH_BYTES}-byte hashes")
    return bytes(value)


class StatusList:
    """An in-memory status snapshot. Construction validates every entry, so a lookup never
    meets a malformed value at the gate."""

    def __init__(
        self,
        revoked: Iterable[bytes] = (),
        denylisted: Iterable[bytes] = (),
        colour_updates: Mapping[bytes, int] | None = None,
        *,
        version: int = 0,
    ) -> None:
        self.version = version
        self._revoked = frozenset(_hash16(h, "revoked") for h in revoked)
        self._denylisted = frozenset(_hash16(h, "denylisted") for h in denylisted)
        updates: dict[bytes, int] = {}
        for subject, col in (colour_updates or {}).items():
            if isinstance(col, bool) or col not in COLOURS:
                raise ValueError("colour updates must be 0 (green), 1 (yellow) or 2 (red)")
            updates[_hash16(subject, "colour update")] = col
        self._colour_updates = updates

    def is_revoked(self, token_hash: bytes) -> bool:
        return token_hash in self._revoked

    def is_denylisted(self, token_hash: bytes) -> bool:
        return token_hash in self._denylisted

    def colour_update(self, subject_hash: bytes) -> int | None:
        return self._colour_updates.get(subject_hash)

    def __len__(self) -> int:
        """Entry count, compared with the server's total after applying diffs (CODES.md)."""
        return len(self._revoked) + len(self._denylisted) + len(self._colour_updates)
