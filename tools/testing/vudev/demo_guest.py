#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Guest side of tools/testing/vudev/demo.sh: sibling guests exchanging data through vudev.

Usage (as root in a guest): demo_guest.py server PEER_CID | client PEER_CID

The server listens on vsock ports 1234 (SOCK_STREAM) and 1235 (SOCK_SEQPACKET); the client
retries connecting until the server is up.  STREAM: 4 MiB each way in 64 KiB writes, both
directions at once, checked with sha256.  SEQPACKET: messages of 1 B, 4 KiB and 64 KiB sent by
the client and echoed back by the server; each must arrive whole, as one message.
"""
import hashlib
import socket
import subprocess
import sys
import threading
import time

SIZE = 4 << 20
CHUNK = 64 << 10
MSGS = [1, 4096, 65536, 1, 65536]


def data(tag):
    """SIZE deterministic bytes for the side named tag."""
    out = bytearray()
    block = hashlib.sha256(tag.encode()).digest()
    while len(out) < SIZE:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:SIZE])


def log(*a):
    print("demo:", *a, flush=True)


def exchange(s, mine, theirs):
    t0 = time.monotonic()
    err = []

    def send():
        try:
            for i in range(0, SIZE, CHUNK):
                s.sendall(mine[i:i + CHUNK])
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send)
    t.start()
    h = hashlib.sha256()
    got = 0
    while got < SIZE:
        b = s.recv(CHUNK)
        if not b:
            break
        h.update(b)
        got += len(b)
    t.join()
    dt = time.monotonic() - t0
    ok = not err and got == SIZE and h.digest() == hashlib.sha256(theirs).digest()
    log(f"stream: {got} bytes received, sha256 {'ok' if ok else 'MISMATCH'}, "
        f"{dt:.1f} s ({2 * SIZE / dt / 1e6:.2f} MB/s both ways) {err}")
    return ok


def connect(kind, cid, port, deadline):
    while True:
        s = socket.socket(socket.AF_VSOCK, kind)
        try:
            s.connect((cid, port))
            return s
        except OSError as e:
            s.close()
            if time.monotonic() > deadline:
                raise
            last = e
        time.sleep(0.5)


def main():
    role, peer = sys.argv[1], int(sys.argv[2])
    subprocess.run(["modprobe", "vmw_vsock_virtio_transport"], check=True)
    local = socket.ioctl_vm_get_local_cid() if hasattr(socket, "ioctl_vm_get_local_cid") else None
    log(f"{role}: up, peer {peer}, local cid {local}")
    a, b = data("server"), data("client")
    ok = True
    if role == "server":
        ls = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        ls.bind((socket.VMADDR_CID_ANY, 1234))
        ls.listen(1)
        lq = socket.socket(socket.AF_VSOCK, socket.SOCK_SEQPACKET)
        lq.bind((socket.VMADDR_CID_ANY, 1235))
        lq.listen(1)
        s, addr = ls.accept()
        log(f"stream: accepted {addr}")
        ok &= exchange(s, a, b)
        s.close()
        q, addr = lq.accept()
        log(f"seqpacket: accepted {addr}")
        for n in MSGS:
            m = q.recv(1 << 17)
            ok &= len(m) == n
            q.send(m)
        log(f"seqpacket: echoed {len(MSGS)} messages")
        q.recv(1)
    else:
        t0 = time.monotonic()
        s = connect(socket.SOCK_STREAM, peer, 1234, t0 + 300)
        log(f"stream: connected after {time.monotonic() - t0:.1f} s")
        ok &= exchange(s, b, a)
        s.close()
        q = connect(socket.SOCK_SEQPACKET, peer, 1235, time.monotonic() + 60)
        t0 = time.monotonic()
        for i, n in enumerate(MSGS):
            m = bytes((i + j) & 0xFF for j in range(n))
            q.send(m)
            r = q.recv(1 << 17)
            good = r == m
            ok &= good
            log(f"seqpacket: {n} B message echoed as {len(r)} B: {'ok' if good else 'BAD'}")
        log(f"seqpacket: {time.monotonic() - t0:.2f} s")
        q.close()
    log("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


main()
