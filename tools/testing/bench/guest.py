#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""In-guest half of `make bench` (tools/testing/bench/bench.py boots the VM and runs this).

Usage: /usr/bin/python3 tools/testing/bench/guest.py PLAN.json

PLAN.json (written by bench.py, in a directory the guest may write) says what to run: rounds,
byte counts, iterations, the paths of the tools and of both stacks' modules.  In each round the
stacks run one after the other in the plan's order (C, rvsock, C, rvsock, ...), each loaded on
its own: the other stack's modules are unloaded first and /proc/modules is checked, since both
register address family 40.  Then the TCP and AF_UNIX references run with no vsock stack loaded.

With the plan's transport "virtio" the stacks are the virtio guest drivers (C:
vmw_vsock_virtio_transport, rvsock: rvsock_virtio, and "C2", the C stack again, as the
calibration), the servers run on the host behind vudev's host endpoint (Unix sockets, started by
bench.py before the boot and serving every round), and the clients here connect to CID 2.

Every figure is appended as one JSON line to raw.jsonl next to the plan as soon as it exists, so
a run that fails half way keeps what it measured.  Each step is bounded by a timeout in guest
seconds; on a timeout its processes are killed and the step is recorded as failed.  Progress
lines start with "[bench]" (the host prints them, with its wall clock).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

PLAN = None
OUTDIR = None
RAW = None
FAILURES = 0


def say(msg):
    print("[bench] %s" % msg, flush=True)


def record(obj):
    with open(RAW, "a") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")


class StepError(Exception):
    pass


# ---- processes -----------------------------------------------------------------------------

class Proc:
    """A background process in its own session, with its stdout/stderr in files."""

    def __init__(self, name, argv, stdin=subprocess.DEVNULL, cpu=None):
        self.name = name
        self.out_path = os.path.join(LOGDIR, "%s.out" % name)
        self.err_path = os.path.join(LOGDIR, "%s.err" % name)
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        self.argv = argv
        # cpu: the one CPU the process (and its threads) may run on; None for any.
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=self.out, stderr=self.err,
                                  start_new_session=True, preexec_fn=pin)

    def wait(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise StepError("%s: timed out after %s s: %s" % (self.name, timeout,
                                                              " ".join(self.argv)))
        finally:
            self.out.flush()
            self.err.flush()

    def kill(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.p.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        say("warning: %s (pid %d) does not die (stuck in the kernel?)" % (self.name, self.p.pid))

    def stop(self, grace=10):
        """Ends a server: waits up to grace s for it to exit by itself, then kills it."""
        try:
            self.p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def stdout(self):
        self.out.flush()
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def stderr(self):
        self.err.flush()
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def wait_line(self, pattern, timeout):
        """Waits until the process's stdout has a line matching pattern."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            if rx.search(self.stdout()):
                return
            if self.p.poll() is not None:
                raise StepError("%s exited (%s) before printing /%s/: %s" % (
                    self.name, self.p.returncode, pattern, tail(self.stderr())))
            time.sleep(0.02)
        self.kill()
        raise StepError("%s: no line /%s/ within %s s" % (self.name, pattern, timeout))


def run(name, argv, timeout, cpu=None):
    """Runs argv to completion (bounded), on CPU cpu if given; returns (status, stdout, stderr)."""
    p = Proc(name, argv, cpu=cpu)
    rc = p.wait(timeout)
    return rc, p.stdout(), p.stderr()


def tail(text, n=3):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def sh(cmd, timeout=60):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


# ---- stacks --------------------------------------------------------------------------------

VSOCK_MOD_RE = re.compile(r"^(vsock|vsock_loopback|vsock_diag|vhost_vsock|vmw_vsock_\w+|rvsock\w*) ",
                          re.M)


def loaded_vsock_modules():
    with open("/proc/modules") as f:
        return sorted(m.group(1) for m in VSOCK_MOD_RE.finditer(f.read()))


def load_stack(stack):
    mods = loaded_vsock_modules()
    if mods:
        raise StepError("cannot load %s: vsock modules still loaded: %s" % (stack["name"], mods))
    for ko in stack["load"]:
        rc, out = sh("%s insmod %s" % (BB, ko))
        if rc != 0:
            raise StepError("insmod %s: %s" % (ko, out.strip()))
    mods = loaded_vsock_modules()
    want = sorted(stack["modules"])
    if mods != want:
        raise StepError("after loading %s, /proc/modules has %s, expected %s" % (
            stack["name"], mods, want))
    stack["idle_refs"] = module_ref_counts(stack)
    say("%s loaded: %s" % (stack["name"], " ".join(mods)))


def module_ref_counts(stack):
    return {m: module_refs(m) for m in stack["modules"]}


def settle(stack, limit=120):
    """Waits until the stack's module use counts are back to what they were after loading.

    Each socket holds a reference on its transport's module until it is really gone, and a
    closed connection can linger (both stacks wait up to 8 s for the peer's reset), so after a
    benchmark that closed many sockets (the connection rate) the next one would otherwise start
    with thousands of sockets still going away.  Returns the guest seconds waited.
    """
    t0 = time.monotonic()
    while module_ref_counts(stack) != stack["idle_refs"]:
        if time.monotonic() - t0 > limit:
            say("warning: %s: module use counts %s after %d s, %s when idle; going on" % (
                stack["name"], module_ref_counts(stack), limit, stack["idle_refs"]))
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def unload_stack(stack, timeout=60):
    """rmmod in order, retrying while sockets of the last runs are still going away."""
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    waited = False
    for mod in stack["unload"]:
        while True:
            if mod not in loaded_vsock_modules():
                break
            rc, out = sh("%s rmmod %s" % (BB, mod))
            if rc == 0:
                break
            if time.monotonic() > deadline:
                raise StepError("rmmod %s failed for %d s: %s; /proc/modules: %s" % (
                    mod, timeout, out.strip(), loaded_vsock_modules()))
            if not waited:
                say("rmmod %s: %s; retrying (module users: %s; processes: %s)" % (
                    mod, out.strip(), module_refs(mod), other_processes()))
            waited = True
            time.sleep(0.2)
    mods = loaded_vsock_modules()
    if mods:
        raise StepError("after unloading %s, /proc/modules still has %s" % (stack["name"], mods))
    say("%s unloaded%s; no vsock module loaded" % (
        stack["name"], " after %.1f guest s" % (time.monotonic() - t0) if waited else ""))


def unload_autoloaded(timeout=60):
    """Unloads vsock modules loaded before the plan started (a virtio-vsock device can have
    its driver loaded at boot), users first."""
    deadline = time.monotonic() + timeout
    while loaded_vsock_modules() and time.monotonic() < deadline:
        say("unloading the vsock modules loaded at boot: %s" % loaded_vsock_modules())
        for mod in loaded_vsock_modules():
            if module_refs(mod) == "0":
                sh("%s rmmod %s" % (BB, mod))
        time.sleep(0.2)


def module_refs(mod):
    with open("/proc/modules") as f:
        for ln in f:
            a = ln.split()
            if a[0] == mod:
                return a[2]
    return "-"


def other_processes():
    """The processes other than this one and its shell ancestors, by name (for diagnostics)."""
    me = {os.getpid(), os.getppid()}
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in me or int(pid) == 1:
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd:
            out.append("%s:%s" % (pid, cmd[:60]))
    return ", ".join(out) or "none"


# ---- benchmarks ----------------------------------------------------------------------------

def xfer_timeout(nbytes):
    """Guest seconds allowed for one transfer: generous (0.05 Gbit/s) plus a minute."""
    return 60 + nbytes * 8 / 0.05e9


def parse_num(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        raise StepError("no %s in the output: %s" % (what, tail(text, 5)))
    return float(m.group(1))


def bench_vsock_perf(ctx, buf):
    """Upstream vsock_perf, one stream over CID 1: receiver's rx and sender's tx Gbit/s."""
    port = next_port()
    nbytes = PLAN["bytes"]
    tmo = xfer_timeout(nbytes)
    recv = Proc(ctx + "-rx", [PLAN["vsock_perf"], "--port", str(port), "--buf-size", str(buf)])
    try:
        # vsock_perf prints nothing before it listens that a pipe would show (stdio buffering):
        # retry the sender while the listener is not there yet.
        for attempt in range(50):
            rc, out, err = run(ctx + "-tx", [PLAN["vsock_perf"], "--sender", "1", "--port",
                                             str(port), "--bytes", str(nbytes), "--buf-size",
                                             str(buf)], tmo)
            if rc == 0:
                break
            if "connect" not in err or attempt == 49 or recv.p.poll() is not None:
                raise StepError("vsock_perf sender: exit %s: %s" % (rc, tail(err + out)))
            time.sleep(0.1)
        rrc = recv.wait(tmo)
    finally:
        recv.kill()
    rout = recv.stdout()
    if rrc != 0:
        raise StepError("vsock_perf receiver: exit %s: %s" % (rrc, tail(recv.stderr() + rout)))
    return {
        "rx_gbit_s": parse_num(r"rx performance: ([0-9.]+) Gbits/s", rout, "rx performance"),
        "rx_bytes": parse_num(r"total bytes received: ([0-9]+)", rout, "bytes received"),
        "rx_read_s": parse_num(r"total time in 'read\(\)': ([0-9.]+)", rout, "read time"),
        "rx_wakeups": parse_num(r"POLLIN wakeups: ([0-9]+)", rout, "wake-ups"),
        "tx_gbit_s": parse_num(r"tx performance: ([0-9.]+) Gbits/s", out, "tx performance"),
        "tx_loop_s": parse_num(r"total time in tx loop: ([0-9.]+)", out, "tx loop time"),
        "tx_bytes": parse_num(r"total bytes sent: ([0-9]+)", out, "bytes sent"),
    }


def transport_args(kind, port, tag):
    if kind == "host":
        # The host's servers behind the virtio device (vudev --host-uds): CID 2.
        return ["--cid", "2", "--port", str(port)]
    if kind == "vsock":
        return ["--port", str(port)]
    if kind == "tcp":
        return ["--tcp", "127.0.0.1:%d" % port]
    if kind == "unix":
        return ["--unix", "/tmp/bench-%s-%d.sock" % (tag, port)]
    raise ValueError(kind)


def sample(name):
    return os.path.join(PLAN["samples"], name)


def json_line(text, who):
    for ln in reversed(text.strip().splitlines()):
        ln = ln.strip()
        if ln.startswith("{"):
            return json.loads(ln)
    raise StepError("%s printed no JSON: %s" % (who, tail(text, 5)))


# --timeout of the clients against the host: it is also their sockets' connect timeout, and a
# non-blocking connect() holds the socket (and the transport module) until that timer fires,
# which settle() then waits for.
HOST_TIMEOUT = "5"


def client_server(ctx, tool, kind, server_args, client_args, timeout):
    if kind == "host":
        client_args = [HOST_TIMEOUT if i > 0 and client_args[i - 1] == "--timeout" else a
                       for i, a in enumerate(client_args)]
        # The server is on the host, up for the whole run.
        targs = transport_args(kind, PLAN["host_ports"][tool], tool)
        rc, out, err = run(ctx + "-client", [sample(tool)] + client_args + targs +
                           ["--deadline", str(int(timeout))], timeout + 30)
        if rc != 0:
            raise StepError("%s client: exit %s: %s" % (tool, rc, tail(err + out)))
        return json_line(out, tool)
    port = next_port()
    targs = transport_args(kind, port, tool)
    srv = Proc(ctx + "-server", [sample(tool), "--server"] + server_args + targs)
    try:
        srv.wait_line(r"^listening on", 60)
        rc, out, err = run(ctx + "-client", [sample(tool)] + client_args + targs +
                           ["--deadline", str(int(timeout))], timeout + 30)
        if rc != 0:
            raise StepError("%s client: exit %s: %s" % (tool, rc, tail(err + out)))
        res = json_line(out, tool)
    finally:
        srv.stop()
    return res


def bench_stream(ctx, kind, streams, buf):
    nbytes = PLAN["bytes"]
    j = client_server(ctx, "vsock-stream-bench", kind, ["--once", "--accept-timeout", "120"],
                      ["--bytes", str(nbytes), "--buf-size", str(buf), "--streams", str(streams),
                       "--timeout", "60", "--json"], xfer_timeout(nbytes))
    if j["bytes"] != nbytes:
        raise StepError("stream-bench moved %s bytes, not %s" % (j["bytes"], nbytes))
    srv_secs = max(s["server_elapsed_s"] for s in j["per_stream"])
    if kind == "host":
        # The server's clock is the host's (real time), not the guest's: no rx figure.
        return {"tx_gbit_s": j["gbit_per_s"], "elapsed_s": j["elapsed_s"],
                "per_stream_gbit_s": [s["gbit_per_s"] for s in j["per_stream"]],
                "host_server_elapsed_s": srv_secs}
    return {
        # The receiver's figure: all bytes over the longest stream's first-byte-to-EOF time.
        "rx_gbit_s": nbytes * 8 / srv_secs / 1e9 if srv_secs > 0 else None,
        # The sender's: all bytes over the time until the server's count came back.
        "tx_gbit_s": j["gbit_per_s"],
        "per_stream_gbit_s": [s["gbit_per_s"] for s in j["per_stream"]],
        "elapsed_s": j["elapsed_s"],
    }


def bench_pingpong(ctx, kind, size):
    it, wu = PLAN["iterations"], PLAN["warmup"]
    j = client_server(ctx, "vsock-pingpong", kind, ["--once", "--accept-timeout", "120"],
                      ["--size", str(size), "--iterations", str(it), "--warmup", str(wu),
                       "--timeout", "30", "--json"], 120 + (it + wu) * 0.01)
    return {k: j[k] for k in ("min_us", "median_us", "mean_us", "p90_us", "p99_us", "p999_us",
                              "max_us", "stddev_us", "wall_s")}


def bench_connrate(ctx, kind):
    d = PLAN["connrate_duration"]
    if kind == "host":
        targs = transport_args(kind, PLAN["host_ports"]["vsock-connrate"], "connrate")
        rc, out, err = run(ctx + "-client", [sample("vsock-connrate"), "--duration", str(d),
                                             "--wait-close", "--timeout", HOST_TIMEOUT, "--json",
                                             "--deadline", str(int(d + 120))] + targs, d + 150)
        if rc != 0:
            raise StepError("vsock-connrate: exit %s: %s" % (rc, tail(err + out)))
        j = json_line(out, "vsock-connrate")
        return {k: j[k] for k in ("conn_per_s", "connections", "attempts", "refused", "reset",
                                  "timedout", "errors", "elapsed_s")}
    port = next_port()
    targs = transport_args(kind, port, "connrate")
    srv = Proc(ctx + "-server", [sample("vsock-connrate"), "--server", "--accept-timeout", "30"] +
               targs)
    try:
        srv.wait_line(r"^listening on", 60)
        rc, out, err = run(ctx + "-client", [sample("vsock-connrate"), "--duration", str(d),
                                             "--wait-close", "--timeout", "10", "--json",
                                             "--deadline", str(int(d + 120))] + targs, d + 150)
        if rc != 0:
            raise StepError("vsock-connrate: exit %s: %s" % (rc, tail(err + out)))
        j = json_line(out, "vsock-connrate")
    finally:
        srv.kill()
    return {k: j[k] for k in ("conn_per_s", "connections", "attempts", "refused", "reset",
                              "timedout", "errors", "elapsed_s")}


def bench_connflood(ctx, kind):
    """A connect flood against a full listener: vsock-connrate --flood on both sides.

    The server listens (backlog from the plan) and accepts from the start (or after the plan's
    accept delay), spending the plan's work (us of CPU) on each connection, so that it is
    slower than the clients, started at once, and its queue fills; both sides count after the
    same warm-up.  When its queue is empty it
    naps (1 ms) instead of waiting in poll(2): under icount a server asleep in poll was at
    times not woken for the whole flood, in both stacks, which measured the wake-up, not the
    flood.  Both count over the same duration (the server's window starts a little earlier:
    the client starts once the server said it listens).  The regime was overloaded when the
    clients were turned away in every 100 ms slot of their window and the accept loop found
    its queue empty for at most 1 % of its accepts.

    With the plan's connflood_pin (--connflood-pin split) the server runs on CPU 0 and the
    clients on CPU 1.  Unpinned, how the scheduler shares two vCPUs among three busy threads
    decides much of the figure (the server got a third or two fifths of a CPU, or none for the
    whole flood, in either stack); pinned, that share is fixed, but under icount the vCPUs
    still take turns, so the server does not get a CPU of its own.
    """
    d, w = PLAN["connflood_duration"], PLAN["connflood_warmup"]
    srv_cpu, cli_cpu = (0, 1) if PLAN.get("connflood_pin") else (None, None)
    port = next_port()
    targs = transport_args(kind, port, "connflood")
    bound = int(w + d + 120)
    srv = Proc(ctx + "-server", [sample("vsock-connrate"), "--server", "--flood", "--backlog",
                                 str(PLAN["connflood_backlog"]), "--accept-delay",
                                 str(PLAN["connflood_accept_delay"]), "--warmup", str(w),
                                 "--duration", str(d), "--work-us",
                                 str(PLAN["connflood_work_us"]), "--nap",
                                 str(PLAN["connflood_nap_s"]), "--json", "--deadline",
                                 str(bound)] + targs, cpu=srv_cpu)
    try:
        srv.wait_line(r"^listening on", 60)
        rc, out, err = run(ctx + "-client", [sample("vsock-connrate"), "--flood", "--threads",
                                             str(PLAN["connflood_threads"]), "--warmup", str(w),
                                             "--duration", str(d), "--json", "--deadline",
                                             str(bound)] + targs, bound + 30, cpu=cli_cpu)
        if rc != 0:
            raise StepError("vsock-connrate --flood: exit %s: %s" % (rc, tail(err + out)))
        cj = json_line(out, "vsock-connrate --flood")
        # It drains the queue and exits once no connection came for 1 s.
        src = srv.wait(bound)
        if src != 0:
            raise StepError("vsock-connrate --server --flood: exit %s: %s" % (
                src, tail(srv.stderr() + srv.stdout())))
        sj = json_line(srv.stdout(), "vsock-connrate --server --flood")
    finally:
        srv.kill()
    server_cpu = sj["cpu_user_s"] + sj["cpu_sys_s"]
    client_cpu = cj.get("cpu_user_s", 0) + cj.get("cpu_sys_s", 0)
    v = {
        "accept_per_s": sj["accept_per_s"],
        "accepted": sj["accepted"],
        "accept_waits": sj["accept_waits"],
        "refused": cj["turned_away"],
        "refused_per_s": cj["turned_away_per_s"],
        "econnreset": cj["reset"],
        "econnrefused": cj["refused"],
        "attempts": cj["attempts"],
        "attempts_per_s": cj["attempts_per_s"],
        "client_conn_per_s": cj["conn_per_s"],
        "timedout": cj["timedout"],
        "errors": cj["errors"],
        "send_errors": cj["send_errors"],
        "short_reads": sj["short_reads"],
        "read_errors": sj["read_errors"],
        "accept_errors": sj["accept_errors"],
        "drained": sj["drained"],
        "refusing_slots_fraction": cj["slots_turning_away"] / float(cj["slots"]),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_accept": sj["cpu_us_per_accept"],
        "client_cpu_s": client_cpu,
        "window_s": sj["elapsed_s"],
        "server": sj,
        "client": cj,
    }
    v["overloaded"] = (cj["slots_turning_away"] == cj["slots"] and
                       sj["accept_waits"] * 100 <= sj["accepted"])
    if v["overloaded"]:
        # The figure the issue compares: the accept rate in the overloaded regime only.
        v["accept_per_s_overloaded"] = sj["accept_per_s"]
    if "sys_busy_s" in cj:
        v["sys_busy_s"] = cj["sys_busy_s"]
        v["sys_irq_s"] = cj["sys_irq_s"]
        # Kernel threads (the transport's worker), interrupts: not the server nor the clients.
        v["other_cpu_s"] = cj["sys_busy_s"] - server_cpu - client_cpu
        if cj["attempts"]:
            v["busy_us_per_attempt"] = cj["sys_busy_s"] * 1e6 / cj["attempts"]
    return v


def read_meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for ln in f:
            k, v = ln.split(":", 1)
            out[k] = int(v.split()[0]) * 1024  # kB -> bytes
    return out


def read_slabinfo():
    """name -> (active_objs, num_objs, objsize, pages in slabs)."""
    out = {}
    with open("/proc/slabinfo") as f:
        for ln in f:
            if ln.startswith("slabinfo") or ln.startswith("#"):
                continue
            a = ln.split()
            # name active_objs num_objs objsize objperslab pagesperslab : tunables ... :
            # slabdata active_slabs num_slabs sharedavail
            i = a.index("slabdata")
            out[a[0]] = (int(a[1]), int(a[2]), int(a[3]), int(a[i + 2]) * int(a[5]))
    return out


def shrink_slabs():
    """Gives free slabs back, so that the Slab figures before and after compare used memory."""
    base = "/sys/kernel/slab"
    try:
        names = os.listdir(base)
    except OSError:
        return
    for n in names:
        try:
            with open(os.path.join(base, n, "shrink"), "w") as f:
                f.write("1")
        except OSError:
            pass


def bench_pairs(ctx, kind):
    n = PLAN["pairs"]
    port = next_port()
    targs = transport_args(kind, port, "pairs")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")
    shrink_slabs()
    time.sleep(0.5)
    m0, s0 = read_meminfo(), read_slabinfo()
    p = Proc(ctx, [sample("vsock-pairs"), "--count", str(n), "--max-wait", "300",
                   "--deadline", "400"] + targs, stdin=subprocess.PIPE)
    try:
        p.wait_line(r"^ready %d$" % n, 300)
        time.sleep(0.5)
        m1, s1 = read_meminfo(), read_slabinfo()
        p.p.stdin.close()
        rc = p.wait(120)
        if rc != 0:
            raise StepError("vsock-pairs: exit %s: %s" % (rc, tail(p.stderr())))
    finally:
        p.kill()
    caches = {}
    for name, (a1, _, size, pages1) in s1.items():
        a0, _, _, pages0 = s0.get(name, (0, 0, size, 0))
        if a1 != a0 or pages1 != pages0:
            caches[name] = {"objs": a1 - a0, "objsize": size, "bytes": (a1 - a0) * size,
                            "slab_bytes": (pages1 - pages0) * 4096}
    meminfo = {k: m1.get(k, 0) - m0.get(k, 0) for k in (
        "Slab", "SReclaimable", "SUnreclaim", "MemFree", "MemAvailable", "Percpu",
        "VmallocUsed", "KernelStack", "PageTables")}
    # The caches that grow with the pairs (at least one object per two pairs), leaving out the
    # noise of the processes' own start-up and file accesses.
    scaling = {k: c for k, c in caches.items() if c["objs"] >= n // 2}
    return {
        "pairs": n,
        "slab_bytes_per_pair": meminfo["Slab"] / n,
        "scaling_bytes_per_pair": sum(c["bytes"] for c in scaling.values()) / n,
        "scaling_caches": sorted(scaling),
        "objs_bytes_per_pair": sum(c["bytes"] for c in caches.values()) / n,
        "af_vsock_bytes_per_pair": caches.get("AF_VSOCK", {}).get("bytes", 0) / n,
        "af_vsock_objsize": caches.get("AF_VSOCK", {}).get("objsize"),
        "memfree_drop_per_pair": -meminfo["MemFree"] / n,
        "meminfo_delta": meminfo,
        "caches": caches,
    }


PORT = [20000]


def next_port():
    PORT[0] += 1
    return PORT[0]


def step(round_no, stack, name, fn, *args, stack_info=None):
    """Runs one benchmark, records its figures (or its failure)."""
    global FAILURES
    ctx = "r%d-%s-%s" % (round_no, stack, name)
    say("start %s round %d: %s" % (stack, round_no, name))
    t0 = time.monotonic()
    rec = {"round": round_no, "stack": stack, "bench": name}
    try:
        rec["values"] = fn(ctx, *args)
        rec["ok"] = True
    except StepError as e:
        FAILURES += 1
        rec["ok"] = False
        rec["error"] = str(e)
        say("FAILED %s round %d %s: %s" % (stack, round_no, name, e))
    rec["guest_s"] = round(time.monotonic() - t0, 3)
    if stack_info is not None:
        rec["settle_guest_s"] = round(settle(stack_info), 3)
    record(rec)
    say("end %s round %d: %s (%.1f guest s)%s" % (
        stack, round_no, name, rec["guest_s"], "" if rec["ok"] else " FAILED"))
    return rec["ok"]


def vsock_benches():
    """(name, function, args) for each AF_VSOCK benchmark, in run order."""
    if PLAN.get("transport") == "virtio":
        # Guest to host over the virtio device: the servers are on the host.
        b = [("stream_%s" % label(s), bench_stream, ("host", 1, s))
             for s in PLAN["stream_buffers"]]
        b += [("pingpong_%s" % label(s), bench_pingpong, ("host", s)) for s in PLAN["pp_sizes"]]
        b += [("connrate", bench_connrate, ("host",))]
        return [x for x in b if want(x[0])]
    b = [("perf_%s" % label(s), bench_vsock_perf, (s,)) for s in PLAN["perf_buffers"]]
    b += [("stream%d_%s" % (n, label(s)), bench_stream, ("vsock", n, s))
          for n, s in PLAN["stream_runs"]]
    b += [("pingpong_%s" % label(s), bench_pingpong, ("vsock", s)) for s in PLAN["pp_sizes"]]
    b += [("connrate", bench_connrate, ("vsock",)), ("connflood", bench_connflood, ("vsock",)),
          ("pairs", bench_pairs, ("vsock",))]
    return [x for x in b if want(x[0])]


def ref_benches(kind):
    b = [("stream%d_%s" % (n, label(s)), bench_stream, (kind, n, s))
         for n, s in PLAN["ref_stream_runs"]]
    b += [("pingpong_%s" % label(s), bench_pingpong, (kind, s)) for s in PLAN["pp_sizes"]]
    return [x for x in b if want(x[0])]


def want(name):
    only = PLAN.get("only")
    return not only or any(re.fullmatch(o, name) for o in only)


def label(n):
    for unit, suffix in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if n >= unit and n % unit == 0:
            return "%d%s" % (n // unit, suffix)
    return str(n)


def calibrate():
    """What one kernel-to-user copy costs here: reading a 256 MiB tmpfs file in 1 MiB reads
    (copy_to_user, plus the page cache look-ups), guest ns per byte, best of two passes.
    Under icount this bounds what any stack that copies each byte twice can reach."""
    path = "/tmp/bench-calibration"
    mib = 256
    buf = bytearray(1 << 20)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for _ in range(mib):
            os.write(fd, buf)
        os.close(fd)
        best = None
        for _ in range(2):
            fd = os.open(path, os.O_RDONLY)
            view = memoryview(buf)
            t0 = time.monotonic()
            while os.readv(fd, [view]) > 0:
                pass
            secs = time.monotonic() - t0
            os.close(fd)
            best = secs if best is None else min(best, secs)
    except OSError as e:
        return {"ok": False, "error": str(e)}
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    ns = best * 1e9 / (mib << 20)
    return {"copy_to_user_ns_per_byte": ns, "one_copy_gbit_s": 8 / ns, "ok": True}


def environment():
    env = {}
    env["uname"] = os.uname().release
    env["nproc"] = os.cpu_count()
    with open("/proc/cmdline") as f:
        env["cmdline"] = " ".join(a for a in f.read().split() if not a.startswith("virtme.exec"))
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
        env["cpu_model"] = m.group(1) if m else None
    env["memtotal"] = read_meminfo().get("MemTotal")
    return env


def main():
    global PLAN, OUTDIR, RAW, LOGDIR, BB
    PLAN = json.load(open(sys.argv[1]))
    OUTDIR = os.path.dirname(os.path.abspath(sys.argv[1]))
    RAW = os.path.join(OUTDIR, "raw.jsonl")
    LOGDIR = os.path.join(OUTDIR, "guest-logs")
    os.makedirs(LOGDIR, exist_ok=True)
    BB = "/bin/busybox" if os.access("/bin/busybox", os.X_OK) else ""
    open(RAW, "w").close()

    # No module autoloading: a socket(AF_VSOCK) with no stack loaded must not pull one in.
    with open("/proc/sys/kernel/modprobe", "w") as f:
        f.write("\n")
    rc, out = sh("ip link set lo up")
    if rc != 0:
        say("ip link set lo up: %s" % out.strip())
    env = environment()
    env["calibration"] = calibrate()
    record({"environment": env})
    cal = env["calibration"]
    if cal["ok"]:
        say("calibration: reading a tmpfs file costs %.3f guest ns per byte (%.1f Gbit/s for"
            " one copy)" % (cal["copy_to_user_ns_per_byte"], cal["one_copy_gbit_s"]))
    else:
        say("calibration failed: %s" % cal.get("error"))
    say("guest up: %s, %s vCPUs" % (os.uname().release, os.cpu_count()))
    if PLAN.get("transport") == "virtio":
        unload_autoloaded()
    if loaded_vsock_modules():
        raise SystemExit("vsock modules loaded at start: %s" % loaded_vsock_modules())

    stacks = {s["name"]: s for s in PLAN["stacks"]}
    for r in range(1, PLAN["rounds"] + 1):
        for name in PLAN["order"]:
            st = stacks[name]
            say("round %d/%d: %s stack" % (r, PLAN["rounds"], name))
            try:
                load_stack(st)
            except StepError as e:
                say("FATAL: %s" % e)
                record({"round": r, "stack": name, "bench": "load", "ok": False, "error": str(e)})
                return 1
            for bname, fn, args in vsock_benches():
                step(r, name, bname, fn, *args, stack_info=st)
            try:
                unload_stack(st)
            except StepError as e:
                say("FATAL: %s" % e)
                record({"round": r, "stack": name, "bench": "unload", "ok": False,
                        "error": str(e)})
                return 1
        for kind in PLAN["references"]:
            say("round %d/%d: %s reference" % (r, PLAN["rounds"], kind))
            for bname, fn, args in ref_benches(kind):
                step(r, kind, bname, fn, *args)
    record({"complete": True, "failures": FAILURES})
    say("done, %d failed step(s)" % FAILURES)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
