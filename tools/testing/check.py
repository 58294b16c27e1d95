#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""rvsock's whole test suite: what `make check` and CI run.

Steps: setup (tools/testing/setup.sh), `cargo test --workspace`, the module build with warnings
as errors, clippy and rustfmt, then one boot of the test kernel running the in-guest suite
(tools/testing/guest/suite.sh: baseline, modules, kunit, vsock_test, clients, unload, dmesg),
whose KUnit output is parsed here with the kernel's kunit.py, then the virtio suite
(tools/testing/virtio/suite.py: guests on a virtio-vsock device, with boots of their own), then
the packaging suite (tools/testing/packaging/suite.py: make install, DKMS, modprobe and autoload in
a boot of its own, make rust-analyzer, kunit.py's case count).

Results: a per-suite summary on stdout, ending with the line "N passed, N failed", and JUnit XML
in target/check/junit.xml.  Logs are under target/check/.  The exit status is non-zero when a
check failed, except in the suites listed in tools/testing/xfail (expected to fail for now).

Environment: RVSOCK_VSOCK_TEST_REPEAT (vsock_test repetitions, default 5), RVSOCK_VM_TIMEOUT
(seconds for the whole VM run), RVSOCK_KVM (0/1: force TCG/KVM; default: probe), RVSOCK_STRESS
(short or full: the stress suite's form; `make stress` runs full), RVSOCK_FUZZ_PACKETS (packets the
kernel fuzzer injects, default 100000; `make fuzz-kernel` asks for 1000000), RVSOCK_VIRTIO_TIMEOUT
(seconds for the whole virtio suite, default 2400), RVSOCK_VIRTIO_BIG (bytes each way of its big
guest-host flows), RVSOCK_PACKAGING_TIMEOUT (seconds for the whole packaging suite, default 1800).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTING = os.path.join(TOP, "tools", "testing")
sys.path.insert(0, TESTING)
from procgroup import kill_group  # noqa: E402

OUTDIR = os.path.join(TOP, "target", "check")
LOGDIR = os.path.join(OUTDIR, "logs")
VMDIR = os.path.join(OUTDIR, "vm")
XFAIL_FILE = os.path.join(TESTING, "xfail")

HOST_SUITES = ["setup", "cargo", "build"]
GUEST_SUITES = ["baseline", "modules", "kunit", "vsock_test", "clients", "conformance", "routing",
                "stress", "fuzz", "unload", "dmesg"]
# Host-driven suites with VMs of their own, after the guest suite's boot.
VM_SUITES = ["virtio", "packaging"]
ALL_SUITES = HOST_SUITES + ["vm"] + GUEST_SUITES + VM_SUITES

T_SETUP = 75 * 60  # a cold setup builds the kernel and bindgen
T_CARGO = 20 * 60
T_BUILD = 15 * 60
T_FMT = 5 * 60
T_VM = int(os.environ.get("RVSOCK_VM_TIMEOUT", 1200))
T_PARSE = 120
T_VIRTIO = int(os.environ.get("RVSOCK_VIRTIO_TIMEOUT", 2400))
T_PACKAGING = int(os.environ.get("RVSOCK_PACKAGING_TIMEOUT", 1800))
EXCERPT_LINES = 40

START = time.monotonic()


@dataclass
class Check:
    suite: str
    name: str
    status: str  # pass, fail, skip
    seconds: float = 0.0
    message: str = ""
    log: str = ""  # path of a log file whose tail explains a failure


CHECKS = []


def progress(msg):
    t = int(time.monotonic() - START)
    print("[%02d:%02d] %s" % (t // 60, t % 60, msg), flush=True)


def add(check):
    CHECKS.append(check)
    if check.status != "pass":
        progress("  %s %s/%s: %s" % (check.status.upper(), check.suite, check.name,
                                      check.message))
    return check


def read_xfail():
    try:
        with open(XFAIL_FILE) as f:
            return {ln.split("#")[0].strip() for ln in f} - {""}
    except FileNotFoundError:
        return set()


# ---- running commands ---------------------------------------------------------------------

def run_logged(argv, logfile, timeout, env=None, echo_re=None):
    """Runs argv with its output in logfile, in its own process group, killed after timeout.

    Returns (exit status or None on timeout, seconds).  Prints a progress line every 30 s, and
    every output line matching echo_re as it comes.
    """
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    t0 = time.monotonic()
    with open(logfile, "w") as log:
        log.write("$ %s\n" % " ".join(argv))
        log.flush()
        proc = subprocess.Popen(argv, cwd=TOP, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, echo_re), daemon=True)
        pump.start()
        rc = None
        try:
            while rc is None:
                try:
                    rc = proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    if time.monotonic() - t0 > timeout:
                        kill_group(proc, grace=25)
                        log.write("\n*** killed after %d s (timeout) ***\n" % timeout)
                        break
                    progress("  ... %s: %d s" % (os.path.basename(argv[0]),
                                                 time.monotonic() - t0))
        except KeyboardInterrupt:
            kill_group(proc, grace=25)
            log.write("\n*** interrupted ***\n")
            raise
        pump.join(timeout=10)
    return rc, time.monotonic() - t0


def _pump(stream, log, echo_re):
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        log.write(line)
        log.flush()
        if echo_re and re.search(echo_re, line):
            print("    " + line.rstrip(), flush=True)


def tail(path, n=EXCERPT_LINES):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def excerpt(path):
    """A failure's log for the JUnit report: all of it when short, else its end."""
    text = tail(path, 2 * EXCERPT_LINES)
    if text.count("\n") < 2 * EXCERPT_LINES:
        return text
    return "[...]\n" + tail(path, EXCERPT_LINES)


def last_line(path):
    lines = [ln.strip() for ln in tail(path, 200).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


ERROR_RE = re.compile(r"^(error(\[\w+\])?:|warning(\[\w+\])?:|Diff in )|: (fatal )?error: ")


def first_error(path):
    """The first compiler error or rustfmt diff line of a build log, else its last line."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if ERROR_RE.search(line):
                    return line.strip()
    except OSError:
        pass
    return last_line(path)


def command_check(suite, name, argv, timeout, logname, env=None):
    progress("%s: %s" % (suite, name))
    logfile = os.path.join(LOGDIR, logname)
    rc, secs = run_logged(argv, logfile, timeout, env=env)
    if rc == 0:
        return add(Check(suite, name, "pass", secs, log=logfile))
    why = "timed out after %d s" % timeout if rc is None else "exit %d: %s" % (
        rc, first_error(logfile))
    return add(Check(suite, name, "fail", secs, why, logfile))


def kernel_dir():
    out = subprocess.run(["bash", "-c", ". tools/testing/lib.sh && kernel_dir"], cwd=TOP,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# ---- steps --------------------------------------------------------------------------------

def step_setup():
    return command_check("setup", "tools/testing/setup.sh",
                         [os.path.join(TESTING, "setup.sh")], T_SETUP, "setup.log").status \
        == "pass"


LIBTEST_RE = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored)", re.M)
RUNNING_RE = re.compile(r"^\s+(Running|Doc-tests) (.*)$", re.M)


def step_cargo():
    if not os.path.exists(os.path.join(TOP, "Cargo.toml")):
        add(Check("cargo", "cargo test --workspace", "skip", message="no Cargo.toml"))
        return
    progress("cargo: cargo test --workspace")
    logfile = os.path.join(LOGDIR, "cargo-test.log")
    rc, secs = run_logged(["cargo", "test", "--workspace", "--no-fail-fast", "--color=never"],
                          logfile, T_CARGO)
    tests = parse_libtest(tail(logfile, 10 ** 6))
    for name, status in tests:
        add(Check("cargo", name, status, 0.0, "" if status == "pass" else "test failed",
                  logfile))
    failed = any(s == "fail" for _, s in tests)
    if rc != 0 and not failed:
        why = "timed out after %d s" % T_CARGO if rc is None else "exit %d: %s" % (
            rc, first_error(logfile))
        add(Check("cargo", "cargo test --workspace", "fail", secs, why, logfile))
    elif not tests:
        add(Check("cargo", "cargo test --workspace", "pass", secs, log=logfile))
    progress("cargo: %d tests in %d s" % (len(tests), secs))


def parse_libtest(text):
    """[(binary::test, status)] from cargo test's output."""
    results, binary = [], ""
    for line in text.splitlines():
        m = RUNNING_RE.match(line)
        if m:
            what = m.group(2)
            # "unittests src/lib.rs (target/debug/deps/rvsock_proto-0123abcd)" -> rvsock_proto
            dep = re.search(r"deps/([A-Za-z0-9_]+?)-[0-9a-f]+\)", what)
            binary = dep.group(1) if dep else what.split()[0]
            if m.group(1) == "Doc-tests":
                binary = "doc:" + binary
            continue
        m = LIBTEST_RE.match(line)
        if m:
            status = {"ok": "pass", "FAILED": "fail", "ignored": "skip"}[m.group(2)]
            results.append(("%s::%s" % (binary, m.group(1)), status))
    return results


def step_build():
    """clippy, the module build and rustfmt.  Returns False when the modules did not build.

    clippy goes first: its build (CLIPPY=1) also writes the .ko files, and the VM is to test
    the ones of the plain build.
    """
    command_check("build", "make clippy", ["make", "clippy"], T_BUILD, "make-clippy.log")
    ok = command_check("build", "make modules", ["make", "modules"], T_BUILD,
                       "make-modules.log").status == "pass"
    command_check("build", "make fmt-check", ["make", "fmt-check"], T_FMT, "make-fmt-check.log")
    # The Rust samples run in the guest (clients suite).
    command_check("build", "cargo build --release --workspace",
                  ["cargo", "build", "--release", "--workspace", "--color=never"],
                  T_CARGO, "samples-build.log")
    return ok


def step_vm(guest_suites, kdir):
    """One boot running the guest suite; returns the output directory."""
    out = os.path.join(VMDIR, "out")
    shutil.rmtree(VMDIR, ignore_errors=True)
    os.makedirs(out)
    console = os.path.join(VMDIR, "console.log")
    repeat = os.environ.get("RVSOCK_VSOCK_TEST_REPEAT", "5")
    stress = os.environ.get("RVSOCK_STRESS", "short")
    fuzz = os.environ.get("RVSOCK_FUZZ_PACKETS", "100000")
    if stress not in ("short", "full") or not fuzz.isdigit():
        raise SystemExit("RVSOCK_STRESS must be short or full, RVSOCK_FUZZ_PACKETS a number")
    guest_cmd = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
                 "RVSOCK_GUEST_SUITES='%s' RVSOCK_VSOCK_TEST_REPEAT=%s RVSOCK_STRESS=%s "
                 "RVSOCK_FUZZ_PACKETS=%s tools/testing/guest/suite.sh %s %s/vsock"
                 % (" ".join(guest_suites), repeat, stress, fuzz, out, kdir))
    argv = [os.path.join(TESTING, "vm", "run.sh"), "--timeout", str(T_VM), "--log", console,
            "--rwdir", out, "--append", "log_buf_len=16M", "--", guest_cmd]
    progress("vm: booting the test kernel, guest suites: %s (timeout %d s)"
             % (" ".join(guest_suites), T_VM))
    results = os.path.join(out, "results.txt")
    watcher = ResultWatcher(results)
    watcher.start()
    rc, secs = run_logged(argv, os.path.join(LOGDIR, "vm-run.log"), T_VM + 120)
    watcher.stop()
    if rc == 0:
        add(Check("vm", "boot and run the guest suite", "pass", secs, log=console))
    else:
        why = {None: "host-side timeout", 124: "timed out after %d s" % T_VM,
               255: "guest died (exit 255)"}.get(rc, "exit %s" % rc)
        add(Check("vm", "boot and run the guest suite", "fail", secs,
                  "%s; console log: %s" % (why, console), console))
        print(tail(os.path.join(LOGDIR, "vm-run.log"), 70), flush=True)
    progress("vm: done in %d s" % secs)
    return out


class ResultWatcher(threading.Thread):
    """Prints the guest's RESULT lines as they appear in the shared output directory."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.done, self.seen, self.suite = path, threading.Event(), 0, None

    def run(self):
        while not self.done.wait(2):
            self.poll()
        self.poll()

    def stop(self):
        self.done.set()
        self.join(timeout=10)

    def poll(self):
        try:
            with open(self.path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines[self.seen:]:
            r = parse_result(line, "")
            if r is None:
                continue
            if r.suite != self.suite:
                self.suite = r.suite
                progress("vm: suite %s" % r.suite)
            mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}.get(r.status, r.status)
            msg = "" if r.status == "pass" else ": " + r.message
            print("    %s %s (%.1f s)%s" % (mark, r.name, r.seconds, msg), flush=True)
        self.seen = len(lines)


def parse_result(line, outdir):
    f = line.split("\t")
    if len(f) != 7 or f[0] != "RESULT":
        return None
    _, suite, name, status, secs, log, msg = f
    try:
        seconds = float(secs)
    except ValueError:
        seconds = 0.0
    return Check(suite, name, status, seconds, "" if msg == "-" else msg,
                 "" if log == "-" else os.path.join(outdir, log))


def read_results(out):
    """The checks of the RESULT lines in out/results.txt, added to CHECKS; their suites."""
    got = []
    try:
        with open(os.path.join(out, "results.txt"), errors="replace") as f:
            for line in f:
                r = parse_result(line.rstrip("\n"), out)
                if r:
                    CHECKS.append(r)
                    got.append(r.suite)
    except OSError:
        pass
    return got


def collect_guest(out, guest_suites):
    got = set(read_results(out))
    for s in guest_suites:
        if s not in got:
            add(Check(s, "results", "fail", 0.0, "the guest reported nothing for this suite "
                      "(it died or stopped early; see the vm check)"))


def step_virtio():
    """The virtio suite (tools/testing/virtio/suite.py): its own VMs, results in RESULT lines."""
    out = os.path.join(OUTDIR, "virtio")
    progress("virtio: guests on a virtio-vsock device (tools/testing/virtio/suite.py)")
    logfile = os.path.join(LOGDIR, "virtio.log")
    # Each of its VM runs gets at most half the suite's time.
    rc, secs = run_logged([sys.executable, os.path.join(TESTING, "virtio", "suite.py"),
                           "--out", out, "--timeout", str(T_VIRTIO // 2 - 120)], logfile,
                          T_VIRTIO, echo_re=r"^\[ *[0-9.]+\] (  (ok|FAIL|skip) |[\w-]+: done)")
    n = len(read_results(out))
    if rc != 0 and (rc is None or n == 0):
        why = "timed out after %d s" % T_VIRTIO if rc is None else "exit %d: %s" % (
            rc, last_line(logfile))
        add(Check("virtio", "suite.py", "fail", secs, why, logfile))
    progress("virtio: done in %d s" % secs)


def step_packaging():
    """The packaging suite (tools/testing/packaging/suite.py): RESULT lines, a VM of its own.

    It compares kunit.py's count with the KTAP of this run's kunit suite, when there is one.
    """
    out = os.path.join(OUTDIR, "packaging")
    progress("packaging: make install, DKMS, modprobe, autoload (tools/testing/packaging/suite.py)")
    logfile = os.path.join(LOGDIR, "packaging.log")
    rc, secs = run_logged([sys.executable, os.path.join(TESTING, "packaging", "suite.py"),
                           "--out", out, "--vm-timeout", str(min(900, T_PACKAGING // 3)),
                           "--kunit-dmesg", os.path.join(VMDIR, "out", "kunit.dmesg"),
                           "--kunit-json", os.path.join(LOGDIR, "kunit.json")], logfile,
                          T_PACKAGING, echo_re=r"^\[ *[0-9.]+\] (  (ok|FAIL|skip) |vm: )")
    n = len(read_results(out))
    if rc != 0 and (rc is None or n == 0):
        why = "timed out after %d s" % T_PACKAGING if rc is None else "exit %d: %s" % (
            rc, last_line(logfile))
        add(Check("packaging", "suite.py", "fail", secs, why, logfile))
    progress("packaging: done in %d s" % secs)


# ---- KUnit --------------------------------------------------------------------------------

DMESG_PREFIX = re.compile(r"^\[\s*\d+\.\d+\]\s?")
TOP_RESULT = re.compile(r"^(not ok|ok) \d+(.*)$")
TOP_HEADER = re.compile(r"^(KTAP version \d+|1\.\.\d+)$")


def ktap_from_dmesg(text):
    """The KTAP of the test modules' loads as one run, the way kunit.py expects it.

    Each module load prints its own top-level "KTAP version 1" and "1..N" and numbers its
    suites from 1: keep one header, with the total, and renumber the top-level results.
    Returns (KTAP text, number of suites).
    """
    lines, n, subtests = [], 0, 0
    for line in text.splitlines():
        line = DMESG_PREFIX.sub("", line)
        if line.startswith("rvsock-check:") or TOP_HEADER.match(line):
            continue
        m = TOP_RESULT.match(line)
        if m:
            n += 1
            line = "%s %d%s" % (m.group(1), n, m.group(2))
        if line.startswith("    # Subtest:"):
            subtests += 1
        lines.append(line)
    total = max(n, subtests)
    return "KTAP version 1\n1..%d\n%s\n" % (total, "\n".join(lines)), total


def step_kunit(out, kdir):
    progress("kunit: parsing the KTAP with kunit.py")
    t0 = time.monotonic()
    dmesg = os.path.join(out, "kunit.dmesg")
    try:
        with open(dmesg, errors="replace") as f:
            ktap, nsuites = ktap_from_dmesg(f.read())
    except OSError:
        add(Check("kunit", "KTAP", "fail", 0.0, "no kunit.dmesg from the guest"))
        return
    ktap_file = os.path.join(LOGDIR, "kunit.ktap")
    with open(ktap_file, "w") as f:
        f.write(ktap)
    json_file = os.path.join(LOGDIR, "kunit.json")
    logfile = os.path.join(LOGDIR, "kunit-parse.log")
    rc, _ = run_logged([sys.executable, os.path.join(kdir, "kunit.py"), "parse",
                        "--json=" + json_file, ktap_file], logfile, T_PARSE)
    secs = time.monotonic() - t0
    if nsuites == 0:
        add(Check("kunit", "KTAP", "fail", secs, "no KUnit suite in the kernel log", dmesg))
        return
    try:
        with open(json_file) as f:
            tree = json.load(f)
    except (OSError, ValueError) as e:
        add(Check("kunit", "kunit.py parse", "fail", secs, "no JSON: %s" % e, logfile))
        return
    cases = list(kunit_cases(tree, ""))
    for name, status in cases:
        st = {"PASS": "pass", "SKIP": "skip"}.get(status, "fail")
        msg = "" if st == "pass" else "KUnit %s: %s" % (status, kunit_diag(ktap, name))
        add(Check("kunit", name, st, 0.0, msg.rstrip(": "), ktap_file))
    check_suites_present(out, tree, secs, ktap_file)
    if not cases:
        add(Check("kunit", "KUnit cases", "fail", secs, "0 cases parsed", ktap_file))
    elif rc != 0 and all(s in ("PASS", "SKIP") for _, s in cases):
        add(Check("kunit", "kunit.py parse", "fail", secs,
                  "exit %s: %s" % (rc, last_line(logfile)), logfile))
    else:
        add(Check("kunit", "kunit.py parse", "pass", secs, log=logfile))


def kunit_diag(ktap, name):
    """The first diagnostic line KUnit printed for a case ("# case: ASSERTION FAILED ...")."""
    case = name.rsplit(".", 1)[-1]
    m = re.search(r"^\s*# %s: (.*)$" % re.escape(case), ktap, re.M)
    return m.group(1).strip() if m else ""


def kunit_cases(group, prefix):
    name = group.get("name", "")
    here = prefix if name == "KUnit Test Group" else (prefix + name + ".")
    for case in group.get("test_cases", []):
        yield here + case["name"], case["status"]
    for sub in group.get("sub_groups", []):
        yield from kunit_cases(sub, here)


def check_suites_present(out, tree, secs, ktap_file):
    """Every suite that KUnit registered (its debugfs directory) must be in the parsed KTAP."""
    debugfs = os.path.join(out, "kunit-debugfs")
    registered = sorted(os.listdir(debugfs)) if os.path.isdir(debugfs) else []
    parsed = {g["name"] for g in tree.get("sub_groups", [])} | {
        c["name"] for c in tree.get("test_cases", [])}
    for suite in registered:
        if suite not in parsed:
            add(Check("kunit", "suite %s" % suite, "fail", secs,
                      "registered but missing from the parsed KTAP", ktap_file))


# ---- reports ------------------------------------------------------------------------------

def write_junit(path, xfail):
    root = ET.Element("testsuites")
    for suite in suites_in_order():
        checks = [c for c in CHECKS if c.suite == suite]
        el = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)),
                           failures=str(sum(c.status == "fail" for c in checks)),
                           skipped=str(sum(c.status == "skip" for c in checks)),
                           time="%.2f" % sum(c.seconds for c in checks))
        if suite in xfail:
            props = ET.SubElement(el, "properties")
            ET.SubElement(props, "property", name="expected_to_fail", value="true")
        for c in checks:
            tc = ET.SubElement(el, "testcase", name=c.name, classname="rvsock." + suite,
                               time="%.2f" % c.seconds)
            if c.status == "fail":
                msg = c.message + (" (expected to fail)" if suite in xfail else "")
                ET.SubElement(tc, "failure", message=msg)
                if c.log:
                    so = ET.SubElement(tc, "system-out")
                    so.text = "log: %s\n%s" % (c.log, clean_xml(excerpt(c.log)))
            elif c.status == "skip":
                ET.SubElement(tc, "skipped", message=c.message)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def clean_xml(text):
    return re.sub(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd]", "?", text)


def suites_in_order():
    seen = [s for s in ALL_SUITES if any(c.suite == s for c in CHECKS)]
    return seen + sorted({c.suite for c in CHECKS} - set(seen))


def summary(xfail):
    print("\n==== summary ====")
    for suite in suites_in_order():
        checks = [c for c in CHECKS if c.suite == suite]
        n = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "skip")}
        line = "%-11s %3d passed, %3d failed" % (suite, n["pass"], n["fail"])
        if n["skip"]:
            line += ", %d skipped" % n["skip"]
        if suite in xfail:
            line += "  (expected to fail)" if n["fail"] else "  (expected to fail, but passed!)"
        print(line)
    failed = [c for c in CHECKS if c.status == "fail"]
    for label, group in (("failed", [c for c in failed if c.suite not in xfail]),
                         ("failed, expected", [c for c in failed if c.suite in xfail])):
        if not group:
            continue
        print("\n%s:" % label)
        for suite in suites_in_order():
            mine = [c for c in group if c.suite == suite]
            for c in mine[:12]:
                print("  %s/%s: %s" % (c.suite, c.name, c.message[:200]))
                if c.log and label == "failed":
                    print("      log: %s" % c.log)
            if len(mine) > 12:
                print("  %s: ... and %d more" % (suite, len(mine) - 12))
    print("\nJUnit XML: %s; logs: %s" % (os.path.join(OUTDIR, "junit.xml"), OUTDIR))
    print("%d passed, %d failed" % (sum(c.status == "pass" for c in CHECKS), len(failed)))
    return not any(c.suite not in xfail for c in failed)


# ---- main ---------------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", default=[], metavar="SUITE[,SUITE]",
                   help="run only these suites (%s)" % ", ".join(ALL_SUITES))
    p.add_argument("--no-vm", action="store_true", help="skip the VM boot and its suites")
    p.add_argument("--no-setup", action="store_true", help="do not run tools/testing/setup.sh")
    args = p.parse_args()
    only = {s for arg in args.only for s in arg.split(",") if s}
    bad = only - set(ALL_SUITES)
    if bad:
        p.error("unknown suite(s): %s" % ", ".join(sorted(bad)))
    if "vm" in only:  # the VM alone means all of its suites
        only |= set(GUEST_SUITES)
    args.suites = [s for s in ALL_SUITES if not only or s in only]
    if args.no_vm:
        args.suites = [s for s in args.suites if s in HOST_SUITES]
    if args.no_setup:
        args.suites = [s for s in args.suites if s != "setup"]
    return args


def run(args):
    want = set(args.suites)
    guest = [s for s in GUEST_SUITES if s in want]
    needs_modules = guest or any(s in want for s in VM_SUITES)
    if "setup" in want and not step_setup():
        return
    if "cargo" in want:
        step_cargo()
    built = True
    if "build" in want:
        built = step_build()
    elif needs_modules:
        progress("build: make modules (needed by the VMs)")
        built = run_logged(["make", "modules"], os.path.join(LOGDIR, "make-modules.log"),
                           T_BUILD)[0] == 0
        if not built:
            add(Check("build", "make modules", "fail", 0.0, "see the log",
                      os.path.join(LOGDIR, "make-modules.log")))
    vm_suites = [s for s in VM_SUITES if s in want]
    if not guest and not vm_suites:
        return
    if not built:
        progress("the modules do not build: no VM run")
        return
    kdir = kernel_dir()
    if not os.path.exists(os.path.join(kdir, ".complete")):
        add(Check("vm", "test kernel", "fail", 0.0, "no test kernel in %s (make setup)" % kdir))
        return
    if guest:
        out = step_vm(guest, kdir)
        collect_guest(out, guest)
        if "kunit" in guest:
            step_kunit(out, kdir)
    if "virtio" in vm_suites:
        step_virtio()
    if "packaging" in vm_suites:
        step_packaging()


def on_signal(signum, _frame):
    """SIGTERM (CI cancelling the job) stops the run like ^C: children killed, report written."""
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    args = parse_args()
    shutil.rmtree(LOGDIR, ignore_errors=True)
    os.makedirs(LOGDIR)
    xfail = read_xfail()
    progress("rvsock check: suites %s%s" % (" ".join(args.suites),
                                            "; expected to fail: " + " ".join(sorted(xfail))
                                            if xfail else ""))
    try:
        run(args)
    except KeyboardInterrupt:
        add(Check("check", "interrupted", "fail", 0.0, "interrupted"))
    write_junit(os.path.join(OUTDIR, "junit.xml"), xfail)
    progress("done")
    return 0 if summary(xfail) else 1


if __name__ == "__main__":
    sys.exit(main())
