"""What the set-up scripts install, decided by what apt and the machine actually offer, offline:
a fake `apt-cache` answers as Debian bookworm, trixie armhf or trixie arm64 would, a stand-in
numpy on PYTHONPATH plays apt's python3-numpy, and install-pi.sh runs in --dry-run mode.

- libzbar0 became libzbar0t64 in trixie; on arm64 the new package Provides the old name (a
  virtual name, "Candidate: (none)"), on armhf the old name is gone: pick what apt can install.
- python3-picamera2 and python3-lgpio exist only in the Raspberry Pi OS archive: install them
  when the config or the hardware needs them, otherwise say in one line what to do.
- picamera2 from apt is built against apt's numpy: pip must keep to that version (-c).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install-pi.sh"

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="bash not installed")


def policy(name: str, candidate: str | None) -> str:
    """`apt-cache policy NAME` as apt prints it for a real package, or for a virtual one (None)."""
    if candidate is None:
        return f"{name}:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n"
    return (f"{name}:\n  Installed: (none)\n  Candidate: {candidate}\n  Version table:\n"
            f"     {candidate} 500\n        500 http://deb.debian.org/debian trixie/main Packages\n")


BOOKWORM = {"libzbar0": policy("libzbar0", "0.23.92-7+deb12u1")}
TRIXIE_ARMHF = {"libzbar0t64": policy("libzbar0t64", "0.23.93-7")}
TRIXIE_ARM64 = {"libzbar0": policy("libzbar0", None), "libzbar0t64": policy("libzbar0t64", "0.23.93-7")}
PI_ARCHIVE = {"python3-picamera2": policy("python3-picamera2", "0.3.31-1"),
              "python3-lgpio": policy("python3-lgpio", "0.2.2-1~rpt1")}


def fake_apt(tmp: Path, known: dict[str, str]) -> Path:
    """A bin dir whose `apt-cache policy NAME` prints `known[NAME]`, and nothing for other names
    (apt prints nothing on stdout for a name it has never heard of)."""
    bin_dir = tmp / "bin"
    answers = tmp / "policy"
    bin_dir.mkdir(exist_ok=True)
    answers.mkdir(exist_ok=True)
    for name, text in known.items():
        (answers / name).write_text(text)
    script = bin_dir / "apt-cache"
    script.write_text(f'#!/bin/sh\n[ "$1" = policy ] || exit 100\nshift\n'
                      f'for n in "$@"; do\n  if [ -f "{answers}/$n" ]; then cat "{answers}/$n"; '
                      f'else echo "N: Unable to locate package $n" >&2; fi\ndone\n')
    script.chmod(0o755)
    return bin_dir


def candidate(tmp: Path, known: dict[str, str], *names: str) -> tuple[int, str]:
    bin_dir = fake_apt(tmp, known)
    script = f'set -euo pipefail\nsource "{ROOT}/scripts/_apt.sh"\napt_candidate {" ".join(names)}\n'
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    return r.returncode, r.stdout.strip()


@pytest.mark.parametrize("release,known,expected", [
    ("bookworm", BOOKWORM, "libzbar0"),
    ("trixie armhf", TRIXIE_ARMHF, "libzbar0t64"),
    ("trixie arm64", TRIXIE_ARM64, "libzbar0t64"),
])
def test_zbar_package_is_the_one_apt_can_install(tmp_path: Path, release: str, known: dict[str, str],
                                                 expected: str) -> None:
    assert candidate(tmp_path, known, "libzbar0", "libzbar0t64") == (0, expected), release


def test_no_candidate_says_so(tmp_path: Path) -> None:
    assert candidate(tmp_path, {}, "libzbar0", "libzbar0t64") == (1, "")
    assert candidate(tmp_path, {"libzbar0": policy("libzbar0", None)}, "libzbar0") == (1, "")


def dry_run(tmp: Path, known: dict[str, str], *, model: str = "", config: str | None = None,
            numpy: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{fake_apt(tmp, known)}:/usr/bin:/bin:/usr/sbin:/sbin",
           "CHECKPOINT_PREFIX": str(tmp / "opt"), "CHECKPOINT_DT_MODEL": str(tmp / "model")}
    if model:
        (tmp / "model").write_bytes(model.encode() + b"\0")  # as /proc/device-tree/model reads
    if config is not None:
        (tmp / "config.toml").write_text(config)
        env["CHECKPOINT_CONFIG"] = str(tmp / "config.toml")
    if numpy is not None:  # a stand-in for apt's python3-numpy, seen by the system python
        pkg = tmp / "sys-site" / "numpy"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"__version__ = {numpy!r}\n")
        env["PYTHONPATH"] = str(tmp / "sys-site")
    r = subprocess.run(["bash", str(INSTALL), "--dry-run"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert not (tmp / "opt").exists()
    return r


def apt_install_line(out: str) -> list[str]:
    [line] = [ln for ln in out.splitlines() if "would run: env DEBIAN_FRONTEND=noninteractive apt-get install" in ln]
    return line.split()


def pip_install_line(out: str) -> list[str]:
    [line] = [ln for ln in out.splitlines() if "would run:" in ln and "/pip install -q" in ln and "--upgrade" not in ln]
    return line.split()


def test_install_on_trixie_armhf_asks_for_libzbar0t64(tmp_path: Path) -> None:
    words = apt_install_line(dry_run(tmp_path, TRIXIE_ARMHF).stdout)
    assert "libzbar0t64" in words and "libzbar0" not in words


def test_install_on_bookworm_keeps_libzbar0(tmp_path: Path) -> None:
    words = apt_install_line(dry_run(tmp_path, BOOKWORM).stdout)
    assert "libzbar0" in words and "libzbar0t64" not in words


def test_plain_debian_with_a_usb_camera_skips_the_pi_archive_packages(tmp_path: Path) -> None:
    """Not a Pi, camera.source = opencv: the Raspberry Pi packages are not asked for, and the
    install goes on past step 1 (it used to stop there with apt's 'Unable to locate package')."""
    simulated = "[checkpoint]\nmode = \"simulated\"\n"
    out = dry_run(tmp_path, BOOKWORM, config=simulated).stdout
    words = apt_install_line(out)
    assert "python3-picamera2" not in words and "python3-lgpio" not in words
    assert "==> 8/8" in out
    assert any(ln.strip().startswith("python3-picamera2: skipped") for ln in out.splitlines())


def test_picamera2_config_without_the_pi_archive_says_what_to_do_in_one_line(tmp_path: Path) -> None:
    cfg = "[checkpoint]\nmode = \"real\"\n[camera]\nsource = \"picamera2\"\n"
    out = dry_run(tmp_path, BOOKWORM, config=cfg).stdout
    [warning] = [ln for ln in out.splitlines() if "WARNING: python3-picamera2" in ln]
    assert "Raspberry Pi OS" in warning and 'camera.source = "opencv"' in warning
    assert "python3-picamera2" not in apt_install_line(out)
    assert "==> 8/8" in out


def test_a_raspberry_pi_gets_picamera2_and_lgpio_from_its_archive(tmp_path: Path) -> None:
    out = dry_run(tmp_path, {**BOOKWORM, **PI_ARCHIVE}, model="Raspberry Pi 4 Model B Rev 1.4").stdout
    words = apt_install_line(out)
    assert "python3-picamera2" in words and "python3-lgpio" in words
    assert "WARNING" not in out


def test_the_config_alone_asks_for_picamera2_where_the_archive_has_it(tmp_path: Path) -> None:
    cfg = "[checkpoint]\nmode = \"real\"\n[camera]\nsource = \"picamera2\"\n"
    words = apt_install_line(dry_run(tmp_path, {**BOOKWORM, **PI_ARCHIVE}, config=cfg).stdout)
    assert "python3-picamera2" in words


def test_pip_keeps_to_the_system_numpy(tmp_path: Path) -> None:
    """apt's numpy 1.24.2 (what picamera2 and simplejpeg are built against) becomes a pip
    constraint, so pip cannot put numpy 2 in front of it (and picks a matching OpenCV)."""
    out = dry_run(tmp_path, BOOKWORM, numpy="1.24.2").stdout
    constraints = str(tmp_path / "opt" / ".venv" / "system-constraints.txt")
    assert f"would run: write {constraints}: numpy==1.24.2" in out
    words = pip_install_line(out)
    assert words[words.index("-c") + 1] == constraints
    assert words[-1] == str(tmp_path / "opt")


def test_without_a_system_numpy_pip_is_not_constrained(tmp_path: Path) -> None:
    out = dry_run(tmp_path, BOOKWORM, numpy=None).stdout
    if "would run: write" in out and "system-constraints" in out:
        pytest.skip("this machine's system python has numpy of its own")
    assert "-c" not in pip_install_line(out)
    assert "no numpy from apt" in out


def test_a_version_that_is_not_a_version_is_ignored(tmp_path: Path) -> None:
    out = dry_run(tmp_path, BOOKWORM, numpy="1.24; rm -rf /").stdout
    assert "numpy==" not in out and "-c" not in pip_install_line(out)


def test_setup_installs_the_zbar_name_apt_knows(tmp_path: Path) -> None:
    """scripts/_setup.sh on trixie armhf with zbar missing: it installs libzbar0t64. Fakes for
    ldconfig (no zbar until apt-get ran), dpkg, apt-get; PYTHON points nowhere so the script stops
    right after the zbar step instead of building a venv."""
    bin_dir = fake_apt(tmp_path, TRIXIE_ARMHF)
    log, marker = tmp_path / "apt-get.log", tmp_path / "installed"
    (bin_dir / "ldconfig").write_text(
        f'#!/bin/sh\necho "1 libs found"\n'
        f'[ -f "{marker}" ] && printf "\\tlibzbar.so.0 (libc6) => /lib/libzbar.so.0\\n"\nexit 0\n')
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> "{log}"\ncase "$*" in *install*) touch "{marker}";; esac\n')
    (bin_dir / "dpkg").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")  # root: no sudo needed
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    r = subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/_setup.sh"'], capture_output=True, text=True,
                       timeout=60, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": "/nonexistent/python3",
                                        "CHECKPOINT_VENV": str(tmp_path / "venv")})
    installs = [line for line in log.read_text().splitlines() if "install" in line]
    assert len(installs) == 1 and installs[0].split()[-1] == "libzbar0t64", installs
    assert "installing libzbar0t64" in r.stderr
    assert r.returncode == 1 and "/nonexistent/python3 not found" in r.stderr  # stopped where we asked
