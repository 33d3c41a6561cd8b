#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, as
# root. Idempotent: packages already present are left alone.
set -euo pipefail

# Real parts the tests drive. The metadata core needs only Go; FUSE, ucarp,
# sshd and iproute2 are here already so later suites find them in CI.
# scripts/lab also needs util-linux (nsenter, unshare, setsid) and mount.
pkgs=(ca-certificates git make gcc fuse3 iproute2 openssh-server openssh-client ucarp arping fio util-linux mount)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-test-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v go >/dev/null 2>&1; then
	echo "install-test-deps: no Go toolchain on PATH (need go >= $(awk '/^go /{print $2}' go.mod))" >&2
	exit 1
fi
