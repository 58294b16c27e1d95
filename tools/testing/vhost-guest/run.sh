#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Runs inside the test VM: loads the host-side vsock driver, runs vhost-guest's conformance
# checks (and, with --hostile, its hostile mode) against it, unloads it and scans the kernel log.
#
# Usage (in the VM): tools/testing/vhost-guest/run.sh [--driver c] [--hostile N] [-- ARGS...]
#
#   --driver c      C vhost_vsock (modprobe; it pulls in vsock.ko and the virtio common module).
#                   The only driver today; rvsock_vhost comes with issue 11.
#   --hostile N     after the checks, N hostile packets (vhost-guest --hostile --packets N)
#   ARGS            passed to vhost-guest (e.g. --only setup,g2h-connect --bytes 1048576)
#
# From the host (the VM sees the host's / read-only, so the release binary built here is there):
#
#   nice -n 10 cargo build --release -p vhost-guest
#   flock /tmp/rvsock-vm.lock tools/testing/vm/run.sh --kdir "$(make -s kdir)" --timeout 900 \
#     -- tools/testing/vhost-guest/run.sh --hostile 2000
#
# Output: the RESULT lines of vhost-guest (suite "vhost"), plus "module-load", "module-unload"
# and "kernel-log" lines of this script, and a final "N passed, N failed".  Exit status 0 when
# nothing failed.
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${VHOST_GUEST_BIN:-$top/target/release/vhost-guest}
driver=c
hostile=0
while [ $# -gt 0 ]; do
	case $1 in
	--driver) driver=$2; shift 2 ;;
	--hostile) hostile=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [--driver c] [--hostile N] [-- ARGS...]" >&2; exit 2 ;;
	esac
done

pass=0
fail=0
res() { # NAME STATUS SECS MESSAGE
	printf 'RESULT\tvhost\t%s\t%s\t%s\t-\t%s\n' "$1" "$2" "$3" "${4//[$'\t\n']/ }"
	if [ "$2" = pass ]; then pass=$((pass + 1)); elif [ "$2" = fail ]; then fail=$((fail + 1)); fi
}
count() { # the "N passed, N failed" line of a vhost-guest run's output
	local p f
	read -r p _ f _ < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1)
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-1}))
}

[ "$driver" = c ] || { echo "unknown driver $driver" >&2; exit 2; }
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p vhost-guest" >&2; exit 2; }
echo "rvsock-vhost-guest: begin" >/dev/kmsg
mods="vhost_vsock"
if modprobe vhost_vsock 2>/tmp/vhg-modprobe.err && [ -c /dev/vhost-vsock ]; then
	res module-load pass 0 "vhost_vsock loaded: $(cut -d' ' -f1 /proc/modules | grep -E 'vsock|vhost' | tr '\n' ' ')"
else
	res module-load fail 0 "modprobe vhost_vsock: $(cat /tmp/vhg-modprobe.err) $(ls -l /dev/vhost-vsock 2>&1)"
	echo "$pass passed, $fail failed"
	exit 1
fi

out=/tmp/vhg-out.txt
timeout 600 "$bin" "$@" | tee "$out"
count "$out"
if [ "$hostile" -gt 0 ]; then
	timeout 600 "$bin" --hostile --packets "$hostile" | tee "$out"
	count "$out"
fi

# Unload vhost_vsock and everything it pulled in; sockets in their close timeout (8 s) still
# hold vsock.ko, so retry for a while.
start=$(date +%s)
left=
for _ in $(seq 20); do
	for m in $mods vmw_vsock_virtio_transport_common vhost vhost_iotlb vsock; do
		grep -q "^$m " /proc/modules && rmmod "$m" 2>/dev/null
	done
	left=$(cut -d' ' -f1 /proc/modules | grep -E '^(vsock|vhost|vmw_vsock)' | tr '\n' ' ')
	[ -z "$left" ] && break
	sleep 1
done
if [ -z "$left" ]; then
	res module-unload pass $(($(date +%s) - start)) "vhost_vsock, vhost, vhost_iotlb, vsock unloaded"
else
	res module-unload fail $(($(date +%s) - start)) "still loaded: $left"
fi
echo "rvsock-vhost-guest: end" >/dev/kmsg

bad=$(dmesg | sed -n '/rvsock-vhost-guest: begin/,$p' |
	grep -E 'WARNING:|BUG:|Oops|general protection fault|KASAN|possible recursive locking|circular locking dependency|inconsistent lock state|suspicious RCU usage|unreferenced object|blocked for more than|soft lockup|Call Trace' |
	head -5)
if [ -z "$bad" ]; then
	res kernel-log pass 0 "no WARN/BUG/KASAN/lockdep report"
else
	res kernel-log fail 0 "$bad"
	dmesg | sed -n '/rvsock-vhost-guest: begin/,$p' | tail -80
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
