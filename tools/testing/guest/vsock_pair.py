#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Runs one upstream vsock test tool (vsock_test, vsock_uring_test) as server + client over a CID
and reports the cases as RESULT lines (see lib.sh for the format).

Both sides print "N - name..." when a case starts and "ok" when it ends; a process that fails
exits at once, so a case passes only when both sides printed "ok" for it.  Every run is bounded:
a side that outlives --timeout is killed with its process group.

Exit status: 0 when every case passed, 2 when the first run hung (a side had to be killed),
1 otherwise.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time

CASE_RE = re.compile(r"^(\d+) - (.*?)\.\.\.(ok|skipped)?", re.M)
END_MARK = "All tests have been executed."


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tool", required=True)
    p.add_argument("--cid", default="1")
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--timeout", type=int, default=120)
    p.add_argument("--out", required=True, help="the guest output directory ($OUT)")
    p.add_argument("--suite", required=True)
    p.add_argument("--log", required=True, help="log file, relative to --out")
    p.add_argument("--prefix", default="", help="prefix for the case names")
    p.add_argument("--summary", help="report one check with this name instead of one per case")
    p.add_argument("--repeat", type=int, default=0,
                   help="then run N more times, one check per run (control ports +1, +2, ...)")
    p.add_argument("--source", help="C source to take the case names from (no --list)")
    p.add_argument("extra", nargs="*", help="more arguments for both sides (e.g. --skip=N)")
    return p.parse_args()


class Side:
    """One running side: its stdout is read in chunks and time-stamped, stderr goes to a file."""

    def __init__(self, name, argv, errfile):
        self.name = name
        self.start = time.monotonic()
        self.chunks = []  # (seconds since start, text)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errfile,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.killed = False
        self.limit = 0

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            data = os.read(fd, 4096)
            if not data:
                return
            self.chunks.append((time.monotonic() - self.start, data.decode(errors="replace")))

    def wait(self, deadline):
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
        self.reader.join(timeout=5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is not None:
            return
        self.killed = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=3)
                return
            except subprocess.TimeoutExpired:
                continue

    @property
    def text(self):
        return "".join(c for _, c in self.chunks)

    def cases(self):
        """{id: (name, 'ok'|'skipped'|None, start seconds)} as printed so far."""
        text, times, pos = "", [], 0
        for t, c in self.chunks:
            times.append((pos, t))
            pos += len(c)
            text += c
        found = {}
        for m in CASE_RE.finditer(text):
            t = next((t for p, t in reversed(times) if p <= m.start()), 0.0)
            found[int(m.group(1))] = (m.group(2), m.group(3), t)
        end = text.find(END_MARK)
        if end >= 0:
            self.end_time = next((t for p, t in reversed(times) if p <= end), 0.0)
        else:
            self.end_time = time.monotonic() - self.start
        self.finished = end >= 0 and text[end:].rstrip().endswith("ok")
        return found


def wait_listen(port, seconds):
    needle = ":%04X" % port
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for f in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(f) as fh:
                    for line in fh.readlines()[1:]:
                        cols = line.split()
                        if cols[1].endswith(needle) and cols[3] == "0A":
                            return True
            except OSError:
                pass
        time.sleep(0.1)
    return False


def expected_cases(args):
    """[(id, name)] the tool has, from --list or from its C source."""
    if args.source:
        with open(args.source) as f:
            src = f.read()
        block = src[src.index("test_cases[] = {"):]
        block = block[:block.index("\n};")]
        names = re.findall(r'\.name\s*=\s*"([^"]*)"', block)
        return list(enumerate(names))
    r = subprocess.run([args.tool, "--list"], capture_output=True, text=True, timeout=30)
    return [(int(i), n) for i, n in re.findall(r"^(\d+)\t(.*)$", r.stdout, re.M)]


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_pair(args, errbase):
    common = ["--control-port=%d" % args.control_port, "--peer-cid=%s" % args.cid] + args.extra
    with open(errbase + ".server.err", "w") as serr, open(errbase + ".client.err", "w") as cerr:
        server = Side("server", [args.tool, "--mode=server"] + common, serr)
        deadline = time.monotonic() + args.timeout
        client = None
        if wait_listen(args.control_port, 15):
            client = Side("client", [args.tool, "--mode=client", "--control-host=127.0.0.1"]
                          + common, cerr)
            client.wait(deadline)
        # The server ends when the client does (control socket EOF); give it a little time.
        server.wait(min(deadline, time.monotonic() + 15))
        if client is None:
            server.kill()
    for side in (server, client):
        if side is not None:
            side.limit = args.timeout
    return server, client


def judge(args, server, client, errbase):
    """[(name, status, seconds, message)] for each expected case."""
    expected = expected_cases(args)
    sides = [s for s in (server, client) if s is not None]
    parsed = {s.name: s.cases() for s in sides}
    results = []
    for i, (cid, name) in enumerate(expected):
        status, msg = case_status(cid, sides, parsed, client, errbase)
        starts = [parsed[s.name][cid][2] for s in sides if cid in parsed[s.name]]
        nxt = expected[i + 1][0] if i + 1 < len(expected) else None
        ends = [parsed[s.name][nxt][2] if nxt in parsed[s.name] else s.end_time for s in sides]
        secs = max(0.0, max(ends) - min(starts)) if starts else 0.0
        results.append(("%s%d - %s" % (args.prefix, cid, name), status, secs, msg))
    return results


def case_status(cid, sides, parsed, client, errbase):
    if client is None:
        return "fail", "server never listened on the control port: " + last_line(
            errbase + ".server.err")
    states = {s.name: parsed[s.name].get(cid, (None, None, 0))[1] for s in sides}
    if all(v == "ok" for v in states.values()):
        return "pass", ""
    if all(v == "skipped" for v in states.values()):
        return "skip", "skipped"
    bad = [s for s in sides if states[s.name] != "ok"]
    why = []
    for s in bad:
        if cid not in parsed[s.name]:
            reached = sorted(parsed[s.name])
            why.append("not run: the %s stopped %s" % (
                s.name, "in case %d" % reached[-1] if reached else "before the first case"))
            continue
        what = "killed after %d s (timeout)" % s.limit if s.killed else "exit %s" % (
            s.proc.returncode)
        why.append("%s %s: %s" % (s.name, what, last_line("%s.%s.err" % (errbase, s.name))))
    return "fail", "; ".join(why)


def write_log(path, args, server, client, errbase):
    with open(path, "w") as f:
        for s in (server, client):
            if s is None:
                f.write("---- client: not started ----\n")
                continue
            f.write("---- %s: %s, exit %s%s ----\n" % (s.name, " ".join(s.proc.args),
                                                     s.proc.returncode,
                                                     " (killed)" if s.killed else ""))
            f.write(s.text + "\n---- %s stderr ----\n" % s.name)
            with open("%s.%s.err" % (errbase, s.name), errors="replace") as e:
                f.write(e.read())


def emit(args, name, status, secs, msg, log):
    line = "RESULT\t%s\t%s\t%s\t%.2f\t%s\t%s\n" % (args.suite, name, status, secs, log,
                                                  " ".join(msg.split())[:300] or "-")
    with open(os.path.join(args.out, "results.txt"), "a") as f:
        f.write(line)
    print("[guest] %-4s %s: %s (%.2f s) %s" % (status, args.suite, name, secs, msg), flush=True)


def one_run(args, log, summary):
    """One server + client run: its results, as one check (summary) or one per case.

    Returns (hung, ok): whether a side had to be killed, whether every case passed.
    """
    logpath = os.path.join(args.out, log)
    os.makedirs(os.path.dirname(logpath), exist_ok=True)
    errbase = logpath[:-4] if logpath.endswith(".log") else logpath
    t0 = time.monotonic()
    server, client = run_pair(args, errbase)
    write_log(logpath, args, server, client, errbase)
    results = judge(args, server, client, errbase)
    failed = [r for r in results if r[1] == "fail"]
    if summary:
        total = time.monotonic() - t0
        if not results:
            emit(args, summary, "fail", total, "no test cases found", log)
        elif failed:
            emit(args, summary, "fail", total, "%d of %d cases failed, first: %s: %s" %
                 (len(failed), len(results), failed[0][0], failed[0][3]), log)
        else:
            emit(args, summary, "pass", total, "all %d ok" % len(results), log)
    else:
        if not results:
            emit(args, args.prefix + "cases", "fail", time.monotonic() - t0, "no cases found",
                 log)
        for name, status, secs, msg in results:
            emit(args, name, status, secs, msg, log)
    hung = any(s is not None and s.killed for s in (server, client))
    return hung, bool(results) and not failed


def main():
    args = parse_args()
    hung, ok = one_run(args, args.log, args.summary)
    base = args.log[:-4] if args.log.endswith(".log") else args.log
    for r in range(1, args.repeat + 1):
        name = "repeat %d/%d: all cases ok" % (r, args.repeat)
        if hung:  # a run that hung would hang again: do not spend more timeouts on it
            emit(args, name, "skip", 0.0, "not run: the first run hung", "-")
            continue
        args.control_port += 1
        ok = one_run(args, "%s-repeat-%d.log" % (base, r), name)[1] and ok
    return 2 if hung else 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
