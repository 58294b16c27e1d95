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
    /// The payload does not fit the advertised buffer: the peer ignored our credit.
    Payload,
    /// Too many queued packets for the buffer (per-packet overhead would exceed it).
    Packets,
}

/// The receiver side: what we advertise and what is queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCredit {
    /// Our receive buffer, advertised in every packet.
    pub buf_alloc: u32,
    /// Payload bytes consumed by the reader (advanced per whole packet), free-running.
    pub fwd_cnt: u32,
    /// The `fwd_cnt` last advertised to the peer.
    pub last_fwd_cnt: u32,
    /// Readable bytes queued.
    pub rx_bytes: u32,
    /// Payload bytes of queued packets not yet fully consumed.
    pub buf_used: u32,
    /// Queued packets (after merging), for the per-packet overhead bound.
    pub pkts: u32,
    /// Complete SEQPACKET messages queued (packets with EOM).
    pub msg_count: u32,
}

impl RxCredit {
    /// A receiver with buffer `buf_alloc` and nothing queued.
    pub fn new(buf_alloc: u32) -> Self {
        RxCredit {
            buf_alloc,
            ..Default::default()
        }
    }

    /// Admits a packet of `len` payload bytes (`virtio_transport_inc_rx_pkt`).
    ///
    /// `merged` says the payload is appended to the queue's last packet instead of being queued
    /// on its own; `pkt_overhead` is the memory a queued packet costs beyond its payload.  The
    /// payload must fit `buf_alloc`, and the queued packets' overhead must too.
    pub fn admit(
        &mut self,
        len: u32,
        eom: bool,
        merged: bool,
        pkt_overhead: u32,
    ) -> Result<(), Overrun> {
        if self.buf_used as u64 + len as u64 > self.buf_alloc as u64 {
            return Err(Overrun::Payload);
        }
        let pkts = self.pkts as u64 + u64::from(!merged);
        if pkts * pkt_overhead as u64 > self.buf_alloc as u64 {
            return Err(Overrun::Packets);
        }
        self.rx_bytes += len;
        self.buf_used += len;
        self.pkts = pkts as u32;
        self.msg_count += u32::from(eom);
        Ok(())
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

    /// Accounts the merging of two queued packets into one (queue collapse).
    pub fn merged(&mut self) {
        self.pkts = self.pkts.saturating_sub(1);
    }

    /// The credit fields to put in an outgoing packet; the peer will know our `fwd_cnt` then.
    pub fn stamp(&mut self) -> (u32, u32) {
        self.last_fwd_cnt = self.fwd_cnt;
        (self.buf_alloc, self.fwd_cnt)
    }

    /// Consumed bytes the peer has not been told about.
    pub fn unadvertised(&self) -> u32 {
        self.fwd_cnt.wrapping_sub(self.last_fwd_cnt)
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
        rx.admit(64 * 1024, false, false, 0).unwrap();
        rx.admit(64 * 1024, false, false, 0).unwrap();
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
        assert_eq!(rx.admit(4097, false, false, 0), Err(Overrun::Payload));
        rx.admit(4096, false, false, 0).unwrap();
        assert_eq!(rx.admit(1, false, true, 0), Err(Overrun::Payload));
        let mut rx = RxCredit::new(4096);
        assert_eq!(rx.admit(1, false, false, 4097), Err(Overrun::Packets));
        assert_eq!(rx.admit(1, false, false, 2048), Ok(()));
        assert_eq!(rx.admit(1, false, false, 2048), Ok(()));
        assert_eq!(rx.admit(1, false, false, 2048), Err(Overrun::Packets));
        assert_eq!(rx.admit(1, false, true, 2048), Ok(()));
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
                            prop_assert_eq!(rx.admit(len, false, false, 0), Ok(()));
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
                } else if rx.admit(len, eom, false, 0).is_ok() {
                    queued.push_back((len, eom));
                }
                prop_assert!(rx.buf_used <= rx.buf_alloc);
                prop_assert!(rx.rx_bytes <= rx.buf_used);
                prop_assert_eq!(rx.msg_count as usize, queued.iter().filter(|q| q.1).count());
            }
        }
    }
}
