# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# The fuzz suite: rvsock-kfuzz (tools/testing/kfuzz) plays the peer of the test transports of
# rvsock_test_transport.ko through /dev/rvsock_inject and injects RVSOCK_FUZZ_PACKETS packets
# (default 100000; make fuzz-kernel: 1000000) at sockets in every state.  Then, with every
# socket closed: no AF_VSOCK socket may be left (after the close timeout), Slab must be back
# near its baseline, and the modules must unload.  Sourced by suite.sh, which calls suite_fuzz.
#
# Environment:
#   RVSOCK_FUZZ_PACKETS     packets to inject (default 100000)
#   RVSOCK_FUZZ_SEED        the fuzzer's seed (default 1)
#   RVSOCK_FUZZ_SKIP        classes of packets to leave out (rvsock-kfuzz --skip; default none)
#   RVSOCK_FUZZ_SLOTS       test transports to fuzz through (default 0x3: G2H with local CID 3
#                           and H2G; 0x2: G2H only)
#   RVSOCK_FUZZ_TIME_LIMIT  seconds the fuzzer may inject (default 120 + 3 ms per packet, at
#                           most 3300): it then stops, cleans up, and the packet count fails
#   RVSOCK_FUZZ_SLAB_MARGIN_KB  how far above its baseline Slab may end (default 4096)
#
# Figures (the fuzzer's summary, Slab before and after) go to $OUT/fuzz-summary.txt.

FUZZ_BIN=target/release/rvsock-kfuzz
FUZZ_KO=rvsock_test_transport.ko
# rvsock's close timeout is 8 s: a socket closed by the fuzzer whose peer never answers goes
# away after it.  The wait allows for that, and for a slow guest.
FUZZ_SETTLE=30

# fuzz_refcnt MODULE: its reference count (sockets pin rvsock.ko), or "-" if not loaded.
fuzz_refcnt() {
	local r
	r=$(<"/sys/module/$1/refcnt") 2>/dev/null || r=-
	echo "$r"
}

# fuzz_slab: "SLAB SUNRECLAIM" in kB, after dropping the reclaimable caches and shrinking every
# slab cache (which also empties KASAN's quarantine of freed objects, kept as slab otherwise).
fuzz_slab() {
	local f k v _ slab=0 unrec=0
	echo 3 >/proc/sys/vm/drop_caches
	for f in /sys/kernel/slab/*/shrink; do
		echo 1 >"$f" 2>/dev/null || true
	done
	while read -r k v _; do
		case "$k" in
		Slab:) slab=$v ;;
		SUnreclaim:) unrec=$v ;;
		esac
	done </proc/meminfo
	echo "$slab $unrec"
}

# fuzz_sockets: the AF_VSOCK sockets `ss` lists (rvsock's sock_diag), one per line.
fuzz_sockets() {
	bounded 20 ss --vsock -a -n -H 2>&1 || true
}

# fuzz_sockets_left: fuzz_sockets, each line marked with whether the fuzzer knew that connection
# at its end (its model, $FUZZ_MODEL), i.e. sent it a final RST.
fuzz_sockets_left() {
	local line f
	fuzz_sockets | while IFS= read -r line; do
		read -r -a f <<<"$line"
		if [ -z "${FUZZ_MODEL:-}" ] || [ ! -f "$FUZZ_MODEL" ] || [ ${#f[@]} -lt 6 ]; then
			echo "$line"
		elif grep -q "^${f[4]} ${f[5]} " "$FUZZ_MODEL"; then
			echo "$line   (the fuzzer sent it a final RST: $(grep -m 1 "^${f[4]} ${f[5]} " "$FUZZ_MODEL"))"
		else
			echo "$line   (unknown to the fuzzer at its end)"
		fi
	done
}

# fuzz_wait_idle BASE: waits (at most FUZZ_SETTLE s) until rvsock.ko's reference count is BASE
# again, i.e. no socket is left; prints what is left if some are.
fuzz_wait_idle() {
	local base=$1 deadline=$((SECONDS + FUZZ_SETTLE)) start=$SECONDS
	if [ "$(fuzz_refcnt rvsock)" -gt "$base" ] 2>/dev/null; then
		echo "rvsock.ko referenced $(fuzz_refcnt rvsock) times (baseline $base); sockets:"
		fuzz_sockets_left
	fi
	while [ "$(fuzz_refcnt rvsock)" -gt "$base" ] 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			echo "after ${FUZZ_SETTLE} s rvsock.ko is still referenced $(fuzz_refcnt rvsock)" \
				"times (baseline $base); sockets:"
			fuzz_sockets_left
			return 1
		fi
		snooze 0.5
	done
	echo "rvsock.ko back to $(fuzz_refcnt rvsock) references (baseline $base) after $((SECONDS - start)) s"
	local left
	left=$(fuzz_sockets)
	if [ -n "$left" ]; then
		echo "but ss --vsock lists:"
		echo "$left"
		return 1
	fi
	echo "ss --vsock -a lists no socket"
	grep '^AF_VSOCK' /proc/net/protocols || true
}

# fuzz_holders: how many modules use rvsock.ko (each holds a reference, as each socket does).
fuzz_holders() {
	local n=0 f
	for f in /sys/module/rvsock/holders/*; do
		[ -e "$f" ] && n=$((n + 1))
	done
	echo "$n"
}

# fuzz_load_transport SLOTS: the test transports, silent (verbose=0: no log line per packet),
# answering nothing (the fuzzer is their peer), keeping a feed of what the core sends.
fuzz_load_transport() {
	local c args=("slots=$1" answer=0 verbose=0 feed=4096)
	if grep -q '^rvsock_test_transport ' /proc/modules; then
		rmmod_retry rvsock_test_transport "$UNLOAD_LIMIT" || return 1
	fi
	c=$(loaded_c_stack)
	if [ -n "$c" ]; then
		echo "refusing to load $FUZZ_KO: the C vsock stack is loaded ($c)"
		return 1
	fi
	echo "\$ insmod $FUZZ_KO ${args[*]}"
	bounded 120 "${BB[@]}" insmod "$FUZZ_KO" "${args[@]}" || return 1
	[ -c /dev/rvsock_inject ] || { echo "no /dev/rvsock_inject"; return 1; }
}

# fuzz_unload_all: rmmod the test transport, rvsock_loopback and rvsock; each must unload.
fuzz_unload_all() {
	local m
	for m in rvsock_test_transport rvsock_loopback rvsock; do
		if grep -q "^$m " /proc/modules; then
			echo "\$ rmmod $m"
			rmmod_retry "$m" "$UNLOAD_LIMIT" || return 1
		fi
	done
}

suite_fuzz() {
	begin_suite fuzz
	local packets=${RVSOCK_FUZZ_PACKETS:-100000} seed=${RVSOCK_FUZZ_SEED:-1}
	local slots=${RVSOCK_FUZZ_SLOTS:-0x3} margin=${RVSOCK_FUZZ_SLAB_MARGIN_KB:-4096}
	local limit=${RVSOCK_FUZZ_TIME_LIMIT:-}
	local start log=logs/fuzz/rvsock-kfuzz.log sum="$OUT/fuzz-summary.txt" rc=0 base
	start=$(now)
	mkdir -p "$OUT/logs/fuzz"
	if [ ! -x "$FUZZ_BIN" ] || [ ! -f "$FUZZ_KO" ]; then
		report fuzz "prerequisites" fail "$start" "" \
			"$FUZZ_BIN or $FUZZ_KO not built (cargo build --release --workspace, make)"
		return
	fi
	if ! ensure_rvsock_loaded; then
		report fuzz "load" fail "$start" "" "rvsock.ko + rvsock_loopback.ko not loaded"
		return
	fi
	[ -n "$limit" ] || limit=$((120 + packets * 3 / 1000))
	[ "$limit" -le 3300 ] || limit=3300
	# Sockets of earlier suites may still be in their close timeout.
	if ! run_check fuzz "no AF_VSOCK socket before the run" $((FUZZ_SETTLE + 30)) \
		fuzz_wait_idle "$(fuzz_holders)"; then
		:
	fi
	if ! run_check fuzz "load $FUZZ_KO slots=$slots" 120 fuzz_load_transport "$slots"; then
		ensure_rvsock_loaded || true
		return
	fi
	base=$(fuzz_refcnt rvsock)
	if [ "$base" != "$(fuzz_holders)" ]; then
		echo "[guest] fuzz: rvsock.ko has $base references for $(fuzz_holders) holders"
	fi
	local slab0 slab1
	slab0=$(fuzz_slab)
	{
		echo "packets $packets, seed $seed, slots $slots, skip '${RVSOCK_FUZZ_SKIP:-}'," \
			"time limit $limit s"
		echo "rvsock.ko references before: $base"
		echo "Slab, SUnreclaim before (kB): $slab0"
	} >"$sum"

	# The run: the fuzzer stops itself at the time limit; the bound here is for a hang.
	start=$(now)
	local FUZZ_MODEL=$OUT/logs/fuzz/model.txt
	kmsg "fuzz begin seed $seed packets $packets"
	{
		echo "\$ $FUZZ_BIN --packets $packets --seed $seed --time-limit $limit --calibrate 1000" \
			"--model-out $FUZZ_MODEL ${RVSOCK_FUZZ_SKIP:+--skip $RVSOCK_FUZZ_SKIP}"
		bounded $((limit + 180)) "$FUZZ_BIN" --packets "$packets" --seed "$seed" \
			--time-limit "$limit" --calibrate 1000 --model-out "$FUZZ_MODEL" \
			${RVSOCK_FUZZ_SKIP:+--skip "$RVSOCK_FUZZ_SKIP"}
	} >"$OUT/$log" 2>&1 || rc=$?
	kmsg "fuzz end seed $seed"
	local line injected
	line=$(grep -m 1 '^packets: ' "$OUT/$log" || true)
	if [ "$rc" = 0 ]; then
		report fuzz "rvsock-kfuzz seed $seed" pass "$start" "$log" "${line#packets: }"
	elif [ "$rc" = 124 ]; then
		report fuzz "rvsock-kfuzz seed $seed" fail "$start" "$log" \
			"hung: killed after $((limit + 180)) s (see the kernel log)"
	else
		report fuzz "rvsock-kfuzz seed $seed" fail "$start" "$log" \
			"exit $rc: $(last_line "$OUT/$log")"
	fi
	sed -n '/^device cost/p; /^packets: /,$p' "$OUT/$log" >>"$sum"
	start=$(now)
	injected=${line#packets: }
	injected=${injected%%/*}
	if [ "${injected:-0}" -ge "$packets" ] 2>/dev/null; then
		report fuzz "$packets packets injected" pass "$start" "$log" "$line"
	else
		report fuzz "$packets packets injected" fail "$start" "$log" \
			"${line:-no summary from rvsock-kfuzz}"
	fi

	# Every socket of the run is closed: none may be left once the close timeouts expired.
	run_check fuzz "no socket left" $((FUZZ_SETTLE + 30)) fuzz_wait_idle "$base" || true
	cat "$OUT/logs/fuzz/no_socket_left.log" >>"$sum" 2>/dev/null || true

	start=$(now)
	slab1=$(fuzz_slab)
	local s0=${slab0% *} s1=${slab1% *} u0=${slab0#* } u1=${slab1#* } msg
	msg="Slab ${s0} -> ${s1} kB ($((s1 - s0)) kB), SUnreclaim ${u0} -> ${u1} kB ($((u1 - u0)) kB)"
	msg="$msg; margin $margin kB"
	echo "Slab, SUnreclaim after (kB): $slab1 ($msg)" >>"$sum"
	if [ $((s1 - s0)) -le "$margin" ]; then
		report fuzz "Slab back near its baseline" pass "$start" "" "$msg"
	else
		report fuzz "Slab back near its baseline" fail "$start" "" "$msg"
	fi

	# The modules unload (then rvsock and loopback come back for the suites that follow).
	run_check fuzz "unload rvsock_test_transport, rvsock_loopback, rvsock" \
		$((UNLOAD_LIMIT * 3 + 30)) fuzz_unload_all || true
	ensure_rvsock_loaded || true
}
