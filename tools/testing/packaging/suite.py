#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The packaging suite of `make check`: rvsock installed the way users install out-of-tree modules.

Against the cached test kernel, in throwaway roots under OUT (tools/testing/packaging/in-root.sh
puts them in place of the host's /lib/modules, /var/lib/dkms, /usr/src and /etc/modprobe.d in a
mount namespace of its own, so the host is not touched):

- `make shipped` builds exactly the modules that dkms.conf lists (no test-only module), with
  the toolchain found from what the kernel records; a kernel without CONFIG_RUST and a rustc
  other than the kernel's each stop the build with one line saying so;
- `make install` into a temporary INSTALL_MOD_PATH that holds the kernel's own modules: the
  modules, the modprobe configuration, and depmod's modules.alias naming net-pf-40 and the virtio
  device for rvsock; `modprobe --dry-run` resolves net-pf-40 to rvsock only; `make uninstall`
  leaves the tree as it was, byte for byte;
- DKMS: `make dkms-src`, `dkms add`, `dkms build`, `dkms install`; the kernel-update hook
  (/etc/kernel/postinst.d/dkms) installs it again after a `dkms uninstall`; a kernel without Rust
  is skipped with one line saying why;
- in the test VM, with the DKMS root as the module tree and nothing loaded (guest.sh): modprobe
  by name, autoload by socket(AF_VSOCK), what an explicit modprobe of the C stack does, the
  kernel log;
- `make rust-analyzer`: valid JSON with the kernel's crates and every crate root of Kbuild;
- the kunit suite's KTAP: kunit.py's parse counts as many cases as the KTAP has results.

Results: RESULT lines (suite "packaging") in OUT/results.txt, logs beside them.  Every command has
a time limit.

Usage: tools/testing/packaging/suite.py [--out DIR] [--kunit-dmesg FILE --kunit-json FILE]
       [--vm-timeout S]
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tools", "testing"))
from procgroup import kill_group  # noqa: E402

S = "packaging"
T0 = time.monotonic()
DKMS_NAME = "rvsock"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def say(msg):
    print("[%7.1f] %s" % (time.monotonic() - T0, msg), flush=True)


class Suite:
    def __init__(self, out):
        self.out = out
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.results = open(os.path.join(out, "results.txt"), "w")
        self.failed = 0

    def report(self, name, status, secs, log, msg=""):
        rel = os.path.relpath(log, self.out) if log else "-"
        msg = re.sub(r"[\t\r\n]+", " ", msg)[:300] or "-"
        self.results.write("RESULT\t%s\t%s\t%s\t%.2f\t%s\t%s\n" % (S, name, status, secs, rel, msg))
        self.results.flush()
        self.failed += status == "fail"
        mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[status]
        say("  %s %s (%.1f s)%s" % (mark, name, secs, "" if status == "pass" else ": " + msg))

    def log_path(self, name):
        return os.path.join(self.logs, re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] + ".log")

    def check(self, name, fn):
        """One check: fn(log) runs commands into the open log file and returns None (pass),
        a message (fail) or ("skip", message)."""
        path = self.log_path(name)
        t = time.monotonic()
        with open(path, "w") as log:
            try:
                why = fn(log)
            except CheckError as e:
                why = str(e)
            except Exception as e:  # a bug of this script is a failed check, not a crash
                why = "%s: %s" % (type(e).__name__, e)
                log.write("\n*** %s\n" % why)
        secs = time.monotonic() - t
        if why is None:
            self.report(name, "pass", secs, path)
            return True
        if isinstance(why, tuple):
            self.report(name, "skip", secs, path, why[1])
            return None
        self.report(name, "fail", secs, path, why)
        return False


class CheckError(Exception):
    pass


def run(log, argv, timeout, env=None, cwd=TOP, ok=(0,)):
    """Runs argv with its output in log and returned; raises CheckError unless its exit status
    is in ok (None: any)."""
    log.write("$ %s\n" % " ".join(argv))
    log.flush()
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.Popen(argv, cwd=cwd, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=10)
        out, _ = proc.communicate()
        text = out.decode(errors="replace")
        log.write(text + "\n*** killed after %d s ***\n" % timeout)
        raise CheckError("%s: timed out after %d s" % (os.path.basename(argv[0]), timeout))
    text = out.decode(errors="replace")
    log.write(text)
    log.write("[exit %d]\n\n" % proc.returncode)
    log.flush()
    if ok is not None and proc.returncode not in ok:
        last = [ln for ln in text.splitlines() if ln.strip()]
        raise CheckError("%s exit %d: %s" % (" ".join(argv[:3]), proc.returncode,
                                             last[-1] if last else ""))
    return proc.returncode, text


def need(cond, msg):
    if not cond:
        raise CheckError(msg)


def lib_sh(expr):
    out = subprocess.run(["bash", "-c", ". tools/testing/lib.sh && " + expr], cwd=TOP,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def dkms_conf_modules():
    with open(os.path.join(TOP, "dkms.conf")) as f:
        text = f.read()
    version = re.search(r'^PACKAGE_VERSION="(.*)"', text, re.M).group(1)
    return re.findall(r'BUILT_MODULE_NAME\[\d+\]="(\w+)"', text), version


def snapshot(root):
    """{path relative to root: sha256 or 'dir' or 'link:target'} of everything below root."""
    snap = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                snap[rel] = "link:" + os.readlink(p)
            elif os.path.isdir(p):
                snap[rel] = "dir"
            else:
                with open(p, "rb") as f:
                    snap[rel] = hashlib.sha256(f.read()).hexdigest()
    return snap


def diff_snapshots(a, b):
    added = sorted(set(b) - set(a))
    removed = sorted(set(a) - set(b))
    changed = sorted(p for p in set(a) & set(b) if a[p] != b[p])
    return added, removed, changed


def make_fake_kernel(path, release, config):
    """A kernel "build directory" with only a .config, auto.conf and the release."""
    os.makedirs(os.path.join(path, "include", "config"), exist_ok=True)
    with open(os.path.join(path, ".config"), "w") as f:
        f.write(config)
    with open(os.path.join(path, "include", "config", "auto.conf"), "w") as f:
        f.write("\n".join(ln for ln in config.splitlines() if not ln.startswith("#")) + "\n")
    with open(os.path.join(path, "include", "config", "kernel.release"), "w") as f:
        f.write(release + "\n")
    with open(os.path.join(path, "Makefile"), "w") as f:
        f.write("all:\n\t@echo not a real kernel >&2; false\n")


# ---- the checks -----------------------------------------------------------------------------

class Packaging:
    def __init__(self, suite, args):
        self.s = suite
        self.args = args
        self.out = suite.out
        self.kdir = os.path.join(lib_sh("kernel_dir"), "build")
        with open(os.path.join(self.kdir, "include", "config", "kernel.release")) as f:
            self.krel = f.read().strip()
        self.modules, self.version = dkms_conf_modules()
        self.kroot = os.path.join(self.out, "kernel-root")
        self.iroot = os.path.join(self.out, "install-root")
        self.droot = os.path.join(self.out, "dkms-root")
        self.fake = os.path.join(self.out, "fake")
        # The user's view: no toolchain settings; root's usual PATH plus what make check has.
        self.env = {"PATH": os.environ.get("PATH", PATH)}
        for v in ("LLVM", "KRUSTC", "KBINDGEN", "LIBCLANG_PATH", "KDIR", "INSTALL_MOD_PATH",
                  "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
            os.environ.pop(v, None)
        self.in_root = os.path.join(HERE, "in-root.sh")

    def make(self, log, *args, timeout=900, ok=(0,)):
        return run(log, ["nice", "-n", "10", "make", "--no-print-directory", "-C", TOP] +
                   list(args), timeout, env=self.env, ok=ok)

    # -- make shipped and the toolchain -------------------------------------------------------

    def shipped(self, log):
        self.make(log, "shipped", "KDIR=" + self.kdir)
        with open(os.path.join(TOP, "modules.order")) as f:
            built = [os.path.splitext(os.path.basename(ln.strip()))[0]
                     for ln in f if ln.strip()]
        log.write("modules.order: %s\ndkms.conf: %s\n" % (built, self.modules))
        need(built == self.modules, "built %s, dkms.conf lists %s" % (built, self.modules))

    def one_line_error(self, log, args, want):
        rc, text = self.make(log, "shipped", *args, timeout=120, ok=None)
        need(rc != 0, "the build did not stop")
        ours = [ln for ln in text.splitlines() if ln.startswith("rvsock:")]
        others = [ln for ln in text.splitlines()
                  if ln.strip() and not ln.startswith("rvsock:") and "***" not in ln]
        need(len(ours) == 1, "%d lines 'rvsock: ...', wanted 1" % len(ours))
        need(not others, "more output than the one line: %s" % others[:1])
        need(all(w in ours[0] for w in want), "the line lacks %s: %s" % (want, ours[0]))

    def no_rust(self, log):
        kd = os.path.join(self.fake, "norust")
        make_fake_kernel(kd, "6.12.0-norust",
                         "CONFIG_MODULES=y\nCONFIG_NET=y\n# CONFIG_RUST is not set\n")
        self.one_line_error(log, ["KDIR=" + kd], ["without Rust", "CONFIG_RUST"])

    def rustc_mismatch(self, log):
        fake = os.path.join(self.fake, "bin", "rustc")
        os.makedirs(os.path.dirname(fake), exist_ok=True)
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'rustc 1.80.0 (051478957 2024-07-21)'\n")
        os.chmod(fake, 0o755)
        self.one_line_error(log, ["KDIR=" + self.kdir, "KRUSTC=" + fake],
                            ["rustc mismatch", "rustc 1.80.0", "KRUSTC="])

    # -- make install / uninstall ---------------------------------------------------------------

    def kernel_modules(self, log):
        shutil.rmtree(self.kroot, ignore_errors=True)
        run(log, ["bash", "-c", ". tools/testing/lib.sh && make -C %s $(kernel_make_args) "
                  "INSTALL_MOD_PATH=%s modules_install" % (self.kdir, self.kroot)], 300)
        c = os.path.join(self.kroot, "lib", "modules", self.krel, "kernel", "net", "vmw_vsock")
        need(os.path.exists(os.path.join(c, "vsock.ko")), "no vsock.ko in %s" % c)
        log.write("C modules: %s\n" % sorted(os.listdir(c)))
        for root in (self.iroot, self.droot):
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(self.kroot, root, symlinks=True)
            os.makedirs(os.path.join(root, "etc", "modprobe.d"))

    def install(self, log):
        self.before = snapshot(self.iroot)
        self.make(log, "install", "KDIR=" + self.kdir, "INSTALL_MOD_PATH=" + self.iroot)
        added, removed, changed = diff_snapshots(self.before, snapshot(self.iroot))
        log.write("added: %s\nremoved: %s\nchanged: %s\n" % (added, removed, changed))
        mdir = os.path.join("lib", "modules", self.krel)
        want = {os.path.join(mdir, "updates", m + ".ko") for m in self.modules} | {
            os.path.join(mdir, "updates"), "etc/modprobe.d/rvsock.conf"}
        need(set(added) == want, "installed %s, wanted %s" % (added, sorted(want)))
        need(not removed, "removed %s" % removed)
        need(all(os.path.basename(p).startswith("modules.") for p in changed),
             "changed more than depmod's files: %s" % changed)

    def aliases(self, log):
        mdir = os.path.join(self.iroot, "lib", "modules", self.krel)
        with open(os.path.join(mdir, "modules.alias")) as f:
            alias = f.read()
        with open(os.path.join(mdir, "modules.dep")) as f:
            dep = f.read()
        log.write("modules.alias (rvsock):\n%s\nmodules.dep (rvsock):\n%s\n" % (
            "".join(ln + "\n" for ln in alias.splitlines() if "rvsock" in ln),
            "".join(ln + "\n" for ln in dep.splitlines() if "rvsock" in ln)))
        for want in ("alias net-pf-40 rvsock_loopback", "alias virtio:d00000013v* rvsock_virtio"):
            need(want in alias.splitlines(), "modules.alias lacks '%s'" % want)
        need("updates/rvsock_loopback.ko: updates/rvsock.ko" in dep.splitlines(),
             "modules.dep: rvsock_loopback does not depend on rvsock")
        base = ["modprobe", "--dry-run", "--verbose", "--dirname", self.iroot,
                "--set-version", self.krel]
        _, text = run(log, base + ["--config", os.path.join(self.iroot, "etc", "modprobe.d"),
                                   "net-pf-40"], 30)
        need("/rvsock.ko" in text and "/rvsock_loopback.ko" in text,
             "modprobe net-pf-40 does not load rvsock and rvsock_loopback")
        need(not re.search(r"/(vsock|vsock_loopback)\.ko", text),
             "modprobe net-pf-40 loads the C stack despite rvsock.conf")
        # Without the configuration the C stack answers too (for the log: why it is shipped).
        run(log, base + ["--config", "/dev/null", "net-pf-40"], 30, ok=None)

    def uninstall(self, log):
        self.make(log, "uninstall", "KDIR=" + self.kdir, "INSTALL_MOD_PATH=" + self.iroot,
                  timeout=120)
        added, removed, changed = diff_snapshots(self.before, snapshot(self.iroot))
        log.write("left behind: %s\nmissing: %s\nchanged: %s\n" % (added, removed, changed))
        need(not (added or removed or changed),
             "not as before: left %s, missing %s, changed %s" % (added, removed, changed))

    # -- DKMS -----------------------------------------------------------------------------------

    def dkms(self, log, *args, timeout=120, ok=(0,)):
        return run(log, [self.in_root, self.droot, "dkms"] + list(args), timeout, env=self.env,
                   ok=ok)

    def dkms_add(self, log):
        build = os.path.join(self.droot, "lib", "modules", self.krel, "build")
        if not os.path.exists(build):
            os.symlink(self.kdir, build)
        run(log, [self.in_root, self.droot, "make", "--no-print-directory", "-C", TOP,
                  "dkms-src"], 60, env=self.env)
        src = os.path.join(self.droot, "usr", "src", "%s-%s" % (DKMS_NAME, self.version))
        need(os.path.exists(os.path.join(src, "dkms.conf")), "no dkms.conf in %s" % src)
        need(not os.path.exists(os.path.join(src, "tools")), "test sources in %s" % src)
        self.dkms(log, "add", "%s/%s" % (DKMS_NAME, self.version))

    def dkms_build(self, log):
        _, text = self.dkms(log, "build", "%s/%s" % (DKMS_NAME, self.version), "-k", self.krel,
                            timeout=1500)
        need("rvsock: kernel %s, rustc" % self.krel in text,
             "the pre-build toolchain line is missing")

    def dkms_installed(self, log):
        mdir = os.path.join(self.droot, "lib", "modules", self.krel)
        got = sorted(os.listdir(os.path.join(mdir, "updates", "dkms")))
        log.write("updates/dkms: %s\n" % got)
        need(got == sorted(m + ".ko" for m in self.modules), "installed %s" % got)
        with open(os.path.join(mdir, "modules.alias")) as f:
            need("alias net-pf-40 rvsock_loopback" in f.read().splitlines(),
                 "depmod did not run: no net-pf-40 alias for rvsock_loopback")
        conf = os.path.join(self.droot, "etc", "modprobe.d", "rvsock.conf")
        need(os.path.exists(conf), "no /etc/modprobe.d/rvsock.conf")
        _, text = self.dkms(log, "status", DKMS_NAME)
        need("%s/%s, %s, x86_64: installed" % (DKMS_NAME, self.version, self.krel) in text,
             "dkms status does not say installed")

    def dkms_install(self, log):
        self.dkms(log, "install", "%s/%s" % (DKMS_NAME, self.version), "-k", self.krel,
                  timeout=300)
        self.dkms_installed(log)

    def dkms_hook(self, log):
        self.dkms(log, "uninstall", "%s/%s" % (DKMS_NAME, self.version), "-k", self.krel,
                  timeout=300)
        mdir = os.path.join(self.droot, "lib", "modules", self.krel, "updates", "dkms")
        left = os.listdir(mdir) if os.path.isdir(mdir) else []
        need(not left, "dkms uninstall left %s" % left)
        need(not os.path.exists(os.path.join(self.droot, "etc", "modprobe.d", "rvsock.conf")),
             "dkms uninstall left /etc/modprobe.d/rvsock.conf")
        run(log, [self.in_root, self.droot, "/etc/kernel/postinst.d/dkms", self.krel], 1500,
            env=self.env)
        self.dkms_installed(log)

    def dkms_no_rust(self, log):
        kd = os.path.join(self.fake, "norust")
        rc, text = self.dkms(log, "build", "%s/%s" % (DKMS_NAME, self.version), "-k",
                             "6.12.0-norust", "--kernelsourcedir", kd, ok=None)
        need(rc == 77, "dkms build exit %d, wanted 77 (skipped: BUILD_EXCLUSIVE)" % rc)
        ours = [ln for ln in text.splitlines() if ln.startswith("rvsock:")]
        need(len(ours) == 1 and "without Rust" in ours[0],
             "no one line 'rvsock: ... without Rust': %s" % ours)

    # -- the VM ---------------------------------------------------------------------------------

    def vm(self):
        gout = os.path.join(self.out, "guest")
        shutil.rmtree(gout, ignore_errors=True)
        os.makedirs(gout)
        console = os.path.join(self.out, "console.log")
        cmd = "PATH=%s tools/testing/packaging/guest.sh %s %s" % (PATH, gout, self.droot)
        argv = [os.path.join(TOP, "tools", "testing", "vm", "run.sh"), "--timeout",
                str(self.args.vm_timeout), "--log", console, "--rwdir", gout, "--", cmd]
        say("vm: booting the test kernel (timeout %d s)" % self.args.vm_timeout)

        def boot(log):
            rc, _ = run(log, argv, self.args.vm_timeout + 60, ok=None)
            if rc != 0:
                return "VM exit %d; console log: %s" % (rc, console)
            return None

        self.s.check("vm: boot and run guest.sh", boot)
        # The guest's RESULT lines, with their logs relative to our OUT.
        try:
            with open(os.path.join(gout, "results.txt")) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        n = 0
        for line in lines:
            f = line.split("\t")
            if len(f) != 7 or f[0] != "RESULT":
                continue
            if f[5] != "-":
                f[5] = os.path.join("guest", f[5])
            self.s.results.write("\t".join(f) + "\n")
            self.s.failed += f[3] == "fail"
            n += 1
            mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}.get(f[3], f[3])
            say("  %s %s (%s s)%s" % (mark, f[2], f[4], "" if f[3] == "pass" else ": " + f[6]))
        self.s.results.flush()
        if n == 0:
            self.s.report("guest: results", "fail", 0.0, console,
                          "the guest reported nothing (see the vm check)")

    # -- rust-analyzer --------------------------------------------------------------------------

    def rust_analyzer(self, log):
        path = os.path.join(TOP, "rust-project.json")
        if os.path.exists(path):
            os.unlink(path)
        self.make(log, "rust-analyzer", timeout=300)
        with open(path) as f:
            project = json.load(f)
        crates = project["crates"]
        names = [c["display_name"] for c in crates]
        for k in ("core", "alloc", "macros", "bindings", "kernel"):
            need(k in names, "no crate %s" % k)
        roots = {os.path.realpath(c["root_module"]): c for c in crates}
        for c in crates:
            need(os.path.exists(c["root_module"]), "%s: no %s" % (c["display_name"],
                                                                    c["root_module"]))
        with open(os.path.join(TOP, "Kbuild")) as f:
            kbuild = f.read()
        # The Rust crate roots: objects named *_main.o with a .rs (rvsock_pm_cycle's is C).
        want = sorted({o for o in re.findall(r"[ \t=](\w[\w/]*_main)\.o", kbuild)
                       if os.path.exists(os.path.join(TOP, o + ".rs"))})
        need(len(want) >= 5, "only %s of the crate roots (*_main.o) in Kbuild" % want)
        kernel = names.index("kernel")
        for o in want:
            c = roots.get(os.path.realpath(os.path.join(TOP, o + ".rs")))
            need(c is not None, "crate root %s.rs missing" % o)
            need(any(d["crate"] == kernel for d in c["deps"]),
                 "%s.rs does not depend on kernel" % o)
        virtio = roots[os.path.realpath(os.path.join(TOP, "transports/rvsock_virtio_main.rs"))]
        need("rvsock_virtio" in virtio["cfg"], "rvsock_virtio_main.rs lacks --cfg rvsock_virtio")
        need(os.path.isdir(project["sysroot"]), "sysroot %s missing" % project["sysroot"])
        log.write("crates: %s\nrvsock's roots: %s\n" % (names, want))

    # -- kunit.py -------------------------------------------------------------------------------

    def kunit_count(self, log):
        if not (self.args.kunit_dmesg and os.path.exists(self.args.kunit_dmesg) and
                self.args.kunit_json and os.path.exists(self.args.kunit_json)):
            return ("skip", "no KTAP and kunit.py JSON of the kunit suite in this run")
        with open(self.args.kunit_dmesg, errors="replace") as f:
            lines = [re.sub(r"^\[\s*\d+\.\d+\]\s?", "", ln) for ln in f.read().splitlines()]
        # Leaf results of the KTAP: a result line with no result line nested below it since the
        # previous result at its level.
        nested, leaves, totals = {}, 0, 0
        for ln in lines:
            m = re.match(r"^(\s*)(?:not ok|ok) \d+", ln)
            if m:
                d = len(m.group(1))
                leaves += not nested.get(d + 4, False)
                nested[d + 4] = False
                nested[d] = True
            m = re.match(r"^\s*# Totals: pass:\d+ fail:\d+ skip:\d+ total:(\d+)", ln)
            if m:
                totals += int(m.group(1))
        with open(self.args.kunit_json) as f:
            tree = json.load(f)

        def cases(g):
            n = len(g.get("test_cases", []))
            return n + sum(cases(s) for s in g.get("sub_groups", []))

        parsed = cases(tree)
        log.write("KTAP leaf results: %d\nKUnit's '# Totals' (suites of more than one case): "
                  "%d\nkunit.py JSON cases: %d\n" % (leaves, totals, parsed))
        need(leaves > 0, "no results in the KTAP")
        need(parsed == leaves, "kunit.py counted %d cases, the KTAP has %d" % (parsed, leaves))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(TOP, "target", "check", "packaging"))
    p.add_argument("--kunit-dmesg")
    p.add_argument("--kunit-json")
    p.add_argument("--vm-timeout", type=int, default=600)
    p.add_argument("--no-vm", action="store_true", help="host checks only")
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    s = Suite(args.out)
    pk = Packaging(s, args)
    say("packaging: kernel %s (%s), modules %s, version %s"
        % (pk.krel, pk.kdir, " ".join(pk.modules), pk.version))
    s.check("make shipped builds the modules dkms.conf lists", pk.shipped)
    s.check("make shipped on a kernel without Rust: one line", pk.no_rust)
    s.check("make shipped with another rustc: one line", pk.rustc_mismatch)
    if s.check("kernel modules_install (the C vsock modules) into the test roots",
               pk.kernel_modules):
        if s.check("make install INSTALL_MOD_PATH=<tmp>", pk.install):
            s.check("depmod -b: aliases, dependencies, modprobe --dry-run net-pf-40",
                    pk.aliases)
            s.check("make uninstall leaves the tree as before", pk.uninstall)
        dkms_ok = (s.check("dkms add (make dkms-src)", pk.dkms_add) and
                   s.check("dkms build", pk.dkms_build) and
                   s.check("dkms install", pk.dkms_install))
        if dkms_ok:
            s.check("kernel-update hook reinstalls after dkms uninstall", pk.dkms_hook)
        s.check("dkms build on a kernel without Rust: skipped, one line", pk.dkms_no_rust)
        if dkms_ok and not args.no_vm:
            pk.vm()
    s.check("make rust-analyzer", pk.rust_analyzer)
    s.check("kunit.py parse counts every KTAP case", pk.kunit_count)
    say("packaging: done, %d failed" % s.failed)
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
