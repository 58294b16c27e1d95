// SPDX-License-Identifier: GPL-2.0

//! `vsock-connrate`: connections per second, one connection after the other; or, with
//! `--flood`, a connect flood against a single-threaded accept loop.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use rvsock_samples::cli::{self, Arg, CommonOpts, Parser, Role, TransportOpts};
use rvsock_samples::error::{describe, run_main};
use rvsock_samples::net::{is_connect_failure, Conn, ConnectMode, ListenOpts, Listener, Target};
use rvsock_samples::server::DEFAULT_ACCEPT_TIMEOUT;
use rvsock_samples::vsock::{clock_ticks_per_sec, process_cpu_time};
use rvsock_samples::{bail, json, Context, Error, Result};

const PROG: &str = "vsock-connrate";
const DEFAULT_PORT: u32 = 1237;
const DEFAULT_DURATION: Duration = Duration::from_secs(5);
/// `--flood`: the bytes each connection carries (the client sends, the server reads).
const DEFAULT_FLOOD_SEND: usize = 4;
/// `--flood` client: the width of the time slots in which refusals are looked for.
const SLOT: Duration = Duration::from_millis(100);
/// `--flood` server: after its window, it accepts (uncounted) until none came for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

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

Connect flood (--flood, on both sides): the client connects, sends --send
bytes and closes, in a loop that never waits for the server, in --threads
threads; it floods --warmup seconds uncounted, then counts --duration seconds:
attempts, connections and the attempts turned away (refused: ECONNREFUSED,
reset: ECONNRESET, as AF_VSOCK answers a full listener), and in how many
100 ms slots of the window some attempt was turned away.  The server waits
--accept-delay seconds before its first accept (default 0; the clients fill the
accept queue meanwhile), accepts uncounted for --warmup seconds, then runs its
single-threaded loop for --duration seconds: accept, read
--send bytes, --work-us of CPU work, close; it reports the accepts per second and how often the accept
queue was found empty (accept_waits: 0 means the loop never caught up with the
clients), then accepts uncounted until no connection came for 1 s.  Both report
their CPU time in the window; the client also the whole system's (/proc/stat).

Options:
  --server             be the server
  --duration SECS      client: run this long (default 5 s unless --count);
                       --flood server: accept and count this long (default 5 s)
  --count N            client: make N attempts; server: exit after N accepts
  --wait-close         client: after connecting, wait for the server to close
                       (so each connection includes the server's accept)
  --blocking-connect   client: AF_VSOCK blocking connect() bounded by the
                       kernel's SO_VM_SOCKETS_CONNECT_TIMEOUT (set to --timeout)
                       instead of non-blocking connect() + poll()
  --backlog N          server: listen() backlog (default 1024)
  --flood              client: connect flood (see above); server: timed accept
                       loop for the flood
  --threads N          --flood client: concurrent connect loops (default 1)
  --warmup SECS        --flood: client: flood, server: accept, this long before
                       counting (default 0)
  --send BYTES         --flood: bytes per connection, sent by the client and read
                       by the server (default 4; 0: none)
  --accept-delay SECS  --flood server: wait this long before the first accept
                       (default 0)
  --work-us N          --flood server: after reading, N us of CPU work per
                       connection (a loop timed before listening; default 0),
                       for a server slower than the flood
  --nap SECS           --flood server: when the accept queue is empty, sleep this
                       long and try again, instead of waiting in poll(2) (whose
                       wake-up then plays no part; e.g. 1ms)
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
  vsock-connrate --server --flood --backlog 128 --warmup 0.5 --duration 3 \\
      --work-us 100 --nap 1ms --json &
  vsock-connrate --flood --threads 2 --warmup 0.5 --duration 3 --json
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
    flood: bool,
    threads: u32,
    warmup: Duration,
    send: usize,
    accept_delay: Duration,
    work_us: u64,
    /// `--nap`: wait for connections by sleeping this long between tries, not in poll(2).
    nap: Option<Duration>,
}

fn run() -> Result<()> {
    let mut p = Parser::from_env()?;
    let mut transport = TransportOpts::default();
    let mut common = CommonOpts::default();
    let mut server = false;
    // An option that only --flood uses was given.
    let mut flood_opt = false;
    let mut o = Opts {
        duration: None,
        count: None,
        wait_close: false,
        blocking: false,
        backlog: 1024,
        json: false,
        accept_timeout: Some(DEFAULT_ACCEPT_TIMEOUT),
        flood: false,
        threads: 1,
        warmup: Duration::ZERO,
        send: DEFAULT_FLOOD_SEND,
        accept_delay: Duration::ZERO,
        work_us: 0,
        nap: None,
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
                "--flood" => o.flood = true,
                "--threads" | "--warmup" | "--send" | "--accept-delay" | "--work-us" | "--nap" => {
                    flood_opt = true;
                    match opt.as_str() {
                        "--threads" => o.threads = p.parse()?,
                        "--warmup" => o.warmup = p.duration()?,
                        "--send" => o.send = p.size()? as usize,
                        "--work-us" => o.work_us = p.parse()?,
                        "--nap" => o.nap = Some(p.duration()?).filter(|d| !d.is_zero()),
                        _ => o.accept_delay = p.duration()?,
                    }
                }
                _ if transport.parse(&opt, &mut p)? || common.parse(&opt, &mut p)? => {}
                _ => return Err(p.unexpected(Arg::Opt(opt))),
            },
            a => return Err(p.unexpected(a)),
        }
    }
    common.start(PROG);
    if flood_opt && !o.flood {
        return Err(Error::usage(
            "--threads, --warmup, --send, --accept-delay, --work-us and --nap go with --flood",
        ));
    }
    if o.flood {
        if o.count.is_some() || o.wait_close {
            return Err(Error::usage(
                "--flood is timed: no --count, no --wait-close",
            ));
        }
        if o.threads == 0 || o.duration.is_some_and(|d| d.is_zero()) {
            return Err(Error::usage("--threads and --duration must be more than 0"));
        }
    }
    if server {
        let target = transport.target(Role::Server, DEFAULT_PORT)?;
        if o.flood {
            return run_flood_server(&target, &common, &o);
        }
        return run_server(&target, &common, &o);
    }
    if o.duration.is_none() && o.count.is_none() {
        o.duration = Some(DEFAULT_DURATION);
    }
    if o.duration.is_some_and(|d| d.is_zero()) || o.count == Some(0) {
        return Err(Error::usage("--duration and --count must be more than 0"));
    }
    let target = transport.target(Role::Client, DEFAULT_PORT)?;
    if o.flood {
        return run_flood_client(&target, &common, &o);
    }
    run_client(&target, &common, &o)
}

/// What one [`accept_once`] gave.
enum Accepted {
    /// A connection, and the peer's name.
    Conn(Conn, String),
    /// None within the timeout (`ETIMEDOUT`).
    Empty,
    /// A transient failure, counted: try again.
    Transient,
}

/// One `accept` within `timeout`.  Transient failures (the peer went away between the
/// handshake and `accept`, descriptors or memory short for a moment) are counted in `errors`
/// (the first one, or all with `verbose`, said on stderr); others are fatal.
fn accept_once(
    listener: &Listener,
    timeout: Option<Duration>,
    errors: &mut u64,
    verbose: bool,
) -> Result<Accepted> {
    match listener.accept(timeout) {
        Ok((conn, peer)) => Ok(Accepted::Conn(conn, peer)),
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(Accepted::Empty),
        Err(e)
            if is_connect_failure(&e)
                || matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
        {
            *errors += 1;
            if *errors == 1 || verbose {
                eprintln!("{PROG}: {}", describe("accept", &e));
            }
            Ok(Accepted::Transient)
        }
        Err(e) => Err(e).context(|| format!("accept on {}", listener.local_name())),
    }
}

fn listen(target: &Target, o: &Opts) -> Result<Listener> {
    let listen = ListenOpts {
        backlog: o.backlog,
        ..ListenOpts::default()
    };
    let listener = Listener::bind(target, listen).context(|| format!("listen on {target}"))?;
    println!("listening on {}", listener.local_name());
    Ok(listener)
}

fn run_server(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    let listener = listen(target, o)?;
    let mut accepted = 0u64;
    let mut errors = 0u64;
    let start = Instant::now();
    loop {
        if o.count.is_some_and(|n| accepted >= n) {
            break;
        }
        match accept_once(&listener, o.accept_timeout, &mut errors, common.verbose)? {
            Accepted::Conn(conn, peer) => {
                accepted += 1;
                if common.verbose {
                    eprintln!("{PROG}: accepted connection from {peer}");
                }
                drop(conn);
            }
            Accepted::Empty => {
                let secs = o.accept_timeout.map_or(0.0, |d| d.as_secs_f64());
                if accepted == 0 {
                    bail!("no connection within {secs} s (see --accept-timeout)");
                }
                eprintln!("{PROG}: no new connection for {secs} s, exiting");
                break;
            }
            Accepted::Transient => {}
        }
    }
    println!(
        "accepted {accepted} connections in {:.3} s, accept errors={errors}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the `--flood` server counts.
#[derive(Default)]
struct ServerCounts {
    accepted: u64,
    /// Times `accept` found the queue empty and had to wait.
    waits: u64,
    short_reads: u64,
    read_errors: u64,
    accept_errors: u64,
}

/// Reads the client's `buf.len()` bytes (bounded by `timeout`), then closes.
fn take_payload(mut conn: Conn, buf: &mut [u8], timeout: Duration, c: &mut ServerCounts) {
    if buf.is_empty() {
        return;
    }
    match conn
        .set_read_timeout(Some(timeout))
        .and_then(|()| conn.read_full(buf))
    {
        Ok(n) if n == buf.len() => {}
        Ok(_) => c.short_reads += 1,
        Err(_) => c.read_errors += 1,
    }
}

/// `n` rounds of xorshift: CPU work the compiler cannot leave out.
fn spin(n: u64) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = std::hint::black_box(x);
    }
}

/// Rounds of [`spin`] per microsecond here, timed over at least 20 ms.
fn spin_rate() -> f64 {
    let mut n = 1u64 << 14;
    loop {
        let t = Instant::now();
        spin(n);
        let e = t.elapsed();
        if e >= Duration::from_millis(20) {
            return n as f64 / (e.as_nanos() as f64 / 1e3);
        }
        n *= 2;
    }
}

fn secs_f(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The `--flood` server's accept loop.
struct FloodLoop<'a> {
    listener: &'a Listener,
    common: &'a CommonOpts,
    nap: Option<Duration>,
    work_rounds: u64,
}

impl FloodLoop<'_> {
    /// Until `end`: accept, read the payload, work, close.  An empty queue counts as a wait,
    /// spent napping (`--nap`) or in poll(2).
    fn serve(&self, end: Instant, c: &mut ServerCounts, buf: &mut [u8]) -> Result<()> {
        let (l, v) = (self.listener, self.common.verbose);
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let conn = match accept_once(l, Some(Duration::ZERO), &mut c.accept_errors, v)? {
                Accepted::Conn(conn, _) => conn,
                Accepted::Transient => continue,
                Accepted::Empty => {
                    c.waits += 1;
                    if let Some(nap) = self.nap {
                        thread::sleep(nap.min(end - now));
                        continue;
                    }
                    match accept_once(l, Some(end - now), &mut c.accept_errors, v)? {
                        Accepted::Conn(conn, _) => conn,
                        Accepted::Empty | Accepted::Transient => continue,
                    }
                }
            };
            c.accepted += 1;
            take_payload(conn, buf, self.common.timeout, c);
            spin(self.work_rounds);
        }
    }
}

/// `--server --flood`: a single-threaded accept loop for a connect flood, timed.
fn run_flood_server(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    // Timed while nothing else runs: before the clients can start.
    let rounds_per_us = if o.work_us > 0 { spin_rate() } else { 0.0 };
    let work_rounds = (o.work_us as f64 * rounds_per_us).round() as u64;
    let listener = listen(target, o)?;
    let duration = o.duration.unwrap_or(DEFAULT_DURATION);
    // The clients start meanwhile and fill the accept queue.
    thread::sleep(o.accept_delay);
    let mut buf = vec![0u8; o.send];
    let mut warm = ServerCounts::default();
    let l = FloodLoop {
        listener: &listener,
        common,
        nap: o.nap,
        work_rounds,
    };
    l.serve(Instant::now() + o.warmup, &mut warm, &mut buf)?;
    let mut c = ServerCounts::default();
    let (user0, sys0) = process_cpu_time().context(|| "getrusage".to_string())?;
    let start = Instant::now();
    l.serve(start + duration, &mut c, &mut buf)?;
    let window = start.elapsed();
    let (user1, sys1) = process_cpu_time().context(|| "getrusage".to_string())?;
    // Uncounted, until the clients are gone: they see the same listener to the end.
    let mut drained = ServerCounts::default();
    loop {
        match accept_once(
            &listener,
            Some(DRAIN_IDLE),
            &mut drained.accept_errors,
            false,
        )? {
            Accepted::Conn(conn, _) => {
                drained.accepted += 1;
                take_payload(conn, &mut buf, common.timeout, &mut drained);
                spin(work_rounds);
            }
            Accepted::Transient => {}
            Accepted::Empty => break,
        }
    }
    let secs = secs_f(window);
    let rate = c.accepted as f64 / secs;
    let (user, sys) = (secs_f(user1 - user0), secs_f(sys1 - sys0));
    let cpu_us = if c.accepted > 0 {
        (user + sys) * 1e6 / c.accepted as f64
    } else {
        f64::NAN
    };
    if o.json {
        let obj = json::Object::new()
            .str("tool", PROG)
            .str("role", "server")
            .str("mode", "flood")
            .str("transport", target.transport())
            .str("address", &listener.local_name())
            .int("backlog", o.backlog.into())
            .num("accept_delay_s", secs_f(o.accept_delay))
            .num("warmup_s", secs_f(o.warmup))
            .int("warmup_accepted", warm.accepted)
            .int("send_bytes", o.send as u64)
            .int("work_us", o.work_us)
            .int("work_rounds", work_rounds)
            .num("nap_s", o.nap.map_or(0.0, secs_f))
            .num("elapsed_s", secs)
            .int("accepted", c.accepted)
            .num("accept_per_s", rate)
            .int("accept_waits", c.waits)
            .int("short_reads", c.short_reads)
            .int("read_errors", c.read_errors)
            .int("accept_errors", c.accept_errors)
            .int("drained", drained.accepted)
            .num("cpu_user_s", user)
            .num("cpu_sys_s", sys)
            .num("cpu_us_per_accept", cpu_us);
        println!("{}", obj.finish());
    } else {
        println!(
            "accepted {} connections in {secs:.3} s = {rate:.1}/s (accept waits={} short reads={} read errors={} accept errors={}); then {} more; CPU user {user:.3} s sys {sys:.3} s",
            c.accepted, c.waits, c.short_reads, c.read_errors, c.accept_errors, drained.accepted
        );
    }
    if c.accepted == 0 {
        bail!("no connection accepted in the {secs:.3} s window");
    }
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
    /// Attempts turned away by the server's side: refused or reset.
    fn turned_away(&self) -> u64 {
        self.refused + self.reset
    }

    fn add(&mut self, o: &Counts) {
        self.attempts += o.attempts;
        self.ok += o.ok;
        self.refused += o.refused;
        self.reset += o.reset;
        self.timedout += o.timedout;
        self.errors += o.errors;
    }

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

/// What one `--flood` connect loop counts.
struct FloodCounts {
    /// Attempts started in the window.
    win: Counts,
    /// Attempts started in the warm-up.
    warm: Counts,
    /// Connections of the window whose send failed.
    send_errors: u64,
    /// Per [`SLOT`] of the window: attempts turned away.
    slots: Vec<u64>,
}

/// Where a `--flood` client connects and when.
struct Flood<'a> {
    target: &'a Target,
    timeout: Duration,
    mode: ConnectMode,
    payload: Vec<u8>,
    win_start: Instant,
    win_end: Instant,
    slots: usize,
    verbose: bool,
    /// Set by a loop that met a fatal error: the others stop too.
    stop: AtomicBool,
    /// Taken by the first loop to start an attempt in the window, and by the first to see it
    /// end: by a thread that is running anyway (a sleeping one may wake late when the CPUs
    /// are busy, and then both samples would be taken at once).
    start_sample: OnceLock<Sample>,
    end_sample: OnceLock<Sample>,
}

/// The process's and the system's CPU times at one instant.
struct Sample {
    at: Instant,
    cpu: Option<(Duration, Duration)>,
    stat: Option<[u64; 8]>,
}

impl Sample {
    fn take() -> Sample {
        Sample {
            at: Instant::now(),
            cpu: process_cpu_time().ok(),
            stat: proc_stat_cpu(),
        }
    }
}

/// One connect loop of the flood: connect, send, close, until the window's end.
fn flood_loop(f: &Flood<'_>) -> Result<FloodCounts> {
    let mut r = FloodCounts {
        win: Counts::default(),
        warm: Counts::default(),
        send_errors: 0,
        slots: vec![0; f.slots],
    };
    let mut said: Vec<String> = Vec::new();
    loop {
        let t = Instant::now();
        if t >= f.win_end {
            f.end_sample.get_or_init(Sample::take);
            break;
        }
        if f.stop.load(Ordering::Relaxed) {
            break;
        }
        let counted = t >= f.win_start;
        if counted {
            f.start_sample.get_or_init(Sample::take);
        }
        let c = if counted { &mut r.win } else { &mut r.warm };
        c.attempts += 1;
        match Conn::open(f.target, f.timeout, f.mode) {
            Ok(mut conn) => {
                c.ok += 1;
                if !f.payload.is_empty() && conn.write_all(&f.payload).is_err() && counted {
                    r.send_errors += 1;
                }
            }
            Err(e) => {
                let before = c.turned_away();
                if !c.failure(&e) {
                    f.stop.store(true, Ordering::Relaxed);
                    return Err(e).context(|| format!("connect to {}", f.target));
                }
                let turned_away = c.turned_away() > before;
                if counted && turned_away {
                    let i = (t - f.win_start).as_nanos() / SLOT.as_nanos();
                    r.slots[(i as usize).min(f.slots - 1)] += 1;
                }
                // Turn-aways are what a flood expects: said only with -v (and formatted only when
                // said: the loop must cost the same whatever the errors).
                if f.verbose || (!turned_away && said.len() < 3) {
                    let msg = describe("connect", &e);
                    if f.verbose || !said.contains(&msg) {
                        eprintln!("{PROG}: {msg}");
                        said.push(msg);
                    }
                }
            }
        }
    }
    Ok(r)
}

/// The `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq, softirq, steal
/// (clock ticks, all CPUs together); `None` where there is no such file.
fn proc_stat_cpu() -> Option<[u64; 8]> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// `--flood` client: `--threads` connect loops, `--warmup` then a counted `--duration`.
fn run_flood_client(target: &Target, common: &CommonOpts, o: &Opts) -> Result<()> {
    let duration = o.duration.unwrap_or(DEFAULT_DURATION);
    let start = Instant::now();
    let f = Flood {
        target,
        timeout: common.timeout,
        mode: if o.blocking {
            ConnectMode::Blocking
        } else {
            ConnectMode::Poll
        },
        payload: vec![b'f'; o.send],
        win_start: start + o.warmup,
        win_end: start + o.warmup + duration,
        slots: (duration.as_nanos().div_ceil(SLOT.as_nanos()) as usize).max(1),
        verbose: common.verbose,
        stop: AtomicBool::new(false),
        start_sample: OnceLock::new(),
        end_sample: OnceLock::new(),
    };
    let results = thread::scope(|s| {
        let mut handles = Vec::new();
        let mut spawn_error = None;
        for i in 0..o.threads {
            match thread::Builder::new()
                .name(format!("flood-{i}"))
                .spawn_scoped(s, || flood_loop(&f))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    f.stop.store(true, Ordering::Relaxed);
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        let mut results: Vec<Result<FloodCounts>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::new("a flood thread panicked")))
            })
            .collect();
        if let Some(e) = spawn_error {
            results.push(Err(e).context(|| "start a flood thread".to_string()));
        }
        results
    });
    let mut win = Counts::default();
    let mut warm = Counts::default();
    let mut send_errors = 0;
    let mut slots = vec![0u64; f.slots];
    for r in results {
        let r = r?;
        win.add(&r.win);
        warm.add(&r.warm);
        send_errors += r.send_errors;
        for (a, b) in slots.iter_mut().zip(&r.slots) {
            *a += b;
        }
    }
    let secs = secs_f(duration);
    let busy_slots = slots.iter().filter(|&&n| n > 0).count() as u64;
    let (s0, s1) = (f.start_sample.get(), f.end_sample.get());
    let rate = |n: u64| n as f64 / secs;
    if o.json {
        let mut obj = json::Object::new()
            .str("tool", PROG)
            .str("role", "client")
            .str("mode", "flood")
            .str("transport", target.transport())
            .str("address", &target.address())
            .str("socket_type", target.sock_type().name())
            .int("threads", o.threads.into())
            .int("send_bytes", o.send as u64)
            .bool("blocking_connect", o.blocking)
            .num("warmup_s", secs_f(o.warmup))
            .num("elapsed_s", secs)
            .int("attempts", win.attempts)
            .int("connections", win.ok)
            .int("refused", win.refused)
            .int("reset", win.reset)
            .int("timedout", win.timedout)
            .int("errors", win.errors)
            .int("send_errors", send_errors)
            .int("turned_away", win.turned_away())
            .num("attempts_per_s", rate(win.attempts))
            .num("conn_per_s", rate(win.ok))
            .num("turned_away_per_s", rate(win.turned_away()))
            .int("slots", slots.len() as u64)
            .int("slots_turning_away", busy_slots)
            .int("warmup_attempts", warm.attempts)
            .int("warmup_connections", warm.ok)
            .int("warmup_turned_away", warm.turned_away());
        if let (Some(s0), Some(s1)) = (s0, s1) {
            obj = obj.num("cpu_window_s", secs_f(s1.at - s0.at));
            if let (Some((u0, y0)), Some((u1, y1))) = (s0.cpu, s1.cpu) {
                obj = obj
                    .num("cpu_user_s", secs_f(u1.saturating_sub(u0)))
                    .num("cpu_sys_s", secs_f(y1.saturating_sub(y0)));
            }
        }
        if let (Some(a), Some(b)) = (s0.and_then(|x| x.stat), s1.and_then(|x| x.stat)) {
            let hz = clock_ticks_per_sec() as f64;
            let d = |i: usize| b[i].saturating_sub(a[i]) as f64 / hz;
            obj = obj
                .num("sys_user_s", d(0) + d(1))
                .num("sys_system_s", d(2))
                .num("sys_irq_s", d(5) + d(6))
                .num("sys_idle_s", d(3) + d(4))
                .num("sys_busy_s", d(0) + d(1) + d(2) + d(5) + d(6) + d(7));
        }
        println!("{}", obj.finish());
    } else {
        println!(
            "{PROG}: flood {target}, {} thread(s), {secs:.3} s after {:.3} s: {} attempts ({:.1}/s), {} connections ({:.1}/s), {} turned away ({:.1}/s: refused={} reset={}), timedout={} errors={} send errors={}; turned away in {busy_slots} of {} slots of {} ms",
            o.threads,
            secs_f(o.warmup),
            win.attempts,
            rate(win.attempts),
            win.ok,
            rate(win.ok),
            win.turned_away(),
            rate(win.turned_away()),
            win.refused,
            win.reset,
            win.timedout,
            win.errors,
            send_errors,
            slots.len(),
            SLOT.as_millis()
        );
    }
    if win.ok + win.turned_away() == 0 {
        bail!(
            "no attempt connected or was turned away in {} attempts",
            win.attempts
        );
    }
    Ok(())
}
