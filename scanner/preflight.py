"""Every file `run` reads, checked before anything starts, by the same code for `check-config`
and `run` (issue 10: check-config said OK to configs that run then refused, in a restart loop).

`preflight(cfg)` -> Findings(problems, warnings), each one line in the config's format
`line N: section.key: what is wrong (got X); fix: ...`; `require_ready(cfg)` raises ConfigError
with the problems. Checked: the anchor certificate and the trust list (as trust_sync.load_state
reads them), the outbox and sync state directories, the [sync] CA bundle, the upload and API
tokens, the API's TLS files, the staff PIN, the replay frames, the device secret. Not checked: the devices
themselves (camera, I2C bus, GPIO, screen) and ports: those are opened by `run` and `selftest`.
Nothing is created or written here.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scanner import device_secret
from scanner.config import Config
from scanner.errors import ConfigError
from scanner.screening import UNCALIBRATED
from scanner.textfile import NotUtf8Error, read_text

#: key -> (what the file holds, fewest characters, how to make a good one)
SECRETS: dict[str, tuple[str, int, str]] = {
    "staff.pin_file": ("PIN", 6, "write a PIN of 6 or more characters into it"),
    "api.token_file": ("token", 16, "write a random token into it, e.g. `openssl rand -hex 32 > FILE`"),
    "upload.token_file": ("token", 16, "write this device's token from the central server into it"),
}


class SecretFileError(ConfigError):
    """A PIN or token file that cannot be used; one problem, `section.key: ...; fix: ...`."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


@dataclass(frozen=True)
class Secret:
    value: str
    warning: str = ""  # e.g. readable by other users: works, but should be fixed


def read_secret(path: str, key: str) -> Secret:
    """The PIN or token in `path` for config key `key` ("staff.pin_file", "api.token_file",
    "upload.token_file"): UTF-8 (a leading BOM dropped), stripped, at least SECRETS[key]
    characters. Raises SecretFileError (one line naming the key, the file and the fix) for an
    unset $CREDENTIALS_DIRECTORY, an unreadable, empty, too short or non-UTF-8 file; a file
    readable by group or others is a warning (for the PIN as for the tokens)."""
    what, fewest, make = SECRETS[key]
    if not path:
        raise SecretFileError(f"{key}: no file given (got \"\"); fix: set {key.split('.')[1]} under "
                              f"[{key.split('.')[0]}], or enabled = false")
    if path.startswith("$"):
        var = path.split("/")[0]
        raise SecretFileError(f"{key}: {var} is not set (got {path!r}); fix: start it under systemd (the unit "
                              "loads the credential with LoadCredential=), or give a plain file path")
    try:
        st = os.stat(path)
        value = read_text(path).strip()  # a BOM (Notepad) is dropped, never part of the PIN
    except OSError as e:
        raise SecretFileError(f"{key}: cannot read {path} ({e.strerror}); fix: {make}, chmod 600, owned by "
                              "the service user") from None
    except NotUtf8Error as e:
        raise SecretFileError(f"{key}: {path} is not UTF-8 text; fix: {make}, {e.problem.split('fix: ')[-1]}") from None
    if len(value) < fewest:
        raise SecretFileError(f"{key}: the {what} in {path} is shorter than {fewest} characters (got "
                              f"{len(value)}); fix: {make}")
    warning = ""
    others = [w for w, bits in (("readable", stat.S_IRGRP | stat.S_IROTH), ("writable", stat.S_IWGRP | stat.S_IWOTH))
              if st.st_mode & bits]
    if others:
        warning = (f"{key}: {path} is {' and '.join(others)} by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                   f"fix: chmod 600 {path}")
    return Secret(value, warning)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _creatable_dir(directory: Path) -> str:
    """'' when `directory` exists and is writable, or its nearest existing ancestor is (so `run`
    can create it); else what is wrong. Creates nothing."""
    d = directory
    while not d.exists() and d != d.parent:
        d = d.parent
    if not d.is_dir():
        return f"{d} is not a directory"
    if not os.access(d, os.W_OK | os.X_OK):
        return f"{d} is not writable by this user"
    return ""


def preflight(cfg: Config) -> Findings:
    """Check every file `run` would read or write for `cfg`; see the module docstring."""
    problems: list[tuple[int, str]] = []
    warnings: list[tuple[int, str]] = []

    def line(k: str) -> int:
        return cfg.key_lines.get(k) or cfg.key_lines.get(k.split(".")[0]) or 0

    def problem(k: str, msg: str) -> None:
        problems.append((line(k), msg))

    def warn(k: str, msg: str) -> None:
        warnings.append((line(k), msg))

    def path_set(k: str, path: str) -> bool:
        if path.startswith("$"):
            problem(k, f"{k}: {path.split('/')[0]} is not set (got {path!r}); fix: start it under systemd "
                    "(LoadCredential=), or give a plain file path")
            return False
        return True

    _trust(cfg, problem, warn)
    if not cfg.simulated and cfg.thermometer.calibration_version == UNCALIBRATED:
        warn("thermometer.calibration_version", "thermometer.calibration_version: not calibrated on a real gate "
             f"(got {UNCALIBRATED!r}): every passage is REVIEW TEMP_UNRELIABLE until it is; fix: run "
             "`checkpoint-scanner calibrate --config FILE` against a reference thermometer")
    store_dir = Path(cfg.store.path).parent
    bad = _creatable_dir(store_dir) if path_set("store.path", cfg.store.path) else ""
    if bad:
        problem("store.path", f"store.path: the outbox directory cannot be written ({bad}); fix: create "
                f"{store_dir} and give the service user write access, or set path under [store]")
    elif not cfg.store.path.startswith("$") and (found := device_secret.check(device_secret.path_for_store(
            cfg.store.path))) is not None:  # the payload-hash key beside the outbox (scanner/device_secret.py)
        (problem if found[0] else warn)("store.path", f"store.path: {found[1]}")
    sy = cfg.sync
    if sy.enabled and path_set("sync.state_dir", sy.state_dir):
        bad = _creatable_dir(Path(sy.state_dir))
        if bad:
            problem("sync.state_dir", f"sync.state_dir: cannot be written ({bad}); fix: create {sy.state_dir} "
                    "writable by the service user, or set state_dir under [sync]")
    if sy.ca_bundle and (sy.enabled or sy.online_patterns or cfg.upload.enabled) \
            and path_set("sync.ca_bundle", sy.ca_bundle):
        try:
            ssl.create_default_context(cafile=sy.ca_bundle)
        except (OSError, ssl.SSLError) as e:
            problem("sync.ca_bundle", f"sync.ca_bundle: cannot load {sy.ca_bundle} ({_why(e)}); fix: a PEM file "
                    "of the CA certificate(s), readable by the service user, or \"\" for the system CAs")
    for k, enabled, path in (("upload.token_file", cfg.upload.enabled, cfg.upload.token_file),
                             ("api.token_file", cfg.api.enabled, cfg.api.token_file),
                             ("staff.pin_file", cfg.staff.enabled, cfg.staff.pin_file)):
        if not enabled:
            continue
        try:
            secret = read_secret(path, k)
        except SecretFileError as e:
            problem(k, e.problems[0])
        else:
            if secret.warning:
                warn(k, secret.warning)
    _tls(cfg, problem, path_set)
    cam = cfg.camera
    if cam.source == "replay" and cam.replay_path and not cfg.simulation.bootstrap \
            and path_set("camera.replay_path", cam.replay_path) and not Path(cam.replay_path).exists():
        problem("camera.replay_path", f"camera.replay_path: not found (got {cam.replay_path!r}); fix: a folder "
                "of images or a video file, or [simulation] bootstrap = true")

    def lines(found: list[tuple[int, str]]) -> list[str]:  # in file order, as the text check sorts them
        return [f"line {n}: {msg}" if n else msg for n, msg in sorted(found, key=lambda p: p[0])]

    return Findings(lines(problems), lines(warnings))


def _why(e: Exception) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)


def _trust(cfg: Config, problem: Callable[[str, str], None], warn: Callable[[str, str], None]) -> None:
    """As trust_sync.load_state: the anchor always; the trust list unless the sync may fetch one."""
    from scanner.credentials.trust import TrustStore, load_certificate
    from scanner.errors import TrustDataError

    tr = cfg.trust
    if cfg.simulation.bootstrap and not Path(tr.trust_list).exists():  # `run` creates demo keys then
        for k, p in (("trust.trust_list", tr.trust_list), ("trust.anchor_cert", tr.anchor_cert)):
            bad = _creatable_dir(Path(p).parent)
            if bad:
                problem(k, f"{k}: bootstrap cannot create {p} ({bad}); fix: point it to a writable place")
        return
    try:
        load_certificate(tr.anchor_cert)
    except TrustDataError as e:
        problem("trust.anchor_cert", f"trust.anchor_cert: {e}")
        if not cfg.sync.enabled and not os.access(tr.trust_list, os.R_OK):  # every problem at once
            problem("trust.trust_list", f"trust.trust_list: cannot read {tr.trust_list}; fix: copy "
                    "trust-list.cose from the central server there, or set trust_list under [trust]")
        return
    try:
        TrustStore.load(tr.trust_list, tr.anchor_cert)
    except TrustDataError as e:
        if not cfg.sync.enabled:
            problem("trust.trust_list", f"trust.trust_list: {e}")
        else:
            warn("trust.trust_list", f"trust.trust_list: {e}; until the sync fetches one the lane uses the list "
                 "it saved before, or none (every code REVIEW UNKNOWN_SIGNER)")


def _tls(cfg: Config, problem: Callable[[str, str], None], path_set: Callable[[str, str], bool]) -> None:
    api = cfg.api
    if not (api.enabled and api.tls_cert and api.tls_key):
        return
    if not (path_set("api.tls_cert", api.tls_cert) and path_set("api.tls_key", api.tls_key)):
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(api.tls_cert, api.tls_key)
    except (OSError, ssl.SSLError) as e:
        problem("api.tls_cert", f"api.tls_cert: cannot load {api.tls_cert} with {api.tls_key} ({_why(e)}); "
                "fix: a PEM certificate and its private key, readable by the service user")
    if api.client_ca and path_set("api.client_ca", api.client_ca):
        try:
            ctx.load_verify_locations(api.client_ca)
        except (OSError, ssl.SSLError) as e:
            problem("api.client_ca", f"api.client_ca: cannot load {api.client_ca} ({_why(e)}); fix: a PEM file "
                    "of the CA that signs client certificates")


def require_ready(cfg: Config, warn: Callable[[str], None] | None = None) -> None:
    """Raise ConfigError (every problem, the config's path) unless `preflight` finds none;
    pass each warning to `warn`. `run` and `check-config` both call this before starting anything."""
    found = preflight(cfg)
    if warn is not None:
        for w in found.warnings:
            warn(w)
    if found.problems:
        raise ConfigError(found.problems, cfg.source_path or None)


def read_pin(cfg: Config) -> str:
    """The staff PIN for the staff page (scanner.frontends); SecretFileError as in read_secret."""
    try:
        return read_secret(cfg.staff.pin_file, "staff.pin_file").value
    except SecretFileError as e:
        raise ConfigError(e.problems, cfg.source_path or None) from None
