// SPDX-License-Identifier: GPL-2.0

//! `mesh`: S senders by R receivers, every byte checked.
//!
//! Each sender thread connects to every receiver (S x R connections) and, until the run's time
//! is up, sends pseudo-random data in writes of random sizes (1 byte to `--max-size`,
//! log-uniform: many tiny writes, most bytes in large ones; and now and then a burst of only
//! tiny writes), most of them non-blocking and some large ones blocking.  On `SOCK_SEQPACKET`
//! every write is one message.  A connection starts
//! with a 16-byte hello naming its sender and generation, from which both ends derive the
//! connection's [`Keystream`] (stream) or [`Messages`] (seqpacket); the receiver checks every
//! byte as it arrives (and, on seqpacket, every message's boundary and size), and both ends
//! keep a [`Checksum`], compared at the end.
//!
//! Each receiver has two helper threads working on its connections:
//! - the staller stalls the receiving socket's owner: it sends a few bytes *back to the
//!   sender* from a userfaultfd-registered page ([`Staller::stalled_send`]), so the kernel
//!   holds the receiving socket's lock for 10 ms to 2 s while the sender keeps sending to it.
//!   The sender drains and checks that reverse stream too;
//! - the tuner changes the socket's `SO_VM_SOCKETS_BUFFER_SIZE` up and down within
//!   [`--buf-min`, `--buf-max`].
//!
//! Buffer sizes and credit: a virtio-vsock receiver cannot take back credit it granted, so a
//! shrink while the peer still has more than the new size outstanding makes the upstream stack
//! reset the connection with `ENOBUFS` (`virtio_transport_recv_connected`).  So the tuner
//! shrinks as a careful application would: it pauses the sender's application-level
//! [`Window`] and waits until the receiving thread has read everything sent (it shares its
//! count), shrinks, then lets the sender have at most the new size outstanding until the
//! credit update surely reached it ([`RELAX_AFTER`]).  Growing needs no care.
//! `--unsafe-shrink` shrinks without any of this: upstream then resets connections, by
//! design.
//!
//! At the end each sender shuts its connections down for writing and reads the reverse data
//! to its end; each receiver reads to the end and closes.  Then every connection's figures are
//! compared: bytes, messages and checksums sent against received, both ways.
//!
//! With `--tolerate-reset` (while the transport is unloaded and loaded again) a reset or
//! refused connection is not a violation: the sender connects again (a new generation), and
//! a connection need only have delivered a correct prefix of what was sent.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rvsock_samples::net::Target;
use rvsock_samples::vsock::SockType;
use rvsock_samples::{Context, Error, Result};

use crate::pattern::{Checksum, Keystream, Messages};
use crate::rng::{derive, Rng};
use crate::sock::{is_again, is_reset, poll, pollfd, BufferRange, Listener, Sock};
use crate::summary::Summary;
use crate::uffd::{page_size, Hold, Staller};
use crate::Env;

/// First bytes of every connection: magic, sender, receiver, generation (u32 LE each).
const HELLO_LEN: usize = 16;
const HELLO_MAGIC: u32 = 0x5453_5652; // "RVST"
/// Blocking sends are used for this share (percent) of stream writes of 32 KiB or more.
const BLOCKING_PERCENT: u64 = 25;
/// Largest message of the reverse direction (the stalled sends).
const REV_MAX: usize = 8192;
/// Violations kept per thread (the rest are counted).
const KEEP_VIOLATIONS: usize = 20;
/// Chance (percent) that a stream write starts a burst of tiny writes, and its length.
const TINY_BURST_PERCENT: u64 = 1;
const TINY_BURST: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// A poll round's timeout: how often threads look at the clock.
const TICK: Duration = Duration::from_millis(50);

/// The scenario's parameters.
#[derive(Clone, Debug)]
pub struct MeshOpts {
    /// Sender threads.
    pub senders: usize,
    /// Receiver threads (one listener each, on consecutive ports).
    pub receivers: usize,
    /// How long the senders send.
    pub duration: Duration,
    /// Largest write (stream) or message (seqpacket).
    pub max_size: usize,
    /// Stall receiving sockets' owners with userfaultfd.
    pub stall: bool,
    /// Shortest and longest stall.
    pub stall_min: Duration,
    /// See `stall_min`.
    pub stall_max: Duration,
    /// Longest pause between two stalls of one receiver (the shortest is a tenth of it).
    pub stall_gap: Duration,
    /// Change receive buffer sizes (AF_VSOCK only).
    pub resize: bool,
    /// Smallest receive buffer size.
    pub buf_min: u64,
    /// Largest receive buffer size.
    pub buf_max: u64,
    /// Resets and refused connects are expected (transport reloads): reconnect.
    pub tolerate_reset: bool,
    /// Shrink buffers without draining the connection first (see the module documentation).
    pub unsafe_shrink: bool,
    /// How long the end (shutdowns, draining) may take after the sending time is up.
    pub finish_timeout: Duration,
}

/// Identifies a connection: sender, receiver, generation (reconnects of the same pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    sender: u32,
    receiver: u32,
    gen: u32,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}->r{} gen {}", self.sender, self.receiver, self.gen)
    }
}

/// What one direction of a connection carries.
#[derive(Clone, Copy, Debug)]
enum Flow {
    Stream(Keystream),
    Seq(Messages),
}

impl Flow {
    fn new(ty: SockType, seed: u64, max: usize) -> Flow {
        match ty {
            SockType::Stream => Flow::Stream(Keystream::new(seed)),
            SockType::SeqPacket => Flow::Seq(Messages::new(seed, max)),
        }
    }
}

/// The sending end of one direction: what was sent so far.
#[derive(Debug)]
struct Tx {
    flow: Flow,
    /// Stream: bytes sent; seqpacket: messages sent.
    pos: u64,
    sum: Checksum,
    /// The write in progress (stream: its unsent rest starts at `done`).
    buf: Vec<u8>,
    done: usize,
}

impl Tx {
    fn new(flow: Flow) -> Tx {
        Tx {
            flow,
            pos: 0,
            sum: Checksum::default(),
            buf: Vec::new(),
            done: 0,
        }
    }

    /// The bytes to send next: the rest of the write in progress, or a new write of a size
    /// from `size` (stream), or the next message (seqpacket).
    fn next(&mut self, size: impl FnOnce() -> usize) -> &[u8] {
        if self.done >= self.buf.len() {
            match self.flow {
                Flow::Stream(k) => {
                    self.buf.resize(size(), 0);
                    k.fill(self.pos, &mut self.buf);
                }
                Flow::Seq(m) => m.fill(self.pos, &mut self.buf),
            }
            self.done = 0;
        }
        &self.buf[self.done..]
    }

    /// Records that `n` bytes of [`Tx::next`] went out; false if that broke a message.
    fn sent(&mut self, n: usize) -> bool {
        let start = self.done;
        self.sum.update(&self.buf[start..start + n]);
        self.done += n;
        match self.flow {
            Flow::Stream(_) => {
                self.pos += n as u64;
                true
            }
            Flow::Seq(_) => {
                self.pos += 1;
                self.done = self.buf.len();
                start == 0 && n == self.buf.len()
            }
        }
    }

    fn messages(&self) -> u64 {
        match self.flow {
            Flow::Stream(_) => 0,
            Flow::Seq(_) => self.pos,
        }
    }
}

/// The receiving end of one direction: checks what arrives.
#[derive(Debug)]
struct Rx {
    flow: Flow,
    /// Stream: bytes received; seqpacket: messages received.
    pos: u64,
    bytes: u64,
    sum: Checksum,
    /// The first violation; checking stops there (the data is out of step).
    bad: Option<String>,
    /// Stream, after a wrong byte: its offset and the bytes from it on, collected until there
    /// are enough to tell where in the keystream they come from.
    diag: Option<(u64, Vec<u8>)>,
}

impl Rx {
    fn new(flow: Flow) -> Rx {
        Rx {
            flow,
            pos: 0,
            bytes: 0,
            sum: Checksum::default(),
            bad: None,
            diag: None,
        }
    }

    /// Checks stream bytes.
    fn stream(&mut self, key: Key, dir: &str, data: &[u8]) {
        self.sum.update(data);
        self.bytes += data.len() as u64;
        let Flow::Stream(k) = self.flow else {
            return;
        };
        let at = self.pos;
        self.pos += data.len() as u64;
        if self.bad.is_none() {
            let Some(i) = k.mismatch(at, data) else {
                return;
            };
            let wrong = at + i as u64;
            self.bad = Some(format!(
                "{key} {dir}: byte {wrong} differs from what was sent"
            ));
            self.diag = Some((wrong, data[i..].to_vec()));
        } else if let Some((_, d)) = self.diag.as_mut() {
            d.extend_from_slice(&data[..data.len().min(64)]);
        }
        if !self.diag.as_ref().is_some_and(|(_, d)| d.len() >= 16) {
            return;
        }
        let Some((wrong, d)) = self.diag.take() else {
            return;
        };
        let what = match k.locate(wrong, &d, 4 << 20, 64 << 20) {
            Some(n) if n > 0 => format!("{n} bytes lost before it"),
            Some(n) => format!("{} bytes received again", -n),
            None => "found nowhere from 4 MiB before to 64 MiB after: corrupt bytes".into(),
        };
        if let Some(b) = self.bad.as_mut() {
            b.push_str(&format!(" ({what})"));
        }
    }

    /// Checks one seqpacket message.
    fn message(&mut self, key: Key, dir: &str, data: &[u8], truncated: bool) {
        self.sum.update(data);
        self.bytes += data.len() as u64;
        let Flow::Seq(m) = self.flow else {
            return;
        };
        let n = self.pos;
        self.pos += 1;
        if self.bad.is_some() {
            return;
        }
        if truncated {
            self.bad = Some(format!(
                "{key} {dir}: message {n} truncated (larger than {} bytes)",
                data.len()
            ));
        } else if !m.is(n, data) {
            let what = match m.locate(n, data, 64, 4096) {
                Some(d) if d > 0 => format!("it is message {}: {d} messages lost", n + d as u64),
                Some(d) => format!("it is message {}, received again", n - (-d) as u64),
                None if data.len() != m.len(n) => {
                    "wrong size, and no nearby message matches".into()
                }
                None => "right size, wrong content".into(),
            };
            self.bad = Some(format!(
                "{key} {dir}: message {n} is {} bytes, expected {} ({what})",
                data.len(),
                m.len(n)
            ));
        }
    }
}

/// The application-level flow control of one connection, shared by its sender, receiver and
/// tuner threads (see the module documentation).
#[derive(Debug)]
struct Window {
    /// Bytes the sender sent, or is sending (reserved before each send, corrected after).
    reserved: AtomicU64,
    /// Bytes the receiving thread has read.
    consumed: AtomicU64,
    /// Most bytes the sender may have outstanding: `u64::MAX` (only the kernel's credit
    /// limits it), 0 while a shrink waits for the connection to drain, the new buffer size for
    /// a while after a shrink.
    limit: AtomicU64,
}

impl Window {
    fn new(limit: u64) -> Window {
        Window {
            reserved: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
        }
    }

    fn outstanding(&self) -> u64 {
        let r = self.reserved.load(Ordering::SeqCst);
        r.saturating_sub(self.consumed.load(Ordering::SeqCst))
    }

    /// How many more bytes may go out now.
    fn room(&self) -> u64 {
        self.limit
            .load(Ordering::SeqCst)
            .saturating_sub(self.outstanding())
    }

    /// Reserves `min..=want` bytes; 0 if there is no room for `min`.
    fn reserve(&self, want: u64, min: u64) -> u64 {
        let n = want.min(self.room());
        if n == 0 || n < min {
            return 0;
        }
        self.reserved.fetch_add(n, Ordering::SeqCst);
        // A shrink stores the limit, then reads `reserved`; we store `reserved`, then read the
        // limit: one of the two sees the other's store (all SeqCst).
        if self.outstanding() > self.limit.load(Ordering::SeqCst) {
            self.reserved.fetch_sub(n, Ordering::SeqCst);
            return 0;
        }
        n
    }

    /// `sent` of the `reserved` bytes went out.
    fn settle(&self, reserved: u64, sent: u64) {
        self.reserved
            .fetch_sub(reserved.saturating_sub(sent), Ordering::SeqCst);
    }
}

/// One connection as its receiver, staller and tuner share it.
struct Live {
    key: Key,
    sock: Arc<Sock>,
    /// The reverse direction (stalled sends), written by the staller only.
    rev: Arc<Mutex<Tx>>,
    window: Arc<Window>,
    /// The receive buffer size in force (the tuner's).
    size: AtomicU64,
    /// When the window's limit after a shrink may go (the tuner's).
    relax_at: Mutex<Option<Instant>>,
}

/// Everything the threads share.
struct Ctx<'a> {
    env: &'a Env,
    opts: &'a MeshOpts,
    ty: SockType,
    targets: Vec<Target>,
    deadline: Instant,
    hard_deadline: Instant,
    senders_left: AtomicUsize,
    /// Per receiver: its connections with a complete hello.
    live: Vec<Mutex<Vec<Arc<Live>>>>,
    /// The reverse direction of every connection ever made live, for the figures at the end
    /// (not the sockets: a closed connection's socket must go).
    all: Mutex<Vec<(Key, Arc<Mutex<Tx>>)>>,
    staller: Option<Staller>,
    /// Every connection's window, registered by its sender before the hello.
    windows: Mutex<HashMap<Key, Arc<Window>>>,
    stats: Stats,
}

/// Counters of the helper threads.
#[derive(Default)]
struct Stats {
    stall_attempts: AtomicU64,
    stalls: AtomicU64,
    stall_us_total: AtomicU64,
    stall_us_max: AtomicU64,
    resizes: AtomicU64,
    shrinks: AtomicU64,
    shrinks_skipped: AtomicU64,
    violations: Mutex<Vec<String>>,
    dropped_violations: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx<'_> {
    fn violation(&self, msg: String) {
        let mut v = lock(&self.stats.violations);
        if v.len() < KEEP_VIOLATIONS * 4 {
            if self.env.verbose {
                eprintln!("mesh: violation: {msg}");
            }
            v.push(msg);
        } else {
            self.stats
                .dropped_violations
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn seeds(&self, key: Key) -> (u64, u64) {
        let base = derive(
            self.env.seed,
            &[key.sender.into(), key.receiver.into(), key.gen.into()],
        );
        (derive(base, &[1]), derive(base, &[2]))
    }
}

/// A sender's end of a connection.
struct SConn {
    key: Key,
    sock: Sock,
    window: Arc<Window>,
    tx: Tx,
    rev: Rx,
    /// Shut down for writing (the sending time is up).
    finished: bool,
    /// Stream: until when only tiny writes go out (a burst of small packets).
    tiny_until: Option<Instant>,
}

/// Per-connection figures of one end.
#[derive(Debug, Default, Clone)]
struct End {
    bytes: u64,
    messages: u64,
    sum: u64,
    reset: bool,
}

/// What a sender thread reports.
#[derive(Default)]
struct SenderOut {
    /// Forward sent, reverse received.
    conns: Vec<(Key, End, End)>,
    connects: u64,
    connect_failures: u64,
    resets: u64,
    blocking_sends: u64,
}

/// What a receiver thread reports: forward received.
#[derive(Default)]
struct ReceiverOut {
    conns: Vec<(Key, End)>,
    resets: u64,
}

/// Runs the scenario.
pub fn run(env: &Env, ty: SockType, opts: &MeshOpts) -> Result<Summary> {
    if opts.senders == 0 || opts.receivers == 0 {
        return Err(Error::usage("--senders and --receivers must be at least 1"));
    }
    if opts.stall_min > opts.stall_max || opts.buf_min > opts.buf_max {
        return Err(Error::usage(
            "--stall-min/--buf-min must not exceed --stall-max/--buf-max",
        ));
    }
    let vsock = matches!(env.server_at(0), Target::Vsock(..));
    let staller = if opts.stall {
        Some(Staller::new().context(|| {
            "userfaultfd for the stalls (needs root, or vm.unprivileged_userfaultfd=1, and CONFIG_USERFAULTFD; or use --no-stall)".into()
        })?)
    } else {
        None
    };
    let bufs = vsock.then_some(BufferRange {
        min: opts.buf_min,
        size: opts.buf_max.min(opts.buf_min.max(256 * 1024)),
        max: opts.buf_max,
    });
    let mut listeners = Vec::with_capacity(opts.receivers);
    let mut targets = Vec::with_capacity(opts.receivers);
    for r in 0..opts.receivers {
        let t = env.server_at(r as u32);
        let l = Listener::bind(&t, 64, bufs).context(|| format!("listen on {t}"))?;
        targets.push(
            l.connect_target(env.cid)
                .context(|| "read the listener's address".into())?,
        );
        listeners.push(l);
    }
    let start = Instant::now();
    let ctx = Ctx {
        env,
        opts,
        ty,
        targets,
        deadline: start + opts.duration,
        hard_deadline: start + opts.duration + opts.finish_timeout,
        senders_left: AtomicUsize::new(opts.senders),
        live: (0..opts.receivers)
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
        all: Mutex::new(Vec::new()),
        staller,
        windows: Mutex::new(HashMap::new()),
        stats: Stats::default(),
    };
    if env.verbose {
        eprintln!(
            "mesh: {} senders x {} receivers, {}, {} s, seed {}",
            opts.senders,
            opts.receivers,
            ty.name(),
            opts.duration.as_secs_f64(),
            env.seed
        );
    }

    let (senders, receivers) = std::thread::scope(|sc| {
        let ctx = &ctx;
        let recv: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(r, l)| sc.spawn(move || receiver(ctx, r as u32, l)))
            .collect();
        let mut helpers = Vec::new();
        for r in 0..opts.receivers {
            if ctx.staller.is_some() {
                helpers.push(sc.spawn(move || stall_loop(ctx, r)));
            }
            if opts.resize && vsock {
                helpers.push(sc.spawn(move || tune_loop(ctx, r)));
            }
        }
        let send: Vec<_> = (0..opts.senders)
            .map(|s| {
                sc.spawn(move || {
                    let out = sender(ctx, s as u32);
                    ctx.senders_left.fetch_sub(1, Ordering::AcqRel);
                    out
                })
            })
            .collect();
        let senders: Vec<_> = send.into_iter().map(|h| h.join()).collect();
        let receivers: Vec<_> = recv.into_iter().map(|h| h.join()).collect();
        for h in helpers {
            let _ = h.join();
        }
        (senders, receivers)
    });
    let elapsed = start.elapsed();
    let mut sum = Summary::new("mesh");
    let mut senders_out = Vec::new();
    for s in senders {
        match s {
            Ok(o) => senders_out.push(o),
            Err(_) => sum.violation("a sender thread panicked".to_string()),
        }
    }
    let mut receivers_out = Vec::new();
    for r in receivers {
        match r {
            Ok(o) => receivers_out.push(o),
            Err(_) => sum.violation("a receiver thread panicked".to_string()),
        }
    }
    if let Some(st) = &ctx.staller {
        for e in st.errors() {
            sum.violation(format!("userfaultfd handler: {e}"));
        }
    }
    // What the threads saw first (the cause, such as an error from recv), then the
    // end-to-end comparison (its effect on the figures).
    let mut compared = Summary::new("mesh");
    compare(&ctx, &senders_out, &receivers_out, &mut compared);
    let seen = lock(&ctx.stats.violations).clone();
    sum.violations(seen);
    let dropped = ctx.stats.dropped_violations.load(Ordering::Relaxed);
    if dropped > 0 {
        sum.violation(format!("... and {dropped} more violations"));
    }
    sum.violations(compared.violation_list().iter().cloned());
    let stats = &ctx.stats;
    let fw_bytes: u64 = receivers_out
        .iter()
        .flat_map(|r| &r.conns)
        .map(|(_, e)| e.bytes)
        .sum();
    let fw_msgs: u64 = receivers_out
        .iter()
        .flat_map(|r| &r.conns)
        .map(|(_, e)| e.messages)
        .sum();
    let sent: u64 = senders_out
        .iter()
        .flat_map(|s| &s.conns)
        .map(|(_, e, _)| e.bytes)
        .sum();
    let rev: u64 = senders_out
        .iter()
        .flat_map(|s| &s.conns)
        .map(|(_, _, r)| r.bytes)
        .sum();
    let conns: u64 = senders_out.iter().map(|s| s.connects).sum();
    let resets: u64 = senders_out.iter().map(|s| s.resets).sum::<u64>()
        + receivers_out.iter().map(|r| r.resets).sum::<u64>();
    // The main figures first: the check's message in the guest suite shows the line's start.
    let st = |a: &AtomicU64| a.load(Ordering::Relaxed);
    sum.str("sock", ty.name())
        .int("bytes", fw_bytes)
        .int("messages", fw_msgs)
        .int("rev_bytes", rev)
        .int("stalls", st(&stats.stalls))
        .int("stall_ms_max", st(&stats.stall_us_max) / 1000)
        .int("resizes", st(&stats.resizes))
        .int("shrinks", st(&stats.shrinks))
        .int("connections", conns)
        .int("resets", resets)
        .num("seconds", elapsed.as_secs_f64())
        .int("senders", opts.senders as u64)
        .int("receivers", opts.receivers as u64)
        .int("bytes_sent", sent)
        .int("stall_attempts", st(&stats.stall_attempts))
        .num("stall_s_total", st(&stats.stall_us_total) as f64 / 1e6)
        .int("shrinks_skipped", st(&stats.shrinks_skipped))
        .int(
            "blocking_sends",
            senders_out.iter().map(|s| s.blocking_sends).sum(),
        )
        .int(
            "connect_failures",
            senders_out.iter().map(|s| s.connect_failures).sum(),
        )
        .int("seed", env.seed);
    Ok(sum)
}

/// Compares both ends of every connection.
fn compare(ctx: &Ctx<'_>, senders: &[SenderOut], receivers: &[ReceiverOut], sum: &mut Summary) {
    let tolerate = ctx.opts.tolerate_reset;
    let recv: HashMap<Key, &End> = receivers
        .iter()
        .flat_map(|r| r.conns.iter().map(|(k, e)| (*k, e)))
        .collect();
    let rev_sent: HashMap<Key, End> = lock(&ctx.all)
        .iter()
        .map(|(key, rev)| {
            let t = lock(rev);
            (
                *key,
                End {
                    bytes: t.sum.bytes(),
                    messages: t.messages(),
                    sum: t.sum.value(),
                    reset: false,
                },
            )
        })
        .collect();
    let mut problems = Vec::new();
    for (key, fwd, rev) in senders.iter().flat_map(|s| &s.conns) {
        let reset = fwd.reset || rev.reset;
        match recv.get(key) {
            None if fwd.bytes == 0 || tolerate => {}
            None => problems.push(format!(
                "{key}: the receiver has no record of this connection ({} bytes sent)",
                fwd.bytes
            )),
            Some(r) => {
                if tolerate && (reset || r.reset) {
                    if r.bytes > fwd.bytes {
                        problems.push(format!(
                            "{key}: received {} bytes, more than the {} sent",
                            r.bytes, fwd.bytes
                        ));
                    }
                } else if r.bytes != fwd.bytes || r.messages != fwd.messages || r.sum != fwd.sum {
                    problems.push(format!(
                        "{key}: sent {} bytes / {} messages (checksum {:016x}), received {} / {} ({:016x}): {}",
                        fwd.bytes,
                        fwd.messages,
                        fwd.sum,
                        r.bytes,
                        r.messages,
                        r.sum,
                        diff_words(fwd.bytes, r.bytes)
                    ));
                }
            }
        }
        let rs = rev_sent.get(key).cloned().unwrap_or_default();
        if tolerate && reset {
            if rev.bytes > rs.bytes {
                problems.push(format!(
                    "{key} reverse: received {} bytes, more than the {} sent",
                    rev.bytes, rs.bytes
                ));
            }
        } else if rs.bytes != rev.bytes || rs.messages != rev.messages || rs.sum != rev.sum {
            problems.push(format!(
                "{key} reverse (stalled sends): sent {} bytes / {} messages ({:016x}), received {} / {} ({:016x}): {}",
                rs.bytes,
                rs.messages,
                rs.sum,
                rev.bytes,
                rev.messages,
                rev.sum,
                diff_words(rs.bytes, rev.bytes)
            ));
        }
    }
    let sent_keys: std::collections::HashSet<Key> = senders
        .iter()
        .flat_map(|s| s.conns.iter().map(|c| c.0))
        .collect();
    for key in recv.keys() {
        if !sent_keys.contains(key) {
            problems.push(format!("{key}: received, but no sender reported it"));
        }
    }
    problems.sort();
    sum.violations(problems);
}

fn diff_words(sent: u64, got: u64) -> String {
    match got.cmp(&sent) {
        std::cmp::Ordering::Less => format!("{} bytes missing", sent - got),
        std::cmp::Ordering::Greater => format!("{} bytes too many", got - sent),
        std::cmp::Ordering::Equal => "same length, different data".into(),
    }
}

fn hello(key: Key) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    for (i, v) in [HELLO_MAGIC, key.sender, key.receiver, key.gen]
        .into_iter()
        .enumerate()
    {
        h[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    h
}

fn parse_hello(h: &[u8]) -> Option<Key> {
    let w = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            h.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    if h.len() != HELLO_LEN || w(0)? != HELLO_MAGIC {
        return None;
    }
    Some(Key {
        sender: w(1)?,
        receiver: w(2)?,
        gen: w(3)?,
    })
}

/// Connects, sends the hello; the socket is left blocking with both timeouts set.
fn open(ctx: &Ctx<'_>, key: Key) -> io::Result<SConn> {
    let sock = Sock::connect(&ctx.targets[key.receiver as usize], ctx.env.timeout)?;
    sock.set_timeouts(Some(ctx.env.timeout))?;
    let window = Arc::new(Window::new(u64::MAX));
    lock(&ctx.windows).insert(key, window.clone());
    sock.send_all(&hello(key))?;
    let (fwd, rev) = ctx.seeds(key);
    Ok(SConn {
        key,
        sock,
        window,
        tx: Tx::new(Flow::new(ctx.ty, fwd, ctx.opts.max_size)),
        rev: Rx::new(Flow::new(ctx.ty, rev, REV_MAX)),
        finished: false,
        tiny_until: None,
    })
}

/// A sender thread.
fn sender(ctx: &Ctx<'_>, s: u32) -> SenderOut {
    let mut out = SenderOut::default();
    let mut rng = Rng::new(derive(ctx.env.seed, &[u64::from(s), 100]));
    let n = ctx.targets.len();
    let mut conns: Vec<Option<SConn>> = (0..n).map(|_| None).collect();
    let mut gens = vec![0u32; n];
    // A pair given up on (a violation in strict mode): no new connection.
    let mut dead = vec![false; n];
    let mut retry_at = vec![Instant::now(); n];
    let mut rbuf = vec![0u8; REV_MAX + 1];
    let mut finishing = false;
    loop {
        let now = Instant::now();
        if !finishing && now >= ctx.deadline {
            finishing = true;
            for c in conns.iter_mut().flatten() {
                finish(ctx, c, &mut out);
            }
        }
        if finishing && conns.iter().all(Option::is_none) {
            return out;
        }
        if now >= ctx.hard_deadline {
            let open: Vec<String> = conns.iter().flatten().map(|c| c.key.to_string()).collect();
            ctx.violation(format!(
                "sender {s}: connections not at their end {} s after the sending time: {}",
                ctx.opts.finish_timeout.as_secs_f64(),
                open.join(", ")
            ));
            for c in conns.iter_mut().flatten() {
                out.conns.push(ends(ctx, c, true));
            }
            return out;
        }
        if !finishing {
            for r in 0..n {
                if conns[r].is_some() || dead[r] || now < retry_at[r] {
                    continue;
                }
                let key = Key {
                    sender: s,
                    receiver: r as u32,
                    gen: gens[r],
                };
                gens[r] += 1;
                match open(ctx, key) {
                    Ok(c) => {
                        out.connects += 1;
                        conns[r] = Some(c);
                    }
                    Err(e)
                        if ctx.opts.tolerate_reset
                            && (is_reset(&e) || e.raw_os_error() == Some(libc::ETIMEDOUT)) =>
                    {
                        out.connect_failures += 1;
                        retry_at[r] = now + Duration::from_millis(100);
                    }
                    Err(e) => {
                        ctx.violation(format!("{key}: connect: {e}"));
                        out.connect_failures += 1;
                        dead[r] = true;
                    }
                }
            }
        }
        let idx: Vec<usize> = (0..n).filter(|&r| conns[r].is_some()).collect();
        let mut fds: Vec<libc::pollfd> = idx
            .iter()
            .filter_map(|&r| conns[r].as_ref())
            .map(|c| {
                let ev = if c.finished || c.window.room() == 0 {
                    libc::POLLIN
                } else {
                    libc::POLLIN | libc::POLLOUT
                };
                pollfd(std::os::fd::AsFd::as_fd(&c.sock), ev)
            })
            .collect();
        if fds.is_empty() {
            std::thread::sleep(TICK.min(Duration::from_millis(20)));
            continue;
        }
        // A connection held back by its window (not the kernel) is looked at again soon.
        let held = conns
            .iter()
            .flatten()
            .any(|c| !c.finished && c.window.room() == 0);
        let tick = if held { Duration::from_millis(5) } else { TICK };
        if let Err(e) = poll(&mut fds, tick) {
            ctx.violation(format!("sender {s}: poll: {e}"));
            std::thread::sleep(TICK);
            continue;
        }
        for (pfd, &r) in fds.iter().zip(&idx) {
            if pfd.revents == 0 {
                continue;
            }
            let Some(c) = conns[r].as_mut() else { continue };
            let mut end = None;
            if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                end = drain_reverse(c, &mut rbuf);
            }
            if end.is_none()
                && pfd.revents & libc::POLLOUT != 0
                && !c.finished
                && Instant::now() < ctx.deadline
            {
                end = send_some(ctx, c, &mut rng, &mut out);
            }
            if let Some(end) = end {
                let Some(c) = conns[r].take() else { continue };
                match end {
                    ConnEnd::Done => out.conns.push(ends(ctx, &c, false)),
                    ConnEnd::Reset(why) => {
                        out.resets += 1;
                        out.conns.push(ends(ctx, &c, true));
                        if !ctx.opts.tolerate_reset {
                            ctx.violation(format!("{}: {why}", c.key));
                            dead[r] = true;
                        } else {
                            retry_at[r] = Instant::now() + Duration::from_millis(50);
                        }
                    }
                    ConnEnd::Broken(why) => {
                        ctx.violation(format!("{}: {why}", c.key));
                        out.conns.push(ends(ctx, &c, true));
                        dead[r] = !ctx.opts.tolerate_reset;
                    }
                }
            }
        }
    }
}

/// How a connection ended, seen from one end.
enum ConnEnd {
    /// Normally: end of file after our shutdown (sender) or the peer's (receiver).
    Done,
    /// Reset, refused, or closed by the peer too early.
    Reset(String),
    /// The tool cannot go on with it (a send that timed out, a broken message).
    Broken(String),
}

/// A sender's figures of a connection that is over; reports its reverse check's violation.
fn ends(ctx: &Ctx<'_>, c: &SConn, reset: bool) -> (Key, End, End) {
    if let Some(b) = &c.rev.bad {
        ctx.violation(b.clone());
    }
    (
        c.key,
        End {
            bytes: c.tx.sum.bytes(),
            messages: c.tx.messages(),
            sum: c.tx.sum.value(),
            reset,
        },
        End {
            bytes: c.rev.bytes,
            messages: match c.rev.flow {
                Flow::Stream(_) => 0,
                Flow::Seq(_) => c.rev.pos,
            },
            sum: c.rev.sum.value(),
            reset,
        },
    )
}

/// Shuts the connection down for writing: the sending time is up.
fn finish(ctx: &Ctx<'_>, c: &mut SConn, out: &mut SenderOut) {
    c.finished = true;
    if let Err(e) = c.sock.shutdown_write() {
        if !(ctx.opts.tolerate_reset && is_reset(&e)) {
            ctx.violation(format!("{}: shutdown(SHUT_WR): {e}", c.key));
        }
        out.resets += u64::from(is_reset(&e));
    }
}

/// Reads the reverse data waiting; `Some` when the connection is over.
fn drain_reverse(c: &mut SConn, buf: &mut [u8]) -> Option<ConnEnd> {
    for _ in 0..16 {
        let r = match c.rev.flow {
            Flow::Stream(_) => c.sock.recv(buf, libc::MSG_DONTWAIT).map(|n| (n, false)),
            Flow::Seq(_) => c.sock.recv_record(buf, libc::MSG_DONTWAIT),
        };
        match r {
            Ok((0, _)) => {
                let end = if c.finished {
                    ConnEnd::Done
                } else {
                    ConnEnd::Reset(
                        "the receiver closed the connection before the sender was done".into(),
                    )
                };
                return Some(end);
            }
            Ok((n, trunc)) => match c.rev.flow {
                Flow::Stream(_) => c.rev.stream(c.key, "reverse", &buf[..n]),
                Flow::Seq(_) => c.rev.message(c.key, "reverse", &buf[..n], trunc),
            },
            Err(e) if is_again(&e) => return None,
            Err(e) if is_reset(&e) => {
                return Some(ConnEnd::Reset(format!("reading the reverse data: {e}")))
            }
            Err(e) => return Some(ConnEnd::Broken(format!("reading the reverse data: {e}"))),
        }
    }
    None
}

/// Sends one write; `Some` when the connection is over.
fn send_some(ctx: &Ctx<'_>, c: &mut SConn, rng: &mut Rng, out: &mut SenderOut) -> Option<ConnEnd> {
    let max = ctx.opts.max_size;
    let stream = matches!(c.tx.flow, Flow::Stream(_));
    // Now and then a burst of tiny writes: many packets per byte of credit, which is what
    // fills a stalled receiver's backlog.  (Seqpacket messages have tiny runs of their own.)
    let now = Instant::now();
    if c.tiny_until.is_some_and(|t| now >= t) {
        c.tiny_until = None;
    } else if c.tiny_until.is_none() && rng.percent(TINY_BURST_PERCENT) {
        c.tiny_until = Some(now + rng.duration(TINY_BURST.0, TINY_BURST.1));
    }
    let tiny = c.tiny_until.is_some();
    let data = c.tx.next(|| {
        if tiny {
            rng.range(1, 64) as usize
        } else {
            rng.io_size(max)
        }
    });
    let len = data.len();
    // The window: a message goes whole or waits; a stream write may be cut.
    let min = if stream { 1 } else { len as u64 };
    let n = c.window.reserve(len as u64, min) as usize;
    if n == 0 {
        return None;
    }
    // Stream: mostly non-blocking; some large writes block (rvsock lends the pages of those).
    // Seqpacket: always blocking, since a non-blocking send can leave half a message.
    let blocking = !stream || (n >= 32 * 1024 && rng.percent(BLOCKING_PERCENT));
    let flags = if blocking { 0 } else { libc::MSG_DONTWAIT };
    let t0 = Instant::now();
    let r = c.sock.send(&data[..n], flags);
    c.window.settle(n as u64, *r.as_ref().unwrap_or(&0) as u64);
    out.blocking_sends += u64::from(blocking);
    match r {
        Ok(sent) => {
            if !c.tx.sent(sent) {
                return Some(ConnEnd::Broken(format!(
                    "send of a {len}-byte message returned {sent}"
                )));
            }
            None
        }
        Err(e) if is_again(&e) && !blocking => None,
        Err(e) if is_again(&e) => Some(ConnEnd::Broken(format!(
            "a blocking send of {n} bytes made no progress in {:.1} s (SO_SNDTIMEO)",
            t0.elapsed().as_secs_f64()
        ))),
        Err(e) if is_reset(&e) => Some(ConnEnd::Reset(format!("send: {e}"))),
        Err(e) => Some(ConnEnd::Broken(format!("send of {n} bytes: {e}"))),
    }
}

/// A receiver's end of a connection.
struct RConn {
    sock: Arc<Sock>,
    /// The connection's window (once the hello is in).
    window: Option<Arc<Window>>,
    hello: Vec<u8>,
    key: Option<Key>,
    rx: Option<Rx>,
}

/// A receiver thread.
fn receiver(ctx: &Ctx<'_>, r: u32, l: &Listener) -> ReceiverOut {
    let mut out = ReceiverOut::default();
    let mut rng = Rng::new(derive(ctx.env.seed, &[u64::from(r), 200]));
    let mut conns: Vec<RConn> = Vec::new();
    let mut buf = vec![0u8; ctx.opts.max_size.max(HELLO_LEN) + 1];
    let mut senders_done = None;
    loop {
        let now = Instant::now();
        if now >= ctx.deadline && ctx.senders_left.load(Ordering::Acquire) == 0 {
            // The senders are done.  What they closed last may not have been read yet: read
            // on for a while, then whatever is still open never got its end.
            let since = *senders_done.get_or_insert(now);
            if conns.is_empty() || now >= since + SENDERS_GONE_GRACE {
                for c in conns.drain(..) {
                    if let (Some(key), Some(rx)) = (c.key, c.rx) {
                        if let Some(b) = rx.bad.clone() {
                            ctx.violation(b);
                        }
                        out.conns.push((key, rx_end(&rx, true)));
                        ctx.violation(format!(
                            "{key}: still open at the receiver {} s after its sender closed it \
                             (no end of file, no reset)",
                            SENDERS_GONE_GRACE.as_secs()
                        ));
                    }
                }
                return out;
            }
        }
        if now >= ctx.hard_deadline + Duration::from_secs(5) {
            ctx.violation(format!(
                "receiver {r}: senders still running well past the end"
            ));
            return out;
        }
        let mut fds = vec![pollfd(std::os::fd::AsFd::as_fd(l), libc::POLLIN)];
        fds.extend(
            conns
                .iter()
                .map(|c| pollfd(std::os::fd::AsFd::as_fd(&*c.sock), libc::POLLIN)),
        );
        if let Err(e) = poll(&mut fds, TICK) {
            ctx.violation(format!("receiver {r}: poll: {e}"));
            std::thread::sleep(TICK);
            continue;
        }
        if fds[0].revents != 0 {
            loop {
                match l.try_accept() {
                    Ok(Some(s)) => {
                        if let Err(e) = s.set_timeouts(Some(ctx.env.timeout)) {
                            ctx.violation(format!("receiver {r}: set timeouts: {e}"));
                        }
                        conns.push(RConn {
                            sock: Arc::new(s),
                            window: None,
                            hello: Vec::new(),
                            key: None,
                            rx: None,
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !is_reset(&e) {
                            ctx.violation(format!("receiver {r}: accept: {e}"));
                        }
                        break;
                    }
                }
            }
        }
        // fds[1..] are the connections polled, before the accepts above; the new ones are
        // read at once.  Going down keeps the indexes of those not read yet valid across
        // swap_remove.
        let polled = fds.len() - 1;
        for i in (0..conns.len()).rev() {
            if i < polled && fds[i + 1].revents == 0 {
                continue;
            }
            if let Some(end) = read_conn(ctx, r, &mut conns[i], &mut buf, &mut rng) {
                let c = conns.swap_remove(i);
                close_conn(ctx, r, c, end, &mut out);
            }
        }
    }
}

fn rx_end(rx: &Rx, reset: bool) -> End {
    End {
        bytes: rx.bytes,
        messages: match rx.flow {
            Flow::Stream(_) => 0,
            Flow::Seq(_) => rx.pos,
        },
        sum: rx.sum.value(),
        reset,
    }
}

fn close_conn(ctx: &Ctx<'_>, r: u32, c: RConn, end: ConnEnd, out: &mut ReceiverOut) {
    if let Some(key) = c.key {
        lock(&ctx.live[r as usize]).retain(|l| l.key != key);
    }
    let reset = !matches!(end, ConnEnd::Done);
    match (&end, c.key) {
        (ConnEnd::Reset(why), k) => {
            out.resets += 1;
            if !ctx.opts.tolerate_reset {
                ctx.violation(format!("{}: {why}", key_name(k, r)));
            }
        }
        (ConnEnd::Broken(why), k) => ctx.violation(format!("{}: {why}", key_name(k, r))),
        (ConnEnd::Done, _) => {}
    }
    if let (Some(key), Some(rx)) = (c.key, c.rx.as_ref()) {
        if let Some(b) = &rx.bad {
            ctx.violation(b.clone());
        }
        out.conns.push((key, rx_end(rx, reset)));
    }
    // Dropping `c` closes the socket, unless the staller is sending on it: then it closes
    // when that stalled send returns.
}

fn key_name(k: Option<Key>, r: u32) -> String {
    k.map(|k| k.to_string())
        .unwrap_or_else(|| format!("receiver {r}, before the hello"))
}

/// Reads what is waiting on one connection; `Some` when it is over.
fn read_conn(
    ctx: &Ctx<'_>,
    r: u32,
    c: &mut RConn,
    buf: &mut [u8],
    rng: &mut Rng,
) -> Option<ConnEnd> {
    for _ in 0..8 {
        let res = if c.key.is_none() {
            match ctx.ty {
                SockType::Stream => {
                    let have = c.hello.len();
                    c.sock
                        .recv(&mut buf[..HELLO_LEN - have], libc::MSG_DONTWAIT)
                        .map(|n| (n, false))
                }
                SockType::SeqPacket => c.sock.recv_record(buf, libc::MSG_DONTWAIT),
            }
        } else {
            match ctx.ty {
                SockType::Stream => {
                    let want = rng.io_size(buf.len() - 1);
                    c.sock
                        .recv(&mut buf[..want], libc::MSG_DONTWAIT)
                        .map(|n| (n, false))
                }
                SockType::SeqPacket => c.sock.recv_record(buf, libc::MSG_DONTWAIT),
            }
        };
        match res {
            Ok((0, _)) => {
                return Some(if c.key.is_some() {
                    ConnEnd::Done
                } else {
                    ConnEnd::Reset(format!(
                        "end of file after {} bytes of hello",
                        c.hello.len()
                    ))
                });
            }
            Ok((n, trunc)) => {
                if c.key.is_none() {
                    c.hello.extend_from_slice(&buf[..n]);
                    if ctx.ty == SockType::SeqPacket && (trunc || n != HELLO_LEN) {
                        return Some(ConnEnd::Broken(format!(
                            "first message is {n} bytes, not a {HELLO_LEN}-byte hello"
                        )));
                    }
                    if c.hello.len() == HELLO_LEN {
                        match parse_hello(&c.hello) {
                            Some(key) if key.receiver == r => start_live(ctx, r, c, key),
                            _ => {
                                return Some(ConnEnd::Broken(format!("bad hello {:02x?}", c.hello)))
                            }
                        }
                    }
                    continue;
                }
                let (Some(key), Some(rx)) = (c.key, c.rx.as_mut()) else {
                    continue;
                };
                if let Some(w) = &c.window {
                    w.consumed.fetch_add(n as u64, Ordering::SeqCst);
                }
                match ctx.ty {
                    SockType::Stream => rx.stream(key, "forward", &buf[..n]),
                    SockType::SeqPacket => rx.message(key, "forward", &buf[..n], trunc),
                }
            }
            Err(e) if is_again(&e) => return None,
            Err(e) if is_reset(&e) => return Some(ConnEnd::Reset(format!("recv: {e}"))),
            Err(e) => return Some(ConnEnd::Broken(format!("recv: {e}"))),
        }
    }
    None
}

/// The hello is complete: check the rest against the sender's flow, and let the staller and
/// tuner at the connection.
fn start_live(ctx: &Ctx<'_>, r: u32, c: &mut RConn, key: Key) {
    let (fwd, rev) = ctx.seeds(key);
    c.key = Some(key);
    c.rx = Some(Rx::new(Flow::new(ctx.ty, fwd, ctx.opts.max_size)));
    let rev = Arc::new(Mutex::new(Tx::new(Flow::new(ctx.ty, rev, REV_MAX))));
    lock(&ctx.all).push((key, rev.clone()));
    // The sender registered the window before it sent the hello.
    let window = lock(&ctx.windows)
        .get(&key)
        .cloned()
        .unwrap_or_else(|| Arc::new(Window::new(u64::MAX)));
    c.window = Some(window.clone());
    let size = c.sock.buffer_size().unwrap_or(0);
    lock(&ctx.live[r as usize]).push(Arc::new(Live {
        key,
        sock: c.sock.clone(),
        rev,
        window,
        size: AtomicU64::new(size),
        relax_at: Mutex::new(None),
    }));
}

fn pick(ctx: &Ctx<'_>, r: usize, rng: &mut Rng) -> Option<Arc<Live>> {
    let v = lock(&ctx.live[r]);
    if v.is_empty() {
        return None;
    }
    Some(v[rng.below(v.len() as u64) as usize].clone())
}

/// A receiver's staller thread: stalls one of its connections' owner at a time.
fn stall_loop(ctx: &Ctx<'_>, r: usize) {
    let Some(st) = &ctx.staller else { return };
    let mut rng = Rng::new(derive(ctx.env.seed, &[r as u64, 300]));
    let page = page_size();
    let gap_max = ctx.opts.stall_gap;
    while Instant::now() < ctx.deadline {
        let gap = rng.duration(gap_max / 10, gap_max);
        crate::sock::sleep_until_or(ctx.deadline, gap);
        if Instant::now() >= ctx.deadline {
            return;
        }
        let Some(live) = pick(ctx, r, &mut rng) else {
            continue;
        };
        let mut rev = lock(&live.rev);
        let data = rev.next(|| rng.range(1, REV_MAX as u64) as usize).to_vec();
        let hold = Hold::For(rng.duration(ctx.opts.stall_min, ctx.opts.stall_max));
        let offset = rng.below(page as u64) as usize;
        let mid_copy = rng.percent(50);
        ctx.stats.stall_attempts.fetch_add(1, Ordering::Relaxed);
        match st.stalled_send(&live.sock, &data, offset, mid_copy, hold, 0) {
            Ok(stall) => {
                if stall.faults > 0 {
                    let us = stall.elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
                    ctx.stats.stalls.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.stall_us_total.fetch_add(us, Ordering::Relaxed);
                    ctx.stats.stall_us_max.fetch_max(us, Ordering::Relaxed);
                }
                match stall.result {
                    Ok(n) => {
                        if !rev.sent(n) {
                            ctx.violation(format!(
                                "{}: stalled send of a {}-byte message returned {n}",
                                live.key,
                                data.len()
                            ));
                        }
                    }
                    Err(e) if is_reset(&e) && ctx.opts.tolerate_reset => {}
                    Err(e) => ctx.violation(format!(
                        "{}: stalled send of {} bytes: {e}",
                        live.key,
                        data.len()
                    )),
                }
            }
            Err(e) => {
                ctx.violation(format!("{}: set up a stalled send: {e}", live.key));
                return;
            }
        }
    }
}

/// How long a receiver reads on after the last sender ended.
const SENDERS_GONE_GRACE: Duration = Duration::from_secs(5);

/// Longest wait for a connection to drain before a shrink.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How long after a shrink the sender keeps to the new size itself: longer than the credit
/// update can take to reach it, even behind a stalled socket (the upstream loopback delivers
/// every packet from one work item, which waits for each stalled owner).
const RELAX_AFTER: Duration = Duration::from_secs(3);

/// A receiver's tuner thread: changes its connections' receive buffer sizes.
fn tune_loop(ctx: &Ctx<'_>, r: usize) {
    let mut rng = Rng::new(derive(ctx.env.seed, &[r as u64, 400]));
    let (lo, hi) = (ctx.opts.buf_min, ctx.opts.buf_max);
    while Instant::now() < ctx.deadline {
        crate::sock::sleep_until_or(
            ctx.deadline,
            rng.duration(Duration::from_millis(20), Duration::from_millis(250)),
        );
        relax(ctx, r);
        let Some(live) = pick(ctx, r, &mut rng) else {
            continue;
        };
        let size = match rng.below(4) {
            0 => lo,
            1 => hi,
            _ => rng.range(lo, hi),
        };
        let old = live.size.load(Ordering::SeqCst);
        let careful = size < old && !ctx.opts.unsafe_shrink;
        if careful && !drained(ctx, &live) {
            ctx.stats.shrinks_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let set = live
            .sock
            .set_buffer_size(size)
            .and_then(|()| live.sock.buffer_size());
        match set {
            Ok(now) => {
                live.size.store(now, Ordering::SeqCst);
                ctx.stats.resizes.fetch_add(1, Ordering::Relaxed);
                ctx.stats
                    .shrinks
                    .fetch_add(u64::from(size < old), Ordering::Relaxed);
                if now != size {
                    ctx.violation(format!(
                        "{}: SO_VM_SOCKETS_BUFFER_SIZE set to {size} (within min {lo} and max {hi}) reads back {now}",
                        live.key
                    ));
                }
            }
            Err(e) if ctx.opts.tolerate_reset && is_reset(&e) => {}
            Err(e) => ctx.violation(format!(
                "{}: SO_VM_SOCKETS_BUFFER_SIZE {size}: {e}",
                live.key
            )),
        }
        if careful {
            // Until the credit update surely reached the sender.
            let now = live.size.load(Ordering::SeqCst);
            live.window.limit.store(now, Ordering::SeqCst);
            *lock(&live.relax_at) = Some(Instant::now() + RELAX_AFTER);
        }
    }
}

/// Lifts the limits of the shrinks made long enough ago.
fn relax(ctx: &Ctx<'_>, r: usize) {
    let now = Instant::now();
    for live in lock(&ctx.live[r]).iter() {
        let mut at = lock(&live.relax_at);
        if at.is_some_and(|t| now >= t) {
            *at = None;
            live.window.limit.store(u64::MAX, Ordering::SeqCst);
        }
    }
}

/// Closes the connection's window and waits until the receiver has read everything sent
/// (at most [`DRAIN_WAIT`]); on a timeout the window opens again and it returns false.
fn drained(ctx: &Ctx<'_>, live: &Live) -> bool {
    let w = &live.window;
    let limit = w.limit.load(Ordering::SeqCst);
    w.limit.store(0, Ordering::SeqCst);
    let t0 = Instant::now();
    while w.outstanding() > 0 {
        if t0.elapsed() > DRAIN_WAIT || Instant::now() >= ctx.hard_deadline {
            w.limit.store(limit, Ordering::SeqCst);
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let w = Window::new(100);
        assert_eq!(w.reserve(60, 1), 60);
        assert_eq!(w.reserve(60, 1), 40);
        assert_eq!(w.reserve(10, 1), 0);
        w.settle(40, 10); // only 10 of the 40 went out
        assert_eq!(w.outstanding(), 70);
        assert_eq!(w.reserve(50, 50), 0, "a message goes whole or not at all");
        w.consumed.fetch_add(70, Ordering::SeqCst);
        assert_eq!(w.reserve(50, 50), 50);
        w.limit.store(0, Ordering::SeqCst);
        assert_eq!(w.room(), 0);
        assert_eq!(w.reserve(1, 1), 0);
        assert_eq!(Window::new(u64::MAX).reserve(1 << 40, 1), 1 << 40);
    }

    #[test]
    fn hello_roundtrip() {
        let k = Key {
            sender: 3,
            receiver: 1,
            gen: 7,
        };
        assert_eq!(parse_hello(&hello(k)), Some(k));
        assert_eq!(parse_hello(&[0u8; 16]), None);
        assert_eq!(parse_hello(&hello(k)[..15]), None);
    }

    #[test]
    fn tx_rx_agree_on_streams() {
        let flow = Flow::new(SockType::Stream, 11, 1000);
        let mut tx = Tx::new(flow);
        let mut rx = Rx::new(flow);
        let key = Key {
            sender: 0,
            receiver: 0,
            gen: 0,
        };
        let mut rng = Rng::new(1);
        let mut wire = Vec::new();
        for _ in 0..100 {
            let d = tx.next(|| rng.io_size(1000)).to_vec();
            let n = (rng.below(d.len() as u64) + 1) as usize; // partial sends
            wire.extend_from_slice(&d[..n]);
            assert!(tx.sent(n));
        }
        for chunk in wire.chunks(77) {
            rx.stream(key, "forward", chunk);
        }
        assert!(rx.bad.is_none());
        assert_eq!(rx.sum, tx.sum);
        // Lose 100 bytes in the middle: found, and measured.
        let mut rx = Rx::new(flow);
        rx.stream(key, "forward", &wire[..1000]);
        rx.stream(key, "forward", &wire[1100..]);
        let bad = rx.bad.expect("loss detected");
        assert!(
            bad.contains("byte 1000") && bad.contains("100 bytes lost"),
            "{bad}"
        );
    }

    #[test]
    fn tx_rx_agree_on_messages() {
        let flow = Flow::new(SockType::SeqPacket, 5, 4096);
        let mut tx = Tx::new(flow);
        let key = Key {
            sender: 1,
            receiver: 2,
            gen: 0,
        };
        let mut msgs = Vec::new();
        for _ in 0..20 {
            let d = tx.next(|| 0).to_vec();
            assert!(tx.sent(d.len()));
            msgs.push(d);
        }
        let mut rx = Rx::new(flow);
        for m in &msgs {
            rx.message(key, "forward", m, false);
        }
        assert!(rx.bad.is_none());
        assert_eq!(rx.sum, tx.sum);
        assert_eq!(rx.pos, 20);
        let mut rx = Rx::new(flow);
        rx.message(key, "forward", &msgs[0], false);
        rx.message(key, "forward", &msgs[3], false);
        let bad = rx.bad.expect("loss detected");
        assert!(bad.contains("2 messages lost"), "{bad}");
    }
}
