#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make demo`: sets up, builds the modules (and the Rust samples, if the workspace has them), boots
# the test kernel, loads rvsock.ko + rvsock_loopback.ko and has two ncat processes exchange a line
# over VMADDR_CID_LOCAL (CID 1):
#
#   ncat --vsock -l 1234        (server)
#   ncat --vsock 1 1234         (client)
#
# Then, with the guest's virtio-vsock device (vhost-device-vsock on the host, run.sh
# --vhost-user-vsock), it loads rvsock_virtio.ko and the host and the guest reach each other's
# listeners through it (the host's half: tools/testing/virtio/demo_host.py).
#
# The guest's side is tools/testing/guest/demo.sh.  Logs: target/demo/.
set -euo pipefail
# shellcheck source=tools/testing/lib.sh
. "$(dirname "$0")/lib.sh"

cd "$RVSOCK_TOP"
demo_dir=$RVSOCK_TOP/target/demo
mkdir -p "$demo_dir"
start=$SECONDS

"$RVSOCK_TOP/tools/testing/setup.sh"
run_step "build the modules (make)" "$demo_dir/make.log" make
if [ -f Cargo.toml ] && cargo pkgid -q rvsock-samples >/dev/null 2>&1; then
	run_step "build the Rust samples" "$demo_dir/samples.log" \
		cargo build --release -p rvsock-samples
fi

log "booting the test kernel (console log: $demo_dir/console.log)"
guest_cmd="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
tools/testing/guest/demo.sh"
rc=0
# A short directory for the device's Unix sockets (sun_path is 108 bytes).
vdir=$(mktemp -d /tmp/rvsock-demo.XXXXXX)
host_pid=
# (Called from the EXIT trap.)
# shellcheck disable=SC2317
cleanup() {
	[ -z "$host_pid" ] || kill "$host_pid" 2>/dev/null || true
	rm -rf "$vdir"
}
trap cleanup EXIT
python3 tools/testing/virtio/demo_host.py "$vdir" --timeout 280 &
host_pid=$!
# The guest prefixes what the demo says with "demo| "; everything else is the guest console.
"$RVSOCK_TOP/tools/testing/vm/run.sh" --timeout 300 --log "$demo_dir/console.log" --show \
	--vhost-user-vsock "3:$vdir" -- "$guest_cmd" | sed -u -n 's/^demo| //p' || rc=$?
if ! wait "$host_pid"; then
	[ "$rc" != 0 ] || rc=1
fi
host_pid=
[ "$rc" = 0 ] || die "the demo failed (exit $rc); guest console log: $demo_dir/console.log"
log "demo done in $((SECONDS - start)) s"
