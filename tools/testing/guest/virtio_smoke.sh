#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The guest half of the virtio-vsock smoke test (tools/testing/virtio/smoke.sh): runs as root in
# a test VM booted with run.sh --vhost-user-vsock CID:DIR, with the repository root as its working
# directory.  Loads the upstream C stack's virtio transport, checks the local CID, then runs the
# guest ends of both exchanges of tools/testing/virtio/vsock_smoke.py at once.  Every line meant
# for the host starts with "smoke| ".
#
# Usage: tools/testing/guest/virtio_smoke.sh CID H2G_PORT G2H_PORT BYTES TIMEOUT WRITE_SIZE
#
# WRITE_SIZE: bytes per send() in the guest (see smoke.sh --guest-write).
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=tools/testing/guest/lib.sh
. tools/testing/guest/lib.sh

[ $# = 6 ] || {
	echo "usage: $0 CID H2G_PORT G2H_PORT BYTES TIMEOUT WRITE_SIZE" >&2
	exit 2
}
cid=$1 h2g_port=$2 g2h_port=$3 bytes=$4 limit=$5 write_size=$6
helper=tools/testing/virtio/vsock_smoke.py

say() { printf 'smoke| %s\n' "$*"; }
fail=0

start=$(now)
if bounded 120 modprobe vmw_vsock_virtio_transport; then
	say "PASS modprobe vmw_vsock_virtio_transport ($(seconds_since "$start") s):" \
		"$(loaded_c_stack)"
else
	say "FAIL modprobe vmw_vsock_virtio_transport"
	exit 1
fi
dmesg | grep -E 'PF_VSOCK|virtio_vsock|vmw_vsock' | sed -e 's/^/smoke|   kernel: /' || true

bounded 60 "$PY" "$helper" guest-cid --expect "$cid" 2>&1 | sed -e 's/^/smoke| /' || fail=1

work=$(mktemp -d)
bounded $((limit + 15)) "$PY" "$helper" guest-server --port "$h2g_port" --bytes "$bytes" \
	--timeout "$limit" --write-size "$write_size" >"$work/server.out" 2>&1 &
server=$!
client_rc=0
bounded $((limit + 15)) "$PY" "$helper" guest-client --port "$g2h_port" --bytes "$bytes" \
	--timeout "$limit" --write-size "$write_size" >"$work/client.out" 2>&1 || client_rc=$?
server_rc=0
wait_or_kill "$server" $((limit + 20)) || server_rc=$?
sed -e 's/^/smoke| /' "$work/client.out" "$work/server.out"
[ "$client_rc" = 0 ] || { say "FAIL guest-to-host client exited with $client_rc"; fail=1; }
[ "$server_rc" = 0 ] || { say "FAIL host-to-guest server exited with $server_rc"; fail=1; }

# Unload (the driver's remove path with the device present); closed sockets may hold the modules
# for a few seconds.  Not after a failed exchange: its stuck sockets hold them.
deadline=$((SECONDS + 20))
while [ "$fail" = 0 ]; do
	bounded 30 modprobe -r vmw_vsock_virtio_transport vsock 2>/dev/null || true
	left=$(loaded_c_stack)
	[ -z "$left" ] && { say "PASS unloaded the C stack"; break; }
	if [ $SECONDS -ge $deadline ]; then
		say "FAIL still loaded after 20 s: $left"
		fail=1
		break
	fi
	snooze 0.5
done
if [ "$fail" = 0 ]; then
	say "PASS guest side"
else
	say "FAIL guest side"
fi
exit "$fail"
