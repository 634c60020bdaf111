#!/usr/bin/env bash
# Install checkpoint-scanner on a Raspberry Pi (Raspberry Pi OS Bookworm) from this checkout.
# Idempotent: run it again after `git pull` to upgrade; existing config and data are kept.
#
#   sudo ./scripts/install-pi.sh            install or upgrade
#   ./scripts/install-pi.sh --dry-run       print every step, change nothing (no root needed)
#
# Steps: apt packages (zbar, picamera2, lgpio, CJK fonts, espeak-ng), I2C enabled, service user
# in the gpio/i2c/video groups, the code in /opt/checkpoint-scanner with a virtual environment
# that sees the system's picamera2/lgpio, config in /etc/checkpoint-scanner/, the systemd unit
# enabled. After it: edit /etc/checkpoint-scanner/config.toml, run
# `checkpoint-scanner selftest --config /etc/checkpoint-scanner/config.toml`, then
# `systemctl restart checkpoint-scanner`.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${CHECKPOINT_PREFIX:-/opt/checkpoint-scanner}"
ETC="/etc/checkpoint-scanner"
STATE="/var/lib/checkpoint-scanner"
SVC_USER="checkpoint"
UNIT="/etc/systemd/system/checkpoint-scanner.service"
APT_PACKAGES=(libzbar0 python3-venv python3-picamera2 python3-lgpio i2c-tools fonts-noto-cjk espeak-ng rsync)
DRY_RUN=0

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

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

step "1/8 apt packages: ${APT_PACKAGES[*]}"
run apt-get update -qq
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

step "3/8 service user $SVC_USER in groups gpio, i2c, video"
for g in gpio i2c video; do
    getent group "$g" >/dev/null 2>&1 || run groupadd --system "$g"
done
if id "$SVC_USER" >/dev/null 2>&1; then
    run usermod -a -G gpio,i2c,video "$SVC_USER"
else
    run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin --groups gpio,i2c,video "$SVC_USER"
fi

step "4/8 code in $PREFIX"
run mkdir -p "$PREFIX"
run rsync -a --delete --exclude .git --exclude .venv --exclude var --exclude '__pycache__' "$SRC/" "$PREFIX/"

step "5/8 virtual environment with system site packages (picamera2, lgpio come from apt)"
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    run python3 -m venv --system-site-packages "$PREFIX/.venv"
fi
run "$PREFIX/.venv/bin/pip" install -q --upgrade pip
run "$PREFIX/.venv/bin/pip" install -q "$PREFIX"

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
