#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Adds rvsock's crate roots to the rust-project.json that the kernel's `make M=... rust-analyzer`
wrote (`make rust-analyzer` runs both).

6.12's scripts/generate_rust_analyzer.py takes a .rs file of an external module for a crate root
only when the Kbuild or Makefile of the file's own directory names its object; ours are named
by the top-level Kbuild (vsock_core/rvsock_main.o, transports/..., tools/testing/...), so it
finds none.  This reads the crate roots from Kbuild (every object of a module whose .rs exists,
with the `--cfg` of its RUSTFLAGS_<object>) and adds them as the kernel's script adds a driver:
depending on `core` and `kernel`, with the kernel's cfgs, and with the whole tree as their source
(rust-analyzer then follows a root's `mod` and `#[path]` to rust/, vsock_core/proto/src/, ...,
which lie outside the root's own directory).

Usage: packaging/rust_analyzer.py TOP KDIR
"""

import json
import os
import re
import sys


def kbuild_crate_roots(top):
    """[(crate root path, [cfg])] from TOP/Kbuild."""
    with open(os.path.join(top, "Kbuild")) as f:
        text = f.read().replace("\\\n", " ")
    cfgs = {}
    for m in re.finditer(r"^RUSTFLAGS_(\S+)\.o\s*:?=(.*)$", text, re.M):
        cfgs[m.group(1)] = re.findall(r"--cfg[= ]\s*(\S+)", m.group(2))
    roots = []
    for m in re.finditer(r"^\s*[\w-]+-(?:y|objs)\s*[:+]?=(.*)$", text, re.M):
        for obj in re.findall(r"(\S+)\.o\b", m.group(1)):
            rs = os.path.join(top, obj + ".rs")
            if os.path.isfile(rs) and rs not in [r for r, _ in roots]:
                roots.append((rs, cfgs.get(obj, [])))
    return roots


def kernel_cfgs(kdir):
    with open(os.path.join(kdir, "include", "generated", "rustc_cfg")) as f:
        return [ln.strip().replace("--cfg=", "") for ln in f if ln.strip()]


def main():
    top, kdir = (os.path.realpath(a) for a in sys.argv[1:3])
    path = os.path.join(top, "rust-project.json")
    with open(path) as f:
        project = json.load(f)
    crates = project["crates"]
    index = {c["display_name"]: i for i, c in enumerate(crates)}
    for dep in ("core", "kernel"):
        if dep not in index:
            sys.exit("%s: no crate %r from the kernel's rust-analyzer target" % (path, dep))
    known = {os.path.realpath(c["root_module"]) for c in crates}
    cfg = kernel_cfgs(kdir)
    added = []
    for root, extra in kbuild_crate_roots(top):
        if root in known:
            continue
        crates.append({
            "display_name": os.path.splitext(os.path.basename(root))[0],
            "root_module": root,
            "is_workspace_member": True,
            "is_proc_macro": False,
            "deps": [{"crate": index[d], "name": d} for d in ("core", "kernel")],
            "cfg": cfg + extra,
            "edition": "2021",
            "env": {"RUST_MODFILE": "This is only for rust-analyzer"},
            # The crate's files are not all below its root's directory (#[path] to rust/ and
            # vsock_core/proto/src/): the whole tree is its source.
            "source": {"include_dirs": [top],
                       "exclude_dirs": [os.path.join(top, "target")]},
        })
        added.append(os.path.relpath(root, top))
    with open(path + ".tmp", "w") as f:
        json.dump(project, f, sort_keys=True, indent=4)
    os.replace(path + ".tmp", path)
    if not os.path.exists(os.path.join(top, "rust", "bindings_generated.rs")):
        print("note: rust/bindings_generated.rs is made by the module build: run make first",
              file=sys.stderr)
    print("%s: %d crates, rvsock's: %s" % (path, len(crates), " ".join(added)))


if __name__ == "__main__":
    main()
