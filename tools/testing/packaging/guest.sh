#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The packaging suite's part in the test VM (tools/testing/packaging/suite.py boots it): rvsock as
# DKMS installed it, loaded the way a user's system loads it.
#
# Usage (in the guest): tools/testing/packaging/guest.sh OUT ROOT
#
# ROOT is the throwaway root where suite.py ran `dkms install` on the host: ROOT/lib/modules/
# <release> holds the test kernel's own modules (the C vsock stack among them, from its
# modules_install) and rvsock's in updates/dkms; ROOT/etc/modprobe.d/rvsock.conf is the modprobe
# configuration DKMS installed.  Both take the place of the guest's /lib/modules/<release> and
# /etc/modprobe.d, and then, with the C modules present but none loaded: modprobe by name, the
# kernel's own autoload of socket(AF_VSOCK) (net-pf-40), and what an explicit modprobe of the C
# stack does.  Results: RESULT lines (suite "packaging") in OUT/results.txt.
set -uo pipefail
OUT=$1
ROOT=$2
export OUT
# shellcheck source=tools/testing/guest/lib.sh
. "$(dirname "$0")/../guest/lib.sh"
S=packaging
rel=$(</proc/sys/kernel/osrelease)

# no_c_stack: fails when a module of the C vsock stack is loaded.
no_c_stack() {
	local c
	c=$(loaded_matching "$C_STACK_RE")
	[ -z "$c" ] || { echo "C vsock modules loaded: $c"; return 1; }
}

# loaded MODULE...: fails unless each is loaded.
loaded() {
	local m
	for m in "$@"; do
		grep -q "^$m " /proc/modules || { echo "$m is not loaded"; cat /proc/modules; return 1; }
	done
}

# none_of_ours: fails when an rvsock module is loaded.
none_of_ours() {
	local o
	o=$(loaded_matching "$OUR_RE")
	[ -z "$o" ] || { echo "still loaded: $o"; return 1; }
}

setup_tree() {
	[ -d "$ROOT/lib/modules/$rel/updates/dkms" ] || { echo "no DKMS modules in $ROOT"; return 1; }
	[ -f "$ROOT/etc/modprobe.d/rvsock.conf" ] || { echo "no rvsock.conf in $ROOT"; return 1; }
	# /lib/modules is the VM init's tmpfs; the release's entry a link to the build tree's modules.
	rm -f "/lib/modules/$rel" && ln -s "$ROOT/lib/modules/$rel" "/lib/modules/$rel" &&
		mount --bind "$ROOT/etc/modprobe.d" /etc/modprobe.d || return 1
	ls -l "/lib/modules/$rel/" "/lib/modules/$rel/updates/dkms" /etc/modprobe.d
	echo "kernel.modprobe: $(</proc/sys/kernel/modprobe)"
	ls "/lib/modules/$rel/kernel/net/vmw_vsock/" || return 1
	no_c_stack && none_of_ours
}

dry_run_alias() {
	local out
	out=$(modprobe -n -v net-pf-40 2>&1)
	echo "$ modprobe -n -v net-pf-40"
	echo "$out"
	if [[ $out != *rvsock_loopback.ko* || $out != *rvsock.ko* ]]; then
		echo "rvsock not chosen"
		return 1
	fi
	if [[ $out =~ (^|/)(vsock|vsock_loopback)\.ko ]]; then
		echo "the C stack would be loaded too"
		return 1
	fi
}

by_name() {
	modprobe rvsock && loaded rvsock && no_c_stack &&
		modprobe rvsock_loopback && loaded rvsock_loopback &&
		modprobe rvsock_virtio && loaded rvsock_virtio && no_c_stack || return 1
	modinfo -F alias rvsock_loopback
	modinfo -F alias rvsock_virtio
	modinfo -n rvsock
}

remove_all() {
	modprobe -r rvsock_virtio rvsock_loopback rvsock 2>&1 || true
	none_of_ours && no_c_stack
}

# socket(AF_VSOCK) with nothing loaded: the kernel runs modprobe net-pf-40; then a connection
# over CID 1 through what it loaded.
autoload() {
	none_of_ours || return 1
	bounded 120 "$PY" -c '
import socket
srv = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
srv.bind((socket.VMADDR_CID_ANY, 5555))
srv.listen(1)
cli = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
cli.settimeout(30)
cli.connect((1, 5555))
conn, peer = srv.accept()
cli.sendall(b"autoloaded")
print("received", conn.recv(64), "from", peer)
' || return 1
	cat /proc/modules
	loaded rvsock rvsock_loopback && no_c_stack
}

# An explicit modprobe of the C stack while rvsock owns the family: rvsock.conf's install command
# for vsock refuses it, with a line saying why, before vsock.ko's init runs.
c_stack_refused() {
	local rc=0 out
	out=$(modprobe vsock_loopback 2>&1) || rc=$?
	echo "$out"
	echo "modprobe vsock_loopback: exit $rc"
	[ $rc != 0 ] || { echo "the C stack loaded next to rvsock"; return 1; }
	[[ $out == *"rvsock is loaded and owns AF_VSOCK"* ]] || { echo "no line saying why"; return 1; }
	no_c_stack && loaded rvsock
}

# With rvsock gone, the C stack by name still loads (the blacklist covers only aliases, the
# install command for vsock refuses only while rvsock is loaded).
c_stack_by_name() {
	remove_all || return 1
	modprobe vsock_loopback || return 1
	loaded vsock vsock_loopback || return 1
	modprobe -r vsock_loopback vsock vmw_vsock_virtio_transport_common || true
	none_of_ours && no_c_stack
}

# The kernel log from this suite's marker on (the boot before it is not ours to judge: under TCG
# on a busy host it can report soft lockups), with the guest suite's categories, and a duplicate
# /dev/vsock, which would mean that vsock.ko's init ran next to rvsock.
kernel_log() {
	dmesg >"$OUT/dmesg.txt"
	sed -n "/rvsock-check: suite $S begin\$/,\$p" "$OUT/dmesg.txt" >"$OUT/dmesg.$S.txt"
	grep -q "rvsock-check: suite $S begin" "$OUT/dmesg.$S.txt" || { echo "no marker"; return 1; }
	local bad='WARNING:|BUG:|Oops|general protection fault|KASAN|possible recursive locking'
	bad+='|circular locking dependency|inconsistent lock state|suspicious RCU usage'
	bad+='|blocked for more than|soft lockup|Call Trace|duplicate filename'
	if grep -E "$bad" "$OUT/dmesg.$S.txt"; then
		return 1
	fi
	echo "no kernel error report since the suite began"
}

begin_suite "$S"
if run_check $S "guest: the DKMS module tree as /lib/modules/$rel" 60 setup_tree; then
	run_check $S "guest: modprobe -n net-pf-40 resolves to rvsock only" 60 dry_run_alias
	run_check $S "guest: modprobe rvsock, rvsock_loopback, rvsock_virtio by name" 120 by_name
	run_check $S "guest: modprobe -r unloads them" 120 remove_all
	run_check $S "guest: socket(AF_VSOCK) autoloads rvsock and rvsock_loopback" 180 autoload
	run_check $S "guest: modprobe vsock_loopback refused while rvsock is loaded" 120 c_stack_refused
	run_check $S "guest: modprobe vsock_loopback by name loads the C stack without rvsock" 120 \
		c_stack_by_name
fi
run_check $S "guest: kernel log" 30 kernel_log
exit 0
