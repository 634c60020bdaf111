"""`checkpoint-scanner demo`: the real lane loop with simulated devices and 14 scripted people.

It makes its own keys and codes, then for each person puts QR frames in front of the
(replayed) camera and a skin temperature on the (scripted) thermometer, in either order, and
waits for the lane to commit a record. LEDs and buzzer are gpiozero devices on MockFactory
pins, so the states printed are real pin states. Exit 0 when every verdict is the expected one.
Every line is flushed as it is printed: a pipe (`| tee`, a CI log, ssh without a terminal) is
block-buffered by Python and would otherwise show nothing until the demo ends.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import base45
import cbor2
import numpy as np

from drivers.base import Frame
from drivers.thermometer_scripted import ScriptedThermometer
from scanner import hardware
from scanner.clock import Clock
from scanner.config import Config, parse_config
from scanner.credentials import Signer, TrustStore, generate_keys, issue_health, issue_residence, pseudonym
from scanner.logs import setup_logging
from scanner.qrimage import frame_with_codes
from scanner.reasons import REASONS
from scanner.service import Lane
from scanner.store import Store

VILLAGE = "330381001001"
OTHER_VILLAGE = "330381002007"
AMBIENT_C = 22.0
OFFSET_C = 2.0  # demo calibration: wrist skin + 2.0 °C = body estimate

DEMO_CONFIG = """
[checkpoint]
mode = "simulated"
id = "DEMO-{kind}"
device_id = "demo-device"
kind = "{kind}"
villages = ["{village}"]
[camera]
source = "replay"
replay_path = "unused"
max_frame_age_s = 0.5
[thermometer]
source = "scripted"
poll_interval_s = 0.04
presence_hold_s = 0.2
samples = 5
offset_c = {offset}
calibration_version = "demo-1"
fault_after = 3
[indicators]
source = "mock"
verdict_hold_s = 0.6
relay_pin = 23
relay_pulse_s = 0.5
[policy]
pairing_window_s = 3.0
cooldown_s = 1.0
[clock]
trust = "always"
[log]
format = "text"
"""


class StageCamera:
    """A frame source the demo puts pictures in front of, like a phone held to the lens."""

    def __init__(self, fps: float = 20.0) -> None:
        self._frames: list[np.ndarray] = [frame_with_codes([])]
        self._i = 0
        self._lock = threading.Lock()
        self._period = 1.0 / fps
        self._seq = 0

    def show(self, frames: list[np.ndarray]) -> None:
        with self._lock:
            self._frames = frames or [frame_with_codes([])]
            self._i = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame:
        time.sleep(self._period)
        with self._lock:
            img = self._frames[self._i % len(self._frames)]
            self._i += 1
        self._seq += 1
        return Frame(img, time.monotonic(), self._seq)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Person:
    label: str
    lane: str  # highway_exit | village_gate
    codes: tuple[str | bytes, ...]
    skin_c: float | None  # wrist temperature; None = never holds a wrist to the sensor
    expect: str
    expect_reasons: tuple[str, ...]
    temp_first: bool = False
    sensor_fault: bool = False


def _forge_colour(code: str) -> str:
    """Edit the colour inside a signed red code to green and keep the old signature: what a
    forger with an image editor and a decoder can do. The signature check must catch it."""
    raw = zlib.decompress(base45.b45decode(code[5:]))
    tag = cbor2.loads(raw)
    protected, unprotected, payload, sig = tag.value
    claims = cbor2.loads(payload)
    claims[-65537]["col"] = 0
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, cbor2.dumps(claims), sig]))
    return code[:5] + base45.b45encode(zlib.compress(forged, 9)).decode("ascii")


def build_people(work: Path) -> list[Person]:
    # Signers certified a month ago, as in the field: a code's iat must lie inside the
    # signer certificate's validity (docs/credentials.md section 1, signer fitness).
    since = datetime.now(UTC) - timedelta(days=30)
    ks = generate_keys(work / "keys", overwrite=True, now=since)
    rogue = generate_keys(work / "rogue-keys", overwrite=True, now=since)  # a signer nobody trusts here
    health = Signer.load(ks.health_key, ks.health_cert)
    street = Signer.load(ks.residence_key, ks.residence_cert)
    unknown = Signer.load(rogue.health_key, rogue.health_cert)
    secret = ks.pseudonym_secret.read_bytes()
    now = datetime.now(UTC)
    n = iter(range(100))

    def hc(colour: str, signer: Signer = health, age_h: float = 1.0, valid_h: float = 24.0) -> str:
        iat = now - timedelta(hours=age_h)
        return issue_health(signer, colour=colour, sid=pseudonym(secret, "RID", f"33038119900101{next(n):04d}"),
                            masked_name="陈*聪", id_tail="123X", region="330381", iat=iat,
                            exp=iat + timedelta(hours=valid_h))

    def ajm(village: str) -> str:
        return issue_residence(street, house_id="RA-TX-0032", village=village, grid="RA-TX-07",
                               unit_label="3幢2单元502", tenant_sid=pseudonym(secret, "RID", f"x{next(n)}"),
                               masked_name="林*", id_tail="0421", verified_by="塘下街道",
                               iat=now - timedelta(days=30), nbf=now - timedelta(days=29),
                               exp=now + timedelta(days=300))

    rng = np.random.default_rng(7)
    garbage = bytes(rng.integers(0, 256, 60, dtype=np.uint8))
    H, G = "highway_exit", "village_gate"
    return [
        Person("绿码 体温正常 / green code, normal", H, (hc("green"),), 34.6, "PASS", ("OK",)),
        Person("绿码 发热 / green code, fever (wrist first)", H, (hc("green"),), 36.1, "DENY", ("FEVER",),
               temp_first=True),
        Person("黄码 / yellow code", H, (hc("yellow"),), 34.5, "DENY", ("HEALTH_YELLOW",)),
        Person("红码 / red code", H, (hc("red"),), 34.7, "DENY", ("HEALTH_RED",)),
        Person("过期截图 / expired screenshot", H, (hc("green", age_h=72),), 34.4, "DENY", ("EXPIRED",)),
        Person("伪造签名(红改绿) / forged: red edited to green", H, (_forge_colour(hc("red")),), 34.6, "DENY",
               ("SIGNATURE_INVALID",)),
        Person("未知签发者 / unknown signer", H, (hc("green", signer=unknown),), 34.5, "REVIEW", ("UNKNOWN_SIGNER",)),
        Person("未出示任何码 / no code at all", H, (), 34.6, "REVIEW", ("NO_CODE",)),
        Person("乱码二维码 / garbage QR (random bytes)", H, (garbage,), 34.5, "REVIEW", ("NO_CODE",)),
        Person("中文文本二维码 / QR with plain Chinese text", H, ("欢迎来到瑞安 请出示健康码".encode(),), 34.6,
               "REVIEW", ("NO_CODE",)),
        Person("测温传感器故障 / thermometer fault", H, (hc("green"),), None, "REVIEW", ("TEMP_UNAVAILABLE",),
               sensor_fault=True),
        Person("健康码+安居码 同时出示 / health + residence together", G, (hc("green"), ajm(VILLAGE)), 34.5,
               "PASS", ("OK",)),
        Person("外村住户 / resident of another village", G, (hc("green"), ajm(OTHER_VILLAGE)), 34.6, "REVIEW",
               ("RESIDENCE_OTHER_VILLAGE",)),
        Person("只出示健康码 / health code only at a village gate", G, (hc("green"),), 34.5, "REVIEW",
               ("RESIDENCE_MISSING",)),
    ]


def demo_config(kind: str, work: Path) -> Config:
    cfg = parse_config(DEMO_CONFIG.format(kind=kind, village=VILLAGE, offset=OFFSET_C), str(work / "demo.toml"))
    return replace(cfg, store=replace(cfg.store, path=str(work / "outbox.db")))


def _onoff(states: dict[str, bool]) -> str:
    return " ".join(f"{k}={'ON' if v else 'off'}" for k, v in states.items())


def run_demo(workdir: str | None = None, verbose: bool = False, out: Any = None) -> int:
    out = out or sys.stdout
    setup_logging("info" if verbose else "warning", "text")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="checkpoint-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    print(f"checkpoint-scanner demo — keys, codes and outbox in {work}", file=out, flush=True)
    people = build_people(work)
    ks_dir = work / "keys"
    trust = TrustStore.load(ks_dir / "trust-list.cose", ks_dir / "anchor.pem")
    store = Store.open(work / "outbox.db")
    results: list[tuple[Person, dict[str, Any], dict[str, bool]]] = []
    try:
        for kind in ("highway_exit", "village_gate"):
            group = [p for p in people if p.lane == kind]
            checks = '健康码+体温' if kind == 'highway_exit' else '健康码+安居码+体温'
            print(f"\n== {kind} ({checks}) ==", file=out, flush=True)
            results += _run_lane(kind, group, work, trust, store, out, start=len(results))
    finally:
        store.close()
    return _summary(results, time.monotonic() - t_start, work, out)


def _run_lane(kind: str, people: list[Person], work: Path, trust: TrustStore, store: Store, out: Any,
              start: int) -> list[tuple[Person, dict[str, Any], dict[str, bool]]]:
    cfg = demo_config(kind, work)
    camera = StageCamera()
    thermo = ScriptedThermometer(object_c=AMBIENT_C, ambient_c=AMBIENT_C, noise_c=0.05, seed=1)
    records: queue.Queue[tuple[dict[str, Any], dict[str, bool]]] = queue.Queue()
    devices = hardware.open_devices(cfg, thermometer=thermo)
    devices.camera = camera
    lane = Lane(cfg, devices, trust, store, Clock("always"),
                on_record=lambda row, o, states: records.put(({**row, "timed_out": o.timed_out}, states)))
    runner = threading.Thread(target=lane.run, name="lane", daemon=True)
    runner.start()
    got: list[tuple[Person, dict[str, Any], dict[str, bool]]] = []
    try:
        for i, person in enumerate(people, start=start + 1):
            frames = [frame_with_codes(list(person.codes), seed=s) for s in range(3)] if person.codes else []
            if person.sensor_fault:
                thermo.fail("MLX90614 at 0x5a on bus 1: no ACK (errno 121): check SDA/SCL wiring")
            if person.temp_first and person.skin_c is not None:
                thermo.set(person.skin_c, AMBIENT_C)
                time.sleep(0.5)
                camera.show(frames)
            else:
                camera.show(frames)
                time.sleep(0.3)
                if person.skin_c is not None:
                    thermo.set(person.skin_c, AMBIENT_C)
            try:
                row, states = records.get(timeout=cfg.policy.pairing_window_s + 5)
            except queue.Empty:
                row, states = {"verdict": "NONE", "reasons": [], "temperature_c": None}, {}
            _print_line(i, person, row, states, out)
            got.append((person, row, states))
            camera.show([])  # the person walks on
            thermo.set(AMBIENT_C, AMBIENT_C)
            time.sleep(cfg.policy.cooldown_s + 0.2)
    finally:
        lane.stop_event.set()
        runner.join(timeout=5)
        hardware.close_devices(devices)
    return got


def _print_line(i: int, p: Person, row: dict[str, Any], states: dict[str, bool], out: Any) -> None:
    ok = row["verdict"] == p.expect and tuple(row["reasons"]) == p.expect_reasons
    temp = f"{row['temperature_c']:.1f}°C" if row.get("temperature_c") is not None else "  --  "
    reasons = "; ".join(f"{REASONS.get(r, (r, r))[0]} / {REASONS.get(r, (r, r))[1]}" for r in row["reasons"])
    print(f"#{i:02d} {p.label}\n     {row['verdict']:<6} {temp}  {reasons} [{','.join(row['reasons'])}]"
          f"\n     {_onoff(states)}  latency={row.get('latency_ms', '-')} ms  "
          f"{'✓ as expected' if ok else f'✗ expected {p.expect} {p.expect_reasons}'}", file=out, flush=True)


def _summary(results: list[tuple[Person, dict[str, Any], dict[str, bool]]], elapsed: float, work: Path,
             out: Any) -> int:
    counts: dict[str, int] = {}
    bad = 0
    for p, row, _ in results:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
        bad += not (row["verdict"] == p.expect and tuple(row["reasons"]) == p.expect_reasons)
    lat = sorted(float(r["latency_ms"]) for _, r, _ in results
                 if r.get("latency_ms") is not None and not r.get("timed_out"))
    print("\n== summary / 汇总 ==", file=out, flush=True)
    print(f"{'verdict':<10}{'count':>6}", file=out, flush=True)
    for v in ("PASS", "DENY", "REVIEW", "NONE"):
        if counts.get(v):
            print(f"{v:<10}{counts[v]:>6}", file=out, flush=True)
    print(f"{'total':<10}{len(results):>6}   as expected: {len(results) - bad}/{len(results)}", file=out, flush=True)
    if lat:
        print(f"decision latency after the last input (passages that did not time out): "
              f"median {lat[len(lat) // 2]:.0f} ms, max {lat[-1]:.0f} ms", file=out, flush=True)
    print(f"outbox: {work / 'outbox.db'}   run time: {elapsed:.1f} s", file=out, flush=True)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(run_demo(os.environ.get("DEMO_WORKDIR")))
