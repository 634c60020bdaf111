"""scripts/bench_decode.py keeps working and keeps its contract (a small seeded set)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_every_decoder_and_ends_with_the_summary_line() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_decode.py"), "--seed", "5",
                          "--codes", "8", "--empty", "4"], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.strip().splitlines()
    for name in ("pyzbar", "pyzbar+pre", "zxing-cpp", "opencv", "pipeline"):
        assert any(line.startswith(name + " ") for line in lines), name
    pipeline = next(line for line in lines if line.startswith("pipeline "))
    assert int(pipeline.split()[2]) == 0  # no wrong decodes
    m = re.fullmatch(r"pipeline/zxingcpp time ratio: [\d.]+, pipeline read: (\d+)/(\d+), best peer read: (\d+)/\2",
                     lines[-1])
    assert m, lines[-1]
