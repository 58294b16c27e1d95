#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""One of the two sibling guests of tools/testing/virtio/suite.py: runs as root in a test VM
booted with a vhost-user-vsock device and a virtio-net link to the other guest, with the
repository root as its working directory.

It loads a vsock stack (rvsock: rvsock.ko, rvsock_loopback.ko, rvsock_virtio.ko; c:
vsock_loopback and vmw_vsock_virtio_transport), checks the device's CID, brings up the link with
a static address, then runs its side of each --job in order: the upstream tool (vsock_test,
vsock_uring_test) as server or as client of the other guest.  Each job has its own control port,
so a side that gets out of step can never meet the wrong peer.  A client retries until the
server's control socket is up (vsock_test gives up at once when it cannot connect).  At the end
it unloads the stack and scans the kernel log.

Output, in --out: JOB.ROLE.json (the tool's stdout as time-stamped chunks, its exit status,
whether it was killed) and JOB.ROLE.err (its stderr), which the host judges with both sides in
hand; and NAME.results.txt: this guest's own checks, as RESULT lines (guest/lib.sh's format).
Every wait is bounded.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guest"))
from guest_common import STACKS, GuestBase  # noqa: E402
from vsock_pair import Side, wait_listen  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="this guest's name in file and check names")
    p.add_argument("--stack", choices=("rvsock", "c"), required=True)
    p.add_argument("--cid", type=int, required=True, help="the device's guest CID")
    p.add_argument("--peer-cid", type=int, required=True)
    p.add_argument("--addr", required=True, help="this guest's IPv4 address on the link")
    p.add_argument("--peer-addr", required=True)
    p.add_argument("--vsock-dir", required=True, help="the upstream tools (kernel cache vsock/)")
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=int, default=300, help="seconds one job may take")
    p.add_argument("--job", action="append", default=[],
                   help="LABEL:ROLE:TOOL:PORT, ROLE server or client (repeatable, in order)")
    return p.parse_args()


class Guest(GuestBase):
    def __init__(self, args):
        super().__init__(args.out, "%s.results.txt" % args.name, args.cid)
        self.args = args
        self.prefix = args.name + ": "

    def link_up(self):
        """The first non-loopback interface, up with --addr/24."""
        t = time.monotonic()
        nics = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
        if not nics:
            return self.report("control link up", False, 0.0, "no network interface")
        cmd = ("ip link set lo up && ip link set %s up && ip addr add %s/24 dev %s"
               % (nics[0], self.args.addr, nics[0]))
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
        return self.report("control link up (%s %s)" % (nics[0], self.args.addr),
                           r.returncode == 0, time.monotonic() - t, r.stderr.strip())

    def job(self, spec):
        """Runs one side of one job and writes its JSON; never raises for the tool's failures."""
        label, role, tool, port = spec.split(":")
        a = self.args
        argv = [os.path.join(a.vsock_dir, tool), "--mode=" + role, "--control-port=" + port,
                "--peer-cid=%d" % a.peer_cid]
        if role == "client":
            argv.insert(2, "--control-host=" + a.peer_addr)
        base = os.path.join(a.out, "%s.%s" % (label, role))
        deadline = time.monotonic() + a.timeout
        tries = 0
        self.say("job %s: %s" % (label, " ".join(argv)))
        while True:
            tries += 1
            with open(base + ".err", "w") as err:
                side = Side(role, argv, err)
                if role == "server" and not wait_listen(int(port), 30):
                    side.kill()
                side.wait(deadline)
            # A client that found no server yet printed no case and gave up: try again.
            if (role == "client" and side.proc.returncode != 0 and not side.cases()
                    and time.monotonic() < deadline - 5):
                time.sleep(0.5)
                continue
            break
        with open(base + ".json", "w") as f:
            json.dump({"argv": argv, "rc": side.proc.returncode, "killed": side.killed,
                       "limit": a.timeout, "tries": tries, "chunks": side.chunks}, f)
        self.say("job %s: exit %s after %d tries%s" % (label, side.proc.returncode, tries,
                                                      " (killed)" if side.killed else ""))


def main():
    args = parse_args()
    g = Guest(args)
    stack = STACKS[args.stack]
    g.sh("dmesg -c >/dev/null")
    if g.load(stack) and g.local_cid() and g.link_up():
        for spec in args.job:
            g.job(spec)
    g.unload(stack)
    g.kernel_log(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
