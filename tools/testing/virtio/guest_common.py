# SPDX-License-Identifier: GPL-2.0
"""What the guests of the virtio suite (guest_host.py, guest_siblings.py) share: the vsock stacks
they load, RESULT lines, commands with a bound, the device's CID and the kernel-log scan."""

import fcntl
import os
import re
import struct
import subprocess
import time

IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7B9
BAD_DMESG = re.compile(r"WARNING:|BUG:|Oops|general protection fault|KASAN|"
                       r"possible recursive locking|circular locking dependency|"
                       r"inconsistent lock state|suspicious RCU usage|unreferenced object|"
                       r"blocked for more than|soft lockup|Call Trace")
# Each stack with loopback and the virtio driver.  `echo > .../modprobe` first: no module
# autoloading, so that socket(AF_VSOCK) cannot pull in the C stack next to rvsock.
STACKS = {
    "rvsock": dict(load="echo > /proc/sys/kernel/modprobe && insmod rvsock.ko && "
                        "insmod rvsock_loopback.ko && insmod rvsock_virtio.ko",
                   driver="rvsock_virtio", module="rvsock_virtio",
                   unload="rmmod rvsock_virtio; rmmod rvsock_loopback; rmmod rvsock",
                   left=r"^rvsock"),
    "c": dict(load="modprobe vsock_loopback && modprobe vmw_vsock_virtio_transport",
              driver="vmw_vsock_virtio_transport", module="vmw_vsock_virtio_transport",
              unload="modprobe -r vmw_vsock_virtio_transport; modprobe -r vsock_loopback "
                     "vmw_vsock_virtio_transport_common vsock",
              left=r"^(vsock|vmw_vsock)"),
}
T0 = time.monotonic()


class GuestBase:
    """A guest's checks: RESULT lines (suite "virtio", names prefix + name) in `results`."""

    def __init__(self, out, results_name, cid):
        self.out = out
        self.results = os.path.join(out, results_name)
        self.cid = cid
        self.prefix = ""

    def say(self, msg):
        print("[guest %7.2f] %s" % (time.monotonic() - T0, msg), flush=True)

    def report(self, name, ok, secs, msg="", log="-"):
        status = "pass" if ok else "fail"
        name = self.prefix + name
        with open(self.results, "a") as f:
            f.write("RESULT\tvirtio\t%s\t%s\t%.2f\t%s\t%s\n" % (
                name, status, secs, log, " ".join(str(msg).split())[:300] or "-"))
        self.say("%s %s %s" % (status.upper(), name, msg))
        return ok

    @staticmethod
    def sh(cmd, timeout=120):
        """(exit status, output); 124 on timeout."""
        try:
            r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
            return r.returncode, (r.stdout + r.stderr).strip()
        except subprocess.TimeoutExpired:
            return 124, "timed out after %d s" % timeout

    def check_sh(self, name, cmd, timeout=120):
        t = time.monotonic()
        rc, out = self.sh(cmd, timeout)
        return self.report(name, rc == 0, time.monotonic() - t,
                           "" if rc == 0 else "exit %d: %s" % (rc, out[-200:]))

    def load(self, stack):
        return self.check_sh("load the stack: " + stack["load"].split("&& ", 1)[-1],
                             stack["load"])

    def unload(self, stack):
        t = time.monotonic()
        deadline = t + 30
        while True:
            _, out = self.sh(stack["unload"], 60)
            with open("/proc/modules") as f:
                still = [ln.split()[0] for ln in f if re.match(stack["left"], ln)]
            if not still or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # sockets closed just now may hold the module for a moment
        return self.report("unload the stack", not still, time.monotonic() - t,
                           "still loaded: %s (%s)" % (" ".join(still), out) if still else "")

    def local_cid(self):
        t = time.monotonic()
        try:
            with open("/dev/vsock", "rb") as f:
                cid = struct.unpack("I", fcntl.ioctl(f, IOCTL_VM_SOCKETS_GET_LOCAL_CID,
                                                     b"\0" * 4))[0]
        except OSError as e:
            return self.report("/dev/vsock local CID", False, time.monotonic() - t, repr(e))
        return self.report("/dev/vsock local CID is %d" % self.cid, cid == self.cid,
                           time.monotonic() - t, "got %d" % cid)

    def kernel_log(self, name):
        """kmemleak (two scans) and the kernel log since the last call, saved to
        <name>.dmesg.txt and scanned for warnings, lockdep, KASAN and leaks."""
        t = time.monotonic()
        kmemleak = "/sys/kernel/debug/kmemleak"
        leaks = ""
        if os.path.exists(kmemleak):
            for _ in range(2):
                with open(kmemleak, "w") as f:
                    f.write("scan")
            with open(kmemleak) as f:
                leaks = f.read()
            with open(kmemleak, "w") as f:
                f.write("clear")
        log = subprocess.run(["dmesg", "-c"], capture_output=True, text=True,
                             timeout=60).stdout
        path = "%s.dmesg.txt" % name
        with open(os.path.join(self.out, path), "w") as f:
            f.write(log + leaks)
        bad = [ln for ln in (log + leaks).splitlines() if BAD_DMESG.search(ln)]
        self.report("kernel log free of warnings, lockdep, KASAN and leaks", not bad,
                    time.monotonic() - t, bad[0] if bad else "", path)
