#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""The guest of the guest-host part of tools/testing/virtio/suite.py: runs as root in a test VM
booted with a vhost-user-vsock device (guest CID --cid), with the repository root as its working
directory, while suite.py serves the host ends of the flows (flows.py).

For each driver in --drivers, in one boot: load it with its stack and loopback (rvsock:
rvsock.ko, rvsock_loopback.ko, rvsock_virtio.ko; c: vsock_loopback, vmw_vsock_virtio_transport),
check the device's CID, run every flow with the host (python, ncat, socat; both connection
roles; both ways; one big python flow each way), check routing (CID 1 and our own CID to
loopback, CID 2 and VMADDR_FLAG_TO_HOST to the device), suspend and resume the device with
connections open and a listener bound (tools/testing/pm/rvsock_pm_cycle.ko: the driver's freeze
and restore; the connections are reset, the listener and new connections work), then removal:
unbind the device in sysfs
with connections open (they are reset), bind it again (traffic works), unload the driver with
connections open (rvsock_virtio resets them; the C driver refuses, as upstream), and unload the
stack.  After each driver: kmemleak and the kernel log.

Checks go to OUT/guest.results.txt as RESULT lines (suite "virtio", names "<driver>: ...").
Every wait is bounded.
"""

import argparse
import errno
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import flows as F
from guest_common import STACKS, GuestBase

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vsockpy  # noqa: E402

TO_HOST = vsockpy.VMADDR_FLAG_TO_HOST
# Loading it suspends and resumes the virtio-vsock device (freeze, restore); see its source.
PM_CYCLE = "rvsock_pm_cycle.ko"


class Guest(GuestBase):
    def __init__(self, args):
        super().__init__(args.out, "guest.results.txt", args.cid)
        self.args = args
        self.driver = ""
        # Listeners bound ahead of their flow (port -> socket), taken by flow_python.
        self.listeners = {}

    # ---- flows ----------------------------------------------------------------------------

    def flow(self, flow):
        t = time.monotonic()
        try:
            if flow.tool == "python":
                ok, msg = self.flow_python(flow)
            else:
                ok, msg = self.flow_tool(flow)
        except OSError as e:
            ok, msg = False, repr(e)
        secs = time.monotonic() - t
        mib_s = flow.size / secs / (1 << 20) if ok and secs > 0 else 0
        if ok and flow.size >= 1 << 20:
            msg = "%.2f MiB/s" % mib_s
        # The receiver checks the data; a sender reports only its failures.
        if flow.direction == "down" or not ok:
            self.report("flow %s (port %d)" % (flow.name, flow.port), ok, secs, msg)
        else:
            self.say("sent flow %s in %.2f s %s" % (flow.name, secs, msg))

    def flow_python(self, flow):
        timeout = self.args.timeout
        if flow.connector == "guest":
            s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((2, flow.port))
        else:
            ls = self.listeners.pop(flow.port, None)
            if ls is None:
                ls = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
                ls.bind((socket.VMADDR_CID_ANY, flow.port))
                ls.listen(1)
            ls.settimeout(timeout)
            self.trigger(flow.port)
            try:
                s, _ = ls.accept()
            finally:
                ls.close()
            s.settimeout(timeout)
        with s:
            if flow.direction == "up":
                F.send_pattern(s, flow)
                try:
                    s.shutdown(socket.SHUT_WR)
                    s.recv(1)  # the host closes when it has it all
                except (ConnectionResetError, BrokenPipeError):
                    pass
                except OSError as e:  # the host may have closed first
                    if e.errno != errno.ENOTCONN:
                        raise
                return True, ""
            n, dig = F.recv_digest(s, flow.size)
        return (n == flow.size and dig == F.digest(flow),
                "got %d bytes of %d, sha256 %s" % (n, flow.size,
                                                   "ok" if dig == F.digest(flow) else "wrong"))

    def flow_tool(self, flow):
        path = "/tmp/flow.%d" % flow.port
        p = flow.port
        up = flow.direction == "up"
        if up:
            with open(path, "wb") as f:
                for c in F.pattern_chunks(flow):
                    f.write(c)
        cmds = {
            ("ncat", "guest", True): "ncat --vsock --send-only 2 %d <%s" % (p, path),
            ("ncat", "guest", False): "ncat --vsock --recv-only 2 %d >%s" % (p, path),
            ("ncat", "host", True): "ncat --vsock -l --send-only %d <%s" % (p, path),
            ("ncat", "host", False): "ncat --vsock -l --recv-only %d >%s" % (p, path),
            ("socat", "guest", True): "socat -u OPEN:%s VSOCK-CONNECT:2:%d" % (path, p),
            ("socat", "guest", False): "socat -u VSOCK-CONNECT:2:%d CREATE:%s" % (p, path),
            ("socat", "host", True): "socat -u OPEN:%s VSOCK-LISTEN:%d" % (path, p),
            ("socat", "host", False): "socat -u VSOCK-LISTEN:%d CREATE:%s" % (p, path),
        }
        cmd = cmds[(flow.tool, flow.connector, up)]
        if flow.connector == "host":
            # The tool listens in the background; the host retries CONNECT until it does.
            proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            self.trigger(flow.port)
            try:
                out, _ = proc.communicate(timeout=self.args.timeout)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                rc = 124
        else:
            rc, out = self.sh(cmd, self.args.timeout)
        if rc != 0 or up:
            os.unlink(path)
            return rc == 0, "" if rc == 0 else "exit %d: %s" % (rc, out[-200:])
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        ok = hashlib.sha256(data).hexdigest() == F.digest(flow)
        return ok, "got %d bytes of %d, sha256 %s" % (len(data), flow.size,
                                                      "ok" if ok else "wrong")

    def trigger(self, port):
        """Asks the host to connect to our listener on port (see suite.py's HostSide)."""
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect((2, F.TRIGGER_PORT))
            s.sendall(b"CONNECT-ME %d\n" % port)

    # ---- routing --------------------------------------------------------------------------

    @staticmethod
    def connect(cid, port, flags=0, timeout=5):
        """A connected AF_VSOCK stream socket to (cid, port, flags), or an errno name."""
        s, e = vsockpy.connect(cid, port, flags, timeout)
        return s if s else errno.errorcode.get(e, str(e))

    def routing(self, base):
        # The host answers "routed <port>" to a connection on ROUTE and ROUTE + 1.
        for name, flags, port in (("CID 2 goes to the host", 0, base + F.ROUTE),
                                  ("CID 2 with VMADDR_FLAG_TO_HOST goes to the host", TO_HOST,
                                   base + F.ROUTE + 1)):
            t = time.monotonic()
            s = self.connect(2, port, flags)
            if isinstance(s, str):
                self.report("routing: " + name, False, time.monotonic() - t, "connect: " + s)
                continue
            with s:
                got = F.recv_line(s)
            self.report("routing: " + name, got == "routed %d" % port, time.monotonic() - t,
                        "the host answered %r" % got)
        # CID 1 and our own CID reach a listener of ours: the device never loops back.
        ls = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        ls.bind((socket.VMADDR_CID_ANY, base + F.LOCAL))
        ls.listen(4)
        ls.settimeout(5)
        for name, cid in (("CID 1 goes to loopback", 1),
                          ("our own CID %d goes to loopback" % self.cid, self.cid)):
            t = time.monotonic()
            s = self.connect(cid, base + F.LOCAL)
            if isinstance(s, str):
                self.report("routing: " + name, False, time.monotonic() - t, "connect: " + s)
                continue
            try:
                c, peer = ls.accept()
                c.sendall(b"x")
                ok = s.recv(1) == b"x"
                c.close()
                msg = "accepted from %r" % (peer,)
            except OSError as e:
                ok, msg = False, "accept: %r" % e
            s.close()
            self.report("routing: " + name, ok, time.monotonic() - t, msg)
        ls.close()

    # ---- suspend --------------------------------------------------------------------------

    def suspend(self, base):
        """Suspend and resume the device with connections open and a listener bound.

        Upstream's freeze resets the device's connections as a removal does
        (virtio_vsock_vqs_del); restore finds the queues again and re-reads the CID.  Listeners
        stay: the host connects to one bound before the suspend, and the guest to the host."""
        down, up = F.after_resume(self.driver)
        ls = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        ls.bind((socket.VMADDR_CID_ANY, down.port))
        ls.listen(1)
        self.listeners[down.port] = ls
        self.cut("suspend", "freeze and restore",
                 "insmod %s && rmmod rvsock_pm_cycle" % PM_CYCLE, base + F.SUSPEND)
        _, log = self.sh("dmesg | grep -E 'rvsock_pm_cycle|virtio.*(frozen|freeze|restore)' "
                         "| tail -4")
        self.say("after the suspend: %s" % log.replace("\n", " | "))
        self.local_cid()
        self.flow(down)
        self.flow(up)
        self.listeners.pop(down.port, ls).close()

    # ---- removal --------------------------------------------------------------------------

    def held(self, port):
        """A connection to the host's holding listener on port (it answers "held")."""
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect((2, port))
        if F.recv_line(s) != "held":
            raise OSError("no 'held' from the host")
        return s

    def removal(self, stack, base):
        """Unbind with connections open, bind again, then unload the driver the same way.

        Upstream resets the connections of a removed device (virtio_vsock_reset_sock):
        a reader blocked in recv() gets ECONNRESET, a later recv() ENOTCONN with the reset
        pending in SO_ERROR.  The C driver cannot be unloaded while a socket uses it (each
        socket holds a module reference); rvsock_virtio can, and resets its connections."""
        drvdir = "/sys/bus/virtio/drivers/%s" % stack["driver"]
        devs = [d for d in os.listdir(drvdir) if d.startswith("virtio")] if os.path.isdir(
            drvdir) else []
        if len(devs) != 1:
            return self.report("removal: the device is bound to %s" % stack["driver"], False,
                               0.0, "devices: %r" % devs)
        dev = devs[0]
        self.cut("removal", "sysfs unbind", "echo %s > %s/unbind" % (dev, drvdir),
                 base + F.HOLD)
        if self.check_sh("removal: sysfs bind again", "echo %s > %s/bind" % (dev, drvdir)):
            self.local_cid()
            self.flow(F.after_rebind(self.driver))
        if self.driver == "rvsock":
            self.cut("removal", "rmmod %s" % stack["module"], "rmmod %s" % stack["module"],
                     base + F.HOLD + 1)
            return
        try:
            s = self.held(base + F.HOLD + 1)
        except OSError as e:
            return self.report("removal: hold a connection to the host", False, 0.0, repr(e))
        t = time.monotonic()
        rc, out = self.sh("rmmod %s" % stack["module"], 60)
        self.report("removal: rmmod %s with a connection open is refused (module in use)"
                    % stack["module"], rc != 0 and "in use" in out, time.monotonic() - t,
                    "exit %d: %s" % (rc, out))
        s.close()

    def cut(self, check, what, action, port):
        """Two connections to the host, one with a reader blocked in recv(); then action, which
        must reset both.  Reported as "<check>: <what> ..."."""
        try:
            blocked, idle = self.held(port), self.held(port)
        except OSError as e:
            return self.report("%s: hold connections to the host" % check, False, 0.0, repr(e))
        got = {}
        blocked.settimeout(None)  # a recv() blocked in the kernel, not in poll()

        def reader():
            try:
                got["recv"] = blocked.recv(1)
            except OSError as e:
                got["errno"] = e.errno
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        time.sleep(0.5)
        t = time.monotonic()
        rc, out = self.sh(action, 60)
        if rc != 0:
            self.report("%s: %s with connections open" % (check, what), False,
                        time.monotonic() - t, "%s: exit %d: %s" % (action, rc, out))
        else:
            th.join(10)
            name = errno.errorcode.get(got.get("errno"), got)
            self.report("%s: %s wakes a blocked recv() with ECONNRESET" % (check, what),
                        got.get("errno") == errno.ECONNRESET, time.monotonic() - t,
                        "recv: %s" % name)
            idle.settimeout(5)
            try:
                b = idle.recv(1)
                e = "returned %r" % b
            except OSError as err:
                e = errno.errorcode.get(err.errno, err.errno)
            so = idle.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.report("%s: %s: a later recv() gives ENOTCONN, SO_ERROR ECONNRESET"
                        % (check, what),
                        e == "ENOTCONN" and so == errno.ECONNRESET, time.monotonic() - t,
                        "recv: %s, SO_ERROR %s" % (e, errno.errorcode.get(so, so)))
        blocked.close()
        idle.close()

    def turn(self, driver):
        self.driver = driver
        self.prefix = driver + ": "
        stack = STACKS[driver]
        base = F.port_base(driver)
        if self.load(stack) and self.local_cid():
            for flow in F.flows(driver, self.args.big):
                self.flow(flow)
            self.routing(base)
            self.suspend(base)
            self.removal(stack, base)
        self.unload(stack)
        self.kernel_log("guest." + driver)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cid", type=int, required=True)
    ap.add_argument("--drivers", default=",".join(F.DRIVERS))
    ap.add_argument("--big", type=int, required=True, help="bytes of the big flows")
    ap.add_argument("--timeout", type=int, default=120, help="seconds one flow may take")
    args = ap.parse_args()
    g = Guest(args)
    g.sh("dmesg -c >/dev/null")
    for driver in args.drivers.split(","):
        g.turn(driver)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "guest"
    sys.exit(main())
