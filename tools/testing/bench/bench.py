#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""`make bench`: rvsock against the upstream C vsock stack, loopback (CID 1), in one VM boot.

Builds what is missing (the benchmark kernel without debug options, the samples, our modules
against that kernel in a copy of the tree under target/bench/src), boots the benchmark kernel
once and runs tools/testing/bench/guest.py in it: several rounds, in each the C stack and then
rvsock (C, rvsock, C, rvsock, ...), each loaded alone, then TCP 127.0.0.1 and AF_UNIX as
references.  Results go to target/bench/<UTC timestamp>/ (target/bench/latest points at the
newest): results.json (every raw figure, per round and stack, plus the summary), table.txt
(also printed), chart.png, the console log and the tools' output (guest-logs/).

--transport virtio: guest to host over a virtio-vsock device instead (vudev, our vhost-user
device, with its host endpoint --host-uds; the sample servers listen on the host's Unix sockets
behind it), C driver (vmw_vsock_virtio_transport) against rvsock_virtio, and the C stack a second
time ("C2") in each round as the calibration: C, rvsock, C2, C, rvsock, C2, ...

Method: by default QEMU runs with `-icount shift=0,sleep=off` under TCG (--mode icount): guest
time then counts executed instructions (1 ns each), so the figures mean "per instruction" and
do not move with host load; compare stacks by their ratio within one boot.  --mode wallclock
drops icount (and uses KVM where it works).

Every step is bounded: the builds, each benchmark in the guest (guest seconds) and the VM as a
whole (--vm-timeout, host seconds); a hang ends with the console log's path.
"""

import argparse
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BENCH = os.path.join(TOP, "tools", "testing", "bench")
TESTING = os.path.join(TOP, "tools", "testing")
sys.path.insert(0, TESTING)
from procgroup import kill_group  # noqa: E402
OUTROOT = os.path.join(TOP, "target", "bench")
FRAGMENT = os.path.join(TESTING, "kernel", "bench.config")
CACHE = os.environ.get("RVSOCK_CACHE", "/var/cache/rvsock")
MATPLOTLIB = "matplotlib==3.10.8"
ICOUNT_OPTS = "-icount shift=0,sleep=off"
# --transport virtio: idle time runs at real time (see README, "make bench --transport virtio").
ICOUNT_OPTS_SLEEP = "-icount shift=0,sleep=on"
GUEST_CID = 3
# Host ports of the sample servers behind vudev's host endpoint (guest connects to CID 2).
HOST_PORTS = {"vsock-stream-bench": 5001, "vsock-pingpong": 5002, "vsock-connrate": 5003}
CALIBRATION_TOLERANCE = 0.03

T_KERNEL = 90 * 60
T_CARGO = 20 * 60
T_MODULES = 20 * 60
T_PIP = 10 * 60

START = time.monotonic()


def progress(msg):
    t = int(time.monotonic() - START)
    print("[%02d:%02d] %s" % (t // 60, t % 60, msg), flush=True)


def die(msg):
    progress("error: " + msg)
    sys.exit(1)


# ---- helpers -------------------------------------------------------------------------------

def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", s.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError("not a size: %r (use e.g. 64K, 1G)" % s)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def human_size(n):
    for unit, suffix in ((1 << 30, " GiB"), (1 << 20, " MiB"), (1 << 10, " KiB")):
        if n >= unit and n % unit == 0:
            return "%d%s" % (n // unit, suffix)
    return "%d B" % n


def run_logged(name, argv, logfile, timeout, env=None, cwd=TOP, hint=None):
    """Runs argv with its output in logfile, in its own process group, bounded; dies on failure."""
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    progress("%s (log: %s)" % (name, os.path.relpath(logfile, TOP)))
    t0 = time.monotonic()
    with open(logfile, "w") as log:
        log.write("$ %s\n" % " ".join(argv))
        log.flush()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        rc = wait_bounded(proc, timeout, name)
    secs = time.monotonic() - t0
    if rc != 0:
        sys.stdout.write(tail(logfile, 30))
        why = "timed out after %d s" % timeout if rc is None else "failed (exit %d)" % rc
        if hint:
            progress(hint)
        die("%s %s; full log: %s" % (name, why, logfile))
    progress("%s: done in %d s" % (name, secs))
    return secs


def wait_bounded(proc, timeout, name):
    t0 = time.monotonic()
    try:
        while True:
            try:
                return proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if time.monotonic() - t0 > timeout:
                    kill_group(proc)
                    return None
                progress("  ... %s: %d s" % (name, time.monotonic() - t0))
    except KeyboardInterrupt:
        kill_group(proc)
        raise


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def lib_sh(expr, fragment=FRAGMENT):
    env = dict(os.environ, KERNEL_FRAGMENT=fragment)
    out = subprocess.run(["bash", "-c", ". tools/testing/lib.sh && " + expr], cwd=TOP, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def git(*args):
    r = subprocess.run(["git"] + list(args), cwd=TOP, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


# ---- builds --------------------------------------------------------------------------------

def ensure_kernel(logdir):
    kdir = lib_sh("kernel_dir")
    if not os.path.exists(os.path.join(kdir, ".complete")):
        env = dict(os.environ, KERNEL_FRAGMENT=FRAGMENT)
        run_logged("build the benchmark kernel (bench.config; about 10 minutes on 2 cores)",
                   [os.path.join(TESTING, "kernel", "build.sh")],
                   os.path.join(logdir, "kernel-build.log"), T_KERNEL, env=env)
    for f in ("build/arch/x86/boot/bzImage", "vsock/vsock_perf"):
        if not os.path.exists(os.path.join(kdir, f)):
            die("%s missing from the benchmark kernel %s" % (f, kdir))
    return kdir


def build_samples(logdir, vudev=False):
    pkgs = ["-p", "rvsock-samples"] + (["-p", "vudev"] if vudev else [])
    run_logged("build the samples (cargo build --release %s)" % " ".join(pkgs),
               ["cargo", "build", "--release"] + pkgs,
               os.path.join(logdir, "cargo.log"), T_CARGO)
    rel = os.path.join(TOP, "target", "release")
    for t in ("vsock-pingpong", "vsock-stream-bench", "vsock-connrate", "vsock-pairs") + (
            ("vudev",) if vudev else ()):
        if not os.access(os.path.join(rel, t), os.X_OK):
            die("%s was not built" % t)
    return rel


def build_modules(kdir, logdir):
    """Builds rvsock.ko and rvsock_loopback.ko against the benchmark kernel in a copy of the tree.

    Kbuild writes its objects next to the sources, so the normal build (against the test kernel)
    and this one cannot share a directory.  The copy holds the tracked and untracked-not-ignored
    files as they are in the work tree (uncommitted changes included: the results say so), and
    keeps its objects between runs (rsync keeps the times, so make rebuilds only what changed).
    """
    src = os.path.join(OUTROOT, "src")
    os.makedirs(src, exist_ok=True)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=TOP, capture_output=True, check=True).stdout
    r = subprocess.run(["rsync", "-a", "--from0", "--files-from=-", "--delete-missing-args",
                        "./", src + "/"], cwd=TOP, input=files, capture_output=True)
    if r.returncode != 0:
        die("copying the sources to %s failed: %s" % (src, r.stderr.decode(errors="replace")))
    run_logged("build rvsock against the benchmark kernel (in target/bench/src)",
               ["make", "-C", src, "KDIR=" + os.path.join(kdir, "build"), "modules"],
               os.path.join(logdir, "modules.log"), T_MODULES,
               hint="rvsock does not build against the benchmark kernel (no debug options, "
                    "so some functions are inline there); --modules-dir DIR benchmarks modules "
                    "built elsewhere against %s" % os.path.join(kdir, "build"))
    return src


# ---- the host side of --transport virtio ---------------------------------------------------

class HostSide:
    """vudev (guest CID 3, host endpoint on) and the sample servers on its Unix sockets.

    The servers serve every client run of the whole boot (no --once); everything runs in its
    own process group and is ended by stop().  The sockets live in a short directory under /tmp
    (Unix socket paths are limited to 107 bytes)."""

    def __init__(self, samples, outdir):
        self.samples = samples
        self.logdir = os.path.join(outdir, "host-logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.dir = "/tmp/rvsock-bench-%d" % os.getpid()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.vu_sock = os.path.join(self.dir, "vu.sock")
        self.prefix = os.path.join(self.dir, "h")
        self.procs = []

    def spawn(self, name, argv):
        log = open(os.path.join(self.logdir, name + ".log"), "w")
        log.write("$ %s\n" % " ".join(argv))
        log.flush()
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p, log))
        return p

    def wait_for(self, name, ok, timeout=30):
        deadline = time.monotonic() + timeout
        proc = [p for n, p, _ in self.procs if n == name][0]
        while not ok():
            if proc.poll() is not None:
                self.stop()
                die("%s exited (%s); log: %s" % (name, proc.returncode,
                                                  os.path.join(self.logdir, name + ".log")))
            if time.monotonic() > deadline:
                self.stop()
                die("%s not ready after %d s; log: %s" % (name, timeout,
                                                          os.path.join(self.logdir, name + ".log")))
            time.sleep(0.05)

    def start(self):
        self.spawn("vudev", [os.path.join(self.samples, "vudev"), "--vm", "cid=%d,socket=%s" % (
            GUEST_CID, self.vu_sock), "--host-uds", self.prefix, "--log-level", "warn",
            "--stats-interval", "0"])
        self.wait_for("vudev", lambda: os.path.exists(self.vu_sock))
        for tool, port in sorted(HOST_PORTS.items()):
            path = "%s_%d" % (self.prefix, port)
            argv = [os.path.join(self.samples, tool), "--server", "--unix", path,
                    "--accept-timeout", "0"]
            self.spawn(tool, argv)
            self.wait_for(tool, lambda path=path: os.path.exists(path))
        progress("host side up: vudev (guest CID %d, host endpoint %s_PORT), servers on ports %s"
                 % (GUEST_CID, self.prefix, ", ".join(
                     "%d (%s)" % (p, t) for t, p in sorted(HOST_PORTS.items()))))

    def stop(self):
        for name, p, log in reversed(self.procs):
            kill_group(p, grace=5)
            log.close()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the VM run ----------------------------------------------------------------------------

class ConsoleFollower(threading.Thread):
    """Prints the guest's "[bench]" lines from the console log as they come, with host times."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.marks = []  # (host seconds since START, line)

    def run(self):
        pos = 0
        buf = ""
        while True:
            stopping = self.stop.is_set()
            try:
                with open(self.path, errors="replace") as f:
                    f.seek(pos)
                    data = f.read()
                    pos = f.tell()
            except OSError:
                data = ""
            buf += data
            *lines, buf = buf.split("\n")
            for ln in lines:
                i = ln.find("[bench] ")
                if i >= 0:
                    msg = ln[i + 8:].rstrip()
                    self.marks.append((time.monotonic() - START, msg))
                    if not msg.startswith("end ") or "FAILED" in msg:
                        progress("  guest: " + msg)
            if stopping:
                return
            self.stop.wait(1)


def host_timings(marks):
    """Host wall seconds of each guest step, from the "start"/"end" lines' arrival times."""
    out = []
    started = {}
    for t, msg in marks:
        m = re.match(r"(start|end) (\S+) round (\d+): (\S+)", msg)
        if not m:
            continue
        key = (m.group(2), int(m.group(3)), m.group(4))
        if m.group(1) == "start":
            started[key] = t
        elif key in started:
            out.append({"stack": key[0], "round": key[1], "bench": key[2],
                        "host_s": round(t - started.pop(key), 1)})
    return out


def run_vm(args, kdir, plan_path, outdir, vhost_user_socket=None):
    logf = os.path.join(outdir, "console.log")
    argv = [os.path.join(TESTING, "vm", "run.sh"), "--kdir", os.path.join(kdir, "build"),
            "--rwdir", outdir, "--timeout", str(args.vm_timeout), "--log", logf,
            "--cpus", str(args.cpus), "--memory", args.memory]
    if vhost_user_socket:
        argv += ["--vhost-user-socket", vhost_user_socket]
    env = dict(os.environ)
    if args.mode == "icount":
        argv += ["--qemu-opts", icount_opts(args)]
        env["RVSOCK_KVM"] = "0"
    argv += ["--", "/usr/bin/python3 tools/testing/bench/guest.py %s" % plan_path]
    progress("boot the benchmark kernel and run the benchmarks (console: %s; at most %d s)" % (
        os.path.relpath(logf, TOP), args.vm_timeout))
    follower = ConsoleFollower(logf)
    follower.start()
    t0 = time.monotonic()
    stdout_path = os.path.join(outdir, "vm-run.log")
    with open(stdout_path, "w") as out:
        proc = subprocess.Popen(argv, cwd=TOP, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        # run.sh bounds the VM itself; this is a second bound in case run.sh hangs.
        rc = wait_bounded(proc, args.vm_timeout + 120, "VM")
    secs = time.monotonic() - t0
    follower.stop.set()
    follower.join(timeout=10)
    kvm = None
    try:
        with open(logf, errors="replace") as f:
            m = re.search(r"kvm=(\d)", f.readline())
            kvm = m and m.group(1) == "1"
    except OSError:
        pass
    if rc != 0:
        sys.stdout.write(tail(stdout_path, 20))
        why = "timed out" if rc in (None, 124, 137) else "exit %s" % rc
        progress("the VM run failed (%s) after %d s; console log: %s" % (why, secs, logf))
    else:
        progress("VM run done in %d s" % secs)
    return rc, secs, kvm, follower.marks


# ---- results -------------------------------------------------------------------------------

# (bench, metric, unit, higher is better, label, target ratio or None)
ROWS = [
    ("Throughput: vsock_perf, 1 stream (receiver rx / sender tx)", None),
    ("perf_4K", "rx_gbit_s", "Gbit/s", True, "4 KiB writes, rx", None),
    ("perf_4K", "tx_gbit_s", "Gbit/s", True, "4 KiB writes, tx", None),
    ("perf_64K", "rx_gbit_s", "Gbit/s", True, "64 KiB writes, rx", 1.3),
    ("perf_64K", "tx_gbit_s", "Gbit/s", True, "64 KiB writes, tx", None),
    ("perf_1M", "rx_gbit_s", "Gbit/s", True, "1 MiB writes, rx", 1.5),
    ("perf_1M", "tx_gbit_s", "Gbit/s", True, "1 MiB writes, tx", None),
    ("Throughput: vsock-stream-bench, 64 KiB writes (delivered: client's start to the server's"
     " count; rx: receiver)", None),
    ("stream4_64K", "tx_gbit_s", "Gbit/s", True, "4 streams, delivered", None),
    ("stream1_64K", "tx_gbit_s", "Gbit/s", True, "1 stream, delivered", None),
    ("stream1_64K", "rx_gbit_s", "Gbit/s", True, "1 stream, rx", None),
    ("Round-trip latency: vsock-pingpong", None),
    ("pingpong_64", "median_us", "us", False, "64 B, median", 0.8),
    ("pingpong_64", "p99_us", "us", False, "64 B, p99", None),
    ("pingpong_4K", "median_us", "us", False, "4 KiB, median", None),
    ("pingpong_4K", "p99_us", "us", False, "4 KiB, p99", None),
    ("Connection rate: vsock-connrate --wait-close (connect + accept + close)", None),
    ("connrate", "conn_per_s", "conn/s", True, "single-threaded", 1.0),
    ("Connect flood against a full listener: vsock-connrate --flood (connect, send 4 B, close;"
     " one accept loop)", None),
    ("connflood", "accept_per_s_overloaded", "conn/s", True, "accepted, overloaded", 1.0),
    ("connflood", "accept_per_s", "conn/s", True, "accepted, all rounds", None),
    ("connflood", "refused", "count", False, "refused+reset (clients)", None),
    ("connflood", "attempts_per_s", "conn/s", True, "attempts (clients)", None),
    ("connflood", "server_cpu_us_per_accept", "us", False, "server CPU/accept, with work", None),
    ("Kernel memory per idle connected pair (vsock-pairs)", None),
    ("pairs", "slab_bytes_per_pair", "bytes", False, "Slab (/proc/meminfo)", 1.0),
    ("pairs", "objs_bytes_per_pair", "bytes", False, "slab objects, all caches", None),
    ("pairs", "af_vsock_bytes_per_pair", "bytes", False, "AF_VSOCK cache", None),
]


# --transport virtio: guest to host over the virtio device; the target is rvsock ahead of C on
# every figure (ratio >= 1 for throughput and rate, <= 1 for latency).
VIRTIO_ROWS = [
    ("Guest-to-host throughput: vsock-stream-bench, 1 stream (client's start until the host"
     " server's count came back)", None),
    ("stream_4K", "tx_gbit_s", "Gbit/s", True, "4 KiB writes", 1.0),
    ("stream_64K", "tx_gbit_s", "Gbit/s", True, "64 KiB writes", 1.0),
    ("stream_1M", "tx_gbit_s", "Gbit/s", True, "1 MiB writes", 1.0),
    ("Round-trip latency, guest client, host echo server: vsock-pingpong", None),
    ("pingpong_64", "median_us", "us", False, "64 B, median", 1.0),
    ("pingpong_64", "p99_us", "us", False, "64 B, p99", 1.0),
    ("pingpong_4K", "median_us", "us", False, "4 KiB, median", 1.0),
    ("pingpong_4K", "p99_us", "us", False, "4 KiB, p99", 1.0),
    ("Connection rate, guest to host: vsock-connrate --wait-close (connect + host accept +"
     " close)", None),
    ("connrate", "conn_per_s", "conn/s", True, "single-threaded", 1.0),
]


# Rows whose target is judged on the ratio of the minima over the rounds (the issue asks for
# the minimum), not of the medians.
TARGET_ON_MIN = {"connflood.accept_per_s_overloaded"}


# Kernel messages that mean something went wrong in the guest kernel during the run.
KERNEL_PROBLEM_RE = re.compile(r"\] (BUG:|WARNING:|Oops|general protection fault|Kernel panic|"
                               r"kernel BUG|UBSAN:|refcount_t:|list_(add|del) corruption|"
                               r"INFO: task .* blocked|watchdog: BUG: soft lockup)")


def kernel_problems(console):
    """Kernel problem lines of the console log up to the end of the guest script's run (a
    failure after it, e.g. while powering off, is reported separately)."""
    out = []
    try:
        with open(console, errors="replace") as f:
            for ln in f:
                if "[bench] done," in ln:
                    break
                if KERNEL_PROBLEM_RE.search(ln):
                    out.append(ln.strip())
    except OSError:
        pass
    return out


def guest_said_done(console):
    try:
        with open(console, errors="replace") as f:
            return any("[bench] done," in ln for ln in f)
    except OSError:
        return False


def load_raw(path):
    env, recs = {}, []
    try:
        with open(path) as f:
            for ln in f:
                ln = ln.strip()
                if not ln:
                    continue
                o = json.loads(ln)
                if "environment" in o:
                    env = o["environment"]
                elif "complete" in o:
                    env["complete"] = True
                else:
                    recs.append(o)
    except OSError:
        pass
    return env, recs


def summarize(recs):
    """{stack: {bench: {metric: {"rounds": [...], "median", "min", "max"}}}}."""
    per = {}
    for r in recs:
        if not r.get("ok") or "values" not in r:
            continue
        for k, v in r["values"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                per.setdefault(r["stack"], {}).setdefault(r["bench"], {}).setdefault(
                    k, []).append((r["round"], v))
    out = {}
    for st, benches in per.items():
        for b, metrics in benches.items():
            for k, rv in metrics.items():
                vals = [v for _, v in sorted(rv)]
                out.setdefault(st, {}).setdefault(b, {})[k] = {
                    "rounds": [r for r, _ in sorted(rv)], "values": vals,
                    "median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def ratios(summary, base="C", other="rvsock", rows=None):
    """rvsock/C of the medians, and the range of the per-round ratios."""
    out = {}
    for row in rows or ROWS:
        if row[1] is None:
            continue
        b, k, _, higher, _, target = row
        try:
            c, r = summary[base][b][k], summary[other][b][k]
        except KeyError:
            continue
        if not c["median"]:
            continue
        per_round = [rv / cv for rr, rv in zip(r["rounds"], r["values"])
                     for cr, cv in zip(c["rounds"], c["values"]) if rr == cr and cv]
        ratio = r["median"] / c["median"]
        res = {"ratio": ratio, "round_ratios": per_round, "higher_is_better": higher}
        if c["min"]:
            res["min_ratio"] = r["min"] / c["min"]
        key = "%s.%s" % (b, k)
        if target is not None:
            res["target"] = target
            judged = res.get("min_ratio") if key in TARGET_ON_MIN else ratio
            res["target_on"] = "min" if key in TARGET_ON_MIN else "median"
            res["met"] = judged is not None and (judged >= target if higher else judged <= target)
        out[key] = res
    return out


def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("bytes", "conn/s", "count"):
        return "%.0f" % v
    if abs(v) >= 100:
        return "%.1f" % v
    return "%.3g" % v if abs(v) < 1 else "%.2f" % v


def cell(s, unit):
    if not s:
        return "-"
    return "%s [%s..%s]" % (fmt(s["median"], unit), fmt(s["min"], unit), fmt(s["max"], unit))


def connflood_rounds(raw):
    """The connect flood's figures per round and stack, in run order."""
    out = []
    for r in raw:
        v = r.get("values") or {}
        if r.get("ok") and r.get("bench") == "connflood":
            out.append(dict(v, round=r["round"], stack=r["stack"]))
    return out


def run_problems(meta, failures):
    """The table's closing lines: kernel problems, an unfinished plan, failed steps."""
    L = []
    w = L.append
    if meta["kernel_problems"]:
        w("")
        w("KERNEL PROBLEMS in the console log (%d), first ones:" % len(meta["kernel_problems"]))
        for ln in meta["kernel_problems"][:5]:
            w("  " + ln[:150])
    if not meta["complete"]:
        w("")
        w("INCOMPLETE: the guest did not finish the plan (VM status %s); see console.log"
          % meta["vm_status"])
    if failures:
        w("")
        w("FAILED steps (%d):" % len(failures))
        for f in failures:
            w("  round %s %s %s: %s" % (f.get("round"), f.get("stack"), f.get("bench"),
                                        f.get("error")))
    return L


def make_table(meta, summary, rat, failures, raw=()):
    L = []
    w = L.append
    w("rvsock vs the upstream C vsock stack, loopback (CID 1): %d interleaved rounds in one boot"
      % meta["rounds"])
    w("kernel %s (tools/testing/kernel/bench.config, no debug options), %s, %s vCPUs, %s"
      % (meta["kernel_release"], meta["mode_text"], meta["cpus"], meta["memory"]))
    w("git %s%s; %s per transfer; %d round trips per latency run; connection rate over %s s;"
      " %d pairs" % (meta["commit"][:12] if meta["commit"] else "?",
                     " (dirty work tree)" if meta["dirty"] else "", human_size(meta["bytes"]),
                     meta["iterations"], meta["connrate_duration"], meta["pairs"]))
    if meta["modules_note"]:
        w("modules: " + meta["modules_note"])
    if meta["mode"] == "icount":
        w("icount: guest time counts instructions (1 ns each): Gbit/s, us and conn/s are per"
          " instruction, not host seconds;")
        w("        they do not move with host load, and the ratio rvsock/C is the comparison.")
    cal = meta.get("calibration") or {}
    if cal.get("ok"):
        ns = cal["copy_to_user_ns_per_byte"]
        w("copy cost here: %.2f guest ns per byte read from a tmpfs file (one copy_to_user);"
          " a stream copied twice" % ns)
        w("        cannot go much above %.1f Gbit/s, whatever the stack does per packet."
          % (8 / (2 * ns)))
    w("Each figure: median [min..max] over the rounds.  rvsock/C: ratio of the medians"
      " (range of the per-round ratios).")
    w("")
    hdr = "  %-34s %-24s %-24s %-20s %s" % ("", "C", "rvsock", "rvsock/C", "target")
    w(hdr)
    w("-" * len(hdr))
    for row in ROWS:
        if row[1] is None:
            w(row[0])
            continue
        b, k, unit, higher, label, target = row
        c = summary.get("C", {}).get(b, {}).get(k)
        r = summary.get("rvsock", {}).get(b, {}).get(k)
        if not c and not r:
            continue
        ra = rat.get("%s.%s" % (b, k))
        rtxt = "-"
        if ra:
            rr = ra["round_ratios"]
            rtxt = "%.2fx" % ra["ratio"] + (" (%.2f..%.2f)" % (min(rr), max(rr)) if rr else "")
        ttxt = ""
        if target is not None:
            ttxt = "%s%.2fx" % (">=" if higher else "<=", target)
            if ra and ra.get("target_on") == "min":
                ttxt += " of the minima (%s)  %s" % (
                    "%.2fx" % ra["min_ratio"] if "min_ratio" in ra else "-",
                    "met" if ra["met"] else "MISSED")
            elif ra:
                ttxt += "  " + ("met" if ra["met"] else "MISSED")
        w("  %-34s %-24s %-24s %-20s %s" % ("%s (%s)" % (label, unit), cell(c, unit),
                                            cell(r, unit), rtxt, ttxt))
    flood = connflood_rounds(raw)
    if flood:
        w("")
        w("Connect flood per round (%s client thread(s), backlog %s, server work %s us per"
          " connection, first accept after %s s, %s guest s after %s s of warm-up)." % (
              meta.get("connflood_threads"), meta.get("connflood_backlog"),
              meta.get("connflood_work_us"), meta.get("connflood_accept_delay", 0),
              meta.get("connflood_duration"), meta.get("connflood_warmup")))
        w("CPUs: " + ("the server on CPU 0, the clients on CPU 1 (--connflood-pin split)."
                      if meta.get("connflood_pin") else
                      "wherever the scheduler put them (--connflood-pin none)."))
        w("Overloaded: the clients were turned away in every 100 ms slot and the accept loop found"
          " its queue empty")
        w("(accept waits, 1 ms naps) for at most 1 % of its accepts; the target row counts those"
          " rounds only.")
        w("  %-6s %-7s %-10s %-12s %-11s %-12s %-12s %s" % (
            "round", "stack", "overloaded", "accepted/s", "turned away", "attempts/s",
            "srv CPU/acc", "accept waits"))
        for x in flood:
            w("  %-6s %-7s %-10s %-12.0f %-11d %-12.0f %-12s %d" % (
                x["round"], x["stack"], "yes" if x["overloaded"] else "NO", x["accept_per_s"],
                x["refused"], x["attempts_per_s"], "%.1f us" % x["server_cpu_us_per_accept"],
                x["accept_waits"]))
        not_over = [x for x in flood if not x["overloaded"]]
        if not_over:
            w("  NOT OVERLOADED in %d run(s): left out of the target row (another regime than"
              " the issue's)." % len(not_over))
    refs = [k for k in ("tcp", "unix") if k in summary]
    if refs:
        w("")
        w("References in the same boot (median [min..max]); vsock columns repeat the rows above")
        cols = ["C", "rvsock"] + refs
        names = {"C": "vsock C", "rvsock": "vsock rvsock", "tcp": "TCP 127.0.0.1",
                 "unix": "AF_UNIX"}
        hdr = "  %-34s" % "" + "".join(" %-22s" % names[c] for c in cols)
        w(hdr)
        for b, k, unit, label in (
                ("stream1_64K", "tx_gbit_s", "Gbit/s", "stream 1x64K, delivered"),
                ("stream1_64K", "rx_gbit_s", "Gbit/s", "stream 1x64K, rx"),
                ("pingpong_64", "median_us", "us", "ping-pong 64 B, median"),
                ("pingpong_64", "p99_us", "us", "ping-pong 64 B, p99"),
                ("pingpong_4K", "median_us", "us", "ping-pong 4 KiB, median"),
                ("pingpong_4K", "p99_us", "us", "ping-pong 4 KiB, p99")):
            w("  %-34s" % ("%s (%s)" % (label, unit)) + "".join(
                " %-22s" % cell(summary.get(c, {}).get(b, {}).get(k), unit) for c in cols))
    targets = [v for v in rat.values() if "target" in v]
    if targets:
        w("")
        w("Issue targets met: %d of %d" % (sum(v["met"] for v in targets), len(targets)))
    return "\n".join(L + run_problems(meta, failures)) + "\n"


def make_virtio_table(meta, summary, rat, cal, failures):
    """The --transport virtio table: C, C2 (the C stack again), rvsock; C2/C is the calibration
    (within CALIBRATION_TOLERANCE on every figure, or said so), rvsock/C the comparison."""
    L = []
    w = L.append
    w("rvsock_virtio vs the upstream C virtio-vsock driver, guest to host over vudev: %d"
      " interleaved rounds (C, rvsock, C2) in one boot" % meta["rounds"])
    w("kernel %s (tools/testing/kernel/bench.config, no debug options), %s, %s vCPUs, %s"
      % (meta["kernel_release"], meta["mode_text"], meta["cpus"], meta["memory"]))
    w("git %s%s; %s per transfer; %d round trips per latency run; connection rate over %s s"
      % (meta["commit"][:12] if meta["commit"] else "?",
         " (dirty work tree)" if meta["dirty"] else "", human_size(meta["bytes"]),
         meta["iterations"], meta["connrate_duration"]))
    if meta["modules_note"]:
        w("modules: " + meta["modules_note"])
    w("Device: vudev (vhost-user, guest CID %d) with its host endpoint; servers: the samples on"
      " the host's Unix sockets (the same for every stack)." % GUEST_CID)
    if meta["mode"] == "icount" and meta.get("icount_sleep", "on") == "on":
        w("icount sleep=on: the guest's busy time counts instructions (1 ns each), its idle time"
          " (waiting for the")
        w("        device and the host) runs at real time; compare within the boot: C2/C is the"
          " calibration, rvsock/C the result.")
    elif meta["mode"] == "icount":
        w("icount sleep=off: busy time counts instructions, and whenever the vCPUs idle (waiting"
          " for the device) the")
        w("        clock jumps to the next guest timer: waits on the device are measured in timer"
          " deadlines, not in time.")
    w("Each figure: median [min..max] over the rounds.  Ratios: of the medians (range of the"
      " per-round ratios).")
    w("Calibration: C2/C within %d %% on every figure.  Target: rvsock ahead of C on every"
      " figure." % round(CALIBRATION_TOLERANCE * 100))
    w("")
    hdr = "  %-28s %-22s %-22s %-22s %-22s %-22s %s" % (
        "", "C", "C2 (C again)", "rvsock", "C2/C (calibration)", "rvsock/C", "target")
    w(hdr)
    w("-" * len(hdr))
    cal_bad = []
    for row in VIRTIO_ROWS:
        if row[1] is None:
            w(row[0])
            continue
        b, k, unit, higher, label, target = row
        cells = [summary.get(st, {}).get(b, {}).get(k) for st in ("C", "C2", "rvsock")]
        if not any(cells):
            continue
        key = "%s.%s" % (b, k)

        def rtxt(ra):
            if not ra:
                return "-"
            rr = ra["round_ratios"]
            return "%.3fx" % ra["ratio"] + (" (%.2f..%.2f)" % (min(rr), max(rr)) if rr else "")
        ctxt = rtxt(cal.get(key))
        if cal.get(key):
            dev = abs(cal[key]["ratio"] - 1)
            if dev > CALIBRATION_TOLERANCE:
                ctxt += " OUT"
                cal_bad.append("%s %s" % (label, unit))
        ra = rat.get(key)
        ttxt = ""
        if target is not None and ra:
            ttxt = "%s%.2fx  %s" % (">=" if higher else "<=", target,
                                    "met" if ra["met"] else "MISSED")
        w("  %-28s %-22s %-22s %-22s %-22s %-22s %s" % (
            "%s (%s)" % (label, unit), cell(cells[0], unit), cell(cells[1], unit),
            cell(cells[2], unit), ctxt, rtxt(ra), ttxt))
    w("")
    if cal:
        if cal_bad:
            w("CALIBRATION OUTSIDE %d %% (C2/C) on %d figure(s): %s; rvsock/C differences of"
              " that size there are noise." % (round(CALIBRATION_TOLERANCE * 100), len(cal_bad),
                                               ", ".join(cal_bad)))
        else:
            w("Calibration: C2/C within %d %% on every figure." %
              round(CALIBRATION_TOLERANCE * 100))
    targets = [v for v in rat.values() if "target" in v]
    if targets:
        w("Target (rvsock ahead of C) met on %d of %d figures" % (
            sum(v["met"] for v in targets), len(targets)))
    return "\n".join(L + run_problems(meta, failures)) + "\n"


# ---- chart ---------------------------------------------------------------------------------

def make_chart(summary, meta, outdir, logdir, allow_install):
    data_path = os.path.join(outdir, "chart-data.json")
    with open(data_path, "w") as f:
        json.dump({"summary": summary, "title": "rvsock vs C vsock (%s, %d rounds)" % (
            meta["mode_text"], meta["rounds"])}, f)
    png = os.path.join(outdir, "chart.png")
    chart = os.path.join(BENCH, "chart.py")
    pythons = []
    if subprocess.run([sys.executable, "-c", "import matplotlib"],
                      capture_output=True).returncode == 0:
        pythons.append(sys.executable)
    else:
        venv = os.path.join(CACHE, "bench-venv")
        vpy = os.path.join(venv, "bin", "python3")
        ok = subprocess.run([vpy, "-c", "import matplotlib"],
                            capture_output=True).returncode == 0 if os.path.exists(vpy) else False
        if not ok and allow_install:
            log = os.path.join(logdir, "matplotlib-install.log")
            progress("installing %s into %s for the chart (log: %s)" % (MATPLOTLIB, venv, log))
            try:
                with open(log, "w") as lf:
                    if not os.path.exists(vpy):
                        subprocess.run([sys.executable, "-m", "venv", venv], stdout=lf,
                                       stderr=subprocess.STDOUT, timeout=T_PIP, check=True)
                    subprocess.run([vpy, "-m", "pip", "install", "--quiet", MATPLOTLIB],
                                   stdout=lf, stderr=subprocess.STDOUT, timeout=T_PIP, check=True)
                ok = True
            except (subprocess.SubprocessError, OSError):
                progress("could not install matplotlib; drawing a plain chart instead")
        if ok:
            pythons.append(vpy)
    for py in pythons:
        r = subprocess.run([py, chart, data_path, png], capture_output=True, text=True,
                           timeout=300)
        if r.returncode == 0:
            return "matplotlib"
        progress("matplotlib chart failed: %s" % r.stderr.strip()[-300:])
    r = subprocess.run([sys.executable, chart, "--plain", data_path, png], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        progress("chart failed: %s" % r.stderr.strip()[-300:])
        return None
    return "plain"


# ---- main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Results: target/bench/<UTC timestamp>/ (results.json, table.txt, chart.png), "
               "target/bench/latest -> newest.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", choices=("loopback", "virtio"), default="loopback",
                    help="loopback (default): CID 1 in the guest; virtio: guest to host over "
                         "vudev's virtio-vsock device, C driver against rvsock_virtio, with a "
                         "C-against-C calibration (C2)")
    ap.add_argument("--icount-sleep", choices=("on", "off"), default=None,
                    help="icount's sleep= (default: off for loopback, on for virtio: idle "
                         "time then runs at real time instead of jumping to the next timer)")
    ap.add_argument("--mode", choices=("icount", "wallclock"), default="icount",
                    help="icount (default): TCG with -icount shift=0,sleep=off, figures count "
                         "instructions; wallclock: no icount, KVM where it works")
    ap.add_argument("--bytes", type=parse_size, default=None,
                    help="bytes per throughput run (default 1G; virtio: 256M)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--iterations", type=int, default=10000,
                    help="timed round trips per latency run (default 10000)")
    ap.add_argument("--warmup", type=int, default=1000, help="untimed round trips first")
    ap.add_argument("--connrate-duration", type=float, default=5.0,
                    help="guest seconds per connection-rate run (default 5)")
    ap.add_argument("--connflood-duration", type=float, default=3.0,
                    help="guest seconds counted per connect-flood run (default 3)")
    ap.add_argument("--connflood-warmup", type=float, default=0.5,
                    help="guest seconds the flood runs before the server accepts and the "
                         "counting starts (default 0.5)")
    ap.add_argument("--connflood-threads", type=int, default=2,
                    help="connect loops of the flood's client (default 2)")
    ap.add_argument("--connflood-accept-delay", type=float, default=0.0,
                    help="guest seconds the flood's server waits before its first accept "
                         "(default 0; with 0.5, a listener full for the whole warm-up, both "
                         "stacks at times refused everything afterwards)")
    ap.add_argument("--connflood-work-us", type=int, default=100,
                    help="the flood's server: us of CPU work per connection, so that it is "
                         "slower than the flood (default 100)")
    ap.add_argument("--connflood-pin", choices=("split", "none"), default="none",
                    help="none (default): the flood's threads wherever the scheduler puts "
                         "them; split: the server on CPU 0, its clients on CPU 1 (a "
                         "diagnostic: under icount the vCPUs take turns, so this does not "
                         "give the server a CPU of its own)")
    ap.add_argument("--pairs", type=int, default=1000, help="connected pairs for the memory "
                                                             "figure (default 1000)")
    ap.add_argument("--no-references", action="store_true",
                    help="skip the TCP and AF_UNIX reference runs")
    ap.add_argument("--only", action="append", metavar="REGEX",
                    help="run only benchmarks whose name matches (repeatable): perf_4K, "
                         "perf_64K, perf_1M, stream4_64K, stream1_64K, pingpong_64, "
                         "pingpong_4K, connrate, connflood, pairs")
    ap.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    ap.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    ap.add_argument("--vm-timeout", type=int, default=None,
                    help="host seconds for the whole VM run (default: from the plan)")
    ap.add_argument("--modules-dir", metavar="DIR",
                    help="use the rvsock.ko and rvsock_loopback.ko in DIR (built against the "
                         "benchmark kernel) instead of building them")
    ap.add_argument("--no-install", action="store_true",
                    help="do not pip-install matplotlib for the chart (plain PNG instead)")
    ap.add_argument("--report", metavar="DIR",
                    help="write the table, chart and results.json of an earlier run in DIR "
                         "again (no build, no VM)")
    args = ap.parse_args()
    # SIGTERM as ^C: the VM's process group and the host side are ended on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if (args.connflood_threads < 1 or args.connflood_duration <= 0 or args.connflood_warmup < 0
            or args.connflood_work_us < 0 or args.connflood_accept_delay < 0):
        ap.error("--connflood-threads and --connflood-duration must be positive, "
                 "--connflood-warmup and --connflood-work-us not negative")
    if args.report:
        return report_again(args.report, not args.no_install)
    virtio = args.transport == "virtio"
    if args.bytes is None:
        args.bytes = parse_size("256M" if virtio else "1G")
    if args.icount_sleep is None:
        args.icount_sleep = "on" if virtio else "off"

    os.makedirs(OUTROOT, exist_ok=True)
    lock = open(os.path.join(OUTROOT, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        die("another make bench is running (lock: target/bench/.lock)")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = os.path.join(OUTROOT, stamp)
    logdir = os.path.join(outdir, "logs")
    os.makedirs(logdir)
    progress("results: %s" % os.path.relpath(outdir, TOP))

    kdir = ensure_kernel(logdir)
    samples = build_samples(logdir, vudev=virtio)
    if args.modules_dir:
        moddir = os.path.abspath(args.modules_dir)
        modules_note = "prebuilt, from %s (--modules-dir)" % moddir
    else:
        moddir = build_modules(kdir, logdir)
        modules_note = ""
    for m in ("rvsock.ko", "rvsock_virtio.ko" if virtio else "rvsock_loopback.ko"):
        if not os.path.exists(os.path.join(moddir, m)):
            die("%s missing in %s" % (m, moddir))

    commit = git("rev-parse", "HEAD")
    dirty_files = (git("status", "--porcelain", "--untracked-files=normal") or "").splitlines()
    vsockdir = os.path.join(kdir, "build", "net", "vmw_vsock")
    cmods = ["vsock", "vmw_vsock_virtio_transport_common", "vsock_loopback"]
    plan = {
        "rounds": args.rounds,
        "order": ["C", "rvsock"],
        "stacks": [
            {"name": "C", "load": [os.path.join(vsockdir, m + ".ko") for m in cmods],
             "modules": cmods, "unload": list(reversed(cmods))},
            {"name": "rvsock",
             "load": [os.path.join(moddir, m + ".ko") for m in ("rvsock", "rvsock_loopback")],
             "modules": ["rvsock", "rvsock_loopback"], "unload": ["rvsock_loopback", "rvsock"]},
        ],
        "references": [] if args.no_references else ["tcp", "unix"],
        "bytes": args.bytes,
        "perf_buffers": [4 << 10, 64 << 10, 1 << 20],
        "stream_runs": [[4, 64 << 10], [1, 64 << 10]],
        "ref_stream_runs": [[1, 64 << 10]],
        "pp_sizes": [64, 4 << 10],
        "iterations": args.iterations,
        "warmup": args.warmup,
        "connrate_duration": args.connrate_duration,
        "connflood_duration": args.connflood_duration,
        "connflood_warmup": args.connflood_warmup,
        "connflood_threads": args.connflood_threads,
        "connflood_work_us": args.connflood_work_us,
        "connflood_accept_delay": args.connflood_accept_delay,
        "connflood_backlog": 128,
        "connflood_nap_s": 0.001,
        "connflood_pin": args.connflood_pin == "split" and args.cpus >= 2,
        "pairs": args.pairs,
        "only": args.only,
        "vsock_perf": os.path.join(kdir, "vsock", "vsock_perf"),
        "samples": samples,
    }
    if virtio:
        vmods = ["vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"]
        cstack = {"load": [os.path.join(vsockdir, m + ".ko") for m in vmods],
                  "modules": vmods, "unload": list(reversed(vmods))}
        plan.update({
            "transport": "virtio",
            "order": ["C", "rvsock", "C2"],
            "stacks": [
                dict(cstack, name="C"),
                {"name": "rvsock",
                 "load": [os.path.join(moddir, m + ".ko") for m in ("rvsock", "rvsock_virtio")],
                 "modules": ["rvsock", "rvsock_virtio"], "unload": ["rvsock_virtio", "rvsock"]},
                dict(cstack, name="C2"),
            ],
            "references": [],
            "stream_buffers": [4 << 10, 64 << 10, 1 << 20],
            "host_ports": HOST_PORTS,
        })
    plan_path = os.path.join(outdir, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f, indent=1)
    if virtio and args.vm_timeout is None:
        # Generous: 3 stacks, each GiB at 300 host s, each 10,000 round trips at 120 s.
        gib = args.bytes / float(1 << 30)
        per_stack = (3 * max(gib, 0.05) * 300 + 2 * (args.iterations + args.warmup) / 10000 *
                     120 + args.connrate_duration * 20 + 120)
        args.vm_timeout = int(600 + args.rounds * 3 * per_stack)
    if args.vm_timeout is None:
        # Generous: each GiB moved counted at 60 host seconds, each 10,000 round trips at 60,
        # plus the connection rate, the pairs and the boot.
        transfers = 2 * 5 + 2 * (0 if args.no_references else 1)
        gib = args.bytes / float(1 << 30)
        per_round = (transfers * max(gib, 0.1) * 60 + 6 * (args.iterations + args.warmup) /
                     10000 * 60 + 2 * (args.connrate_duration * 10 + 60) +
                     2 * ((args.connflood_duration + args.connflood_warmup) * 20 + 90) +
                     2 * 120 + 60)
        args.vm_timeout = int(600 + args.rounds * per_round)

    host = None
    if virtio:
        host = HostSide(samples, outdir)
        host.start()
    try:
        rc, vm_secs, kvm, marks = run_vm(args, kdir, plan_path, outdir,
                                         host.vu_sock if host else None)
    finally:
        if host:
            host.stop()

    if args.mode == "icount":
        mode_text = "TCG with icount (shift=0, sleep=%s)" % args.icount_sleep
    else:
        mode_text = ("KVM" if kvm else "TCG") + ", wall clock (no icount)"
    meta = {
        "date_utc": stamp,
        "mode": args.mode,
        "mode_text": mode_text,
        "accelerator": "kvm" if kvm else "tcg",
        "qemu_opts": icount_opts(args) if args.mode == "icount" else "",
        "transport": args.transport,
        "icount_sleep": args.icount_sleep,
        "kernel_dir": kdir,
        "cpus": args.cpus,
        "memory": args.memory,
        "commit": commit,
        "dirty": bool(dirty_files),
        "dirty_files": dirty_files,
        "modules_dir": moddir,
        "modules_note": modules_note,
        "rounds": args.rounds,
        "bytes": args.bytes,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "connrate_duration": args.connrate_duration,
        "connflood_duration": args.connflood_duration,
        "connflood_warmup": args.connflood_warmup,
        "connflood_threads": args.connflood_threads,
        "connflood_work_us": args.connflood_work_us,
        "connflood_accept_delay": args.connflood_accept_delay,
        "connflood_backlog": 128,
        "connflood_pin": plan["connflood_pin"],
        "pairs": args.pairs,
        "host_cpu": host_cpu(),
        "vm_wall_s": round(vm_secs, 1),
        "vm_status": rc,
    }
    return report(outdir, meta, plan, host_timings(marks), not args.no_install)


NOTES = [
    "vsock_perf's receiver stops at the first POLLHUP/POLLRDHUP, so it may leave up to one "
    "socket buffer (256 KiB) unread: rx_bytes can be below --bytes.",
    "stream-bench: tx_gbit_s = the client's figure, all bytes from the common start until the "
    "server's byte count came back (delivered); rx_gbit_s = all bytes over the longest "
    "stream's first-byte-to-EOF time at the server, meaningful for one stream only (streams "
    "that do not overlap inflate it); per-stream figures in raw.",
    "memory: deltas of /proc/meminfo and /proc/slabinfo (active objects x object size) while "
    "vsock-pairs holds the pairs, divided by the pair count; a pair is two connected sockets "
    "(plus their files), the listener is shared.",
    "connflood: the server naps 1 ms when its accept queue is empty instead of waiting in "
    "poll(2) (under icount a server asleep in poll was at times not woken during the whole "
    "flood, in both stacks).  The server's figures (accept_per_s, accept_waits, server_cpu_*) "
    "cover its window, from --connflood-warmup after its accept delay; the clients' "
    "(refused = ECONNRESET + ECONNREFUSED on connect, attempts, busy_us_per_attempt from "
    "/proc/stat) theirs, from the same warm-up after they start (a few ms later).  "
    "other_cpu_s = all CPUs busy minus the server and clients: kernel threads (the "
    "transport's worker) and interrupts.  CPU times are the kernel's tick-sampled "
    "accounting: rough under icount.",
    "settle_guest_s: after each benchmark, the guest seconds until the stack's module use "
    "counts were back to idle (closed sockets linger until the peer's reset or a timeout).",
]


def report(outdir, meta, plan, timings, allow_install):
    """Writes results.json, table.txt and chart.png of a run directory and prints the table."""
    rc = meta.get("vm_status")
    env, recs = load_raw(os.path.join(outdir, "raw.jsonl"))
    complete = env.pop("complete", False) or guest_said_done(os.path.join(outdir, "console.log"))
    failures = [r for r in recs if not r.get("ok")]
    problems = kernel_problems(os.path.join(outdir, "console.log"))
    summary = summarize(recs)
    virtio = meta.get("transport") == "virtio"
    rat = ratios(summary, rows=VIRTIO_ROWS if virtio else None)
    cal_rat = ratios(summary, "C", "C2", rows=VIRTIO_ROWS) if virtio else {}
    meta.update({
        "kernel_release": env.get("uname", "?"),
        "guest_cpus_seen": env.get("nproc"),
        "calibration": env.get("calibration"),
        "complete": complete,
        "kernel_problems": problems,
        "notes": NOTES,
    })
    results = {"meta": meta, "plan": plan, "guest_environment": env, "raw": recs,
               "summary": summary, "ratios": rat, "host_timings": timings}
    if virtio:
        results["calibration_ratios"] = cal_rat
        table = make_virtio_table(meta, summary, rat, cal_rat, failures)
    else:
        table = make_table(meta, summary, rat, failures, recs)
    with open(os.path.join(outdir, "table.txt"), "w") as f:
        f.write(table)
    logdir = os.path.join(outdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    chart = make_chart(summary, meta, outdir, logdir, allow_install) if summary else None
    meta["chart"] = chart
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    latest = os.path.join(OUTROOT, "latest")
    newest = sorted(d for d in os.listdir(OUTROOT) if re.fullmatch(r"\d{8}T\d{6}Z", d) and
                    os.path.exists(os.path.join(OUTROOT, d, "results.json")))
    if newest:
        tmp = latest + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(newest[-1], tmp)
        os.replace(tmp, latest)

    print()
    sys.stdout.write(table)
    print()
    by_bench = {}
    for t in timings:
        by_bench[t["bench"]] = by_bench.get(t["bench"], 0) + t["host_s"]
    if by_bench:
        progress("host wall time per benchmark, all rounds and stacks: " + ", ".join(
            "%s %d s" % (b, s) for b, s in sorted(by_bench.items(), key=lambda x: -x[1])))
    progress("results in %s (table.txt, results.json%s)" % (
        os.path.relpath(outdir, TOP), ", chart.png" if chart else ""))
    if rc != 0:
        progress("%s: console log %s" % (
            "all benchmarks finished, but the VM then failed" if complete else
            "the VM run failed", os.path.join(outdir, "console.log")))
        return 1
    if problems:
        progress("kernel problems in the console log: %s" % os.path.join(outdir, "console.log"))
        return 1
    if failures:
        progress("%d benchmark step(s) failed; see table.txt and %s" % (
            len(failures), os.path.join(outdir, "guest-logs")))
        return 1
    return 0


def report_again(outdir, allow_install):
    """--report DIR: the table, chart and results.json of an earlier run, written anew."""
    outdir = os.path.abspath(outdir)
    try:
        with open(os.path.join(outdir, "results.json")) as f:
            old = json.load(f)
        with open(os.path.join(outdir, "plan.json")) as f:
            plan = json.load(f)
    except (OSError, ValueError) as e:
        die("%s: not a finished run directory (%s)" % (outdir, e))
    meta = {k: v for k, v in old["meta"].items() if k not in (
        "kernel_problems", "complete", "notes", "chart")}
    return report(outdir, meta, plan, old.get("host_timings", []), allow_install)


def icount_opts(args):
    return ICOUNT_OPTS_SLEEP if args.icount_sleep == "on" else ICOUNT_OPTS


def host_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            return "%s, %d CPUs" % (m.group(1) if m else "?", os.cpu_count())
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
