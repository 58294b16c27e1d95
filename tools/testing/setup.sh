#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Installs what rvsock's build and tests need, then builds the cached test kernel.
#
# Usage: tools/testing/setup.sh            (as root; `make setup` runs it)
#
# Idempotent and quiet when everything is present: it checks first and installs only what is
# missing (Debian packages, bindgen-cli and vhost-device-vsock in the cache, virtme-ng from
# PyPI), then runs tools/testing/kernel/build.sh, which returns at once when the kernel is already
# built.
set -euo pipefail
# shellcheck source=tools/testing/lib.sh
. "$(dirname "$0")/lib.sh"

PACKAGES=(
	"$KERNEL_SOURCE_PKG" clang-19 lld-19 llvm-19 libclang-19-dev
	rustc-web rust-web-src rust-web-clippy rustfmt-web
	flex bison bc libelf-dev libssl-dev dwarves cpio kmod rsync
	qemu-system-x86 udev socat ncat liburing-dev iproute2 python3 busybox-static
	dkms
)

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	else
		sudo "$@"
	fi
}

pkg_installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

install_packages() {
	local missing=() p
	for p in "$@"; do
		pkg_installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} = 0 ] && return 0
	log "installing Debian packages: ${missing[*]}"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}"
}

install_bindgen() {
	if [ -x "$KERNEL_BINDGEN" ] &&
		"$KERNEL_BINDGEN" --version 2>/dev/null | grep -qw "$BINDGEN_VERSION"; then
		return 0
	fi
	# cargo: the rustup one if the machine has it, Debian's cargo-web otherwise.
	command -v cargo >/dev/null || install_packages cargo-web
	log "installing bindgen-cli $BINDGEN_VERSION into $BINDGEN_ROOT"
	cargo install --quiet --locked --root "$BINDGEN_ROOT" bindgen-cli --version "$BINDGEN_VERSION"
}

install_vhost_device_vsock() {
	if [ -x "$VHOST_DEVICE_VSOCK" ] &&
		"$VHOST_DEVICE_VSOCK" --version 2>/dev/null | grep -qw "$VHOST_DEVICE_VSOCK_VERSION"; then
		return 0
	fi
	command -v cargo >/dev/null || install_packages cargo-web
	log "installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION into $VHOST_DEVICE_VSOCK_ROOT" \
		"(about 3 minutes on 2 cores)"
	cargo install --quiet --locked --root "$VHOST_DEVICE_VSOCK_ROOT" vhost-device-vsock \
		--version "$VHOST_DEVICE_VSOCK_VERSION"
}

vng_version_ok() {
	command -v vng >/dev/null && vng --version 2>/dev/null | grep -qw "$VIRTME_NG_VERSION"
}

install_virtme_ng() {
	vng_version_ok && return 0
	log "installing virtme-ng $VIRTME_NG_VERSION (pip)"
	python3 -m pip --version >/dev/null 2>&1 || install_packages python3-pip
	local pip=(python3 -m pip install --quiet --disable-pip-version-check
		"virtme-ng==$VIRTME_NG_VERSION")
	# Debian's own python3 refuses pip installs into the system (PEP 668) unless told.
	"${pip[@]}" || "${pip[@]}" --break-system-packages
	hash -r
	# pyenv installs console scripts behind shims that need a rehash.
	if command -v pyenv >/dev/null; then pyenv rehash || true; fi
	vng_version_ok || die "virtme-ng $VIRTME_NG_VERSION installed but 'vng --version' disagrees"
}

install_packages "${PACKAGES[@]}"
install_bindgen
install_vhost_device_vsock
install_virtme_ng
"$RVSOCK_TOP/tools/testing/kernel/build.sh"
