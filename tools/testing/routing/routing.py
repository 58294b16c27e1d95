#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Transport selection as userspace sees it (issue 4): in the guest, with rvsock.ko and
rvsock_loopback.ko loaded, loads rvsock_test_transport.ko in the H2G slot, the G2H slot and
both (a nested L1 guest), connects to CIDs and checks which transport saw the REQUEST, and what
/dev/vsock reports.  Also loads and unloads the transports in every order.

Prints one line per check: "PASS <name>" or "FAIL <name>: <why>"; exits 1 if any failed.
Usage: routing.py <directory with the .ko files>
"""

import errno
import fcntl
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vsockpy  # noqa: E402

AF_VSOCK = vsockpy.AF_VSOCK
TO_HOST = vsockpy.VMADDR_FLAG_TO_HOST
KO = sys.argv[1] if len(sys.argv) > 1 else "."
FAILED = []
PORT = [30000]


def report(name, ok, why=""):
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, why)), flush=True)
    if not ok:
        FAILED.append(name)


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def kmsg():
    return sh("dmesg").stdout


def connect(cid, flags=0):
    """Connects (2 s at most) and returns (errno name or 'ok', port used)."""
    PORT[0] += 1
    s, e = vsockpy.connect(cid, PORT[0], flags, timeout=2)
    if s:
        s.close()
    return (errno.errorcode.get(e, str(e)) if e else "ok"), PORT[0]


def route(cid, flags=0):
    """Which transport a connect to `cid` went to: test-h2g, test-g2h, local or an errno."""
    before = kmsg()
    res, port = connect(cid, flags)
    new = kmsg()[len(before):]
    for name in ("test-h2g", "test-g2h"):
        if "%s saw REQUEST" % name in new and "-> %d:%d " % (cid, port) in new:
            return name
    if res == "ENODEV":
        return "ENODEV"
    return "local" if res == "ECONNRESET" else "?" + res


def dev_cid():
    with open("/dev/vsock", "rb") as f:
        b = bytearray(4)
        fcntl.ioctl(f, 0x7B9, b)
        return struct.unpack("I", b)[0]


def load_test(slots, g2h_cid=3):
    r = sh("insmod", os.path.join(KO, "rvsock_test_transport.ko"), "slots=%d" % slots,
           "g2h_cid=%d" % g2h_cid, "answer=1")
    return r.returncode == 0, r.stderr.strip()


def unload(mod, tries=20):
    for _ in range(tries):
        if sh("rmmod", mod).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def scenario(name, slots, cases, cid):
    if slots:
        ok, why = load_test(slots)
        report("%s/load" % name, ok, why)
        if not ok:
            return
    report("%s/dev_vsock_cid" % name, dev_cid() == cid, "got %d, want %d" % (dev_cid(), cid))
    for (dst, flags, want) in cases:
        got = route(dst, flags)
        label = "%s/cid%d%s" % (name, dst, "_to_host" if flags else "")
        report(label, got == want, "went to %s, want %s" % (got, want))
    if slots:
        report("%s/unload" % name, unload("rvsock_test_transport"), "rmmod failed")


def main():
    scenario("loopback_only", 0, [(1, 0, "local"), (2, 0, "local"), (5, 0, "ENODEV"),
                                  (5, TO_HOST, "ENODEV")], 1)
    scenario("l0_host_h2g", 0x1, [(1, 0, "local"), (2, 0, "local"), (5, 0, "test-h2g"),
                                  (5, TO_HOST, "ENODEV")], 2)
    scenario("l2_guest_g2h", 0x2, [(1, 0, "local"), (2, 0, "test-g2h"), (3, 0, "local"),
                                   (7, 0, "test-g2h")], 3)
    scenario("l1_nested", 0x3, [(1, 0, "local"), (2, 0, "test-g2h"), (3, 0, "local"),
                                (4, 0, "test-h2g"), (4, TO_HOST, "test-g2h"),
                                (0, 0, "test-g2h")], 3)

    # A second local transport is refused while loopback holds the slot.
    ok, why = load_test(0x8)
    report("local_slot_refused", not ok and "busy" in why.lower(), why or "loaded")
    if ok:
        unload("rvsock_test_transport")

    # Load and unload the transports in both orders; routing must not depend on it.
    for order in ("loopback_first", "test_first"):
        if order == "test_first":
            report("%s/rmmod_loopback" % order, unload("rvsock_loopback"), "rmmod failed")
        ok, why = load_test(0x3)
        report("%s/load_test" % order, ok, why)
        if order == "test_first":
            r = sh("insmod", os.path.join(KO, "rvsock_loopback.ko"))
            report("%s/load_loopback" % order, r.returncode == 0, r.stderr.strip())
        report("%s/routes" % order, (route(1), route(4)) == ("local", "test-h2g"),
               "%s %s" % (route(1), route(4)))
        report("%s/unload_test" % order, unload("rvsock_test_transport"), "rmmod failed")
    print("routing: %d failed" % len(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
