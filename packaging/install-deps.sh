#!/bin/sh
# Install the Debian packages cmkcert needs to build, test, package and run
# (debhelper, dpkg-dev, lintian: make deb; systemd: systemd-analyze for the unit's
# tests; man-db: the man pages the unit names; python3-yaml: the manifests' tests;
# python3-seccomp: the unit's system call filter applied in the tests).
# Idempotent: installs only what is missing; does nothing when all are present.
set -eu

PACKAGES="build-essential pkg-config make
libfuse3-dev fuse3 libmbedtls-dev libcurl4-openssl-dev libssl-dev libinih-dev libdb5.3-dev libjansson-dev
libcmocka-dev python3 python3-pytest python3-cryptography python3-jwt python3-pykmip
openssl curl util-linux procps
golang-go golang-github-fsnotify-fsnotify-dev inotify-tools
debhelper dpkg-dev lintian systemd man-db python3-yaml python3-seccomp
libmicrohttpd-dev python3-prometheus-client"

missing=""
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root (or sudo) to install:$missing" >&2; exit 1; }
	SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
