// SPDX-License-Identifier: GPL-2.0

//! `vhost-guest`: a userspace virtio-vsock guest driver for `/dev/vhost-vsock`, to test the
//! host side (H2G) of AF_VSOCK without a VM: C `vhost_vsock` (the oracle) and `rvsock_vhost`.
//!
//! It opens the device node, gives it its own anonymous memory, sets up the rx and tx rings
//! (and an event ring, which the VMM keeps, as QEMU does) with call/kick eventfds, sets the
//! guest CID and starts the device, then speaks virtio-vsock as a guest to the host kernel's
//! AF_VSOCK sockets, which it opens itself (threads in the same process).
//!
//! ```text
//! vhost-guest [--dev PATH] [--cid N] [--bytes N] [--port P] [--only NAME,...] [--list]
//!             [--hostile [--packets N] [--seed S]]
//! ```
//!
//! Output: one line per check, `RESULT\tvhost\t<name>\t<pass|fail|skip>\t<secs>\t-\t<message>`
//! (the harness's format), then `N passed, N failed`.  Exit status 0 when nothing failed.
//! Needs root (or access to the node) and the device's module loaded; run it in the test VM
//! (tools/testing/vhost-guest/run.sh).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod checks;
mod dev;
mod guest;
mod host;
mod hostile;
mod ring;

use checks::{Ctx, CHECKS};

fn usage() -> ExitCode {
    eprintln!(
        "usage: vhost-guest [--dev PATH] [--cid N] [--bytes N] [--port P] [--only NAME,...] [--list]\n\
         \x20                  [--hostile [--packets N] [--seed S]]"
    );
    ExitCode::from(2)
}

fn clean(s: &str) -> String {
    s.replace(['\t', '\n'], " ")
}

/// Prints a RESULT line.
pub fn result(name: &str, status: &str, secs: f64, msg: &str) {
    println!(
        "RESULT\tvhost\t{name}\t{status}\t{secs:.2}\t-\t{}",
        clean(msg)
    );
}

fn main() -> ExitCode {
    let mut ctx = Ctx {
        dev: PathBuf::from("/dev/vhost-vsock"),
        cid: 3,
        bytes: 4 << 20,
        port: 20000,
    };
    let mut only: Option<Vec<String>> = None;
    let mut hostile = false;
    let mut packets = 10_000u64;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "--dev" => ctx.dev = PathBuf::from(val()),
            "--cid" => match val().parse() {
                Ok(v) => ctx.cid = v,
                Err(_) => return usage(),
            },
            "--bytes" => match val().parse() {
                Ok(v) => ctx.bytes = v,
                Err(_) => return usage(),
            },
            "--port" => match val().parse() {
                Ok(v) => ctx.port = v,
                Err(_) => return usage(),
            },
            "--only" => only = Some(val().split(',').map(str::to_string).collect()),
            "--hostile" => hostile = true,
            "--packets" => match val().parse() {
                Ok(v) => packets = v,
                Err(_) => return usage(),
            },
            "--seed" => match val().parse() {
                Ok(v) => seed = v,
                Err(_) => return usage(),
            },
            "--list" => {
                for (n, _) in CHECKS {
                    println!("{n}");
                }
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let (mut pass, mut fail) = (0, 0);
    if hostile {
        let t0 = Instant::now();
        let (status, msg) = match hostile::run(&ctx, packets, seed) {
            Ok(m) => ("pass", m),
            Err(m) => ("fail", m),
        };
        result("hostile", status, t0.elapsed().as_secs_f64(), &msg);
        if status == "pass" {
            pass += 1;
        } else {
            fail += 1;
        }
    } else {
        for (name, f) in CHECKS {
            if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
                continue;
            }
            let t0 = Instant::now();
            let r = f(&ctx);
            let secs = t0.elapsed().as_secs_f64();
            match r {
                Ok(m) if m.starts_with("skipped") => result(name, "skip", secs, &m),
                Ok(m) => {
                    pass += 1;
                    result(name, "pass", secs, &m);
                }
                Err(m) => {
                    fail += 1;
                    result(name, "fail", secs, &m);
                }
            }
        }
    }
    println!("{pass} passed, {fail} failed");
    if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
