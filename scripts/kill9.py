#!/usr/bin/env python3
"""The kill -9 harness of docs/durability.md section 3 at full strength: N SIGKILLs (default 1,000) of a writer that
records, delivers, prunes and checkpoints; after each, integrity_check must be ok, no
acknowledged record may be missing, and at most one committed record may be unreported. The
suite runs the same harness with 30 kills (tests/test_kill9.py); this is the long run.

    .venv/bin/python scripts/kill9.py --kills 1000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_kill9 import check, run_and_kill  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill9-"))
    db, server = work / "o.db", work / "server.txt"
    acked_all: list[tuple[int, str]] = []
    known: set[str] = set()
    failures = max_unreported = 0
    t0 = time.monotonic()
    for k in range(1, args.kills + 1):
        acked = run_and_kill(db, server, rng)
        acked_all += acked
        ok, lost, present = check(db, server, acked_all)
        unreported = len(present - known - {rid for _, rid in acked})
        max_unreported = max(max_unreported, unreported)
        known = present
        if ok != "ok" or lost or unreported > 1:
            failures += 1
            print(f"kill {k}: integrity {ok}, lost {len(lost)}, unreported {unreported}", flush=True)
        if k % 100 == 0:
            print(f"  {k} kills, {len(acked_all)} acknowledged records, {time.monotonic() - t0:.0f} s", flush=True)
    seqs = [s for s, _ in acked_all]
    dup = len(seqs) - len(set(seqs))
    print(f"kill9: {args.kills} kills, {len(acked_all)} acknowledged records, 0 lost" if not failures else
          f"kill9: {failures} kills FAILED", f"; max committed-but-unreported per kill {max_unreported}; "
          f"seq handed out twice: {dup}; {time.monotonic() - t0:.0f} s")
    return 0 if failures == 0 and dup == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
