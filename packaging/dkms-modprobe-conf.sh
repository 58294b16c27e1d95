#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# DKMS POST_INSTALL / POST_REMOVE of rvsock (see dkms.conf): installs /etc/modprobe.d/rvsock.conf
# (packaging/rvsock-modprobe.conf: the C vsock stack must not claim AF_VSOCK first), and removes
# it once no kernel has rvsock installed any more.  A file that an administrator changed is left
# alone.  DKMS runs this in the package's source directory.
#
# Usage: packaging/dkms-modprobe-conf.sh install|remove
set -eu
src=packaging/rvsock-modprobe.conf
dst=/etc/modprobe.d/rvsock.conf
case "${1:-}" in
install)
	if [ ! -e "$dst" ]; then
		mkdir -p "${dst%/*}"
		cp "$src" "$dst"
		chmod 0644 "$dst"
		echo "rvsock: installed $dst (the C vsock modules' aliases are blacklisted)"
	elif ! cmp -s "$src" "$dst"; then
		echo "rvsock: $dst differs from $PWD/$src; left as it is"
	fi
	;;
remove)
	if [ -n "$(find /lib/modules -mindepth 2 -name 'rvsock.ko*' 2>/dev/null | head -n 1)" ]; then
		exit 0
	fi
	if cmp -s "$src" "$dst"; then
		rm -f "$dst"
		echo "rvsock: removed $dst (no kernel has rvsock any more)"
	fi
	;;
*)
	echo "usage: $0 install|remove" >&2
	exit 2
	;;
esac
