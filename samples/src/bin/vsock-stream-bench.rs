// SPDX-License-Identifier: GPL-2.0

//! `vsock-stream-bench`: one-way throughput over one or more parallel connections.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rvsock_samples::cli::{self, Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::{describe, run_main};
use rvsock_samples::net::{Conn, ListenOpts, Listener, Target};
use rvsock_samples::server::DEFAULT_ACCEPT_TIMEOUT;
use rvsock_samples::{bail, fill_pattern, gbits, json, Context, Error, Result};

const PROG: &str = "vsock-stream-bench";
const DEFAULT_PORT: u32 = 1236;
/// The client's hello on each connection: magic, bytes it will send (u64 LE), stream index
/// (u32 LE), number of streams (u32 LE).
const MAGIC: &[u8; 8] = b"RVSBENCH";
const HELLO_LEN: usize = 24;
/// The server's report after the client's EOF: bytes received (u64 LE), nanoseconds from the
/// first byte to EOF (u64 LE).
const REPORT_LEN: usize = 16;
const MAX_BUF: u64 = 64 << 20;

const HELP: &str = concat!(
    "vsock-stream-bench: one-way throughput, client to server.

Usage: vsock-stream-bench --server [OPTIONS]
       vsock-stream-bench [OPTIONS]

The client opens STREAMS connections (threads), starts them together, sends
BYTES in total (split evenly) in BUF-SIZE writes, shuts down its sending side,
and waits for the server's count of bytes received: the time of a stream runs
from the common start until that count arrives, so it covers delivery, not just
buffering.  It prints the total throughput (all bytes over the time until the
last stream finished) and each stream's, in Gbit/s (10^9 bit/s).  The server
reads and discards.  AF_VSOCK servers listen on VMADDR_CID_ANY, clients connect
to CID 1; the port defaults to 1236.

Options:
  --server             be the server (a thread per connection)
  --bytes BYTES        total to send (default 1G; K/M/G/T suffixes, powers of 1024)
  --buf-size BYTES     size of each write, and of the server's reads (default 64K)
  --streams N          parallel connections (default 1)
  --vsock-buf BYTES    set SO_VM_SOCKETS_BUFFER_SIZE (raising the max as needed)
                       on the client's sockets / the server's listener
  --json               print one JSON object instead of the text report
  --once               server: serve one client run (all its streams), then exit
  --accept-timeout SECS
                       server: exit when no client comes for SECS (default 60;
                       0 = wait forever)
",
    rvsock_samples::transport_help!(),
    rvsock_samples::common_help!(),
    "
Examples:
  vsock-stream-bench --server &
  vsock-stream-bench --bytes 4G --buf-size 64K --streams 4 --json
  vsock-stream-bench --server --tcp 127.0.0.1:5002 &  vsock-stream-bench --tcp 127.0.0.1:5002
"
);

fn main() -> ExitCode {
    run_main(PROG, run)
}

struct Opts {
    bytes: u64,
    buf_size: usize,
    streams: u32,
    vsock_buf: Option<u64>,
    json: bool,
    once: bool,
    accept_timeout: Option<Duration>,
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut server = false;
    let mut o = Opts {
        bytes: 1 << 30,
        buf_size: 64 * 1024,
        streams: 1,
        vsock_buf: None,
        json: false,
        once: false,
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
                "--bytes" => o.bytes = p.size()?,
                "--buf-size" => {
                    let b = p.size()?;
                    if b == 0 || b > MAX_BUF {
                        return Err(Error::usage(format!(
                            "--buf-size must be between 1 and {MAX_BUF}"
                        )));
                    }
                    o.buf_size = b as usize;
                }
                "--streams" => o.streams = p.parse()?,
                "--vsock-buf" => o.vsock_buf = Some(p.size()?),
                "--json" => o.json = true,
                "--once" => o.once = true,
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
    if o.streams == 0 {
        return Err(Error::usage("--streams must be at least 1"));
    }
    if o.bytes < u64::from(o.streams) {
        return Err(Error::usage("--bytes must be at least one byte per stream"));
    }
    let target = transport.target(Role::Client, DEFAULT_PORT)?;
    run_client(&target, &common, &o)
}

struct Hello {
    bytes: u64,
    index: u32,
    streams: u32,
}

fn encode_hello(h: &Hello) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&h.bytes.to_le_bytes());
    b[16..20].copy_from_slice(&h.index.to_le_bytes());
    b[20..24].copy_from_slice(&h.streams.to_le_bytes());
    b
}

fn decode_hello(b: &[u8; HELLO_LEN]) -> Option<Hello> {
    if &b[..8] != MAGIC {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
    Some(Hello {
        bytes: u64_at(8),
        index: u32_at(16),
        streams: u32_at(20),
    })
}

// ---------------------------------------------------------------------------------------
// Server

/// What one connection of the server saw.
struct Received {
    peer: String,
    bytes: u64,
    secs: f64,
}

fn run_server(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    let listen = ListenOpts {
        vsock_buffer_size: o.vsock_buf,
        ..ListenOpts::default()
    };
    let listener = Listener::bind(target, listen).context(|| format!("listen on {target}"))?;
    println!("listening on {}", listener.local_name());
    let mut threads: Vec<thread::JoinHandle<Result<Received>>> = Vec::new();
    let mut accepted = 0u64;
    let mut failures = 0u64;
    let mut received = Vec::new();
    // With --once: how many streams the first client announced.
    let mut run_streams: Option<u32> = None;
    loop {
        if o.once && run_streams.is_some_and(|n| accepted >= u64::from(n)) {
            break;
        }
        let (mut conn, peer) = match listener.accept(o.accept_timeout) {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                let secs = o.accept_timeout.map_or(0.0, |d| d.as_secs_f64());
                if accepted == 0 || o.once {
                    bail!("no connection within {secs} s (see --accept-timeout)");
                }
                eprintln!("{PROG}: no new connection for {secs} s, exiting");
                break;
            }
            Err(e) => return Err(e).context(|| format!("accept on {}", listener.local_name())),
        };
        accepted += 1;
        println!("accepted connection from {peer}");
        // The hello is read here so that --once knows how many streams to wait for.
        let hello = conn.set_timeouts(Some(common.timeout)).and_then(|()| {
            let mut b = [0u8; HELLO_LEN];
            conn.read_exact(&mut b).map(|()| b)
        });
        let hello = match hello {
            Ok(b) => decode_hello(&b),
            Err(e) => {
                eprintln!(
                    "{PROG}: {}",
                    describe(&format!("{peer}: receive the hello"), &e)
                );
                failures += 1;
                continue;
            }
        };
        let Some(hello) = hello else {
            eprintln!("{PROG}: {peer}: not a vsock-stream-bench client (bad hello)");
            failures += 1;
            continue;
        };
        if run_streams.is_none() {
            run_streams = Some(hello.streams.max(1));
        }
        if common.verbose {
            eprintln!(
                "{PROG}: {peer}: stream {} of {}, {} bytes announced",
                hello.index + 1,
                hello.streams,
                hello.bytes
            );
        }
        let buf_size = o.buf_size;
        let t = thread::Builder::new()
            .name(format!("recv-{accepted}"))
            .spawn(move || receive(conn, peer, buf_size));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("{PROG}: cannot start a thread: {e}");
                failures += 1;
            }
        }
        // Reap what finished, reporting as we go.
        let (done, running): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
        threads = running;
        for t in done {
            collect(t, common.verbose, &mut received, &mut failures);
        }
    }
    for t in threads {
        collect(t, common.verbose, &mut received, &mut failures);
    }
    if o.once {
        let total: u64 = received.iter().map(|r| r.bytes).sum();
        let longest = received.iter().map(|r| r.secs).fold(0.0, f64::max);
        println!(
            "received {total} bytes on {} connection(s) in {longest:.3} s: {:.3} Gbit/s",
            received.len(),
            gbits(total, longest)
        );
    }
    if failures > 0 {
        bail!("{failures} of {accepted} connections failed");
    }
    Ok(())
}

/// Joins a receiver thread: adds its result to `received`, or counts a failure.
fn collect(
    t: thread::JoinHandle<Result<Received>>,
    verbose: bool,
    received: &mut Vec<Received>,
    failures: &mut u64,
) {
    match t.join() {
        Ok(Ok(r)) => {
            if verbose {
                eprintln!(
                    "{PROG}: {}: received {} bytes in {:.3} s ({:.3} Gbit/s)",
                    r.peer,
                    r.bytes,
                    r.secs,
                    gbits(r.bytes, r.secs)
                );
            }
            received.push(r);
        }
        Ok(Err(e)) => {
            eprintln!("{PROG}: {e}");
            *failures += 1;
        }
        Err(_) => {
            eprintln!("{PROG}: a receiving thread panicked");
            *failures += 1;
        }
    }
}

/// Reads and discards until EOF, then sends the report.
fn receive(mut conn: Conn, peer: String, buf_size: usize) -> Result<Received> {
    let mut buf = vec![0u8; buf_size];
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).context(|| format!("{peer}: receive (after {bytes} bytes)"));
            }
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let mut report = [0u8; REPORT_LEN];
    report[..8].copy_from_slice(&bytes.to_le_bytes());
    report[8..].copy_from_slice(&((secs * 1e9) as u64).to_le_bytes());
    conn.write_all(&report)
        .context(|| format!("{peer}: send the report"))?;
    Ok(Received { peer, bytes, secs })
}

// ---------------------------------------------------------------------------------------
// Client

/// What one stream of the client measured.
struct Sent {
    bytes: u64,
    /// From the common start to the server's report.
    secs: f64,
    /// When the server's report arrived, from the common start.
    end: Instant,
    server_secs: f64,
}

fn run_client(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    // Connect everything first, so that a failure cannot leave threads waiting at the start.
    let mut conns = Vec::with_capacity(o.streams as usize);
    for i in 0..o.streams {
        let mut conn = Conn::connect(target, common.timeout)
            .context(|| format!("stream {}: connect to {target}", i + 1))?;
        if let (Some(n), Some(s)) = (o.vsock_buf, conn.as_vsock()) {
            s.set_buffer_size(n)
                .context(|| format!("stream {}: set SO_VM_SOCKETS_BUFFER_SIZE to {n}", i + 1))?;
        }
        let share = o.bytes / u64::from(o.streams)
            + u64::from(u64::from(i) < o.bytes % u64::from(o.streams));
        let hello = Hello {
            bytes: share,
            index: i,
            streams: o.streams,
        };
        conn.write_all(&encode_hello(&hello))
            .context(|| format!("stream {}: send the hello", i + 1))?;
        conns.push((conn, share));
    }
    let mut payload = vec![0u8; o.buf_size];
    fill_pattern(&mut payload, 0xbe7c);
    let payload = Arc::new(payload);
    let barrier = Arc::new(Barrier::new(conns.len() + 1));
    let mut threads = Vec::with_capacity(conns.len());
    for (i, (conn, share)) in conns.into_iter().enumerate() {
        let payload = Arc::clone(&payload);
        let barrier = Arc::clone(&barrier);
        let t = thread::Builder::new()
            .name(format!("send-{i}"))
            .spawn(move || {
                barrier.wait();
                send(conn, share, &payload, i + 1)
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Returning ends the process, and with it the threads waiting at the start.
                bail!("cannot start the thread of stream {}: {e}", i + 1);
            }
        }
    }
    let start = Instant::now();
    barrier.wait();
    let mut results = Vec::with_capacity(threads.len());
    let mut errors = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("a sending thread panicked".into()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    let last = results.iter().map(|r| r.end).max().unwrap_or(start);
    let secs = last.duration_since(start).as_secs_f64();
    let total: u64 = results.iter().map(|r| r.bytes).sum();
    if o.json {
        let streams = json::array(results.iter().map(|r| {
            json::Object::new()
                .int("bytes", r.bytes)
                .num("elapsed_s", r.secs)
                .num("gbit_per_s", gbits(r.bytes, r.secs))
                .num("server_elapsed_s", r.server_secs)
                .finish()
        }));
        let mut obj = json::Object::new()
            .str("tool", PROG)
            .str("transport", target.transport())
            .str("address", &target.address())
            .str("socket_type", target.sock_type().name())
            .int("streams", u64::from(o.streams))
            .int("bytes", total)
            .int("buf_size", o.buf_size as u64);
        obj = match o.vsock_buf {
            Some(n) => obj.int("vsock_buffer_size", n),
            None => obj.raw("vsock_buffer_size", "null"),
        };
        let obj = obj
            .num("elapsed_s", secs)
            .num("gbit_per_s", gbits(total, secs))
            .raw("per_stream", &streams);
        println!("{}", obj.finish());
    } else {
        println!(
            "{PROG}: {target}, {} stream(s), {total} bytes in {}-byte writes",
            o.streams, o.buf_size
        );
        println!(
            "total: {:.3} Gbit/s ({total} bytes in {secs:.3} s)",
            gbits(total, secs)
        );
        for (i, r) in results.iter().enumerate() {
            println!(
                "stream {}: {:.3} Gbit/s ({} bytes in {:.3} s)",
                i + 1,
                gbits(r.bytes, r.secs),
                r.bytes,
                r.secs
            );
        }
    }
    Ok(())
}

/// Sends `bytes` bytes, shuts down, and waits for the server's report.
fn send(mut conn: Conn, bytes: u64, payload: &[u8], stream: usize) -> Result<Sent> {
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(payload.len() as u64) as usize;
        conn.write_all(&payload[..n]).context(|| {
            format!(
                "stream {stream}: send (after {} of {bytes} bytes)",
                bytes - left
            )
        })?;
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write)
        .context(|| format!("stream {stream}: shut down the sending side"))?;
    let mut report = [0u8; REPORT_LEN];
    let n = conn
        .read_full(&mut report)
        .context(|| format!("stream {stream}: receive the server's report"))?;
    let end = Instant::now();
    if n < REPORT_LEN {
        bail!("stream {stream}: the server closed without its report");
    }
    let got = u64::from_le_bytes(report[..8].try_into().unwrap_or([0; 8]));
    let server_ns = u64::from_le_bytes(report[8..].try_into().unwrap_or([0; 8]));
    if got != bytes {
        bail!("stream {stream}: sent {bytes} bytes, the server received {got}");
    }
    Ok(Sent {
        bytes,
        secs: end.duration_since(start).as_secs_f64(),
        end,
        server_secs: server_ns as f64 / 1e9,
    })
}
