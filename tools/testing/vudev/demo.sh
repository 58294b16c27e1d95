#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Two sibling guests (CIDs 3 and 4) with the C virtio-vsock driver, connected through vudev:
# STREAM 4 MiB each way with sha256, SEQPACKET 1 B / 4 KiB / 64 KiB messages echoed.
#
# Usage: tools/testing/vudev/demo.sh [--kdir DIR] [--timeout SECONDS] [-- VUDEV-OPTIONS...]
#
# Needs run.sh's --vhost-user-socket.  Logs go to a fresh /tmp/vudev-demo.XXXXXX directory.
# Take /tmp/rvsock-vm.lock around it on a shared machine: flock /tmp/rvsock-vm.lock demo.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
kdir=()
timeout_s=600
while [ $# -gt 0 ]; do
	case $1 in
	--kdir) kdir=(--kdir "$2"); shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [--kdir DIR] [--timeout S] [-- VUDEV-OPTIONS...]" >&2; exit 2 ;;
	esac
done
cargo build --release -q -p vudev
dir=$(mktemp -d /tmp/vudev-demo.XXXXXX)
target/release/vudev --vm "cid=3,socket=$dir/a.sock" --vm "cid=4,socket=$dir/b.sock" \
	--stats-interval 20 "$@" 2>"$dir/vudev.log" &
dev=$!
trap 'kill $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$dir/a.sock" ] && [ -S "$dir/b.sock" ] && break; sleep 0.1; done
echo "logs in $dir"
vm() { # NAME SOCKET ROLE PEER
	tools/testing/vm/run.sh "${kdir[@]}" --vhost-user-socket "$2" --memory 1G --cpus 1 \
		--timeout "$timeout_s" --log "$dir/$1.log" -- \
		"python3 tools/testing/vudev/demo_guest.py $3 $4" >"$dir/$1.out" 2>&1
}
t0=$(date +%s)
vm a "$dir/a.sock" server 4 & a=$!
vm b "$dir/b.sock" client 3 & b=$!
rc=0
wait $a || rc=$?
wait $b || rc=$((rc ? rc : $?))
echo "both guests done in $(( $(date +%s) - t0 )) s, status $rc"
grep -h "^demo:" "$dir/a.log" "$dir/b.log" | sed "s/^/  /" || true
grep -E 'hostile|dropped|stats' "$dir/vudev.log" | tail -8 | sed 's/^/  vudev: /' || true
exit $rc
