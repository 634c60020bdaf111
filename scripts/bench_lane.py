#!/usr/bin/env python3
"""How long each stage of a passage takes on this machine: decode one 640x480 frame, verify a
signed code, decide, and commit the record (WAL + synchronous=FULL, one fsync). Prints the
median and p95 in milliseconds; the README quotes these figures. Run: .venv/bin/python scripts/bench_lane.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.credentials import Signer, TrustStore, generate_keys, issue_health, verify  # noqa: E402
from scanner.decode import Decoder  # noqa: E402
from scanner.models import Measurement, PassageRecord, TempStatus  # noqa: E402
from scanner.policy import CheckpointRules, decide  # noqa: E402
from scanner.qrimage import frame_with_codes  # noqa: E402
from scanner.store import Store  # noqa: E402


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    work = Path(tempfile.mkdtemp(prefix="bench-lane-"))
    now = datetime.now(UTC)
    ks = generate_keys(work / "keys", now=now - timedelta(days=1))
    trust = TrustStore.load(ks.trust_list, ks.anchor_cert)
    signer = Signer.load(ks.health_key, ks.health_cert)
    code = issue_health(signer, colour="green", sid=b"\x01" * 16, masked_name="陈*聪", id_tail="123X",
                        region="330381", iat=now - timedelta(hours=1), exp=now + timedelta(hours=20))
    frame = frame_with_codes([code])
    empty = frame_with_codes([])
    decoder = Decoder()
    rules = CheckpointRules()
    m = Measurement(TempStatus.OK, body_c=36.6)
    v = verify(code, trust, now)
    store = Store.open(work / "outbox.db")

    def record() -> None:
        store.record(PassageRecord(record_id=uuid.uuid4().hex, device_id="d", checkpoint_id="c",
                                   checkpoint_kind="highway_exit", ts_utc=now.isoformat(), clock_trusted=True,
                                   boot_id="b", mono_s=0.0, verdict="PASS", reasons=("OK",)))

    rows = [
        ("decode frame with a code", timed(lambda: decoder.decode(frame), n)),
        ("decode empty frame", timed(lambda: decoder.decode(empty), n)),
        ("verify signed code", timed(lambda: verify(code, trust, now), n)),
        ("policy decide", timed(lambda: decide([v], m, rules), n)),
        ("commit record (fsync)", timed(record, n)),
    ]
    store.close()
    print(f"{'stage':<28}{'median ms':>10}{'p95 ms':>10}   (n={n}, code {len(code)} chars)")
    for name, (med, p95) in rows:
        print(f"{name:<28}{med:>10.2f}{p95:>10.2f}")
    total = sum(r[1][0] for r in rows if r[0] != "decode empty frame")
    print(f"{'passage path, sum of medians':<28}{total:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
