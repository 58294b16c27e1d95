#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The guest half of `make demo` (tools/testing/demo.sh): runs as root in the test VM with the
# repository root as its working directory.  Every line meant for the user starts with "demo| ".
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=tools/testing/guest/lib.sh
. tools/testing/guest/lib.sh

say() { printf 'demo| %s\n' "$*"; }
fail() {
	say "FAILED: $*"
	exit 1
}

ip link set lo up
# No module autoloading: socket(AF_VSOCK) must not pull in the C stack (alias net-pf-40).
echo >/proc/sys/kernel/modprobe
if grep -Eq '^(vsock|vsock_loopback|vmw_vsock_[a-z0-9_]+) ' /proc/modules; then
	fail "the C vsock stack is loaded; rvsock cannot register AF_VSOCK next to it"
fi

say "kernel $(uname -r); loading rvsock.ko and rvsock_loopback.ko"
bounded 60 insmod rvsock.ko || fail "insmod rvsock.ko failed"
bounded 60 insmod rvsock_loopback.ko || fail "insmod rvsock_loopback.ko failed"
dmesg | grep -E '\] rvsock[a-z_]*: ' | sed -e 's/^/demo|   kernel: /' || true

probe=$(bounded 10 /usr/bin/python3 -c '
import errno, socket
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)) + ": " + e.strerror)
' 2>&1 || true)
if [ "$probe" != ok ]; then
	say "socket(AF_VSOCK, SOCK_STREAM) fails with $probe."
	say "AF_VSOCK is not served yet by this build of rvsock: nothing to exchange."
	say "rvsock's kernel log line:"
	dmesg | grep -E '\] rvsock[a-z_]*: ' | tail -n 3 | sed -e 's/^/demo|   /' || true
else
	work=$(mktemp -d)
	say "server: ncat --vsock -l 1234        (listening on VMADDR_CID_ANY, port 1234)"
	echo "hello from the server" | timeout 30 ncat --vsock -l 1234 >"$work/server.recv" \
		2>"$work/server.err" &
	server=$!
	snooze 0.5
	if command -v ss >/dev/null; then
		say "ss --vsock -l                      (sock_diag, answered by rvsock.ko)"
		ss --vsock -l 2>&1 | sed -e 's/^/demo|   /'
	fi
	say "client: ncat --vsock 1 1234         (connecting to VMADDR_CID_LOCAL, port 1234)"
	crc=0
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		crc=0
		echo "hello from the client" | bounded 30 ncat --vsock 1 1234 >"$work/client.recv" \
			2>"$work/client.err" || crc=$?
		[ "$crc" = 0 ] && break
		kill -0 "$server" 2>/dev/null || break
		snooze 0.5
	done
	src=0
	wait_or_kill "$server" 40 || src=$?
	say "server received: $(cat "$work/server.recv")"
	say "client received: $(cat "$work/client.recv")"
	if [ "$crc" != 0 ] || [ "$src" != 0 ] ||
		[ "$(cat "$work/server.recv")" != "hello from the client" ] ||
		[ "$(cat "$work/client.recv")" != "hello from the server" ]; then
		say "ncat exit status: server $src ($(tail -n 1 "$work/server.err")), client $crc ($(tail -n 1 "$work/client.err"))"
		demo_failed=1
	fi
	# The same exchange with rvsock's own Rust samples, stream and seqpacket.
	b=target/release
	if [ -x $b/vsock-echo-server ]; then
		for mode in "" --seqpacket; do
			say "server: $b/vsock-echo-server --once ${mode:-(stream)}"
			$b/vsock-echo-server --once --port 1250 $mode >"$work/echo.out" 2>&1 &
			server=$!
			snooze 0.5
			crc=0
			bounded 30 $b/vsock-echo-client --port 1250 $mode "hello over vsock, from Rust" \
				>"$work/echo.client" 2>&1 || crc=$?
			wait_or_kill "$server" 30 || true
			sed -e 's/^/demo|   server: /' "$work/echo.out"
			sed -e 's/^/demo|   client: /' "$work/echo.client"
			[ "$crc" = 0 ] || demo_failed=1
		done
	else
		say "(the Rust samples are not built: $b/vsock-echo-server missing)"
	fi
fi

# The guest's virtio-vsock device, served by rvsock_virtio.ko: the host (its Unix sockets)
# reaches a guest listener, and the guest reaches a host listener at CID 2.
if [ -z "${demo_failed:-}" ] && [ -d /sys/bus/virtio/drivers ] &&
	grep -qx 0x0013 /sys/bus/virtio/devices/*/device 2>/dev/null; then
	say "loading rvsock_virtio.ko (the guest's virtio-vsock device)"
	bounded 60 insmod rvsock_virtio.ko || fail "insmod rvsock_virtio.ko failed"
	dmesg | grep -E '\] rvsock_virtio: ' | sed -e 's/^/demo|   kernel: /' || true
	work=$(mktemp -d)
	say "guest: ncat --vsock -l 1235         (the host connects through the device)"
	echo "hello from the guest's listener" | timeout 120 ncat --vsock -l 1235 \
		>"$work/l.recv" 2>&1 &
	server=$!
	wait_or_kill "$server" 130 || demo_failed=1
	say "guest listener received: $(cat "$work/l.recv")"
	say "guest: ncat --vsock 2 1236          (to the host's listener, CID 2)"
	echo "hello from the guest" | bounded 60 ncat --vsock 2 1236 >"$work/c.recv" 2>&1 ||
		demo_failed=1
	say "guest client received: $(cat "$work/c.recv")"
	rmmod_retry rvsock_virtio 12 >/dev/null || say "rmmod rvsock_virtio failed"
fi

rmmod_retry rvsock_loopback 12 >/dev/null || say "rmmod rvsock_loopback failed"
if rmmod_retry rvsock 12 >/dev/null; then
	say "modules unloaded"
else
	say "rmmod rvsock failed: $(grep '^rvsock ' /proc/modules || true)"
fi
[ -z "${demo_failed:-}" ] || fail "the line exchange over AF_VSOCK did not work"
