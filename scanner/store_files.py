"""The outbox's files on the SD card: who may read them, moving a damaged set aside, and noticing
when a file the open connection writes to has been removed or replaced underneath it.

Modes: passage records are personal data in aggregate (who passed where and when), so the
database, its -wal, -shm and -journal, the lock file and every `corrupt-*` copy are 0600 and a
directory this code creates is 0700, whatever the umask. An existing outbox directory that is
wider (0755, 1777) is narrowed to 0700 when the service user owns it, else warned about.
SQLite creates the -wal and -shm with the mode of the database file (os_unix.c
robust_open/findCreateFileMode), so a database created 0600 here keeps its companions 0600 too.
Files left 0644 by an older version are narrowed at open when this user owns them.

Identity: SQLite keeps the -wal open by descriptor. If the file is unlinked while the daemon
runs, commits go on into the deleted inode and are gone at the next kill -9 or power cut (no
error is ever returned). `FileIds` records (st_dev, st_ino) of the database and its -wal at open;
`lost()` compares them with what the paths name now (stat(2)), two syscalls per commit, and
the maintenance thread every second. What a kill -9 in between still takes is noticed at the
next start (scanner/store_hwm.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from scanner.fsutil import fsync_dir

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
SUFFIXES = ("", "-wal", "-shm", "-journal")


def narrow(path: str | Path, mode: int = FILE_MODE) -> None:
    """chmod `path` to `mode` when it is wider; a file owned by someone else is logged, not fatal."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) & ~mode == 0:
        return
    try:
        os.chmod(path, mode)
    except OSError as e:
        log.warning("event=outbox_mode_wide path=%s mode=%o error=%r; fix: chown it to the service user, then "
                    "chmod %o %s", path, stat.S_IMODE(st.st_mode), e.strerror, mode, path)


def narrow_dir(directory: str | Path, mode: int = DIR_MODE) -> None:
    """The outbox's directory, when wider than `mode` (0755, a shared 1777): chmod it to `mode`
    when this user owns it (logged), else log a warning naming the fix. Never fatal: the files
    themselves are 0600 either way; a wide directory lets others list, and with write access
    delete or replace, them (which store_files.lost() then catches)."""
    try:
        st = os.stat(directory)
    except OSError:
        return
    now = stat.S_IMODE(st.st_mode)
    if now & ~mode == 0:
        return
    if st.st_uid == os.geteuid():
        try:
            os.chmod(directory, mode)
        except OSError as e:
            log.warning("event=outbox_dir_mode_wide path=%s mode=%04o error=%r; fix: chmod %o %s", directory, now,
                        e.strerror, mode, directory)
            return
        log.warning("event=outbox_dir_narrowed path=%s was_mode=%04o now=%04o", directory, now, mode)
        return
    log.warning("event=outbox_dir_mode_wide path=%s mode=%04o owner_uid=%d; other users can list%s the outbox's "
                "files; fix: give the outbox a directory of its own owned by the service user (systemd "
                "StateDirectory=, mode %o), e.g. set [store] path = /var/lib/checkpoint-scanner/outbox.db", directory,
                now, st.st_uid, " and delete" if now & 0o022 else "", mode)


def prepare(db: Path) -> None:
    """Create the database file 0600 before SQLite opens it (so its -wal and -shm follow), and
    narrow the outbox's existing files."""
    try:
        fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, FILE_MODE)  # a umask such as 0277 would leave it unwritable
        finally:
            os.close(fd)
    for suffix in (*SUFFIXES, ".lock", ".highwater"):
        narrow(str(db) + suffix)


def move_aside(p: Path, why: str) -> Path:
    """Move the db, -wal and -shm together into corrupt-<time>-<pid>/ beside it (docs/durability.md section 5:
    never separate a hot WAL from its database), 0700 with 0600 files. Also collects a stray
    -wal/-shm left by an interrupted move, so a fresh database never replays a WAL that is not
    its own. Returns the directory."""
    dest = p.parent / f"corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    n = 1
    while dest.exists() and any(dest.iterdir()):  # a second move in the same second
        n += 1
        dest = p.parent / f"corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{n}"
    dest.mkdir(mode=DIR_MODE, exist_ok=True)
    os.chmod(dest, DIR_MODE)
    for suffix in SUFFIXES:
        src = Path(str(p) + suffix)
        if src.exists():
            os.replace(src, dest / (p.name + suffix))
            narrow(dest / (p.name + suffix))
    fsync_dir(p.parent)
    fd = os.open(dest / "REASON.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {why}\n")
    return dest


def _id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class FileIds:
    db: tuple[int, int] | None
    wal: tuple[int, int] | None


def file_ids(p: Path) -> FileIds:
    """(st_dev, st_ino) of the database and its -wal now (call while the connection has them open)."""
    return FileIds(_id(str(p)), _id(f"{p}-wal"))


def lost(p: Path, ids: FileIds) -> str | None:
    """Which file of the open outbox its path no longer names ("database", "-wal"), or None."""
    if ids.db is not None and _id(str(p)) != ids.db:
        return "database"
    if ids.wal is not None and _id(f"{p}-wal") != ids.wal:
        return "-wal"
    return None


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
