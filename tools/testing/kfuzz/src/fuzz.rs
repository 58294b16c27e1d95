// SPDX-License-Identifier: GPL-2.0

//! The fuzzer: real AF_VSOCK sockets in every state, a model of the core's connections learned
//! from the headers it sends, and a packet generator aimed at them.
//!
//! The fuzzer plays the peer of the test transports.  Its own sockets connect to the peer (the
//! core sends a REQUEST through the test transport, which the feed shows) and listen (the
//! fuzzer injects REQUESTs, the core makes children and answers RESPONSE).  Each step it does
//! a few socket calls (connect, accept, read, write, shutdown, close, ...), then injects a
//! batch: first the honest answers a peer would give to what the core sent (RESPONSE to a
//! REQUEST, CREDIT_UPDATE for data, RST to a closing SHUTDOWN), then generated packets aimed
//! at known connections in any state, at listeners and at random addresses, with mutated
//! fields, lies and floods.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::sys::{self, Device, Sock, Ty, VMADDR_CID_ANY};
use crate::wire::{
    self, op, Hdr, Info, SEQ_EOM, SEQ_EOR, SHUTDOWN_RCV, SHUTDOWN_SEND, SLOT_G2H, SLOT_H2G,
};
use crate::worker::{self, Shared, WorkerStats};

/// Both SHUTDOWN flags: the sender neither sends nor receives any more (a close).
const BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// The receive buffer the fuzzer, as the peer, advertises when honest.
const PEER_BUF: u32 = 256 * 1024;
/// Open descriptors the fuzzer keeps at most (connections and listeners).
const MAX_FDS: usize = 64;
/// Listeners at most.
const MAX_LISTENERS: usize = 8;
/// Connections the model keeps at most; dead ones beyond are forgotten first.
const MAX_ENDPOINTS: usize = 768;
/// Dead connections remembered (as targets for stale packets).
const MAX_DEAD: usize = 256;
/// Ports the listeners take.
const LISTEN_PORTS: (u32, u32) = (5000, 5015);
/// Ports the fuzzer's connects go to (the peer's side).
const CONNECT_PORTS: (u32, u32) = (7000, 7031);
/// Ports the peer sends its REQUESTs from.
const PEER_PORTS: (u32, u32) = (20000, 59999);
/// Bytes of one injection ioctl at most.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Headers read from the feed per ioctl.
const FEED_CHUNK: usize = 1024;
/// Index of "operation above 7" in the per-operation counters.
const OP_UNKNOWN: usize = 8;

/// Classes of packets and activity that `--skip` can turn off.
#[derive(Clone, Debug, Default)]
pub struct Skip {
    /// Operations 0..=7, then "above 7".
    pub ops: [bool; 9],
    /// Header `len` that disagrees with the payload, and data beyond the credit.
    pub lies: bool,
    /// Every flood.
    pub floods: bool,
    /// Floods by kind (see [`Flood::NAMES`]).
    pub flood: [bool; Flood::COUNT],
    /// Wrong CIDs (0, 1, `u32::MAX`, above 32 bits, ...).
    pub wrong_cid: bool,
    /// Types other than the connection's.
    pub bad_type: bool,
    /// Payloads above 64 KiB.
    pub big: bool,
    /// Packets to random addresses.
    pub random: bool,
    /// The fuzzer's own socket calls (connects and listeners are still made at the start).
    pub socket_io: bool,
    /// Device events: a transport resets every connection, or changes its local CID.
    pub events: bool,
}

impl Skip {
    /// Parses a comma-separated list of class names.
    pub fn parse(list: &str) -> Result<Skip, String> {
        let mut s = Skip::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let opi = [
                "invalid",
                "request",
                "response",
                "rst",
                "shutdown",
                "rw",
                "credit_update",
                "credit_request",
                "unknown-op",
            ]
            .iter()
            .position(|&n| n == name);
            if let Some(i) = opi {
                s.ops[i] = true;
                continue;
            }
            if let Some(kind) = name.strip_prefix("flood-") {
                match Flood::NAMES.iter().position(|&n| n == kind) {
                    Some(i) => s.flood[i] = true,
                    None => return Err(format!("unknown flood kind {kind:?}")),
                }
                continue;
            }
            match name {
                "lies" => s.lies = true,
                "floods" => s.floods = true,
                "wrong-cid" => s.wrong_cid = true,
                "bad-type" => s.bad_type = true,
                "big" => s.big = true,
                "random" => s.random = true,
                "socket-io" => s.socket_io = true,
                "events" => s.events = true,
                _ => return Err(format!("unknown class {name:?}")),
            }
        }
        Ok(s)
    }

    fn op(&self, op: u16) -> bool {
        self.ops[op_index(op)]
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Packets to inject.
    pub packets: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// The injection device.
    pub device: std::path::PathBuf,
    /// Stop injecting after this long.
    pub time_limit: Option<Duration>,
    /// Classes left out.
    pub skip: Skip,
    /// Print every injected packet on stderr.
    pub trace: bool,
    /// Progress line (stdout and the kernel log) every this many packets.
    pub progress_every: u64,
    /// Where to write the connections the fuzzer knew at the end (each got a final RST).
    pub model_out: Option<std::path::PathBuf>,
    /// Threads calling into the sockets while packets arrive (0: none, fully sequential).
    pub workers: u64,
}

/// Kinds of floods: bursts of one kind of packet at one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// REQUESTs to a listener from many peer ports (backlog overflow).
    Request,
    /// RSTs.
    Rst,
    /// CREDIT_REQUESTs to one connection.
    CreditRequest,
    /// 1-byte RWs to one connection.
    TinyRw,
    /// Zero-length RWs with `SEQ_EOM`.
    Eom,
    /// 64 KiB RWs beyond the advertised credit.
    Overcredit,
    /// Repeated RESPONSEs.
    Response,
    /// SHUTDOWNs with random flags.
    Shutdown,
}

impl Flood {
    /// Number of kinds.
    pub const COUNT: usize = 8;
    /// Their names, for `--skip flood-<name>` and the summary.
    pub const NAMES: [&'static str; Flood::COUNT] = [
        "request",
        "rst",
        "credit-request",
        "tiny-rw",
        "eom",
        "overcredit",
        "response",
        "shutdown",
    ];
    const ALL: [Flood; Flood::COUNT] = [
        Flood::Request,
        Flood::Rst,
        Flood::CreditRequest,
        Flood::TinyRw,
        Flood::Eom,
        Flood::Overcredit,
        Flood::Response,
        Flood::Shutdown,
    ];

    fn op(self) -> u16 {
        match self {
            Flood::Request => op::REQUEST,
            Flood::Rst => op::RST,
            Flood::CreditRequest => op::CREDIT_REQUEST,
            Flood::TinyRw | Flood::Eom | Flood::Overcredit => op::RW,
            Flood::Response => op::RESPONSE,
            Flood::Shutdown => op::SHUTDOWN,
        }
    }
}

fn op_index(op: u16) -> usize {
    if op <= 7 {
        op as usize
    } else {
        OP_UNKNOWN
    }
}

/// States of a connection in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum St {
    /// The core sent a REQUEST and waits for the answer.
    Connecting,
    /// Connected (a child may still wait in its listener's accept queue).
    Established,
    /// Shut down by one side or being closed.
    Closing,
    /// Reset, as far as the fuzzer knows.
    Dead,
}

impl St {
    /// Names, in order, for the summary.
    pub const NAMES: [&'static str; 4] = ["connecting", "established", "closing", "dead"];
}

/// A connection as the core sees it: its local port and the peer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    local_port: u32,
    peer_cid: u32,
    peer_port: u32,
}

/// A connection of the core, with the fuzzer's socket if it has one.
#[derive(Debug)]
struct Ep {
    slot: u32,
    local_cid: u32,
    ty: Ty,
    st: St,
    fd: Option<Arc<Sock>>,
    /// The core's receive buffer and consumed count, from its last header.
    core_buf_alloc: u32,
    core_fwd_cnt: u32,
    /// Payload the fuzzer sent honestly (for the credit it may use).
    peer_tx: u32,
    /// Payload the core sent (the peer's honest `fwd_cnt`).
    peer_rx: u32,
}

/// A listener of the fuzzer.
#[derive(Debug)]
struct Lst {
    port: u32,
    ty: Ty,
    fd: Arc<Sock>,
}

/// A test transport the fuzzer plays the peer of.
#[derive(Clone, Debug)]
struct Tp {
    slot: u32,
    local_cid: u32,
    /// CIDs of the peer side that route to this transport.
    peer_cids: Vec<u32>,
}

/// A packet to inject.
#[derive(Clone, Copy, Debug)]
struct Pkt {
    slot: u32,
    hdr: Hdr,
    payload: usize,
}

/// Counters for the summary.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Packets injected, per operation (index 8: above 7).
    pub injected_op: [u64; 9],
    /// Packets the core sent, per operation.
    pub core_op: [u64; 9],
    /// Honest answers to what the core sent.
    pub reactions: u64,
    /// Packets whose header `len` disagreed with the payload.
    pub len_lies: u64,
    /// RWs beyond the credit the core advertised.
    pub overcredit: u64,
    /// Floods started, per kind.
    pub floods: [u64; Flood::COUNT],
    /// Packets in floods.
    pub flood_packets: u64,
    /// Packets with a wrong CID.
    pub wrong_cid: u64,
    /// Packets with a type other than the connection's.
    pub bad_type: u64,
    /// Packets to random addresses.
    pub random: u64,
    /// Payloads over 64 KiB.
    pub big: u64,
    /// Payload bytes injected.
    pub payload_bytes: u64,
    /// Records the kernel dropped for want of memory.
    pub failed: u64,
    /// Injection ioctls.
    pub batches: u64,
    /// Feed headers lost (feed full).
    pub feed_lost: u64,
    /// Connections that entered each state.
    pub entered: [u64; 4],
    /// Listeners created.
    pub listeners: u64,
    /// Connects started.
    pub connects: u64,
    /// Children the core made (RESPONSEs it sent).
    pub children: u64,
    /// Children accepted.
    pub accepted: u64,
    /// Sockets closed by the fuzzer (connections, listeners).
    pub closed: u64,
    /// Shutdowns by the fuzzer.
    pub shutdowns: u64,
    /// Successful reads and their bytes.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// End-of-file reads.
    pub eof: u64,
    /// Successful writes.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Errors of the fuzzer's socket calls: "call errno" -> count.
    pub errors: BTreeMap<String, u64>,
    /// RSTs injected at the end to close the run's connections (not counted in `--packets`).
    pub cleanup_packets: u64,
    /// Seconds spent in the injection ioctl, the feed ioctl, the socket calls, and generating.
    pub secs: [f64; 4],
    /// What the worker threads did.
    pub worker: WorkerStats,
    /// Device events: connections reset by a transport reset, local CID changes.
    pub resets: u64,
    /// Local CID changes (each undone at the next step).
    pub cid_changes: u64,
    /// Whether the time limit ended the injection early.
    pub time_limited: bool,
    /// Most connections known at once.
    pub max_endpoints: usize,
    /// Most descriptors open at once.
    pub max_fds: usize,
}

/// The fuzzer.
pub struct Fuzzer {
    cfg: Config,
    rng: Rng,
    /// The device; `None` only in the unit tests, which generate packets without injecting.
    dev: Option<Device>,
    info: Info,
    tps: Vec<Tp>,
    eps: BTreeMap<Key, Ep>,
    dead: VecDeque<Key>,
    lst: Vec<Lst>,
    react: VecDeque<Pkt>,
    pattern: Vec<u8>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    next_peer_port: u32,
    injected: u64,
    next_progress: u64,
    start: Instant,
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<WorkerStats>>,
    /// A transport whose local CID a device event changed: `(slot, its CID)` to restore.
    restore_cid: Option<(u32, u32)>,
    /// The counters.
    pub stats: Stats,
}

/// A short name of the error's errno, for the counts of errors.
pub fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::EINPROGRESS) => "EINPROGRESS".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EADDRINUSE) => "EADDRINUSE".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::ENODEV) => "ENODEV".into(),
        Some(libc::EMSGSIZE) => "EMSGSIZE".into(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
        Some(libc::ENOMEM) => "ENOMEM".into(),
        Some(libc::ENOBUFS) => "ENOBUFS".into(),
        Some(libc::EISCONN) => "EISCONN".into(),
        Some(libc::EALREADY) => "EALREADY".into(),
        Some(libc::EPROTO) => "EPROTO".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

impl Fuzzer {
    /// Opens the device and learns the transports.
    pub fn new(cfg: Config) -> io::Result<Fuzzer> {
        let dev = Device::open(&cfg.device)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cfg.device.display())))?;
        let info = dev.info()?;
        Self::with_device(cfg, info, Some(dev))
    }

    /// The fuzzer for transports `info`, injecting through `dev`.
    fn with_device(cfg: Config, info: Info, dev: Option<Device>) -> io::Result<Fuzzer> {
        let mut tps = Vec::new();
        let h2g = info.cid(SLOT_H2G);
        if let Some(cid) = info.cid(SLOT_G2H) {
            // Without an H2G transport every CID but the local ones goes to G2H.
            let peers = if h2g.is_some() {
                vec![2]
            } else {
                vec![2, 2, 2, 7]
            };
            tps.push(Tp {
                slot: SLOT_G2H,
                local_cid: cid,
                peer_cids: peers,
            });
        }
        if let Some(cid) = h2g {
            tps.push(Tp {
                slot: SLOT_H2G,
                local_cid: cid,
                peer_cids: vec![4, 5, 6],
            });
        }
        if tps.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no G2H or H2G test transport registered (load rvsock_test_transport.ko with \
                 slots=0x2 or 0x3)",
            ));
        }
        let mut rng = Rng::new(cfg.seed);
        let max = info.max_payload.max(64 * 1024) as usize;
        let mut pattern = vec![0u8; max * 2];
        rng.fill(&mut pattern);
        let next_progress = cfg.progress_every;
        Ok(Fuzzer {
            cfg,
            rng,
            dev,
            info,
            tps,
            eps: BTreeMap::new(),
            dead: VecDeque::new(),
            lst: Vec::new(),
            react: VecDeque::new(),
            pattern,
            rbuf: vec![0u8; 256 * 1024],
            wbuf: vec![0x5a; 256 * 1024],
            next_peer_port: PEER_PORTS.0,
            injected: 0,
            next_progress,
            start: Instant::now(),
            shared: Arc::new(Shared::default()),
            workers: Vec::new(),
            restore_cid: None,
            stats: Stats::default(),
        })
    }

    fn dev(&self) -> io::Result<&Device> {
        self.dev
            .as_ref()
            .ok_or_else(|| io::Error::other("no injection device"))
    }

    /// The device's counters.
    pub fn info(&self) -> io::Result<Info> {
        self.dev()?.info()
    }

    /// The transports the fuzzer plays the peer of: `(slot, local CID)`.
    pub fn transports(&self) -> Vec<(u32, u32)> {
        self.tps.iter().map(|t| (t.slot, t.local_cid)).collect()
    }

    /// The device's own cost per packet, in microseconds: `n` packets (an RST to nowhere)
    /// built and freed in the kernel without reaching the core (a dry-run batch).
    pub fn calibrate(&mut self, n: usize) -> io::Result<f64> {
        let mut buf = Vec::new();
        // Built by hand: the calibration must not use the random sequence of the run.
        let tp = &self.tps[0];
        let hdr = Hdr {
            src_cid: u64::from(tp.peer_cids[0]),
            dst_cid: u64::from(tp.local_cid),
            src_port: 1,
            dst_port: 1,
            ty: wire::TYPE_STREAM,
            op: op::RST,
            ..Hdr::default()
        };
        for _ in 0..n {
            wire::push_record(&mut buf, tp.slot, &hdr, &[]);
        }
        let t = Instant::now();
        self.dev()?.inject(&buf, true)?;
        Ok(t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
    }

    /// Packets injected.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Runs: set-up, the steps until the packets are injected (or the time limit), clean-up.
    pub fn run(&mut self) -> io::Result<()> {
        self.start = Instant::now();
        sys::kmsg(&format!(
            "rvsock-kfuzz: seed {} start, {} packets\n",
            self.cfg.seed, self.cfg.packets
        ));
        // Whatever the core sent before the run is not ours.
        self.drain_feed(false)?;
        for _ in 0..4 {
            self.new_listener();
        }
        for _ in 0..6 {
            self.connect();
        }
        self.read_feed()?;
        for n in 0..self.cfg.workers {
            self.workers
                .push(worker::spawn(self.shared.clone(), self.cfg.seed, n));
        }
        while self.injected < self.cfg.packets {
            if let Some(limit) = self.cfg.time_limit {
                if self.start.elapsed() >= limit {
                    self.stats.time_limited = true;
                    break;
                }
            }
            self.step()?;
        }
        self.cleanup()?;
        sys::kmsg(&format!(
            "rvsock-kfuzz: seed {} done, {} packets\n",
            self.cfg.seed, self.injected
        ));
        Ok(())
    }

    fn err(&mut self, call: &str, e: &io::Error) {
        *self
            .stats
            .errors
            .entry(format!("{call} {}", errno_name(e)))
            .or_default() += 1;
    }

    fn enter(&mut self, st: St) {
        self.stats.entered[st as usize] += 1;
    }

    fn open_fds(&self) -> usize {
        self.lst.len() + self.eps.values().filter(|e| e.fd.is_some()).count()
    }

    // ---- one step ------------------------------------------------------------------------

    fn step(&mut self) -> io::Result<()> {
        let t = Instant::now();
        if !self.cfg.skip.socket_io {
            let n = self.rng.below(5);
            for _ in 0..n {
                self.socket_action();
            }
        }
        if !self.workers.is_empty() {
            let socks = self
                .eps
                .values()
                .filter_map(|e| e.fd.clone())
                .chain(self.lst.iter().map(|l| l.fd.clone()))
                .collect();
            self.shared.set(socks);
        }
        let t = self.lap(2, t);
        self.device_event()?;
        let remaining = (self.cfg.packets - self.injected) as usize;
        let mut pkts = Vec::new();
        while pkts.len() < 32 {
            let Some(p) = self.react.pop_front() else {
                break;
            };
            pkts.push(p);
        }
        let size = self.rng.pick(&[1usize, 2, 4, 16, 32, 64, 64]);
        while pkts.len() < size {
            self.generate(&mut pkts);
        }
        pkts.truncate(remaining);
        self.lap(3, t);
        self.send(&pkts)?;
        let t = Instant::now();
        self.read_feed()?;
        self.lap(1, t);
        if self.eps.len() > MAX_ENDPOINTS {
            self.prune();
        }
        self.stats.max_endpoints = self.stats.max_endpoints.max(self.eps.len());
        Ok(())
    }

    /// Now and then, a device event: a transport resets all its connections (about once in
    /// 25,000 packets), or changes its local CID until the next step (half as often).
    fn device_event(&mut self) -> io::Result<()> {
        if let Some((slot, cid)) = self.restore_cid.take() {
            self.dev()?.event(slot, wire::EVENT_SET_CID, cid)?;
        }
        if self.cfg.skip.events {
            return Ok(());
        }
        match self.rng.below(2000) {
            0 | 1 => {
                let tp = self.pick_tp();
                self.dev()?.event(tp.slot, wire::EVENT_RESET_ALL, 0)?;
                self.stats.resets += 1;
                let keys: Vec<Key> = self
                    .eps
                    .iter()
                    .filter(|(_, e)| e.slot == tp.slot)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &keys {
                    self.set_state(k, St::Dead);
                }
            }
            2 => {
                let tp = self.pick_tp();
                let cid = self
                    .rng
                    .pick(&[tp.local_cid + 1, 0x1234, u32::MAX - 1, tp.local_cid]);
                self.dev()?.event(tp.slot, wire::EVENT_SET_CID, cid)?;
                self.restore_cid = Some((tp.slot, tp.local_cid));
                self.stats.cid_changes += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Injects `pkts`, in ioctls of at most [`MAX_BATCH_BYTES`].
    fn send(&mut self, pkts: &[Pkt]) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut n = 0usize;
        for p in pkts {
            let off = self.rng.below((self.pattern.len() - p.payload) as u64 + 1) as usize;
            if self.cfg.trace {
                eprintln!(
                    "[{}] slot {} {} (payload {})",
                    self.injected + n as u64,
                    p.slot,
                    p.hdr,
                    p.payload
                );
            }
            wire::push_record(
                &mut buf,
                p.slot,
                &p.hdr,
                &self.pattern[off..off + p.payload],
            );
            n += 1;
            if buf.len() >= MAX_BATCH_BYTES {
                self.flush(&mut buf, n)?;
                n = 0;
            }
        }
        if n > 0 {
            self.flush(&mut buf, n)?;
        }
        for p in pkts {
            self.stats.injected_op[op_index(p.hdr.op)] += 1;
            self.stats.payload_bytes += p.payload as u64;
        }
        Ok(())
    }

    /// Adds the time since `t` to `secs[i]`; returns now.
    fn lap(&mut self, i: usize, t: Instant) -> Instant {
        let now = Instant::now();
        self.stats.secs[i] += (now - t).as_secs_f64();
        now
    }

    fn flush(&mut self, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
        let t = Instant::now();
        let r = self.dev()?.inject(buf, false);
        self.lap(0, t);
        let (done, failed) = r.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("RVSOCK_INJECT_BATCH after {} packets: {e}", self.injected),
            )
        })?;
        if (done + failed) as usize != n {
            return Err(io::Error::other(format!(
                "RVSOCK_INJECT_BATCH took {done} + {failed} of {n} records"
            )));
        }
        self.stats.batches += 1;
        self.stats.failed += u64::from(failed);
        self.injected += n as u64;
        buf.clear();
        if self.cfg.progress_every > 0 && self.injected >= self.next_progress {
            self.next_progress = self.injected + self.cfg.progress_every;
            let line = format!(
                "rvsock-kfuzz: seed {} {} packets, {:.0} s, {} connections, {} fds",
                self.cfg.seed,
                self.injected,
                self.start.elapsed().as_secs_f64(),
                self.eps.len(),
                self.open_fds()
            );
            println!("{line}");
            sys::kmsg(&format!("{line}\n"));
        }
        Ok(())
    }

    // ---- what the core sent ---------------------------------------------------------------

    /// Reads the feed and forgets it (`learn`: false) or learns from it.
    fn drain_feed(&mut self, learn: bool) -> io::Result<()> {
        loop {
            let mut v = Vec::new();
            let lost = self.dev()?.feed(&mut v, FEED_CHUNK)?;
            self.stats.feed_lost += lost;
            let more = v.len() == FEED_CHUNK;
            if learn {
                for (h, slot) in v {
                    self.on_core(h, slot);
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    fn read_feed(&mut self) -> io::Result<()> {
        self.drain_feed(true)
    }

    fn honest(&self, key: &Key, ep: &Ep, op: u16) -> Pkt {
        Pkt {
            slot: ep.slot,
            hdr: Hdr {
                src_cid: u64::from(key.peer_cid),
                dst_cid: u64::from(ep.local_cid),
                src_port: key.peer_port,
                dst_port: key.local_port,
                len: 0,
                ty: ep.ty.wire(),
                op,
                flags: 0,
                buf_alloc: PEER_BUF,
                fwd_cnt: ep.peer_rx,
            },
            payload: 0,
        }
    }

    fn react_with(&mut self, key: &Key, op: u16, flags: u32) {
        if self.cfg.skip.op(op) {
            return;
        }
        if let Some(ep) = self.eps.get(key) {
            let mut p = self.honest(key, ep, op);
            p.hdr.flags = flags;
            self.react.push_back(p);
            self.stats.reactions += 1;
        }
    }

    fn ty_of(wire_ty: u16) -> Ty {
        if wire_ty == wire::TYPE_SEQPACKET {
            Ty::SeqPacket
        } else {
            Ty::Stream
        }
    }

    /// Learns from one header the core sent through transport `slot`.
    fn on_core(&mut self, h: Hdr, slot: u32) {
        self.stats.core_op[op_index(h.op)] += 1;
        let key = Key {
            local_port: h.src_port,
            peer_cid: h.dst_cid as u32,
            peer_port: h.dst_port,
        };
        let known = self.eps.contains_key(&key);
        match h.op {
            op::REQUEST => {
                if !known {
                    self.insert(
                        key,
                        slot,
                        h.src_cid as u32,
                        Self::ty_of(h.ty),
                        St::Connecting,
                    );
                }
                match self.rng.weighted(&[70, 10, 20]) {
                    0 => {
                        // Connected once the core takes the RESPONSE queued here.
                        self.react_with(&key, op::RESPONSE, 0);
                        if !self.cfg.skip.op(op::RESPONSE) {
                            self.set_state(&key, St::Established);
                        }
                    }
                    1 => self.react_with(&key, op::RST, 0),
                    _ => {}
                }
            }
            op::RESPONSE => {
                self.stats.children += 1;
                if known {
                    self.set_state(&key, St::Established);
                } else {
                    self.insert(
                        key,
                        slot,
                        h.src_cid as u32,
                        Self::ty_of(h.ty),
                        St::Established,
                    );
                }
            }
            op::RST if known => self.set_state(&key, St::Dead),
            op::SHUTDOWN if known => {
                self.set_state(&key, St::Closing);
                if h.flags & BOTH == BOTH && self.rng.chance(750) {
                    self.react_with(&key, op::RST, 0);
                } else if self.rng.chance(200) {
                    self.react_with(&key, op::SHUTDOWN, BOTH);
                }
            }
            op::RW => {
                if let Some(ep) = self.eps.get_mut(&key) {
                    ep.peer_rx = ep.peer_rx.wrapping_add(h.len);
                    if self.rng.chance(600) {
                        self.react_with(&key, op::CREDIT_UPDATE, 0);
                    }
                }
            }
            op::CREDIT_REQUEST if known && self.rng.chance(800) => {
                self.react_with(&key, op::CREDIT_UPDATE, 0);
            }
            _ => {}
        }
        if let Some(ep) = self.eps.get_mut(&key) {
            ep.core_buf_alloc = h.buf_alloc;
            ep.core_fwd_cnt = h.fwd_cnt;
        }
    }

    fn insert(&mut self, key: Key, slot: u32, local_cid: u32, ty: Ty, st: St) {
        self.eps.insert(
            key,
            Ep {
                slot,
                local_cid,
                ty,
                st,
                fd: None,
                core_buf_alloc: 0,
                core_fwd_cnt: 0,
                peer_tx: 0,
                peer_rx: 0,
            },
        );
        self.enter(st);
        if st == St::Dead {
            self.dead.push_back(key);
        }
    }

    fn set_state(&mut self, key: &Key, st: St) {
        let Some(ep) = self.eps.get_mut(key) else {
            return;
        };
        if ep.st == st {
            return;
        }
        ep.st = st;
        self.enter(st);
        if st == St::Dead {
            self.dead.push_back(*key);
            while self.dead.len() > MAX_DEAD {
                if let Some(k) = self.dead.pop_front() {
                    if self
                        .eps
                        .get(&k)
                        .is_some_and(|e| e.st == St::Dead && e.fd.is_none())
                    {
                        self.eps.remove(&k);
                    }
                }
            }
        }
    }

    /// Forgets dead connections without a socket, then closed ones, when the model is full.
    fn prune(&mut self) {
        self.eps.retain(|_, e| e.st != St::Dead || e.fd.is_some());
        self.dead.retain(|k| self.eps.contains_key(k));
        if self.eps.len() > MAX_ENDPOINTS {
            self.eps
                .retain(|_, e| e.fd.is_some() || matches!(e.st, St::Established));
        }
    }

    // ---- the fuzzer's own sockets ----------------------------------------------------------

    fn socket_action(&mut self) {
        let fds = self.open_fds();
        self.stats.max_fds = self.stats.max_fds.max(fds);
        let full = fds >= MAX_FDS;
        let w = [
            if full { 0 } else { 16 }, // connect
            if full || self.lst.len() >= MAX_LISTENERS {
                0
            } else {
                2
            }, // listen
            if full { 0 } else { 20 }, // accept
            30,                        // read
            18,                        // write
            3,                         // shutdown
            if full { 30 } else { 6 }, // close a connection
            1,                         // close a listener
            2,                         // buffer size
            4,                         // poll
            3,                         // SO_ERROR and SIOCINQ
        ];
        match self.rng.weighted(&w) {
            0 => self.connect(),
            1 => self.new_listener(),
            2 => self.accept(),
            3 => self.read(),
            4 => self.write(),
            5 => self.shutdown(),
            6 => self.close(),
            7 => self.close_listener(),
            8 => self.buffer_size(),
            9 => self.poll(),
            _ => self.query(),
        }
    }

    fn pick_ty(&mut self) -> Ty {
        if self.rng.chance(300) {
            Ty::SeqPacket
        } else {
            Ty::Stream
        }
    }

    fn new_listener(&mut self) {
        let ty = self.pick_ty();
        let port = self.rng.range(LISTEN_PORTS.0.into(), LISTEN_PORTS.1.into()) as u32;
        let s = match Sock::new(ty) {
            Ok(s) => s,
            Err(e) => return self.err("socket", &e),
        };
        if self.rng.chance(100) {
            let size = self.rng.pick(&[0u64, 4096, 65536, 1 << 20]);
            if let Err(e) = s.set_buffer_size(size) {
                self.err("setsockopt", &e);
            }
        }
        if let Err(e) = s.bind(VMADDR_CID_ANY, port) {
            return self.err("bind", &e);
        }
        let backlog = self.rng.pick(&[0i32, 1, 2, 4, 16, 64]);
        if let Err(e) = s.listen(backlog) {
            return self.err("listen", &e);
        }
        self.lst.push(Lst {
            port,
            ty,
            fd: Arc::new(s),
        });
        self.stats.listeners += 1;
    }

    fn connect(&mut self) {
        let tp = self.tps[self.rng.below(self.tps.len() as u64) as usize].clone();
        let cid = self.rng.pick(&tp.peer_cids);
        let ty = self.pick_ty();
        let port = match self.rng.weighted(&[60, 35, 5]) {
            0 => self
                .rng
                .range(CONNECT_PORTS.0.into(), CONNECT_PORTS.1.into()) as u32,
            1 => self.rng.range(1024, u64::from(u32::MAX - 1)) as u32,
            _ => self.rng.range(1, 1023) as u32,
        };
        let s = match Sock::new(ty) {
            Ok(s) => s,
            Err(e) => return self.err("socket", &e),
        };
        if self.rng.chance(100) {
            let size = self.rng.pick(&[0u64, 1, 4096, 65536, 1 << 20, 4 << 20]);
            if let Err(e) = s.set_buffer_size(size) {
                self.err("setsockopt", &e);
            }
        }
        match s.connect(cid, port) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return self.err("connect", &e),
        }
        let (lcid, lport) = match s.local_addr() {
            Ok(a) => a,
            Err(e) => return self.err("getsockname", &e),
        };
        let key = Key {
            local_port: lport,
            peer_cid: cid,
            peer_port: port,
        };
        self.stats.connects += 1;
        let local_cid = if lcid == VMADDR_CID_ANY {
            tp.local_cid
        } else {
            lcid
        };
        if let Some(ep) = self.eps.get_mut(&key) {
            // The feed may have shown its REQUEST already (it is sent in connect()).
            ep.fd = Some(Arc::new(s));
        } else {
            self.insert(key, tp.slot, local_cid, ty, St::Connecting);
            if let Some(ep) = self.eps.get_mut(&key) {
                ep.fd = Some(Arc::new(s));
            }
        }
    }

    fn accept(&mut self) {
        if self.lst.is_empty() {
            return;
        }
        let i = self.rng.below(self.lst.len() as u64) as usize;
        for _ in 0..4 {
            if self.open_fds() >= MAX_FDS {
                return;
            }
            let (s, cid, port) = match self.lst[i].fd.accept() {
                Ok(a) => a,
                Err(e) => return self.err("accept", &e),
            };
            self.stats.accepted += 1;
            let key = Key {
                local_port: self.lst[i].port,
                peer_cid: cid,
                peer_port: port,
            };
            if let Some(ep) = self.eps.get_mut(&key) {
                if ep.fd.is_none() {
                    ep.fd = Some(Arc::new(s));
                    continue;
                }
            }
            // A child the model does not know (forgotten): learn it.
            let slot = self
                .tps
                .iter()
                .find(|t| t.peer_cids.contains(&cid))
                .unwrap_or(&self.tps[0])
                .clone();
            let ty = self.lst[i].ty;
            self.insert(key, slot.slot, slot.local_cid, ty, St::Established);
            if let Some(ep) = self.eps.get_mut(&key) {
                ep.fd = Some(Arc::new(s));
            }
        }
    }

    /// A random connection that has a socket.
    fn pick_fd(&mut self) -> Option<Key> {
        let keys: Vec<Key> = self
            .eps
            .iter()
            .filter(|(_, e)| e.fd.is_some())
            .map(|(k, _)| *k)
            .collect();
        (!keys.is_empty()).then(|| keys[self.rng.below(keys.len() as u64) as usize])
    }

    fn read(&mut self) {
        let Some(key) = self.pick_fd() else { return };
        let len = self.pick_io_len();
        let flags = if self.rng.chance(100) {
            libc::MSG_PEEK
        } else {
            0
        };
        let r = {
            let Some(s) = self.eps.get(&key).and_then(|e| e.fd.as_ref()) else {
                return;
            };
            s.recv(&mut self.rbuf[..len], flags)
        };
        match r {
            Ok(0) if len > 0 => self.stats.eof += 1,
            Ok(n) => {
                self.stats.reads += 1;
                self.stats.read_bytes += n as u64;
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::ECONNRESET) {
                    self.set_state(&key, St::Dead);
                }
                self.err("recv", &e);
            }
        }
    }

    fn write(&mut self) {
        let Some(key) = self.pick_fd() else { return };
        let len = self.pick_io_len();
        let eor = self.rng.chance(300);
        let r = {
            let Some(ep) = self.eps.get(&key) else { return };
            let Some(s) = ep.fd.as_ref() else { return };
            let flags = if ep.ty == Ty::SeqPacket && eor {
                libc::MSG_EOR
            } else {
                0
            };
            s.send(&self.wbuf[..len], flags)
        };
        match r {
            Ok(n) => {
                self.stats.writes += 1;
                self.stats.write_bytes += n as u64;
            }
            Err(e) => self.err("send", &e),
        }
    }

    fn pick_io_len(&mut self) -> usize {
        match self.rng.weighted(&[5, 20, 30, 20, 15, 10]) {
            0 => 0,
            1 => 1,
            2 => self.rng.range(2, 512) as usize,
            3 => 4096,
            4 => 65536,
            _ => self.rbuf.len().min(self.wbuf.len()),
        }
    }

    fn shutdown(&mut self) {
        let Some(key) = self.pick_fd() else { return };
        let how = self
            .rng
            .pick(&[libc::SHUT_RD, libc::SHUT_WR, libc::SHUT_RDWR]);
        let r = match self.eps.get(&key).and_then(|e| e.fd.as_ref()) {
            Some(s) => s.shutdown(how),
            None => return,
        };
        match r {
            Ok(()) => {
                self.stats.shutdowns += 1;
                self.set_state(&key, St::Closing);
            }
            Err(e) => self.err("shutdown", &e),
        }
    }

    fn close(&mut self) {
        let Some(key) = self.pick_fd() else { return };
        if let Some(ep) = self.eps.get_mut(&key) {
            ep.fd = None;
            self.stats.closed += 1;
            if ep.st != St::Dead {
                self.set_state(&key, St::Closing);
            }
        }
    }

    fn close_listener(&mut self) {
        if self.lst.len() <= 1 {
            return;
        }
        let i = self.rng.below(self.lst.len() as u64) as usize;
        self.lst.swap_remove(i);
        self.stats.closed += 1;
    }

    fn buffer_size(&mut self) {
        let Some(key) = self.pick_fd() else { return };
        let size = self
            .rng
            .pick(&[0u64, 1, 4096, 65536, 256 * 1024, 1 << 20, (1 << 20) + 1]);
        let r = match self.eps.get(&key).and_then(|e| e.fd.as_ref()) {
            Some(s) => s.set_buffer_size(size),
            None => return,
        };
        if let Err(e) = r {
            self.err("setsockopt", &e);
        }
    }

    fn poll(&mut self) {
        let keys: Vec<Key> = self
            .eps
            .iter()
            .filter(|(_, e)| e.fd.is_some())
            .map(|(k, _)| *k)
            .collect();
        let fds: Vec<i32> = keys
            .iter()
            .filter_map(|k| self.eps.get(k).and_then(|e| e.fd.as_ref()).map(|s| s.raw()))
            .collect();
        match sys::poll_now(&fds) {
            Ok(revents) => {
                // Read a little from every readable one.
                for (k, r) in keys.iter().zip(revents) {
                    if r & libc::POLLIN != 0 {
                        let Some(s) = self.eps.get(k).and_then(|e| e.fd.as_ref()) else {
                            continue;
                        };
                        match s.recv(&mut self.rbuf[..4096], 0) {
                            Ok(n) => {
                                self.stats.reads += 1;
                                self.stats.read_bytes += n as u64;
                            }
                            Err(e) => self.err("recv", &e),
                        }
                    }
                }
            }
            Err(e) => self.err("poll", &e),
        }
    }

    fn query(&mut self) {
        let Some(key) = self.pick_fd() else { return };
        let r = match self.eps.get(&key).and_then(|e| e.fd.as_ref()) {
            Some(s) => (s.so_error(), s.inq()),
            None => return,
        };
        match r.0 {
            Ok(0) => {}
            Ok(e) => {
                if e == libc::ECONNRESET || e == libc::ETIMEDOUT || e == libc::ECONNREFUSED {
                    self.set_state(&key, St::Dead);
                }
                self.err("SO_ERROR", &io::Error::from_raw_os_error(e));
            }
            Err(e) => self.err("getsockopt", &e),
        }
        if let Err(e) = r.1 {
            self.err("SIOCINQ", &e);
        }
    }

    // ---- generated packets ---------------------------------------------------------------

    fn generate(&mut self, out: &mut Vec<Pkt>) {
        let skip = self.cfg.skip.clone();
        // Per 10,000: a flood is about 130 packets, so floods make about 15 % of the packets.
        let w = [
            if self.eps.is_empty() { 0 } else { 6200 }, // a known connection
            if self.lst.is_empty() { 0 } else { 1600 }, // a listener
            if skip.random { 0 } else { 800 },          // a random address
            if skip.floods { 0 } else { 13 },           // a flood
            800,                                        // a REQUEST to a port nobody listens on
        ];
        match self.rng.weighted(&w) {
            0 => {
                let key = self.pick_ep();
                if let Some(p) = self.at_endpoint(&key) {
                    out.push(p);
                }
            }
            1 => {
                if let Some(p) = self.at_listener() {
                    out.push(p);
                }
            }
            2 => {
                if let Some(p) = self.at_random() {
                    out.push(p);
                }
            }
            3 => self.flood(out),
            _ => {
                if skip.op(op::REQUEST) {
                    return;
                }
                let tp = self.pick_tp();
                let port = self.rng.range(1, u64::from(u32::MAX - 1)) as u32;
                let ty = self.pick_ty();
                let mut p = self.request(&tp, port, ty);
                self.mutate(&mut p, None);
                out.push(p);
            }
        }
    }

    fn pick_tp(&mut self) -> Tp {
        self.tps[self.rng.below(self.tps.len() as u64) as usize].clone()
    }

    fn pick_ep(&mut self) -> Key {
        let n = self.rng.below(self.eps.len() as u64) as usize;
        *self.eps.keys().nth(n).unwrap_or(&Key {
            local_port: 0,
            peer_cid: 0,
            peer_port: 0,
        })
    }

    fn new_peer_port(&mut self) -> u32 {
        let p = self.next_peer_port;
        self.next_peer_port = if p >= PEER_PORTS.1 {
            PEER_PORTS.0
        } else {
            p + 1
        };
        p
    }

    /// An honest REQUEST from a new peer port of transport `tp` to local port `port`.
    fn request(&mut self, tp: &Tp, port: u32, ty: Ty) -> Pkt {
        let peer_port = self.new_peer_port();
        let peer_cid = self.rng.pick(&tp.peer_cids);
        Pkt {
            slot: tp.slot,
            hdr: Hdr {
                src_cid: u64::from(peer_cid),
                dst_cid: u64::from(tp.local_cid),
                src_port: peer_port,
                dst_port: port,
                len: 0,
                ty: ty.wire(),
                op: op::REQUEST,
                flags: 0,
                buf_alloc: PEER_BUF,
                fwd_cnt: 0,
            },
            payload: 0,
        }
    }

    /// An operation for a connection in state `st`, among those not skipped.
    fn pick_op(&mut self, st: St) -> Option<u16> {
        let skip = &self.cfg.skip;
        let connecting = st == St::Connecting;
        // INVALID, REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST, > 7
        let base: [u32; 9] = [3, 5, if connecting { 45 } else { 6 }, 4, 7, 38, 12, 8, 3];
        let w: Vec<u32> = base
            .iter()
            .enumerate()
            .map(|(i, &w)| if skip.ops[i] { 0 } else { w })
            .collect();
        if w.iter().all(|&x| x == 0) {
            return None;
        }
        let i = self.rng.weighted(&w);
        Some(if i == OP_UNKNOWN {
            self.rng.range(8, u64::from(u16::MAX)) as u16
        } else {
            i as u16
        })
    }

    /// A payload length: 0, 1, small, 4 KiB, 64 KiB, up to the device's maximum.
    fn pick_len(&mut self) -> usize {
        let big = if self.cfg.skip.big { 0 } else { 1 };
        match self.rng.weighted(&[8, 15, 32, 20, 8, 8, 5, big]) {
            0 => 0,
            1 => 1,
            2 => self.rng.range(2, 128) as usize,
            3 => self.rng.range(129, 4095) as usize,
            4 => 4096,
            5 => self.rng.range(4097, 65535) as usize,
            6 => 65536,
            _ => {
                self.stats.big += 1;
                self.rng.range(65537, u64::from(self.info.max_payload)) as usize
            }
        }
    }

    fn at_endpoint(&mut self, key: &Key) -> Option<Pkt> {
        let st = self.eps.get(key)?.st;
        let op = self.pick_op(st)?;
        let ep = self.eps.get(key)?;
        let mut p = self.honest(key, ep, op);
        let ty = ep.ty;
        let credit = ep
            .core_buf_alloc
            .wrapping_sub(ep.peer_tx.wrapping_sub(ep.core_fwd_cnt));
        match op {
            op::RW => {
                let mut len = self.pick_len();
                if !self.cfg.skip.lies && self.rng.chance(30) {
                    // Data beyond the credit the core advertised.
                    len = (credit as usize)
                        .saturating_add(self.rng.range(1, 4096) as usize)
                        .min(self.info.max_payload as usize);
                    self.stats.overcredit += 1;
                }
                p.payload = len;
                p.hdr.len = len as u32;
                if ty == Ty::SeqPacket {
                    if self.rng.chance(500) {
                        p.hdr.flags |= SEQ_EOM;
                    }
                    if self.rng.chance(100) {
                        p.hdr.flags |= SEQ_EOR;
                    }
                }
            }
            op::SHUTDOWN => p.hdr.flags = self.rng.range(0, 3) as u32,
            op::REQUEST if self.rng.chance(500) => {
                // A REQUEST from a new port to the same local port.
                p.hdr.src_port = self.new_peer_port();
            }
            _ => {}
        }
        let honest = self.mutate(&mut p, Some(ty));
        if honest && op == op::RW {
            if let Some(ep) = self.eps.get_mut(key) {
                ep.peer_tx = ep.peer_tx.wrapping_add(p.payload as u32);
            }
        }
        Some(p)
    }

    fn at_listener(&mut self) -> Option<Pkt> {
        let i = self.rng.below(self.lst.len() as u64) as usize;
        let (port, ty) = (self.lst[i].port, self.lst[i].ty);
        let tp = self.pick_tp();
        let mut p = self.request(&tp, port, ty);
        if self.rng.chance(200) || self.cfg.skip.op(op::REQUEST) {
            // Anything else to a listener.
            p.hdr.op = self.pick_op(St::Established)?;
            if p.hdr.op == op::RW {
                let len = self.pick_len();
                p.payload = len;
                p.hdr.len = len as u32;
            }
        }
        self.mutate(&mut p, Some(ty));
        Some(p)
    }

    fn random_cid(&mut self) -> u64 {
        let (r32, r64) = (self.rng.next_u32(), self.rng.next_u64());
        self.rng.pick(&[
            0,
            1,
            2,
            3,
            4,
            u64::from(u32::MAX),
            u64::from(u32::MAX - 1),
            1 << 32,
            (1 << 32) | 2,
            (1 << 32) | 3,
            u64::MAX,
            u64::from(r32),
            r64,
        ])
    }

    fn random_port(&mut self) -> u32 {
        match self.rng.weighted(&[30, 20, 20, 10, 20]) {
            0 => self.rng.range(LISTEN_PORTS.0.into(), LISTEN_PORTS.1.into()) as u32,
            1 => self
                .rng
                .range(CONNECT_PORTS.0.into(), CONNECT_PORTS.1.into()) as u32,
            2 => self.rng.range(PEER_PORTS.0.into(), PEER_PORTS.1.into()) as u32,
            3 => self.rng.pick(&[0, 1, 1023, 1024, u32::MAX - 1, u32::MAX]),
            _ => self.rng.next_u32(),
        }
    }

    fn at_random(&mut self) -> Option<Pkt> {
        let tp = self.pick_tp();
        let opv = match self.rng.below(10) {
            8 => self.rng.range(8, u64::from(u16::MAX)) as u16,
            9 => self.rng.pick(&[op::REQUEST, op::RW, op::RST]),
            n => n as u16,
        };
        if self.cfg.skip.op(opv) {
            return None;
        }
        self.stats.random += 1;
        let right_cids = self.cfg.skip.wrong_cid || self.rng.chance(500);
        let (src_cid, dst_cid) = if right_cids {
            (
                u64::from(self.rng.pick(&tp.peer_cids)),
                u64::from(tp.local_cid),
            )
        } else {
            self.stats.wrong_cid += 1;
            (self.random_cid(), self.random_cid())
        };
        let ty = if self.cfg.skip.bad_type || self.rng.chance(700) {
            self.pick_ty().wire()
        } else {
            self.stats.bad_type += 1;
            let r = self.rng.next_u32() as u16;
            self.rng.pick(&[0, 3, u16::MAX, r])
        };
        let len = if opv == op::RW || self.rng.chance(50) {
            self.pick_len()
        } else {
            0
        };
        let mut p = Pkt {
            slot: tp.slot,
            hdr: Hdr {
                src_cid,
                dst_cid,
                src_port: self.random_port(),
                dst_port: self.random_port(),
                len: len as u32,
                ty,
                op: opv,
                flags: if self.rng.chance(500) {
                    self.rng.next_u32()
                } else {
                    0
                },
                buf_alloc: self.rng.next_u32(),
                fwd_cnt: self.rng.next_u32(),
            },
            payload: len,
        };
        self.lie(&mut p);
        Some(p)
    }

    /// Perturbs a packet aimed at a connection or listener of type `ty`; returns whether it
    /// stayed honest.
    fn mutate(&mut self, p: &mut Pkt, ty: Option<Ty>) -> bool {
        let mut honest = true;
        let skip = self.cfg.skip.clone();
        // CIDs.
        if !skip.wrong_cid && self.rng.chance(40) {
            honest = false;
            self.stats.wrong_cid += 1;
            if self.rng.chance(500) {
                p.hdr.src_cid = self.random_cid();
            } else {
                p.hdr.dst_cid = self.random_cid();
            }
        }
        // Type.
        if !skip.bad_type && self.rng.chance(30) {
            honest = false;
            self.stats.bad_type += 1;
            let other = match ty {
                Some(Ty::Stream) => wire::TYPE_SEQPACKET,
                _ => wire::TYPE_STREAM,
            };
            let r = self.rng.next_u32() as u16;
            p.hdr.ty = self.rng.pick(&[other, other, 0, 3, u16::MAX, r]);
        }
        // Flags.
        if self.rng.chance(50) {
            let r = self.rng.next_u32();
            p.hdr.flags = self.rng.pick(&[0, 1, 2, 3, 4, 0xff, u32::MAX, r]);
        }
        // Credit fields.
        if self.rng.chance(150) {
            let r = self.rng.next_u32();
            p.hdr.buf_alloc = self.rng.pick(&[0, 1, 4096, 65536, u32::MAX, r]);
        }
        if self.rng.chance(150) {
            let f = p.hdr.fwd_cnt;
            let r = self.rng.next_u32();
            p.hdr.fwd_cnt = self.rng.pick(&[
                0,
                f.wrapping_add(1 << 31),
                f.wrapping_sub(1),
                f.wrapping_add(PEER_BUF),
                u32::MAX,
                r,
            ]);
        }
        // Payload on a control packet.
        if p.hdr.op != op::RW && p.payload == 0 && self.rng.chance(20) {
            let len = self.rng.range(1, 256) as usize;
            p.payload = len;
            p.hdr.len = len as u32;
        }
        if self.lie(p) {
            honest = false;
        }
        honest
    }

    /// Sometimes makes the header's `len` disagree with the payload; returns whether it did.
    fn lie(&mut self, p: &mut Pkt) -> bool {
        if self.cfg.skip.lies || !self.rng.chance(30) {
            return false;
        }
        self.stats.len_lies += 1;
        let n = p.payload as u32;
        let r = self.rng.next_u32();
        p.hdr.len = self.rng.pick(&[
            n.wrapping_add(1),
            n.wrapping_sub(1),
            0,
            n.wrapping_mul(2).wrapping_add(1),
            u32::MAX,
            r,
        ]);
        if p.hdr.len == n {
            p.hdr.len = n ^ 1;
        }
        true
    }

    fn flood(&mut self, out: &mut Vec<Pkt>) {
        let allowed: Vec<Flood> = Flood::ALL
            .iter()
            .copied()
            .filter(|f| !self.cfg.skip.flood[*f as usize] && !self.cfg.skip.op(f.op()))
            .filter(|f| !(matches!(f, Flood::Overcredit) && self.cfg.skip.lies))
            .collect();
        if allowed.is_empty() {
            return;
        }
        let kind = self.rng.pick(&allowed);
        let n = match kind {
            Flood::Overcredit => self.rng.range(8, 48),
            _ => self.rng.range(16, 256),
        } as usize;
        self.stats.floods[kind as usize] += 1;
        let start = out.len();
        match kind {
            Flood::Request => {
                let (port, ty) = if self.lst.is_empty() || self.rng.chance(100) {
                    (self.random_port(), self.pick_ty())
                } else {
                    let i = self.rng.below(self.lst.len() as u64) as usize;
                    (self.lst[i].port, self.lst[i].ty)
                };
                let tp = self.pick_tp();
                for _ in 0..n {
                    let p = self.request(&tp, port, ty);
                    out.push(p);
                }
            }
            Flood::Rst => {
                for _ in 0..n {
                    if self.eps.is_empty() || self.rng.chance(200) {
                        if let Some(mut p) = self.at_random() {
                            p.hdr.op = op::RST;
                            out.push(p);
                        }
                    } else {
                        let key = self.pick_ep();
                        if let Some(ep) = self.eps.get(&key) {
                            let p = self.honest(&key, ep, op::RST);
                            out.push(p);
                        }
                    }
                }
            }
            _ => {
                if self.eps.is_empty() {
                    return;
                }
                let key = self.pick_ep();
                let Some(ep) = self.eps.get(&key) else {
                    return;
                };
                let base = self.honest(&key, ep, kind.op());
                let seqpacket = ep.ty == Ty::SeqPacket;
                for i in 0..n {
                    let mut p = base;
                    match kind {
                        Flood::TinyRw => {
                            p.payload = 1;
                            p.hdr.len = 1;
                            if seqpacket && i % 4 == 3 {
                                p.hdr.flags = SEQ_EOM;
                            }
                        }
                        Flood::Eom => p.hdr.flags = SEQ_EOM,
                        Flood::Overcredit => {
                            p.payload = 65536;
                            p.hdr.len = 65536;
                            if seqpacket {
                                p.hdr.flags = SEQ_EOM;
                            }
                        }
                        Flood::Shutdown => p.hdr.flags = self.rng.range(0, 3) as u32,
                        _ => {}
                    }
                    out.push(p);
                }
                if matches!(kind, Flood::TinyRw | Flood::Overcredit) {
                    if let Some(ep) = self.eps.get_mut(&key) {
                        let bytes = out[start..].iter().map(|p| p.payload as u32).sum::<u32>();
                        ep.peer_tx = ep.peer_tx.wrapping_add(bytes);
                    }
                }
            }
        }
        self.stats.flood_packets += (out.len() - start) as u64;
    }

    // ---- the end -------------------------------------------------------------------------

    /// Closes every socket, and answers as an honest peer would so that nothing waits for the
    /// close timeout: a RST to every connection the model knows.
    fn cleanup(&mut self) -> io::Result<()> {
        if let Some((slot, cid)) = self.restore_cid.take() {
            self.dev()?.event(slot, wire::EVENT_SET_CID, cid)?;
        }
        self.shared.stop();
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(st) => self.stats.worker.add(&st),
                Err(_) => return Err(io::Error::other("a worker thread panicked")),
            }
        }
        // Closing order follows the seed too.
        let mut keys: Vec<Key> = self.eps.keys().copied().collect();
        for i in (1..keys.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            keys.swap(i, j);
        }
        for k in &keys {
            if let Some(ep) = self.eps.get_mut(k) {
                if ep.fd.take().is_some() {
                    self.stats.closed += 1;
                }
            }
        }
        self.stats.closed += self.lst.len() as u64;
        self.lst.clear();
        self.react.clear();
        // Twice: the closes and resets may make the core send packets for connections the
        // model learns only now (children of REQUESTs still in flight).
        for _ in 0..2 {
            self.drain_feed(true)?;
            self.react.clear();
            let keys: Vec<Key> = self.eps.keys().copied().collect();
            let mut pkts = Vec::new();
            if !self.cfg.skip.op(op::RST) {
                for k in &keys {
                    if let Some(ep) = self.eps.get(k) {
                        pkts.push(self.honest(k, ep, op::RST));
                    }
                }
            }
            // Not counted against --packets: these only end the run's connections.
            let before = self.injected;
            self.send(&pkts)?;
            self.stats.cleanup_packets += self.injected - before;
            for k in &keys {
                self.set_state(k, St::Dead);
            }
        }
        self.drain_feed(true)?;
        self.react.clear();
        if let Some(path) = &self.cfg.model_out {
            let mut text = String::new();
            for (k, e) in &self.eps {
                text += &format!(
                    "{}:{} {}:{} slot {} {} {:?}\n",
                    e.local_cid,
                    k.local_port,
                    k.peer_cid,
                    k.peer_port,
                    e.slot,
                    if e.ty == Ty::Stream {
                        "stream"
                    } else {
                        "seqpacket"
                    },
                    e.st
                );
            }
            std::fs::write(path, text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(seed: u64, skip: Skip) -> Fuzzer {
        let cfg = Config {
            packets: 0,
            seed,
            device: "/nonexistent".into(),
            time_limit: None,
            skip,
            trace: false,
            progress_every: 0,
            model_out: None,
            workers: 0,
        };
        let info = Info {
            slots: SLOT_G2H | SLOT_H2G,
            cids: [2, 3, u32::MAX],
            max_payload: 128 * 1024,
            ..Info::default()
        };
        let mut f = Fuzzer::with_device(cfg, info, None).unwrap();
        // A model as the feed would build it: connections in every state, both types.
        for (i, st) in [St::Connecting, St::Established, St::Closing, St::Dead]
            .into_iter()
            .enumerate()
        {
            for ty in [Ty::Stream, Ty::SeqPacket] {
                let key = Key {
                    local_port: 1024 + i as u32,
                    peer_cid: 2,
                    peer_port: 7000 + ty as u32,
                };
                f.insert(key, SLOT_G2H, 3, ty, st);
                f.on_core(
                    Hdr {
                        src_cid: 3,
                        dst_cid: 2,
                        src_port: key.local_port,
                        dst_port: key.peer_port,
                        op: op::CREDIT_UPDATE,
                        ty: ty.wire(),
                        buf_alloc: 262144,
                        ..Hdr::default()
                    },
                    SLOT_G2H,
                );
            }
        }
        f
    }

    fn packets(f: &mut Fuzzer, n: usize) -> Vec<Pkt> {
        let mut out = Vec::new();
        while out.len() < n {
            f.generate(&mut out);
        }
        out
    }

    #[test]
    fn deterministic_and_well_formed() {
        let a = packets(&mut offline(7, Skip::default()), 20_000);
        let b = packets(&mut offline(7, Skip::default()), 20_000);
        let c = packets(&mut offline(8, Skip::default()), 20_000);
        let key = |v: &[Pkt]| v.iter().map(|p| (p.hdr, p.payload)).collect::<Vec<_>>();
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        let mut ops = [0u64; 9];
        let (mut lies, mut honest_rw) = (0, 0);
        for p in &a {
            assert!(p.payload <= 128 * 1024, "{p:?}");
            assert!(p.slot == SLOT_G2H || p.slot == SLOT_H2G);
            ops[op_index(p.hdr.op)] += 1;
            if p.hdr.len as usize != p.payload {
                lies += 1;
            } else if p.hdr.op == op::RW {
                honest_rw += 1;
            }
        }
        assert!(ops.iter().all(|&n| n > 0), "every operation: {ops:?}");
        assert!(lies > 0 && honest_rw > 0);
    }

    #[test]
    fn skipped_classes_stay_out() {
        let mut skip = Skip::parse("rw,lies,big,wrong-cid").unwrap();
        skip.floods = true;
        let mut f = offline(3, skip);
        for p in packets(&mut f, 20_000) {
            assert_ne!(p.hdr.op, op::RW);
            assert_eq!(p.hdr.len as usize, p.payload);
            assert!(p.payload <= 65536);
            assert!(p.hdr.src_cid <= 6 && p.hdr.dst_cid <= 6, "{p:?}");
        }
        assert_eq!(f.stats.flood_packets, 0);
    }

    #[test]
    fn skip_names() {
        let s = Skip::parse("rw, lies,flood-eom,unknown-op,socket-io").unwrap();
        assert!(s.ops[op::RW as usize]);
        assert!(s.ops[OP_UNKNOWN]);
        assert!(s.lies && s.socket_io && !s.floods);
        assert!(s.flood[Flood::Eom as usize]);
        assert!(s.op(9));
        assert!(!s.op(op::RST));
        assert!(Skip::parse("nonsense").is_err());
        assert!(Skip::parse("flood-nonsense").is_err());
        assert!(Skip::parse("").is_ok());
    }

    #[test]
    fn op_indices() {
        assert_eq!(op_index(0), 0);
        assert_eq!(op_index(7), 7);
        assert_eq!(op_index(8), OP_UNKNOWN);
        assert_eq!(op_index(u16::MAX), OP_UNKNOWN);
    }
}
