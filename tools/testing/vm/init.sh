#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# PID 1 of rvsock's test VMs (tools/testing/vm/run.sh puts it in place of virtme-ng-init).
#
# virtme-ng-init spends about 80 s of a 2-minute TCG boot of the debug kernel (KASAN, lockdep) in
# systemd-tmpfiles and udev coldplug, which the tests do not need.  This init keeps to virtme-ng's
# conventions for what the tests do use: the kernel command line's virtme_* parameters (9p
# mounts, the kernel modules of the build tree, the working directory), the command in
# virtme.exec=`<base64>`, the virtio-serial ports virtme.std{in,out,err} for its I/O and
# virtme.ret for its exit status, then power-off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root PYTHONDONTWRITEBYTECODE=1

log() { echo "<6>rvsock-init: $*" >/dev/kmsg; }
power_off() {
	sync
	echo o >/proc/sysrq-trigger
	$bb sleep 30
}

# Every exec of a dynamically linked program costs about a second here (TCG, KASAN, libraries read
# over 9p): use the static busybox's applets for the set-up where the host has it.
bb=
[ -x /bin/busybox ] && bb=/bin/busybox

$bb mount -t proc -o nosuid,noexec,nodev proc /proc
$bb mount -t sysfs -o nosuid,noexec,nodev sys /sys
mounted() {
	local dir
	while read -r _ dir _; do
		[ "$dir" = "$1" ] && return 0
	done </proc/mounts
	return 1
}
mounted /dev || $bb mount -t devtmpfs -o nosuid devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm /dev/virtio-ports
$bb mount -t devpts -o nosuid,noexec devpts /dev/pts
$bb mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
# Writable scratch directories.  The host's own contents stay reachable under /run/host (the
# repository may be a clone under /tmp, as in some CI set-ups): see the working directory below.
$bb mount -t tmpfs -o mode=1777 tmpfs /run
for d in /tmp /var/tmp /var/log; do
	$bb mkdir -p "/run/host$d"
	$bb mount --bind "$d" "/run/host$d"
	$bb mount -t tmpfs -o mode=1777 tmpfs "$d"
done
# A working directory under one of the scratch directories: bring back the host's
# (before the --rwdir mounts, which may lie below it).
for d in tmp var/tmp var/log; do
	case "${virtme_chdir:-}" in
	"$d"/*)
		$bb mkdir -p "/$virtme_chdir"
		$bb mount --bind "/run/host/$virtme_chdir" "/$virtme_chdir"
		;;
	esac
done
$bb mount -t debugfs debugfs /sys/kernel/debug
$bb ln -sf /proc/self/fd /dev/fd
$bb ln -sf /proc/self/fd/0 /dev/stdin
$bb ln -sf /proc/self/fd/1 /dev/stdout
$bb ln -sf /proc/self/fd/2 /dev/stderr
echo 1 >/proc/sys/kernel/sysrq
echo virtme-ng >/proc/sys/kernel/hostname

# Writable host directories (--rwdir): virtme_initmountN=<path relative to />, 9p tag
# virtme.initmountN.
for var in $(compgen -e); do
	[[ $var =~ ^virtme_initmount[0-9]+$ ]] || continue
	tag=${var//_/.}
	[ -d "/${!var}" ] || $bb mkdir -p "/${!var}"
	$bb mount -t 9p -o version=9p2000.L,trans=virtio,access=any "$tag" "/${!var}" ||
		log "cannot mount $tag on /${!var}"
done

# The modules of the kernel build tree (virtme-ng's .virtme_mods), for modprobe.  Where the host
# has no /lib/modules, a tmpfs-backed overlay on the library directory makes room for it.
if [ -n "${virtme_link_mods:-}" ]; then
	if [ ! -d /lib/modules ]; then
		libdir=$(cd /lib && pwd -P)
		$bb mkdir -p /run/lib-overlay/upper /run/lib-overlay/work
		$bb mount -t overlay \
			-o "lowerdir=$libdir,upperdir=/run/lib-overlay/upper,workdir=/run/lib-overlay/work" \
			lib-overlay "$libdir"
		$bb mkdir -p /lib/modules
	fi
	$bb mount -t tmpfs -o mode=0755 tmpfs /lib/modules
	$bb ln -s "$virtme_link_mods" "/lib/modules/$(</proc/sys/kernel/osrelease)"
fi

# The script I/O ports, by name.
for p in /sys/class/virtio-ports/*; do
	[ -e "$p/name" ] && $bb ln -sf "/dev/${p##*/}" "/dev/virtio-ports/$(<"$p/name")"
done
ports=/dev/virtio-ports
if [ ! -e $ports/virtme.stdout ] || [ ! -e $ports/virtme.ret ]; then
	log "no virtme script ports; powering off"
	power_off
fi

cmdline=$(</proc/cmdline)
script=${cmdline#*virtme.exec=\`}
script=$(echo "${script%%\`*}" | $bb base64 -d)
cd "/${virtme_chdir:-}" || log "cannot cd to /${virtme_chdir:-}"
for var in $(compgen -e); do
	[[ $var == virtme_* ]] && unset "$var"
done

log "starting script"
rc=0
setsid /bin/sh -c "$script" <$ports/virtme.stdin >$ports/virtme.stdout 2>$ports/virtme.stderr ||
	rc=$?
log "script exited with status $rc"
printf '%s' "$rc" >$ports/virtme.ret
power_off
