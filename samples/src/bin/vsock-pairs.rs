// SPDX-License-Identifier: GPL-2.0

//! `vsock-pairs`: holds N connected socket pairs open, for memory accounting.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rvsock_samples::cli::{Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::run_main;
use rvsock_samples::net::{Conn, ListenOpts, Listener, Target};
use rvsock_samples::vsock::{self, VsockAddr, VMADDR_PORT_ANY};
use rvsock_samples::{bail, Context, Error, Result};

const PROG: &str = "vsock-pairs";
const DEFAULT_PORT: u32 = 1238;
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(600);
/// Descriptors beyond the pairs' (stdio, the listener, the library's own).
const SPARE_FDS: u64 = 64;

const HELP: &str = concat!(
    "vsock-pairs: open N connected socket pairs over loopback and hold them open.

Usage: vsock-pairs [OPTIONS]

One process listens (AF_VSOCK: on VMADDR_CID_ANY, port 1238 by default),
connects N client sockets to it (AF_VSOCK: to CID 1) and accepts each, raising
RLIMIT_NOFILE as needed.  When all pairs are connected it prints 'ready N' on
stdout, then holds them until stdin reaches end of file (at most --max-wait),
or for --hold SECS, and closes them all.  Meant for reading /proc/slabinfo or
/sys/kernel/slab while the pairs exist.  Progress and timings go to stderr.

Options:
  --count N            number of pairs (default 1000)
  --hold SECS          hold the pairs SECS seconds, ignoring stdin
  --max-wait SECS      without --hold: longest wait for stdin to close
                       (default 600; then exit with status 1)
  --exchange           send one byte each way on every pair once connected
",
    rvsock_samples::transport_help!(),
    rvsock_samples::common_help!(),
    "
Examples:
  vsock-pairs --count 1000 --hold 5
  (echo; sleep 2) | vsock-pairs --count 10000    # holds until the pipe closes
  vsock-pairs --count 1000 --tcp 127.0.0.1:5004 --hold 1
"
);

fn main() -> ExitCode {
    run_main(PROG, run)
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut count: u64 = 1000;
    let mut hold: Option<Duration> = None;
    let mut max_wait = DEFAULT_MAX_WAIT;
    let mut exchange = false;
    while let Some(arg) = p.next_arg()? {
        match arg {
            Arg::Opt(o) => match o.as_str() {
                "-h" | "--help" => {
                    print!("{HELP}");
                    return Ok(());
                }
                "--count" => count = p.parse()?,
                "--hold" => hold = Some(p.duration()?),
                "--max-wait" => max_wait = p.duration()?,
                "--exchange" => exchange = true,
                _ if transport.parse(&o, &mut p)? || common.parse(&o, &mut p)? => {}
                _ => return Err(p.unexpected(Arg::Opt(o))),
            },
            a => return Err(p.unexpected(a)),
        }
    }
    if count == 0 {
        return Err(Error::usage("--count must be at least 1"));
    }
    common.start(PROG);
    let needed = count.saturating_mul(2).saturating_add(SPARE_FDS);
    let limit = vsock::raise_nofile_limit(needed).context(|| {
        format!("raise RLIMIT_NOFILE to {needed} (the hard limit is lower and raising it needs CAP_SYS_RESOURCE)")
    })?;
    if common.verbose {
        eprintln!("{PROG}: RLIMIT_NOFILE is {limit}");
    }

    let server_target = transport.target(Role::Server, DEFAULT_PORT)?;
    let listener = Listener::bind(&server_target, ListenOpts::default())
        .context(|| format!("listen on {server_target}"))?;
    let client_target = connect_target(&listener, transport.target(Role::Client, DEFAULT_PORT)?)?;
    eprintln!(
        "{PROG}: listening on {}, connecting {count} pairs to {client_target}",
        listener.local_name()
    );

    let start = Instant::now();
    let mut pairs: Vec<(Conn, Conn)> = Vec::with_capacity(count as usize);
    for i in 1..=count {
        let client = Conn::connect(&client_target, common.timeout)
            .context(|| format!("pair {i}: connect to {client_target}"))?;
        let (server, _peer) = listener
            .accept(Some(common.timeout))
            .context(|| format!("pair {i}: accept"))?;
        server
            .set_timeouts(Some(common.timeout))
            .context(|| format!("pair {i}: set the socket timeouts"))?;
        pairs.push((client, server));
    }
    let connected = start.elapsed();
    if exchange {
        for (i, (client, server)) in pairs.iter_mut().enumerate() {
            ping(client, server).context(|| format!("pair {}: exchange a byte", i + 1))?;
            ping(server, client).context(|| format!("pair {}: exchange a byte back", i + 1))?;
        }
    }
    println!("ready {count}");
    io::stdout()
        .flush()
        .context(|| "write 'ready' to stdout".into())?;
    eprintln!(
        "{PROG}: {count} pairs connected in {:.3} s",
        connected.as_secs_f64()
    );

    match hold {
        Some(d) => std::thread::sleep(d),
        None => wait_stdin_eof(max_wait)?,
    }
    let n = pairs.len();
    drop(pairs);
    drop(listener);
    eprintln!("{PROG}: closed {n} pairs");
    Ok(())
}

/// The address the clients connect to: the client target, with the port the listener
/// really has if it was bound to "any" port.
fn connect_target(listener: &Listener, client: Target) -> Result<Target> {
    Ok(match (listener, client) {
        (Listener::Vsock(l), Target::Vsock(a, ty)) if a.port == VMADDR_PORT_ANY => {
            let port = l
                .local_addr()
                .context(|| "read the listener's port".into())?
                .port;
            Target::Vsock(VsockAddr::new(a.cid, port), ty)
        }
        (Listener::Tcp(l), Target::Tcp(a)) if a.port() == 0 => {
            let mut a = a;
            a.set_port(
                l.local_addr()
                    .context(|| "read the listener's port".into())?
                    .port(),
            );
            Target::Tcp(a)
        }
        (_, t) => t,
    })
}

/// Sends one byte from `a` and reads it on `b`.
fn ping(a: &mut Conn, b: &mut Conn) -> io::Result<()> {
    a.write_all(&[0x5a])?;
    let mut byte = [0u8; 1];
    b.read_exact(&mut byte)?;
    if byte[0] != 0x5a {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("got byte {:#04x} instead of 0x5a", byte[0]),
        ));
    }
    Ok(())
}

/// Reads stdin until end of file, for at most `max_wait`.
fn wait_stdin_eof(max_wait: Duration) -> Result<()> {
    let stdin = io::stdin();
    let deadline = Instant::now() + max_wait;
    // At least std's stdin buffer, so reads bypass it and poll() sees all that is pending.
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = vsock::wait_readable(stdin.as_fd(), Some(left))
            .context(|| "wait for stdin to close".into())?;
        if !ready {
            bail!(
                "stdin still open after {} s (see --max-wait, --hold)",
                max_wait.as_secs_f64()
            );
        }
        match stdin.lock().read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context(|| "read stdin".into()),
        }
    }
}
