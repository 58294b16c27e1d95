# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# Helpers for the in-guest test scripts.  Source it, do not run it.
#
# Results go to $OUT/results.txt, one line per check, tab-separated:
#   RESULT <suite> <name> <pass|fail|skip> <seconds> <log, relative to $OUT or -> <message>
# The host (tools/testing/check.py) parses that file; the guest also echoes a readable line to
# its stdout, which ends up in the console log.

RESULTS=${OUT:-/tmp}/results.txt
# Used by the scripts that source this file.
# shellcheck disable=SC2034
PY=/usr/bin/python3
# shellcheck disable=SC2034
GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# insmod and rmmod of the static busybox where there is one: an exec of a dynamically linked
# program (kmod's) costs about a second in the guest.
BB=()
[ -x /bin/busybox ] && BB=(/bin/busybox)

# The C vsock stack's modules: never loaded together with ours.
C_STACK_RE='^(vsock|vsock_loopback|vsock_diag|vhost_vsock|vmw_vsock_[a-z0-9_]+) '
OUR_RE='^rvsock[a-z0-9_]* '

# snooze SECONDS: sleep(1) without an exec: a read that times out on a pipe nobody writes to.
exec {SNOOZE_FD}<> <(:)
snooze() { read -r -t "$1" -u "$SNOOZE_FD" _ || true; }

# Time keeping and text helpers in plain bash: every exec costs a noticeable fraction of a second
# in a TCG guest of the debug kernel.
now() { echo "$EPOCHREALTIME"; }
# seconds_since START: seconds (two decimals) since START, an $EPOCHREALTIME value.
seconds_since() {
	local us=$((10#${EPOCHREALTIME/./} - 10#${1/./}))
	printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000))
}
slug() {
	local s=${1//[^A-Za-z0-9._-]/_}
	echo "${s:0:80}"
}
# one_line TEXT: TEXT on one line (tabs and newlines become spaces), at most 300 characters.
one_line() {
	local s=${1//[$'\t\r\n']/ }
	echo "${s:0:300}"
}

# check_log SUITE NAME: the path (relative to $OUT) of a check's log file; creates its directory.
check_log() {
	[ -d "$OUT/logs/$1" ] || mkdir -p "$OUT/logs/$1"
	echo "logs/$1/$(slug "$2").log"
}

# report SUITE NAME STATUS START LOG MESSAGE...
report() {
	local suite=$1 name=$2 status=$3 start=$4 logrel=$5
	shift 5
	local msg secs
	msg=$(one_line "$*")
	secs=$(seconds_since "$start")
	printf 'RESULT\t%s\t%s\t%s\t%s\t%s\t%s\n' "$suite" "$name" "$status" "$secs" "${logrel:--}" \
		"${msg:--}" >>"$RESULTS"
	printf '[guest] %-4s %s: %s (%s s) %s\n' "$status" "$suite" "$name" "$secs" "$msg"
}

# run_check SUITE NAME LIMIT CMD...: one check that passes when CMD exits 0 within LIMIT seconds.
# CMD may be a shell function of these scripts: those bound each of their steps themselves.
# The message on failure is the last non-empty line of CMD's output.
run_check() {
	local suite=$1 name=$2 limit=$3
	shift 3
	local start logrel rc=0
	start=$(now)
	logrel=$(check_log "$suite" "$name")
	{
		echo "\$ $*"
		if [ "$(type -t "$1")" = function ]; then
			"$@"
		else
			bounded "$limit" "$@"
		fi
	} >"$OUT/$logrel" 2>&1 || rc=$?
	if [ "$rc" = 0 ]; then
		report "$suite" "$name" pass "$start" "$logrel"
	elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		report "$suite" "$name" fail "$start" "$logrel" "timed out after $limit s"
	else
		report "$suite" "$name" fail "$start" "$logrel" "exit $rc: $(last_line "$OUT/$logrel")"
	fi
	return "$rc"
}

# last_line FILE: its last non-empty line.
last_line() { { grep -v '^[[:space:]]*$' "$1" 2>/dev/null || true; } | tail -n 1; }

# bounded SECONDS CMD...: runs the program (or shell function, in a subshell) CMD, killing it
# (SIGTERM, then SIGKILL) after SECONDS; the status is then 124.  Unlike timeout(1) it does not
# wait for a process stuck in the kernel (which ignores SIGKILL): that one is left behind and
# reported.  No exec of its own.
bounded() {
	local limit=$1 pid deadline
	shift
	# (<&0: without job control, a background command's stdin would be /dev/null.)
	"$@" <&0 &
	pid=$!
	deadline=$((SECONDS + limit))
	while kill -0 "$pid" 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			kill -TERM "$pid" 2>/dev/null
			snooze 2
			kill -KILL "$pid" 2>/dev/null
			snooze 0.5
			if kill -0 "$pid" 2>/dev/null; then
				echo "still running after $limit s, left behind (stuck in the kernel?): $*" >&2
			else
				wait "$pid" 2>/dev/null
				echo "killed after $limit s: $*" >&2
			fi
			return 124
		fi
		snooze 0.1
	done
	wait "$pid"
}

# kmsg TEXT: a marker line in the kernel log, so the host can cut dmesg into parts.
kmsg() { echo "rvsock-check: $*" >/dev/kmsg; }

begin_suite() {
	kmsg "suite $1 begin"
	echo "[guest] ==== suite $1 ===="
}

# loaded_matching RE: the loaded modules whose /proc/modules line matches RE, most recently loaded
# first, on one line.
loaded_matching() {
	local line out=''
	while IFS= read -r line; do
		[[ $line =~ $1 ]] && out+="${line%% *} "
	done </proc/modules
	echo "$out"
}
loaded_c_stack() { loaded_matching "$C_STACK_RE"; }
loaded_ours() { loaded_matching "$OUR_RE"; }

# insmod_ours KO [SECONDS]: insmod one of our modules (within SECONDS, default 120), refusing
# while the C stack is loaded.
insmod_ours() {
	local c
	c=$(loaded_c_stack)
	if [ -n "$c" ]; then
		echo "refusing to load $1: the C vsock stack is loaded ($c)"
		return 1
	fi
	bounded "${2:-120}" "${BB[@]}" insmod "$1"
}

# rmmod_retry NAME [SECONDS]: rmmod, retrying while the module is busy (sockets in their close
# timeout hold a reference for up to 8 s).
rmmod_retry() {
	local name=$1 limit=${2:-12} start=$SECONDS err left
	while :; do
		left=$((limit - (SECONDS - start)))
		err=$(bounded $((left > 2 ? left : 2)) "${BB[@]}" rmmod "$name" 2>&1) && return 0
		echo "$err"
		if [ $((SECONDS - start)) -ge "$limit" ]; then
			echo "rmmod $name failed for $limit s ($(one_line "${err:-timed out}")); now:" \
				"$(grep -E "^$name " /proc/modules || echo "not loaded")"
			return 1
		fi
		snooze 0.5
	done
}

# wait_listen PORT SECONDS: waits until something listens on TCP PORT (IPv4 or IPv6).
wait_listen() {
	local hex deadline=$((SECONDS + $2))
	hex=$(printf ':%04X' "$1")
	while [ $SECONDS -lt $deadline ]; do
		if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
			awk -v p="$hex" '$2 ~ p"$" && $4 == "0A" { f = 1 } END { exit !f }'; then
			return 0
		fi
		snooze 0.1
	done
	return 1
}

# wait_or_kill PID SECONDS: waits for a background job; kills it (and returns 124) after SECONDS.
wait_or_kill() {
	local pid=$1 deadline=$((SECONDS + $2)) rc=0
	while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
		snooze 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		snooze 1
		kill -9 "$pid" 2>/dev/null || true
		snooze 0.5
		# A process stuck in the kernel survives SIGKILL: leave it, do not wait for it.
		kill -0 "$pid" 2>/dev/null || wait "$pid" 2>/dev/null || true
		return 124
	fi
	wait "$pid" || rc=$?
	return "$rc"
}

# The modules we build, in load order: rvsock.ko, then the transports, then test modules.
our_modules() {
	local ko rest=() tests=()
	[ -f rvsock.ko ] && echo rvsock.ko
	for ko in *.ko; do
		[ -f "$ko" ] || continue
		case "$ko" in
		rvsock.ko) ;;
		# Suspends and resumes a virtio-vsock device when loaded: only the virtio suite's
		# guests, which have one, load it (tools/testing/virtio/guest_host.py).
		rvsock_pm_cycle.ko) ;;
		*kunit*.ko | *test*.ko) tests+=("$ko") ;;
		*) rest+=("$ko") ;;
		esac
	done
	printf '%s\n' "${rest[@]}" "${tests[@]}" | grep -v '^$' || true
}
is_test_module() { case "$1" in *kunit*.ko | *test*.ko) return 0 ;; esac; return 1; }
modname() { basename "$1" .ko | tr - _; }
