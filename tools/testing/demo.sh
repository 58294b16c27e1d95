#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make demo`: sets up, builds the modules (and the Rust samples, if the workspace has them), boots
# the test kernel, loads rvsock.ko + rvsock_loopback.ko and has two ncat processes exchange a line
# over VMADDR_CID_LOCAL (CID 1):
#
#   ncat --vsock -l 1234        (server)
#   ncat --vsock 1 1234         (client)
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
# The guest prefixes what the demo says with "demo| "; everything else is the guest console.
"$RVSOCK_TOP/tools/testing/vm/run.sh" --timeout 300 --log "$demo_dir/console.log" --show \
	-- "$guest_cmd" | sed -u -n 's/^demo| //p' || rc=$?
[ "$rc" = 0 ] || die "the demo failed (exit $rc); guest console log: $demo_dir/console.log"
log "demo done in $((SECONDS - start)) s"
