#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The host half of `make demo`'s virtio part (tools/testing/demo.sh): through the Unix sockets
of the guest's virtio-vsock device (vhost-device-vsock, run.sh --vhost-user-vsock 3:DIR),
  - it listens on DIR/vm.vsock_1236, where the guest's `ncat --vsock 2 1236` arrives, and
    answers the line it reads;
  - it connects to the guest's `ncat --vsock -l 1235` with "CONNECT 1235" on DIR/vm.vsock
    (retrying until the guest listens), sends a line and prints the answer.
Every line it prints starts with "host: ".  It gives up after --timeout seconds.
Usage: demo_host.py DIR [--timeout SECONDS]"""

import argparse
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flows import recv_line  # noqa: E402


def say(msg):
    print("host: " + msg, flush=True)


def listener(path, deadline, got):
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)
    ls.settimeout(max(1, deadline - time.monotonic()))
    try:
        c, _ = ls.accept()
    except socket.timeout:
        return
    with c:
        c.settimeout(30)
        line = recv_line(c)
        say("received from the guest on port 1236: %r" % line)
        c.sendall(b"hello from the host, through the device\n")
        got.append(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--timeout", type=int, default=240)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    got = []
    th = threading.Thread(target=listener, args=(os.path.join(args.dir, "vm.vsock_1236"),
                                                deadline, got), daemon=True)
    th.start()
    answer = None
    while answer is None and time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(os.path.join(args.dir, "vm.vsock"))
            s.sendall(b"CONNECT 1235\n")
            if recv_line(s).startswith("OK"):
                say("connected to the guest's port 1235 (CONNECT 1235 on vm.vsock)")
                s.sendall(b"hello from the host\n")
                answer = recv_line(s)
                say("the guest answered: %r" % answer)
        except OSError:
            pass
        s.close()
        if answer is None:
            time.sleep(1)
    th.join(max(0, deadline - time.monotonic()))
    return 0 if answer and got else 1


if __name__ == "__main__":
    sys.exit(main())
