// SPDX-License-Identifier: GPL-2.0

//! Guest-independent packet logic: gathering a TX packet from descriptor segments, splitting a
//! queued packet into RX buffers, and the bounded per-destination queue.
//!
//! Nothing here touches guest memory; the device glue feeds it bytes and capacities, so every
//! rule is unit-tested on the host.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use rvsock_proto::hdr::{Hdr, HDR_LEN, MAX_PKT_PAYLOAD, SEQ_EOM, SEQ_EOR, TYPE_SEQPACKET};

/// Largest TX packet accepted: header plus `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE` (64 KiB) of payload.
pub const MAX_PKT: usize = HDR_LEN + MAX_PKT_PAYLOAD as usize;

/// Why a TX descriptor chain was not turned into a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatherError {
    /// The chain ended before the 44-byte header was complete.
    ShortHeader(usize),
    /// The header announces more payload than a packet may carry.
    TooLong(u32),
    /// The chain ended before `hdr.len` payload bytes.
    ShortPayload {
        /// Payload bytes announced by the header.
        want: u32,
        /// Payload bytes the chain held.
        got: usize,
    },
    /// A descriptor could not be read (outside guest memory, write-only in a TX chain, ...).
    BadDescriptor,
}

impl fmt::Display for GatherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatherError::ShortHeader(n) => write!(f, "chain of {n} bytes is shorter than a header"),
            GatherError::TooLong(n) => write!(f, "hdr.len {n} is over {MAX_PKT_PAYLOAD}"),
            GatherError::ShortPayload { want, got } => {
                write!(
                    f,
                    "hdr.len {want} but only {got} payload bytes in the chain"
                )
            }
            GatherError::BadDescriptor => write!(f, "unreadable descriptor"),
        }
    }
}

/// Collects the bytes of one TX packet from any number of segments (descriptors).
///
/// It keeps at most [`MAX_PKT`] bytes and, once the header is known, no more than the header
/// and its `len` payload bytes: trailing bytes of a longer chain are ignored, as Linux's vhost
/// does.
#[derive(Debug, Default)]
pub struct Gather {
    buf: Vec<u8>,
    hdr: Option<Hdr>,
}

impl Gather {
    /// An empty gatherer.
    pub fn new() -> Gather {
        Gather::default()
    }

    /// How many more bytes the packet can use (0 once it is complete).
    pub fn wanted(&self) -> usize {
        match self.hdr {
            None => MAX_PKT - self.buf.len(),
            Some(h) => (HDR_LEN + h.len as usize).saturating_sub(self.buf.len()),
        }
    }

    /// Whether no more bytes are needed.
    pub fn complete(&self) -> bool {
        self.hdr.is_some() && self.wanted() == 0
    }

    /// Appends a segment; only the bytes the packet still wants are kept.
    pub fn push(&mut self, seg: &[u8]) -> Result<(), GatherError> {
        let mut seg = seg;
        if self.hdr.is_none() {
            let take = seg.len().min(HDR_LEN - self.buf.len());
            self.buf.extend_from_slice(&seg[..take]);
            seg = &seg[take..];
            if self.buf.len() == HDR_LEN {
                let h = Hdr::parse(&self.buf).ok_or(GatherError::ShortHeader(self.buf.len()))?;
                if h.len > MAX_PKT_PAYLOAD {
                    return Err(GatherError::TooLong(h.len));
                }
                self.buf.reserve_exact(h.len as usize);
                self.hdr = Some(h);
            }
        }
        if self.hdr.is_some() {
            let take = seg.len().min(self.wanted());
            self.buf.extend_from_slice(&seg[..take]);
        }
        Ok(())
    }

    /// The packet, once the chain has ended.
    pub fn finish(self) -> Result<Packet, GatherError> {
        let Some(hdr) = self.hdr else {
            return Err(GatherError::ShortHeader(self.buf.len()));
        };
        let got = self.buf.len() - HDR_LEN;
        if got < hdr.len as usize {
            return Err(GatherError::ShortPayload { want: hdr.len, got });
        }
        let mut payload = self.buf;
        payload.drain(..HDR_LEN);
        Ok(Packet::new(hdr, payload))
    }
}

/// Gathers a packet from a list of segments (what the device does descriptor by descriptor).
#[cfg(test)]
pub fn gather(segs: &[&[u8]]) -> Result<Packet, GatherError> {
    let mut g = Gather::new();
    for s in segs {
        if g.complete() {
            break;
        }
        g.push(s)?;
    }
    g.finish()
}

/// A packet waiting for a destination's RX buffers, and how much of it was already delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The header as the sender wrote it (`len` is the whole payload).
    pub hdr: Hdr,
    /// The whole payload.
    pub payload: Vec<u8>,
    /// Payload bytes already delivered in earlier pieces.
    pub off: usize,
}

impl Packet {
    /// A packet with nothing delivered yet; `hdr.len` is set to the payload length.
    pub fn new(mut hdr: Hdr, payload: Vec<u8>) -> Packet {
        hdr.len = payload.len() as u32;
        Packet {
            hdr,
            payload,
            off: 0,
        }
    }

    /// Bytes still to deliver (payload only).
    pub fn remaining(&self) -> usize {
        self.payload.len() - self.off
    }

    /// Queue accounting size: a header plus the remaining payload.
    pub fn cost(&self) -> usize {
        HDR_LEN + self.remaining()
    }

    /// The next piece that fits a buffer of `cap` bytes: its header and the payload range, or
    /// `None` if `cap` cannot even hold a header.
    ///
    /// Every piece carries a copy of the header with `len` set to the piece's payload; for
    /// SEQPACKET, `SEQ_EOM` and `SEQ_EOR` stay only on the last piece (as `drivers/vhost/vsock.c`
    /// does).  A zero-length packet is one header-only piece.
    pub fn next_piece(&self, cap: usize) -> Option<(Hdr, Range<usize>)> {
        let room = cap.checked_sub(HDR_LEN)?;
        let n = self.remaining().min(room);
        let mut h = self.hdr;
        h.len = n as u32;
        if n < self.remaining() && h.type_ == TYPE_SEQPACKET {
            h.flags &= !(SEQ_EOM | SEQ_EOR);
        }
        Some((h, self.off..self.off + n))
    }

    /// Marks `n` more payload bytes delivered; true when the packet is done.
    pub fn advance(&mut self, n: usize) -> bool {
        self.off = (self.off + n).min(self.payload.len());
        self.off == self.payload.len()
    }
}

/// Splits a whole packet into the pieces `cap`-byte buffers receive (for tests).
#[cfg(test)]
pub fn split(pkt: &Packet, cap: usize) -> Vec<(Hdr, Vec<u8>)> {
    let mut p = pkt.clone();
    let mut out = Vec::new();
    while let Some((h, r)) = p.next_piece(cap) {
        let n = r.len();
        out.push((h, p.payload[r].to_vec()));
        if p.advance(n) {
            break;
        }
    }
    out
}

/// A destination's FIFO of packets, bounded in bytes.
#[derive(Debug)]
pub struct DestQueue {
    q: VecDeque<Packet>,
    bytes: usize,
    limit: usize,
    /// Packets dropped because the queue was full.
    pub dropped: u64,
}

impl DestQueue {
    /// An empty queue holding at most `limit` bytes (headers counted).
    pub fn new(limit: usize) -> DestQueue {
        DestQueue {
            q: VecDeque::new(),
            bytes: 0,
            limit,
            dropped: 0,
        }
    }

    /// Appends a packet; false (and counted as dropped) if it would exceed the bound.
    pub fn push(&mut self, p: Packet) -> bool {
        let c = p.cost();
        if self.bytes + c > self.limit {
            self.dropped += 1;
            return false;
        }
        self.bytes += c;
        self.q.push_back(p);
        true
    }

    /// Takes the oldest packet.
    pub fn pop(&mut self) -> Option<Packet> {
        let p = self.q.pop_front()?;
        self.bytes -= p.cost();
        Some(p)
    }

    /// Puts a partly delivered packet back at the head (never refused: it was already counted).
    pub fn unpop(&mut self, p: Packet) {
        self.bytes += p.cost();
        self.q.push_front(p);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Queued packets.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Queued bytes (headers counted).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bound in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvsock_proto::hdr::{Op, TYPE_STREAM};

    fn hdr(len: u32, type_: u16, flags: u32) -> Hdr {
        Hdr {
            src_cid: 3,
            dst_cid: 4,
            src_port: 1000,
            dst_port: 1234,
            len,
            type_,
            op: Op::Rw as u16,
            flags,
            buf_alloc: 256 * 1024,
            fwd_cnt: 7,
        }
    }

    fn wire(h: &Hdr, payload: &[u8]) -> Vec<u8> {
        let mut v = h.encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_split_across_descriptors() {
        let payload: Vec<u8> = (0..100u8).collect();
        let h = hdr(100, TYPE_STREAM, 0);
        let w = wire(&h, &payload);
        // 10 + 20 + 14 header bytes, then the payload in 3 uneven pieces.
        let segs: Vec<&[u8]> = vec![&w[..10], &w[10..30], &w[30..44], &w[44..50], &w[50..]];
        let p = gather(&segs).unwrap();
        assert_eq!(p.hdr, h);
        assert_eq!(p.payload, payload);
        // A header and payload sharing one descriptor, split mid-payload.
        let p = gather(&[&w[..60], &w[60..]]).unwrap();
        assert_eq!(p.payload, payload);
    }

    #[test]
    fn sixteen_descriptors_of_4k() {
        let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
        let h = hdr(65536, TYPE_STREAM, 0);
        let hb = h.encode();
        let mut segs: Vec<&[u8]> = vec![&hb];
        segs.extend(payload.chunks(4096));
        let p = gather(&segs).unwrap();
        assert_eq!(p.payload, payload);
    }

    #[test]
    fn short_chains_rejected() {
        let h = hdr(100, TYPE_STREAM, 0);
        let w = wire(&h, &[1u8; 60]);
        assert_eq!(
            gather(&[&w]),
            Err(GatherError::ShortPayload { want: 100, got: 60 })
        );
        assert_eq!(gather(&[&w[..30]]), Err(GatherError::ShortHeader(30)));
        assert_eq!(gather(&[]), Err(GatherError::ShortHeader(0)));
    }

    #[test]
    fn overlong_len_rejected_and_trailing_bytes_ignored() {
        let h = hdr(MAX_PKT_PAYLOAD + 1, TYPE_STREAM, 0);
        assert_eq!(
            gather(&[&h.encode()]),
            Err(GatherError::TooLong(MAX_PKT_PAYLOAD + 1))
        );
        let h = hdr(4, TYPE_STREAM, 0);
        let w = wire(&h, &[9u8; 50]);
        let p = gather(&[&w, &[1, 2, 3]]).unwrap();
        assert_eq!(p.payload, vec![9u8; 4]);
    }

    #[test]
    fn gather_keeps_bounded_memory() {
        let mut g = Gather::new();
        g.push(&[0u8; 10]).unwrap();
        assert_eq!(g.wanted(), MAX_PKT - 10);
        let h = hdr(8, TYPE_STREAM, 0);
        let mut g = Gather::new();
        g.push(&h.encode()).unwrap();
        g.push(&[5u8; 1 << 20]).unwrap();
        assert!(g.complete());
        assert_eq!(g.finish().unwrap().payload.len(), 8);
    }

    #[test]
    fn seqpacket_64k_split_into_4k_buffers() {
        let payload: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        let p = Packet::new(hdr(0, TYPE_SEQPACKET, SEQ_EOM | SEQ_EOR), payload.clone());
        let pieces = split(&p, 4096);
        assert_eq!(pieces.len(), 65536usize.div_ceil(4096 - HDR_LEN));
        let mut joined = Vec::new();
        for (i, (h, d)) in pieces.iter().enumerate() {
            assert_eq!(h.len as usize, d.len());
            assert!(d.len() <= 4096 - HDR_LEN);
            let last = i == pieces.len() - 1;
            assert_eq!(h.flags & (SEQ_EOM | SEQ_EOR) != 0, last, "piece {i}");
            assert_eq!(h.src_port, 1000);
            joined.extend_from_slice(d);
        }
        assert_eq!(pieces.last().unwrap().0.flags, SEQ_EOM | SEQ_EOR);
        assert_eq!(joined, payload);
    }

    #[test]
    fn stream_split_keeps_flags_and_small_packets_are_one_piece() {
        let p = Packet::new(hdr(0, TYPE_STREAM, 0x10), vec![1u8; 10000]);
        let pieces = split(&p, 4096);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|(h, _)| h.flags == 0x10));
        let p = Packet::new(hdr(0, TYPE_SEQPACKET, SEQ_EOM), vec![1u8]);
        let pieces = split(&p, 4096);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].0.flags, SEQ_EOM);
        let p = Packet::new(hdr(0, TYPE_STREAM, 0), Vec::new());
        assert_eq!(split(&p, HDR_LEN).len(), 1);
        assert!(p.next_piece(HDR_LEN - 1).is_none());
    }

    #[test]
    fn random_chains_never_panic() {
        let mut rng = crate::hostile::Rng::new(99);
        for _ in 0..2000 {
            let mut h = hdr(0, TYPE_STREAM, 0);
            h.len = match rng.below(4) {
                0 => rng.u32(),
                _ => rng.below(3 * 4096) as u32,
            };
            let body = rng.below(3 * 4096 + 100) as usize;
            let mut w = h.encode().to_vec();
            w.extend((0..body).map(|i| i as u8));
            let mut segs = Vec::new();
            let mut rest = &w[..rng.below(w.len() as u64 + 1) as usize];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len() as u64) as usize;
                segs.push(&rest[..n]);
                rest = &rest[n..];
            }
            match gather(&segs) {
                Ok(p) => {
                    assert_eq!(p.payload.len(), h.len as usize);
                    assert_eq!(p.payload[..], w[HDR_LEN..HDR_LEN + h.len as usize]);
                }
                Err(GatherError::TooLong(n)) => assert!(n > MAX_PKT_PAYLOAD),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn queue_bound_and_order() {
        let mk = |n: usize, port: u32| {
            let mut h = hdr(0, TYPE_STREAM, 0);
            h.src_port = port;
            Packet::new(h, vec![0u8; n])
        };
        let mut q = DestQueue::new(3 * (HDR_LEN + 100));
        assert!(q.push(mk(100, 1)));
        assert!(q.push(mk(100, 2)));
        assert!(q.push(mk(100, 3)));
        assert!(!q.push(mk(1, 4)));
        assert_eq!(q.dropped, 1);
        let mut a = q.pop().unwrap();
        assert_eq!(a.hdr.src_port, 1);
        a.advance(50);
        q.unpop(a);
        assert_eq!(q.bytes(), 3 * HDR_LEN + 250);
        assert_eq!(q.pop().unwrap().off, 50);
        assert_eq!(q.pop().unwrap().hdr.src_port, 2);
        assert_eq!(q.pop().unwrap().hdr.src_port, 3);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
