#!/usr/bin/env bash
# Install checkpoint-scanner on a Raspberry Pi (Raspberry Pi OS Bookworm) from this checkout.
# Idempotent: run it again after `git pull` to upgrade; existing config and data are kept.
#
#   sudo ./scripts/install-pi.sh            install or upgrade
#   ./scripts/install-pi.sh --dry-run       print every step, change nothing (no root needed)
#
# Steps: apt packages (zbar, CJK fonts, espeak-ng; picamera2 and lgpio when the config or a Pi
# needs them), I2C enabled, service user in the gpio/i2c/video groups, the code in
# /opt/checkpoint-scanner with a virtual environment that sees the system's picamera2/lgpio and
# keeps to the system's numpy, config in /etc/checkpoint-scanner/, the systemd unit enabled.
# After it: edit /etc/checkpoint-scanner/config.toml, run
# `checkpoint-scanner selftest --config /etc/checkpoint-scanner/config.toml`, then
# `systemctl restart checkpoint-scanner`.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${CHECKPOINT_PREFIX:-/opt/checkpoint-scanner}"
ETC="/etc/checkpoint-scanner"
STATE="/var/lib/checkpoint-scanner"
SVC_USER="checkpoint"
UNIT="/etc/systemd/system/checkpoint-scanner.service"
# Always; zbar under the name this release gives it, picamera2 and lgpio as the config needs (step 1).
APT_PACKAGES=(python3-venv i2c-tools fonts-noto-cjk espeak-ng rsync)
# The interpreter the venv is made from, Debian's own (not one of a venv on PATH): its numpy is apt's.
SYS_PY="${PYTHON:-}"
if [ -z "$SYS_PY" ]; then if [ -x /usr/bin/python3 ]; then SYS_PY=/usr/bin/python3; else SYS_PY=python3; fi; fi
DT_MODEL="${CHECKPOINT_DT_MODEL:-/proc/device-tree/model}"
DRY_RUN=0
# shellcheck source=scripts/_apt.sh
source "$SRC/scripts/_apt.sh"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY_RUN=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "install-pi: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

step() { printf '==> %s\n' "$*"; }
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '    would run: %s\n' "$*"
    else
        printf '    %s\n' "$*"
        "$@"
    fi
}
die() { printf 'install-pi: ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0), or with --dry-run to see the steps"
fi

note() { printf '    %s\n' "$*"; }

# config_devices FILE: "camera-source indicator-source pin-factory" as the lane will read them
# (defaults follow [checkpoint] mode, as in scanner/config_schema.py), or "? ? ?".
config_devices() {
    "$SYS_PY" -s - "$1" 2>/dev/null <<'PY' || echo "? ? ?"
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    c = tomllib.load(f)
real = c.get("checkpoint", {}).get("mode", "real") == "real"
ind = c.get("indicators", {})
print(c.get("camera", {}).get("source", "opencv" if real else "replay"),
      ind.get("source", "gpio" if real else "mock"), ind.get("pin_factory", "lgpio"))
PY
}

# want_from_pi_archive PKG NEEDED WHY FIX: add PKG to the apt list when the config needs it
# (NEEDED=1) or this is a Raspberry Pi, if apt knows it. Otherwise one line saying what to do.
want_from_pi_archive() {
    local pkg="$1" needed="$2" why="$3" fix="$4"
    if [ "$needed" = 0 ] && [ "$IS_PI" = 0 ]; then
        note "$pkg: skipped ($why; not a Raspberry Pi)"
    elif apt_candidate "$pkg" >/dev/null; then
        APT_PACKAGES+=("$pkg")
    elif [ "$needed" = 1 ]; then
        note "WARNING: $pkg is not in this system's apt sources (only the Raspberry Pi OS archive has it): $fix"
    else
        note "$pkg: not in this system's apt sources (only the Raspberry Pi OS archive has it) and $CFG_FILE does not need it: skipped"
    fi
}

step "1/8 apt packages"
run apt-get update -qq
CFG_FILE="${CHECKPOINT_CONFIG:-$ETC/config.toml}"   # the config this gate will run (step 6 keeps it)
[ -f "$CFG_FILE" ] || CFG_FILE="$SRC/config/example.toml"
read -r CAM_SOURCE IND_SOURCE PIN_FACTORY <<<"$(config_devices "$CFG_FILE")" || true
MODEL=""
if [ -r "$DT_MODEL" ]; then MODEL="$(tr -d '\0' <"$DT_MODEL" || true)"; fi
IS_PI=0
case "$MODEL" in *"Raspberry Pi"*) IS_PI=1 ;; esac
note "config $CFG_FILE: camera.source=$CAM_SOURCE indicators.source=$IND_SOURCE pin_factory=$PIN_FACTORY; hardware: ${MODEL:-not a Raspberry Pi}"
ZBAR_PKG="$(apt_candidate "${ZBAR_PACKAGES[@]}" || true)"
if [ -n "$ZBAR_PKG" ]; then
    APT_PACKAGES=("$ZBAR_PKG" "${APT_PACKAGES[@]}")
elif [ "$DRY_RUN" = 1 ]; then
    note "apt does not know ${ZBAR_PACKAGES[*]} yet (its lists are refreshed first): would install ${ZBAR_PACKAGES[0]}"
    APT_PACKAGES=("${ZBAR_PACKAGES[0]}" "${APT_PACKAGES[@]}")
else
    die "apt knows neither ${ZBAR_PACKAGES[*]} (the QR decoder's zbar library): check /etc/apt/sources.list"
fi
cam_needed=0; [ "$CAM_SOURCE" = picamera2 ] && cam_needed=1
want_from_pi_archive python3-picamera2 "$cam_needed" "camera.source = \"$CAM_SOURCE\"" \
    "install Raspberry Pi OS (Bookworm or later), or use a USB camera: camera.source = \"opencv\" in $CFG_FILE"
gpio_needed=0; [ "$IND_SOURCE" = gpio ] && [ "$PIN_FACTORY" = lgpio ] && gpio_needed=1
want_from_pi_archive python3-lgpio "$gpio_needed" "indicators use $IND_SOURCE/$PIN_FACTORY" \
    "after this script run '$PREFIX/.venv/bin/pip install lgpio', or set [indicators] pin_factory in $CFG_FILE"
note "installing: ${APT_PACKAGES[*]}"
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}"

step "2/8 enable I2C (the MLX90614 is on bus 1)"
if command -v raspi-config >/dev/null 2>&1; then
    run raspi-config nonint do_i2c 0
else
    BOOTCFG=/boot/firmware/config.txt
    [ -f "$BOOTCFG" ] || BOOTCFG=/boot/config.txt
    if [ -f "$BOOTCFG" ] && grep -q '^dtparam=i2c_arm=on' "$BOOTCFG"; then
        printf '    I2C already enabled in %s\n' "$BOOTCFG"
    else
        run sh -c "echo 'dtparam=i2c_arm=on' >> $BOOTCFG"
    fi
fi
run modprobe i2c-dev
if ! grep -qs '^i2c-dev' /etc/modules; then
    run sh -c "echo i2c-dev >> /etc/modules"
fi

step "3/8 service user $SVC_USER in groups gpio, i2c, video, audio (espeak-ng)"
for g in gpio i2c video audio; do
    getent group "$g" >/dev/null 2>&1 || run groupadd --system "$g"
done
if id "$SVC_USER" >/dev/null 2>&1; then
    run usermod -a -G gpio,i2c,video,audio "$SVC_USER"
else
    run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin --groups gpio,i2c,video,audio "$SVC_USER"
fi

step "4/8 code in $PREFIX"
run mkdir -p "$PREFIX"
run rsync -a --delete --exclude .git --exclude .venv --exclude var --exclude '__pycache__' "$SRC/" "$PREFIX/"

step "5/8 virtual environment with system site packages (picamera2, lgpio come from apt)"
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    run "$SYS_PY" -m venv --system-site-packages "$PREFIX/.venv"
fi
# picamera2 and simplejpeg from apt are compiled against apt's numpy (1.24 on Bookworm). Left
# alone, pip installs the newest opencv-python-headless and with it numpy 2 in front of apt's,
# and `import picamera2` fails: "numpy.dtype size changed, may indicate binary incompatibility".
# Keep pip to the system's numpy; it then picks an OpenCV built for that numpy.
PIP_CONSTRAINTS=()
NUMPY_VERSION="$(system_numpy "$SYS_PY")"
if [ -n "$NUMPY_VERSION" ]; then
    CONSTRAINTS="$PREFIX/.venv/system-constraints.txt"
    if [ "$DRY_RUN" = 1 ]; then
        printf '    would run: write %s: numpy==%s\n' "$CONSTRAINTS" "$NUMPY_VERSION"
    else
        printf 'numpy==%s\n' "$NUMPY_VERSION" >"$CONSTRAINTS"
        printf '    wrote %s: numpy==%s (the system numpy, which picamera2 is built against)\n' \
            "$CONSTRAINTS" "$NUMPY_VERSION"
    fi
    PIP_CONSTRAINTS=(-c "$CONSTRAINTS")
else
    note "no numpy from apt for $SYS_PY: pip chooses numpy freely"
fi
run "$PREFIX/.venv/bin/pip" install -q --upgrade pip
run "$PREFIX/.venv/bin/pip" install -q "${PIP_CONSTRAINTS[@]}" "$PREFIX"

step "6/8 config in $ETC (kept if present)"
run install -d -m 0750 -g "$SVC_USER" "$ETC"
if [ ! -f "$ETC/config.toml" ]; then
    run install -m 0640 -g "$SVC_USER" "$SRC/config/example.toml" "$ETC/config.toml"
else
    printf '    %s exists: kept\n' "$ETC/config.toml"
fi
run install -d -m 0750 -o "$SVC_USER" -g "$SVC_USER" "$STATE"
# Secrets for systemd LoadCredential= (root-only files; the service reads its copies in
# $CREDENTIALS_DIRECTORY). Kept if present.
for cred in api-token upload-token staff-pin; do
    if [ -f "$ETC/$cred" ]; then
        printf '    %s exists: kept\n' "$ETC/$cred"
        continue
    fi
    case "$cred" in
        api-token) value="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" ;;
        staff-pin) value="$(od -An -N4 -tu4 /dev/urandom | tr -d ' \n' | tail -c 6)" ;;
        *) value="" ;;  # the centre issues the upload token: paste it in
    esac
    if [ "$DRY_RUN" = 1 ]; then
        printf '    would run: write %s (mode 600)\n' "$ETC/$cred"
    else
        (umask 077 && printf '%s\n' "$value" > "$ETC/$cred")
        printf '    wrote %s\n' "$ETC/$cred"
        [ "$cred" = staff-pin ] && printf '    staff PIN: %s (change it in %s)\n' "$value" "$ETC/$cred"
    fi
done

step "7/8 systemd unit"
run install -m 0644 "$SRC/systemd/checkpoint-scanner.service" "$UNIT"
run systemctl daemon-reload
run systemctl enable checkpoint-scanner.service

step "8/8 check the config"
if [ "$DRY_RUN" = 1 ] || "$PREFIX/.venv/bin/checkpoint-scanner" check-config "$ETC/config.toml"; then
    [ "$DRY_RUN" = 1 ] && printf '    would run: %s\n' "$PREFIX/.venv/bin/checkpoint-scanner check-config $ETC/config.toml"
    step "done. Next: edit $ETC/config.toml, run the self-test, then: systemctl restart checkpoint-scanner"
else
    step "installed, but the config needs fixing (see above); then: systemctl restart checkpoint-scanner"
fi
