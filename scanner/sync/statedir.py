"""The sync's files on the SD card: accepted bundles exactly as the anchor signed them.

Layout under `[sync] state_dir`:

    trust-list.cose  policy.cose          the bundles in force
    status/snapshot.cose                  the status snapshot in force ...
    status/diffs/<version>.cose           ... and the diffs applied on top of it, in order
    status/snapshot.part                  an interrupted snapshot download (resumed with Range),
                                          never larger than the cap of a whole download
    meta.json                             ETags, last-confirmed times, the partial's ETag

Each file is written to a temporary name, fsynced, renamed over the old one and the directory
fsynced, so a power cut leaves either the old or the new file, never half of one. Everything is
verified against the anchor again when it is loaded: the files are a cache, not a trust root.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from scanner.numbers import loads_json

from ..errors import TrustDataError
from ..fsutil import atomic_write, ensure_writable_dir, fsync_dir

log = logging.getLogger(__name__)

FILES = {"trust": "trust-list.cose", "policy": "policy.cose"}


class StateDir:
    """`max_partial_bytes` (0: no cap) bounds snapshot.part: the same cap as a whole download
    ([sync] max_body_mb), so a server that keeps resuming and cutting off cannot fill the card."""

    def __init__(self, root: str | Path, *, max_partial_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_partial_bytes = max_partial_bytes
        self.status_dir = self.root / "status"
        self.diff_dir = self.status_dir / "diffs"
        self.snapshot_path = self.status_dir / "snapshot.cose"
        self.partial_path = self.status_dir / "snapshot.part"
        self.meta_path = self.root / "meta.json"

    def ensure(self) -> None:
        ensure_writable_dir(self.diff_dir, "sync state directory", "[sync] state_dir", TrustDataError)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("event=state_unreadable path=%s error=%r", path, e.strerror)
            return None

    # -- trust list and policy ------------------------------------------------------------
    def read(self, name: str) -> bytes | None:
        return self._read(self.root / FILES[name])

    def write(self, name: str, raw: bytes) -> None:
        atomic_write(self.root / FILES[name], raw)

    # -- status: snapshot + diffs --------------------------------------------------------
    def read_snapshot(self) -> bytes | None:
        return self._read(self.snapshot_path)

    def write_snapshot(self, raw: bytes) -> None:
        """The new snapshot first, then the old diffs go: a crash in between leaves diffs that
        no longer follow the snapshot, which loading skips and removes."""
        atomic_write(self.snapshot_path, raw)
        self.clear_diffs()

    def diff_versions(self) -> list[int]:
        out = []
        for p in self.diff_dir.glob("*.cose"):
            try:
                out.append(int(p.stem))
            except ValueError:
                continue
        return sorted(out)

    def read_diff(self, version: int) -> bytes | None:
        return self._read(self.diff_dir / f"{version:012d}.cose")

    def write_diff(self, version: int, raw: bytes) -> None:
        atomic_write(self.diff_dir / f"{version:012d}.cose", raw)

    def remove_diffs(self, versions: list[int]) -> None:
        for v in versions:
            with contextlib.suppress(OSError):
                (self.diff_dir / f"{v:012d}.cose").unlink()
        fsync_dir(self.diff_dir)

    def clear_diffs(self) -> None:
        self.remove_diffs(self.diff_versions())

    # -- an interrupted snapshot download ------------------------------------------------
    def _partial_size(self) -> int:
        try:
            return self.partial_path.stat().st_size
        except OSError:
            return 0

    def read_partial(self) -> bytes:
        """The kept partial; one over the cap (left by an older version) is dropped."""
        if self.max_partial_bytes and self._partial_size() > self.max_partial_bytes:
            log.warning("event=snapshot_partial_dropped path=%s bytes=%d cap=%d", self.partial_path,
                        self._partial_size(), self.max_partial_bytes)
            self.clear_partial()
            return b""
        return self._read(self.partial_path) or b""

    def append_partial(self, data: bytes, *, reset: bool = False) -> bool:
        """Add `data` to the partial (start it anew with `reset`). False, and the partial is
        removed, when the result would pass `max_partial_bytes`: the caller restarts from zero."""
        before = 0 if reset else self._partial_size()
        if self.max_partial_bytes and before + len(data) > self.max_partial_bytes:
            log.warning("event=snapshot_partial_over_cap bytes=%d cap=%d action=restart_from_zero",
                        before + len(data), self.max_partial_bytes)
            self.clear_partial()
            return False
        mode = "wb" if reset else "ab"
        with open(self.partial_path, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def clear_partial(self) -> None:
        with contextlib.suppress(OSError):
            self.partial_path.unlink()

    # -- meta ----------------------------------------------------------------------------
    def read_meta(self) -> dict[str, Any]:
        raw = self._read(self.meta_path)
        if not raw:
            return {}
        try:
            meta = loads_json(raw.decode("utf-8"))  # a NaN confirmed_at would never count as stale
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("event=state_meta_corrupt path=%s detail=starting without ETags", self.meta_path)
            return {}
        return meta if isinstance(meta, dict) else {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.meta_path, json.dumps(meta, sort_keys=True).encode("utf-8"))
