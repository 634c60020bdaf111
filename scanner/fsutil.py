"""Small file-system helpers shared by everything that must survive a crash or a power cut:
atomic replacement of a file, fsync of the directory that names it, and a writable-directory
check whose message names the config key to change."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new name in `path` durable. Best effort: some file systems refuse."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def ensure_writable_dir(directory: str | Path, what: str, config_key: str, error: type[Exception], *,
                        mode: int | None = None) -> None:
    """Create `directory` if needed and check the service can write there; else raise `error`
    with a one-line message naming the fix (`what`: "outbox directory", "sync state directory").
    `mode` (e.g. 0o700): given to the directory when this call creates it, whatever the umask."""
    directory = Path(directory)
    try:
        if mode is not None and not directory.exists():
            directory.parent.mkdir(parents=True, exist_ok=True)
            try:
                directory.mkdir(mode=mode)
            except FileExistsError:
                pass  # made by someone else meanwhile: theirs, left as it is
            else:
                os.chmod(directory, mode)
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the {what} {directory} ({e.strerror}); fix: create it and give the service "
                    f"user write access, or set {config_key}") from None
    if not os.access(directory, os.W_OK):
        raise error(f"{what} {directory} is not writable; fix: chown it to the service user, or set {config_key} "
                    "to a writable place")
