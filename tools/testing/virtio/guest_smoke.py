#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The guest half of smoke.py: runs as root in the test VM, repository root as working directory.

Loads rvsock.ko and rvsock_virtio.ko, serves one host connection on port 1234 (a line, then N
bytes checked by SHA-256 both ways), connects to the host (CID 2) on port 5678, then removes
rvsock_virtio with a connection open (expects ECONNRESET) and rvsock.  Every wait is bounded.
Lines for the host start with "smoke| "."""

import errno
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

from smoke_common import pattern, recv_exact, recv_line

T0 = time.monotonic()
fails = []


def say(msg):
    print(f"smoke| [{time.monotonic() - T0:7.2f}] {msg}", flush=True)


def check(ok, what):
    say(("PASS " if ok else "FAIL ") + what)
    if not ok:
        fails.append(what)


def run(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def server(ls, result):
    try:
        c, addr = ls.accept()
        c.settimeout(60)
        say(f"guest listener: connection from {addr}")
        n = int(recv_line(c))
        t = time.monotonic()
        data = recv_exact(c, n)
        rx_s = time.monotonic() - t
        c.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n")
        t = time.monotonic()
        c.sendall(pattern(n, b"guest"))
        tx_s = time.monotonic() - t
        result["ok"] = len(data) == n
        result["rx_s"], result["tx_s"] = rx_s, tx_s
        # Wait for the host to close.
        c.recv(1)
        c.close()
    except Exception as e:  # noqa: BLE001 - reported to the host
        result["err"] = repr(e)


def main():
    rc, out = run("echo > /proc/sys/kernel/modprobe; insmod rvsock.ko && insmod rvsock_virtio.ko")
    check(rc == 0, f"insmod rvsock.ko rvsock_virtio.ko {out}")
    if rc:
        return
    rc, out = run("dmesg | grep -E 'rvsock|virtio[0-9]+:' | tail -n 5")
    for line in out.splitlines():
        say("dmesg: " + line)
    rc, out = run("for d in /sys/bus/virtio/devices/*; do echo $d $(cat $d/device) "
                  "$(basename $(readlink $d/driver 2>/dev/null) 2>/dev/null); done")
    say("virtio devices: " + out.replace("\n", "; "))
    with open("/dev/vsock", "rb") as f:  # noqa: F841 - exists
        pass
    cid = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    local = None
    try:
        import fcntl
        import struct
        with open("/dev/vsock", "rb") as f:
            local = struct.unpack("I", fcntl.ioctl(f, 0x7b9, b"\0" * 4))[0]
    except OSError as e:
        say(f"IOCTL_VM_SOCKETS_GET_LOCAL_CID: {e}")
    cid.close()
    check(local == 3, f"/dev/vsock local CID {local}")

    # The listener, before the host connects (it retries until it is up).
    ls = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    ls.bind((socket.VMADDR_CID_ANY, 1234))
    ls.listen(4)
    ls.settimeout(120)
    result = {}
    th = threading.Thread(target=server, args=(ls, result), daemon=True)
    th.start()
    say("guest listener up on port 1234")

    # Guest client to the host's listener on <uds>_5678.
    t = time.monotonic()
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect((2, 5678))
        conn_s = time.monotonic() - t
        n = 1 << 20
        s.sendall(f"SEND {n}\n".encode())
        t = time.monotonic()
        s.sendall(pattern(n, b"guest-client"))
        digest = recv_line(s)
        up_s = time.monotonic() - t
        check(digest == hashlib.sha256(pattern(n, b"guest-client")).hexdigest(),
              f"guest -> host CID 2 port 5678: connect {conn_s:.3f} s, 1 MiB up {up_s:.3f} s, sha256 ok")
        t = time.monotonic()
        s.sendall(b"GET 1048576\n")
        data = recv_exact(s, n)
        down_s = time.monotonic() - t
        check(data == pattern(n, b"host"), f"host -> guest on the guest's connection: 1 MiB in {down_s:.3f} s")
    except OSError as e:
        check(False, f"guest -> host CID 2 port 5678: {e!r}")
    finally:
        s.close()

    th.join(150)
    check(result.get("ok", False),
          f"host -> guest listener 1234: {result}")
    ls.close()

    # SEQPACKET towards the host: allowed only if negotiated (vhost-device-vsock 0.3.0 does).
    sp = socket.socket(socket.AF_VSOCK, socket.SOCK_SEQPACKET)
    sp.settimeout(10)
    try:
        sp.connect((2, 5679))
        say("seqpacket connect to host port 5679 succeeded")
    except OSError as e:
        say(f"seqpacket connect to host port 5679: {errno.errorcode.get(e.errno, e.errno)}")
    sp.close()

    # rmmod rvsock_virtio with a connection open.
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect((2, 5678))
        s.sendall(b"HOLD\n")
        check(recv_line(s) == "held", "connection held open to the host")
        t = time.monotonic()
        rc, out = run("rmmod rvsock_virtio")
        check(rc == 0, f"rmmod rvsock_virtio with a connection open ({time.monotonic() - t:.3f} s) {out}")
        try:
            s.settimeout(10)
            b = s.recv(1)
            check(False, f"recv after rmmod returned {b!r}, expected ECONNRESET")
        except OSError as e:
            check(e.errno == errno.ECONNRESET, f"recv after rmmod: {errno.errorcode.get(e.errno, e.errno)}")
    except OSError as e:
        check(False, f"hold connection: {e!r}")
    finally:
        s.close()
    # Sockets closed just now may still hold the module for a moment.
    for _ in range(20):
        rc, out = run("rmmod rvsock")
        if rc == 0:
            break
        time.sleep(0.5)
    check(rc == 0, f"rmmod rvsock {out}")
    rc, out = run("cat /proc/modules | grep -E '^rvsock' || true")
    check(out == "", f"no rvsock module left: {out!r}")
    rc, out = run("dmesg | grep -E 'WARNING:|BUG:|KASAN|possible (circular|recursive)|"
                  "inconsistent lock|Oops|INFO: task|kmemleak: [0-9]+ new' || true")
    check(out == "", "dmesg free of WARNING/BUG/KASAN/lockdep" + (": " + out if out else ""))
    rc, out = run("dmesg | grep -E 'rvsock|virtio[0-9]+:' | tail -n 6")
    for line in out.splitlines():
        say("dmesg: " + line)


try:
    main()
except Exception as e:  # noqa: BLE001
    check(False, f"exception {e!r}")
say("RESULT " + ("pass" if not fails else "fail: " + "; ".join(fails)))
sys.exit(1 if fails else 0)
