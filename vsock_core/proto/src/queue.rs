// SPDX-License-Identifier: GPL-2.0

//! Where a received packet goes: merged into the packet queued before it, packed into a shared
//! buffer, or queued on its own; for a socket's receive queue and for the backlog of a socket
//! whose owner holds it.
//!
//! These rules keep the memory a peer can make a socket hold close to the payload it may send:
//! a queued packet costs a few hundred bytes beyond its payload, so a peer sending one byte at a
//! time would otherwise cost hundreds of times its credit.

use super::hdr::{Hdr, Op, SEQ_EOM};

/// Small payloads are always copied into the room left in the packet before them
/// (`GOOD_COPY_LEN`).
pub const GOOD_COPY_LEN: u32 = 128;

/// What the queue knows of the packet queued last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// It ends a SEQPACKET message (nothing may join it).
    pub eom: bool,
    /// Its payload is linear, so more can be appended to it.
    pub linear: bool,
    /// Free bytes after its payload.
    pub tailroom: u32,
}

/// Where a data packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Appended to the packet queued last (no new packet is queued).
    Merge,
    /// Copied into a fresh shared buffer of `pack_len` bytes, which later packets join.
    Pack,
    /// Queued as it is.
    Own,
}

/// Where a data packet of `len` payload bytes goes, after `tail`.  Under `pressure` (the queue
/// holds many packets) any payload that fits is merged, and small ones that do not are packed.
/// A SEQPACKET packet is packed only to continue a message already queued and when it does not
/// end it (`eom`): messages cannot share a buffer, so packing the first or only packet of one
/// would cost more, not less.
pub fn place(
    tail: Option<Tail>,
    len: u32,
    seqpacket: bool,
    eom: bool,
    pressure: bool,
    pack_len: u32,
) -> Placement {
    if let Some(t) = tail {
        if t.linear && !t.eom && len <= t.tailroom && (len <= GOOD_COPY_LEN || pressure) {
            return Placement::Merge;
        }
    }
    let continues = tail.is_some_and(|t| !t.eom);
    if pressure && len <= pack_len && !(seqpacket && (eom || !continues)) {
        return Placement::Pack;
    }
    Placement::Own
}

/// How a packet can join the one waiting before it on an owned socket's backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// A credit update or request: its credit fields replace the waiting packet's, since only
    /// the latest count; `request` asks for a CREDIT_UPDATE once the waiting packet is
    /// processed.
    Credit {
        /// A CREDIT_REQUEST is folded in.
        request: bool,
    },
    /// Data: its payload may be appended to the waiting RW packet's, if it fits.
    Payload,
    /// It waits on its own.
    No,
}

/// Whether two packets belong to the same connection and direction.
pub fn same_flow(a: &Hdr, b: &Hdr) -> bool {
    a.src_cid == b.src_cid
        && a.src_port == b.src_port
        && a.dst_cid == b.dst_cid
        && a.dst_port == b.dst_port
        && a.type_ == b.type_
}

/// How packet `new` can join `waiting`, the packet before it on the same backlog.  Only credit
/// updates, credit requests and data of the same flow fold; data never joins a packet that
/// ends a SEQPACKET message.  Processing the folded packet has the effect of processing both:
/// the credit fields are the newest, the payloads keep their order, and a folded credit request
/// is still answered.
pub fn fold(waiting: &Hdr, new: &Hdr) -> Fold {
    if !same_flow(waiting, new) {
        return Fold::No;
    }
    let waiting_op = waiting.op();
    let carries_credit = matches!(
        waiting_op,
        Some(Op::Rw) | Some(Op::CreditUpdate) | Some(Op::CreditRequest)
    );
    match new.op() {
        Some(Op::CreditUpdate) if new.len == 0 && carries_credit => Fold::Credit { request: false },
        Some(Op::CreditRequest) if new.len == 0 && carries_credit => Fold::Credit { request: true },
        Some(Op::Rw) if waiting_op == Some(Op::Rw) && waiting.flags & SEQ_EOM == 0 => Fold::Payload,
        _ => Fold::No,
    }
}

/// The header of `waiting` once `new`'s payload was appended to it: the lengths add up, the
/// flags accumulate and the credit fields are the newest.
pub fn merged(waiting: &Hdr, new: &Hdr) -> Hdr {
    Hdr {
        len: waiting.len.saturating_add(new.len),
        flags: waiting.flags | new.flags,
        buf_alloc: new.buf_alloc,
        fwd_cnt: new.fwd_cnt,
        ..*waiting
    }
}

/// The header of `waiting` once credit packet `new` was folded into it: a CREDIT_UPDATE that
/// absorbs a CREDIT_REQUEST becomes one (it is then answered as such).
pub fn with_credit(waiting: &Hdr, new: &Hdr) -> Hdr {
    let mut h = Hdr {
        buf_alloc: new.buf_alloc,
        fwd_cnt: new.fwd_cnt,
        ..*waiting
    };
    if waiting.op() == Some(Op::CreditUpdate) && new.op() == Some(Op::CreditRequest) {
        h.op = Op::CreditRequest as u16;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Conn, Reply, RxPlan, SkState, SockType};
    use crate::hdr::{TYPE_SEQPACKET, TYPE_STREAM};
    use proptest::prelude::*;
    use std::vec::Vec;

    fn pkt(op: Op, len: u32, flags: u32) -> Hdr {
        Hdr {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 2000,
            len,
            op: op as u16,
            flags,
            buf_alloc: 4096,
            fwd_cnt: len,
            ..Hdr::default()
        }
    }

    #[test]
    fn placement() {
        let room = Tail {
            eom: false,
            linear: true,
            tailroom: 500,
        };
        // Streams.
        assert_eq!(
            place(Some(room), 100, false, false, false, 3000),
            Placement::Merge
        );
        assert_eq!(
            place(Some(room), 300, false, false, false, 3000),
            Placement::Own
        );
        assert_eq!(
            place(Some(room), 300, false, false, true, 3000),
            Placement::Merge
        );
        assert_eq!(
            place(Some(room), 600, false, false, true, 3000),
            Placement::Pack
        );
        assert_eq!(
            place(Some(room), 4000, false, false, true, 3000),
            Placement::Own
        );
        assert_eq!(place(None, 1, false, false, true, 3000), Placement::Pack);
        let frags = Tail {
            linear: false,
            ..room
        };
        assert_eq!(
            place(Some(frags), 1, false, false, false, 3000),
            Placement::Own
        );
        // SEQPACKET: a zero-length end of message joins the message queued last.
        assert_eq!(
            place(Some(room), 0, true, true, false, 3000),
            Placement::Merge
        );
        // A continuation that does not fit is packed under pressure, its end is not.
        assert_eq!(
            place(Some(room), 600, true, false, true, 3000),
            Placement::Pack
        );
        assert_eq!(
            place(Some(room), 600, true, true, true, 3000),
            Placement::Own
        );
        // A new message (after one that ended, or first) is never packed.
        let ended = Tail { eom: true, ..room };
        assert_eq!(
            place(Some(ended), 1, true, false, true, 3000),
            Placement::Own
        );
        assert_eq!(
            place(Some(ended), 1, true, true, true, 3000),
            Placement::Own
        );
        assert_eq!(
            place(Some(ended), 0, true, true, false, 3000),
            Placement::Own
        );
        assert_eq!(place(None, 1, true, false, true, 3000), Placement::Own);
    }

    #[test]
    fn folding() {
        let rw = pkt(Op::Rw, 10, 0);
        assert_eq!(fold(&rw, &pkt(Op::Rw, 5, 0)), Fold::Payload);
        assert_eq!(
            fold(&rw, &pkt(Op::CreditUpdate, 0, 0)),
            Fold::Credit { request: false }
        );
        assert_eq!(
            fold(&rw, &pkt(Op::CreditRequest, 0, 0)),
            Fold::Credit { request: true }
        );
        assert_eq!(fold(&rw, &pkt(Op::Shutdown, 0, 1)), Fold::No);
        assert_eq!(fold(&rw, &pkt(Op::Rst, 0, 0)), Fold::No);
        assert_eq!(
            fold(&pkt(Op::Rst, 0, 0), &pkt(Op::CreditUpdate, 0, 0)),
            Fold::No
        );
        assert_eq!(fold(&pkt(Op::Shutdown, 0, 3), &pkt(Op::Rw, 1, 0)), Fold::No);
        // Another flow.
        let mut other = pkt(Op::CreditUpdate, 0, 0);
        other.src_port = 1001;
        assert_eq!(fold(&rw, &other), Fold::No);
        // A message's end.
        let mut eom = pkt(Op::Rw, 1, SEQ_EOM);
        eom.type_ = TYPE_SEQPACKET;
        let mut next = pkt(Op::Rw, 1, SEQ_EOM);
        next.type_ = TYPE_SEQPACKET;
        assert_eq!(fold(&eom, &next), Fold::No);
        // A lying credit packet with a payload does not fold.
        assert_eq!(fold(&rw, &pkt(Op::CreditUpdate, 3, 0)), Fold::No);
    }

    fn feed(c: &mut Conn, h: &Hdr) -> (u32, usize) {
        let fx = c.recv(h, RxPlan::default());
        let bytes = if fx.enqueue { h.len } else { 0 };
        let updates = usize::from(
            fx.send
                == Some(Reply::Sock {
                    op: Op::CreditUpdate,
                    flags: 0,
                }),
        );
        (bytes, updates)
    }

    proptest! {
        /// Folding a backlog (credit packets into the packet before them, payloads appended)
        /// has the effect of processing every packet in order: the same bytes are queued, the
        /// same credit is known of the peer, and a credit request is still answered.
        #[test]
        fn folding_preserves_the_effect(seq in proptest::collection::vec((0u8..3, 0u32..200, any::<u32>(), any::<u32>()), 1..60)) {
            let pkts: Vec<Hdr> = seq.iter().map(|&(k, len, buf, fwd)| {
                let op = [Op::Rw, Op::CreditUpdate, Op::CreditRequest][k as usize];
                Hdr { len: if op == Op::Rw { len } else { 0 }, buf_alloc: buf, fwd_cnt: fwd, type_: TYPE_STREAM, ..pkt(op, 0, 0) }
            }).collect();
            let established = || Conn::child(SockType::Stream, 1 << 20, &pkts[0]);
            // In order, one by one.
            let mut a = established();
            let (mut bytes_a, mut updates_a) = (0u32, 0usize);
            for h in &pkts {
                let (b, u) = feed(&mut a, h);
                bytes_a += b;
                updates_a += u;
            }
            // Folded as the backlog folds them.
            let mut backlog: Vec<(Hdr, bool)> = Vec::new();
            for h in &pkts {
                let fold_to = backlog.last().map(|(w, _)| fold(w, h));
                match fold_to {
                    Some(Fold::Credit { request }) => {
                        let (w, req) = backlog.last_mut().unwrap();
                        let folded_into_rw = w.op() == Some(Op::Rw);
                        *w = with_credit(w, h);
                        *req |= request && folded_into_rw;
                    }
                    Some(Fold::Payload) => {
                        let (w, _) = backlog.last_mut().unwrap();
                        *w = merged(w, h);
                    }
                    _ => backlog.push((*h, false)),
                }
            }
            let mut b = established();
            let (mut bytes_b, mut updates_b) = (0u32, 0usize);
            for (h, req) in &backlog {
                let (x, u) = feed(&mut b, h);
                bytes_b += x;
                updates_b += u;
                if *req {
                    let r = Hdr { op: Op::CreditRequest as u16, len: 0, ..*h };
                    updates_b += feed(&mut b, &r).1;
                }
            }
            prop_assert_eq!(bytes_a, bytes_b);
            prop_assert_eq!(a.tx, b.tx);
            prop_assert_eq!(a.rx.buf_used, b.rx.buf_used);
            prop_assert_eq!(a.state, SkState::Established);
            prop_assert_eq!(updates_a > 0, updates_b > 0);
            prop_assert!(backlog.len() <= pkts.len());
        }
    }

    #[test]
    fn merged_headers() {
        let a = pkt(Op::Rw, 10, 0);
        let b = pkt(Op::Rw, 5, SEQ_EOM);
        let m = merged(&a, &b);
        assert_eq!(
            (m.len, m.flags, m.fwd_cnt, m.op),
            (15, SEQ_EOM, 5, Op::Rw as u16)
        );
        let c = with_credit(&pkt(Op::CreditUpdate, 0, 0), &pkt(Op::CreditRequest, 0, 0));
        assert_eq!(c.op, Op::CreditRequest as u16);
        let d = with_credit(&a, &pkt(Op::CreditRequest, 0, 0));
        assert_eq!((d.op, d.len), (Op::Rw as u16, 10));
    }
}
