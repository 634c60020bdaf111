"""Bootstrap for the simulated lane (`[simulation] bootstrap = true`): demo keys, a trust list
and replay frames, created when missing, so `run --config config/simulated.toml` works on a
fresh machine. Refused by the config check when real hardware is configured.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

from scanner.config import Config
from scanner.credentials import Signer, generate_keys, issue_health, pseudonym
from scanner.hardware import replay_dir
from scanner.qrimage import frame_with_codes

log = logging.getLogger(__name__)
FRAMES_MAX_AGE_S = 12 * 3600  # codes live 24 h: regenerate well before they expire
CYCLE = ("green", "green", "yellow", "green", "red", "green")


def bootstrap(cfg: Config) -> None:
    keys = Path(cfg.trust.trust_list).parent
    now = datetime.now(UTC)
    if not Path(cfg.trust.trust_list).exists():
        ks = generate_keys(keys, now=now - timedelta(days=30), overwrite=True)
        if Path(cfg.trust.anchor_cert) != ks.anchor_cert:
            Path(cfg.trust.anchor_cert).write_bytes(ks.anchor_cert.read_bytes())
        log.info("event=sim_keys_created dir=%s", keys)
    frames = replay_dir(cfg)
    stamp = frames / ".generated"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < FRAMES_MAX_AGE_S:
        return
    frames.mkdir(parents=True, exist_ok=True)
    if stamp.exists():  # only a folder this bootstrap made, and only the frames it names so
        for old in frames.glob("[0-9][0-9][0-9][0-9][0-9].png"):
            old.unlink()
    signer = Signer.load(keys / "health.key", keys / "health.pem")
    secret = (keys / "pseudonym.secret").read_bytes()
    per_person = max(int(cfg.simulation.person_every_s * cfg.camera.replay_fps), 2)
    shown = max(int(2.0 * cfg.camera.replay_fps), 1)
    blank = frame_with_codes([])
    n = 0
    for i, colour in enumerate(CYCLE):
        code = issue_health(signer, colour=colour, sid=pseudonym(secret, "RID", f"sim{i}"), masked_name="张*",
                            id_tail="0000", region="330381", iat=now - timedelta(minutes=5),
                            exp=now + timedelta(hours=23))
        img = frame_with_codes([code])
        for j in range(per_person):
            cv2.imwrite(str(frames / f"{n:05d}.png"), img if j >= per_person - shown else blank)
            n += 1
    stamp.write_text(now.isoformat())
    log.info("event=sim_frames_created dir=%s frames=%d", frames, n)
