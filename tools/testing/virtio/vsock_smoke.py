#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Both ends of the virtio-vsock smoke test (tools/testing/virtio/smoke.sh).

The guest has a virtio-vsock device from QEMU's vhost-user-vsock-pci, backed on the host by
vhost-device-vsock with its Unix socket DIR/vm.vsock.  Each exchange sends BYTES bytes of a
seeded pseudo-random payload one way, then BYTES bytes of another the other way; each side
checks what it received against the SHA-256 of the payload it expects, so both directions are
checked by the side that receives them.  Fixed lengths, no half-close: the exchange does not
depend on how the daemon maps a shutdown.

  host --dir DIR --h2g-port P --g2h-port P2 --bytes N --timeout S
        host to guest: connects to DIR/vm.vsock, "CONNECT P\\n", expects "OK ...\\n" (retrying
        while the guest is not listening yet: the daemon then closes the connection), sends
        payload h2g, receives payload g2h-reply;
        guest to host: listens on DIR/vm.vsock_P2, accepts one connection, receives payload
        g2h, sends payload h2g-reply.  Both run at once; exit 0 when both pass.
  guest-cid --expect CID      the local CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock)
  guest-server --port P --bytes N --timeout S [--write-size W]
        the guest's end of host to guest
  guest-client --port P2 --bytes N --timeout S [--write-size W]
        the guest's end of guest to host (CID 2)

Every wait is bounded by --timeout (a deadline for the whole role).  Output: one PASS or FAIL
line per check, prefixed with the role.
"""

import argparse
import fcntl
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7B9  # _IO(7, 0xb9)
VMADDR_CID_HOST = 2
# Bytes per send() by default.  The guest side uses --write-size (smoke.sh: 16 KiB): see there.
CHUNK = 64 * 1024


def payload(name, n):
    """The payload NAME: N pseudo-random bytes, the same on both sides."""
    rng = random.Random("rvsock-virtio-smoke-" + name)
    return rng.randbytes(n)


def digest(data):
    return hashlib.sha256(data).hexdigest()[:16]


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


def send_all(sock, data, deadline, chunk=CHUNK):
    view = memoryview(data)
    while view:
        sock.settimeout(deadline.left())
        sent = sock.send(view[:chunk])
        view = view[sent:]


def recv_exact(sock, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(deadline.left())
        chunk = sock.recv(min(CHUNK, n - len(buf)))
        if not chunk:
            raise ConnectionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def recv_line(sock, deadline, limit=128):
    line = b""
    while not line.endswith(b"\n"):
        sock.settimeout(deadline.left())
        c = sock.recv(1)
        if not c:
            raise ConnectionError("EOF after %r" % line)
        line += c
        if len(line) > limit:
            raise ConnectionError("line too long: %r" % line)
    return line.decode(errors="replace").rstrip("\n")


def check_received(what, data, expected_name, n, elapsed, out):
    want = payload(expected_name, n)
    if data == want:
        rate = n / max(elapsed, 1e-6) / 1024 / 1024
        out("PASS %s: %d bytes, sha256 %s, %.1f s (%.2f MiB/s)" % (what, n, digest(data), elapsed, rate))
        return True
    out("FAIL %s: %d bytes received, sha256 %s, expected %s" % (what, len(data), digest(data), digest(want)))
    return False


def make_out(role):
    lock = threading.Lock()

    def out(msg):
        with lock:
            print("%s: %s" % (role, msg), flush=True)

    return out


# ---- host -----------------------------------------------------------------------------------
def host_h2g(args, deadline, out):
    path = os.path.join(args.dir, "vm.vsock")
    attempts = 0
    last = "no attempt"
    while True:
        attempts += 1
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(min(deadline.left(), 10))
                sock.connect(path)
                sock.sendall(b"CONNECT %d\n" % args.h2g_port)
                line = recv_line(sock, deadline)
                if not line.startswith("OK"):
                    raise ConnectionError("answer %r" % line)
            except BaseException:
                sock.close()
                raise
            break
        except TimeoutError:
            out("FAIL host-to-guest: no connection within the time limit after %d attempts (last: %s)"
                % (attempts, last))
            return False
        except OSError as e:
            # The socket is not there yet, or the guest is not listening yet (the daemon closes
            # the connection without an answer).
            last = "%s: %s" % (type(e).__name__, e)
            try:
                time.sleep(min(0.5, deadline.left()))
            except TimeoutError:
                out("FAIL host-to-guest: no connection after %d attempts (last: %s)" % (attempts, last))
                return False
    out("connected to guest port %d through %s (%s) after %d attempts" % (args.h2g_port, path, line, attempts))
    try:
        with sock:
            start = time.monotonic()
            send_all(sock, payload("h2g", args.bytes), deadline)
            data = recv_exact(sock, args.bytes, deadline)
            return check_received("host-to-guest (guest's reply, received on the host)", data,
                                  "g2h-reply", args.bytes, time.monotonic() - start, out)
    except (OSError, TimeoutError) as e:
        out("FAIL host-to-guest: %s: %s" % (type(e).__name__, e))
        return False


def host_g2h(args, deadline, out, listener):
    try:
        with listener:
            listener.settimeout(deadline.left())
            conn, _ = listener.accept()
        with conn:
            out("guest connected to %s" % listener_path(args))
            start = time.monotonic()
            data = recv_exact(conn, args.bytes, deadline)
            ok = check_received("guest-to-host (received on the host)", data, "g2h", args.bytes,
                                time.monotonic() - start, out)
            # Reply even on a mismatch: the guest then reports what it sees.
            send_all(conn, payload("h2g-reply", args.bytes), deadline)
            # Wait (bounded) for the guest to close, so that the reply is not cut short.
            try:
                conn.settimeout(min(deadline.left(), 30))
                conn.recv(1)
            except OSError:
                pass
            return ok
    except (OSError, TimeoutError) as e:
        out("FAIL guest-to-host: %s: %s" % (type(e).__name__, e))
        return False


def listener_path(args):
    return os.path.join(args.dir, "vm.vsock_%d" % args.g2h_port)


def host(args):
    out = make_out("host")
    deadline = Deadline(args.timeout)
    path = listener_path(args)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    out("listening on %s for guest-to-host" % path)
    results = {}
    t = threading.Thread(target=lambda: results.update(g2h=host_g2h(args, deadline, out, listener)),
                         daemon=True)
    t.start()
    results["h2g"] = host_h2g(args, deadline, out)
    t.join(max(deadline.end - time.monotonic(), 0) + 5)
    if t.is_alive():
        out("FAIL guest-to-host: still running at the deadline")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return 0 if results.get("h2g") and results.get("g2h") else 1


# ---- guest ----------------------------------------------------------------------------------
def guest_cid(args):
    out = make_out("guest")
    with open("/dev/vsock", "rb") as f:
        buf = fcntl.ioctl(f.fileno(), IOCTL_VM_SOCKETS_GET_LOCAL_CID, b"\0" * 4)
    cid = struct.unpack("I", buf)[0]
    if cid == args.expect:
        out("PASS local CID is %d" % cid)
        return 0
    out("FAIL local CID is %d, expected %d" % (cid, args.expect))
    return 1


def guest_server(args):
    out = make_out("guest")
    deadline = Deadline(args.timeout)
    try:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as listener:
            listener.bind((socket.VMADDR_CID_ANY, args.port))
            listener.listen(1)
            out("listening on AF_VSOCK port %d" % args.port)
            listener.settimeout(deadline.left())
            conn, peer = listener.accept()
        with conn:
            out("accepted a connection from %s" % (peer,))
            start = time.monotonic()
            data = recv_exact(conn, args.bytes, deadline)
            ok = check_received("host-to-guest (received in the guest)", data, "h2g", args.bytes,
                                time.monotonic() - start, out)
            send_all(conn, payload("g2h-reply", args.bytes), deadline, args.write_size)
            try:
                conn.settimeout(min(deadline.left(), 30))
                conn.recv(1)
            except OSError:
                pass
            return 0 if ok else 1
    except (OSError, TimeoutError) as e:
        out("FAIL host-to-guest (guest side): %s: %s" % (type(e).__name__, e))
        return 1


def guest_client(args):
    out = make_out("guest")
    deadline = Deadline(args.timeout)
    try:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as sock:
            sock.settimeout(deadline.left())
            sock.connect((VMADDR_CID_HOST, args.port))
            out("connected to CID %d port %d" % (VMADDR_CID_HOST, args.port))
            start = time.monotonic()
            send_all(sock, payload("g2h", args.bytes), deadline, args.write_size)
            data = recv_exact(sock, args.bytes, deadline)
            ok = check_received("guest-to-host (host's reply, received in the guest)", data,
                                "h2g-reply", args.bytes, time.monotonic() - start, out)
            return 0 if ok else 1
    except (OSError, TimeoutError) as e:
        out("FAIL guest-to-host (guest side): %s: %s" % (type(e).__name__, e))
        return 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    h = sub.add_parser("host")
    h.add_argument("--dir", required=True)
    h.add_argument("--h2g-port", type=int, required=True)
    h.add_argument("--g2h-port", type=int, required=True)
    c = sub.add_parser("guest-cid")
    c.add_argument("--expect", type=int, required=True)
    s = sub.add_parser("guest-server")
    s.add_argument("--port", type=int, required=True)
    g = sub.add_parser("guest-client")
    g.add_argument("--port", type=int, required=True)
    for q in (h, s, g):
        q.add_argument("--bytes", type=int, default=1 << 20)
        q.add_argument("--timeout", type=float, default=120)
    for q in (s, g):
        q.add_argument("--write-size", type=int, default=CHUNK, help="bytes per send()")
    args = p.parse_args()
    return {"host": host, "guest-cid": guest_cid, "guest-server": guest_server,
            "guest-client": guest_client}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
