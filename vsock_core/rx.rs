// SPDX-License-Identifier: GPL-2.0

//! The receive path (`virtio_transport_recv_pkt`): a packet from a transport is matched to a
//! socket and fed to its state machine, and the resulting [`Effects`] are carried out.
//!
//! A packet is processed at once, in the sender's context for loopback, under the receiving
//! socket's spinlock; if the socket's owner holds it, the packet waits on the socket backlog,
//! which `release_sock` hands back to [`backlog_rcv`].  No work queue sits in between, and no
//! socket's traffic waits behind another's.

use crate::kx::skb::{SkBuff, Skb};
use crate::kx::sock::BhLock;
use crate::kx::Gfp;
use crate::proto::addr::{VsockAddr, VMADDR_CID_ANY, VMADDR_CID_LOCAL};
use crate::proto::conn::{Conn, Effects, RxPlan, SockType};
use crate::proto::hdr::{Hdr, Op, SEQ_EOM};
use crate::proto::route::child_remote;
use crate::registry::Transport;
use crate::tx::Outbox;
use crate::vsk::{Guard, Shared, State, Vsk, TIMER_CLOSE};
use crate::Core;
use kernel::sync::Arc;

/// Copy payloads up to this size into the previous packet's spare room (`GOOD_COPY_LEN`).
const GOOD_COPY_LEN: u32 = 128;

/// A packet arrived on transport `t`.
pub(crate) fn recv(core: &Core, t: &Arc<Transport>, skb: SkBuff) {
    let mut out = Outbox::new();
    deliver(core, t, skb, &mut out);
    out.flush(core);
}

/// The socket type a packet type maps to.
fn wire_type(sk: &Vsk) -> u16 {
    if sk.sk_type() as u32 == crate::kx::sys::sock_type_SOCK_SEQPACKET {
        SockType::SeqPacket.wire()
    } else {
        SockType::Stream.wire()
    }
}

fn deliver(core: &Core, t: &Arc<Transport>, mut skb: SkBuff, out: &mut Outbox) {
    // A packet whose header is missing or disagrees with the buffer is dropped: no socket can
    // be trusted to own it.
    let Some(hdr) = skb.hdr() else { return };
    if hdr.len != skb.len() || hdr.src_cid > u32::MAX as u64 || hdr.dst_cid > u32::MAX as u64 {
        return;
    }
    if !hdr.valid_type() {
        out.rst_nosock(t, &hdr, Gfp::Atomic);
        return;
    }
    let src = VsockAddr::new(hdr.src_cid as u32, hdr.src_port);
    let dst = VsockAddr::new(hdr.dst_cid as u32, hdr.dst_port);
    let sk = {
        let mut tables = core.tables.lock();
        tables
            .find_connected(&src, dst.port)
            .or_else(|| tables.find_bound(&dst))
    };
    let Some(sk) = sk else {
        out.rst_nosock(t, &hdr, Gfp::Atomic);
        return;
    };
    if wire_type(&sk) != hdr.type_ {
        out.rst_nosock(t, &hdr, Gfp::Atomic);
        return;
    }
    // A send lending its pages settles with this socket if it is slow to read them.
    crate::kx::zerocopy::Lent::note_receiver(&skb, &sk);
    // The transport is done with the packet: the sender's unsent count drops here.
    skb.orphan();
    let mut cb = skb.cb();
    cb.offset = 0;
    cb.transport = t.id;
    skb.set_cb(cb);

    match sk.lock_bh() {
        BhLock::Free(mut g) => process(core, &mut g, t, skb, &hdr, out),
        BhLock::Owned(mut b) => {
            let limit = sk.data().backlog_limit();
            // Beyond the limit the peer ignores our credit; the packet is dropped.
            let _ = b.add_backlog(skb, limit);
        }
    };
}

/// A packet that waited on the backlog while the socket was owned.
pub(crate) fn backlog_rcv(g: &mut Guard<'_>, skb: SkBuff) {
    let Some(core) = crate::core() else { return };
    let Some(hdr) = skb.hdr() else { return };
    let Some(t) = core.registry.by_id(skb.cb().transport) else {
        // The transport went away meanwhile; its sockets are being reset.
        return;
    };
    let mut out = Outbox::new();
    process(core, g, &t, skb, &hdr, &mut out);
    out.flush(core);
}

/// `vsock_check_source`: a connected socket takes packets only from its peer, on its transport
/// (loopback stamps CID 1 on everything, so any source CID is fine there).
fn from_peer(st: &State, t: &Arc<Transport>, src: &VsockAddr) -> bool {
    let Some(mine) = st.transport.as_ref() else {
        return false;
    };
    Arc::ptr_eq(mine, t)
        && src.port == st.remote.port
        && (src.cid == st.remote.cid || t.local_cid() == VMADDR_CID_LOCAL)
}

fn process(
    core: &Core,
    g: &mut Guard<'_>,
    t: &Arc<Transport>,
    skb: SkBuff,
    hdr: &Hdr,
    out: &mut Outbox,
) {
    let gfp = if g.can_sleep() {
        Gfp::Kernel
    } else {
        Gfp::Atomic
    };
    if g.state().listening() {
        listen_rcv(core, g, t, hdr, out, gfp);
        return;
    }
    let src = VsockAddr::new(hdr.src_cid as u32, hdr.src_port);
    let st = g.state();
    if !st.conn.done && !from_peer(st, t, &src) {
        out.rst_nosock(t, hdr, gfp);
        return;
    }
    // Follow a CID change after a transport reset.
    if st.local.cid != VMADDR_CID_ANY {
        st.local.cid = hdr.dst_cid as u32;
    }
    if hdr.op() == Some(Op::Rw) {
        make_room(st, gfp);
    }
    let merge = can_merge(st, &skb, hdr);
    let plan = RxPlan {
        merge,
        pkt_overhead: crate::kx::sys::SKB_TRUESIZE_0,
    };
    let fx = st.conn.recv(hdr, plan);
    if fx.error == Some(crate::proto::errno::Errno::EPROTO) {
        kernel::pr_debug!(
            "unexpected {:?} while connecting (local {:?})\n",
            hdr,
            st.local
        );
    }
    apply(core, g, fx, Some((t, hdr, skb)), out, gfp);
}

/// Whether a small payload fits the spare room of the last queued packet, which must not end
/// a SEQPACKET message.
fn can_merge(st: &mut State, skb: &SkBuff, hdr: &Hdr) -> bool {
    if hdr.len > GOOD_COPY_LEN || skb.is_nonlinear() {
        return false;
    }
    let Some(tail) = st.rx.back_mut() else {
        return false;
    };
    let tail_eom = tail.hdr().is_some_and(|h| h.flags & SEQ_EOM != 0);
    !tail.is_nonlinear() && skb.len() < tail.tailroom() && !tail_eom
}

/// Payload room of a collapsed packet: a 16 KiB allocation with the buffer overhead.
const COLLAPSE_LEN: u32 = 15 * 1024;

fn collapsible(skb: &Skb) -> bool {
    skb.cb().offset == 0
        && skb.len() < COLLAPSE_LEN
        && !skb.hdr().is_some_and(|h| h.flags & SEQ_EOM != 0)
}

/// Keeps a long queue of small packets from exceeding the per-packet memory bound that the
/// credit admission enforces: when one more packet would not fit, runs of small unread
/// packets are copied into larger ones (`virtio_transport_collapse_rx_queue`).  An honest peer
/// writing many small messages is never reset for it.
fn make_room(st: &mut State, gfp: Gfp) {
    let overhead = crate::kx::sys::SKB_TRUESIZE_0 as u64;
    if (st.rx.len() as u64 + 1) * overhead <= st.conn.rx.buf_alloc as u64 {
        return;
    }
    let mut old = ::core::mem::take(&mut st.rx);
    let mut cur: Option<SkBuff> = None;
    while let Some(skb) = old.pop_front() {
        if !collapsible(&skb) {
            if let Some(c) = cur.take() {
                st.rx.push_back(c);
            }
            st.rx.push_back(skb);
            continue;
        }
        if let Some(c) = cur.as_mut() {
            if skb.len() <= c.tailroom() && append(c, &skb) {
                st.conn.rx.merged();
                skb.consume();
                continue;
            }
            if let Some(c) = cur.take() {
                st.rx.push_back(c);
            }
        }
        match SkBuff::alloc_linear_pkt(COLLAPSE_LEN, gfp) {
            Ok(mut c) => {
                if let Some(mut h) = skb.hdr() {
                    h.len = 0;
                    h.flags = 0;
                    c.set_hdr(&h);
                }
                if append(&mut c, &skb) {
                    skb.consume();
                    cur = Some(c);
                } else {
                    st.rx.push_back(skb);
                }
            }
            Err(_) => st.rx.push_back(skb),
        }
    }
    if let Some(c) = cur {
        st.rx.push_back(c);
    }
}

/// Appends `skb`'s payload to the collapsed packet `c`, accumulating its header.
fn append(c: &mut Skb, skb: &Skb) -> bool {
    let (Some(mut ch), Some(h)) = (c.hdr(), skb.hdr()) else {
        return false;
    };
    if c.append_from(skb, 0, skb.len()).is_err() {
        return false;
    }
    ch.len += h.len;
    ch.flags |= h.flags;
    c.set_hdr(&ch);
    true
}

/// Queues an admitted payload, merged into the last packet when the plan said so.
fn enqueue(st: &mut State, skb: SkBuff, hdr: &Hdr) {
    if can_merge(st, &skb, hdr) {
        if let Some(tail) = st.rx.back_mut() {
            if tail.append_from(&skb, 0, skb.len()).is_ok() {
                if let Some(mut th) = tail.hdr() {
                    th.len += hdr.len;
                    th.flags |= hdr.flags;
                    tail.set_hdr(&th);
                }
                skb.consume();
                return;
            }
        }
    }
    st.rx.push_back(skb);
}

/// Carries out the effects of an event on a locked socket (the order matters: queue, reply,
/// error, tables, then wake-ups).
pub(crate) fn apply(
    core: &Core,
    g: &mut Guard<'_>,
    fx: Effects,
    rx: Option<(&Arc<Transport>, &Hdr, SkBuff)>,
    out: &mut Outbox,
    gfp: Gfp,
) {
    let sk = g.sock();
    let (rx_t, rx_hdr) = match &rx {
        Some((t, h, _)) => (Some(*t), Some(*h)),
        None => (None, None),
    };
    if let Some((_, hdr, skb)) = rx {
        if fx.enqueue && skb.len() > 0 {
            enqueue(g.state(), skb, hdr);
        } else if fx.enqueue {
            // A zero-length message still ends a SEQPACKET record.
            g.state().rx.push_back(skb);
        }
    }
    if let Some(r) = fx.send {
        let pair = rx_t.zip(rx_hdr).map(|(t, h)| (&**t, h));
        crate::tx::reply(g.state(), r, pair, out, gfp);
    }
    if let Some(e) = fx.error {
        sk.report_error(e);
    }
    if fx.connected {
        if let Some(s) = sk.socket() {
            s.set_state(crate::kx::socket::SocketState::Connected);
        }
        crate::ops::hash_connected(core, g, gfp);
    }
    if fx.unhash {
        crate::ops::unhash_connected(core, g);
    }
    if fx.cancel_close_timer && sk.disarm_timer(TIMER_CLOSE) {
        let fx2 = g.state().conn.close_timer_cancelled();
        apply(core, g, fx2, None, out, gfp);
    }
    if fx.remove {
        crate::ops::remove_sock(core, g);
    }
    crate::ops::mirror(g);
    if fx.state_change {
        sk.state_change();
    }
    if fx.data_ready {
        let st = g.state();
        let ready =
            st.conn.rx.rx_bytes as usize >= sk.rcvlowat(false, i32::MAX as usize) || st.conn.done;
        if ready {
            sk.data_ready();
        }
    }
    if fx.write_space {
        sk.write_space();
    }
}

/// A packet for a listener: only a REQUEST, which makes a connected child
/// (`virtio_transport_recv_listen`).
fn listen_rcv(
    core: &Core,
    g: &mut Guard<'_>,
    t: &Arc<Transport>,
    hdr: &Hdr,
    out: &mut Outbox,
    gfp: Gfp,
) {
    let listener = g.sock();
    let st = g.state();
    if Conn::listen_accepts(hdr, listener.acceptq_is_full(), st.conn.shutdown).is_err() {
        out.rst_nosock(t, hdr, gfp);
        return;
    }
    let local = VsockAddr::new(hdr.dst_cid as u32, hdr.dst_port);
    let remote = child_remote(&local, VsockAddr::new(hdr.src_cid as u32, hdr.src_port));
    // The child must be served by the transport the request came on.
    let same = core
        .registry
        .select(&remote)
        .is_ok_and(|sel| Arc::ptr_eq(&sel, t));
    let sock_type = st.conn.sock_type;
    if !same || (sock_type == SockType::SeqPacket && !t.ops.seqpacket_allow(remote.cid)) {
        out.rst_nosock(t, hdr, gfp);
        return;
    }

    let mut cst = State::new(sock_type);
    cst.local = local;
    cst.remote = remote;
    cst.bufs = st.bufs;
    cst.bufs.size = cst.bufs.size.min(crate::proto::opts::MAX_BUF_ALLOC);
    cst.connect_timeout = st.connect_timeout;
    cst.conn = Conn::child(sock_type, cst.bufs.buf_alloc(), hdr);
    cst.transport = Some(t.clone());
    let buf_alloc = cst.conn.rx.buf_alloc;
    let Ok(child) = crate::ops::alloc_sock(core, listener.net(), None, sock_type, gfp, false, cst)
    else {
        out.rst_nosock(t, hdr, gfp);
        return;
    };
    child
        .data()
        .transport_id
        .store(t.id, ::core::sync::atomic::Ordering::Release);
    child.data().set_backlog_limit(buf_alloc);

    // The child's spinlock is held from here: allocations are atomic.
    let mut cg = child.lock_fresh_nested();
    let Ok((_, response)) = crate::tx::ctrl_pkt(cg.state(), Op::Response, 0, Gfp::Atomic) else {
        drop(cg);
        out.rst_nosock(t, hdr, gfp);
        return;
    };
    crate::ops::mirror(&mut cg);
    if !crate::ops::hash_connected(core, &mut cg, Gfp::Atomic) {
        drop(cg);
        out.rst_nosock(t, hdr, gfp);
        return;
    }
    cg.state().pending_response = Some(response);
    drop(cg);
    if g.state().accept_q.push(child.clone()).is_err() {
        let mut cg = child.lock_fresh_nested();
        crate::ops::unhash_connected(core, &mut cg);
        drop(cg);
        out.rst_nosock(t, hdr, gfp);
        return;
    }
    listener.acceptq_added();
    if let Err(child) = out.set_child(child) {
        let mut cg = child.lock_fresh_nested();
        if let Some(r) = cg.state().pending_response.take() {
            out.push(t, r);
        }
    }
    listener.data_ready();
}

impl Shared {
    /// The backlog limit: what an honest peer can have in flight, with packet overhead.
    pub(crate) fn backlog_limit(&self) -> u32 {
        self.backlog_limit
            .load(::core::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the backlog limit from the receive buffer size.
    pub(crate) fn set_backlog_limit(&self, buf_alloc: u32) {
        let limit = (buf_alloc as u64 * 2 + 256 * 1024).min(i32::MAX as u64) as u32;
        self.backlog_limit
            .store(limit, ::core::sync::atomic::Ordering::Relaxed);
    }
}
