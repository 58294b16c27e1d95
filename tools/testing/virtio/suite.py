#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The virtio suite of `make check`: AF_VSOCK through a real virtio-vsock device.

The device is QEMU's vhost-user-vsock-pci backed by rust-vmm's vhost-device-vsock (installed by
setup.sh), with guest memory from a shared memfd.  Nothing here touches a network interface of
the host: the device's host side is Unix sockets, and the guests' own link (vsock_test's TCP
control channel) is a QEMU socket netdev over UDP on 127.0.0.1.

Parts (--part, default all):

  guest-host  one guest (CID 3) and this host, through the device's Unix sockets: each flow of
            flows.py (python, ncat, socat; the guest connecting and the host connecting; data
            up and down; --big bytes each way with python) with rvsock_virtio, routing checks,
            suspend and resume (freeze, restore), sysfs unbind/bind and rmmod with connections
            open; then all of it again with the C driver in the same boot (guest_host.py).
  siblings  two guests on one daemon, in one group (CIDs 3 and 4), booted at once: guest A runs
            rvsock + rvsock_virtio, guest B the C stack (vsock + vmw_vsock_virtio_transport).
            Upstream vsock_test runs across them with A as server and B as client, then the
            reverse (one check per case), then --repeat more runs alternating the directions (one
            check per run), then vsock_uring_test both ways.

Results: RESULT lines (tools/testing/guest/lib.sh's format, suite "virtio") in OUT/results.txt,
logs beside it; a summary on stdout.  Exit status 0 when every check passed or was skipped.
Every wait is bounded: each VM run has --timeout, each tool run --job-timeout.

Environment: RVSOCK_VSOCK_TEST_REPEAT (--repeat, default 5), RVSOCK_VIRTIO_BIG (--big, default
64 MiB; `make check-virtio` asks for 1 GiB), RVSOCK_VIRTIO_JOB_TIMEOUT (--job-timeout).

Usage: tools/testing/virtio/suite.py [--out DIR] [--part PART] [--repeat N] [--timeout S]
"""

import argparse
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tools", "testing", "guest"))
sys.path.insert(0, os.path.join(TOP, "tools", "testing"))
import vsock_pair  # noqa: E402
sys.path.insert(0, HERE)
import flows as F  # noqa: E402
from procgroup import kill_group  # noqa: E402

T0 = time.monotonic()
PARTS = ("guest-host", "siblings", "hostile")


def say(msg):
    print("[%7.1f] %s" % (time.monotonic() - T0, msg), flush=True)


def shell_value(expr):
    """A value from tools/testing/lib.sh (kernel_dir, $VHOST_DEVICE_VSOCK)."""
    out = subprocess.run(["bash", "-c", ". tools/testing/lib.sh && " + expr], cwd=TOP,
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def vudev_binary():
    """tools/testing/vudev's binary, built if it is not (check.py's build step builds it)."""
    path = os.path.join(TOP, "target", "release", "vudev")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "-p", "vudev", "--color=never"],
                       cwd=TOP, check=True, timeout=900, stdout=subprocess.DEVNULL)
    return path


def free_udp_ports(n):
    """n UDP ports on 127.0.0.1 that were free a moment ago."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Results:
    """The RESULT lines of this run, written as they come."""

    def __init__(self, out):
        self.out = out
        self.path = os.path.join(out, "results.txt")
        self.lines = []

    def add(self, name, status, secs, msg="", log="-"):
        line = "RESULT\tvirtio\t%s\t%s\t%.2f\t%s\t%s" % (
            name, status, secs, log, " ".join(msg.split())[:300] or "-")
        self.append(line)

    def append(self, line):
        self.lines.append(line)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        f = line.split("\t")
        mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}.get(f[3], f[3])
        say("  %s %s (%s s)%s" % (mark, f[2], f[4], "" if f[6] == "-" else ": " + f[6]))

    def failed(self):
        return [ln for ln in self.lines if ln.split("\t")[3] == "fail"]


class Daemon:
    """The device's host side, serving the given VMs [(cid, name)] with their sockets in a short
    directory: vhost-device-vsock (kind "uds": the host reaches each guest through Unix sockets)
    or vudev (kind "relay": tools/testing/vudev, a relay between sibling guests that offers
    SEQPACKET; `extra` are more of its options, e.g. a hostile mode)."""

    def __init__(self, vms, logfile, timeout, kind="uds", extra=()):
        self.dir = tempfile.mkdtemp(prefix="rvsock-vv.", dir="/tmp")
        if kind == "uds":
            argv = [shell_value("echo $VHOST_DEVICE_VSOCK")]
            for cid, name in vms:
                argv += ["--vm", "guest-cid=%d,socket=%s,uds-path=%s,groups=siblings" % (
                    cid, self.socket(name), self.uds(name))]
        else:
            argv = [vudev_binary(), "--stats-interval", "30"] + list(extra)
            for cid, name in vms:
                argv += ["--vm", "cid=%d,socket=%s" % (cid, self.socket(name))]
        argv = ["timeout", "--kill-after=5", str(timeout)] + argv
        self.log = open(logfile, "w")
        self.log.write("$ %s\n" % " ".join(argv))
        self.log.flush()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not all(os.path.exists(self.socket(n)) for _, n in vms):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("%s did not create its sockets within 10 s (log: %s)"
                                   % (argv[3], logfile))
            time.sleep(0.1)

    def socket(self, name):
        return os.path.join(self.dir, name + ".sock")

    def uds(self, name):
        return os.path.join(self.dir, name + ".vsock")

    def stop(self):
        kill_group(self.proc, grace=5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class VM:
    """One run.sh boot in the background; its output goes to LOG.run.log."""

    def __init__(self, name, out, cmd, timeout, vhost_user_socket, qemu_opts, memory="1G",
                 cpus=1):
        self.name = name
        self.console = os.path.join(out, name + ".console.log")
        self.runlog = os.path.join(out, name + ".run.log")
        self.timeout = timeout
        argv = [os.path.join(TOP, "tools/testing/vm/run.sh"), "--timeout", str(timeout),
                "--log", self.console, "--rwdir", out, "--memory", memory, "--cpus", str(cpus),
                "--vhost-user-socket", vhost_user_socket]
        if qemu_opts:
            argv += ["--qemu-opts", qemu_opts]
        argv += ["--",
                 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin " + cmd]
        self.t0 = time.monotonic()
        with open(self.runlog, "w") as log:
            self.proc = subprocess.Popen(argv, cwd=TOP, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self):
        """The run's exit status (None if the host had to kill it) and its seconds."""
        try:
            rc = self.proc.wait(timeout=self.timeout + 60)
        except subprocess.TimeoutExpired:
            kill_group(self.proc, grace=25)
            rc = None
        return rc, time.monotonic() - self.t0


def vm_check(results, vm, rc, secs, prefix=""):
    why = {None: "host-side timeout", 0: "", 124: "timed out after %d s" % vm.timeout,
           255: "guest died (exit 255)"}.get(rc, "exit %s" % rc)
    results.add("%s%s: boot and run" % (prefix, vm.name), "pass" if rc == 0 else "fail", secs,
                why + ("; console log: %s" % vm.console if why else ""),
                os.path.relpath(vm.console, results.out))


# ---- guest-host ---------------------------------------------------------------------------

class HostSide:
    """The host ends of the guest-host part: listeners on <uds>_P for the flows where the guest
    connects; for those where the host connects, "CONNECT P" on <uds> when the guest asks for
    it on <uds>_TRIGGER_PORT ("CONNECT-ME P" once its listener is up), retried for a while as
    the daemon drops a CONNECT that comes before the listener; and the routing and holding
    listeners.  Receivers record their checks in results, senders only their failures: the
    guest checks what it receives.  (No CONNECT is tried blindly: vhost-device-vsock 0.3.0
    stops serving a guest whose device is reset while a host CONNECT waits for its answer.)"""

    def __init__(self, results, uds, deadline, big, drivers):
        self.results, self.uds, self.deadline = results, uds, deadline
        self.stop = threading.Event()
        self.threads = []
        self.lock = threading.Lock()
        self.pending = set()  # tags of the host ends not done yet
        self.on_demand = {}
        for driver in drivers:
            base = F.port_base(driver)
            for flow in F.flows(driver, big) + [F.after_rebind(driver)] + F.after_resume(driver):
                tag = "%s: host end of flow %s (port %d)" % (driver, flow.name, flow.port)
                self.pending.add(tag)
                handler = lambda c, f=flow, t=tag: self.serve(c, f, t)  # noqa: E731
                if flow.connector == "guest":
                    self.spawn(self.listen, tag, flow.port, handler)
                else:
                    self.on_demand[flow.port] = (tag, handler)
            for port in (base + F.ROUTE, base + F.ROUTE + 1):
                self.spawn(self.listen, None, port, lambda c, p=port: c.sendall(
                    b"routed %d\n" % p))
            for port in F.holds(driver):
                tag = "%s: the host's end of a connection the guest's removal or suspend cut " \
                      "(port %d)" % (driver, port)
                self.spawn(self.listen, None, port, lambda c, t=tag: self.hold(c, t))
        self.spawn(self.listen, None, F.TRIGGER_PORT, self.trigger)

    def spawn(self, target, tag, port, handler):
        th = threading.Thread(target=target, args=(tag, port, handler), daemon=True)
        th.start()
        self.threads.append(th)

    def done(self, tag, ok, secs, msg=""):
        with self.lock:
            self.pending.discard(tag)
        if not ok or msg != "sent":
            self.results.add(tag, "pass" if ok else "fail", secs, "" if msg == "sent" else msg)

    def trigger(self, c):
        c.settimeout(10)
        try:
            cmd, _, port = F.recv_line(c).partition(" ")
            tag, handler = self.on_demand[int(port)]
        except (OSError, ValueError, KeyError) as e:
            say("  host: a bad trigger: %r" % e)
            return
        if cmd == "CONNECT-ME":
            self.spawn(self.connect, tag, int(port), handler)

    def serve(self, c, flow, tag):
        t = time.monotonic()
        c.settimeout(max(10, self.deadline - time.monotonic()))
        try:
            if flow.direction == "down":
                F.send_pattern(c, flow, 1 << 20)
                c.shutdown(socket.SHUT_WR)
                c.recv(1)  # the guest closes when it has it all
                self.done(tag, True, time.monotonic() - t, "sent")
                return
            n, dig = F.recv_digest(c, flow.size)
            ok = n == flow.size and dig == F.digest(flow)
            secs = time.monotonic() - t
            msg = ("%.2f MiB/s" % (n / secs / (1 << 20)) if ok and n >= 1 << 20 else
                   "" if ok else "got %d bytes of %d, sha256 %s" % (
                       n, flow.size, "ok" if dig == F.digest(flow) else "wrong"))
            self.done(tag, ok, secs, msg)
        except OSError as e:
            self.done(tag, False, time.monotonic() - t, repr(e))

    def hold(self, c, tag):
        """Says "held", then waits for the guest's side to go: EOF or a reset, both fine."""
        c.sendall(b"held\n")
        c.settimeout(max(10, self.deadline - time.monotonic()))
        try:
            got = c.recv(1)
            how = "EOF" if not got else "data %r" % got
        except OSError as e:
            how = errno.errorcode.get(e.errno, repr(e))
        say("  host: %s: %s" % (tag, how))

    def listen(self, tag, port, handler):
        path = "%s_%d" % (self.uds, port)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(path)
        ls.listen(4)
        ls.settimeout(1)
        try:
            while not self.stop.is_set():
                try:
                    c, _ = ls.accept()
                except socket.timeout:
                    continue
                if tag:  # a flow's listener: one connection
                    with c:
                        handler(c)
                    return
                threading.Thread(target=self.serve_closing, args=(handler, c),
                                 daemon=True).start()
        finally:
            ls.close()

    @staticmethod
    def serve_closing(handler, c):
        with c:
            handler(c)

    def connect(self, tag, port, handler, patience=60):
        """CONNECT port through the device's socket, retried until the guest listens."""
        give_up = min(self.deadline, time.monotonic() + patience)
        while not self.stop.is_set() and time.monotonic() < give_up:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(self.uds)
                s.sendall(b"CONNECT %d\n" % port)
                if F.recv_line(s).startswith("OK"):
                    with s:
                        handler(s)
                    return
            except OSError:
                pass
            s.close()
            self.stop.wait(0.5)
        self.done(tag, False, patience, "CONNECT %d: no answer from the guest" % port)

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=5)
        for tag in sorted(self.pending):
            self.results.add(tag, "fail", 0.0, "the guest never came for it")


def part_guest_host(results, out, args, _kdir):
    daemon = Daemon([(3, "g")], os.path.join(out, "vhost-device-vsock.guest-host.log"),
                    args.timeout + 120)
    drivers = args.drivers.split(",")
    host = HostSide(results, daemon.uds("g"), time.monotonic() + args.timeout, args.big,
                    drivers)
    say("guest-host: one guest (CID 3): rvsock_virtio, then the C driver; big flows %d MiB; "
        "VM limit %d s" % (args.big >> 20, args.timeout))
    vm = None
    try:
        cmd = ("python3 tools/testing/virtio/guest_host.py --out %s --cid 3 --big %d "
               "--timeout %d --drivers %s" % (out, args.big, args.job_timeout, args.drivers))
        vm = VM("guest-host", out, cmd, args.timeout, daemon.socket("g"), "", cpus=2)
        rc, secs = vm.wait()
    finally:
        if vm and vm.proc.poll() is None:
            kill_group(vm.proc, grace=25)
        host.finish()
        daemon.stop()
    vm_check(results, vm, rc, secs)
    try:
        with open(os.path.join(out, "guest.results.txt")) as f:
            for line in f:
                results.append(line.rstrip("\n"))
    except OSError:
        results.add("guest-host: guest checks", "fail", 0.0, "the guest reported nothing")


# ---- siblings -----------------------------------------------------------------------------

class Replayed(vsock_pair.Side):
    """A side of a tool run that a guest recorded (JOB.ROLE.json), for vsock_pair's judge."""

    def __init__(self, role, rec):  # pylint: disable=super-init-not-called
        self.name = role
        self.chunks = [tuple(c) for c in rec["chunks"]]
        self.proc = types.SimpleNamespace(returncode=rec["rc"], args=rec["argv"])
        self.killed = rec["killed"]
        self.limit = rec["limit"]
        end = self.chunks[-1][0] if self.chunks else 0.0
        self.start = time.monotonic() - end


def load_side(out, label, role):
    try:
        with open(os.path.join(out, "%s.%s.json" % (label, role))) as f:
            return Replayed(role, json.load(f))
    except (OSError, ValueError):
        return None


def judge_job(results, out, label, tool, names, summary=None, source=None, prefix=""):
    """Results of one cross-guest tool run from both sides' records."""
    args = types.SimpleNamespace(tool=tool, source=source, prefix=prefix, out=out)
    server, client = load_side(out, label, "server"), load_side(out, label, "client")
    errbase = os.path.join(out, label)
    log = os.path.relpath(os.path.join(out, label + ".log"), results.out)
    for role, side in (("server", server), ("client", client)):
        if side is None:  # judge() reads the .err of the sides it has
            open("%s.%s.err" % (errbase, role), "a").close()
    if server is None:
        results.add(summary or "%s%s: all cases" % (prefix, names), "fail", 0.0,
                    "the server side (%s) recorded nothing: see its console log" % label)
        return
    vsock_pair.write_log(errbase + ".log", args, server, client, errbase)
    cases = vsock_pair.judge(args, server, client, errbase)
    failed = [c for c in cases if c[1] == "fail"]
    if summary:
        secs = max(s.chunks[-1][0] if s.chunks else 0.0 for s in (server, client) if s)
        if not cases:
            results.add(summary, "fail", secs, "no test cases found", log)
        elif failed:
            results.add(summary, "fail", secs, "%d of %d cases failed, first: %s: %s" % (
                len(failed), len(cases), failed[0][0], failed[0][3]), log)
        else:
            results.add(summary, "pass", secs, "all %d ok" % len(cases), log)
        return
    for name, status, secs, msg in cases:
        results.add("%s: %s" % (names, name), status, secs, msg, log)


SIBLINGS = {"A": dict(cid=3, stack="rvsock", addr="10.57.0.3"),
            "B": dict(cid=4, stack="c", addr="10.57.0.4")}


def sibling_plan(repeat):
    """[(label, server guest, tool, summary check name or None)]: vsock_test both ways (a check
    per case), `repeat` more runs alternating (a check per run), vsock_uring_test both ways."""
    plan = [("ab", "A", "vsock_test", None), ("ba", "B", "vsock_test", None)]
    for r in range(1, repeat + 1):
        srv = "A" if r % 2 else "B"
        plan.append(("rep%d" % r, srv, "vsock_test", "vsock_test repeat %d/%d (%s server)" % (
            r, repeat, SIBLINGS[srv]["stack"])))
    return plan + [("uring-ab", "A", "vsock_uring_test", None),
                   ("uring-ba", "B", "vsock_uring_test", None)]


def sibling_boot(results, out, args, kdir, plan, prefix="", extra=()):
    """Boots guests A and B at once on one vudev and runs plan across them; checks are named
    prefix + ..., files go to out."""
    os.makedirs(out, exist_ok=True)
    vsock_dir = os.path.join(kdir, "vsock")
    jobs = {"A": [], "B": []}
    for i, (label, srv, tname, _) in enumerate(plan):
        for g in "AB":
            jobs[g].append("%s:%s:%s:%d" % (label, "server" if g == srv else "client", tname,
                                            9100 + i))
    ports = free_udp_ports(2)
    daemon = Daemon([(SIBLINGS[g]["cid"], g) for g in "AB"], os.path.join(out, "vudev.log"),
                    args.timeout + 120, kind="relay", extra=extra)
    say("%sA (CID 3, rvsock + rvsock_virtio) and B (CID 4, C stack) on vudev%s: %d tool runs "
        "across them; VM limit %d s" % (prefix, " " + " ".join(extra) if extra else "",
                                         len(plan), args.timeout))
    vms, waits = [], {}
    try:
        for k, g in enumerate("AB"):
            me, peer = SIBLINGS[g], SIBLINGS["B" if g == "A" else "A"]
            netdev = ("-netdev socket,id=ctl,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d "
                      "-device virtio-net-pci,netdev=ctl,mac=52:54:00:57:00:%02x"
                      % (ports[1 - k], ports[k], me["cid"]))
            cmd = ("python3 tools/testing/virtio/guest_siblings.py --name %s --stack %s "
                   "--cid %d --peer-cid %d --addr %s --peer-addr %s --vsock-dir %s --out %s "
                   "--timeout %d %s" % (g, me["stack"], me["cid"], peer["cid"], me["addr"],
                                        peer["addr"], vsock_dir, out, args.job_timeout,
                                        " ".join("--job " + j for j in jobs[g])))
            vms.append(VM(g, out, cmd, args.timeout, daemon.socket(g), netdev))
        threads = [threading.Thread(target=lambda v=v: waits.__setitem__(v.name, v.wait()))
                   for v in vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for v in vms:
            if v.proc.poll() is None:
                kill_group(v.proc, grace=25)
        daemon.stop()
    for v in vms:
        rc, secs = waits.get(v.name, (None, 0.0))
        vm_check(results, v, rc, secs, prefix)
        try:
            with open(os.path.join(out, "%s.results.txt" % v.name)) as f:
                for line in f:
                    f7 = line.rstrip("\n").split("\t")
                    if len(f7) == 7:
                        f7[2] = prefix + f7[2]
                        f7[5] = os.path.relpath(os.path.join(out, f7[5]), results.out) \
                            if f7[5] != "-" else "-"
                        results.append("\t".join(f7))
        except OSError:
            results.add("%s%s: guest checks" % (prefix, v.name), "fail", 0.0,
                        "the guest reported nothing")
    tool = os.path.join(kdir, "vsock", "vsock_test")
    uring = os.path.join(kdir, "vsock", "vsock_uring_test")
    uring_src = os.path.join(os.path.dirname(os.path.realpath(uring)), "vsock_uring_test.c")
    for label, srv, tname, summary in plan:
        who = ("rvsock server (A), C client (B)" if srv == "A"
               else "C server (B), rvsock client (A)")
        if tname == "vsock_test":
            judge_job(results, out, label, tool, prefix + "vsock_test " + who,
                      summary and prefix + summary)
        else:
            judge_job(results, out, label, uring, prefix + "vsock_uring_test " + who,
                      source=uring_src)


def part_siblings(results, out, args, kdir):
    sibling_boot(results, os.path.join(out, "siblings"), args, kdir, sibling_plan(args.repeat))


def part_hostile(results, out, args, kdir):
    """vudev turns hostile towards A (rvsock) in the middle of vsock_test in both directions:
    truncated buffers, lengths beyond what it wrote, wrong CIDs, bad ops and types, floods of
    RST and REQUEST, mixed with the relayed traffic (every second delivery to A)."""
    plan = [("ab", "A", "vsock_test", "vsock_test with hostile packets (rvsock server)"),
            ("ba", "B", "vsock_test", "vsock_test with hostile packets (rvsock client)")]
    sibling_boot(results, os.path.join(out, "hostile"), args, kdir, plan, "hostile: ",
                 ["--hostile", "random,count=%d,seed=%d,every=2" % (args.hostile_count,
                                                                    args.seed),
                  "--hostile-target", "3"])
    try:
        with open(os.path.join(out, "hostile", "vudev.log"), errors="replace") as f:
            n = sum("hostile:" in ln for ln in f)
    except OSError:
        n = 0
    results.add("hostile: packets injected into A", "pass" if n else "fail", 0.0,
                "%d (vudev.log)" % n if n else "vudev logged no hostile packet",
                os.path.join("hostile", "vudev.log"))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(TOP, "target", "virtio"))
    ap.add_argument("--part", action="append", choices=PARTS)
    ap.add_argument("--repeat", type=int, default=int(os.environ.get(
        "RVSOCK_VSOCK_TEST_REPEAT", "5")))
    ap.add_argument("--timeout", type=int, default=1500, help="limit of each VM run (s)")
    ap.add_argument("--job-timeout", type=int, default=int(os.environ.get(
        "RVSOCK_VIRTIO_JOB_TIMEOUT", "300")), help="limit of one tool run or flow (s)")
    ap.add_argument("--drivers", default=",".join(F.DRIVERS),
                    help="guest-host: the drivers, in the order of their turns")
    ap.add_argument("--hostile-count", type=int, default=2000,
                    help="hostile: packets vudev injects")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000,
                    help="hostile: vudev's seed (printed; give it again to replay)")
    ap.add_argument("--big", type=int, default=int(os.environ.get(
        "RVSOCK_VIRTIO_BIG", 64 << 20)), help="bytes each way of the big guest-host flows")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    results = Results(args.out)
    kdir = shell_value("kernel_dir")
    if not os.path.exists(os.path.join(kdir, ".complete")):
        results.add("test kernel", "fail", 0.0, "no test kernel in %s (make setup)" % kdir)
        return 1
    for part in args.part or PARTS:
        t = time.monotonic()
        try:
            {"guest-host": part_guest_host, "siblings": part_siblings,
             "hostile": part_hostile}[part](results, args.out, args, kdir)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            results.add("%s: harness" % part, "fail", time.monotonic() - t, repr(e))
        say("%s: done in %.0f s" % (part, time.monotonic() - t))
    n_fail = len(results.failed())
    n_pass = sum(ln.split("\t")[3] == "pass" for ln in results.lines)
    say("virtio: %d passed, %d failed (results: %s)" % (n_pass, n_fail, results.path))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
