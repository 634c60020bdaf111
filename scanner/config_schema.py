"""Every config key, declared once: a frozen dataclass per `[section]`, each field with its
default, help text (unit and range), bounds and allowed values (`key()`). Parsing and messages
are in scanner/config.py, line numbers in scanner/config_text.py, the rules that tie keys
together in scanner/config_checks.py.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VILLAGE_RE = re.compile(r"^\d{12}$")


def key(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        choices: tuple[str, ...] | None = None, path: bool = False, required: bool = False) -> Any:
    """Declare one config key: default, help text (shown in errors and docs), bounds.
    `required`: the file must set it (the default only serves code that builds sections)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "path": path, "required": required}
    return field(default=default, metadata=meta)


#: The one statement of what a lane is: `[checkpoint] mode`. Each device `source` left out is the
#: mode's device; a source that contradicts the mode is refused (issue 10: a missing line must
#: never put a scripted thermometer on a real gate).
MODES = ("real", "simulated")
SIMULATED_SOURCES = {"camera": "replay", "thermometer": "scripted", "indicators": "mock"}
REAL_SOURCES = {"camera": ("opencv", "picamera2"), "thermometer": ("mlx90614",), "indicators": ("gpio",)}


@dataclass(frozen=True)
class CheckpointSection:
    mode: str = key("real", "real devices on a gate, or simulated devices for a demo or a laptop; "
                    "required, no default", choices=MODES, required=True)
    id: str = key("CHECKPOINT-1", "checkpoint id as the central platform knows it; required on a real gate")
    device_id: str = key("device-1", "this device's id, one per Pi; required on a real gate")
    kind: str = key("highway_exit", "lane kind", choices=("highway_exit", "village_gate"))
    villages: tuple[str, ...] = key((), "12-digit village/community codes this gate admits (village_gate)")


@dataclass(frozen=True)
class CameraSection:
    source: str = key("opencv", "frame source; left out: opencv when mode = \"real\", replay when \"simulated\"",
                      choices=("opencv", "picamera2", "replay"))
    device: str = key("/dev/video0", "V4L2 device path for source=opencv; prefer /dev/v4l/by-id/...")
    csi_index: int = key(0, "Picamera2 camera number for source=picamera2 (0 = first ribbon camera)", min=0, max=7)
    replay_path: str = key("", "folder of images or a video file for source=replay", path=True)
    replay_loop: bool = key(True, "replay: start again at the end")
    replay_fps: float = key(10.0, "replay: frames per second", min=0.5, max=120)
    width: int = key(640, "capture width in pixels", min=160, max=4096)
    height: int = key(480, "capture height in pixels", min=120, max=3072)
    fps: int = key(15, "capture frames per second", min=1, max=120)
    max_frame_age_s: float = key(0.5, "never decode a frame older than this (seconds)", min=0.05, max=5)


@dataclass(frozen=True)
class DecodeSection:
    engine: str = key("auto", "QR decoder: auto = zxing-cpp when installed, else zbar",
                      choices=("auto", "zxing", "zbar"))
    budget_ms: float = key(80.0, "most time one 640x480 frame may take in the decoding ladder; larger "
                           "frames get proportionally more (milliseconds)",
                           min=5, max=2000)
    motion_gate: bool = key(True, "skip frames that did not change since the last one without a code")
    gate_max_skip_s: float = key(1.0, "decode at least this often even when nothing moves (seconds)",
                                 min=0.1, max=60)


@dataclass(frozen=True)
class ThermometerSection:
    source: str = key("mlx90614", "thermometer; left out: mlx90614 when mode = \"real\", scripted when "
                      "\"simulated\"", choices=("mlx90614", "scripted"))
    i2c_bus: int = key(1, "I2C bus number (/dev/i2c-N); 1 on a Pi header", min=0, max=20)
    address: int = key(0x5A, "7-bit I2C address of the MLX90614", min=0x03, max=0x77)
    poll_interval_s: float = key(0.05, "time between sensor reads (seconds)", min=0.01, max=1)
    presence_delta_c: float = key(2.0, "object minus ambient that means a person is in front (°C)", min=0.5, max=20)
    skin_min_c: float = key(28.0, "lowest object temperature counted as skin (°C)", min=15, max=36)
    skin_max_c: float = key(43.0, "highest object temperature counted as skin (°C)", min=37, max=50)
    presence_hold_s: float = key(0.3, "presence must hold this long before sampling (seconds)", min=0, max=5)
    samples: int = key(7, "samples per measurement; the median is reported", min=3, max=50)
    max_spread_c: float = key(0.3, "max-min of the samples above which the reading is unstable (°C)", min=0.05, max=3)
    offset_c: float = key(0.0, "calibration: added to the object temperature (°C)", min=-5, max=10)
    ambient_coeff: float = key(0.0, "calibration: °C added per °C ambient below reference_ambient_c", min=-1, max=1)
    reference_ambient_c: float = key(25.0, "calibration: ambient where only offset_c applies (°C)", min=-20, max=50)
    calibration_version: str = key("uncalibrated", "recorded with every passage; change it when you recalibrate")
    ambient_min_c: float = key(-10.0, "below this ambient the reading is unreliable (°C)", min=-40, max=30)
    ambient_max_c: float = key(45.0, "above this ambient the reading is unreliable (°C)", min=10, max=85)
    ambient_max_rate_c_per_min: float = key(1.0, "ambient changing faster than this makes readings unreliable "
                                            "(°C per minute)", min=0.1, max=20)
    ambient_rate_window_s: float = key(60.0, "window over which the ambient rate is measured (seconds)",
                                       min=10, max=600)
    stuck_after_s: float = key(120.0, "identical readings for this long mean a stuck sensor: FAULT (seconds)",
                               min=1, max=3600)
    fault_after: int = key(5, "consecutive failed reads before the sensor counts as down", min=1, max=100)


@dataclass(frozen=True)
class IndicatorsSection:
    source: str = key("gpio", "LED/buzzer backend; left out: gpio when mode = \"real\", mock when \"simulated\"",
                      choices=("gpio", "mock"))
    pin_factory: str = key("lgpio", "gpiozero pin factory for source=gpio (lgpio on a Pi 5)",
                           choices=("lgpio", "rpigpio", "pigpio", "native"))
    green_pin: int = key(17, "BCM number of the green LED", min=2, max=27)
    red_pin: int = key(27, "BCM number of the red LED", min=2, max=27)
    buzzer_pin: int = key(22, "BCM number of the active buzzer", min=2, max=27)
    relay_pin: int = key(0, "BCM number of the gate relay; 0 = no relay", min=0, max=27)
    active_high: bool = key(True, "LEDs light when the pin is high")
    relay_active_high: bool = key(True, "relay closes when the pin is high")
    relay_pulse_s: float = key(3.0, "how long the relay releases the gate on PASS (seconds)", min=0.2, max=30)
    verdict_hold_s: float = key(2.0, "how long a verdict stays lit before READY (seconds)", min=0.3, max=30)
    override_button_pin: int = key(0, "BCM number of the staff override button (to GND); 0 = none", min=0, max=27)
    override_hold_s: float = key(2.0, "holding the button this long passes the pending REVIEW (seconds)",
                                 min=0.5, max=10)


@dataclass(frozen=True)
class PolicySection:
    fever_threshold_c: float = key(37.3, "calibrated body temperature at or above which DENY FEVER (°C)",
                                   min=35.0, max=40.0)
    clock_skew_s: int = key(300, "allowed clock difference when checking code times (seconds)", min=0, max=3600)
    pairing_window_s: float = key(10.0, "codes and temperature of one person must come within this (seconds)",
                                  min=1, max=120)
    cooldown_s: float = key(3.0, "the same code is not counted again within this (seconds)", min=0, max=60)
    override_window_s: float = key(60.0, "a REVIEW can be overridden (staff page, button) this long after it was "
                                   "decided; then it leaves the pending list (seconds)", min=5, max=600)
    recheck_after_deny_s: float = key(600.0, "a health code refused here is REVIEW RECENTLY_DENIED, not judged afresh, "
                                      "when shown again within this time (seconds; 0 = off)", min=0, max=86400)


@dataclass(frozen=True)
class TrustSection:
    trust_list: str = key("trust/trust-list.cose", "signed trust list file", path=True)
    anchor_cert: str = key("trust/anchor.crt", "pinned trust-anchor certificate (PEM or DER)", path=True)


@dataclass(frozen=True)
class ClockSection:
    trust: str = key("system", "when the wall clock counts as right: 'system' asks the kernel "
                     "(NTP sync); 'always' only for simulation and bench tests", choices=("system", "always"))
    server_offset_max_age_s: int = key(43200, "without NTP, an offset to the server's clock measured at a trust "
                                       "sync keeps the clock trusted this long (seconds)", min=60, max=7 * 86400)
    max_jump_s: float = key(10.0, "a change of wall minus monotonic time larger than this is a clock jump and "
                            "drops the server offset (seconds)", min=1, max=3600)


@dataclass(frozen=True)
class SyncSection:
    enabled: bool = key(False, "fetch the trust list, status list and policy from the central server")
    server_url: str = key("", "central server base URL, https:// (http:// only to 127.0.0.1 / localhost)")
    ca_bundle: str = key("", "PEM CA bundle that signs the server's TLS certificate; \"\" = system CAs", path=True)
    state_dir: str = key("/var/lib/checkpoint-scanner/sync", "where accepted bundles are kept across reboots",
                         path=True)
    interval_s: float = key(300.0, "time between sync rounds when all is well (seconds)", min=10, max=86400)
    retry_min_s: float = key(5.0, "first back-off after a failed round; doubles per failure (seconds)",
                             min=0.1, max=3600)
    retry_max_s: float = key(900.0, "back-off cap; each wait is random in 0..cap (full jitter) (seconds)",
                             min=1, max=86400)
    connect_timeout_s: float = key(5.0, "TCP/TLS connect timeout (seconds)", min=0.1, max=60)
    read_timeout_s: float = key(20.0, "longest silence while reading a response (seconds)", min=0.1, max=300)
    download_timeout_s: float = key(300.0, "longest time for one whole download (seconds)", min=1, max=3600)
    max_body_mb: int = key(64, "largest bundle accepted (MiB); a 1-million-entry status list is ~22 MiB",
                           min=1, max=1024)
    trust_max_age_s: int = key(7 * 86400, "trust list older than this warns (policy may override) (seconds)",
                               min=60, max=365 * 86400)
    status_max_age_s: int = key(86400, "status list older than this warns (policy may override) (seconds)",
                                min=60, max=365 * 86400)
    policy_max_age_s: int = key(7 * 86400, "policy older than this warns (policy may override) (seconds)",
                                min=60, max=365 * 86400)
    status_max_diffs: int = key(500, "after this many status diffs the full status list is fetched again",
                                min=1, max=100000)
    online_patterns: tuple[str, ...] = key((), "regular expressions (whole text) of provincial codes checked "
                                           "online at POST {server_url}/api/v1/verify")
    online_timeout_s: float = key(2.0, "budget of one online check, then REVIEW ONLINE_UNAVAILABLE (seconds)",
                                  min=0.2, max=10)
    city_code: str = key("", "6-digit division code sent with online checks, e.g. \"330381\"")


@dataclass(frozen=True)
class StoreSection:
    path: str = key("/var/lib/checkpoint-scanner/outbox.db", "SQLite outbox file", path=True)
    max_size_mib: int = key(1024, "hard cap of the outbox file (MiB); delivered rows are pruned first, "
                            "undelivered never: when they fill it the lane shows FAULT", min=8, max=1048576)
    retention_days: float = key(7.0, "keep delivered records this long, then prune them (days; 0 = at once)",
                                min=0, max=3650)
    maintenance_interval_s: float = key(30.0, "pruning, idle WAL checkpoint and disk alarm run this often "
                                        "(seconds)", min=1, max=3600)


@dataclass(frozen=True)
class UploadSection:
    enabled: bool = key(False, "push records to the central server")
    url: str = key("", "POST endpoint for record batches; \"\" = [sync] server_url + /api/v1/records")
    token_file: str = key("", "file holding this device's bearer token, e.g. $CREDENTIALS_DIRECTORY/upload-token",
                          path=True)
    batch_records: int = key(200, "send when this many records wait; also the batch cap", min=1, max=500)
    batch_kib: int = key(256, "send when the batch JSON reaches this size; also the cap (KiB)", min=1, max=1024)
    max_age_s: float = key(5.0, "send a smaller batch once its oldest record waited this long (seconds)",
                           min=0, max=3600)
    poll_s: float = key(1.0, "how often an idle uploader looks for new records (seconds)", min=0.05, max=60)
    connect_timeout_s: float = key(5.0, "TCP/TLS connect timeout (seconds)", min=0.1, max=60)
    read_timeout_s: float = key(30.0, "longest silence while reading the answer (seconds)", min=0.1, max=300)
    attempt_deadline_s: float = key(60.0, "longest time for one whole request (seconds)", min=0.5, max=600)
    backoff_base_s: float = key(1.0, "first back-off after a failure; doubles per failure (seconds)",
                                min=0.01, max=600)
    backoff_cap_s: float = key(300.0, "back-off cap; each wait is random in 0..cap (full jitter) (seconds)",
                               min=0.1, max=86400)
    retry_after_max_s: float = key(3600.0, "longest Retry-After honoured on 429/503 (seconds)", min=0.1, max=86400)


@dataclass(frozen=True)
class ApiSection:
    enabled: bool = key(False, "serve the pull API (/api/v1/records, ack, /healthz, /metrics)")
    bind: str = key("", "listen address; \"\" = all interfaces (a token is required); prefer the VPN address")
    port: int = key(8787, "TCP port", min=1, max=65535)
    token_file: str = key("", "file holding the bearer token the central server sends, e.g. "
                          "$CREDENTIALS_DIRECTORY/api-token (systemd LoadCredential=)", path=True)
    max_limit: int = key(1000, "most records one GET returns; larger limits are capped", min=1, max=1000)
    rate_per_s: float = key(2.0, "requests per second per client (token bucket) before 429", min=0.01, max=1000)
    burst: int = key(20, "token bucket size: requests a client may send at once", min=1, max=10000)
    max_clients: int = key(16, "requests handled at once (running or waiting for a worker); more get 503",
                           min=1, max=256)
    max_connections: int = key(256, "open connections at once (idle ones cost no thread); at the cap the least "
                               "recently active idle one is closed, 503 when none is idle", min=8, max=4096)
    request_timeout_s: float = key(5.0, "whole-request deadline: TLS handshake, headers and body must arrive "
                                   "within it, else 408 and close (seconds)", min=1, max=60)
    tls_cert: str = key("", "PEM certificate for HTTPS; \"\" = plain HTTP (only on a VPN or loopback)", path=True)
    tls_key: str = key("", "PEM private key for tls_cert", path=True)
    client_ca: str = key("", "PEM CA that signs client certificates; set = mutual TLS required", path=True)


@dataclass(frozen=True)
class LogSection:
    level: str = key("info", "log level", choices=("debug", "info", "warning", "error"))
    format: str = key("json", "journal line format", choices=("json", "text"))


@dataclass(frozen=True)
class KioskSection:
    enabled: bool = key(False, "draw the kiosk screen (prompts, verdict banner, camera preview)")
    display: str = key("framebuffer", "where: the Pi's screen (/dev/fb0) or a PNG file",
                       choices=("framebuffer", "file"))
    device: str = key("/dev/fb0", "framebuffer device for display=framebuffer")
    file_path: str = key("kiosk.png", "PNG written for display=file", path=True)
    width: int = key(1280, "screen width for display=file, pixels", min=320, max=7680)
    height: int = key(720, "screen height for display=file, pixels", min=240, max=4320)
    fps: float = key(4.0, "screen updates per second", min=0.5, max=30)
    speech: bool = key(False, "speak verdicts in Mandarin through espeak-ng")


@dataclass(frozen=True)
class StaffSection:
    enabled: bool = key(False, "serve the staff status page (PIN protected)")
    bind: str = key("0.0.0.0", "address the staff page listens on; 127.0.0.1 = this device only")
    port: int = key(8080, "TCP port of the staff page", min=1, max=65535)
    pin_file: str = key("/etc/checkpoint-scanner/staff-pin", "file holding the staff PIN, 6+ characters "
                        "(chmod 600, owned by the service user)", path=True)
    tls_cert: str = key("", "PEM certificate for HTTPS; \"\" = plain HTTP (the PIN and the session cookie "
                        "cross the LAN in clear)", path=True)
    tls_key: str = key("", "PEM private key for tls_cert", path=True)
    max_connections: int = key(64, "open connections at once; at the cap one is closed from the client address "
                               "holding the most (older and idle ones first), else 503", min=8, max=1024)
    request_timeout_s: float = key(5.0, "whole-request deadline: TLS handshake, headers and body must arrive "
                                   "within it, else 408 and close (seconds)", min=1, max=60)


@dataclass(frozen=True)
class SimulationSection:
    bootstrap: bool = key(False, "create demo keys, codes and replay frames when missing "
                          "(simulated devices only)")
    person_every_s: float = key(6.0, "scripted thermometer: a person arrives this often (seconds)", min=1, max=600)
    person_temp_c: float = key(33.0, "scripted thermometer: their skin temperature (°C)", min=20, max=45)
    ambient_c: float = key(24.0, "scripted thermometer: ambient (°C)", min=-20, max=50)


@dataclass(frozen=True)
class Config:
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    camera: CameraSection = field(default_factory=CameraSection)
    decode: DecodeSection = field(default_factory=DecodeSection)
    thermometer: ThermometerSection = field(default_factory=ThermometerSection)
    indicators: IndicatorsSection = field(default_factory=IndicatorsSection)
    policy: PolicySection = field(default_factory=PolicySection)
    trust: TrustSection = field(default_factory=TrustSection)
    clock: ClockSection = field(default_factory=ClockSection)
    sync: SyncSection = field(default_factory=SyncSection)
    store: StoreSection = field(default_factory=StoreSection)
    upload: UploadSection = field(default_factory=UploadSection)
    api: ApiSection = field(default_factory=ApiSection)
    log: LogSection = field(default_factory=LogSection)
    kiosk: KioskSection = field(default_factory=KioskSection)
    staff: StaffSection = field(default_factory=StaffSection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    source_path: str = ""
    #: `section.key` (and `section`) -> line in the file, for preflight messages; {} when built in code.
    key_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def simulated(self) -> bool:
        """True only when the file says `[checkpoint] mode = "simulated"`."""
        return self.checkpoint.mode == "simulated"


SECTIONS: dict[str, type] = {name: t for name, t in typing.get_type_hints(Config).items()
                             if name not in ("source_path", "key_lines")}
