"""Config rules that involve more than one key (scanner.config runs them once every key is valid):
the lane's identity, pins, thermometer bounds, devices against `[checkpoint] mode`, [sync],
[upload], [api] and [staff]. Each returns (line, `section.key: what is wrong (got X); fix: ...`).
"""

from __future__ import annotations

import re
from typing import Any

from scanner.config_schema import _VILLAGE_RE, MODES, REAL_SOURCES, SIMULATED_SOURCES, Config

#: BCM pins of I2C bus 1 on the 40-pin header (Raspberry Pi GPIO pinout: GPIO2 = SDA1 on header
#: pin 3, GPIO3 = SCL1 on header pin 5), where the MLX90614 is wired.
I2C1_PINS = {2: "SDA (header pin 3)", 3: "SCL (header pin 5)"}
#: Defaults of [checkpoint] id and device_id: placeholders, refused on a real gate, where every
#: gate left at them would file its records under the same name. The shipped example configs
#: carry ids with CHANGE_ME in them for the same reason: install-pi.sh copies one to /etc, and an
#: unedited Pi must not upload under the example's id. The fix names no value to copy.
PLACEHOLDER_IDS = {"id": ("CHECKPOINT-1", "id = the checkpoint's id as the central platform lists it (卡口编号)"),
                   "device_id": ("device-1", "device_id = this Pi's own id, one per Pi (设备编号)")}
CHANGE_ME = "CHANGE_ME"


def _identity(cfg: Config, key_lines: dict[str, int], at: Any) -> list[tuple[int, str]]:
    """`[checkpoint] id` and `device_id`: never blank; on a real gate set in the file and not the
    placeholder default (issue 12: every gate left at the default uploaded as "device-1")."""
    out: list[tuple[int, str]] = []
    for k, (placeholder, fix) in PLACEHOLDER_IDS.items():
        value = getattr(cfg.checkpoint, k)
        where = at(f"checkpoint.{k}")
        if not value.strip():
            out.append((where, f"checkpoint.{k}: blank (got {value!r}); fix: {fix}"))
        elif cfg.simulated:
            continue
        elif f"checkpoint.{k}" not in key_lines:
            out.append((where, f"checkpoint.{k}: required on a real gate (got nothing: every such gate would upload "
                        f"as {placeholder!r}); fix: {fix}, under [checkpoint]"))
        elif value == placeholder or CHANGE_ME in value.upper():
            out.append((where, f"checkpoint.{k}: a placeholder on a real gate (got {value!r}); "
                        f"fix: {fix}"))
    return out


def key_check(name: str, value: Any) -> str | None:
    """A rule on one key's valid value that its range cannot say (scanner.config runs it with the
    range checks, so it is reported together with every other key's problem): None when fine."""
    if name == "indicators.relay_pin" and value == 1:
        return ("GPIO1 is reserved for the HAT EEPROM (got 1); fix: use 0 for no relay or a free pin such as 23")
    return None


def cross_checks(cfg: Config, key_lines: dict[str, int], sec_lines: dict[str, int]) -> list[tuple[int, str]]:
    """Rules that involve more than one key."""
    out: list[tuple[int, str]] = []

    def at(k: str) -> int:
        return key_lines.get(k, sec_lines.get(k.split(".")[0], 0))

    cp = cfg.checkpoint
    out.extend(_identity(cfg, key_lines, at))
    bad = [v for v in cp.villages if not _VILLAGE_RE.match(v)]
    if bad:
        out.append((at("checkpoint.villages"), f"checkpoint.villages: village codes are 12 digits (got {bad[0]!r}); "
                    "fix: copy the code printed on the residence registration"))
    if cp.kind == "village_gate" and not cp.villages:
        out.append((at("checkpoint.kind"), "checkpoint.villages: a village_gate needs at least one village "
                    "(got []); fix: add villages = [\"330381001001\"] under [checkpoint]"))
    ind = cfg.indicators
    pins = {"green_pin": ind.green_pin, "red_pin": ind.red_pin, "buzzer_pin": ind.buzzer_pin}
    if ind.relay_pin:
        pins["relay_pin"] = ind.relay_pin
    if ind.override_button_pin:
        pins["override_button_pin"] = ind.override_button_pin
    seen: dict[int, str] = {}
    for name, pin in pins.items():
        if pin in seen:
            out.append((at(f"indicators.{name}"), f"indicators.{name}: GPIO{pin} is already used by "
                        f"{seen[pin]} (got {pin}); fix: give each output its own pin"))
        seen[pin] = name
    if cfg.thermometer.source == "mlx90614" and cfg.thermometer.i2c_bus == 1:
        for name, pin in pins.items():
            if pin in I2C1_PINS:
                out.append((at(f"indicators.{name}"), f"indicators.{name}: GPIO{pin} is {I2C1_PINS[pin]} of I2C bus "
                            f"1, wired to the MLX90614 thermometer (got {pin}); fix: a free pin such as 17, 27, 22, "
                            "23 or 24"))
    out.extend((at(k), msg) for k, msg in device_mismatches(cfg))
    th = cfg.thermometer
    if not th.skin_min_c < th.skin_max_c:  # `not <`: a NaN fails too
        out.append((at("thermometer.skin_min_c"), f"thermometer.skin_min_c: must be below skin_max_c "
                    f"(got {th.skin_min_c} >= {th.skin_max_c}); fix: e.g. 28.0 and 43.0"))
    if not th.ambient_min_c < th.ambient_max_c:
        out.append((at("thermometer.ambient_min_c"), "thermometer.ambient_min_c: must be below ambient_max_c "
                    f"(got {th.ambient_min_c} >= {th.ambient_max_c}); fix: e.g. -10.0 and 45.0"))
    if cfg.camera.source == "replay" and not cfg.camera.replay_path and not cfg.simulation.bootstrap:
        out.append((at("camera.replay_path"), "camera.replay_path: source=replay needs a folder or video "
                    "(got \"\"); fix: set replay_path, or [simulation] bootstrap = true"))
    if cfg.simulation.bootstrap and not cfg.simulated:
        out.append((at("simulation.bootstrap"), "simulation.bootstrap: only for simulated devices (got true "
                    "with checkpoint.mode = \"real\"); fix: set bootstrap = false on a real Pi"))
    if cfg.clock.trust == "always" and not cfg.simulated:
        out.append((at("clock.trust"), "clock.trust: 'always' would PASS codes on a wrong clock (got \"always\" "
                    "with checkpoint.mode = \"real\"); fix: use \"system\" on a real Pi"))
    out.extend(_sync_checks(cfg, at))
    out.extend(_records_checks(cfg, at))
    return out


def device_mismatches(cfg: Config) -> list[tuple[str, str]]:
    """(`section.source`, message) for each device whose source contradicts `checkpoint.mode`.
    Used by the config check and again by scanner.hardware before opening anything."""
    mode = cfg.checkpoint.mode
    if mode not in MODES:  # a Config built in code with replace()
        return [("checkpoint.mode", f"checkpoint.mode: must be \"real\" or \"simulated\" (got {mode!r}); "
                 "fix: mode = \"real\" on a gate")]
    out: list[tuple[str, str]] = []
    for sname, sim in SIMULATED_SOURCES.items():
        source = getattr(cfg, sname).source
        real = REAL_SOURCES[sname]
        if mode == "real" and source not in real:
            out.append((f"{sname}.source", f"{sname}.source: a simulated device on a lane whose checkpoint.mode is "
                        f"\"real\" (got \"{source}\"); fix: source = \"{real[0]}\" on a gate, or mode = "
                        "\"simulated\" for a demo"))
        elif mode == "simulated" and source != sim:
            out.append((f"{sname}.source", f"{sname}.source: a real device on a lane whose checkpoint.mode is "
                        f"\"simulated\" (got \"{source}\"); fix: source = \"{sim}\" (or leave the line out), or "
                        "mode = \"real\" on a gate"))
    return out


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _sync_checks(cfg: Config, at: Any) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    sy = cfg.sync
    url = sy.server_url
    if url:
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0].rsplit(":", 1)[0] if not rest.startswith("[") else rest.split("]")[0] + "]"
        if scheme == "http" and host not in _LOOPBACK:
            out.append((at("sync.server_url"), f"sync.server_url: plain http would let anyone on the path see "
                        f"codes and block updates (got {url!r}); fix: use https://"))
        elif scheme not in ("http", "https") or not host:
            out.append((at("sync.server_url"), f"sync.server_url: not a URL (got {url!r}); "
                        "fix: e.g. \"https://health.example.gov.cn\""))
    elif sy.enabled or sy.online_patterns:
        what = "enabled = true" if sy.enabled else "online_patterns"
        out.append((at("sync.server_url"), f"sync.server_url: {what} needs the server (got \"\"); "
                    "fix: set server_url = \"https://...\" under [sync]"))
    for pat in sy.online_patterns:
        try:
            re.compile(pat)
        except re.error as e:
            out.append((at("sync.online_patterns"), f"sync.online_patterns: not a regular expression "
                        f"(got {pat!r}: {e}); fix: check brackets and escapes; in TOML write the pattern in single "
                        "quotes, e.g. '^RAHC:[0-9A-Z]{20,64}$'"))
    if not sy.retry_min_s <= sy.retry_max_s:  # written so that NaN fails too
        out.append((at("sync.retry_min_s"), f"sync.retry_min_s: must not exceed retry_max_s (got "
                    f"{sy.retry_min_s} > {sy.retry_max_s}); fix: e.g. 5 and 900"))
    if sy.city_code and not re.fullmatch(r"\d{6}", sy.city_code):
        out.append((at("sync.city_code"), f"sync.city_code: 6 digits (got {sy.city_code!r}); fix: e.g. \"330381\""))
    return out


def _records_checks(cfg: Config, at: Any) -> list[tuple[int, str]]:
    """[upload], [api] and [staff]: what must be set together (issue 5)."""
    out: list[tuple[int, str]] = []
    up, api = cfg.upload, cfg.api
    if up.enabled and not (up.url or cfg.sync.server_url):
        out.append((at("upload.url"), "upload.url: enabled = true needs a server (got \"\"); fix: set url, "
                    "or server_url under [sync]"))
    if up.url and not up.url.startswith(("https://", "http://")):
        out.append((at("upload.url"), f"upload.url: not a URL (got {up.url!r}); fix: e.g. "
                    "\"https://records.example.gov.cn/api/v1/records\""))
    if up.enabled and not up.token_file:
        out.append((at("upload.token_file"), "upload.token_file: the server needs this device's token (got \"\"); "
                    "fix: token_file = \"$CREDENTIALS_DIRECTORY/upload-token\""))
    if api.enabled and not api.token_file:
        out.append((at("api.token_file"), "api.token_file: the pull API never runs without a token (got \"\"); "
                    "fix: token_file = \"$CREDENTIALS_DIRECTORY/api-token\", or enabled = false"))
    if bool(api.tls_cert) != bool(api.tls_key):
        out.append((at("api.tls_cert"), "api.tls_cert: tls_cert and tls_key go together (got only one); "
                    "fix: set both, or neither for plain HTTP on a VPN"))
    if api.client_ca and not api.tls_cert:
        out.append((at("api.client_ca"), "api.client_ca: mutual TLS needs HTTPS (got no tls_cert); "
                    "fix: set tls_cert and tls_key"))
    if bool(cfg.staff.tls_cert) != bool(cfg.staff.tls_key):
        out.append((at("staff.tls_cert"), "staff.tls_cert: tls_cert and tls_key go together (got only one); "
                    "fix: set both, or neither for plain HTTP"))
    return out
