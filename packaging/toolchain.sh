#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The make arguments that build rvsock against a kernel with the toolchain that kernel was built
# with, for `make shipped`/`make install` and DKMS.  See README "Installing".
#
# Usage: packaging/toolchain.sh [--check] KDIR
#
# KDIR is the kernel's build directory (/lib/modules/<release>/build).  Prints, on one line,
# "LLVM=... RUSTC=... BINDGEN=... LIBCLANG_PATH=..." for `make -C KDIR M=...`, and on stderr one
# line saying what it found.  With --check it prints only that line.  When the kernel cannot
# take rvsock (no CONFIG_RUST) or the toolchain does not match the kernel's, it prints one line
# "rvsock: ..." on stderr saying what and how to fix it, and exits 1.
#
# The kernel records its toolchain in include/config/auto.conf: CONFIG_RUSTC_VERSION_TEXT,
# CONFIG_BINDGEN_VERSION_TEXT, CONFIG_CC_VERSION_TEXT and CONFIG_CLANG_VERSION.  rustc must be
# exactly the kernel's (the kernel's crates are metadata that only the same compiler reads);
# bindgen and clang should be.  Without settings, the first matching rustc and bindgen on PATH
# or in the usual places are taken.  Settings, strongest first: the environment (LLVM, KRUSTC,
# KBINDGEN, LIBCLANG_PATH, as for `make`), then $RVSOCK_TOOLCHAIN_CONF (default
# /etc/rvsock/toolchain.conf: shell assignments of the same variables, read by every DKMS build).
set -u

check=0
if [ "${1:-}" = --check ]; then
	check=1
	shift
fi
[ $# = 1 ] || {
	echo "usage: $0 [--check] KDIR" >&2
	exit 2
}
kdir=$1

fail() {
	echo "rvsock: $*" >&2
	exit 1
}

# The environment wins over the configuration file.
env_llvm=${LLVM-} env_krustc=${KRUSTC-} env_kbindgen=${KBINDGEN-} env_libclang=${LIBCLANG_PATH-}
conf=${RVSOCK_TOOLCHAIN_CONF:-/etc/rvsock/toolchain.conf}
if [ -r "$conf" ]; then
	# shellcheck disable=SC1090
	. "$conf"
fi
LLVM=${env_llvm:-${LLVM-}}
KRUSTC=${env_krustc:-${KRUSTC-}}
KBINDGEN=${env_kbindgen:-${KBINDGEN-}}
LIBCLANG_PATH=${env_libclang:-${LIBCLANG_PATH-}}

[ -f "$kdir/.config" ] ||
	fail "$kdir is not a kernel build directory (no .config): install your kernel's headers" \
		"(Debian: linux-headers-\$(uname -r)) or give KDIR=<the kernel's build directory>"
grep -q '^CONFIG_RUST=y' "$kdir/.config" ||
	fail "the kernel in $kdir was built without Rust (no CONFIG_RUST=y in its .config):" \
		"rvsock needs a kernel built with CONFIG_RUST=y"
auto=$kdir/include/config/auto.conf
[ -f "$auto" ] ||
	fail "$kdir is not prepared (no include/config/auto.conf): run 'make modules_prepare' there"

# kconf NAME: the value of CONFIG_NAME in the kernel's auto.conf, without quotes.
kconf() {
	sed -n "s/^CONFIG_$1=//p" "$auto" | sed -e 's/^"//' -e 's/"$//'
}
release=$(cat "$kdir/include/config/kernel.release" 2>/dev/null || echo "in $kdir")

# rustc: exactly the kernel's.
want_rustc=$(kconf RUSTC_VERSION_TEXT)
[ -n "$want_rustc" ] ||
	fail "$auto records no CONFIG_RUSTC_VERSION_TEXT: is it a Rust-enabled 6.12 or later kernel?"
rustc_text() { "$1" --version 2>/dev/null | head -n 1; }
if [ -n "$KRUSTC" ]; then
	have=$(rustc_text "$KRUSTC")
	[ "$have" = "$want_rustc" ] ||
		fail "rustc mismatch: kernel $release was built with '$want_rustc', KRUSTC=$KRUSTC is" \
			"'${have:-not runnable}': give KRUSTC=<the kernel's rustc> (DKMS: KRUSTC=... in $conf)"
else
	found=()
	for c in $(command -v -a rustc 2>/dev/null) /usr/bin/rustc /usr/local/bin/rustc; do
		[ -x "$c" ] || continue
		have=$(rustc_text "$c")
		found+=("$c: '${have:-not runnable}'")
		if [ "$have" = "$want_rustc" ]; then
			KRUSTC=$c
			break
		fi
	done
	if [ -z "$KRUSTC" ]; then
		[ ${#found[@]} -gt 0 ] || found=("none")
		list=$(printf '%s; ' "${found[@]}")
		fail "rustc mismatch: kernel $release was built with '$want_rustc', found ${list%; }:" \
			"install that rustc (Debian: rustc-web) and give KRUSTC=<its path> (DKMS: KRUSTC=... in $conf)"
	fi
fi

# bindgen: the kernel's version if one is found, else any (with a warning).
want_bindgen=$(kconf BINDGEN_VERSION_TEXT)
bindgen_text() { "$1" --version workaround-for-0.69.0 2>/dev/null | head -n 1; }
warn_bindgen=
if [ -z "$KBINDGEN" ]; then
	first=
	for c in $(command -v -a bindgen 2>/dev/null) /usr/local/bin/bindgen \
		"${RVSOCK_CACHE:-/var/cache/rvsock}"/bindgen-*/bin/bindgen; do
		[ -x "$c" ] || continue
		[ -n "$first" ] || first=$c
		if [ "$(bindgen_text "$c")" = "$want_bindgen" ]; then
			KBINDGEN=$c
			break
		fi
	done
	[ -n "$KBINDGEN" ] || KBINDGEN=$first
	[ -n "$KBINDGEN" ] ||
		fail "no bindgen found (kernel $release was built with '$want_bindgen'): install" \
			"bindgen-cli (cargo install bindgen-cli --version ${want_bindgen#bindgen }) and give" \
			"KBINDGEN=<its path> (DKMS: KBINDGEN=... in $conf)"
fi
have_bindgen=$(bindgen_text "$KBINDGEN")
[ -n "$have_bindgen" ] || fail "KBINDGEN=$KBINDGEN does not run"
[ "$have_bindgen" = "$want_bindgen" ] ||
	warn_bindgen="; warning: kernel built with '$want_bindgen', using '$have_bindgen'"

# LLVM: a clang-built kernel wants the same clang major version.
if grep -q '^CONFIG_CC_IS_CLANG=y' "$auto"; then
	major=$(($(kconf CLANG_VERSION) / 10000))
	if [ -z "$LLVM" ]; then
		if command -v "clang-$major" >/dev/null && command -v "ld.lld-$major" >/dev/null; then
			LLVM=-$major
		elif [ "$(clang -dumpversion 2>/dev/null | cut -d. -f1)" = "$major" ] &&
			command -v ld.lld >/dev/null; then
			LLVM=1
		else
			fail "kernel $release was built with '$(kconf CC_VERSION_TEXT)': install clang-$major," \
				"lld-$major and llvm-$major, or give LLVM=<suffix or 1> (DKMS: LLVM=... in $conf)"
		fi
	fi
	if [ -z "$LIBCLANG_PATH" ] && [ -d "/usr/lib/llvm-$major/lib" ]; then
		LIBCLANG_PATH=/usr/lib/llvm-$major/lib
	fi
fi

echo "rvsock: kernel $release, $(rustc_text "$KRUSTC") ($KRUSTC), $have_bindgen ($KBINDGEN)," \
	"LLVM=${LLVM:-none}$warn_bindgen" >&2
[ $check = 1 ] && exit 0
args="RUSTC=$KRUSTC BINDGEN=$KBINDGEN"
# DKMS adds CC=clang LD=ld.lld to the make command of a clang-built kernel; name the versioned
# ones that LLVM=-<version> (or LLVM=<dir>/) means, so that they win.
case "$LLVM" in
"") ;;
1) args="LLVM=1 $args" ;;
-*) args="LLVM=$LLVM CC=clang$LLVM LD=ld.lld$LLVM $args" ;;
*/) args="LLVM=$LLVM CC=${LLVM}clang LD=${LLVM}ld.lld $args" ;;
*) args="LLVM=$LLVM $args" ;;
esac
[ -z "$LIBCLANG_PATH" ] || args="$args LIBCLANG_PATH=$LIBCLANG_PATH"
echo "$args"
