"""The set-up scripts never fail at random under `set -o pipefail`.

`ldconfig -p | grep -q libzbar` made about 8 % of runs say zbar was missing: grep -q exits at
the first match, ldconfig dies of SIGPIPE writing the rest, and pipefail reports the pipeline
as failed. The check now captures the whole output first. Tested with a fake ldconfig whose
output is far larger than a pipe buffer, the match near the top (the worst case), 200 times.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "_setup.sh"
SHELL_FILES = [ROOT / "scripts" / n for n in ("_setup.sh", "_apt.sh", "install-pi.sh", "demo", "test")] + [
    ROOT / ".ci" / "run", *sorted((ROOT / "systemd").glob("*"))]
OLD_HAVE_ZBAR = "have_zbar() { ldconfig -p 2>/dev/null | grep -q 'libzbar\\.so'; }"

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="bash not installed")


def _have_zbar_source() -> str:
    text = SETUP.read_text()
    m = re.search(r"^have_zbar\(\) \{\n.*?^\}\n", text, re.S | re.M)
    assert m, "have_zbar() { ... } not found in scripts/_setup.sh"
    return m.group(0)


def _fake_ldconfig(tmp: Path, with_zbar: bool = True) -> Path:
    """An `ldconfig` printing a 512 KiB cache listing (8 pipe buffers), libzbar on line 2."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    filler = tmp / "filler.txt"
    filler.write_text("\tlibfiller.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libfiller.so.1\n" * 7000)
    zbar = "\tlibzbar.so.0 (libc6,x86-64) => /lib/x86_64-linux-gnu/libzbar.so.0\n" if with_zbar else ""
    script = bin_dir / "ldconfig"
    script.write_text(f"#!/bin/sh\nprintf '7001 libs found in cache `/etc/ld.so.cache'\"'\"'\\n{zbar}'\n"
                      f"exec cat {filler}\n")
    script.chmod(0o755)
    return bin_dir


def _run_check(tmp: Path, function: str, runs: int, with_zbar: bool = True) -> int:
    """How many of `runs` calls of `function`'s have_zbar failed, under set -euo pipefail."""
    bin_dir = _fake_ldconfig(tmp, with_zbar)
    script = (f"set -euo pipefail\n{function}\nfail=0\n"
              f"for _ in $(seq {runs}); do have_zbar || fail=$((fail + 1)); done\necho \"$fail\"\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_have_zbar_never_fails_when_zbar_is_there(tmp_path: Path) -> None:
    assert _run_check(tmp_path, _have_zbar_source(), 200) == 0


def test_have_zbar_still_says_no_without_zbar(tmp_path: Path) -> None:
    assert _run_check(tmp_path, _have_zbar_source(), 3, with_zbar=False) == 3


def test_the_old_check_fails_in_this_harness(tmp_path: Path) -> None:
    """Negative control: the harness does catch the SIGPIPE race of `| grep -q`."""
    assert _run_check(tmp_path, OLD_HAVE_ZBAR, 20) > 0


# A pipe into a reader that may stop early: grep -q / --quiet / -m, head, `grep ... >/dev/null`
# (GNU grep stops at the first match when its output is /dev/null).
EARLY_EXIT = re.compile(r"\|\s*(?:grep\b[^|;&]*?(?:\s-[a-zA-Z]*[qm]|\s--quiet|\s--max-count|>\s*/dev/null)"
                        r"|head\b|sed\s+[^|]*\bq\b)")


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pipeline_into_an_early_exiting_reader(path: Path) -> None:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("Exec") else line
        assert not EARLY_EXIT.search(code), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"


def test_the_pattern_catches_the_old_line() -> None:
    assert EARLY_EXIT.search(OLD_HAVE_ZBAR)
    assert EARLY_EXIT.search("ldconfig -p | head -1")
    assert not EARLY_EXIT.search('od -An -N4 -tu4 /dev/urandom | tr -d " \\n" | tail -c 6')
