// SPDX-License-Identifier: GPL-2.0

//! Credit-based flow control (virtio-vsock), both directions of one connection.
//!
//! Every packet carries the sender's `buf_alloc` (its receive buffer) and `fwd_cnt` (bytes its
//! reader has consumed, free-running modulo 2^32).  A sender keeps `tx_cnt`, the bytes it has
//! sent, and may have at most `min(peer_buf_alloc, own buf_alloc) - (tx_cnt - peer_fwd_cnt)`
//! bytes in flight.  The receiver admits a packet only if its payload fits its buffer, and tells
//! the sender about consumed bytes with a CREDIT_UPDATE when the sender could otherwise stall.
//!
//! All counters use wrapping arithmetic, as on the wire; the window computations are done in
//! `i64` so that a peer shrinking its buffer, or lying, never makes the space go negative or
//! huge.

use super::hdr::MAX_PKT_PAYLOAD;

/// The sender side: how much the peer lets us send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCredit {
    /// Payload bytes sent (or reserved for sending), free-running.
    pub tx_cnt: u32,
    /// The peer's last advertised `fwd_cnt`.
    pub peer_fwd_cnt: u32,
    /// The peer's last advertised `buf_alloc`.
    pub peer_buf_alloc: u32,
}

impl TxCredit {
    /// Records the credit fields of a packet received from the peer.
    pub fn update(&mut self, peer_buf_alloc: u32, peer_fwd_cnt: u32) {
        self.peer_buf_alloc = peer_buf_alloc;
        self.peer_fwd_cnt = peer_fwd_cnt;
    }

    /// Bytes in flight: sent but not yet consumed by the peer's reader, as far as we know.
    pub fn in_flight(&self) -> u32 {
        self.tx_cnt.wrapping_sub(self.peer_fwd_cnt)
    }

    /// The send window: the peer's buffer, capped by our own so that a peer cannot make us queue
    /// more than our own buffer configuration allows (`virtio_transport_tx_buf_size`).
    pub fn window(&self, own_buf_alloc: u32) -> u32 {
        self.peer_buf_alloc.min(own_buf_alloc)
    }

    /// Bytes that may be sent now.
    pub fn space(&self, own_buf_alloc: u32) -> u32 {
        let space = self.window(own_buf_alloc) as i64 - self.in_flight() as i64;
        space.clamp(0, u32::MAX as i64) as u32
    }

    /// Reserves up to `want` bytes of credit and returns how many were granted.
    pub fn reserve(&mut self, want: u32, own_buf_alloc: u32) -> u32 {
        let n = want.min(self.space(own_buf_alloc));
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
        n
    }

    /// Returns `n` reserved bytes that were not sent after all.
    pub fn unreserve(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_sub(n);
    }
}

/// Why a received packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overrun {
    /// The payload goes beyond the credit we ever advertised: the peer ignored it.
    Payload,
    /// Too many queued packets for the buffer (their overhead would exceed it).
    Packets,
}

/// Memory a queued packet costs beyond its payload, until the kernel glue sets the real figure
/// (`SKB_TRUESIZE(0)`, which depends on the kernel's configuration).
pub const DEFAULT_PKT_COST: u32 = 768;

/// The fewest packets a receive queue may hold, whatever its buffer size: upstream allows
/// `buf_alloc / SKB_TRUESIZE(0)` packets, which is none below about 600 bytes.
pub const MIN_PKTS: u32 = 64;

/// The receiver side: what we advertise and what is queued.
///
/// Credit is kept in the sender's own terms: the peer counts the payload bytes it sent
/// (`tx_cnt`) and may send while `tx_cnt - fwd_cnt < buf_alloc` for the last `(buf_alloc,
/// fwd_cnt)` we sent it, that is until `tx_cnt` reaches `fwd_cnt + buf_alloc`, the *limit* of
/// that advertisement.  [`RxCredit::granted`] is the highest limit ever advertised: a peer that
/// keeps to its credit never sends beyond it, whatever order our packets reached it in and
/// however the buffer size changed since.  Admission checks exactly that, so a packet an honest
/// peer sent is never refused, and a lowered buffer does not reset a connection whose peer sent
/// under the old one.
///
/// For SEQPACKET ([`RxCredit::shaped`]), messages cannot share a queued packet, so many small
/// messages cost far more memory than their payload.  Once the queue holds half the packets it
/// may ([`RxCredit::max_pkts`]), the limit we advertise lets the peer send only as many more
/// bytes as packets fit below [`RxCredit::shaped_cap`]: an honest sender then waits for the
/// reader (or gets `EAGAIN`) instead of making us reset the connection.  The advertised
/// `buf_alloc` stays the buffer size (a smaller one would make the peer's large messages fail
/// with `EMSGSIZE`); the advertised `fwd_cnt` lags instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxCredit {
    /// Our receive buffer, advertised in every packet.
    pub buf_alloc: u32,
    /// Payload bytes consumed by the reader (advanced per whole packet), free-running.
    pub fwd_cnt: u32,
    /// The highest limit (`fwd_cnt + buf_alloc` as sent) ever advertised, free-running.
    pub granted: u32,
    /// The limit of the last advertisement.
    pub adv_limit: u32,
    /// Readable bytes queued.
    pub rx_bytes: u32,
    /// Payload bytes of queued packets not yet fully consumed.
    pub buf_used: u32,
    /// Queued packets (after merging), for the per-packet overhead bound.
    pub pkts: u32,
    /// Complete SEQPACKET messages queued (packets with EOM).
    pub msg_count: u32,
    /// Memory a queued packet costs beyond its payload.
    pub pkt_cost: u32,
    /// Shape the advertised credit by the packets queued (SEQPACKET).
    pub shaped: bool,
}

impl Default for RxCredit {
    fn default() -> Self {
        RxCredit::new(0)
    }
}

impl RxCredit {
    /// A receiver with buffer `buf_alloc` and nothing queued; the peer may send `buf_alloc`
    /// bytes (what our first packet will advertise).
    pub const fn new(buf_alloc: u32) -> Self {
        RxCredit {
            buf_alloc,
            fwd_cnt: 0,
            granted: buf_alloc,
            adv_limit: buf_alloc,
            rx_bytes: 0,
            buf_used: 0,
            pkts: 0,
            msg_count: 0,
            pkt_cost: DEFAULT_PKT_COST,
            shaped: false,
        }
    }

    /// Payload bytes received so far (consumed or queued), free-running: the peer's `tx_cnt` as
    /// far as it reached us.
    pub fn received(&self) -> u32 {
        self.fwd_cnt.wrapping_add(self.buf_used)
    }

    /// Payload bytes the peer may still send: up to the highest limit ever advertised.
    /// (Admission keeps `received()` at or below `granted`.)
    pub fn entitlement(&self) -> u32 {
        self.granted.wrapping_sub(self.received())
    }

    /// How far limit `limit` is beyond what the reader consumed.  Every limit we make is at or
    /// beyond `fwd_cnt` when made, and `granted` stays beyond it, so this orders them even
    /// for buffers above 2 GiB.
    fn ahead(&self, limit: u32) -> u32 {
        limit.wrapping_sub(self.fwd_cnt)
    }

    /// The most packets the queue may hold: upstream's `buf_alloc / SKB_TRUESIZE(0)`, taken of
    /// the largest buffer the peer may still fill (a lowered buffer keeps the old bound until
    /// the peer's old credit is used up), and never fewer than [`MIN_PKTS`].
    pub fn max_pkts(&self) -> u32 {
        let fillable = self.ahead(self.granted);
        (self.buf_alloc.max(fillable) / self.pkt_cost.max(1)).max(MIN_PKTS)
    }

    /// Admits a packet of `len` payload bytes (`virtio_transport_inc_rx_pkt`).
    ///
    /// `merged` says the payload joins the queue's last packet instead of being queued on its
    /// own.  The payload must be within the credit ever advertised, and the queued packets
    /// must not exceed [`RxCredit::max_pkts`].
    pub fn admit(&mut self, len: u32, eom: bool, merged: bool) -> Result<(), Overrun> {
        if len > self.entitlement() {
            return Err(Overrun::Payload);
        }
        let pkts = self.pkts + u32::from(!merged);
        if pkts > self.max_pkts() {
            return Err(Overrun::Packets);
        }
        self.rx_bytes += len;
        self.buf_used += len;
        self.pkts = pkts;
        self.msg_count += u32::from(eom);
        Ok(())
    }

    /// Whether the queue is long enough that small payloads should be packed into shared
    /// buffers rather than queued one packet each: an eighth of [`RxCredit::max_pkts`].
    pub fn under_pressure(&self) -> bool {
        self.pkts >= self.max_pkts() / 8
    }

    /// Accounts `bytes` read from a queued packet without finishing it.
    pub fn read(&mut self, bytes: u32) {
        self.rx_bytes = self.rx_bytes.saturating_sub(bytes);
    }

    /// Accounts a queued packet of `pkt_len` payload bytes that is now fully consumed, of which
    /// `unread` bytes had not been counted by [`RxCredit::read`] yet.
    pub fn consume(&mut self, pkt_len: u32, unread: u32, eom: bool) {
        self.rx_bytes = self.rx_bytes.saturating_sub(unread);
        self.buf_used = self.buf_used.saturating_sub(pkt_len);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(pkt_len);
        self.pkts = self.pkts.saturating_sub(1);
        if eom {
            self.msg_count = self.msg_count.saturating_sub(1);
        }
    }

    /// Accounts the merging of two queued packets into one.
    pub fn merged(&mut self) {
        self.pkts = self.pkts.saturating_sub(1);
    }

    /// The packets an honest peer is held to on a shaped queue: [`RxCredit::max_pkts`] less a
    /// slack for the packets in flight before the peer learns it must wait (an eighth of the
    /// bound, at least 32, at most half).
    pub fn shaped_cap(&self) -> u32 {
        let max = self.max_pkts();
        let slack = (max / 8).max(32).min(max / 2);
        max - slack
    }

    /// The limit we would advertise now: the whole buffer beyond what the reader consumed, or,
    /// for a shaped queue holding more than half the packets it may, only as many bytes as
    /// packets fit below [`RxCredit::shaped_cap`] (each packet of an honest peer carries at least
    /// one byte).
    pub fn target(&self) -> u32 {
        let full = self.fwd_cnt.wrapping_add(self.buf_alloc);
        if !self.shaped || self.pkts <= self.max_pkts() / 2 {
            return full;
        }
        let room = self.shaped_cap().saturating_sub(self.pkts);
        let shaped = self.received().wrapping_add(room);
        if self.ahead(shaped) < self.ahead(full) {
            shaped
        } else {
            full
        }
    }

    /// The credit fields to put in an outgoing packet, `(buf_alloc, fwd_cnt)`; the peer will
    /// know this limit then.
    pub fn stamp(&mut self) -> (u32, u32) {
        let limit = self.target();
        self.adv_limit = limit;
        if self.ahead(limit) > self.ahead(self.granted) {
            self.granted = limit;
        }
        (self.buf_alloc, limit.wrapping_sub(self.buf_alloc))
    }

    /// Credit the peer has not been told about: how far the limit we would advertise is beyond
    /// the last one (for streams, the bytes consumed since the last advertisement).
    pub fn unadvertised(&self) -> u32 {
        let d = self.target().wrapping_sub(self.adv_limit) as i32;
        d.max(0) as u32
    }

    /// Whether the peer believes it may send much more than the shaped limit allows now, so a
    /// CREDIT_UPDATE should tell it (an eighth of [`RxCredit::max_pkts`] of slack, so that a
    /// queue growing one packet at a time does not answer every packet).
    pub fn shaping_overdue(&self) -> bool {
        let slack = (self.max_pkts() / 8).max(1);
        self.shaped && (self.adv_limit.wrapping_sub(self.target()) as i32) > slack as i32
    }

    /// Whether a stream read should be followed by a CREDIT_UPDATE: some consumption is
    /// unadvertised and either the peer believes less than a maximal packet fits, or fewer bytes
    /// are queued than the reader waits for (`SO_RCVLOWAT`), so the sender must be kicked.
    pub fn update_after_read(&self, rcvlowat: u32) -> bool {
        let delta = self.unadvertised();
        let free = self.buf_alloc.wrapping_sub(delta);
        delta != 0 && (free < MAX_PKT_PAYLOAD || self.rx_bytes < rcvlowat)
    }

    /// Whether raising `SO_RCVLOWAT` to `val` should send a CREDIT_UPDATE: fewer bytes are queued
    /// than the new mark and the peer does not know about all consumed bytes.
    pub fn update_on_rcvlowat(&self, val: u32) -> bool {
        self.rx_bytes < val && self.unadvertised() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn space_is_capped_by_own_buffer() {
        let mut tx = TxCredit::default();
        tx.update(1 << 20, 0);
        assert_eq!(tx.space(256 * 1024), 256 * 1024);
        assert_eq!(tx.reserve(300 * 1024, 256 * 1024), 256 * 1024);
        assert_eq!(tx.space(256 * 1024), 0);
        tx.update(1 << 20, 64 * 1024);
        assert_eq!(tx.space(256 * 1024), 64 * 1024);
    }

    #[test]
    fn shrinking_peer_buffer_gives_zero_not_underflow() {
        let mut tx = TxCredit::default();
        tx.update(128 * 1024, 0);
        tx.reserve(128 * 1024, u32::MAX);
        tx.update(4096, 0);
        assert_eq!(tx.space(u32::MAX), 0);
    }

    #[test]
    fn credit_update_rules_match_vsock_test_22_and_23() {
        // Test 23: 128 KiB buffer, SO_RCVLOWAT 64 KiB + 1, the reader consumes one 64 KiB packet
        // of two: free space is exactly 64 KiB, but too few bytes are queued.
        let mut rx = RxCredit::new(128 * 1024);
        rx.admit(64 * 1024, false, false).unwrap();
        rx.admit(64 * 1024, false, false).unwrap();
        rx.consume(64 * 1024, 64 * 1024, false);
        assert!(rx.update_after_read(64 * 1024 + 1));
        assert!(!rx.update_after_read(1));
        // Test 22: the mark is raised after the read.
        assert!(rx.update_on_rcvlowat(64 * 1024 + 1));
        rx.stamp();
        assert!(!rx.update_on_rcvlowat(64 * 1024 + 1));
    }

    #[test]
    fn overrun_is_refused() {
        let mut rx = RxCredit::new(4096);
        assert_eq!(rx.admit(4097, false, false), Err(Overrun::Payload));
        rx.admit(4096, false, false).unwrap();
        assert_eq!(rx.admit(1, false, true), Err(Overrun::Payload));
        // Zero-length packets take no credit but count as packets.
        let mut rx = RxCredit::new(4096);
        for _ in 0..MIN_PKTS {
            rx.admit(0, true, false).unwrap();
        }
        assert_eq!(rx.admit(0, true, false), Err(Overrun::Packets));
        assert_eq!(rx.admit(0, true, true), Ok(()));
    }

    #[test]
    fn packet_bound_follows_the_buffer() {
        let mut rx = RxCredit::new(1 << 20);
        rx.pkt_cost = 1024;
        assert_eq!(rx.max_pkts(), 1024);
        let mut rx = RxCredit::new(128);
        assert_eq!(rx.max_pkts(), MIN_PKTS);
        rx.buf_alloc = 0;
        assert_eq!(rx.max_pkts(), MIN_PKTS);
    }

    #[test]
    fn lowering_the_buffer_keeps_what_was_granted() {
        // The peer was told 256 KiB and sent it; then our buffer shrinks to 4 KiB and we tell
        // it so, but its packets were already on their way: they are admitted, not refused.
        let mut rx = RxCredit::new(256 * 1024);
        let _ = rx.stamp();
        rx.buf_alloc = 4096;
        let (b, f) = rx.stamp();
        assert_eq!((b, f), (4096, 0));
        for _ in 0..4 {
            rx.admit(64 * 1024, false, false).unwrap();
        }
        assert_eq!(rx.entitlement(), 0);
        assert_eq!(rx.admit(1, false, false), Err(Overrun::Payload));
        // Once the reader consumed it all, the new, smaller limit applies.
        for _ in 0..4 {
            rx.consume(64 * 1024, 64 * 1024, false);
        }
        let _ = rx.stamp();
        assert_eq!(rx.entitlement(), 4096);
    }

    #[test]
    fn granted_is_the_highest_limit_in_any_order() {
        let mut rx = RxCredit::new(8192);
        rx.admit(8192, false, false).unwrap();
        rx.consume(8192, 8192, false);
        let _ = rx.stamp(); // limit 16384
        rx.buf_alloc = 1024;
        let _ = rx.stamp(); // limit 9216: the peer may still act on the first one
        assert_eq!(rx.granted, 16384);
        assert_eq!(rx.entitlement(), 8192);
    }

    #[test]
    fn counters_wrap() {
        let mut rx = RxCredit::new(4096);
        rx.fwd_cnt = u32::MAX - 10;
        rx.granted = rx.fwd_cnt;
        let _ = rx.stamp();
        assert_eq!(rx.entitlement(), 4096);
        rx.admit(4096, false, false).unwrap();
        rx.consume(4096, 4096, false);
        let _ = rx.stamp();
        assert_eq!(rx.entitlement(), 4096);
        assert_eq!(rx.fwd_cnt, 4085);
    }

    #[test]
    fn shaping_only_for_seqpacket_and_only_when_many_packets_queue() {
        let mut rx = RxCredit::new(256 * 1024);
        rx.pkt_cost = 576;
        let max = rx.max_pkts();
        assert_eq!(max, 455);
        let cap = rx.shaped_cap();
        assert_eq!(cap, 455 - 56);
        for _ in 0..(max / 2 + 10) {
            rx.admit(1, true, false).unwrap();
        }
        // A stream (unshaped) queue advertises its whole buffer.
        assert_eq!(rx.target(), 256 * 1024);
        assert!(!rx.shaping_overdue());
        rx.shaped = true;
        // Shaped: only as many bytes as packets fit below the cap.
        assert_eq!(rx.target(), rx.received() + (cap - rx.pkts));
        assert!(rx.shaping_overdue());
        let (b, f) = rx.stamp();
        assert_eq!(b, 256 * 1024);
        assert_eq!(f.wrapping_add(b), rx.received() + (cap - rx.pkts));
        assert!(!rx.shaping_overdue());
        // What was granted before still stands.
        assert_eq!(rx.granted, 256 * 1024);
        // The reader catches up: the full buffer is advertised again.
        while rx.pkts > 0 {
            rx.consume(1, 1, true);
        }
        assert_eq!(rx.target(), rx.fwd_cnt + 256 * 1024);
        assert!(rx.unadvertised() > 0);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Send(u32),
        Deliver,
        Read(u32),
        Peer(u32, u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..200_000).prop_map(Step::Send),
            Just(Step::Deliver),
            (0u32..200_000).prop_map(Step::Read),
            (any::<u32>(), any::<u32>()).prop_map(|(a, f)| Step::Peer(a, f)),
        ]
    }

    proptest! {
        /// A sender that respects its credit never overruns an honest receiver, the window is
        /// never exceeded, and the counters stay consistent, whatever the order of events.
        #[test]
        fn honest_peers_never_overrun(buf in 1u32..(4 << 20), own in 1u32..(4 << 20), steps in proptest::collection::vec(step(), 1..200)) {
            let mut tx = TxCredit::default();
            let mut rx = RxCredit::new(buf);
            tx.update(rx.buf_alloc, rx.fwd_cnt);
            let mut wire: u64 = 0; // bytes sent, not yet admitted
            let mut queued: u64 = 0;
            for s in steps {
                match s {
                    Step::Send(n) => {
                        let got = tx.reserve(n, own);
                        prop_assert!(got <= n);
                        wire += got as u64;
                    }
                    Step::Deliver => {
                        if wire > 0 {
                            let len = wire.min(MAX_PKT_PAYLOAD as u64) as u32;
                            prop_assert_eq!(rx.admit(len, false, false), Ok(()));
                            wire -= len as u64;
                            queued += len as u64;
                        }
                    }
                    Step::Read(n) => {
                        let n = (n as u64).min(queued) as u32;
                        if n > 0 {
                            rx.consume(n, n, false);
                            queued -= n as u64;
                        }
                        if rx.update_after_read(1) || rx.unadvertised() > 0 {
                            let (a, f) = rx.stamp();
                            tx.update(a, f);
                        }
                    }
                    Step::Peer(..) => {}
                }
                prop_assert!(tx.in_flight() as u64 <= tx.window(own) as u64);
                prop_assert_eq!(rx.rx_bytes as u64, queued);
                prop_assert!(rx.buf_used <= rx.buf_alloc);
            }
        }

        /// Whatever a hostile peer advertises, space never exceeds the window and reserve never
        /// grants more than asked or than the space.
        #[test]
        fn hostile_credit_is_bounded(steps in proptest::collection::vec(step(), 1..200), own in 0u32..(8 << 20)) {
            let mut tx = TxCredit::default();
            for s in steps {
                match s {
                    Step::Peer(a, f) => tx.update(a, f),
                    Step::Send(n) => {
                        let space = tx.space(own);
                        let got = tx.reserve(n, own);
                        prop_assert!(got <= n && got <= space);
                    }
                    _ => {}
                }
                prop_assert!(tx.space(own) <= tx.window(own));
            }
        }

        /// The receiver's counters never underflow and admission never exceeds the buffer.
        #[test]
        fn receiver_counters_stay_in_bounds(buf: u32, ops in proptest::collection::vec((any::<u32>(), any::<bool>(), any::<bool>()), 1..100)) {
            let mut rx = RxCredit::new(buf);
            let mut queued: std::collections::VecDeque<(u32, bool)> = std::collections::VecDeque::new();
            for (len, take, eom) in ops {
                if take {
                    if let Some((l, e)) = queued.pop_front() {
                        rx.consume(l, l, e);
                    }
                } else if rx.admit(len, eom, false).is_ok() {
                    queued.push_back((len, eom));
                }
                prop_assert!(rx.buf_used <= rx.buf_alloc);
                prop_assert!(rx.rx_bytes <= rx.buf_used);
                prop_assert_eq!(rx.msg_count as usize, queued.iter().filter(|q| q.1).count());
            }
        }
    }
}
