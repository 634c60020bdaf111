"""The demo's lines reach a pipe as they are printed (CI logs, `| tee`, ssh without a terminal),
not when the process ends: Python block-buffers stdout that is not a terminal."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The real run_demo on a piped stdout; after its first line the child blocks on stdin, so the
# line can only reach the parent if it was flushed while the child is still running.
CHILD = """
import sys
import scanner.demo as demo

def wait_for_parent(work):
    sys.stdin.readline()
    raise SystemExit(0)

demo.build_people = wait_for_parent
demo.run_demo(sys.argv[1])
"""


def test_first_line_arrives_through_a_pipe_while_the_demo_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "work")], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    try:
        reader.join(timeout=120)  # a hang guard: with block buffering the line never comes
        assert got and got[0].startswith("checkpoint-scanner demo"), got
        assert proc.poll() is None  # the child is still blocked: the line was flushed, not left at exit
    finally:
        if proc.stdin:
            proc.stdin.close()  # release the child
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)


def test_every_print_in_the_demo_flushes() -> None:
    tree = ast.parse((ROOT / "scanner" / "demo.py").read_text(encoding="utf-8"))
    prints = [n for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert len(prints) >= 5
    for call in prints:
        flush = [k for k in call.keywords if k.arg == "flush"]
        assert flush and isinstance(flush[0].value, ast.Constant) and flush[0].value.value is True, call.lineno
