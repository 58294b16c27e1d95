#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Smoke test of the guest's virtio-vsock device (QEMU vhost-user-vsock-pci + vhost-device-vsock
# on the host, run.sh --vhost-user-vsock) with the upstream C driver, vmw_vsock_virtio_transport.
#
# Usage: tools/testing/virtio/smoke.sh [--bytes N] [--guest-write N] [--cid CID] [--timeout SECONDS]
#                                      [--out DIR]
#
#   --bytes N          bytes each way in each exchange (default 1 MiB: TCG is slow)
#   --guest-write N    bytes per send() in the guest (default 16384).  Above about 32 KiB per
#                      packet the 6.12.117 guest driver puts the payload in several descriptors
#                      (nonlinear skbs, Linux commit 6693731487a8, backported to 6.12.y), which
#                      vhost-device-vsock 0.3.0 (virtio-vsock 0.10) rejects ("error reading TX
#                      packet: DescriptorLengthTooSmall" at RUST_LOG=debug): it drops the packet
#                      without returning the descriptor and the connection stalls.  65536
#                      reproduces that
#   --cid CID          the guest's CID (default 3)
#   --timeout SECONDS  limit for the VM run (default 300); the exchanges get what is left after
#                      the boot
#   --out DIR          logs (default target/virtio-smoke): console.log (guest console),
#                      console.vhost-device-vsock.log (the daemon), host.log (host side)
#
# In the guest (tools/testing/guest/virtio_smoke.sh): modprobe vmw_vsock_virtio_transport, the
# local CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID) must be CID; then at once
#   host to guest: a guest listener on AF_VSOCK port 5000; the host connects to DIR/vm.vsock and
#                  sends "CONNECT 5000\n" (retrying until the guest listens), then N bytes each
#                  way;
#   guest to host: the host listens on DIR/vm.vsock_5001; the guest connects to CID 2 port 5001,
#                  then N bytes each way;
# each side checks what it receives (SHA-256 of a seeded payload; tools/testing/virtio/
# vsock_smoke.py).  Prints PASS/FAIL lines and exits non-zero on any failure.
set -euo pipefail
# shellcheck source=tools/testing/lib.sh
. "$(dirname "$0")/../lib.sh"

usage() {
	sed -n '3,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

bytes=$((1 << 20))
guest_write=16384
cid=3
timeout_s=300
out=$RVSOCK_TOP/target/virtio-smoke
while [ $# -gt 0 ]; do
	case "$1" in
	--bytes) bytes=$2; shift 2 ;;
	--guest-write) guest_write=$2; shift 2 ;;
	--cid) cid=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) usage ;;
	esac
done
h2g_port=5000
g2h_port=5001
# The exchanges' own limit, inside the VM's, so that a stuck exchange fails in the guest with its
# own message: the boot, the module load and Python's start come first (about 50 s under TCG).
xfer_limit=$((timeout_s - 100))
[ "$xfer_limit" -ge 30 ] || die "--timeout $timeout_s: too short (at least 130 s)"

cd "$RVSOCK_TOP"
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -x "$VHOST_DEVICE_VSOCK" ] || die "$VHOST_DEVICE_VSOCK missing: run tools/testing/setup.sh"
# A short directory for the Unix sockets (sun_path is 108 bytes).
sockdir=$(mktemp -d /tmp/rvsock-vsock.XXXXXX)
host_pid=
# (Called from the EXIT trap.)
# shellcheck disable=SC2317
cleanup() {
	if [ -n "$host_pid" ]; then
		kill -TERM "$host_pid" 2>/dev/null || true
		wait "$host_pid" 2>/dev/null || true
	fi
	rm -rf "$sockdir"
}
trap cleanup EXIT

start=$SECONDS
log "virtio-vsock smoke test: guest CID $cid, $bytes bytes each way ($guest_write-byte" \
	"writes in the guest), VM limit $timeout_s s (logs: $out)"
# The host side: starts listening for guest to host now, and keeps trying host to guest until
# the guest listens.  It ends on its own deadline.
timeout --kill-after=5 $((timeout_s + 10)) python3 tools/testing/virtio/vsock_smoke.py host \
	--dir "$sockdir" --h2g-port "$h2g_port" --g2h-port "$g2h_port" --bytes "$bytes" \
	--timeout "$timeout_s" >"$out/host.log" 2>&1 &
host_pid=$!

guest_cmd="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
tools/testing/guest/virtio_smoke.sh $cid $h2g_port $g2h_port $bytes $xfer_limit $guest_write"
vm_rc=0
"$RVSOCK_TOP/tools/testing/vm/run.sh" --timeout "$timeout_s" --log "$out/console.log" --show \
	--vhost-user-vsock "$cid:$sockdir" -- "$guest_cmd" | sed -u -n -e 's/^smoke| guest: /guest: /p' \
	-e 's/^smoke| /guest: /p' ||
	vm_rc=$?
vm_s=$((SECONDS - start))

# The host side has finished by now unless something hangs: give it 30 s more at most.
host_rc=0
for _ in $(seq 300); do
	kill -0 "$host_pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$host_pid" 2>/dev/null; then
	kill -TERM "$host_pid" 2>/dev/null || true
	echo "host: FAIL still running 30 s after the VM ended (killed)" >>"$out/host.log"
fi
wait "$host_pid" || host_rc=$?
host_pid=
cat "$out/host.log"

fails=0
if [ "$vm_rc" = 0 ]; then
	echo "PASS guest side (VM run $vm_s s)"
else
	echo "FAIL guest side: VM run exit $vm_rc after $vm_s s; guest console log: $out/console.log"
	fails=1
fi
if [ "$host_rc" = 0 ]; then
	echo "PASS host side"
else
	echo "FAIL host side (exit $host_rc); log: $out/host.log;" \
		"daemon log: $out/console.vhost-device-vsock.log"
	fails=1
fi
if [ "$fails" = 0 ]; then
	log "virtio-vsock smoke test: PASS in $((SECONDS - start)) s"
else
	log "virtio-vsock smoke test: FAIL after $((SECONDS - start)) s"
fi
exit "$fails"
