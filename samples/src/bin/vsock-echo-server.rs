// SPDX-License-Identifier: GPL-2.0

//! `vsock-echo-server`: echoes back every byte (or, with `--seqpacket`, every record) it
//! receives on each accepted connection.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use rvsock_samples::cli::{self, Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::run_main;
use rvsock_samples::net::{Conn, ListenOpts, Listener};
use rvsock_samples::server::{serve, ServeOpts};
use rvsock_samples::vsock::SockType;
use rvsock_samples::{bail, Context, Result};

const PROG: &str = "vsock-echo-server";
const DEFAULT_PORT: u32 = 1234;
/// The largest record echoed in `--seqpacket` mode.
const MAX_RECORD: usize = 1 << 20;

const HELP: &str = concat!(
    "vsock-echo-server: echo every byte received on each connection back to the sender.

Usage: vsock-echo-server [OPTIONS]

Listens (AF_VSOCK: on VMADDR_CID_ANY, port 1234 by default), prints
'listening on ADDR' and then 'accepted connection from PEER' for each
connection, and serves each connection in a thread of its own until the peer
closes it.  With --seqpacket, each record is sent back as one record.

Options:
  --once               serve the first connection only, then exit with its status
  --accept-timeout SECS
                       exit when no new connection comes for SECS (default 60;
                       0 = wait forever); status 1 if none came at all
",
    rvsock_samples::transport_help!(),
    rvsock_samples::common_help!(),
    "
Examples:
  vsock-echo-server --port 1234 --once
  vsock-echo-server --seqpacket
  vsock-echo-server --tcp 127.0.0.1:5000
"
);

fn main() -> ExitCode {
    run_main(PROG, run)
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut serve_opts = ServeOpts::default();
    while let Some(arg) = p.next_arg()? {
        match arg {
            Arg::Opt(o) => match o.as_str() {
                "-h" | "--help" => {
                    print!("{HELP}");
                    return Ok(());
                }
                "--once" => serve_opts.once = true,
                "--accept-timeout" => serve_opts.accept_timeout = cli::accept_timeout(&mut p)?,
                _ if transport.parse(&o, &mut p)? || common.parse(&o, &mut p)? => {}
                _ => return Err(p.unexpected(Arg::Opt(o))),
            },
            a => return Err(p.unexpected(a)),
        }
    }
    common.start(PROG);
    let target = transport.target(Role::Server, DEFAULT_PORT)?;
    let listener =
        Listener::bind(&target, ListenOpts::default()).context(|| format!("listen on {target}"))?;
    println!("listening on {}", listener.local_name());

    let seqpacket = target.sock_type() == SockType::SeqPacket;
    let timeout = common.timeout;
    let verbose = common.verbose;
    serve(PROG, &listener, serve_opts, move |mut conn, peer| {
        conn.set_timeouts(Some(timeout))
            .context(|| "set the socket timeouts".into())?;
        let (bytes, records) = if seqpacket {
            echo_records(&conn)?
        } else {
            echo_stream(&mut conn)?
        };
        if verbose {
            eprintln!(
                "{PROG}: connection from {peer} closed: echoed {bytes} bytes in {records} reads"
            );
        }
        Ok(())
    })
}

/// Echoes a byte stream until the peer shuts down its sending side; returns the bytes and
/// reads seen.
fn echo_stream(conn: &mut Conn) -> Result<(u64, u64)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut reads) = (0u64, 0u64);
    loop {
        let n = match std::io::Read::read(conn, &mut buf) {
            Ok(0) => return Ok((bytes, reads)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(e).context(|| format!("receive (after {bytes} bytes)"));
            }
        };
        conn.write_all(&buf[..n])
            .context(|| format!("send back {n} bytes (after {bytes} bytes)"))?;
        bytes += n as u64;
        reads += 1;
    }
}

/// Echoes SOCK_SEQPACKET records one by one until the peer shuts down.
fn echo_records(conn: &Conn) -> Result<(u64, u64)> {
    let Some(s) = conn.as_vsock() else {
        bail!("--seqpacket needs an AF_VSOCK socket");
    };
    let mut buf = vec![0u8; MAX_RECORD];
    let (mut bytes, mut records) = (0u64, 0u64);
    loop {
        let (n, truncated) = s
            .recv_record(&mut buf)
            .context(|| format!("receive record {}", records + 1))?;
        if n == 0 {
            return Ok((bytes, records));
        }
        if truncated {
            bail!(
                "record {} is larger than {MAX_RECORD} bytes: not echoed",
                records + 1
            );
        }
        let sent = s
            .send(&buf[..n], 0)
            .context(|| format!("send back record {} ({n} bytes)", records + 1))?;
        if sent != n {
            bail!("sent {sent} of the {n} bytes of record {}", records + 1);
        }
        bytes += n as u64;
        records += 1;
    }
}
