// SPDX-License-Identifier: GPL-2.0

//! Building and sending packets (`virtio_transport_send_pkt_info` and friends).
//!
//! A socket's own sends (connect, data, shutdown, credit updates after a read) go to its
//! transport at once, from the calling task.  Replies made by the receive path, which may run
//! with a socket spinlock held, are collected in an [`Outbox`] and sent once no lock is held,
//! so a transport that delivers inline (loopback) never nests two sockets' locks.

use crate::kx::msg::Msg;
use crate::kx::skb::SkBuff;
use crate::kx::sock::WaitError;
use crate::kx::transport::features;
use crate::kx::zerocopy::{Lent, LentWait, Plan};
use crate::kx::{sys, Gfp};
use crate::proto::conn::{Reply, SockType};
use crate::proto::errno::Errno;
use crate::proto::hdr::{Hdr, Op, MAX_PKT_PAYLOAD, SEQ_EOM, SEQ_EOR};
use crate::registry::Transport;
use crate::vsk::{State, Vsk, VskRef};
use crate::Core;
use ::core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Packets to send once the receive path dropped its locks.
///
/// A new child's RESPONSE is special: the child is acceptable as soon as its listener's lock
/// is dropped, and its first data must not overtake the RESPONSE at the connecting peer.  So
/// the RESPONSE waits in the child's state; the flush sends it under the child's lock, and any
/// send by the child's owner sends it first ([`send_pending_response`]).
pub(crate) struct Outbox {
    pkts: crate::kx::skb::SkbList,
    child: Option<VskRef>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            pkts: crate::kx::skb::SkbList::new(),
            child: None,
        }
    }

    /// Records a child whose RESPONSE waits in its state.  Returns the child back if one is
    /// recorded already (one packet makes at most one child).
    pub(crate) fn set_child(&mut self, child: VskRef) -> core::result::Result<(), VskRef> {
        if self.child.is_some() {
            return Err(child);
        }
        self.child = Some(child);
        Ok(())
    }

    /// Queues `skb` for transport `t`.
    pub(crate) fn push(&mut self, t: &Transport, mut skb: SkBuff) {
        let mut cb = skb.cb();
        cb.transport = t.id;
        skb.set_cb(cb);
        self.pkts.push_back(skb);
    }

    /// Queues the RST answering `hdr` as if no socket existed (never for a RST).
    pub(crate) fn rst_nosock(&mut self, t: &Transport, hdr: &Hdr, gfp: Gfp) {
        let Some(reply) = hdr.rst_reply() else { return };
        if let Ok(mut skb) = SkBuff::alloc_pkt(0, gfp) {
            skb.set_hdr(&reply);
            self.push(t, skb);
        }
    }

    /// Sends everything queued.  No spinlock may be held (a listener may be owned).
    pub(crate) fn flush(&mut self, core: &Core) {
        if let Some(child) = self.child.take() {
            let mut g = child.lock_nested();
            send_pending_response(g.state());
        }
        while let Some(skb) = self.pkts.pop_front() {
            if let Some(t) = core.registry.by_id(skb.cb().transport) {
                // A failed reply is a lost packet, as on a lossy device; the peer's timers
                // cover it.
                let _ = t.ops.send_pkt(skb);
            }
        }
    }
}

/// The header of a packet from the socket to its peer, with fresh credit.
fn sock_hdr(st: &mut State, t: &Transport, op: Op, flags: u32, len: u32) -> Hdr {
    let (buf_alloc, fwd_cnt) = st.conn.rx.stamp();
    Hdr {
        src_cid: t.local_cid() as u64,
        dst_cid: st.remote.cid as u64,
        src_port: st.local.port,
        dst_port: st.remote.port,
        len,
        type_: st.conn.sock_type.wire(),
        op: op as u16,
        flags,
        buf_alloc,
        fwd_cnt,
    }
}

/// Builds a control packet (no payload) from the socket to its peer.
pub(crate) fn ctrl_pkt(
    st: &mut State,
    op: Op,
    flags: u32,
    gfp: Gfp,
) -> Result<(Arc<Transport>, SkBuff)> {
    let t = st
        .transport
        .clone()
        .ok_or_else(|| crate::kx::error(Errno::ENOTCONN))?;
    let mut skb = SkBuff::alloc_pkt(0, gfp)?;
    let hdr = sock_hdr(st, &t, op, flags, 0);
    skb.set_hdr(&hdr);
    Ok((t, skb))
}

/// Sends a child's RESPONSE if it has not gone out yet; the socket lock must be owned.
pub(crate) fn send_pending_response(st: &mut State) {
    if let Some(skb) = st.pending_response.take() {
        if let Some(t) = st.transport.clone() {
            let _ = t.ops.send_pkt(skb);
        }
    }
}

/// Sends a control packet from the socket now (owner context).
pub(crate) fn send_ctrl(st: &mut State, op: Op, flags: u32) -> Result {
    send_pending_response(st);
    let (t, skb) = ctrl_pkt(st, op, flags, Gfp::Kernel)?;
    t.ops.send_pkt(skb)
}

/// Sends or queues the reply an event asked for.
pub(crate) fn reply(
    st: &mut State,
    r: Reply,
    rx: Option<(&Transport, &Hdr)>,
    out: &mut Outbox,
    gfp: Gfp,
) {
    match r {
        Reply::Sock { op, flags } => {
            if let Ok((t, skb)) = ctrl_pkt(st, op, flags, gfp) {
                // A child's RESPONSE goes before anything else it sends.
                if let Some(response) = st.pending_response.take() {
                    out.push(&t, response);
                }
                out.push(&t, skb);
            }
        }
        Reply::RstNoSock => {
            if let Some((t, hdr)) = rx {
                out.rst_nosock(t, hdr, gfp);
            }
        }
    }
}

/// Sends up to `len` bytes of `msg` as data packets, as far as the peer's credit allows
/// (`virtio_transport_stream_enqueue`).  Returns the bytes sent (0 when no credit).
///
/// With `MSG_ZEROCOPY` on a socket with `SO_ZEROCOPY`, the user pages are attached to the
/// packets instead of copied when the whole message fits the credit, and a completion is queued
/// on the error queue once the peer consumed them (`SO_EE_CODE_ZEROCOPY_COPIED` when they were
/// copied after all).  With `lent`, they are attached under that notification instead.
pub(crate) fn send_data(
    sk: &Vsk,
    st: &mut State,
    t: &Arc<Transport>,
    msg: &mut Msg<'_>,
    len: usize,
    lent: Option<&Lent>,
) -> Result<usize> {
    send_pending_response(st);
    let want = len.min(u32::MAX as usize) as u32;
    let granted = st.conn.reserve(want);
    if granted == 0 {
        return Ok(0);
    }
    sk.data()
        .unsent
        .fetch_add(granted, ::core::sync::atomic::Ordering::AcqRel);

    let plan = match lent {
        Some(lent) => Ok(Plan::lend(lent)),
        None => Plan::new(sk, t.desc.msgzerocopy, msg, granted),
    };
    let mut zc = match plan {
        Ok(zc) => zc,
        Err(e) => {
            st.conn.tx.unreserve(granted);
            sk.data().skb_unsent_sub(granted);
            return Err(e);
        }
    };
    let max_pkt = zc.max_packet(MAX_PKT_PAYLOAD);
    let mut rest = granted;
    // Unsent bytes no packet carries: a failed packet that was handed to the transport took
    // its own back when it was freed.
    let mut uncarried = 0;
    let mut err = None;
    while rest > 0 {
        let n = rest.min(max_pkt);
        match build_data_pkt(sk, st, t, msg, n, &mut zc) {
            Ok(skb) => {
                if let Err(e) = t.ops.send_pkt(skb) {
                    uncarried = rest - n;
                    err = Some(e);
                    break;
                }
                rest -= n;
            }
            Err(e) => {
                uncarried = rest;
                err = Some(e);
                break;
            }
        }
    }
    if rest > 0 {
        st.conn.tx.unreserve(rest);
        sk.data().skb_unsent_sub(uncarried);
    }
    zc.finish(granted - rest);
    match err {
        Some(e) if rest == granted => Err(e),
        _ => Ok((granted - rest) as usize),
    }
}

fn build_data_pkt(
    sk: &Vsk,
    st: &mut State,
    t: &Transport,
    msg: &mut Msg<'_>,
    n: u32,
    zc: &mut Plan,
) -> Result<SkBuff> {
    // Charged with no unsent bytes until it is built: a packet dropped here must not take back
    // bytes that the caller takes back itself.
    let mut skb = SkBuff::alloc_pkt(if zc.active() { 0 } else { n }, Gfp::Kernel)?;
    sk.charge_skb(&mut skb, 0);
    let mut filled = zc.fill(sk, &mut skb, msg, n);
    if filled == Err(EAGAIN) {
        // Lent pages that could not be attached: this packet copies, faults included.
        skb = SkBuff::alloc_pkt(n, Gfp::Kernel)?;
        sk.charge_skb(&mut skb, 0);
        filled = zc.fill(sk, &mut skb, msg, n);
    }
    // A fault while filling makes the packet, and the send, fail with ENOMEM, as in Linux.
    if filled.is_err() {
        return Err(ENOMEM);
    }
    let mut cb = skb.cb();
    cb.unsent = n;
    skb.set_cb(cb);
    let mut flags = 0;
    if st.conn.sock_type == SockType::SeqPacket && msg.data_left() == 0 {
        flags |= SEQ_EOM;
        if msg.flags() & sys::MSG_EOR != 0 {
            flags |= SEQ_EOR;
        }
    }
    let hdr = sock_hdr(st, t, Op::Rw, flags, n);
    skb.set_hdr(&hdr);
    Ok(skb)
}

/// Blocking stream sends of at least this many bytes to a receiver on this machine lend their
/// pages instead of copying them into packets: the receiver's read is then the only copy.
const LEND_MIN: usize = 32 * 1024;

/// Large sends that copy after a receiver left lent pages unread for [`LEND_PATIENCE`].
const LEND_BACKOFF: u8 = 16;

/// How long a send waits for its lent pages to be read before it copies them for the reader.
const LEND_PATIENCE: u64 = if crate::kx::HZ >= 100 {
    crate::kx::HZ / 100
} else {
    1
};

/// Whether a send of `len` bytes lends its pages (see [`Lent`]): a blocking stream send over a
/// transport that keeps packets on this machine, from user memory, with no zerocopy of the
/// user's own.
pub(crate) fn may_lend(
    sk: &Vsk,
    st: &State,
    t: &Transport,
    msg: &Msg<'_>,
    len: usize,
    timeo: i64,
) -> bool {
    if st.conn.sock_type != SockType::Stream
        || timeo == 0
        || len < LEND_MIN
        || t.desc.features & features::LOCAL == 0
        || !t.desc.msgzerocopy
        || msg.flags() & sys::MSG_ZEROCOPY != 0
        || !msg.ubuf().is_null()
        || !msg.user_backed()
    {
        return false;
    }
    let backoff = &sk.data().lend_backoff;
    let b = backoff.load(Ordering::Relaxed);
    if b > 0 {
        backoff.store(b - 1, Ordering::Relaxed);
        return false;
    }
    true
}

/// Returns once no packet holds a send's lent pages: the receiver read them, or, when it is slow
/// to, the packets still queued on it got their own copy.  Then the next sends copy for a
/// while.  No socket lock may be held.
///
/// Every wait here is killable and bounded: the receiver's lock is taken with
/// [`crate::kx::sock::ProtoSock::lock_killable`], never waited for uninterruptibly, so a
/// receiver whose owner is stalled cannot make the sender unkillable.  (Packets that reach a
/// receiver while its owner holds it were given their own copy at once, see `rx::to_backlog`;
/// what can still hold the pages is a packet read by, or queued before, an owner that then
/// stalls.)  A sender killed meanwhile returns at once; the packets keep the pages referenced
/// until they are read or freed, and nothing of the dying process can change them.
pub(crate) fn settle_lent(sk: &Vsk, mut lent: Lent) {
    let mut copied = false;
    loop {
        match lent.wait(LEND_PATIENCE) {
            LentWait::Done | LentWait::Killed => break,
            LentWait::Timeout => {}
        }
        let Some(peer) = lent.receiver(sk) else {
            continue;
        };
        let locked = peer.lock_killable(LEND_PATIENCE as i64);
        match locked {
            Ok(mut g) => {
                g.state().rx.for_each_mut(|skb| {
                    // Out of memory, the packet keeps the pages and the next round tries again.
                    let _ = lent.copy_out(skb, Gfp::Kernel);
                });
                copied = true;
            }
            Err(WaitError::Interrupted(_)) => break,
            Err(WaitError::Timeout) => {}
        };
    }
    if copied {
        sk.data()
            .lend_backoff
            .store(LEND_BACKOFF, Ordering::Relaxed);
    }
}

/// `EMSGSIZE` check of a SEQPACKET message against the send window.
pub(crate) fn check_message_size(st: &State, len: usize) -> ::core::result::Result<(), Errno> {
    if len > st.conn.max_message() as usize {
        Err(Errno::EMSGSIZE)
    } else {
        Ok(())
    }
}
