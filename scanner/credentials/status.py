"""Status list lookups for `verify()`: revoked tokens, the deny list and subject colour updates.

`verify()` only needs the three questions of the `StatusSource` protocol. `StatusList` is a small
set-backed implementation for tests and tools; `StatusIndex` is what a gate runs: the signed
snapshot plus diffs from the central server, kept as sorted numpy arrays of 16-byte hashes
(16 MB per million entries where a Python set needs ~100 MB, which matters on a 1 GB Pi and
while two versions coexist during a swap), looked up by binary search in about a microsecond.
A `StatusIndex` is immutable: applying a diff returns a new index, so the sync thread can swap it
in whole and a scan never sees half a diff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import TrustDataError

if TYPE_CHECKING:
    from .bundles import Bundle

#: docs/credentials.md section 2: col 0 green, 1 yellow, 2 red.
COLOURS: dict[int, str] = {0: "green", 1: "yellow", 2: "red"}
HASH_BYTES = 16


@runtime_checkable
class StatusSource(Protocol):
    """What verification asks the status list. Hashes are 16 bytes (docs/credentials.md section 3)."""

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
        """Entry count, compared with the server's total after applying diffs (docs/credentials.md section 3)."""
        return len(self._revoked) + len(self._denylisted) + len(self._colour_updates)


_HASH_DTYPE = np.dtype(f"S{HASH_BYTES}")
_EMPTY = np.zeros(0, dtype=_HASH_DTYPE)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _hash_array(packed: bytes) -> np.ndarray:
    """Concatenated 16-byte hashes -> a sorted array without duplicates.

    numpy's S16 strips trailing NUL bytes when an element is read back, but compares and sorts
    as if padded, which is exactly 16-byte lexicographic order; `_contains` accounts for it."""
    if not packed:
        return _EMPTY
    a = np.frombuffer(packed, dtype=_HASH_DTYPE)
    if _strictly_sorted(a):  # the centre sends sorted lists: a linear check instead of a sort
        return a.copy()
    return np.unique(a)


def _strictly_sorted(a: np.ndarray) -> bool:
    return len(a) < 2 or bool(np.all(a[1:] > a[:-1]))


def _contains(arr: np.ndarray, key: bytes) -> int:
    """Index of `key` in the sorted array, or -1."""
    if len(key) != HASH_BYTES or not len(arr):
        return -1
    i = int(arr.searchsorted(key))
    return i if i < len(arr) and arr[i] == key.rstrip(b"\0") else -1


def _member(arr: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Vectorised membership of sorted/unsorted `keys` in the sorted `arr`."""
    if not len(arr) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(arr.searchsorted(keys), len(arr) - 1)
    return np.asarray(arr[pos] == keys)


def _without(arr: np.ndarray, keys: np.ndarray, *parallel: np.ndarray) -> tuple[np.ndarray, ...]:
    found = _member(arr, keys)
    pos = arr.searchsorted(keys[found])
    return tuple(np.delete(a, pos) for a in (arr, *parallel))


def _last_per_key(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by key, keep the last value given for each key (a later entry overrides)."""
    if not len(keys):
        return _EMPTY, np.zeros(0, dtype=np.uint8)
    if _strictly_sorted(keys):
        return keys.copy(), values.copy()
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    last = np.append(keys[1:] != keys[:-1], True)
    return keys[last], values[last]


class StatusIndex:
    """The gate's status list: immutable, compact, binary-searched (see the module docstring)."""

    def __init__(self, revoked: np.ndarray = _EMPTY, denylisted: np.ndarray = _EMPTY,
                 subjects: np.ndarray = _EMPTY, colours: np.ndarray | None = None, *,
                 version: int = 0, generated_at: int | None = None, expires_at: int | None = None) -> None:
        self._revoked = _frozen(revoked)
        self._denylisted = _frozen(denylisted)
        self._subjects = _frozen(subjects)
        self._colours = _frozen(colours if colours is not None else np.zeros(0, dtype=np.uint8))
        if len(self._subjects) != len(self._colours):
            raise ValueError("one colour per subject")
        self.version = version
        self.generated_at = generated_at
        self.expires_at = expires_at

    @classmethod
    def from_packed(cls, revoked: bytes = b"", denylisted: bytes = b"", subjects: bytes = b"",
                    colours: bytes = b"", *, version: int = 0, generated_at: int | None = None,
                    expires_at: int | None = None) -> StatusIndex:
        subj, cols = _last_per_key(np.frombuffer(subjects, dtype=_HASH_DTYPE) if subjects else _EMPTY,
                                   np.frombuffer(colours, dtype=np.uint8))
        return cls(_hash_array(revoked), _hash_array(denylisted), subj, cols, version=version,
                   generated_at=generated_at, expires_at=expires_at)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> StatusIndex:
        """A snapshot bundle (already signature-checked) -> index."""
        from .bundles import unpack_colours, unpack_hashes

        doc = bundle.doc
        subjects, colours = unpack_colours(doc.get("colour_updates"), "colour_updates")
        return cls.from_packed(unpack_hashes(doc.get("revoked"), "revoked"),
                               unpack_hashes(doc.get("denylisted"), "denylisted"), subjects, colours,
                               version=bundle.version, generated_at=bundle.generated_at,
                               expires_at=bundle.expires_at)

    def apply_diff(self, bundle: Bundle) -> StatusIndex:
        """A new index with the diff applied (removals, then additions; a colour update for a
        known subject replaces it). TrustDataError when the diff does not start at this version
        or does not move forward: diffs apply in order, never twice, never backwards."""
        from .bundles import unpack_colours, unpack_hashes

        doc = bundle.doc
        start = doc.get("from_version")
        if start != self.version or bundle.version <= self.version:
            raise TrustDataError(f"status diff {start}->{bundle.version} does not follow version {self.version}; "
                                 "fix: the device fetches the full status list instead")
        add, remove = doc.get("add") or {}, doc.get("remove") or {}
        if not isinstance(add, dict) or not isinstance(remove, dict):
            raise TrustDataError("status diff: 'add' and 'remove' must be objects; fix: download it again")

        def keys(packed: bytes) -> np.ndarray:
            return np.frombuffer(packed, dtype=_HASH_DTYPE) if packed else _EMPTY

        def patched(arr: np.ndarray, name: str) -> np.ndarray:
            (arr,) = _without(arr, keys(unpack_hashes(remove.get(name), f"remove.{name}")))
            new = _hash_array(unpack_hashes(add.get(name), f"add.{name}"))
            new = new[~_member(arr, new)]
            return np.insert(arr, arr.searchsorted(new), new) if len(new) else arr

        revoked = patched(self._revoked, "revoked")
        denylisted = patched(self._denylisted, "denylisted")
        subjects, colours = _without(self._subjects,
                                     keys(unpack_hashes(remove.get("colour_updates"), "remove.colour_updates")),
                                     self._colours)
        add_s, add_c = unpack_colours(add.get("colour_updates"), "add.colour_updates")
        new_s, new_c = _last_per_key(keys(add_s), np.frombuffer(add_c, dtype=np.uint8))
        known = _member(subjects, new_s)
        if known.any():
            colours = colours.copy()
            colours[subjects.searchsorted(new_s[known])] = new_c[known]
        fresh_s, fresh_c = new_s[~known], new_c[~known]
        if len(fresh_s):
            pos = subjects.searchsorted(fresh_s)
            subjects, colours = np.insert(subjects, pos, fresh_s), np.insert(colours, pos, fresh_c)
        return StatusIndex(revoked, denylisted, subjects, colours, version=bundle.version,
                           generated_at=bundle.generated_at, expires_at=bundle.expires_at)

    def is_revoked(self, token_hash: bytes) -> bool:
        return _contains(self._revoked, token_hash) >= 0

    def is_denylisted(self, token_hash: bytes) -> bool:
        return _contains(self._denylisted, token_hash) >= 0

    def colour_update(self, subject_hash: bytes) -> int | None:
        i = _contains(self._subjects, subject_hash)
        return int(self._colours[i]) if i >= 0 else None

    def counts(self) -> dict[str, int]:
        return {"revoked": len(self._revoked), "denylisted": len(self._denylisted),
                "colour_updates": len(self._subjects)}

    def __len__(self) -> int:
        """Entry count, reconciled with the server's total after each diff (docs/credentials.md section 3)."""
        return len(self._revoked) + len(self._denylisted) + len(self._subjects)
