# SPDX-License-Identifier: GPL-2.0
# Shared settings and helpers for rvsock's build and test scripts.  Source it, do not run it.
#
# Everything expensive (the test kernel, the upstream vsock tools, bindgen) lives in the cache
# directory, outside the repository: $RVSOCK_CACHE, by default /var/cache/rvsock.

RVSOCK_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RVSOCK_CACHE=${RVSOCK_CACHE:-/var/cache/rvsock}

# Toolchain pins (see ../shared/docs/test-platform.md for why each is what it is).
LLVM_SUFFIX=-19
KERNEL_RUSTC=/usr/bin/rustc
KERNEL_CLIPPY=/usr/bin/clippy-driver
KERNEL_RUSTFMT=/usr/bin/rustfmt
BINDGEN_VERSION=0.72.1
BINDGEN_ROOT=$RVSOCK_CACHE/bindgen-$BINDGEN_VERSION
KERNEL_BINDGEN=$BINDGEN_ROOT/bin/bindgen
# rust-vmm's vhost-user vsock device (the host side of the guest's virtio-vsock device: this
# machine has no /dev/vhost-vsock); vm/run.sh --vhost-user-vsock starts it.
VHOST_DEVICE_VSOCK_VERSION=0.3.0
VHOST_DEVICE_VSOCK_ROOT=$RVSOCK_CACHE/vhost-device-vsock-$VHOST_DEVICE_VSOCK_VERSION
VHOST_DEVICE_VSOCK=$VHOST_DEVICE_VSOCK_ROOT/bin/vhost-device-vsock
VIRTME_NG_VERSION=1.42
KERNEL_SOURCE_PKG=linux-source-6.12
KERNEL_SOURCE_TAR=/usr/src/linux-source-6.12.tar.xz
# The config fragment; tools/testing/kernel/bench.config selects the benchmark kernel.
KERNEL_FRAGMENT=${KERNEL_FRAGMENT:-$RVSOCK_TOP/tools/testing/kernel/rvsock.config}
export LIBCLANG_PATH=/usr/lib/llvm${LLVM_SUFFIX}/lib

# Make arguments every kernel-side build needs (the kernel and our modules must agree on them).
kernel_make_args() {
	echo "LLVM=$LLVM_SUFFIX RUSTC=$KERNEL_RUSTC BINDGEN=$KERNEL_BINDGEN" \
		"CLIPPY_DRIVER=$KERNEL_CLIPPY RUSTFMT=$KERNEL_RUSTFMT"
}

# Bump when tools/testing/kernel/build.sh changes what it produces.
KERNEL_BUILD_REV=1

# The cache key of the test kernel: source package version, config fragment, build revision and
# the toolchain versions.  Any change gives a new directory; the old one can be deleted.
kernel_key() {
	{
		dpkg-query -W -f='${Version}\n' "$KERNEL_SOURCE_PKG" 2>/dev/null || echo none
		cat "$KERNEL_FRAGMENT"
		echo "build rev $KERNEL_BUILD_REV"
		"$KERNEL_RUSTC" --version 2>/dev/null || echo none
		"clang$LLVM_SUFFIX" --version 2>/dev/null | head -n 1 || echo none
		echo "bindgen $BINDGEN_VERSION"
	} | sha256sum | cut -c1-12
}

kernel_version() {
	dpkg-query -W -f='${Version}' "$KERNEL_SOURCE_PKG" 2>/dev/null | cut -d- -f1 || echo unknown
}

# Directory that holds the cached kernel for the current key: src/, build/ (the KDIR), vsock/
# (the upstream test tools) and a .complete marker.
kernel_dir() {
	echo "$RVSOCK_CACHE/kernel/$(kernel_version)-$(kernel_key)"
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# run_step NAME LOGFILE CMD...: runs CMD with its output in LOGFILE, printing a progress line every
# 30 s (elapsed time and the log's last line).  On failure it prints the log's tail, says where the
# whole log is and exits.
run_step() {
	local name=$1 logf=$2
	shift 2
	mkdir -p "$(dirname "$logf")"
	local start=$SECONDS
	log "$name (log: $logf)"
	"$@" >"$logf" 2>&1 &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		local i
		for i in $(seq 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		if kill -0 "$pid" 2>/dev/null; then
			local last
			last=$(tail -n 1 "$logf" 2>/dev/null | cut -c1-100)
			log "  ... $name: $((SECONDS - start)) s: $last"
		fi
	done
	if ! wait "$pid"; then
		tail -n 30 "$logf" >&2
		die "step '$name' failed after $((SECONDS - start)) s; full log: $logf"
	fi
	log "$name: done in $((SECONDS - start)) s"
}
