#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Upstream vsock_test between two sibling guests (CIDs 3 and 4, C virtio-vsock driver) through
# vudev.  The TCP control channel is a virtio-net link made of two QEMU UDP socket netdevs on
# 127.0.0.1 (10.57.0.3 <-> 10.57.0.4); nothing else is reachable.
#
# Usage: tools/testing/vudev/vsock_test.sh [--kdir DIR] [--timeout SECONDS]
#                                          [--test-args "ARGS"] [-- VUDEV-OPTIONS...]
#   --kdir DIR   kernel build directory (its ../vsock/vsock_test is used)
#   --test-args  extra vsock_test arguments for both sides, e.g. "--skip=18 --skip=19"
#
# Take /tmp/rvsock-vm.lock around it on a shared machine.
set -euo pipefail
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
. tools/testing/lib.sh
kdir=$(kernel_dir)/build
timeout_s=900
targs=
while [ $# -gt 0 ]; do
	case $1 in
	--kdir) kdir=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--test-args) targs=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [--kdir DIR] [--timeout S] [--test-args ARGS] [-- VUDEV-OPTIONS...]" >&2
		exit 2 ;;
	esac
done
vt=$(cd "$kdir/.." && pwd)/vsock/vsock_test
[ -x "$vt" ] || { echo "no $vt" >&2; exit 1; }
cargo build --release -q -p vudev
dir=$(mktemp -d /tmp/vudev-vt.XXXXXX)
target/release/vudev --vm "cid=3,socket=$dir/a.sock" --vm "cid=4,socket=$dir/b.sock" \
	--stats-interval 30 "$@" 2>"$dir/vudev.log" &
dev=$!
trap 'kill $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$dir/a.sock" ] && [ -S "$dir/b.sock" ] && break; sleep 0.1; done
echo "logs in $dir"
net() { # MYID PEERID
	echo "-netdev socket,id=ctl,udp=127.0.0.1:4700$2,localaddr=127.0.0.1:4700$1" \
		"-device virtio-net-pci,netdev=ctl,mac=52:54:00:57:00:0$1"
}
setup() { # MYID
	echo "modprobe vmw_vsock_virtio_transport && ip link set lo up && ip link set eth0 up &&" \
		"ip addr add 10.57.0.$1/24 dev eth0 &&"
}
server="$(setup 3) $vt --mode=server --control-port=9100 --peer-cid=4 $targs"
client="$(setup 4) for i in \$(seq 120); do $vt --mode=client --control-host=10.57.0.3 \
--control-port=9100 --peer-cid=3 $targs >/tmp/vt.out 2>&1; rc=\$?; \
grep -q 'Control socket initialization failed' /tmp/vt.out || break; sleep 2; done; \
cat /tmp/vt.out; exit \$rc"
vm() { # NAME SOCKET MYID PEERID COMMAND
	# shellcheck disable=SC2046
	tools/testing/vm/run.sh --kdir "$kdir" --vhost-user-socket "$2" --memory 1G --cpus 1 \
		--timeout "$timeout_s" --log "$dir/$1.log" --qemu-opts "$(net "$3" "$4")" -- "$5" \
		>"$dir/$1.out" 2>&1
}
t0=$(date +%s)
vm server "$dir/a.sock" 3 4 "$server" & a=$!
vm client "$dir/b.sock" 4 3 "$client" & b=$!
rc=0
wait $a || rc=$?
wait $b || rc=$((rc ? rc : $?))
echo "both guests done in $(( $(date +%s) - t0 )) s, status $rc"
# The guests' output is in their console logs.
echo "client:"; grep -E '^[0-9]+ - |^All tests|^SKIPPED|FAIL|fail|rror' "$dir/client.log" | sed 's/^/  /' || true
echo "server (errors):"; grep -E 'FAIL|fail|rror' "$dir/server.log" | sed 's/^/  /' || true
grep -E 'dropped|stats' "$dir/vudev.log" | tail -6 | sed 's/^/  vudev: /' || true
exit $rc
