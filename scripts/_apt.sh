# shellcheck shell=bash
# Helpers shared by scripts/_setup.sh and scripts/install-pi.sh (sourced, never run on its own).

# The zbar library under each name it has had: Debian trixie renamed libzbar0 to libzbar0t64
# (the 64-bit time_t transition). On arm64 and amd64 the new package also Provides the old name;
# on armhf it does not, so `apt-get install libzbar0` fails there. Ask apt, do not guess.
# shellcheck disable=SC2034  # used by the scripts that source this file
ZBAR_PACKAGES=(libzbar0 libzbar0t64)

# apt_candidate NAME...: print the first NAME that apt can install, a real package with a
# candidate version, and return 0; return 1 when apt knows none of them. A name apt has never
# heard of prints nothing; a purely virtual one (a name another package Provides) says
# "Candidate: (none)". The output is captured whole, never piped into a reader that may stop
# early (see tests/test_scripts_pipefail.py).
apt_candidate() {
    local name out
    command -v apt-cache >/dev/null 2>&1 || return 1
    for name in "$@"; do
        out="$(LC_ALL=C apt-cache policy "$name" 2>/dev/null || true)"
        case "$out" in
            *"Candidate: (none)"*) ;;
            *"Candidate: "*) printf '%s\n' "$name"; return 0 ;;
        esac
    done
    return 1
}

# system_numpy PYTHON: the version of numpy that PYTHON sees outside any venv (apt's
# python3-numpy on a Pi), or nothing. -s: not the user's ~/.local packages; PYTHONPATH still
# counts (the tests use it for a stand-in numpy). Only a plain version string is printed.
system_numpy() {
    local v
    v="$("$1" -s -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
    if [[ "$v" =~ ^[0-9]+(\.[0-9]+)+([a-z0-9.+-]*)$ ]]; then printf '%s\n' "$v"; fi
}
