#!/usr/bin/env python3
"""Status list at scale: 1,000,000 revoked tokens (plus deny-list and colour updates), as a gate
holds it. Measures the signed snapshot (size, signature check, index build = boot time), applying
diffs, the three lookups, a whole verify() with the status list, memory against a Python set, and
one real sync round over HTTP from the reference server (download, verify, fsync, swap).
Prints figures; the issue's closing note quotes them. Run: .venv/bin/python scripts/bench_status.py [N]
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from refserver import RefServer  # noqa: E402

from scanner.clock import Clock  # noqa: E402
from scanner.config import parse_config  # noqa: E402
from scanner.credentials import Signer, TrustStore, generate_keys, issue_health, verify  # noqa: E402
from scanner.credentials.bundles import (  # noqa: E402
    KIND_STATUS_DIFF,
    KIND_STATUS_SNAPSHOT,
    open_bundle,
    sign_bundle,
    status_diff_doc,
    status_snapshot_doc,
)
from scanner.credentials.state import TrustState  # noqa: E402
from scanner.credentials.status import StatusIndex  # noqa: E402
from scanner.sync.trust_sync import TrustSync, load_state  # noqa: E402


def once(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def per_call_us(fn: Callable[[bytes], object], keys: list[bytes]) -> tuple[float, float]:
    """Median and p95 of per-call time over batches of 100 calls (timer overhead amortised)."""
    samples = []
    for i in range(0, len(keys), 100):
        batch = keys[i:i + 100]
        t = time.perf_counter()
        for k in batch:
            fn(k)
        samples.append((time.perf_counter() - t) / len(batch) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    n_deny, n_colour = n // 10, n // 5
    rng = random.Random(42)
    work = Path(tempfile.mkdtemp(prefix="bench-status-"))
    now = datetime.now(UTC)
    ks = generate_keys(work / "keys", now=now - timedelta(days=1))
    anchor = Signer.load(ks.anchor_key, ks.anchor_cert)
    revoked = [rng.randbytes(16) for _ in range(n)]
    deny = [rng.randbytes(16) for _ in range(n_deny)]
    colours = {rng.randbytes(16): rng.randrange(3) for _ in range(n_colour)}
    total = n + n_deny + n_colour
    print(f"status list: {n:,} revoked + {n_deny:,} deny-listed + {n_colour:,} colour updates = {total:,} entries")

    t_sign, raw = once(lambda: sign_bundle(anchor.key, anchor.cert, status_snapshot_doc(
        1, now, now + timedelta(days=1), revoked=revoked, denylisted=deny, colour_updates=colours)))
    assert isinstance(raw, bytes)
    print(f"  snapshot file                 {len(raw) / 2**20:7.1f} MiB (signing at the centre {t_sign:.2f} s)")
    t_open, bundle = once(lambda: open_bundle(raw, anchor.cert, KIND_STATUS_SNAPSHOT))
    t_build, idx = once(lambda: StatusIndex.from_bundle(bundle))  # type: ignore[arg-type]
    assert isinstance(idx, StatusIndex) and len(idx) == total
    print(f"  verify signature + parse JSON {t_open * 1000:7.0f} ms")
    print(f"  build index                   {t_build * 1000:7.0f} ms   (boot: both, once)")

    for adds in (1_000, 10_000, 100_000):
        add = [rng.randbytes(16) for _ in range(adds)]
        rem = rng.sample(revoked, adds // 10)
        cols = {rng.randbytes(16): 2 for _ in range(adds // 10)}
        d = sign_bundle(anchor.key, anchor.cert, status_diff_doc(
            1, 2, now, now + timedelta(days=1), total + adds - adds // 10 + adds // 10, add_revoked=add,
            remove_revoked=rem, add_colours=cols))
        t_dopen, dbundle = once(lambda d=d: open_bundle(d, anchor.cert, KIND_STATUS_DIFF))  # type: ignore[misc]
        t_apply, new = once(lambda b=dbundle: idx.apply_diff(b))  # type: ignore[misc]
        assert isinstance(new, StatusIndex) and len(new) == total + adds
        print(f"  apply diff +{adds:>7,} / -{adds // 10:>6,} / {adds // 10:>6,} colours: "
              f"open {t_dopen * 1000:5.0f} ms, apply {t_apply * 1000:5.0f} ms ({len(d) / 1024:,.0f} KiB)")

    probes = 100_000
    hits = rng.sample(revoked, probes)
    misses = [rng.randbytes(16) for _ in range(probes)]
    subj = rng.sample(list(colours), min(probes, len(colours)))
    for label, fn, keys in (("is_revoked hit ", idx.is_revoked, hits), ("is_revoked miss", idx.is_revoked, misses),
                            ("is_denylisted  ", idx.is_denylisted, misses),
                            ("colour_update  ", idx.colour_update, subj)):
        med, p95 = per_call_us(fn, keys)  # type: ignore[arg-type]
        print(f"  lookup {label}          median {med:5.2f} us  p95 {p95:5.2f} us")

    signer = Signer.load(ks.health_key, ks.health_cert)
    trust = TrustStore.load(ks.trust_list, ks.anchor_cert)
    code = issue_health(signer, colour="green", sid=next(iter(colours))[:16], masked_name="陈*聪", id_tail="123X",
                        region="330381", iat=now - timedelta(hours=1), exp=now + timedelta(hours=20))
    for label, status in (("without status list", None), (f"with {total:,} entries", idx)):
        samples = []
        for _ in range(2000):
            t = time.perf_counter()
            verify(code, trust, now, status=status)
            samples.append((time.perf_counter() - t) * 1e6)
        samples.sort()
        print(f"  verify() {label:<22} median {statistics.median(samples):6.1f} us  "
              f"p95 {samples[int(len(samples) * .95)]:6.1f} us")

    arrays = sum(a.nbytes for a in (idx._revoked, idx._denylisted, idx._subjects, idx._colours))
    gc.collect()
    tracemalloc.start()
    model = (set(revoked), set(deny), dict(colours))  # the bytes objects exist already: containers only
    containers = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del model
    objects = total * sys.getsizeof(bytes(16))
    print(f"  memory: index arrays {arrays / 2**20:.0f} MiB; Python set/dict {(containers + objects) / 2**20:.0f} MiB "
          f"({containers / 2**20:.0f} containers + {objects / 2**20:.0f} bytes objects)")

    with RefServer() as server:
        server.content.bundles["snapshot"] = raw
        server.content.status_version, server.content.status_total = 1, total
        cfg = parse_config(f"""
[checkpoint]
mode = "simulated"
[camera]
source = "replay"
replay_path = "x"
[thermometer]
source = "scripted"
[indicators]
source = "mock"
[trust]
trust_list = "{ks.trust_list}"
anchor_cert = "{ks.anchor_cert}"
[clock]
trust = "always"
[sync]
enabled = true
server_url = "{server.url}"
state_dir = "{work / 'state'}"
""", str(work / "bench.toml"))
        state = TrustState(trust)
        sync = TrustSync(cfg, state, clock=Clock("always"))
        t_round, results = once(sync.run_once)
        assert state.snapshot().version("status") == 1, results
        print(f"  sync round over HTTP (localhost): download + verify + build + fsync + swap {t_round:.2f} s")
        t_boot, _ = once(lambda: load_state(cfg))
        print(f"  boot from the state directory (verify + build)                           {t_boot:.2f} s")
    print(f"  (machine: {os.cpu_count()} cores; snapshot sha256 {hashlib.sha256(raw).hexdigest()[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
