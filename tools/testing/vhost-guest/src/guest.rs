// SPDX-License-Identifier: GPL-2.0

//! A minimal virtio-vsock guest stack over a [`Device`]: connections with credit accounting on
//! both sides, listeners, and the automatic answers a Linux guest gives (RESPONSE to a
//! REQUEST for a listening port, RST otherwise, CREDIT_UPDATE to CREDIT_REQUEST).
//!
//! It also checks the host: every packet must come from CID 2 to our CID, and the host must
//! never send more than the credit we advertised (`buf_alloc - (received - fwd_cnt)` as of the
//! last packet we sent).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rvsock_proto::hdr::{
    Hdr, Op, MAX_PKT_PAYLOAD, SEQ_EOM, SEQ_EOR, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

use crate::dev::{DevError, Device};

/// The host's CID.
pub const HOST_CID: u64 = 2;

/// Connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// REQUEST sent.
    Connecting,
    /// RESPONSE exchanged.
    Established,
    /// RST received (or sent).
    Reset,
}

/// One connection, keyed by (local port, peer port).
#[derive(Debug)]
pub struct Conn {
    /// `TYPE_STREAM` or `TYPE_SEQPACKET`.
    pub type_: u16,
    /// State.
    pub state: State,
    /// Our receive buffer (advertised `buf_alloc`).
    pub buf_alloc: u32,
    /// Bytes we consumed (advertised as `fwd_cnt`).
    pub fwd_cnt: u32,
    /// `buf_alloc` and `fwd_cnt` in the last packet we sent.
    pub adv: (u32, u32),
    /// Payload bytes received in all.
    pub rx_total: u32,
    /// Received, not consumed (stream).
    pub rx: VecDeque<u8>,
    /// Complete SEQPACKET messages received: bytes and whether EOR was set.
    pub msgs: VecDeque<(Vec<u8>, bool)>,
    /// The message being assembled.
    partial: Vec<u8>,
    /// Consume received data at once (and credit it back).
    pub auto_read: bool,
    /// Peer's `buf_alloc`, `fwd_cnt` as last seen.
    pub peer_buf_alloc: u32,
    /// Peer's consumed counter as last seen.
    pub peer_fwd_cnt: u32,
    /// Payload bytes we sent.
    pub tx_cnt: u32,
    /// SHUTDOWN flags the peer sent.
    pub peer_shutdown: u32,
    /// Every op received, in order (for the checks' messages).
    pub ops: Vec<(u16, u32)>,
    /// Credit the host overran: (in flight, advertised buf_alloc).
    pub overrun: Option<(u32, u32)>,
    /// CREDIT_UPDATEs received.
    pub credit_updates: u32,
}

impl Conn {
    fn new(type_: u16, buf_alloc: u32, state: State) -> Conn {
        Conn {
            type_,
            state,
            buf_alloc,
            fwd_cnt: 0,
            adv: (buf_alloc, 0),
            rx_total: 0,
            rx: VecDeque::new(),
            msgs: VecDeque::new(),
            partial: Vec::new(),
            auto_read: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            peer_shutdown: 0,
            ops: Vec::new(),
            overrun: None,
            credit_updates: 0,
        }
    }

    /// Bytes we may still send (`peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`).
    pub fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

/// Key of a connection: (our port, the host's port).
pub type Key = (u32, u32);

/// The guest stack.
pub struct Guest {
    /// The device.
    pub dev: Device,
    /// Connections.
    pub conns: HashMap<Key, Conn>,
    /// Listening ports and the type they accept, with the buf_alloc of new connections.
    pub listeners: HashMap<u32, (u16, u32)>,
    /// Connections accepted on listeners, not yet taken by a check.
    pub accepted: VecDeque<Key>,
    /// Packets that matched no connection and no listener (header only).
    pub stray: Vec<Hdr>,
    /// Addressing errors of the host (wrong src/dst CID).
    pub bad_addr: Vec<Hdr>,
    /// Ports never to answer (RST suppressed) for release tests.
    pub silent: HashSet<u32>,
}

/// Next local port for outgoing connections.
static NEXT_PORT: AtomicU32 = AtomicU32::new(40001);

/// Wait bound of one packet exchange step.
pub const STEP: Duration = Duration::from_secs(5);

impl Guest {
    /// A stack over a set-up device.
    pub fn new(dev: Device) -> Guest {
        Guest {
            dev,
            conns: HashMap::new(),
            listeners: HashMap::new(),
            accepted: VecDeque::new(),
            stray: Vec::new(),
            bad_addr: Vec::new(),
            silent: HashSet::new(),
        }
    }

    /// A fresh local port, never reused within the process: a host socket closed by an earlier
    /// check may still hold (cid, port) for up to 8 s (its close timer), and would take a new
    /// REQUEST from the same address.
    pub fn port(&mut self) -> u32 {
        NEXT_PORT.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a packet on connection `key` with fresh credit fields.
    pub fn send_on(
        &mut self,
        key: Key,
        op: Op,
        flags: u32,
        payload: &[u8],
    ) -> Result<(), DevError> {
        let Some(c) = self.conns.get_mut(&key) else {
            return Err(DevError::Device(format!("no connection {key:?}")));
        };
        let mut h = Hdr {
            src_cid: self.dev.cid,
            dst_cid: HOST_CID,
            src_port: key.0,
            dst_port: key.1,
            len: payload.len() as u32,
            type_: c.type_,
            op: op as u16,
            flags,
            buf_alloc: c.buf_alloc,
            fwd_cnt: c.fwd_cnt,
        };
        if op == Op::Rw {
            c.tx_cnt = c.tx_cnt.wrapping_add(payload.len() as u32);
        }
        c.adv = (c.buf_alloc, c.fwd_cnt);
        if op == Op::Rst {
            c.state = State::Reset;
            h.buf_alloc = 0;
            h.fwd_cnt = 0;
        }
        self.dev.send(&h, payload, STEP)
    }

    /// Sends a packet that belongs to no connection.
    pub fn send_hdr(&mut self, h: &Hdr, payload: &[u8]) -> Result<(), DevError> {
        self.dev.send(h, payload, STEP)
    }

    /// Handles one packet from the device.
    fn handle(&mut self, h: Hdr, payload: Vec<u8>) -> Result<(), DevError> {
        if h.src_cid != HOST_CID || h.dst_cid != self.dev.cid {
            self.bad_addr.push(h);
            return Ok(());
        }
        let key = (h.dst_port, h.src_port);
        let Some(c) = self.conns.get_mut(&key) else {
            return self.handle_unknown(h);
        };
        c.ops.push((h.op, h.flags));
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        let mut reply = None;
        match h.op() {
            Some(Op::Response) if c.state == State::Connecting => c.state = State::Established,
            Some(Op::Rst) => c.state = State::Reset,
            Some(Op::Rw) => {
                c.rx_total = c.rx_total.wrapping_add(payload.len() as u32);
                let in_flight = c.rx_total.wrapping_sub(c.adv.1);
                if in_flight > c.adv.0 && c.overrun.is_none() {
                    c.overrun = Some((in_flight, c.adv.0));
                }
                if c.type_ == TYPE_STREAM {
                    c.rx.extend(payload.iter());
                } else {
                    c.partial.extend_from_slice(&payload);
                    if h.flags & SEQ_EOM != 0 {
                        let m = std::mem::take(&mut c.partial);
                        c.msgs.push_back((m, h.flags & SEQ_EOR != 0));
                    }
                }
                if c.auto_read {
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(payload.len() as u32);
                    // Credit back once half the buffer was consumed unannounced.
                    if c.fwd_cnt.wrapping_sub(c.adv.1) >= c.buf_alloc / 2 {
                        reply = Some(Op::CreditUpdate);
                    }
                }
            }
            Some(Op::CreditRequest) => reply = Some(Op::CreditUpdate),
            Some(Op::CreditUpdate) => c.credit_updates += 1,
            Some(Op::Shutdown) => c.peer_shutdown |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND),
            _ => {}
        }
        if let Some(op) = reply {
            self.send_on(key, op, 0, &[])?;
        }
        Ok(())
    }

    fn handle_unknown(&mut self, h: Hdr) -> Result<(), DevError> {
        let key = (h.dst_port, h.src_port);
        if h.op() == Some(Op::Request) {
            if let Some(&(type_, buf_alloc)) = self.listeners.get(&h.dst_port) {
                if type_ == h.type_ {
                    let mut c = Conn::new(type_, buf_alloc, State::Established);
                    c.ops.push((h.op, h.flags));
                    c.peer_buf_alloc = h.buf_alloc;
                    c.peer_fwd_cnt = h.fwd_cnt;
                    self.conns.insert(key, c);
                    self.accepted.push_back(key);
                    return self.send_on(key, Op::Response, 0, &[]);
                }
            }
        }
        self.stray.push(h);
        if self.silent.contains(&h.dst_port) {
            return Ok(());
        }
        match h.rst_reply() {
            Some(r) => self.send_hdr(&r, &[]),
            None => Ok(()),
        }
    }

    /// Processes packets for up to `d` (returns early once `done` holds).
    pub fn pump_until(
        &mut self,
        d: Duration,
        mut done: impl FnMut(&Guest) -> bool,
    ) -> Result<bool, DevError> {
        let until = Instant::now() + d;
        loop {
            if done(self) {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if let Some((h, p)) = self.dev.recv(left.min(Duration::from_millis(50)))? {
                self.handle(h, p)?;
            }
        }
    }

    /// Processes packets for `d`.
    pub fn pump(&mut self, d: Duration) -> Result<(), DevError> {
        self.pump_until(d, |_| false).map(|_| ())
    }

    /// Connects to the host's `port`; Ok(key) once established, Err(state) otherwise.
    pub fn connect(&mut self, port: u32, type_: u16, buf_alloc: u32) -> Result<Key, String> {
        let local = self.port();
        self.connect_from(local, port, type_, buf_alloc)
    }

    /// [`Guest::connect`] from a given local port.
    pub fn connect_from(
        &mut self,
        local: u32,
        port: u32,
        type_: u16,
        buf_alloc: u32,
    ) -> Result<Key, String> {
        let key = (local, port);
        self.conns
            .insert(key, Conn::new(type_, buf_alloc, State::Connecting));
        self.send_on(key, Op::Request, 0, &[])
            .map_err(|e| e.to_string())?;
        let ok = self
            .pump_until(STEP, |g| {
                g.conns
                    .get(&key)
                    .is_none_or(|c| c.state != State::Connecting)
            })
            .map_err(|e| e.to_string())?;
        match self.conns.get(&key).map(|c| c.state) {
            Some(State::Established) => Ok(key),
            Some(s) if ok => Err(format!("{s:?}")),
            _ => Err("no answer to REQUEST".into()),
        }
    }

    /// Sends `data` on a stream, never beyond the host's credit: waits for credit updates
    /// (bounded by `STEP` without progress), asking with CREDIT_REQUEST when stalled.
    pub fn write_all(&mut self, key: Key, data: &[u8]) -> Result<(), String> {
        let mut off = 0;
        let mut last_progress = Instant::now();
        let mut asked = false;
        while off < data.len() {
            let credit = self.conns.get(&key).map(|c| c.credit()).unwrap_or(0);
            let state = self.conns.get(&key).map(|c| c.state);
            if state != Some(State::Established) {
                return Err(format!("connection {state:?} after {off} bytes"));
            }
            if credit == 0 {
                if last_progress.elapsed() > STEP {
                    return Err(format!(
                        "no credit from the host for {STEP:?} after {off} bytes"
                    ));
                }
                if !asked && last_progress.elapsed() > Duration::from_secs(1) {
                    self.send_on(key, Op::CreditRequest, 0, &[])
                        .map_err(|e| e.to_string())?;
                    asked = true;
                }
                self.pump_until(Duration::from_millis(200), |g| {
                    g.conns.get(&key).is_some_and(|c| c.credit() > 0)
                })
                .map_err(|e| e.to_string())?;
                continue;
            }
            let n = (data.len() - off)
                .min(credit as usize)
                .min(MAX_PKT_PAYLOAD as usize);
            self.send_on(key, Op::Rw, 0, &data[off..off + n])
                .map_err(|e| e.to_string())?;
            off += n;
            last_progress = Instant::now();
            asked = false;
            // Take what came in meanwhile (credit updates) without waiting.
            while let Some((h, p)) = self.dev.recv(Duration::ZERO).map_err(|e| e.to_string())? {
                self.handle(h, p)?;
            }
        }
        Ok(())
    }

    /// Consumes `n` bytes of stream data (the application reads) and returns them.
    pub fn consume(&mut self, key: Key, n: usize) -> Vec<u8> {
        let Some(c) = self.conns.get_mut(&key) else {
            return Vec::new();
        };
        let n = n.min(c.rx.len());
        let out: Vec<u8> = c.rx.drain(..n).collect();
        c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
        out
    }
}

impl From<DevError> for String {
    fn from(e: DevError) -> String {
        e.to_string()
    }
}
