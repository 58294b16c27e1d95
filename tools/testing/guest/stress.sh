# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# The stress suite (issue 9): sourced by tools/testing/guest/suite.sh, defines suite_stress.
#
# Each check runs a scenario of target/release/vsock-stress (tools/testing/stress; see its --help)
# or a shell-driven one built on it, over loopback CID 1, with rvsock.ko and rvsock_loopback.ko:
#
#   hold N            N connections open at once, 8 bytes each way checked
#   cycles N          N connect / 4 bytes / close cycles; every sent cycle reaches the server
#   mesh stream, mesh seqpacket
#                     4 senders x 4 receivers for S seconds, every byte checked (no loss,
#                     duplication or reordering; seqpacket: message boundaries and sizes too),
#                     receivers stalled in the kernel (userfaultfd) and resizing their buffers
#   mesh tiny writes  1 sender, 1 receiver, writes of 1 to 64 bytes only, stalls every 20 to
#                     200 ms: many packets per byte of credit for a stalled receiver
#   kill noread, kill stall
#                     senders blocked in send are reaped within 1 s of SIGKILL; SO_SNDTIMEO
#   reload under load rmmod + insmod of rvsock_loopback R times while a mesh runs (resets
#                     tolerated, received bytes still checked); rmmod must succeed within
#                     RELOAD_LIMIT s; then new connections must work
#   timers            T rounds of: insmod rvsock + rvsock_loopback, `vsock-stress timers` (sockets
#                     closed with connect and close timers pending), rmmod rvsock_loopback, then
#                     rmmod rvsock retried until it succeeds (TIMERS_LIMIT s at most).  Every
#                     tenth round has every kind of socket, the others only the connect-timer
#                     kinds: sockets in their close handshake keep rvsock for the 8 s close
#                     timeout, even once their transport is gone
#   kunit race        (full form only) rvsock_kunit.ko loaded with race_rounds=10000: the KUnit
#                     receive-versus-unregister race for 10,000 rounds (make check runs 1,000)
#   slab              /proc/meminfo Slab before the suite and after it (caches dropped, slab
#                     caches shrunk, which also empties KASAN's quarantine), within SLAB_MARGIN
#
# RVSOCK_STRESS picks the sizes: short (make check: 2.3 to 4.5 minutes in the TCG guest) or full
# (make stress: about 25 minutes):
#
#                     short      full
#   hold N            200        1000
#   cycles N          1000       10000
#   mesh stream S     15         120
#   mesh seqpacket S  8          60
#   mesh tiny S       10         30
#   reload: S, R      15, 2      60, 10
#   timers T          10         200
#
# Every step is bounded.  The figures of each scenario (its summary line) are the check's
# message and are collected in $OUT/stress-figures.txt.  The suite leaves rvsock.ko and
# rvsock_loopback.ko loaded, as the suites after it expect.

STRESS_BIN=target/release/vsock-stress
# Longest time one rmmod of the loopback transport under load may take: a stall holds a socket
# for up to 2 s, and rmmod is not to wait behind one stalled owner after another.
RELOAD_LIMIT=3
# Longest time rmmod rvsock may keep failing (busy) after the timers helper exited.
TIMERS_LIMIT=15
# Slab may grow by this much (KiB) over the suite.  Measured deltas were -0.5 to -0.8 MiB (the
# page cache and the module loads move it a little either way); a leaked socket per cycle would
# add 10 MiB or more over the short form's 1,000 cycles.  Smaller leaks are kmemleak's.
SLAB_MARGIN_KIB=4096

stress_sizes() {
	case "${RVSOCK_STRESS:-short}" in
	full)
		ST_HOLD=1000 ST_CYCLES=10000 ST_MESH_S=120 ST_SEQ_S=60 ST_TINY_S=30 ST_RELOAD_S=60
		ST_RELOADS=10 ST_TIMER_ROUNDS=200
		;;
	*)
		ST_HOLD=200 ST_CYCLES=1000 ST_MESH_S=15 ST_SEQ_S=8 ST_TINY_S=10 ST_RELOAD_S=15
		ST_RELOADS=2 ST_TIMER_ROUNDS=10
		;;
	esac
}

# st_check NAME FUNC ARGS...: runs the shell function FUNC (which bounds each of its steps) with
# its output in the check's log.  It passes when FUNC returns 0; the message is $ST_MSG as FUNC
# left it (the figures), followed on failure by the log's last line.
st_check() {
	local name=$1 start logrel rc=0
	shift
	start=$(now)
	logrel=$(check_log stress "$name")
	ST_MSG=
	{
		echo "\$ $*"
		"$@"
	} >"$OUT/$logrel" 2>&1 || rc=$?
	[ -z "$ST_MSG" ] || echo "$name: $ST_MSG" >>"$OUT/stress-figures.txt"
	if [ "$rc" = 0 ]; then
		report stress "$name" pass "$start" "$logrel" "$ST_MSG"
	else
		report stress "$name" fail "$start" "$logrel" \
			"exit $rc: $(last_line "$OUT/$logrel")${ST_MSG:+; $ST_MSG}"
	fi
	return "$rc"
}

# st_tool LIMIT ARGS...: vsock-stress ARGS, ended after LIMIT seconds (its own --deadline a little
# earlier, so that it says so itself).  Sets ST_MSG to its summary line's figures.
st_tool() {
	local limit=$1 rc=0 line tmp
	shift
	tmp=$(mktemp /tmp/stress.XXXXXX)
	bounded "$limit" "$STRESS_BIN" "$@" --deadline $((limit > 20 ? limit - 10 : limit)) \
		>"$tmp" 2>&1 || rc=$?
	cat "$tmp"
	line=$(summary_line "$tmp")
	rm -f "$tmp"
	ST_MSG=${line#*: result=}
	[ "$rc" = 124 ] && echo "vsock-stress $1: no result within $limit s"
	return "$rc"
}

# summary_line FILE: the last summary line of vsock-stress in FILE.
summary_line() {
	local l s=
	while IFS= read -r l; do
		[[ $l == "vsock-stress "*": result="* ]] && s=$l
	done <"$1"
	echo "$s"
}

is_loaded() { [[ " $(loaded_ours) " == *" $1 "* ]]; }

# rmmod_once NAME LIMIT: one rmmod, which must succeed within LIMIT seconds; prints how long it
# took, and where it waits in the kernel if it takes more than a second.  Sets ST_RMMOD_CS
# (centiseconds).
rmmod_once() {
	local t0 rc=0 secs pid _
	t0=$(now)
	"${BB[@]}" rmmod "$1" &
	pid=$!
	for _ in {1..20}; do
		kill -0 "$pid" 2>/dev/null || break
		snooze 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "rmmod $1 still running after 1 s, in the kernel at:"
		sed 's/^/    /' "/proc/$pid/stack" 2>/dev/null || true
	fi
	wait_or_kill "$pid" "$2" || rc=$?
	secs=$(seconds_since "$t0")
	ST_RMMOD_CS=$((10#${secs/./}))
	echo "rmmod $1: exit $rc after $secs s"
	return "$rc"
}

# slab_settled: /proc/meminfo Slab in KiB, after dropping the page cache, dentries and inodes and
# shrinking every slab cache (kmem_cache_shrink also empties KASAN's quarantine of each cache).
slab_settled() {
	local f k v _
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
	for f in /sys/kernel/slab/*/shrink; do
		echo 1 >"$f" 2>/dev/null || true
	done
	while read -r k v _; do
		if [ "$k" = Slab: ]; then
			echo "$v"
			return
		fi
	done </proc/meminfo
}

# ---- shell-driven scenarios ------------------------------------------------------------------

# stress_reload SECONDS ROUNDS: a mesh that tolerates resets runs for SECONDS; meanwhile ROUNDS
# times rmmod rvsock_loopback (which must succeed within RELOAD_LIMIT s) and insmod it again.
# Then the mesh must end with its received bytes right, and new connections must work.
stress_reload() {
	local secs=$1 rounds=$2 pid i n=0 max=0 mesh_rc=0 tmp line why=()
	tmp=$(mktemp /tmp/stress.XXXXXX)
	"$STRESS_BIN" mesh --tolerate-reset --seconds "$secs" --port 5400 --finish-timeout 30 \
		--deadline $((secs + 90)) >"$tmp" 2>&1 &
	pid=$!
	for ((i = 1; i <= rounds; i++)); do
		snooze $((secs / (rounds + 1)))
		echo "round $i: rmmod rvsock_loopback under load"
		if ! rmmod_once rvsock_loopback 30; then
			why+=("round $i: rmmod rvsock_loopback failed")
			break
		fi
		[ "$ST_RMMOD_CS" -gt "$max" ] && max=$ST_RMMOD_CS
		if [ "$ST_RMMOD_CS" -gt $((RELOAD_LIMIT * 100)) ]; then
			why+=("round $i: rmmod took $(cs_secs "$ST_RMMOD_CS") s, over $RELOAD_LIMIT s")
		fi
		n=$i
		snooze 0.5
		if ! insmod_ours rvsock_loopback.ko; then
			why+=("round $i: insmod rvsock_loopback.ko failed")
			break
		fi
	done
	is_loaded rvsock_loopback || insmod_ours rvsock_loopback.ko || true
	wait_or_kill "$pid" $((secs + 100)) || mesh_rc=$?
	echo "---- mesh --tolerate-reset (exit $mesh_rc) ----"
	cat "$tmp"
	line=$(summary_line "$tmp")
	rm -f "$tmp"
	ST_MSG="$n reloads, rmmod max $(cs_secs "$max") s; ${line#*: result=}"
	[ "$mesh_rc" = 0 ] || why+=("the mesh under reloads failed (exit $mesh_rc)")
	echo "---- new connections after the reloads ----"
	if ! bounded 120 "$STRESS_BIN" cycles --count 100 --port 5410 --deadline 110; then
		why+=("new connections after the reloads failed")
	fi
	if [ ${#why[@]} -gt 0 ]; then
		# The last line is the check's message.
		echo "${why[*]}"
		return 1
	fi
}

# stress_timers ROUNDS: see the header.
stress_timers() {
	local rounds=$1 i t0 secs cs kinds max=0 max_close=0 total=0 tmp rc=0
	tmp=$(mktemp /tmp/stress.XXXXXX)
	for ((i = 1; i <= rounds; i++)); do
		if ! is_loaded rvsock && ! insmod_ours rvsock.ko; then
			echo "round $i: insmod rvsock.ko failed"
			rc=1
			break
		fi
		if ! is_loaded rvsock_loopback && ! insmod_ours rvsock_loopback.ko; then
			echo "round $i: insmod rvsock_loopback.ko failed"
			rc=1
			break
		fi
		kinds=pending,refused
		[ $((i % 10)) = 1 ] && kinds=pending,refused,closewait,linger,exit
		if ! bounded 60 "$STRESS_BIN" timers --count 16 --kinds "$kinds" --seed "$i" \
			--deadline 50 >"$tmp" 2>&1; then
			cat "$tmp"
			echo "round $i: the timers helper failed"
			rc=1
			break
		fi
		[ "$i" -le 2 ] && cat "$tmp"
		if ! rmmod_once rvsock_loopback 30 >"$tmp" 2>&1; then
			cat "$tmp"
			echo "round $i: rmmod rvsock_loopback failed"
			rc=1
			break
		fi
		t0=$(now)
		if ! rmmod_retry rvsock "$TIMERS_LIMIT" >"$tmp" 2>&1; then
			cat "$tmp"
			echo "round $i: rmmod rvsock still failing after $TIMERS_LIMIT s"
			rc=1
			break
		fi
		secs=$(seconds_since "$t0")
		cs=$((10#${secs/./}))
		total=$((total + cs))
		if [ "${kinds#*closewait}" != "$kinds" ]; then
			[ "$cs" -gt "$max_close" ] && max_close=$cs
		else
			[ "$cs" -gt "$max" ] && max=$cs
		fi
		echo "round $i ($kinds): rmmod rvsock succeeded $secs s after the helper"
	done
	rm -f "$tmp"
	local completed=$((rc == 0 ? rounds : i - 1))
	ST_MSG="$completed of $rounds rounds; rmmod rvsock after the helper: max $(cs_secs "$max") s with connect timers pending, max $(cs_secs "$max_close") s with close timers too; total $(cs_secs "$total") s"
	echo "$ST_MSG"
	return "$rc"
}

# cs_secs CENTISECONDS: as seconds with two decimals.
cs_secs() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

# stress_slab BEFORE: Slab now against BEFORE (KiB).
stress_slab() {
	local before=$1 after
	after=$(slab_settled)
	ST_MSG="Slab before ${before} KiB, after ${after} KiB, delta $((after - before)) KiB (margin $SLAB_MARGIN_KIB KiB)"
	echo "$ST_MSG"
	echo "--- /proc/meminfo ---"
	cat /proc/meminfo
	[ $((after - before)) -le "$SLAB_MARGIN_KIB" ]
}

# stress_load_missing: insmod whichever of rvsock.ko and rvsock_loopback.ko is not loaded.
stress_load_missing() {
	local ko
	for ko in rvsock.ko rvsock_loopback.ko; do
		is_loaded "$(modname "$ko")" && continue
		echo "\$ insmod $ko"
		insmod_ours "$ko" || return 1
	done
}

stress_no_tool() {
	echo "$STRESS_BIN not built: cargo build --release --workspace"
	return 1
}

# stress_kunit_race ROUNDS: the KUnit suites with the receive-versus-unregister race run for
# ROUNDS rounds (make check's kunit suite runs its default 1,000): no case fails, every round ran.
stress_kunit_race() {
	local rounds=$1 log made reset cut ms
	kmsg "stress kunit race begin"
	if ! bounded 1200 "${BB[@]}" insmod rvsock_kunit.ko race_rounds="$rounds"; then
		ST_MSG="insmod rvsock_kunit.ko race_rounds=$rounds failed"
		kmsg "stress kunit race end"
		return 1
	fi
	bounded 60 "${BB[@]}" rmmod rvsock_kunit || true
	kmsg "stress kunit race end"
	log=$(dmesg | sed -n '/rvsock-check: stress kunit race begin$/,/rvsock-check: stress kunit race end$/p')
	read -r made reset cut ms < <(awk '/rvsock_kunit: rounds [0-9]+\.\.[0-9]+ in/ {
		for (i = 1; i <= NF; i++) {
			if ($i == "in") ms += $(i + 1)
			if ($i == "cut") cut += $(i - 1)
			if ($i == "made,") made += $(i - 2)
			if ($i == "reset") reset += $(i - 1)
		}
		n += $5
	} END { print made + 0, reset + 0, cut + 0, ms + 0 }' <<<"$log")
	ST_MSG="$rounds rounds in $((ms / 1000)) s: $cut cut by the unregistration mid-way, $made connections made, $reset reset"
	echo "kunit race: $ST_MSG" >>"$OUT/stress-figures.txt"
	if grep -q "not ok" <<<"$log"; then
		ST_MSG="$ST_MSG; $(grep -m1 'not ok' <<<"$log")"
		return 1
	fi
	[ "$made" = "$reset" ] && [ "$made" -gt 0 ]
}

suite_stress() {
	begin_suite stress
	stress_sizes
	: >"$OUT/stress-figures.txt"
	if [ ! -x "$STRESS_BIN" ]; then
		st_check "vsock-stress built" stress_no_tool || true
		return
	fi
	if ! ensure_rvsock_loaded; then
		report stress "load" fail "$(now)" "" "rvsock.ko + rvsock_loopback.ko not loaded"
		return
	fi
	echo "stress form: ${RVSOCK_STRESS:-short}" >>"$OUT/stress-figures.txt"
	local slab0 t0
	t0=$(now)
	slab0=$(slab_settled)
	st_check "hold $ST_HOLD connections" st_tool 600 hold --count "$ST_HOLD" || true
	st_check "cycles $ST_CYCLES" st_tool 1800 cycles --count "$ST_CYCLES" || true
	st_check "mesh stream ${ST_MESH_S} s" st_tool $((ST_MESH_S + 180)) mesh \
		--seconds "$ST_MESH_S" --finish-timeout 30 || true
	st_check "mesh seqpacket ${ST_SEQ_S} s" st_tool $((ST_SEQ_S + 180)) mesh --seqpacket \
		--seconds "$ST_SEQ_S" --finish-timeout 30 || true
	st_check "mesh tiny writes ${ST_TINY_S} s" st_tool $((ST_TINY_S + 180)) mesh --senders 1 \
		--receivers 1 --max-size 64 --no-resize --stall-gap 200ms --seconds "$ST_TINY_S" \
		--finish-timeout 30 --port 5120 || true
	st_check "kill noread" st_tool 150 kill --mode noread || true
	st_check "kill stall" st_tool 150 kill --mode stall || true
	st_check "reload rvsock_loopback under load" stress_reload "$ST_RELOAD_S" "$ST_RELOADS" || true
	st_check "timers: rmmod rvsock right after close, $ST_TIMER_ROUNDS rounds" \
		stress_timers "$ST_TIMER_ROUNDS" || true
	# The later suites expect the socket modules loaded.
	st_check "rvsock.ko and rvsock_loopback.ko loaded again" stress_load_missing || true
	if [ "${RVSOCK_STRESS:-short}" = full ]; then
		st_check "KUnit: receive racing unregister, 10000 rounds" stress_kunit_race 10000 || true
	fi
	st_check "slab" stress_slab "$slab0" || true
	echo "stress suite: $(seconds_since "$t0") s" >>"$OUT/stress-figures.txt"
}
