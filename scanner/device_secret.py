"""The per-device secret behind every hash of a scanned payload (HMAC-SHA256, RFC 2104).

Why: a QR code can hold an ID number, and an 18-digit ID number has so little entropy (region,
birth date, a 3-digit sequence, a check digit) that an unkeyed SHA-256 prefix of it is reversed
by trying the candidates: seconds for one log line. Keyed with 32 random bytes that never leave
the device, the same hash can only be matched by someone who also holds the secret file.

What is keyed here (each a prefix of HMAC-SHA256(secret, data)):
- `payload_hash` (lane log lines `code_hash=`, `checkpoint-scanner decode`): 16 hex;
- `payload_tag` (decoder debug lines, `DecodedCode` repr): 12 hex;
- `online_token_hash` of provincial codes (outbox `token_hash`, online-check log lines): 16 bytes.
Hashes are therefore comparable on one device (and across its restarts) but not between
devices. Not keyed: the `token_hash` of signed codes, SHA-256(iss || cti)[:16] (docs/credentials.md
section 7), which hashes the issuer and a random token id, no personal data, and which the
central side must match against the status list.

The secret: `<directory of [store] path>/device-secret`, 32 bytes from `secrets.token_bytes`,
created at the lane's first start with mode 0600 (mkstemp: O_EXCL, 0600) and published with a
hard link, so a second process racing it reads the winner's file, never a half-written one.
A file readable by group or others is narrowed to 0600 with a warning. Until a lane installs
it, the process uses a random key of its own (CLI tools, tests): hashes then compare only
within that process.

A file of the wrong size (emptied by `: > device-secret`, a restore tool, a full card) is
replaced by the lane with a fresh key and an ERROR log line, instead of keeping the lane from
starting (under systemd: a restart loop). Why that is safe: the key only makes payload hashes
unguessable. No verdict depends on a hash made before the start (the lane's memory of recent
DENY results is kept in memory and starts empty anyway), the centre never joins on these keyed
hashes (it cannot: the key never leaves the device), and the signed codes' `token_hash` is not
keyed. What is lost is comparability: hashes in log lines and in the outbox's `token_hash` of
provincial codes from before the replacement no longer match new ones. A file that cannot be
read at all (permissions, a symlink, a directory) still stops the lane with one line naming the
fix: replacing it could hide a wrong service user. `check(path)` says the same for `check-config`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from scanner.errors import ScannerError
from scanner.fsutil import fsync_dir

log = logging.getLogger(__name__)

SECRET_BYTES = 32
FILE_NAME = "device-secret"


class DeviceSecret:
    """A 32-byte key and where it came from (`source`: a path, or "ephemeral")."""

    __slots__ = ("_key", "source")

    def __init__(self, key: bytes, source: str = "ephemeral") -> None:
        if len(key) != SECRET_BYTES:
            raise ValueError(f"device secret must be {SECRET_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)
        self.source = source

    def __repr__(self) -> str:  # never the key itself
        return f"DeviceSecret(source={self.source!r})"

    @classmethod
    def ephemeral(cls) -> DeviceSecret:
        return cls(secrets.token_bytes(SECRET_BYTES))

    def digest(self, data: bytes, size: int = 16) -> bytes:
        """HMAC-SHA256(key, data), first `size` bytes (1..32)."""
        return hmac.new(self._key, data, hashlib.sha256).digest()[:size]

    def hexdigest(self, data: bytes, chars: int = 16) -> str:
        """HMAC-SHA256(key, data) as hex, first `chars` characters (1..64)."""
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()[:chars]


def path_for_store(store_path: str | os.PathLike[str]) -> Path:
    """Where the secret of the device whose outbox is `store_path` lives (same directory)."""
    return Path(store_path).parent / FILE_NAME


class SecretSizeError(ScannerError):
    """The secret file holds `size` bytes, not SECRET_BYTES (emptied or damaged)."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


def _fix(path: Path) -> str:
    return (f"fix: delete {path} (a new one is made at the next start; hashes in older log lines "
            "then no longer match new ones)")


def read(path: str | os.PathLike[str]) -> DeviceSecret:
    """Read an existing secret; ScannerError (one line naming the file and the fix) when it is
    missing, unreadable or not 32 bytes. Narrows a group/other-readable file to 0600."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ScannerError(f"device secret {p} does not exist; fix: start the lane once (it creates it), "
                           "or give the right file") from None
    except OSError as e:
        raise ScannerError(f"cannot read device secret {p} ({e.strerror}); fix: run as the service user "
                           "(e.g. sudo -u checkpoint) or give the right file") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ScannerError(f"device secret {p} is not a plain file; fix: remove it (a new one is made at the next "
                           "start), or give the right file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(SECRET_BYTES + 1)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            try:
                os.fchmod(f.fileno(), 0o600)
            except OSError:
                raise ScannerError(f"device secret {p} is readable by other users (mode {stat.S_IMODE(mode):o}) "
                                   f"and cannot be narrowed; fix: chmod 600 {p}") from None
            log.warning("event=device_secret_narrowed path=%s was_mode=%o now=600", p, stat.S_IMODE(mode))
    if len(data) != SECRET_BYTES:
        raise SecretSizeError(f"device secret {p} holds {len(data)}{'+' if len(data) > SECRET_BYTES else ''} bytes, "
                              f"not {SECRET_BYTES}; {_fix(p)}", len(data))
    return DeviceSecret(data, str(p))


def _write_new(p: Path, *, replace: bool) -> None:
    """32 random bytes in a 0600 temp file beside `p`, fsynced, then published: a hard link
    (a racing first start keeps the winner's file) or, with `replace`, a rename over `p`."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=p.parent)  # O_EXCL, mode 0600
    except OSError as e:
        raise ScannerError(f"cannot create device secret {p} ({e.strerror}); fix: make {p.parent} "
                           "writable by the service user (systemd StateDirectory=)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, p)
        else:
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, p)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(p.parent)


def check(path: str | os.PathLike[str]) -> tuple[bool, str] | None:
    """What `check-config` says about the secret at `path`: None when it is fine or absent
    (the lane creates it); (False, warning) for a file of the wrong size (the lane replaces
    it); (True, problem) for one the lane cannot read (it would not start). One line each,
    naming the file and the fix. Reads the file; writes nothing (a wide mode is left to `read`)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return None
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        return True, (f"cannot read device secret {p} ({e.strerror}); fix: run as the service user, or remove it "
                      "if it is not a plain file (a new one is made at the next start)")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return True, f"device secret {p} is not a plain file; fix: remove it (a new one is made at the next start)"
    with os.fdopen(fd, "rb") as f:
        size = len(f.read(SECRET_BYTES + 1))
    if size != SECRET_BYTES:
        return False, (f"device secret {p} holds {size}{'+' if size > SECRET_BYTES else ''} bytes, not "
                       f"{SECRET_BYTES}: the lane replaces it with a new key at start (hashes in older log lines then "
                       f"no longer match new ones); fix: none needed, or find what emptied it")
    return None


def load_or_create(path: str | os.PathLike[str]) -> DeviceSecret:
    """The secret at `path`, created (32 random bytes, mode 0600) when there is none, and
    replaced by a new one, with an ERROR log line, when it holds the wrong number of bytes
    (see the module docstring for why that is safe). ScannerError when it cannot be read."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        _write_new(p, replace=False)
        log.info("event=device_secret_created path=%s", p)
    try:
        return read(p)
    except SecretSizeError as e:
        _write_new(p, replace=True)
        log.error("event=device_secret_replaced path=%s had_bytes=%d; a new key was made: payload hashes in log "
                  "lines (code_hash=) and the token_hash of provincial codes from before now no longer match new "
                  "ones; fix: find what emptied or damaged %s (a restore tool, a full card, a manual edit)",
                  p, e.size, p)
        return read(p)


_current = DeviceSecret.ephemeral()


def install(secret: DeviceSecret) -> None:
    """Make `secret` the process's key for every payload hash (the lane does this at start)."""
    global _current
    _current = secret


def current() -> DeviceSecret:
    return _current


def use_for_store(store_path: str | os.PathLike[str]) -> DeviceSecret:
    """load_or_create next to the outbox, then install: what the lane calls at start."""
    secret = load_or_create(path_for_store(store_path))
    install(secret)
    return secret


def payload_hash(data: bytes) -> str:
    """16 hex of HMAC-SHA256(device secret, data): names a scanned payload in log lines."""
    return _current.hexdigest(data, 16)


def payload_tag(data: bytes) -> str:
    """12 hex of HMAC-SHA256(device secret, data): the decoder's shorter tag for debug lines."""
    return _current.hexdigest(data, 12)


def online_token_hash(text: str) -> bytes:
    """16 bytes of HMAC-SHA256(device secret, UTF-8 text): the recorded `token_hash` of a
    provincial code (its content is personal data and is never stored)."""
    return _current.digest(text.encode("utf-8"), 16)
