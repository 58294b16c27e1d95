#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds (once) the Rust-enabled 6.12 test kernel and the upstream vsock test tools into the cache.
#
# Usage: tools/testing/kernel/build.sh          build if missing, print nothing else
#        tools/testing/kernel/build.sh --force  rebuild
#
# The result, under $(kernel_dir):
#   src/     the unpacked linux-source-6.12 tree
#   build/   the kernel object tree (O=); this is the KDIR our modules build against
#   vsock/   vsock_test, vsock_perf, vsock_diag_test, vsock_uring_test built from src/, unmodified
#   kunit.py the kernel's KTAP parser (a link into src/)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

force=0
[ "${1:-}" = --force ] && force=1

dir=$(kernel_dir)
[ $force = 0 ] && [ -e "$dir/.complete" ] && exit 0

# One build at a time: a second caller waits for the first and then finds it complete.
mkdir -p "$RVSOCK_CACHE/kernel"
exec 9>"$RVSOCK_CACHE/kernel/.lock"
if ! flock -n 9; then
	log "another kernel build is running; waiting for it"
	flock 9
fi
[ $force = 0 ] && [ -e "$dir/.complete" ] && exit 0

[ -f "$KERNEL_SOURCE_TAR" ] || die "$KERNEL_SOURCE_TAR missing: run tools/testing/setup.sh"
[ -x "$KERNEL_BINDGEN" ] || die "$KERNEL_BINDGEN missing: run tools/testing/setup.sh"
for t in "clang$LLVM_SUFFIX" "ld.lld$LLVM_SUFFIX" flex bison bc rsync cpio pahole "$KERNEL_RUSTC"; do
	command -v "$t" >/dev/null || die "$t missing: run tools/testing/setup.sh"
done

log "building the test kernel $(kernel_version) into $dir (about 9 minutes on 2 cores)"
# Resumable: each finished step leaves a marker, and make is incremental, so an interrupted
# build continues where it stopped.  --force starts from scratch.
[ $force = 1 ] && rm -rf "$dir"
mkdir -p "$dir/src" "$dir/build" "$dir/logs"
# shellcheck disable=SC2046
mk() { make -C "$dir/src" O="$dir/build" $(kernel_make_args) "$@"; }

if [ ! -e "$dir/.unpacked" ]; then
	rm -rf "$dir/src" && mkdir -p "$dir/src"
	run_step "unpack $KERNEL_SOURCE_PKG" "$dir/logs/unpack.log" \
		tar -xf "$KERNEL_SOURCE_TAR" -C "$dir/src" --strip-components=1
	touch "$dir/.unpacked"
fi
run_step "check the Rust toolchain" "$dir/logs/rustavailable.log" mk rustavailable
if [ ! -e "$dir/.configured" ]; then
	run_step "configure (allnoconfig + rvsock.config)" "$dir/logs/config.log" \
		mk allnoconfig KCONFIG_ALLCONFIG="$KERNEL_FRAGMENT"
fi

# Every symbol the fragment sets must have come out as asked: a silently dropped CONFIG_RUST or a
# built-in VSOCKETS would make every later result meaningless.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=n) sym=${line%=n}; grep -q "^$sym=" "$dir/build/.config" && { echo "$sym is set, wanted n"; bad=1; } ;;
	CONFIG_*=*) grep -qx "$line" "$dir/build/.config" || { echo "$line did not take"; bad=1; } ;;
	esac
done <"$KERNEL_FRAGMENT"
[ $bad = 0 ] || die "the kernel configuration does not match $KERNEL_FRAGMENT"
touch "$dir/.configured"

run_step "build bzImage and modules" "$dir/logs/kernel.log" mk -j"$(nproc)" bzImage modules
run_step "install uapi headers" "$dir/logs/headers.log" \
	mk headers_install INSTALL_HDR_PATH="$dir/vsock/usr"

# The upstream tools, unmodified, built against this kernel's uapi headers.  Copying the two
# directories keeps src/ free of build products (the Makefile builds in place).
rm -rf "$dir/vsock/tools" && mkdir -p "$dir/vsock/tools/testing"
cp -r "$dir/src/tools/include" "$dir/vsock/tools/"
cp -r "$dir/src/tools/testing/vsock" "$dir/vsock/tools/testing/"
run_step "build the upstream vsock tools" "$dir/logs/vsock-tools.log" \
	make -C "$dir/vsock/tools/testing/vsock" -j"$(nproc)" \
	vsock_test vsock_diag_test vsock_perf vsock_uring_test
for t in vsock_test vsock_diag_test vsock_perf vsock_uring_test; do
	ln -sf "tools/testing/vsock/$t" "$dir/vsock/$t"
done
ln -sf src/tools/testing/kunit/kunit.py "$dir/kunit.py"

touch "$dir/.complete"
if [ "$KERNEL_FRAGMENT" = "$RVSOCK_TOP/tools/testing/kernel/rvsock.config" ]; then
	ln -sfn "$(basename "$dir")" "$RVSOCK_CACHE/kernel/current"
fi
log "test kernel ready: $dir/build"
