// SPDX-License-Identifier: GPL-2.0

//! The life of a socket beside the tables: allocation, the connected and bind tables, carrying
//! out the effects of protocol events, timers, and resets when a transport goes away.  Both the
//! socket calls ([`crate::ops`]) and the receive path ([`crate::rx`]) build on this.

use crate::kx::sock::{BhLock, Net, NewSock};
use crate::kx::socket::{Creating, SocketState};
use crate::kx::{sys, Gfp};
use crate::proto::addr::AF_VSOCK;
use crate::proto::conn::{Effects, SockType};
use crate::proto::hdr::Hdr;
use crate::registry::Transport;
use crate::tx::{self, Outbox};
use crate::vsk::{pkt, Guard, Shared, State, Vsk, VskRef, TIMER_CLOSE, TIMER_CONNECT};
use crate::{core, Core};
use ::core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;
use kernel::types::ARef;

/// Allocates a socket with the given initial state, attached to `sock` if given.
pub(crate) fn alloc_sock(
    core: &Core,
    net: Net<'_>,
    sock: Option<Creating<'_>>,
    ty: SockType,
    gfp: Gfp,
    kern: bool,
    state: State,
) -> Result<VskRef> {
    let sk_type = match ty {
        SockType::Stream => sys::sock_type_SOCK_STREAM,
        SockType::SeqPacket => sys::sock_type_SOCK_SEQPACKET,
    } as u16;
    let buf_alloc = state.conn.rx.buf_alloc;
    let how = NewSock {
        net,
        sock,
        family: AF_VSOCK as i32,
        sk_type,
        gfp,
        kern,
    };
    let sk = Vsk::alloc(&core.proto, how, state, Shared::new())?;
    sk.data().set_backlog_limit(buf_alloc);
    Ok(sk)
}

/// Mirrors the protocol state into `sk_state` and `sk_shutdown`, and the addresses for
/// `sock_diag`.
pub(crate) fn mirror(g: &mut Guard<'_>) {
    let (state, shutdown, local, remote) = {
        let st = g.state();
        (st.conn.state as u8, st.conn.shutdown, st.local, st.remote)
    };
    let sk = g.sock();
    sk.set_sk_state(state);
    sk.set_sk_shutdown(shutdown);
    sk.data().set_addrs(&local, &remote);
}

/// Inserts the socket into the connected table; `false` if its key is taken or no memory.
pub(crate) fn hash_connected(core: &Core, g: &mut Guard<'_>, gfp: Gfp) -> bool {
    if g.state().connected.is_some() {
        return true;
    }
    let Ok(node) = RBTreeNodeReservation::new(gfp.flags()) else {
        return false;
    };
    let st = g.state();
    let key = (st.remote.cid, st.remote.port, st.local.port);
    let me: VskRef = ARef::from(g.sock());
    let r = core.tables.insert_connected(key, me, node);
    if r.is_ok() {
        g.state().connected = Some(key);
    }
    r.is_ok()
}

/// Removes the socket from the connected table.
pub(crate) fn unhash_connected(core: &Core, g: &mut Guard<'_>) {
    let Some(key) = g.state().connected.take() else {
        return;
    };
    let old = core.tables.remove_connected(&key);
    drop(old);
}

/// The close is complete: purge the receive queue and leave the tables (the bind table only
/// once the owner released the socket) (`virtio_transport_remove_sock`).
pub(crate) fn remove_sock(core: &Core, g: &mut Guard<'_>) {
    let sk = g.sock();
    g.state().rx.clear(sk);
    unhash_connected(core, g);
    let st = g.state();
    if st.dead {
        let old = match st.bound.take() {
            Some(key) => core.tables.unbind(&key),
            // Never bound: it may be listed as unbound.
            None => core.tables.remove_unbound(g.sock()),
        };
        drop(old);
    }
}

/// Carries out the effects of an event on a locked socket, the payload (if any) already
/// queued: reply, error, tables, then wake-ups.  `rx` is the packet the event was, if any.
pub(crate) fn apply(
    core: &Core,
    g: &mut Guard<'_>,
    fx: Effects,
    rx: Option<(&Transport, &Hdr)>,
    out: &mut Outbox,
    gfp: Gfp,
) {
    let sk = g.sock();
    if let Some(r) = fx.send {
        tx::reply(g.state(), r, rx, out, gfp);
    }
    if let Some(e) = fx.error {
        sk.report_error(e);
    }
    if fx.connected {
        if let Some(s) = sk.socket() {
            s.set_state(SocketState::Connected);
        }
        hash_connected(core, g, gfp);
    }
    if fx.unhash {
        unhash_connected(core, g);
    }
    if fx.cancel_close_timer && sk.disarm_timer(TIMER_CLOSE) {
        let fx2 = g.state().conn.close_timer_cancelled();
        apply(core, g, fx2, None, out, gfp);
    }
    if fx.remove {
        remove_sock(core, g);
    }
    mirror(g);
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

/// A socket timer fired.
pub(crate) fn timer_fired(sk: &Vsk, timer: usize) {
    let Some(core) = core() else { return };
    let mut g = sk.lock();
    let mut out = Outbox::new();
    let fx = match timer {
        TIMER_CONNECT => {
            let fx = g.state().conn.connect_timeout();
            if fx.error.is_some() {
                if let Some(s) = sk.socket() {
                    s.set_state(SocketState::Unconnected);
                }
                cancel_pkt(&mut g);
            }
            fx
        }
        TIMER_CLOSE => g.state().conn.close_timeout(),
        _ => return,
    };
    apply(core, &mut g, fx, None, &mut out, Gfp::Kernel);
    out.flush(core);
}

/// Drops the socket's packets still queued in its transport.
pub(crate) fn cancel_pkt(g: &mut Guard<'_>) {
    if let Some(t) = g.state().transport.clone() {
        t.ops.cancel_pkt(g.sock().as_ptr());
    }
}

/// Resets the socket's connection if transport `id` serves it, because that transport went
/// away; returns whether it did.  The caller cancels the socket's queued packets.
pub(crate) fn reset_for_transport(core: &Core, g: &mut Guard<'_>, id: u64, gfp: Gfp) -> bool {
    let mine = g.state().transport.as_ref().is_some_and(|x| x.id == id);
    if !mine {
        return false;
    }
    let was_done = g.state().conn.done;
    g.state().transport_gone = Some(was_done);
    let fx = g.state().conn.transport_reset();
    let mut out = Outbox::new();
    apply(core, g, fx, None, &mut out, gfp);
    // A transport reset sends nothing; a child's RESPONSE not sent yet is dropped with it.
    drop(out);
    true
}

/// Resets every socket that uses transport `t`; returns how many.
///
/// It never waits for a socket's owner, which may be stalled (in a page fault, say): a socket
/// nobody owns is reset at once under its spinlock, an owned one gets a reset marker on its
/// backlog, which its owner processes when it releases the socket.  So this may run while the
/// caller owns one of the sockets (a transport calling `rvsock_transport_reset_all` from its
/// `send_pkt`), and `rmmod` of a transport never hangs behind a socket.
pub(crate) fn reset_transport_sockets(core: &Core, t: &Arc<Transport>) -> usize {
    let mut total = 0;
    loop {
        let want = core.tables.count_transport(t.id);
        if want == 0 {
            return total;
        }
        let Ok(mut socks) = KVec::with_capacity(want + 8, GFP_KERNEL) else {
            return total;
        };
        let cap = socks.capacity();
        core.tables.collect_transport(t.id, &mut socks, cap);
        if socks.is_empty() {
            return total;
        }
        for sk in socks.iter() {
            // Allocated before the spinlock is taken, so that it does not fail under it.
            let marker = crate::kx::skb::SkBuff::alloc_pkt(0, Gfp::Kernel).ok();
            let reset = match sk.lock_bh() {
                BhLock::Free(mut g) => {
                    sk.data().transport_id.store(0, Ordering::Release);
                    reset_for_transport(core, &mut g, t.id, Gfp::Atomic)
                }
                BhLock::Owned(mut b) => match marker {
                    Some(mut m) => {
                        sk.data().transport_id.store(0, Ordering::Release);
                        let mut cb = m.cb();
                        cb.flags = pkt::TRANSPORT_RESET;
                        cb.transport = t.id;
                        m.set_cb(cb);
                        // Unlimited: a marker must not be refused.
                        let _ = b.add_backlog(m, u32::MAX);
                        true
                    }
                    // No memory for a marker: wait for the owner after all.
                    None => {
                        drop(b);
                        let mut g = sk.lock();
                        sk.data().transport_id.store(0, Ordering::Release);
                        reset_for_transport(core, &mut g, t.id, Gfp::Kernel)
                    }
                },
            };
            if reset {
                t.ops.cancel_pkt(sk.as_ptr());
                total += 1;
            }
        }
    }
}
