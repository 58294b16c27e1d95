#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Guest-host smoke test of rvsock_virtio.ko, in one boot of the test kernel.

The device is QEMU's vhost-user-vsock-pci backed by vhost-device-vsock (guest CID 3, its Unix
sockets in a fresh directory).  The host connects to the guest's listener on port 1234 through
<dir>/vm.vsock ("CONNECT 1234"), and serves the guest's connections to CID 2 port 5678 on
<dir>/vm.vsock_5678; the guest half is guest_smoke.py.  Every wait is bounded; only Unix sockets
are used on the host.  Usage: tools/testing/virtio/smoke.py [--timeout SECONDS]
"""

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from smoke_common import pattern, recv_exact, recv_line

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
T0 = time.monotonic()
fails = []


def say(msg):
    print(f"host| [{time.monotonic() - T0:7.2f}] {msg}", flush=True)


def check(ok, what):
    say(("PASS " if ok else "FAIL ") + what)
    if not ok:
        fails.append(what)


def serve_one(c):
    c.settimeout(120)
    try:
        while True:
            line = recv_line(c)
            if not line:
                return
            cmd, _, arg = line.partition(" ")
            if cmd == "SEND":
                data = recv_exact(c, int(arg))
                c.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n")
            elif cmd == "GET":
                c.sendall(pattern(int(arg), b"host"))
            elif cmd == "HOLD":
                c.sendall(b"held\n")
                b = c.recv(1)
                say(f"held connection ended: recv {b!r}")
                return
    except OSError as e:
        say(f"host listener connection: {e!r}")
    finally:
        c.close()


def host_listener(path, stop):
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(8)
    ls.settimeout(1)
    while not stop.is_set():
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        say("host listener: guest connected")
        threading.Thread(target=serve_one, args=(c,), daemon=True).start()
    ls.close()


def host_client(path, deadline):
    """CONNECT 1234 through the device's socket, retried until the guest listens."""
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            t = time.monotonic()
            s.connect(path)
            s.sendall(b"CONNECT 1234\n")
            ok = recv_line(s)
            if not ok.startswith("OK"):
                raise OSError(f"answer {ok!r}")
            conn_s = time.monotonic() - t
            check(True, f"host -> guest CONNECT 1234: {ok!r} in {conn_s:.3f} s after {tries} tries")
            n = 1 << 20
            s.settimeout(60)
            s.sendall(f"{n}\n".encode())
            t = time.monotonic()
            s.sendall(pattern(n, b"host-client"))
            digest = recv_line(s)
            up_s = time.monotonic() - t
            check(digest == hashlib.sha256(pattern(n, b"host-client")).hexdigest(),
                  f"host -> guest 1 MiB, sha256 matches ({up_s:.3f} s incl. the guest's hashing)")
            t = time.monotonic()
            data = recv_exact(s, n)
            check(data == pattern(n, b"guest"),
                  f"guest -> host 1 MiB on the host's connection ({time.monotonic() - t:.3f} s)")
            s.close()
            return
        except OSError as e:
            s.close()
            if tries % 10 == 1:
                say(f"CONNECT 1234 not yet: {e}")
            time.sleep(1)
    check(False, "host -> guest CONNECT 1234: no answer before the deadline")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=int, default=420)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="rvsock-virtio.")
    uds = os.path.join(d, "vm.vsock")
    stop = threading.Event()
    vm = None
    try:
        lt = threading.Thread(target=host_listener, args=(uds + "_5678", stop), daemon=True)
        lt.start()
        log = os.path.join(TOP, "target", "virtio-smoke", "console.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        # run.sh starts vhost-device-vsock (guest CID 3, its sockets in d) and stops it after.
        vm = subprocess.Popen(
            [os.path.join(TOP, "tools/testing/vm/run.sh"), "--timeout", str(args.timeout),
             "--log", log, "--memory", "1G", "--vhost-user-vsock", f"3:{d}", "--",
             "/usr/bin/python3 tools/testing/virtio/guest_smoke.py"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        boot_t = time.monotonic()
        ct = threading.Thread(target=host_client, args=(uds, time.monotonic() + args.timeout - 30),
                              daemon=True)
        ct.start()
        guest_ok = False
        for line in vm.stdout:
            if "smoke| " in line:
                print(line.rstrip()[line.find("smoke| "):], flush=True)
                if "RESULT pass" in line:
                    guest_ok = True
            elif line.startswith("run.sh") or "error" in line.lower():
                print(line.rstrip(), flush=True)
        rc = vm.wait(timeout=30)
        # The guest's lines may reach only the console log, not run.sh's output.
        with open(log, errors="replace") as f:
            guest_lines = [ln.rstrip() for ln in f if "smoke| " in ln]
        for ln in guest_lines:
            if "PASS" in ln or "FAIL" in ln or "RESULT" in ln:
                print(ln[ln.find("smoke| "):], flush=True)
        guest_ok = guest_ok or any("RESULT pass" in ln for ln in guest_lines)
        say(f"VM exited {rc} after {time.monotonic() - boot_t:.1f} s (console log: {log})")
        check(rc == 0 and guest_ok, "guest half passed")
        ct.join(5)
    finally:
        stop.set()
        if vm and vm.poll() is None:
            # SIGTERM first: run.sh's exit trap stops the daemon.
            os.killpg(vm.pid, 15)
            try:
                vm.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(vm.pid, 9)
        shutil.rmtree(d, ignore_errors=True)
    say("RESULT " + ("pass" if not fails else "fail: " + "; ".join(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
