#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Boots the cached test kernel under virtme-ng and runs one shell command in the guest.
#
# Usage: tools/testing/vm/run.sh [options] [--] COMMAND...
#
#   --timeout SECONDS  host-side wall-clock limit for the whole VM run (default: $RVSOCK_VM_TIMEOUT
#                      or 900); on expiry the whole process group (vng, QEMU) is killed
#   --log FILE         where the guest console log goes (default: target/vm/console.log)
#   --rwdir DIR        a host directory the guest may write (created; repeatable)
#   --kdir DIR         kernel build directory (default: the cached test kernel's build/)
#   --append ARG       extra kernel command-line argument (repeatable)
#   --memory SIZE      guest memory (default: $RVSOCK_VM_MEMORY or 2G); --cpus N (default 2)
#   --qemu-opts OPTS   extra QEMU options, split on blanks (repeatable), e.g. the benchmarks'
#                      "-icount shift=0,sleep=off" (TCG only: with it, KVM is not used)
#   --show             also copy the console log to stdout while the VM runs
#   --vhost-user-vsock CID:DIR
#                      give the guest a virtio-vsock device with guest CID CID: starts
#                      vhost-device-vsock (setup.sh installs it into the cache) with its vhost-user
#                      socket DIR/ctl.sock and its host-side Unix socket DIR/vm.vsock (host to guest:
#                      connect, write "CONNECT <port>\n", read "OK <n>\n"; guest to host CID 2 port
#                      P: it connects to DIR/vm.vsock_P, which a host program listens on).  The
#                      guest memory is then a shared memfd (the daemon maps it).  The daemon is
#                      stopped when the VM ends; its log is the console log's name with
#                      .vhost-device-vsock.log in place of .log.  DIR is created; a short path
#                      without blanks or commas (Unix socket paths are limited to 107 bytes)
#   --vhost-user-socket SOCKET
#                      the same device, from a vhost-user-vsock daemon that the caller started
#                      and stops (one daemon serves sibling guests: its --vm ...,socket=SOCKET)
#
# COMMAND runs as root in the guest through `sh -c`, with the repository root as its working
# directory and the host's file system read-only.  The exit status is COMMAND's; 124 means the
# host-side timeout fired, 255 that the guest died (panic, script channel lost).  On a timeout,
# 255 or a kernel crash in the log, the log's tail and its path are printed on stderr.
#
# KVM is used when a quick probe shows that it really runs a guest (RVSOCK_KVM=0 or 1 forces the
# choice); otherwise the guest runs under TCG.
#
# virtme-ng builds the VM (QEMU command line, 9p exports of / and the --rwdir directories, the
# build tree's modules, the script I/O ports); the guest's PID 1 is tools/testing/vm/init.sh
# instead of virtme-ng-init, which spends ~80 s of a TCG boot of the debug kernel in udev and
# systemd-tmpfiles.  RVSOCK_VM_INIT=virtme runs plain vng with its own init instead.
set -euo pipefail
# shellcheck source=tools/testing/lib.sh
. "$(dirname "$0")/../lib.sh"

usage() {
	sed -n '3,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

timeout_s=${RVSOCK_VM_TIMEOUT:-900}
logf=$RVSOCK_TOP/target/vm/console.log
kdir=
show=0
memory=${RVSOCK_VM_MEMORY:-2G}
cpus=2
rwdirs=()
appends=()
qemu_opts=()
vuv=
vus=
while [ $# -gt 0 ]; do
	case "$1" in
	--timeout) timeout_s=$2; shift 2 ;;
	--log) logf=$2; shift 2 ;;
	--rwdir) rwdirs+=("$2"); shift 2 ;;
	--kdir) kdir=$2; shift 2 ;;
	--append) appends+=("$2"); shift 2 ;;
	--memory) memory=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--qemu-opts) qemu_opts+=("$2"); shift 2 ;;
	--show) show=1; shift ;;
	--vhost-user-vsock) vuv=$2; shift 2 ;;
	--vhost-user-socket) vus=$2; shift 2 ;;
	-h | --help) usage ;;
	--) shift; break ;;
	-*) usage ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || usage
guest_cmd="$*"

if [ -z "$kdir" ]; then
	kdir=$(kernel_dir)/build
	[ -e "$(kernel_dir)/.complete" ] || die "no test kernel in $(kernel_dir): run make setup"
fi
[ -f "$kdir/arch/x86/boot/bzImage" ] || die "$kdir/arch/x86/boot/bzImage missing"

# Does KVM really run a guest?  /dev/kvm may exist and still fail: on some machines the firmware
# and real mode run, but the kernel stalls on its first instructions that KVM must emulate
# ("emulation failure", seen with `lock cmpxchg16b`).  So the probe boots the test kernel itself
# with no root file system: with `panic=-1` it reaches "Kernel panic" and QEMU exits.  Under a
# working KVM that takes a second or two; a broken one makes no progress, and after 15 s the
# guests run under TCG.  The answer is kept per host boot and kernel image in /tmp.
kvm_works() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	local image=$kdir/arch/x86/boot/bzImage memo out
	memo=/tmp/rvsock-kvm-probe.$(cat /proc/sys/kernel/random/boot_id 2>/dev/null).$(stat -c %Y-%s "$image")
	if [ -f "$memo" ]; then
		[ "$(cat "$memo")" = yes ]
		return
	fi
	out=$(timeout 15 qemu-system-x86_64 -accel kvm -cpu host -nodefaults -display none \
		-no-reboot -m 256 -serial stdio -kernel "$image" \
		-append "console=ttyS0 panic=-1 loglevel=1" 2>/dev/null </dev/null || true)
	if [[ $out == *"Kernel panic"* ]]; then
		echo yes >"$memo"
		return 0
	fi
	echo no >"$memo"
	return 1
}

# --vhost-user-vsock CID:DIR
vuv_cid=
vuv_dir=
if [ -n "$vuv" ]; then
	[[ $vuv =~ ^([0-9]+):(.+)$ ]] || die "--vhost-user-vsock wants CID:DIR, not '$vuv'"
	vuv_cid=${BASH_REMATCH[1]}
	vuv_dir=${BASH_REMATCH[2]}
	if [ "$vuv_cid" -le 2 ] || [ "$vuv_cid" -ge 4294967295 ]; then
		die "--vhost-user-vsock: guest CID $vuv_cid out of range (3 to 4294967294)"
	fi
	[ -x "$VHOST_DEVICE_VSOCK" ] || die "$VHOST_DEVICE_VSOCK missing: run tools/testing/setup.sh"
	mkdir -p "$vuv_dir"
	vuv_dir=$(cd "$vuv_dir" && pwd)
	# vng splits --qemu-opts on blanks, and QEMU options separate their fields with commas.
	[[ $vuv_dir =~ [[:space:],] ]] && die "--vhost-user-vsock: DIR '$vuv_dir' has blanks or commas"
	[ ${#vuv_dir} -le 90 ] || die "--vhost-user-vsock: DIR '$vuv_dir' too long for Unix sockets"
	vus=$vuv_dir/ctl.sock
elif [ -n "$vus" ]; then
	[ -S "$vus" ] || die "--vhost-user-socket: $vus is not a socket"
	[[ $vus =~ [[:space:],] ]] && die "--vhost-user-socket: '$vus' has blanks or commas"
fi
if [ -n "$vus" ]; then
	# The memfd backend must be exactly the size of -m, which vng passes --memory to unchanged:
	# QEMU reads a plain number there as MiB, but as bytes in size=.
	vuv_mem=$memory
	[[ $vuv_mem =~ ^[0-9]+$ ]] && vuv_mem=${vuv_mem}M
	qemu_opts+=("-object memory-backend-memfd,id=mem,size=$vuv_mem,share=on"
		"-numa node,memdev=mem -chardev socket,id=c0,path=$vus"
		"-device vhost-user-vsock-pci,chardev=c0")
fi

# -icount (in --qemu-opts) needs TCG.
icount=0
[[ " ${qemu_opts[*]} " == *" -icount "* ]] && icount=1
case "${RVSOCK_KVM:-auto}" in
1) [ $icount = 0 ] || die "--qemu-opts -icount needs TCG, but RVSOCK_KVM=1"
   use_kvm=1 ;;
0) use_kvm=0 ;;
*) if [ $icount = 0 ] && kvm_works; then use_kvm=1; else use_kvm=0; fi ;;
esac

# --force-9p: the only virtiofsd on these machines is QEMU's C daemon, which virtme-ng does not
# drive; 9p also keeps the PC machine type (no microvm), whose virtio-pci devices the kernel has.
vng_args=(--run "$kdir" --force-9p --disable-microvm --cpus "$cpus" --memory "$memory" --verbose)
[ "$use_kvm" = 1 ] || vng_args+=(--disable-kvm)
for d in "${rwdirs[@]}"; do
	mkdir -p "$d"
	vng_args+=("--rwdir=$(cd "$d" && pwd)")
done
# The test kernel's KUnit is built with KUNIT_DEFAULT_ENABLED=n (allnoconfig): turn it on so that
# the suites of a test module run when it is loaded.
appends=(kunit.enable=1 "${appends[@]}")
for a in "${appends[@]}"; do
	vng_args+=("--append=$a")
done
[ ${#qemu_opts[@]} -eq 0 ] || vng_args+=("--qemu-opts=${qemu_opts[*]}")

mkdir -p "$(dirname "$logf")"
logf=$(cd "$(dirname "$logf")" && pwd)/$(basename "$logf")
{
	echo "# $(date -Is) kvm=$use_kvm timeout=${timeout_s}s kdir=$kdir cpus=$cpus memory=$memory" \
		"qemu-opts=${qemu_opts[*]:-none}"
	echo "# guest command: $guest_cmd"
} >"$logf"

# Crash signatures in the console log that mean the guest kernel went down.
CRASH_RE='Kernel panic - not syncing'

# qemu_argv: the QEMU command line virtme-ng would run, with our init (vm/init.sh) in place of
# virtme-ng-init and the exit-status port going to $retf.  One NUL-terminated argument per line.
qemu_argv() {
	vng "${vng_args[@]}" --dry-run --exec "$guest_cmd" </dev/null | python3 -c '
import shlex, sys
init, retf = sys.argv[1:3]
lines = [l for l in sys.stdin.read().splitlines() if "qemu-system" in l]
if not lines:
    sys.exit("vng --dry-run printed no QEMU command")
argv = shlex.split(lines[-1])
i = argv.index("-append")
kargs = shlex.split(argv[i + 1])
inits = [n for n, a in enumerate(kargs) if a.startswith("init=")]
if not inits or not kargs[inits[-1]].endswith("virtme-ng-init"):
    sys.exit("unexpected init in the kernel command line: %r" % kargs)
kargs[inits[-1]] = "init=" + init
# The root (the host file system, read-only) does not change under the guest: let 9p cache it.
kargs = [a + ",cache=loose" if a.startswith("rootflags=") else a for a in kargs]
argv[i + 1] = " ".join(kargs)
argv = [("file,id=ret,path=" + retf) if a.startswith("file,id=ret,") else a for a in argv]
sys.stdout.write("".join(a + "\0" for a in argv))
' "$RVSOCK_TOP/tools/testing/vm/init.sh" "$retf"
}

cd "$RVSOCK_TOP"
start=$SECONDS
rc=0
retf=
vuv_pid=
# (Called from the EXIT trap.)
# shellcheck disable=SC2317
cleanup() {
	[ -z "$retf" ] || rm -f "$retf"
	[ -z "$vuv_pid" ] || stop_vhost_user_vsock
}
trap cleanup EXIT

# stop_vhost_user_vsock: SIGTERM to the daemon, SIGKILL after 5 s.
# shellcheck disable=SC2317
stop_vhost_user_vsock() {
	kill -TERM "$vuv_pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$vuv_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$vuv_pid" 2>/dev/null || true
	wait "$vuv_pid" 2>/dev/null || true
	echo "# vhost-device-vsock stopped" >>"$logf"
	vuv_pid=
}

# start_vhost_user_vsock: starts the daemon and waits (10 s at most) for its vhost-user socket.
# timeout(1) bounds it too, should this script be killed before its EXIT trap runs.
start_vhost_user_vsock() {
	local vuv_log=${logf%.log}.vhost-device-vsock.log
	[ "$vuv_log" != "$logf" ] || vuv_log=$logf.vhost-device-vsock.log
	rm -f "$vuv_dir/ctl.sock" "$vuv_dir/vm.vsock"
	echo "# vhost-device-vsock --guest-cid=$vuv_cid --socket=$vuv_dir/ctl.sock" \
		"--uds-path=$vuv_dir/vm.vsock (log: $vuv_log)" >>"$logf"
	timeout --kill-after=5 $((timeout_s + 60)) "$VHOST_DEVICE_VSOCK" --guest-cid="$vuv_cid" \
		--socket="$vuv_dir/ctl.sock" --uds-path="$vuv_dir/vm.vsock" </dev/null >"$vuv_log" 2>&1 &
	vuv_pid=$!
	for _ in $(seq 100); do
		[ -S "$vuv_dir/ctl.sock" ] && return 0
		kill -0 "$vuv_pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$vuv_log" >&2
	die "vhost-device-vsock did not create $vuv_dir/ctl.sock within 10 s; log: $vuv_log"
}
# RVSOCK_VM_INIT=virtme boots with virtme-ng's own init (udev and all: about 80 s slower here).
if [ "${RVSOCK_VM_INIT:-rvsock}" = virtme ]; then
	cmd=(vng "${vng_args[@]}" --exec "$guest_cmd")
else
	retf=$(mktemp /tmp/rvsock-vm-ret.XXXXXX)
	mapfile -d '' cmd < <(qemu_argv)
	[ ${#cmd[@]} -gt 0 ] || die "could not get the QEMU command line from vng --dry-run"
fi
echo "# ${cmd[*]}" >>"$logf"
[ -z "$vuv_dir" ] || start_vhost_user_vsock
# timeout(1) puts itself and the VM in a new process group and signals the whole group;
# --kill-after follows up with SIGKILL.  A SIGTERM, SIGINT or SIGHUP to this script is passed on
# to it (it forwards them to the VM).  Output goes through a pipe: QEMU's file chardevs on
# /proc/self/fd/N would truncate and overwrite a regular file.  stdin: /dev/null, never a
# terminal we share (QEMU sets O_NONBLOCK on it).
if [ "$show" = 1 ]; then
	exec 3> >(tee -a "$logf")
else
	exec 3> >(cat >>"$logf")
fi
log_pid=$!
timeout --kill-after=15 "$timeout_s" "${cmd[@]}" </dev/null >&3 2>&3 &
vm_pid=$!
exec 3>&-
trap 'kill -TERM "$vm_pid" 2>/dev/null' TERM INT HUP
# wait returns early when a trapped signal arrives: wait again until the VM is gone.
while :; do
	rc=0
	wait "$vm_pid" || rc=$?
	kill -0 "$vm_pid" 2>/dev/null || break
done
trap - TERM INT HUP
wait "$log_pid" 2>/dev/null || true
# With our init, the script's exit status is in $retf; no status means the guest died.
if [ -n "${retf:-}" ] && [ "$rc" != 124 ] && [ "$rc" != 137 ]; then
	status=$(cat "$retf")
	if [[ $status =~ ^[0-9]+$ ]]; then rc=$status; else rc=255; fi
fi
elapsed=$((SECONDS - start))
echo "# VM exit status $rc after ${elapsed} s" >>"$logf"

problem=
case "$rc" in
124 | 137) problem="timed out after ${timeout_s} s (killed)" ;;
255) problem="guest died or the script channel failed (exit 255)" ;;
esac
[ -z "$problem" ] && grep -Eq "$CRASH_RE" "$logf" && problem="guest kernel crashed (exit $rc)"
if [ -n "$problem" ]; then
	{
		echo "---- guest console, last 60 lines ----"
		tail -n 60 "$logf"
		echo "---- end of guest console ----"
		echo "VM run $problem; full guest console log: $logf"
	} >&2
	[ "$rc" = 0 ] && rc=255
fi
exit "$rc"
