# SPDX-License-Identifier: GPL-2.0
"""AF_VSOCK for the guests' Python checks: what Python's socket module cannot do, a connect
with `svm_flags` (VMADDR_FLAG_TO_HOST), through libc."""

import ctypes
import errno
import socket
import struct
import time

AF_VSOCK = 40
VMADDR_FLAG_TO_HOST = 1
_libc = ctypes.CDLL(None, use_errno=True)


def sockaddr_vm(cid, port, flags=0):
    """A `struct sockaddr_vm` for (cid, port) with `svm_flags`."""
    return struct.pack("=HHIIB3x", AF_VSOCK, 0, port, cid, flags)


def connect(cid, port, flags=0, timeout=5.0):
    """Connects a new stream socket to (cid, port, flags), waiting at most `timeout` seconds.

    Returns (socket, 0), the socket connected and blocking with `timeout`, or (None, errno):
    the connect's error, or ETIMEDOUT."""
    s = socket.socket(AF_VSOCK, socket.SOCK_STREAM)
    s.setblocking(False)
    addr = sockaddr_vm(cid, port, flags)
    e = ctypes.get_errno() if _libc.connect(s.fileno(), ctypes.c_char_p(addr), len(addr)) else 0
    if e == errno.EINPROGRESS:
        e = errno.ETIMEDOUT
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                e = err
                break
            try:
                s.getpeername()
                e = 0
                break
            except OSError:
                pass
            time.sleep(0.05)
    if e:
        s.close()
        return None, e
    s.setblocking(True)
    s.settimeout(timeout)
    return s, 0
