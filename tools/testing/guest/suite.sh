#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# rvsock's in-guest test suite: run as root inside the test VM, with the repository root as the
# working directory (tools/testing/check.py starts it through tools/testing/vm/run.sh).
#
# Usage: tools/testing/guest/suite.sh OUT VSOCK_TOOLS_DIR
#
#   OUT              writable directory for the results: results.txt (one RESULT line per check,
#                    see lib.sh), logs/<suite>/*.log, dmesg.txt, kunit.dmesg, kmemleak.*.txt
#   VSOCK_TOOLS_DIR  the upstream vsock_test, vsock_uring_test, ... built for the test kernel
#
# Environment:
#   RVSOCK_GUEST_SUITES        suites to run (default: all, in this order:
#                              baseline modules kunit vsock_test clients conformance routing
#                              stress fuzz unload dmesg)
#   RVSOCK_STRESS              short (default, what make check runs) or full (make stress)
#   RVSOCK_FUZZ_PACKETS        packets the kernel fuzzer injects (default 100000; make fuzz-kernel
#                              asks for 1000000)
#   RVSOCK_VSOCK_TEST_REPEAT   extra full vsock_test runs on rvsock (default 5)
#   RVSOCK_VSOCK_TEST_TIMEOUT  seconds one vsock_test server+client run may take (default 120)
#
# Every step is bounded in time (lib.sh: bounded, wait_or_kill).  The script exits 0 unless its
# set-up fails: the checks' outcomes are in results.txt.
set -euo pipefail

[ $# = 2 ] || {
	sed -n '3,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}
OUT=$(cd "$1" && pwd)
VSOCK=$2
cd "$(dirname "$0")/../../.."
. tools/testing/guest/lib.sh

SUITES=${RVSOCK_GUEST_SUITES:-baseline modules kunit vsock_test clients conformance routing stress fuzz unload dmesg}
REPEAT=${RVSOCK_VSOCK_TEST_REPEAT:-5}
VT_TIMEOUT=${RVSOCK_VSOCK_TEST_TIMEOUT:-120}
UNLOAD_LIMIT=12
KMEMLEAK=/sys/kernel/debug/kmemleak
CTL_PORT=15000 # TCP control port of the upstream tools; each run takes the next one

wanted() { [[ " $SUITES " == *" $1 "* ]]; }
next_ctl_port() { CTL_PORT=$((CTL_PORT + 1)); }
# Does this run load our modules at all (the "rvsock" part of the kernel log)?
rvsock_part() {
	wanted modules || wanted kunit || wanted vsock_test || wanted clients || wanted conformance ||
		wanted routing || wanted stress || wanted fuzz || wanted unload
}

# ---- a. set-up ------------------------------------------------------------------------------
setup() {
	: >"$RESULTS"
	mkdir -p "$OUT/logs"
	ip link set lo up
	mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
	# No module autoloading: a socket(AF_VSOCK) that rvsock does not serve would otherwise load
	# the C stack (alias net-pf-40) next to ours.  Explicit modprobe still works.
	echo >/proc/sys/kernel/modprobe
	if [ -e "$KMEMLEAK" ]; then
		kmemleak_scan
		echo clear >"$KMEMLEAK"
	fi
	echo "[guest] kernel $(uname -r), $(nproc) CPUs, modules: $(our_modules | tr '\n' ' ')"
}

kmemleak_write() { echo "$1" >"$KMEMLEAK"; }
kmemleak_scan() {
	[ -e "$KMEMLEAK" ] || return 0
	bounded 120 kmemleak_write scan || echo "[guest] kmemleak scan failed or timed out"
}

# kmemleak_collect PART [SCANS]: scans (twice by default, a few seconds apart: an object must be
# a few seconds old to be reported), saves what kmemleak reports to kmemleak.PART.txt, clears.
kmemleak_collect() {
	[ -e "$KMEMLEAK" ] || return 0
	kmemleak_scan
	if [ "${2:-2}" = 2 ]; then
		snooze 3
		kmemleak_scan
	fi
	bounded 30 cat "$KMEMLEAK" >"$OUT/kmemleak.$1.txt" || true
	echo clear >"$KMEMLEAK"
}

# ---- b. baseline: the C stack and the harness ------------------------------------------------
unload_c_stack() {
	local deadline=$((SECONDS + UNLOAD_LIMIT)) left
	while :; do
		bounded 20 modprobe -r vsock_diag 2>&1 || true
		bounded 20 modprobe -r vsock_loopback 2>&1 || true
		bounded 20 modprobe -r vmw_vsock_virtio_transport_common vsock 2>&1 || true
		left=$(loaded_c_stack)
		[ -z "$left" ] && return 0
		if [ $SECONDS -ge $deadline ]; then
			echo "still loaded after $UNLOAD_LIMIT s: $left"
			return 1
		fi
		snooze 0.5
	done
}

suite_baseline() {
	begin_suite baseline
	kmsg "part baseline begin"
	local start ours
	start=$(now)
	ours=$(loaded_ours)
	if [ -n "$ours" ]; then
		report baseline "modprobe vsock_loopback" fail "$start" "" "our modules are loaded: $ours"
	elif run_check baseline "modprobe vsock_loopback" 60 modprobe vsock_loopback; then
		next_ctl_port
		bounded $((VT_TIMEOUT + 30)) "$PY" "$GUEST_DIR/vsock_pair.py" \
			--tool "$VSOCK/vsock_test" --control-port "$CTL_PORT" --timeout "$VT_TIMEOUT" \
			--out "$OUT" --suite baseline --log logs/baseline/vsock_test.log || true
		# The conformance probe's reference: the C stack (with vsock_diag for `ss --vsock`).
		if wanted conformance; then
			bounded 60 modprobe vsock_diag || true
			run_check baseline "conformance probe on the C stack" 600 conformance_probe c || true
		fi
	fi
	run_check baseline "unload the C stack" $((UNLOAD_LIMIT + 30)) unload_c_stack || true
	kmemleak_collect baseline 1
	kmsg "part baseline end"
}

# ---- c. modules: insmod and rmmod of each module ---------------------------------------------
suite_modules() {
	begin_suite modules
	local mods=() ko i start
	mapfile -t mods < <(our_modules)
	if [ ${#mods[@]} = 0 ]; then
		report modules "modules built" fail "$(now)" "" "no .ko at the repository root"
		return
	fi
	declare -A loaded=() logs=() secs=()
	# The KUnit modules run their suites when loaded: the kunit suite loads and unloads them.
	local m=()
	for ko in "${mods[@]}"; do
		[[ $ko == *kunit*.ko ]] || m+=("$ko")
	done
	mods=("${m[@]}")
	for ko in "${mods[@]}"; do
		start=$(now)
		logs[$ko]=$(check_log modules "$ko")
		if { echo "\$ insmod $ko"; insmod_ours "$ko"; } >"$OUT/${logs[$ko]}" 2>&1; then
			loaded[$ko]=1
		fi
		secs[$ko]=$(seconds_since "$start")
	done
	# One check per module: its insmod and its rmmod (in reverse order).  The reported time is
	# the two together.
	for ((i = ${#mods[@]} - 1; i >= 0; i--)); do
		ko=${mods[i]}
		start=$(now)
		if [ -z "${loaded[$ko]:-}" ]; then
			report modules "$ko" fail "$(earlier "$start" "${secs[$ko]}")" "${logs[$ko]}" \
				"insmod failed: $(tail -n 1 "$OUT/${logs[$ko]}")"
		elif { echo "\$ rmmod $(modname "$ko")"; rmmod_retry "$(modname "$ko")" "$UNLOAD_LIMIT"; } \
			>>"$OUT/${logs[$ko]}" 2>&1; then
			report modules "$ko" pass "$(earlier "$start" "${secs[$ko]}")" "${logs[$ko]}"
		else
			report modules "$ko" fail "$(earlier "$start" "${secs[$ko]}")" "${logs[$ko]}" \
				"rmmod failed: $(tail -n 1 "$OUT/${logs[$ko]}")"
		fi
	done
}

# earlier TIME SECONDS: the $EPOCHREALTIME value SECONDS (as printed by seconds_since) before TIME.
earlier() {
	local us=$((10#${1/./} - 10#${2/./} * 10000))
	printf '%d.%06d' $((us / 1000000)) $((us % 1000000))
}

# load_modules LOGFILE KO...: insmod each, stopping at the first failure.
load_modules() {
	local ko
	for ko in "$@"; do
		echo "\$ insmod $ko"
		insmod_ours "$ko" || return 1
	done
}

# unload_ours: rmmod every module of ours still loaded, most recently loaded first.
unload_ours() {
	local m rc=0
	# /proc/modules lists the most recently loaded module first.
	for m in $(loaded_ours); do
		echo "\$ rmmod $m"
		rmmod_retry "$m" "$UNLOAD_LIMIT" || rc=1
	done
	return "$rc"
}

# ---- d. kunit: the KUnit suites run when their module is loaded --------------------------------
suite_kunit() {
	begin_suite kunit
	local mods=() deps=() tests=() ko
	mapfile -t mods < <(our_modules)
	for ko in "${mods[@]}"; do
		[[ $ko == *kunit*.ko ]] && tests+=("$ko")
	done
	if [ ${#tests[@]} = 0 ]; then
		report kunit "KUnit modules" fail "$(now)" "" "no *kunit*.ko built"
		return
	fi
	# Loaded first: rvsock.ko and the transports, and any test module a KUnit module needs
	# (modinfo's depends), in load order.
	local needed
	needed=" $(modinfo -F depends "${tests[@]}" | tr ',\n' '  ') "
	for ko in "${mods[@]}"; do
		[[ $ko == *kunit*.ko ]] && continue
		if ! is_test_module "$ko" || [[ $needed == *" $(modname "$ko") "* ]]; then
			deps+=("$ko")
		fi
	done
	if ! run_check kunit "load ${deps[*]}" 120 load_modules "${deps[@]}"; then
		unload_ours >/dev/null 2>&1 || true
		return
	fi
	: >"$OUT/kunit.dmesg"
	for ko in "${tests[@]}"; do
		kmsg "kunit begin $ko"
		run_check kunit "insmod $ko" 300 insmod_ours "$ko" 290 || true
		kmsg "kunit end $ko"
		dmesg | sed -n "/rvsock-check: kunit begin $ko\$/,/rvsock-check: kunit end $ko\$/p" \
			>>"$OUT/kunit.dmesg"
		if [ -d /sys/kernel/debug/kunit ]; then
			mkdir -p "$OUT/kunit-debugfs"
			cp -r /sys/kernel/debug/kunit/. "$OUT/kunit-debugfs/" 2>/dev/null || true
		fi
	done
	run_check kunit "unload" $((UNLOAD_LIMIT * 4 + 30)) unload_ours || true
}

# ---- e. vsock_test and vsock_uring_test on rvsock ----------------------------------------------
ensure_rvsock_loaded() {
	local name="load rvsock.ko rvsock_loopback.ko for the socket suites"
	grep -q '^rvsock_loopback ' /proc/modules && return 0
	[ -n "${SOCKET_MODULES_FAILED:-}" ] && return 1
	if ! run_check modules "$name" 120 load_modules rvsock.ko rvsock_loopback.ko; then
		SOCKET_MODULES_FAILED=1
		return 1
	fi
}

suite_vsock_test() {
	begin_suite vsock_test
	local start
	start=$(now)
	if ! ensure_rvsock_loaded; then
		report vsock_test "vsock_test" fail "$start" "" "rvsock.ko + rvsock_loopback.ko not loaded"
		return
	fi
	# The first run reports each case; then REPEAT more runs, one check each.
	next_ctl_port
	bounded $(((VT_TIMEOUT + 30) * (REPEAT + 1))) "$PY" "$GUEST_DIR/vsock_pair.py" \
		--tool "$VSOCK/vsock_test" --control-port "$CTL_PORT" --timeout "$VT_TIMEOUT" \
		--out "$OUT" --suite vsock_test --log logs/vsock_test/vsock_test.log \
		--repeat "$REPEAT" || true
	CTL_PORT=$((CTL_PORT + REPEAT))
	# Newer upstream vsock_test finds the loaded transports by their symbols in /proc/kallsyms
	# (first " d loopback_transport", later any type): rvsock's loopback must be found so.
	run_check vsock_test "kallsyms: loopback_transport of rvsock_loopback" 30 \
		grep -qP ' d loopback_transport\t\[rvsock_loopback\]$' /proc/kallsyms || true
	local src
	src=$(find_uring_source)
	next_ctl_port
	bounded $((VT_TIMEOUT + 30)) "$PY" "$GUEST_DIR/vsock_pair.py" \
		--tool "$VSOCK/vsock_uring_test" --control-port "$CTL_PORT" --timeout "$VT_TIMEOUT" \
		--out "$OUT" --suite vsock_test --log logs/vsock_test/vsock_uring_test.log \
		--prefix "uring " --source "$src" || true
}

# vsock_uring_test has no --list: its case names come from its source, next to the binary.
find_uring_source() {
	local bin
	bin=$(readlink -f "$VSOCK/vsock_uring_test")
	echo "$(dirname "$bin")/vsock_uring_test.c"
}

# ---- f. clients: real-world AF_VSOCK programs ------------------------------------------------
# peer_check NAME READY SERVER_CMD CLIENT_CMD: runs both (in a scratch directory holding s.in and
# c.in, each side writing what it received to s.recv / c.recv) and compares the data.  The
# client starts once the server's output shows READY (it is listening).  Each command is one
# simple command with redirections (it is run with eval, without a shell of its own: every
# exec costs in the guest).
peer_check() {
	local name=$1 ready=$2 scmd=$3 ccmd=$4 start logrel dir spid crc=0 src=0 msg='' tries=0
	start=$(now)
	logrel=$(check_log clients "$name")
	dir=$OUT/logs/clients/$(slug "$name").d
	mkdir -p "$dir"
	echo "hello from the server, via $name" >"$dir/s.in"
	echo "hello from the client, via $name" >"$dir/c.in"
	: >"$dir/s.out"
	: >"$dir/s.err"
	(cd "$dir" && eval "exec $scmd" >s.out 2>s.err) &
	spid=$!
	local deadline=$((SECONDS + 15))
	while kill -0 "$spid" 2>/dev/null && [ $SECONDS -lt $deadline ] &&
		[[ "$(<"$dir/s.out")$(<"$dir/s.err")" != *"$ready"* ]]; do
		snooze 0.2
	done
	# Retry while the server is alive, in case READY came before it really listened.
	deadline=$((SECONDS + 10))
	while :; do
		crc=0
		tries=$((tries + 1))
		(cd "$dir" && eval "bounded 30 $ccmd" >c.out 2>c.err) || crc=$?
		[ "$crc" = 0 ] && break
		if ! kill -0 "$spid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then break; fi
		snooze 0.5
	done
	wait_or_kill "$spid" 30 || src=$?
	{
		echo "\$ server: $scmd   (exit $src)"
		echo "\$ client: $ccmd   (exit $crc, $tries attempt(s))"
		local f
		for f in s.out s.err s.recv c.out c.err c.recv; do
			echo "---- $f ----"
			cat "$dir/$f" 2>/dev/null || echo "(missing)"
		done
	} >"$OUT/$logrel"
	if ! cmp -s "$dir/s.recv" "$dir/c.in"; then
		msg="server received '$(head -c 100 "$dir/s.recv" 2>/dev/null || true)'"
	fi
	if ! cmp -s "$dir/c.recv" "$dir/s.in"; then
		msg="$msg${msg:+; }client received '$(head -c 100 "$dir/c.recv" 2>/dev/null || true)'"
	fi
	if [ -z "$msg" ] && [ "$crc" = 0 ] && [ "$src" = 0 ]; then
		report clients "$name" pass "$start" "$logrel"
	else
		[ -n "$msg" ] || msg="data ok"
		msg="$msg; server exit $src: $(last_line "$dir/s.err")"
		msg="$msg; client exit $crc: $(last_line "$dir/c.err")"
		report clients "$name" fail "$start" "$logrel" "$msg"
	fi
}

# samples_echo [--seqpacket]: the Rust echo server and client of samples/ over CID 1.
samples_echo() {
	local b=target/release spid rc=0 port=1240
	[ "${1:-}" = --seqpacket ] && port=1241
	if [ ! -x $b/vsock-echo-server ]; then
		echo "samples not built ($b/vsock-echo-server)"
		return 1
	fi
	$b/vsock-echo-server --port $port --once --accept-timeout 30 ${1:-} &
	spid=$!
	snooze 1
	bounded 60 $b/vsock-echo-client --port $port --count 20 --size 70000 ${1:-} || rc=$?
	wait_or_kill "$spid" 30 || true
	return $rc
}

suite_clients() {
	begin_suite clients
	if ! ensure_rvsock_loaded; then
		report clients "load" fail "$(now)" "" "rvsock.ko + rvsock_loopback.ko not loaded"
		return
	fi
	peer_check ncat "Listening on" \
		"ncat -v --vsock -l 1234 <s.in >s.recv" "ncat --vsock 1 1234 <c.in >c.recv"
	peer_check socat "listening on" \
		"socat -d -d -t 10 VSOCK-LISTEN:1235 STDIO <s.in >s.recv" \
		"socat -t 10 STDIO VSOCK-CONNECT:1:1235 <c.in >c.recv"
	run_check clients "rust samples: stream echo" 120 samples_echo || true
	run_check clients "rust samples: seqpacket echo" 120 samples_echo --seqpacket || true
	peer_check python "listening on" \
		"$PY $GUEST_DIR/vsock_echo.py server 1236 \"\$(<s.in)\" s.recv" \
		"$PY $GUEST_DIR/vsock_echo.py client 1 1236 \"\$(<c.in)\" c.recv"
}

# ---- f2. conformance: the same probe on rvsock, compared with the C stack ------------------
conformance_probe() {
	bounded 580 "$PY" tools/testing/conformance/probe.py >"$OUT/conformance.$1.txt"
}

suite_conformance() {
	begin_suite conformance
	if [ ! -s "$OUT/conformance.c.txt" ]; then
		report conformance "reference from the C stack" fail "$(now)" "" \
			"no probe output from the baseline suite"
		return
	fi
	if ! ensure_rvsock_loaded; then
		report conformance "load" fail "$(now)" "" "rvsock.ko + rvsock_loopback.ko not loaded"
		return
	fi
	run_check conformance "probe on rvsock" 600 conformance_probe rvsock || true
	# One check per probe check: compare.py writes the RESULT lines.
	bounded 60 "$PY" tools/testing/conformance/compare.py --results "$RESULTS" \
		--junit "$OUT/conformance.xml" "$OUT/conformance.c.txt" "$OUT/conformance.rvsock.txt" \
		>"$OUT/logs/conformance.txt" 2>&1 || true
}

# ---- f3. routing: transport selection through the recording test transport -----------------
suite_routing() {
	begin_suite routing
	if [ ! -f rvsock_test_transport.ko ]; then
		report routing "test transport" fail "$(now)" "" "rvsock_test_transport.ko not built"
		return
	fi
	if ! ensure_rvsock_loaded; then
		report routing "load" fail "$(now)" "" "rvsock.ko + rvsock_loopback.ko not loaded"
		return
	fi
	local start log=logs/routing/routing.log line name status why
	start=$(now)
	mkdir -p "$OUT/logs/routing"
	bounded 600 "$PY" tools/testing/routing/routing.py . >"$OUT/$log" 2>&1 || true
	while IFS= read -r line; do
		case "$line" in
		"PASS "*) name=${line#PASS }; status=pass; why= ;;
		"FAIL "*) name=${line#FAIL }; why=${name#*: }; name=${name%%: *}; status=fail ;;
		*) continue ;;
		esac
		report routing "$name" "$status" "$start" "$log" "$why"
		start=$(now)
	done <"$OUT/$log"
	grep -q '^routing: 0 failed' "$OUT/$log" ||
		report routing "completed" "$(grep -q '^routing: ' "$OUT/$log" && echo pass || echo fail)" \
			"$start" "$log" "routing.py did not finish"
	# Leave the socket suites' modules as they were.
	ensure_rvsock_loaded || true
}

# ---- f4. stress and fuzz: their own files, sourced here ------------------------------------
# tools/testing/guest/stress.sh defines suite_stress, tools/testing/guest/fuzz.sh suite_fuzz.
for f in stress fuzz; do
	if [ -f "tools/testing/guest/$f.sh" ]; then
		# shellcheck disable=SC1090
		. "tools/testing/guest/$f.sh"
	else
		eval "suite_$f() { report $f 'suite script' fail \"\$(now)\" '' 'tools/testing/guest/$f.sh missing'; }"
	fi
done

# ---- g. unload ------------------------------------------------------------------------------
suite_unload() {
	begin_suite unload
	local m start logrel
	# Where our modules' code was: kmemleak and other reports printed after the unload show bare
	# addresses, which these resolve (address - .text = offset into the module's .text).
	for m in $(loaded_ours); do
		echo "$m .text $(cat "/sys/module/$m/sections/.text" 2>/dev/null)"
	done >"$OUT/module-sections.txt"
	for m in $(loaded_ours); do
		start=$(now)
		logrel=$(check_log unload "$m")
		if { echo "\$ rmmod $m"; rmmod_retry "$m" "$UNLOAD_LIMIT"; } >"$OUT/$logrel" 2>&1; then
			report unload "rmmod $m" pass "$start" "$logrel"
		else
			report unload "rmmod $m" fail "$start" "$logrel" "$(tail -n 1 "$OUT/$logrel")"
		fi
	done
	start=$(now)
	if [ -n "$(loaded_ours)" ]; then
		report unload "nothing of ours left" fail "$start" "" "still loaded: $(loaded_ours)"
	else
		report unload "nothing of ours left" pass "$start" ""
	fi
}

# ---- h. dmesg: kernel reports during each part ---------------------------------------------
CATEGORIES=(
	"WARNING|WARNING:"
	"BUG|BUG:"
	"Oops|Oops"
	"general protection fault|general protection fault"
	"KASAN|KASAN"
	"lockdep|possible recursive locking|circular locking dependency|inconsistent lock state|suspicious RCU usage|lockdep"
	"kmemleak|unreferenced object|new suspected memory leak"
	"hung task|hung_task|blocked for more than"
	"soft lockup|soft lockup"
	"Call Trace|Call Trace"
)

# part_log PART: the kernel log lines between PART's markers (to the end if it has no end).
part_log() {
	sed -n "/rvsock-check: part $1 begin\$/,/rvsock-check: part $1 end\$/p" "$OUT/dmesg.txt"
	cat "$OUT/kmemleak.$1.txt" 2>/dev/null || true
}

scan_part() {
	local part=$1 cat start
	start=$(now)
	part_log "$part" >"$OUT/dmesg.$part.txt"
	if ! grep -q "rvsock-check: part $part begin" "$OUT/dmesg.$part.txt"; then
		report dmesg "$part part captured" fail "$start" "" \
			"no 'part $part begin' marker in the kernel log (log buffer too small?)"
		return
	fi
	# One pass over the log for all the categories: "<index> <first matching line>".
	local -a hits=()
	local i line
	while IFS= read -r line; do
		hits[${line%% *}]=${line#* }
	done < <(printf '%s\n' "${CATEGORIES[@]}" | awk -v file="$OUT/dmesg.$part.txt" '
		{ split($0, f, "|"); re[NR - 1] = substr($0, length(f[1]) + 2); n = NR }
		END {
			while ((getline l < file) > 0)
				for (i = 0; i < n; i++)
					if (!(i in hit) && l ~ re[i]) hit[i] = l
			for (i in hit) print i, hit[i]
		}')
	local name logrel n
	for i in "${!CATEGORIES[@]}"; do
		cat=${CATEGORIES[i]}
		name="${cat%%|*} ($part)"
		if [ -n "${hits[i]:-}" ]; then
			# The log of a hit: the kernel log from a few lines before it.
			logrel=$(check_log dmesg "$name")
			n=$(grep -n -m 1 -F -- "${hits[i]}" "$OUT/dmesg.$part.txt" | cut -d: -f1)
			n=${n:-1}
			{
				echo "first match in $OUT/dmesg.$part.txt, line $n:"
				sed -n "$((n > 5 ? n - 5 : 1)),$((n + 55))p" "$OUT/dmesg.$part.txt"
			} >"$OUT/$logrel"
			report dmesg "$name" fail "$start" "$logrel" "${hits[i]}"
		else
			report dmesg "$name" pass "$start" "dmesg.$part.txt"
		fi
		start=$(now)
	done
}

suite_dmesg() {
	begin_suite dmesg
	if rvsock_part; then
		kmemleak_collect rvsock
		kmsg "part rvsock end"
	fi
	dmesg >"$OUT/dmesg.txt"
	if wanted baseline; then scan_part baseline; fi
	if rvsock_part; then scan_part rvsock; fi
}

main() {
	setup
	local s
	wanted baseline && suite_baseline
	if rvsock_part; then
		kmsg "part rvsock begin"
	fi
	for s in modules kunit vsock_test clients conformance routing stress fuzz unload; do
		if wanted "$s"; then "suite_$s"; fi
	done
	# The kernel log is always saved; the scan is the dmesg suite.
	if wanted dmesg; then
		suite_dmesg
	else
		dmesg >"$OUT/dmesg.txt"
	fi
	echo "[guest] done: $(grep -c . "$RESULTS") checks"
}

main
