// SPDX-License-Identifier: GPL-2.0

//! `vsock-stress`: stress scenarios for an AF_VSOCK stack over loopback (see `HELP`).
//!
//! Each scenario prints one summary line (`key=value`, or JSON with `--json`) on stdout, each
//! violated check on stderr, and exits 1 if a check was violated (2 on a bad command line,
//! 124 when `--deadline` ends it).  Every wait is bounded.

#![warn(missing_docs)]

mod cycles;
mod hold;
mod kill;
mod mesh;
mod pattern;
mod rng;
mod sock;
mod summary;
mod timers;
mod uffd;

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rvsock_samples::cli::{Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::{run_main, start_watchdog};
use rvsock_samples::net::Target;
use rvsock_samples::vsock::{VMADDR_CID_LOCAL, VMADDR_PORT_ANY};
use rvsock_samples::{Error, Result};

use crate::summary::Summary;

const PROG: &str = "vsock-stress";

const HELP: &str = concat!(
    "vsock-stress: stress an AF_VSOCK stack over loopback (CID 1).

Usage: vsock-stress SCENARIO [OPTIONS]

Scenarios (default port in brackets; a scenario with several listeners uses
consecutive ports from there):
  hold      N connections open at once, 8 bytes each way checked, then closed
            [5000]  --count N (1000)
  cycles    N times connect, send 4 bytes, close; a server accepts and reads
            [5001]  --count N (10000)  --clients N (2)  --max-failures N (0)
  mesh      S senders x R receivers, every byte checked (no loss, duplication or
            reordering; on --seqpacket also message boundaries and sizes), while
            receivers stall their sockets' owners in the kernel (userfaultfd) and
            change SO_VM_SOCKETS_BUFFER_SIZE  [5100]
            --senders N (4)  --receivers N (4)  --seconds S (15)  --seqpacket
            --max-size BYTES (256K)  --no-stall  --stall-min D (10ms)
            --stall-max D (2s)  --stall-gap D (1s: longest pause between stalls)
            --no-resize  --buf-min BYTES (64K; seqpacket: --max-size)
            --buf-max BYTES (1M)  --unsafe-shrink (shrink without draining
            the connection first)  --tolerate-reset  --finish-timeout D (60s)
  kill      sender processes blocked in send get SIGKILL and must be reaped
            within --reap-limit; then a send with no credit and SO_SNDTIMEO
            must return EAGAIN or a partial count after about SO_SNDTIMEO
            [5200]  --mode stall|noread (stall)  --children N (4)
            --min-size BYTES (64K)  --max-size BYTES (1M)  --reap-limit D (1s)
            --sndtimeo D (500ms)
  timers    leave sockets with pending connect and close timers, exit at once
            (for rmmod right after)  [5300]  --count N (16 of each kind)
            --kinds LIST (pending,refused,closewait,linger,exit: all)
            --connect-timeout-max D (300ms)

Options of every scenario:
  --seed N             random seed (default: from the clock); printed in the summary
  --json               the summary as one JSON object
",
    rvsock_samples::transport_help!(),
    rvsock_samples::common_help!(),
    "
The stalls use userfaultfd for faults in kernel mode: run as root (or with
vm.unprivileged_userfaultfd=1), on a kernel with CONFIG_USERFAULTFD.

Examples (in the test VM, rvsock.ko and rvsock_loopback.ko loaded):
  vsock-stress hold --count 1000
  vsock-stress cycles --count 10000
  vsock-stress mesh --seconds 120
  vsock-stress mesh --seqpacket --seconds 60
  vsock-stress kill --mode stall
  vsock-stress timers --count 16; rmmod rvsock_loopback; rmmod rvsock
"
);

/// What every scenario needs: where to listen and connect, bounds, seed, output form.
#[derive(Debug)]
pub struct Env {
    /// The first listener's address (AF_VSOCK: `VMADDR_CID_ANY` and the port).
    server: Target,
    /// The CID clients connect to (AF_VSOCK).
    pub cid: u32,
    /// Bound on each connect, send and receive.
    pub timeout: Duration,
    /// Say more on stderr.
    pub verbose: bool,
    /// The random seed.
    pub seed: u64,
}

impl Env {
    /// The address of listener number `offset` (the port `offset` above the first).
    pub fn server_at(&self, offset: u32) -> Target {
        match &self.server {
            Target::Vsock(a, ty) if a.port != VMADDR_PORT_ANY => {
                let mut a = *a;
                a.port = a.port.wrapping_add(offset);
                Target::Vsock(a, *ty)
            }
            Target::Tcp(a) if a.port() != 0 => {
                let mut a = *a;
                a.set_port(a.port().wrapping_add(offset as u16));
                Target::Tcp(a)
            }
            t => t.clone(),
        }
    }
}

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Hold,
    Cycles,
    Mesh,
    Kill,
    KillChild,
    Timers,
}

impl Scenario {
    fn parse(s: &str) -> Option<Scenario> {
        Some(match s {
            "hold" => Scenario::Hold,
            "cycles" => Scenario::Cycles,
            "mesh" => Scenario::Mesh,
            "kill" => Scenario::Kill,
            "kill-child" => Scenario::KillChild,
            "timers" => Scenario::Timers,
            _ => return None,
        })
    }

    fn default_port(self) -> u32 {
        match self {
            Scenario::Hold => 5000,
            Scenario::Cycles => 5001,
            Scenario::Mesh => 5100,
            Scenario::Kill | Scenario::KillChild => 5200,
            Scenario::Timers => 5300,
        }
    }
}

/// Every option of every scenario; each scenario uses its own.
#[derive(Debug)]
struct Opts {
    count: Option<u64>,
    clients: usize,
    max_failures: u64,
    mesh: mesh::MeshOpts,
    buf_min: Option<u64>,
    kill: kill::KillOpts,
    kill_min: Option<usize>,
    kill_max: Option<usize>,
    timeout_max: Duration,
    kinds: Vec<String>,
    id: u32,
    seed: Option<u64>,
    json: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            count: None,
            clients: 2,
            max_failures: 0,
            mesh: mesh::MeshOpts {
                senders: 4,
                receivers: 4,
                duration: Duration::from_secs(15),
                max_size: 256 * 1024,
                stall: true,
                stall_min: Duration::from_millis(10),
                stall_max: Duration::from_secs(2),
                stall_gap: Duration::from_secs(1),
                resize: true,
                buf_min: 64 * 1024,
                buf_max: 1024 * 1024,
                tolerate_reset: false,
                unsafe_shrink: false,
                finish_timeout: Duration::from_secs(60),
            },
            buf_min: None,
            kill: kill::KillOpts {
                mode: kill::Mode::Stall,
                children: 4,
                min_size: 64 * 1024,
                max_size: 1024 * 1024,
                reap_limit: Duration::from_secs(1),
                sndtimeo: Duration::from_millis(500),
            },
            kill_min: None,
            kill_max: None,
            timeout_max: Duration::from_millis(300),
            kinds: Vec::new(),
            id: 0,
            seed: None,
            json: false,
        }
    }
}

fn main() -> ExitCode {
    run_main(PROG, run)
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let scenario = match p.next_arg()? {
        Some(Arg::Value(s)) => {
            Scenario::parse(&s).ok_or_else(|| Error::usage(format!("unknown scenario '{s}'")))?
        }
        Some(Arg::Opt(o)) if o == "-h" || o == "--help" => {
            print!("{HELP}");
            return Ok(());
        }
        _ => return Err(Error::usage("the first argument must be a scenario")),
    };
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut o = Opts::default();
    while let Some(arg) = p.next_arg()? {
        let Arg::Opt(opt) = arg else {
            return Err(p.unexpected(arg));
        };
        match opt.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            "--count" => o.count = Some(p.parse()?),
            "--clients" => o.clients = p.parse()?,
            "--max-failures" => o.max_failures = p.parse()?,
            "--senders" => o.mesh.senders = p.parse()?,
            "--receivers" => o.mesh.receivers = p.parse()?,
            "--seconds" => o.mesh.duration = p.duration()?,
            "--no-stall" => o.mesh.stall = false,
            "--stall-min" => o.mesh.stall_min = p.duration()?,
            "--stall-max" => o.mesh.stall_max = p.duration()?,
            "--stall-gap" => o.mesh.stall_gap = p.duration()?,
            "--no-resize" => o.mesh.resize = false,
            "--buf-min" => o.buf_min = Some(p.size()?),
            "--buf-max" => o.mesh.buf_max = p.size()?,
            "--tolerate-reset" => o.mesh.tolerate_reset = true,
            "--unsafe-shrink" => o.mesh.unsafe_shrink = true,
            "--finish-timeout" => o.mesh.finish_timeout = p.duration()?,
            "--mode" => {
                o.kill.mode = match p.value()?.as_str() {
                    "stall" => kill::Mode::Stall,
                    "noread" => kill::Mode::NoRead,
                    m => {
                        return Err(Error::usage(format!(
                            "--mode is stall or noread, not '{m}'"
                        )))
                    }
                }
            }
            "--children" => o.kill.children = p.parse()?,
            "--min-size" => o.kill_min = Some(size(&mut p)?),
            "--max-size" => o.kill_max = Some(size(&mut p)?),
            "--reap-limit" => o.kill.reap_limit = p.duration()?,
            "--sndtimeo" => o.kill.sndtimeo = p.duration()?,
            "--connect-timeout-max" => o.timeout_max = p.duration()?,
            "--kinds" => o.kinds = p.value()?.split(',').map(str::to_string).collect(),
            "--id" => o.id = p.parse()?,
            "--seed" => o.seed = Some(p.parse()?),
            "--json" => o.json = true,
            _ if transport.parse(&opt, &mut p)? || common.parse(&opt, &mut p)? => {}
            _ => return Err(p.unexpected(Arg::Opt(opt))),
        }
    }
    let server = transport.target(Role::Server, scenario.default_port())?;
    if let Target::Unix(_) = server {
        return Err(Error::usage(
            "the scenarios run over AF_VSOCK, or --tcp for a try on the host",
        ));
    }
    let cid = match transport.target(Role::Client, scenario.default_port())? {
        Target::Vsock(a, _) => a.cid,
        _ => VMADDR_CID_LOCAL,
    };
    let env = Env {
        server,
        cid,
        timeout: common.timeout,
        verbose: common.verbose,
        seed: o.seed.unwrap_or_else(clock_seed),
    };
    // The whole run is bounded: --deadline, or a default per scenario.
    let deadline = common.deadline.unwrap_or(match scenario {
        Scenario::Hold => Duration::from_secs(600),
        Scenario::Cycles => Duration::from_secs(1800),
        Scenario::Mesh => o.mesh.duration + o.mesh.finish_timeout + Duration::from_secs(120),
        Scenario::Kill => Duration::from_secs(180),
        Scenario::KillChild => Duration::from_secs(300),
        Scenario::Timers => Duration::from_secs(120),
    });
    start_watchdog(PROG, deadline);

    let sum = match scenario {
        Scenario::Hold => hold::run(&env, o.count.unwrap_or(1000) as usize)?,
        Scenario::Cycles => {
            cycles::run(&env, o.count.unwrap_or(10_000), o.clients, o.max_failures)?
        }
        Scenario::Mesh => {
            let mut m = o.mesh.clone();
            m.max_size = o.kill_max.unwrap_or(m.max_size).max(1);
            let seq = transport.seqpacket();
            // A message must fit in the receiver's buffer (else EMSGSIZE): on seqpacket the
            // smallest buffer is at least the largest message.
            m.buf_min = o
                .buf_min
                .unwrap_or(if seq { m.max_size as u64 } else { m.buf_min });
            if seq && m.buf_min < m.max_size as u64 {
                return Err(Error::usage(
                    "on --seqpacket, --buf-min must be at least --max-size",
                ));
            }
            m.buf_max = m.buf_max.max(m.buf_min);
            let ty = env.server_at(0).sock_type();
            mesh::run(&env, ty, &m)?
        }
        Scenario::Kill => {
            let mut k = o.kill.clone();
            k.min_size = o.kill_min.unwrap_or(k.min_size);
            k.max_size = o.kill_max.unwrap_or(k.max_size);
            kill::run(&env, &k)?
        }
        Scenario::KillChild => {
            let target = transport.target(Role::Client, scenario.default_port())?;
            let (min, max) = (
                o.kill_min.unwrap_or(o.kill.min_size),
                o.kill_max.unwrap_or(o.kill.max_size),
            );
            return kill::child(&env, &target, o.id, min, max);
        }
        Scenario::Timers => timers::run(
            &env,
            o.count.unwrap_or(16) as usize,
            &o.kinds,
            o.timeout_max,
        )?,
    };
    finish(&sum, o.json)
}

/// A byte count that fits in memory.
fn size(p: &mut Parser) -> Result<usize> {
    let n = p.size()?;
    usize::try_from(n).map_err(|_| Error::usage(format!("{n} bytes is too large")))
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    rng::mix64(nanos ^ u64::from(std::process::id()))
}

/// Prints the summary; an error (exit status 1) if a check was violated.
fn finish(sum: &Summary, json: bool) -> Result<()> {
    sum.print(json);
    match sum.violation_list() {
        [] => Ok(()),
        [one] => Err(Error::new(format!("1 check violated: {one}"))),
        [first, rest @ ..] => Err(Error::new(format!(
            "{} checks violated; first: {first}",
            rest.len() + 1
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenarios end to end over TCP on the host (the stalls too where userfaultfd is
    /// allowed).
    fn tcp_env() -> Env {
        Env {
            server: Target::Tcp("127.0.0.1:0".parse().unwrap()),
            cid: VMADDR_CID_LOCAL,
            timeout: Duration::from_secs(10),
            verbose: false,
            seed: 42,
        }
    }

    #[test]
    fn hold_and_cycles_over_tcp() {
        let env = tcp_env();
        let s = hold::run(&env, 50).unwrap();
        assert!(s.ok(), "{:?}", s.violation_list());
        let s = cycles::run(&env, 50, 2, 0).unwrap();
        assert!(s.ok(), "{:?}", s.violation_list());
    }

    #[test]
    fn mesh_over_tcp() {
        let env = tcp_env();
        let mut m = Opts::default().mesh;
        m.senders = 2;
        m.receivers = 2;
        m.duration = Duration::from_millis(1500);
        m.stall_max = Duration::from_millis(200);
        m.stall_gap = Duration::from_millis(200);
        m.stall = uffd::Staller::new().is_ok();
        let s = mesh::run(&env, rvsock_samples::vsock::SockType::Stream, &m).unwrap();
        assert!(s.ok(), "{:?}", s.violation_list());
        assert!(s.line(false).contains(" bytes="));
    }
}
