# SPDX-License-Identifier: GPL-2.0
"""What the host (suite.py) and the guest (guest_host.py) of the guest-host part share: the
flows they run, the data pattern, and socket helpers.

A flow is one connection between a guest program and the host, through the device's Unix sockets
on the host: either the guest connects to CID 2 port P (the host listens on <uds>_P) or the host
connects to the guest's listener on P (<uds>, "CONNECT P").  Its data goes one way, "up" (guest
to host) or "down" (host to guest): the sender sends SIZE bytes of the flow's pattern and shuts
its side down; the receiver reads SIZE bytes (or to EOF), checks length and SHA-256, and closes;
the sender waits for that close.  (The receiver cannot wait for EOF: vhost-device-vsock 0.3.0
does not pass a guest's SHUTDOWN on to the host's Unix socket, only the connection's end.)  Each
driver's flows have their own ports, so a flow left over from one driver can never meet the next
one's.
"""

import hashlib
from collections import namedtuple

Flow = namedtuple("Flow", "name tool connector direction port size")

TOOLS = ("python", "ncat", "socat")
DRIVERS = ("rvsock", "c")
SMALL = 256 << 10
# Ports, from a driver's base: the flows from 0, then the routing checks' listeners (ROUTE,
# ROUTE + 1), the guest's own loopback listener (LOCAL), the removal's held connections (HOLD,
# HOLD + 1), the flow after the rebind (REBIND), the suspend's held connections (SUSPEND) and
# the flows after the resume (RESUME, RESUME + 1).  The guest asks the host to connect to one of
# its listeners on TRIGGER_PORT.
ROUTE, LOCAL, HOLD, REBIND, SUSPEND, RESUME = 40, 42, 43, 45, 46, 47
TRIGGER_PORT = 19999


def port_base(driver):
    return 20000 + 1000 * DRIVERS.index(driver)


def after_rebind(driver):
    """The flow that shows the device works again after a sysfs unbind and bind."""
    return Flow("python after rebind up", "python", "guest", "up", port_base(driver) + REBIND,
                64 << 10)


def after_resume(driver):
    """The flows that show the device works after a suspend and resume: the host connects to
    a listener the guest bound before the suspend, and the guest connects to the host."""
    base = port_base(driver)
    return [Flow("python after resume down", "python", "host", "down", base + RESUME, 64 << 10),
            Flow("python after resume up", "python", "guest", "up", base + RESUME + 1, 64 << 10)]


def holds(driver):
    """The host's holding listeners of a driver's turn: the connections removal and suspend
    cut."""
    base = port_base(driver)
    return (base + HOLD, base + HOLD + 1, base + SUSPEND)


def flows(driver, big):
    """The flows of one driver's turn: every tool both ways and in both connection roles, then
    a python flow of `big` bytes each way."""
    base = port_base(driver)
    out, n = [], 0
    for tool in TOOLS:
        for connector in ("guest", "host"):
            for direction in ("up", "down"):
                out.append(Flow("%s %s-connects %s" % (tool, connector, direction), tool,
                                connector, direction, base + n, SMALL))
                n += 1
    for direction in ("up", "down"):
        out.append(Flow("python %d MiB %s" % (big >> 20, direction), "python", "guest",
                        direction, base + n, big))
        n += 1
    return out


def pattern_chunks(flow, chunk=1 << 20):
    """The flow's data, SIZE bytes in chunks: a block derived from its name, repeated."""
    block = hashlib.sha256(flow.name.encode()).digest() * 2048  # 64 KiB
    buf = block * (chunk // len(block))
    left = flow.size
    while left > 0:
        yield buf[:min(left, len(buf))]
        left -= len(buf)


def digest(flow):
    h = hashlib.sha256()
    for c in pattern_chunks(flow):
        h.update(c)
    return h.hexdigest()


# vhost-device-vsock 0.3.0 drops a guest packet whose payload spans several descriptors, and
# Linux 6.12.117's C driver builds such packets for writes above about 32 KiB (nonlinear skbs,
# commit 6693731487a8): guests write 16 KiB at a time.
GUEST_WRITE = 16 << 10


def send_pattern(sock, flow, write=GUEST_WRITE):
    for c in pattern_chunks(flow):
        view = memoryview(c)
        for i in range(0, len(view), write):
            sock.sendall(view[i:i + write])


def recv_digest(sock, size):
    """Reads size bytes, or to EOF: (bytes, SHA-256 hex)."""
    h, n = hashlib.sha256(), 0
    while n < size:
        b = sock.recv(min(1 << 16, size - n))
        if not b:
            break
        h.update(b)
        n += len(b)
    return n, h.hexdigest()


def recv_line(s):
    """One line from socket s, without its newline."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            break
        buf += b
    return buf.decode(errors="replace").strip()
