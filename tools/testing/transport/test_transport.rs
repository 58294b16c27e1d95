// SPDX-License-Identifier: GPL-2.0

//! A transport for tests: it records every packet the core sends through it and answers like a
//! peer would, as configured.  `rvsock_test_transport.ko` loads it from module parameters for
//! userspace checks; the KUnit suites register it directly.
//!
//! Besides the short log the KUnit suites read, a transport can keep a longer feed of the raw
//! headers the core sent ([`TestTransport::enable_feed`]), which `/dev/rvsock_inject` hands to
//! userspace: a packet fuzzer playing the peer learns from it what the core answered.

use crate::kx::skb::SkBuff;
use crate::kx::transport::{Core, Transport};
use crate::kx::Gfp;
use crate::proto::hdr::{Hdr, Op, HDR_LEN};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::alloc::KVVec;
use kernel::prelude::*;
use kernel::sync::SpinLock;

/// How the test transport answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Answer {
    /// Records only; nothing comes back.
    Nothing = 0,
    /// Answers everything but a RST with a RST, as when no peer listens.
    Rst = 1,
    /// Plays a peer that accepts: RESPONSE to a REQUEST, a CREDIT_UPDATE for data, RST to a
    /// SHUTDOWN.
    Accept = 2,
}

impl Answer {
    /// From a module parameter value.
    pub(crate) fn from_u32(v: u32) -> Answer {
        match v {
            1 => Answer::Rst,
            2 => Answer::Accept,
            _ => Answer::Nothing,
        }
    }
}

const LOG_LEN: usize = 32;

/// The packets seen, as a ring of the last `LOG_LEN` headers.
pub(crate) struct Log {
    hdrs: [Hdr; LOG_LEN],
    total: usize,
}

/// The raw headers the core sent, oldest first, for userspace to read: a ring that keeps the
/// oldest unread headers and counts the ones it had no room for.
///
/// # Invariants
///
/// `len <= ring.len()` and `head < ring.len()` whenever `ring` is not empty.
pub(crate) struct Feed {
    ring: KVVec<[u8; HDR_LEN]>,
    head: usize,
    len: usize,
    lost: u64,
}

impl Feed {
    /// A feed that keeps nothing until [`TestTransport::enable_feed`] gives it room.
    fn new() -> Self {
        // INVARIANT: Empty ring, empty feed.
        Feed {
            ring: KVVec::new(),
            head: 0,
            len: 0,
            lost: 0,
        }
    }

    fn push(&mut self, raw: &[u8; HDR_LEN]) {
        let cap = self.ring.len();
        if cap == 0 {
            return;
        }
        if self.len == cap {
            self.lost += 1;
            return;
        }
        let i = (self.head + self.len) % cap;
        self.ring[i] = *raw;
        // INVARIANT: `len < cap` before the increment.
        self.len += 1;
    }

    fn pop(&mut self) -> Option<[u8; HDR_LEN]> {
        if self.len == 0 {
            return None;
        }
        let raw = self.ring[self.head];
        // INVARIANT: `ring` is not empty since `len > 0`.
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
        Some(raw)
    }
}

/// The test transport.
#[pin_data]
pub(crate) struct TestTransport {
    name: &'static CStr,
    answer: AtomicU8,
    verbose: AtomicBool,
    /// Payload bytes received, echoed as the peer's `fwd_cnt` in credit updates.
    consumed: AtomicU32,
    /// Packets the core sent through this transport.
    sent: AtomicU64,
    #[pin]
    log: SpinLock<Log>,
    #[pin]
    feed: SpinLock<Feed>,
}

impl TestTransport {
    /// A test transport called `name` answering as `answer`; `verbose` logs every packet.
    pub(crate) fn new(
        name: &'static CStr,
        answer: Answer,
        verbose: bool,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            name,
            answer: AtomicU8::new(answer as u8),
            verbose: AtomicBool::new(verbose),
            consumed: AtomicU32::new(0),
            sent: AtomicU64::new(0),
            log <- kernel::new_spinlock!(Log { hdrs: [Hdr::default(); LOG_LEN], total: 0 }, "rvsock_test:log"),
            feed <- kernel::new_spinlock!(Feed::new(), "rvsock_test:feed"),
        }? Error)
    }

    /// Keeps the next `len` headers the core sends until [`TestTransport::read_feed`] takes
    /// them; what was kept before is forgotten.
    pub(crate) fn enable_feed(&self, len: usize) -> Result {
        let ring = KVVec::from_elem([0u8; HDR_LEN], len, GFP_KERNEL)?;
        let old = {
            let mut f = self.feed.lock();
            f.head = 0;
            f.len = 0;
            f.lost = 0;
            // INVARIANT: The feed is empty, so any ring length fits.
            core::mem::replace(&mut f.ring, ring)
        };
        // The old ring is freed outside the spinlock.
        drop(old);
        Ok(())
    }

    /// Moves the oldest kept headers into `out`, as many as fit; returns how many it moved and
    /// how many headers were lost since the last call for want of room.
    pub(crate) fn read_feed(&self, out: &mut [[u8; HDR_LEN]]) -> (usize, u64) {
        let mut f = self.feed.lock();
        let mut n = 0;
        for slot in out.iter_mut() {
            let Some(raw) = f.pop() else { break };
            *slot = raw;
            n += 1;
        }
        let lost = core::mem::take(&mut f.lost);
        (n, lost)
    }

    /// Packets the core sent through this transport since it was registered.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Changes how it answers.
    pub(crate) fn set_answer(&self, a: Answer) {
        self.answer.store(a as u8, Ordering::Release);
    }

    /// Packets seen so far.
    pub(crate) fn count(&self) -> usize {
        self.log.lock().total
    }

    /// Packets seen with operation `op`, among the last ones kept.
    pub(crate) fn count_op(&self, op: Op) -> usize {
        let l = self.log.lock();
        let kept = l.total.min(LOG_LEN);
        (0..kept)
            .filter(|i| l.hdrs[(l.total - 1 - i) % LOG_LEN].op == op as u16)
            .count()
    }

    /// The last packet seen.
    pub(crate) fn last(&self) -> Option<Hdr> {
        let l = self.log.lock();
        (l.total > 0).then(|| l.hdrs[(l.total - 1) % LOG_LEN])
    }

    /// Forgets what was seen.
    pub(crate) fn clear(&self) {
        self.log.lock().total = 0;
    }

    /// Hands a packet to the core as if it came from the peer.
    pub(crate) fn inject(core: &Core<'_>, hdr: &Hdr, payload: &[u8]) -> Result {
        let mut skb = SkBuff::alloc_pkt(payload.len() as u32, Gfp::Atomic)?;
        skb.fill_from_slice(payload)?;
        let mut h = *hdr;
        h.len = payload.len() as u32;
        skb.set_hdr(&h);
        core.recv(skb);
        Ok(())
    }

    /// Hands a packet to the core with exactly the header bytes `raw`, whatever its `len`
    /// field says about `payload` (a peer may lie), in a linear buffer.
    pub(crate) fn inject_raw(
        core: &Core<'_>,
        raw: &[u8; HDR_LEN],
        payload: &[u8],
        gfp: Gfp,
    ) -> Result {
        core.recv(Self::build_raw(raw, payload, gfp)?);
        Ok(())
    }

    /// The packet [`TestTransport::inject_raw`] hands to the core.
    pub(crate) fn build_raw(raw: &[u8; HDR_LEN], payload: &[u8], gfp: Gfp) -> Result<SkBuff> {
        let len = u32::try_from(payload.len()).map_err(|_| EINVAL)?;
        let mut skb = SkBuff::alloc_linear_pkt(len, gfp)?;
        skb.fill_from_slice(payload)?;
        // Every header byte is a field of `Hdr`, so encoding the decoded header gives `raw` back.
        skb.set_hdr(&Hdr::decode(raw));
        Ok(skb)
    }

    fn reply(h: &Hdr, op: Op) -> Hdr {
        Hdr {
            src_cid: h.dst_cid,
            dst_cid: h.src_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            len: 0,
            type_: h.type_,
            op: op as u16,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        }
    }
}

fn op_name(op: u16) -> &'static str {
    match Op::from_u16(op) {
        Some(Op::Request) => "REQUEST",
        Some(Op::Response) => "RESPONSE",
        Some(Op::Rst) => "RST",
        Some(Op::Shutdown) => "SHUTDOWN",
        Some(Op::Rw) => "RW",
        Some(Op::CreditUpdate) => "CREDIT_UPDATE",
        Some(Op::CreditRequest) => "CREDIT_REQUEST",
        _ => "INVALID",
    }
}

impl Transport for TestTransport {
    fn send_pkt(&self, core: &Core<'_>, skb: SkBuff) -> Result {
        let Some(h) = skb.hdr() else {
            return Err(EINVAL);
        };
        {
            let mut l = self.log.lock();
            let i = l.total % LOG_LEN;
            l.hdrs[i] = h;
            l.total += 1;
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.feed.lock().push(&h.encode());
        if self.verbose.load(Ordering::Relaxed) {
            pr_info!(
                "{} saw {} {}:{} -> {}:{} len {}\n",
                self.name.to_str().unwrap_or("?"),
                op_name(h.op),
                h.src_cid,
                h.src_port,
                h.dst_cid,
                h.dst_port,
                h.len
            );
        }
        drop(skb);
        let answer = Answer::from_u32(u32::from(self.answer.load(Ordering::Acquire)));
        let op = h.op();
        let back = match (answer, op) {
            (Answer::Nothing, _) | (_, Some(Op::Rst)) => None,
            (Answer::Rst, _) => Some(Self::reply(&h, Op::Rst)),
            (Answer::Accept, Some(Op::Request)) => Some(Self::reply(&h, Op::Response)),
            (Answer::Accept, Some(Op::Rw)) => {
                let c = self
                    .consumed
                    .fetch_add(h.len, Ordering::AcqRel)
                    .wrapping_add(h.len);
                let mut r = Self::reply(&h, Op::CreditUpdate);
                r.fwd_cnt = c;
                Some(r)
            }
            (Answer::Accept, Some(Op::Shutdown)) => Some(Self::reply(&h, Op::Rst)),
            (Answer::Accept, _) => None,
        };
        if let Some(r) = back {
            Self::inject(core, &r, &[])?;
        }
        Ok(())
    }

    fn seqpacket_allow(&self, _remote_cid: u32) -> bool {
        true
    }
}
