#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Runs a command with a throwaway root's directories in place of the host's, for the packaging
# suite's DKMS checks (tools/testing/packaging/suite.py).
#
# Usage: tools/testing/packaging/in-root.sh ROOT CMD...
#
# In a private mount namespace of its own (unshare --mount), ROOT/lib/modules, ROOT/var/lib/dkms,
# ROOT/usr/src and ROOT/etc/modprobe.d are bind-mounted over the host's, so that dkms, depmod and
# the kernel-update hook run with their default paths and write only into ROOT; the host's
# directories are untouched and the mounts end with the command.
set -euo pipefail
if [ "${1:-}" != --inside ]; then
	exec unshare --mount --propagation private "$0" --inside "$@"
fi
root=$2
shift 2
# A host without /lib/modules (a container): an overlay on the library directory, with its
# changes in ROOT, makes room for one, as the test VM's init does.
if [ ! -d /lib/modules ]; then
	libdir=$(cd /lib && pwd -P)
	ov=$root/.lib-overlay
	mkdir -p "$ov/upper" "$ov/work"
	mount -t overlay -o "lowerdir=$libdir,upperdir=$ov/upper,workdir=$ov/work" rvsock-lib-overlay \
		"$libdir"
	mkdir -p /lib/modules
fi
for d in /lib/modules /var/lib/dkms /usr/src /etc/modprobe.d; do
	[ -d "$d" ] || { echo "in-root.sh: $d missing on this host" >&2; exit 2; }
	mkdir -p "$root$d"
	mount --bind "$root$d" "$d"
done
exec "$@"
