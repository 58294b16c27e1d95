// SPDX-License-Identifier: GPL-2.0

//! `vsock-connrate`: connections per second, one connection after the other.

#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rvsock_samples::cli::{self, Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::{describe, run_main};
use rvsock_samples::net::{is_connect_failure, Conn, ConnectMode, ListenOpts, Listener, Target};
use rvsock_samples::server::DEFAULT_ACCEPT_TIMEOUT;
use rvsock_samples::{bail, json, Context, Error, Result};

const PROG: &str = "vsock-connrate";
const DEFAULT_PORT: u32 = 1237;
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

const HELP: &str = concat!(
    "vsock-connrate: connection rate, one connection at a time.

Usage: vsock-connrate --server [OPTIONS]
       vsock-connrate [OPTIONS]

The client connects and closes, in a single-threaded loop, for --duration
seconds or --count attempts (whichever ends first; 5 s if neither is given),
and prints the connections per second (exit status 1 if none succeeded).  A refused, reset or timed-out attempt
is counted (refused=N reset=N timedout=N; errors=N for other transient ones
such as EADDRNOTAVAIL) and the loop goes on; only errors that mean it cannot
work at all (no AF_VSOCK, no transport for the CID, ...) end it.  The server
accepts and closes in a loop.  AF_VSOCK servers listen on VMADDR_CID_ANY,
clients connect to CID 1; the port defaults to 1237.

Options:
  --server             be the server
  --duration SECS      client: run this long (default 5 s unless --count)
  --count N            client: make N attempts; server: exit after N accepts
  --wait-close         client: after connecting, wait for the server to close
                       (so each connection includes the server's accept)
  --blocking-connect   client: AF_VSOCK blocking connect() bounded by the
                       kernel's SO_VM_SOCKETS_CONNECT_TIMEOUT (set to --timeout)
                       instead of non-blocking connect() + poll()
  --backlog N          server: listen() backlog (default 1024)
  --json               print one JSON object instead of the text report
  --accept-timeout SECS
                       server: exit when no client comes for SECS (default 60;
                       0 = wait forever)
",
    rvsock_samples::transport_help!(),
    rvsock_samples::common_help!(),
    "
Examples:
  vsock-connrate --server &
  vsock-connrate --duration 5 --json
  vsock-connrate --server --tcp 127.0.0.1:5003 &  vsock-connrate --tcp 127.0.0.1:5003
"
);

fn main() -> ExitCode {
    run_main(PROG, run)
}

struct Opts {
    duration: Option<Duration>,
    count: Option<u64>,
    wait_close: bool,
    blocking: bool,
    backlog: u32,
    json: bool,
    accept_timeout: Option<Duration>,
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut server = false;
    let mut o = Opts {
        duration: None,
        count: None,
        wait_close: false,
        blocking: false,
        backlog: 1024,
        json: false,
        accept_timeout: Some(DEFAULT_ACCEPT_TIMEOUT),
    };
    while let Some(arg) = p.next_arg()? {
        match arg {
            Arg::Opt(opt) => match opt.as_str() {
                "-h" | "--help" => {
                    print!("{HELP}");
                    return Ok(());
                }
                "--server" => server = true,
                "--duration" => o.duration = Some(p.duration()?),
                "--count" => o.count = Some(p.parse()?),
                "--wait-close" => o.wait_close = true,
                "--blocking-connect" => o.blocking = true,
                "--backlog" => o.backlog = p.parse()?,
                "--json" => o.json = true,
                "--accept-timeout" => o.accept_timeout = cli::accept_timeout(&mut p)?,
                _ if transport.parse(&opt, &mut p)? || common.parse(&opt, &mut p)? => {}
                _ => return Err(p.unexpected(Arg::Opt(opt))),
            },
            a => return Err(p.unexpected(a)),
        }
    }
    common.start(PROG);
    if server {
        let target = transport.target(Role::Server, DEFAULT_PORT)?;
        return run_server(&target, &common, &o);
    }
    if o.duration.is_none() && o.count.is_none() {
        o.duration = Some(DEFAULT_DURATION);
    }
    if o.duration.is_some_and(|d| d.is_zero()) || o.count == Some(0) {
        return Err(Error::usage("--duration and --count must be more than 0"));
    }
    let target = transport.target(Role::Client, DEFAULT_PORT)?;
    run_client(&target, &common, &o)
}

fn run_server(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    let listen = ListenOpts {
        backlog: o.backlog,
        ..ListenOpts::default()
    };
    let listener = Listener::bind(target, listen).context(|| format!("listen on {target}"))?;
    println!("listening on {}", listener.local_name());
    let mut accepted = 0u64;
    let mut errors = 0u64;
    let start = Instant::now();
    loop {
        if o.count.is_some_and(|n| accepted >= n) {
            break;
        }
        match listener.accept(o.accept_timeout) {
            Ok((conn, peer)) => {
                accepted += 1;
                if common.verbose {
                    eprintln!("{PROG}: accepted connection from {peer}");
                }
                drop(conn);
            }
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                let secs = o.accept_timeout.map_or(0.0, |d| d.as_secs_f64());
                if accepted == 0 {
                    bail!("no connection within {secs} s (see --accept-timeout)");
                }
                eprintln!("{PROG}: no new connection for {secs} s, exiting");
                break;
            }
            // Transient: the peer went away between the handshake and accept(), or we
            // ran out of descriptors/memory for a moment.  Count and go on.
            Err(e)
                if is_connect_failure(&e)
                    || matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
            {
                errors += 1;
                if errors == 1 || common.verbose {
                    eprintln!("{PROG}: {}", describe("accept", &e));
                }
            }
            Err(e) => {
                return Err(e).context(|| format!("accept on {}", listener.local_name()));
            }
        }
    }
    println!(
        "accepted {accepted} connections in {:.3} s, accept errors={errors}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Default)]
struct Counts {
    attempts: u64,
    ok: u64,
    refused: u64,
    reset: u64,
    timedout: u64,
    errors: u64,
}

impl Counts {
    /// Counts a failed attempt; `false` if the error is one that ends the run.
    fn failure(&mut self, e: &io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => self.refused += 1,
            Some(libc::ECONNRESET | libc::ECONNABORTED | libc::EPIPE) => self.reset += 1,
            Some(libc::ETIMEDOUT) => self.timedout += 1,
            _ if e.kind() == io::ErrorKind::WouldBlock => self.timedout += 1,
            _ if is_connect_failure(e) => self.errors += 1,
            _ => return false,
        }
        true
    }
}

fn run_client(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    let mode = if o.blocking {
        ConnectMode::Blocking
    } else {
        ConnectMode::Poll
    };
    let mut c = Counts::default();
    let mut first_errors: Vec<String> = Vec::new();
    let mut buf = [0u8; 64];
    let start = Instant::now();
    loop {
        if o.duration.is_some_and(|d| start.elapsed() >= d)
            || o.count.is_some_and(|n| c.attempts >= n)
        {
            break;
        }
        c.attempts += 1;
        let result = Conn::open(target, common.timeout, mode).and_then(|mut conn| {
            if o.wait_close {
                conn.set_read_timeout(Some(common.timeout))?;
                // The server sends nothing: expect EOF (or a reset, which also says it closed).
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => c.ok += 1,
            Err(e) => {
                if !c.failure(&e) {
                    return Err(e)
                        .context(|| format!("connect to {target} (attempt {})", c.attempts));
                }
                let msg = describe("connect", &e);
                // Say what went wrong, for the first few distinct errors (all with -v).
                let new = first_errors.len() < 3 && !first_errors.contains(&msg);
                if new || common.verbose {
                    eprintln!("{PROG}: attempt {}: {msg}", c.attempts);
                }
                if new {
                    first_errors.push(msg);
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = c.ok as f64 / secs;
    if o.json {
        let obj = json::Object::new()
            .str("tool", PROG)
            .str("transport", target.transport())
            .str("address", &target.address())
            .str("socket_type", target.sock_type().name())
            .bool("wait_close", o.wait_close)
            .bool("blocking_connect", o.blocking)
            .num("elapsed_s", secs)
            .int("attempts", c.attempts)
            .int("connections", c.ok)
            .num("conn_per_s", rate)
            .int("refused", c.refused)
            .int("reset", c.reset)
            .int("timedout", c.timedout)
            .int("errors", c.errors);
        println!("{}", obj.finish());
    } else {
        println!(
            "{PROG}: {target}: {} connections in {secs:.3} s = {rate:.1} conn/s (attempts={} refused={} reset={} timedout={} errors={})",
            c.ok, c.attempts, c.refused, c.reset, c.timedout, c.errors
        );
    }
    if c.ok == 0 {
        bail!("no connection succeeded in {} attempts", c.attempts);
    }
    Ok(())
}
