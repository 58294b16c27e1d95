// SPDX-License-Identifier: GPL-2.0

//! `vsock-pingpong`: round-trip latency of fixed-size messages.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::Shutdown;
use std::process::ExitCode;
use std::time::Instant;

use rvsock_samples::cli::{self, Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::run_main;
use rvsock_samples::net::{Conn, ListenOpts, Listener, Target};
use rvsock_samples::server::{serve, ServeOpts};
use rvsock_samples::stats::{summarize, Summary};
use rvsock_samples::{bail, fill_pattern, first_mismatch, json, Context, Error, Result};

const PROG: &str = "vsock-pingpong";
const DEFAULT_PORT: u32 = 1235;
/// Largest message size accepted (client and server).
const MAX_SIZE: u64 = 64 << 20;
/// The client's hello: magic, then the message size (u32 LE), then 4 reserved bytes.  The
/// server answers with the same 16 bytes.
const MAGIC: &[u8; 8] = b"RVPPING1";

const HELP: &str = concat!(
    "vsock-pingpong: round-trip latency of fixed-size messages.

Usage: vsock-pingpong --server [OPTIONS]
       vsock-pingpong [OPTIONS]

The client sends a SIZE-byte message, waits until the whole echo is back, and
repeats: WARMUP rounds first, then ITERATIONS timed ones.  It prints the
round-trip time statistics in microseconds (min, median, mean, p99, max; also
p90, p99.9 and the standard deviation in --json).  Every echo is checked
(outside the timed part).  The server echoes messages of the size the client
announces when it connects; AF_VSOCK servers listen on VMADDR_CID_ANY, clients
connect to CID 1; the port defaults to 1235.  TCP runs set TCP_NODELAY.

Options:
  --server             be the server (a thread per connection)
  --size BYTES         message size (default 64; K/M suffixes)
  --iterations N       timed rounds (default 10000)
  --warmup N           untimed rounds first (default 1000)
  --json               print one JSON object instead of the text report
  --once               server: serve one client, then exit
  --accept-timeout SECS
                       server: exit when no client comes for SECS (default 60;
                       0 = wait forever)
",
    rvsock_samples::transport_help!(),
    rvsock_samples::common_help!(),
    "
Examples:
  vsock-pingpong --server &
  vsock-pingpong --size 64 --iterations 10000 --json
  vsock-pingpong --size 4096
  vsock-pingpong --server --tcp 127.0.0.1:5001 &  vsock-pingpong --tcp 127.0.0.1:5001
  vsock-pingpong --server --unix /tmp/pp.sock &   vsock-pingpong --unix /tmp/pp.sock
"
);

fn main() -> ExitCode {
    run_main(PROG, run)
}

struct ClientOpts {
    size: usize,
    iterations: u64,
    warmup: u64,
    json: bool,
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut serve_opts = ServeOpts::default();
    let mut server = false;
    let mut size: u64 = 64;
    let mut iterations: u64 = 10_000;
    let mut warmup: u64 = 1_000;
    let mut json = false;
    while let Some(arg) = p.next_arg()? {
        match arg {
            Arg::Opt(o) => match o.as_str() {
                "-h" | "--help" => {
                    print!("{HELP}");
                    return Ok(());
                }
                "--server" => server = true,
                "--size" => size = p.size()?,
                "--iterations" => iterations = p.parse()?,
                "--warmup" => warmup = p.parse()?,
                "--json" => json = true,
                "--once" => serve_opts.once = true,
                "--accept-timeout" => serve_opts.accept_timeout = cli::accept_timeout(&mut p)?,
                _ if transport.parse(&o, &mut p)? || common.parse(&o, &mut p)? => {}
                _ => return Err(p.unexpected(Arg::Opt(o))),
            },
            a => return Err(p.unexpected(a)),
        }
    }
    common.start(PROG);
    if server {
        let target = transport.target(Role::Server, DEFAULT_PORT)?;
        return run_server(&target, &common, serve_opts);
    }
    if size == 0 || size > MAX_SIZE {
        return Err(Error::usage(format!(
            "--size must be between 1 and {MAX_SIZE} bytes"
        )));
    }
    if iterations == 0 {
        return Err(Error::usage("--iterations must be at least 1"));
    }
    let target = transport.target(Role::Client, DEFAULT_PORT)?;
    let opts = ClientOpts {
        size: size as usize,
        iterations,
        warmup,
        json,
    };
    run_client(&target, &common, &opts)
}

fn hello(size: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&size.to_le_bytes());
    h
}

fn run_server(target: &Target, common: &CommonOpts, serve_opts: ServeOpts) -> Result<()> {
    let listener =
        Listener::bind(target, ListenOpts::default()).context(|| format!("listen on {target}"))?;
    println!("listening on {}", listener.local_name());
    let timeout = common.timeout;
    let verbose = common.verbose;
    serve(PROG, &listener, serve_opts, move |mut conn, peer| {
        conn.set_timeouts(Some(timeout))
            .context(|| "set the socket timeouts".into())?;
        let mut h = [0u8; 16];
        let n = conn
            .read_full(&mut h)
            .context(|| "receive the client's hello".into())?;
        if n < h.len() || &h[..8] != MAGIC {
            bail!("not a vsock-pingpong client (bad hello)");
        }
        let size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if size == 0 || u64::from(size) > MAX_SIZE {
            bail!("the client asks for {size}-byte messages: out of range");
        }
        conn.write_all(&hello(size))
            .context(|| "answer the hello".into())?;
        let mut buf = vec![0u8; size as usize];
        let mut rounds = 0u64;
        loop {
            let n = conn
                .read_full(&mut buf)
                .context(|| format!("receive message {}", rounds + 1))?;
            if n == 0 {
                break;
            }
            if n < buf.len() {
                bail!(
                    "the client closed in the middle of message {} ({n} of {size} bytes)",
                    rounds + 1
                );
            }
            conn.write_all(&buf)
                .context(|| format!("send back message {}", rounds + 1))?;
            rounds += 1;
        }
        if verbose {
            eprintln!("{PROG}: {peer}: {rounds} messages of {size} bytes echoed");
        }
        Ok(())
    })
}

fn run_client(target: &Target, common: &CommonOpts, opts: &ClientOpts) -> Result<()> {
    let mut conn =
        Conn::connect(target, common.timeout).context(|| format!("connect to {target}"))?;
    let h = hello(opts.size as u32);
    conn.write_all(&h).context(|| "send the hello".into())?;
    let mut answer = [0u8; 16];
    let n = conn
        .read_full(&mut answer)
        .context(|| "receive the server's answer to the hello".into())?;
    if n < answer.len() || answer != h {
        bail!("the server at {target} is not a vsock-pingpong server (bad answer to the hello)");
    }

    let mut tx = vec![0u8; opts.size];
    fill_pattern(&mut tx, 0x5eed);
    let mut rx = vec![0u8; opts.size];
    let stamp = opts.size.min(8);
    let mut samples = Vec::with_capacity(opts.iterations as usize);
    let total = opts.warmup + opts.iterations;
    let run_start = Instant::now();
    for i in 0..total {
        // Stamp the round number into the message so a stale echo cannot pass the check.
        tx[..stamp].copy_from_slice(&i.to_le_bytes()[..stamp]);
        let t0 = Instant::now();
        conn.write_all(&tx)
            .context(|| format!("round {}: send", i + 1))?;
        let n = conn
            .read_full(&mut rx)
            .context(|| format!("round {}: receive the echo", i + 1))?;
        let dt = t0.elapsed();
        if n < rx.len() {
            bail!(
                "round {}: the server closed the connection ({n} of {} bytes echoed)",
                i + 1,
                opts.size
            );
        }
        if i >= opts.warmup {
            samples.push(dt.as_nanos() as f64 / 1000.0);
        }
        if let Some(at) = first_mismatch(&tx, &rx) {
            bail!(
                "round {}: the echo differs from the message at byte {at}",
                i + 1
            );
        }
    }
    let wall = run_start.elapsed().as_secs_f64();
    // Tell the server we are done, and wait for it to close (bounded by the read timeout).
    conn.shutdown(Shutdown::Write)
        .context(|| "shut down the sending side".into())?;
    let mut rest = [0u8; 16];
    match conn.read_full(&mut rest) {
        Ok(0) => {}
        Ok(n) => bail!("the server sent {n} unexpected bytes at the end"),
        Err(e) => return Err(e).context(|| "wait for the server to close".into()),
    }

    let Some(s) = summarize(&mut samples) else {
        bail!("no samples");
    };
    if opts.json {
        println!("{}", report_json(target, opts, &s, wall));
    } else {
        println!(
            "{PROG}: {target}, {}-byte messages, {} rounds (+{} warmup) in {wall:.3} s",
            opts.size, opts.iterations, opts.warmup
        );
        println!(
            "round trip (us): min {:.2}  median {:.2}  mean {:.2}  p99 {:.2}  max {:.2}",
            s.min, s.median, s.mean, s.p99, s.max
        );
    }
    Ok(())
}

fn report_json(target: &Target, opts: &ClientOpts, s: &Summary, wall: f64) -> String {
    json::Object::new()
        .str("tool", PROG)
        .str("transport", target.transport())
        .str("address", &target.address())
        .str("socket_type", target.sock_type().name())
        .int("size", opts.size as u64)
        .int("iterations", opts.iterations)
        .int("warmup", opts.warmup)
        .str("unit", "us")
        .num("min_us", s.min)
        .num("median_us", s.median)
        .num("mean_us", s.mean)
        .num("p90_us", s.p90)
        .num("p99_us", s.p99)
        .num("p999_us", s.p999)
        .num("max_us", s.max)
        .num("stddev_us", s.stddev)
        .num("wall_s", wall)
        .finish()
}
