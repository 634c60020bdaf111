#!/usr/bin/env bash
# Shared set-up for ./scripts/demo and ./scripts/test: system library zbar, a virtual
# environment in .venv, the package (editable). Idempotent; says what is wrong when a step fails.
# Usage: source scripts/_setup.sh [test]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CHECKPOINT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

# shellcheck source=scripts/_apt.sh
source "$ROOT/scripts/_apt.sh"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Not `ldconfig -p | grep -q ...`: grep -q (and GNU grep writing to /dev/null) exits at the
# first match, ldconfig then dies of SIGPIPE writing the rest, and pipefail turns the match into
# a failure (about 8 % of runs said zbar was missing). Capture the whole output, then match.
# ldconfig is in /sbin, which is not on an ordinary user's PATH on Debian.
have_zbar() {
    local libs
    libs="$(PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null || true)"
    [[ "$libs" == *libzbar.so* ]]
}

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {  # apt_install PKG...: install what is missing; returns non-zero on failure
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ "${#missing[@]}" = 0 ] && return 0
    command -v apt-get >/dev/null || return 1
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then return 1; fi
    if [ "$APT_UPDATED" = 0 ]; then $SUDO apt-get update -qq >/dev/null || return 1; APT_UPDATED=1; fi
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! have_zbar; then
    command -v apt-get >/dev/null || die "the zbar library is missing and there is no apt-get: install the zbar library (libzbar0) with your package manager"
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        die "the zbar library is missing, this is not root and there is no sudo: run 'apt-get install libzbar0' (libzbar0t64 on Debian trixie) as root"
    fi
    # libzbar0, or libzbar0t64 since trixie (only arm64/amd64 map the old name to the new one)
    ZBAR_PKG="$(apt_candidate "${ZBAR_PACKAGES[@]}" || true)"
    if [ -z "$ZBAR_PKG" ]; then  # no package lists yet, or old ones: refresh once and ask again
        $SUDO apt-get update -qq >/dev/null || die "apt-get update failed: check the network and the apt sources"
        APT_UPDATED=1
        ZBAR_PKG="$(apt_candidate "${ZBAR_PACKAGES[@]}" || true)"
    fi
    [ -n "$ZBAR_PKG" ] || die "apt knows neither ${ZBAR_PACKAGES[*]}: check /etc/apt/sources.list, or install the zbar library by hand"
    say "zbar shared library missing: installing $ZBAR_PKG with apt-get"
    apt_install "$ZBAR_PKG" || die "apt-get install $ZBAR_PKG failed: check the network and the apt sources"
    have_zbar || die "$ZBAR_PKG was installed but libzbar.so is still not found by ldconfig"
fi

if [ "${1:-}" = "test" ]; then
    # Tools some tests use (unit verification, shell lint, CJK font for the kiosk screens,
    # a headless browser for the staff page). Best effort: a test whose tool is missing says so
    # and is skipped, rather than the whole run failing on a machine without apt.
    apt_install shellcheck fonts-noto-cjk chromium chromium-driver systemd \
        || say "WARNING: could not install shellcheck/fonts-noto-cjk/chromium/chromium-driver/systemd: those tests will be skipped"
fi

command -v "$PY" >/dev/null || die "$PY not found: install Python 3.11 or newer"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed (tomllib); $PY is $("$PY" -V 2>&1)"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PY" -m venv "$VENV" || die "python3 -m venv failed: install the venv module (apt-get install python3-venv)"
fi

EXTRA=""
[ "${1:-}" = "test" ] && EXTRA="[test]"
STAMP="$VENV/.installed${EXTRA:+-test}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    say "installing checkpoint-scanner$EXTRA into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q -e "$ROOT$EXTRA" \
        || die "pip install failed: check that PyPI is reachable and read pip's message above"
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
