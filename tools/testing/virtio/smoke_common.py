# SPDX-License-Identifier: GPL-2.0
"""What smoke.py (host) and guest_smoke.py (guest) share: reading exactly, reading a line, the
test pattern."""

import hashlib


def recv_exact(s, n):
    """Up to n bytes from socket s: fewer only if the peer closed."""
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(min(65536, n - len(buf)))
        if not b:
            break
        buf += b
    return bytes(buf)


def recv_line(s):
    """One line from socket s, without its newline."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            break
        buf += b
    return buf.decode(errors="replace").strip()


def pattern(n, seed):
    """n bytes of a pattern derived from seed."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]
