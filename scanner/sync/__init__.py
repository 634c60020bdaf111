"""Work beside the scan loop that talks to the central server: push upload, pull API support,
outbox maintenance (scanner/sync/background.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scanner.config import Config


def start_background(cfg: Config, store_path: str, stop: threading.Event,
                     clock_trusted: Callable[[], bool] | None = None) -> list[threading.Thread]:
    """Uploader, pull API and outbox maintenance, each with its own DB connections; returns the
    threads to join after `stop` is set."""
    from scanner.sync.background import start_background as start

    return start(cfg, store_path, stop, clock_trusted)
