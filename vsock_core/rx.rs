// SPDX-License-Identifier: GPL-2.0

//! The receive path (`virtio_transport_recv_pkt`): a packet from a transport is matched to a
//! socket and fed to its state machine, and the resulting [`Effects`] are carried out.
//!
//! A packet is processed at once, in the caller's context (the sender's for loopback), under
//! the receiving socket's spinlock.  If an owner holds the socket, the packet waits on the
//! socket's backlog, which `release_sock` hands back to [`backlog_rcv`]: the receive path never
//! waits for an owner, which may be stalled, and never drops a packet the peer was entitled to
//! send.  While it waits, a credit packet folds into the packet before it and small payloads
//! are appended or packed (see `proto::queue`), so what waits stays close to the payload the
//! peer may send; beyond the backlog's limit the peer is flooding us and the connection is
//! reset once the owner has processed what came before.
//!
//! No work queue sits in between, and no socket's traffic waits behind another's.

use crate::kx::skb::{SkBuff, Skb, SkbCb};
use crate::kx::sock::{BacklogGuard, BhLock, SockProto};
use crate::kx::Gfp;
use crate::lifecycle::{alloc_sock, apply, hash_connected, mirror, unhash_connected};
use crate::proto::addr::{VsockAddr, VMADDR_CID_ANY, VMADDR_CID_LOCAL};
use crate::proto::conn::{Conn, RxPlan, SkState, SockType};
use crate::proto::hdr::{Hdr, Op, SEQ_EOM};
use crate::proto::queue::{self, Fold, Placement, Tail};
use crate::proto::route::child_remote;
use crate::registry::Transport;
use crate::tx::Outbox;
use crate::vsk::{pkt, Guard, Shared, State, Vsk};
use crate::Core;
use ::core::sync::atomic::Ordering;
use kernel::sync::Arc;
use kernel::types::ARef;

/// Payload room of a buffer that packs small payloads: what a 4 KiB allocation leaves beside
/// the header and the buffer's shared info.
const PACK_LEN: u32 = 3584;

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
    let Some(sk) = core.tables.lookup(&src, &dst) else {
        out.rst_nosock(t, &hdr, Gfp::Atomic);
        return;
    };
    if wire_type(&sk) != hdr.type_ {
        out.rst_nosock(t, &hdr, Gfp::Atomic);
        return;
    }
    // A REQUEST that a full accept queue refuses costs the listener nothing: it is answered
    // here, without the listener's lock (a connect flood must not keep its owner busy).
    if hdr.op() == Some(Op::Request) && listening(&sk) && sk.acceptq_room() == 0 {
        out.rst_nosock(t, &hdr, Gfp::Atomic);
        return;
    }
    // A send lending its pages settles with this socket if it is slow to read them.
    crate::kx::zerocopy::Lent::note_receiver(&skb, &sk);
    // The transport is done with the packet: the sender's unsent count drops here.
    skb.orphan();
    // Whatever the transport left in the control buffer is not ours to read.
    skb.set_cb(SkbCb {
        transport: t.id,
        ..SkbCb::default()
    });

    match sk.lock_bh() {
        BhLock::Free(mut g) => process(core, &mut g, t, Some(skb), &hdr, out),
        BhLock::Owned(mut b) => to_backlog(&mut b, t, skb, &hdr, out),
    };
}

/// Whether the socket listens, as its lockless `sk_state` mirror says.
fn listening(sk: &Vsk) -> bool {
    sk.sk_state() == SkState::Listen as u8
}

/// A packet for a socket whose owner holds it: it waits on the backlog, folded into the packet
/// before it where possible.
fn to_backlog(
    b: &mut BacklogGuard<'_, Shared>,
    t: &Arc<Transport>,
    mut skb: SkBuff,
    hdr: &Hdr,
    out: &mut Outbox,
) {
    let sk = b.sock();
    let data = sk.data();
    if data.overflowed.load(Ordering::Acquire) {
        // Behind a packet that was refused: the connection is being reset.
        sk.count_drop();
        return;
    }
    // The owner may hold the socket for long (a page fault): a send lending its pages must
    // not wait for that, so this packet gets its own copy now.
    if crate::kx::zerocopy::Lent::lends(&skb) {
        let _ = skb.copy_user_pages(Gfp::Atomic);
    }
    let limit = data.backlog_limit();
    let mut cb = skb.cb();
    // `sk_add_backlog` counts the receive queue's memory too; the limit is the backlog's own.
    let add_limit = limit.saturating_add(sk.rmem());
    if hdr.op() == Some(Op::Request) && listening(sk) {
        // Counted against the accept queue: however many come, the owner processes at most as
        // many as it can accept, and the rest are refused here.
        if data.pending_requests.load(Ordering::Acquire) >= sk.acceptq_room() {
            out.rst_nosock(t, hdr, Gfp::Atomic);
            return;
        }
        data.pending_requests.fetch_add(1, Ordering::AcqRel);
        cb.flags |= pkt::REQUEST_COUNTED;
        skb.set_cb(cb);
    } else {
        let pressure = b.len() > limit / 8;
        // The user's own zerocopy pages are copied only when memory is tight.
        let copyable = pressure || !skb.has_user_pages();
        if copyable && fold_into_tail(b, &skb, hdr, t.id, pressure) {
            consume_copied(skb);
            return;
        }
        // Data that could not join the packet before it starts a buffer that later packets
        // join (streams only: a SEQPACKET message on a backlog is rarely followed by its rest).
        let packable = hdr.op() == Some(Op::Rw)
            && hdr.type_ == SockType::Stream.wire()
            && skb.len() <= PACK_LEN;
        if pressure && packable {
            if let Some(p) = pack(&skb, hdr, Gfp::Atomic) {
                consume_copied(skb);
                skb = p;
            }
        }
    }
    if let Err(skb) = b.add_backlog(skb, add_limit) {
        if skb.cb().flags & pkt::REQUEST_COUNTED != 0 {
            sub_pending(b.sock());
            out.rst_nosock(t, hdr, Gfp::Atomic);
            return;
        }
        // More than a peer keeping to its credit can have in flight: reset the connection once
        // the owner has processed what came before; drop everything after.
        data.overflowed.store(true, Ordering::Release);
        sk.count_drop();
        if let Some(tail) = b.tail_mut() {
            let mut cb = tail.cb();
            cb.flags |= pkt::OVERFLOW;
            tail.set_cb(cb);
        }
    }
}

/// Folds a packet into the last packet on the backlog, if both belong to one flow and the
/// rules of `proto::queue` allow it; `true` when it did (the packet can be freed).
fn fold_into_tail(
    b: &mut BacklogGuard<'_, Shared>,
    skb: &Skb,
    hdr: &Hdr,
    transport: u64,
    pressure: bool,
) -> bool {
    let Some(tail) = b.tail_mut() else {
        return false;
    };
    let mut tcb = tail.cb();
    let special = pkt::OVERFLOW | pkt::TRANSPORT_RESET | pkt::REQUEST_COUNTED;
    let Some(th) = tail.hdr() else {
        return false;
    };
    if tcb.flags & special != 0 || tcb.transport != transport {
        return false;
    }
    match queue::fold(&th, hdr) {
        Fold::Credit { request } => {
            tail.set_hdr(&queue::with_credit(&th, hdr));
            if request && th.op() == Some(Op::Rw) {
                tcb.flags |= pkt::CREDIT_REQUEST;
                tail.set_cb(tcb);
            }
            true
        }
        Fold::Payload => {
            let t = Tail {
                eom: th.flags & SEQ_EOM != 0,
                linear: !tail.is_nonlinear(),
                tailroom: tail.tailroom(),
            };
            let seqpacket = hdr.type_ == SockType::SeqPacket.wire();
            let eom = hdr.flags & SEQ_EOM != 0;
            queue::place(Some(t), skb.len(), seqpacket, eom, pressure, PACK_LEN) == Placement::Merge
                && absorb(tail, skb, hdr)
        }
        Fold::No => false,
    }
}

/// Appends `skb`'s payload to `tail`, whose header then covers both.
fn absorb(tail: &mut Skb, skb: &Skb, hdr: &Hdr) -> bool {
    let Some(th) = tail.hdr() else {
        return false;
    };
    if tail.append_from(skb, 0, skb.len()).is_err() {
        return false;
    }
    tail.set_hdr(&queue::merged(&th, hdr));
    true
}

/// A copy of a small packet in a buffer with room for more (`PACK_LEN`), or `None` when memory
/// is short.
fn pack(skb: &Skb, hdr: &Hdr, gfp: Gfp) -> Option<SkBuff> {
    let mut p = SkBuff::alloc_linear_pkt(PACK_LEN, gfp).ok()?;
    p.set_hdr(hdr);
    p.append_from(skb, 0, skb.len()).ok()?;
    p.set_cb(skb.cb());
    Some(p)
}

/// Frees a packet whose payload was copied elsewhere.
fn consume_copied(mut skb: SkBuff) {
    skb.release_user_pages_copied();
    skb.consume();
}

fn sub_pending(sk: &Vsk) {
    let _ = sk
        .data()
        .pending_requests
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(v.saturating_sub(1))
        });
}

/// A packet that waited on the backlog while the socket was owned.
pub(crate) fn backlog_rcv(g: &mut Guard<'_>, skb: SkBuff) {
    let Some(core) = crate::core() else { return };
    let cb = skb.cb();
    let mut out = Outbox::new();
    if cb.flags & pkt::REQUEST_COUNTED != 0 {
        sub_pending(g.sock());
    }
    // A reset marker, or a packet; a packet whose transport went away meanwhile is dropped (the
    // transport's sockets are being reset).  A backlog overflow after either is handled below.
    if cb.flags & pkt::TRANSPORT_RESET != 0 {
        crate::lifecycle::reset_for_transport(core, g, cb.transport, Gfp::Kernel);
        crate::lifecycle::cancel_pkt(g);
    } else if let (Some(hdr), Some(t)) = (skb.hdr(), core.registry.by_id(cb.transport)) {
        if let Some(_entered) = t.ops.enter() {
            process(core, g, &t, Some(skb), &hdr, &mut out);
            if cb.flags & pkt::CREDIT_REQUEST != 0 {
                // A CREDIT_REQUEST folded into this packet, answered as if it came next.
                let req = Hdr {
                    op: Op::CreditRequest as u16,
                    len: 0,
                    flags: 0,
                    ..hdr
                };
                process(core, g, &t, None, &req, &mut out);
            }
        }
    }
    if cb.flags & pkt::OVERFLOW != 0 {
        let fx = g.state().conn.backlog_overflow();
        apply(core, g, fx, None, &mut out, Gfp::Kernel);
        g.sock().data().overflowed.store(false, Ordering::Release);
    }
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

/// Feeds a packet to a locked socket; `skb` is the packet itself, none for one that a folded
/// packet stands for (it has no payload).
fn process(
    core: &Core,
    g: &mut Guard<'_>,
    t: &Arc<Transport>,
    skb: Option<SkBuff>,
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
    let sk = g.sock();
    let st = g.state();
    if !st.conn.done && !from_peer(st, t, &src) {
        out.rst_nosock(t, hdr, gfp);
        return;
    }
    // Follow a CID change after a transport reset.
    if st.local.cid != VMADDR_CID_ANY {
        st.local.cid = hdr.dst_cid as u32;
    }
    let placement = match &skb {
        Some(skb) if hdr.op() == Some(Op::Rw) => placement(st, skb, hdr),
        _ => Placement::Own,
    };
    let plan = RxPlan {
        merge: placement == Placement::Merge,
    };
    let fx = st.conn.recv(hdr, plan);
    if fx.error == Some(crate::proto::errno::Errno::EPROTO) {
        kernel::pr_debug!(
            "unexpected {:?} while connecting (local {:?})\n",
            hdr,
            st.local
        );
    }
    if let (true, Some(skb)) = (fx.enqueue, skb) {
        enqueue(sk, st, skb, hdr, placement, gfp);
    }
    apply(core, g, fx, Some((&**t, hdr)), out, gfp);
}

/// Where a data packet goes in the receive queue (`proto::queue::place`).  A packet holding the
/// user's own zerocopy pages is copied only when the queue is under pressure (its completion
/// then says so).
fn placement(st: &mut State, skb: &Skb, hdr: &Hdr) -> Placement {
    let pressure = st.conn.rx.under_pressure();
    if skb.has_user_pages() && !pressure {
        return Placement::Own;
    }
    let tail = st.rx.back_mut().map(|tail| Tail {
        eom: tail.hdr().is_some_and(|h| h.flags & SEQ_EOM != 0),
        linear: !tail.is_nonlinear(),
        tailroom: tail.tailroom(),
    });
    let seqpacket = st.conn.sock_type == SockType::SeqPacket;
    let eom = hdr.flags & SEQ_EOM != 0;
    queue::place(tail, skb.len(), seqpacket, eom, pressure, PACK_LEN)
}

/// Queues an admitted payload where [`placement`] said.  The accounting already counted it as
/// one more packet unless it merges, so a merge that fails after all counts it.
fn enqueue(sk: &Vsk, st: &mut State, skb: SkBuff, hdr: &Hdr, placement: Placement, gfp: Gfp) {
    match placement {
        Placement::Merge => {
            if let Some(tail) = st.rx.back_mut() {
                if absorb(tail, &skb, hdr) {
                    consume_copied(skb);
                    return;
                }
            }
            st.conn.rx.pkts += 1;
        }
        Placement::Pack => {
            if let Some(p) = pack(&skb, hdr, gfp) {
                consume_copied(skb);
                st.rx.push_back(sk, p);
                return;
            }
        }
        Placement::Own => {}
    }
    st.rx.push_back(sk, skb);
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
    let pkt_cost = cst.conn.rx.pkt_cost;
    cst.conn = Conn::child(sock_type, cst.bufs.buf_alloc(), hdr);
    cst.conn.rx.pkt_cost = pkt_cost;
    cst.transport = Some(t.clone());
    let buf_alloc = cst.conn.rx.buf_alloc;
    let Ok(child) = alloc_sock(core, listener.net(), None, sock_type, gfp, false, cst) else {
        out.rst_nosock(t, hdr, gfp);
        return;
    };
    child.data().transport_id.store(t.id, Ordering::Release);
    child.data().set_backlog_limit(buf_alloc);

    // The child's spinlock is held from here: allocations are atomic.
    let mut cg = child.lock_fresh_nested();
    let Ok((_, response)) = crate::tx::ctrl_pkt(cg.state(), Op::Response, 0, Gfp::Atomic) else {
        drop(cg);
        out.rst_nosock(t, hdr, gfp);
        return;
    };
    mirror(&mut cg);
    if !hash_connected(core, &mut cg, Gfp::Atomic) {
        drop(cg);
        out.rst_nosock(t, hdr, gfp);
        return;
    }
    cg.state().pending_response = Some(response);
    drop(cg);
    if g.state().accept_q.push(child.clone()).is_err() {
        let mut cg = child.lock_fresh_nested();
        unhash_connected(core, &mut cg);
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

impl SockProto for Shared {
    type Locked = State;

    fn backlog_rcv(guard: &mut Guard<'_>, skb: SkBuff) {
        backlog_rcv(guard, skb);
    }

    fn timer_fired(sk: ARef<Vsk>, timer: usize) {
        crate::lifecycle::timer_fired(&sk, timer);
    }

    fn skb_sent(&self, bytes: u32) {
        self.skb_unsent_sub(bytes);
    }
}
