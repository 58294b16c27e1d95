// SPDX-License-Identifier: GPL-2.0

//! A VM socket: its state, locked and shared.

use crate::kx::skb::{SkBuff, Skb, SkbIter, SkbList};
use crate::kx::sock::{ProtoSock, SockGuard};
use crate::proto::addr::{VsockAddr, SOCKADDR_VM_LEN};
use crate::proto::conn::{Conn, SkState, SockType};
use crate::proto::opts::BufferSizes;
use crate::registry::Transport;
use crate::table::{BindKey, ConnKey};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::Arc;
use kernel::types::ARef;

/// A VM socket.
pub(crate) type Vsk = ProtoSock<Shared>;
/// A counted reference to a VM socket.
pub(crate) type VskRef = ARef<Vsk>;
/// Exclusive access to a VM socket's locked state.
pub(crate) type Guard<'a> = SockGuard<'a, Shared>;

/// Timer of a non-blocking connect (`connect_work`).
pub(crate) const TIMER_CONNECT: usize = 0;
/// Timer of the close handshake (`close_work`, `VSOCK_CLOSE_TIMEOUT`).
pub(crate) const TIMER_CLOSE: usize = 1;

/// Default connect timeout: 2 s.
pub(crate) const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 2;
/// How long a closing socket waits for the peer's RST: 8 s.
pub(crate) const CLOSE_TIMEOUT_SECS: u64 = 8;

/// Per-packet flags of the core (`SkbCb::flags`) on packets waiting for a socket.
pub(crate) mod pkt {
    /// A CREDIT_REQUEST was folded into this packet: answer it once the packet is processed.
    pub(crate) const CREDIT_REQUEST: u32 = 1 << 0;
    /// The backlog overflowed after this packet: reset the connection once it is processed.
    pub(crate) const OVERFLOW: u32 = 1 << 1;
    /// Not a packet: the transport went away while an owner held the socket; reset it.
    pub(crate) const TRANSPORT_RESET: u32 = 1 << 2;
    /// A REQUEST counted in its listener's `pending_requests`.
    pub(crate) const REQUEST_COUNTED: u32 = 1 << 3;
}

/// Extra backlog room beyond twice the receive buffer, for control packets.
const BACKLOG_SLACK: u64 = 256 * 1024;

/// State readable without the socket lock.
pub(crate) struct Shared {
    /// Payload bytes handed to the transport and not consumed yet (`SIOCOUTQ`).
    pub(crate) unsent: AtomicU32,
    /// Identity of the assigned transport (0: none), for walks over the tables.
    pub(crate) transport_id: AtomicU64,
    /// Bytes of packets the backlog may hold while an owner has the socket.
    backlog_limit: AtomicU32,
    /// REQUESTs waiting on a listener's backlog, counted against its accept queue.
    pub(crate) pending_requests: AtomicU32,
    /// The backlog overflowed: packets are dropped until the owner has reset the connection.
    pub(crate) overflowed: AtomicBool,
    /// Large sends left that copy rather than lend their pages, after a receiver was slow to
    /// read lent ones (see `tx::may_lend`).
    pub(crate) lend_backoff: AtomicU8,
    /// Local and remote address, mirrored from the locked state for `sock_diag`.
    addrs: [AtomicU32; 4],
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            unsent: AtomicU32::new(0),
            transport_id: AtomicU64::new(0),
            backlog_limit: AtomicU32::new(0),
            pending_requests: AtomicU32::new(0),
            overflowed: AtomicBool::new(false),
            lend_backoff: AtomicU8::new(0),
            // Unbound and unconnected, as in the state.
            addrs: [
                AtomicU32::new(VsockAddr::ANY.cid),
                AtomicU32::new(VsockAddr::ANY.port),
                AtomicU32::new(VsockAddr::ANY.cid),
                AtomicU32::new(VsockAddr::ANY.port),
            ],
        }
    }

    /// The backlog limit: twice what an honest peer may have in flight, plus room for control
    /// packets.
    pub(crate) fn backlog_limit(&self) -> u32 {
        self.backlog_limit.load(Ordering::Relaxed)
    }

    /// Raises the backlog limit for a receive buffer of `buf_alloc` bytes.  It never shrinks: a
    /// peer may still send under a larger buffer advertised before.
    pub(crate) fn set_backlog_limit(&self, buf_alloc: u32) {
        let limit = (buf_alloc as u64 * 2 + BACKLOG_SLACK).min(i32::MAX as u64) as u32;
        self.backlog_limit.fetch_max(limit, Ordering::Relaxed);
    }

    /// Mirrors the addresses (called with the socket lock held, after they change).
    pub(crate) fn set_addrs(&self, local: &VsockAddr, remote: &VsockAddr) {
        for (a, v) in self
            .addrs
            .iter()
            .zip([local.cid, local.port, remote.cid, remote.port])
        {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// The mirrored `(local, remote)` addresses.
    pub(crate) fn addrs(&self) -> (VsockAddr, VsockAddr) {
        let v = |i: usize| self.addrs[i].load(Ordering::Relaxed);
        (VsockAddr::new(v(0), v(1)), VsockAddr::new(v(2), v(3)))
    }

    /// Takes back bytes counted as unsent that were never sent.
    pub(crate) fn skb_unsent_sub(&self, n: u32) {
        let _ = self
            .unsent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }
}

/// Received packets not read yet, their memory accounted to the socket (`sk_rmem_alloc`, which
/// `SO_MEMINFO` reports): every packet enters through [`RxQueue::push_back`] and leaves
/// through [`RxQueue::pop_front`] or [`RxQueue::clear`].  A packet's truesize does not change
/// while it is queued (merging only fills its tailroom).
#[derive(Default)]
pub(crate) struct RxQueue {
    list: SkbList,
}

impl RxQueue {
    /// Queues a packet.
    pub(crate) fn push_back(&mut self, sk: &Vsk, skb: SkBuff) {
        sk.rmem_add(skb.truesize() as i32);
        self.list.push_back(skb);
    }

    /// Takes the first packet off the queue.
    pub(crate) fn pop_front(&mut self, sk: &Vsk) -> Option<SkBuff> {
        let skb = self.list.pop_front()?;
        sk.rmem_add(-(skb.truesize() as i32));
        Some(skb)
    }

    /// Frees every packet.
    pub(crate) fn clear(&mut self, sk: &Vsk) {
        while let Some(skb) = self.pop_front(sk) {
            drop(skb);
        }
    }

    /// The first packet.
    pub(crate) fn front_mut(&mut self) -> Option<&mut Skb> {
        self.list.front_mut()
    }

    /// The last packet.
    pub(crate) fn back_mut(&mut self) -> Option<&mut Skb> {
        self.list.back_mut()
    }

    /// The packets, first to last.
    pub(crate) fn iter(&self) -> SkbIter<'_> {
        self.list.iter()
    }

    /// Calls `f` on each packet, first to last.
    pub(crate) fn for_each_mut(&mut self, f: impl FnMut(&mut Skb)) {
        self.list.for_each_mut(f);
    }
}

/// Connections waiting to be accepted, oldest first.
pub(crate) struct AcceptQueue {
    q: RBTree<u64, VskRef>,
    next: u64,
}

impl AcceptQueue {
    fn new() -> Self {
        AcceptQueue {
            q: RBTree::new(),
            next: 0,
        }
    }

    /// Appends a child; may run in atomic context.
    pub(crate) fn push(&mut self, child: VskRef) -> Result {
        let key = self.next;
        self.q.try_create_and_insert(key, child, GFP_ATOMIC)?;
        self.next += 1;
        Ok(())
    }

    /// Removes the oldest child.
    pub(crate) fn pop(&mut self) -> Option<VskRef> {
        let cursor = self.q.cursor_front()?;
        let (_, node) = cursor.remove_current();
        Some(node.to_key_value().1)
    }

    /// Whether no child waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.q.iter().next().is_none()
    }
}

/// State protected by the socket lock.
pub(crate) struct State {
    /// Protocol state: connection state, shutdown bits, credit.
    pub(crate) conn: Conn,
    /// Local address (`VsockAddr::ANY` until bound).
    pub(crate) local: VsockAddr,
    /// Remote address (`VsockAddr::ANY` until connected).
    pub(crate) remote: VsockAddr,
    /// The transport serving the connection, assigned on connect or on accept.
    pub(crate) transport: Option<Arc<Transport>>,
    /// `SO_VM_SOCKETS_BUFFER_*`.
    pub(crate) bufs: BufferSizes,
    /// `SO_VM_SOCKETS_CONNECT_TIMEOUT`, in jiffies.
    pub(crate) connect_timeout: u64,
    /// Received packets not read yet.
    pub(crate) rx: RxQueue,
    /// Children of a listener waiting for `accept`.
    pub(crate) accept_q: AcceptQueue,
    /// The key it is in the bind table under.
    pub(crate) bound: Option<BindKey>,
    /// The key it is in the connected table under.
    pub(crate) connected: Option<ConnKey>,
    /// Released by its owner (`SOCK_DEAD`).
    pub(crate) dead: bool,
    /// A child's RESPONSE, sent before anything else the child sends (see `tx::Outbox`).
    pub(crate) pending_response: Option<SkBuff>,
    /// The remote address exactly as `connect` was given it (`getpeername` returns it).
    pub(crate) remote_raw: Option<[u8; SOCKADDR_VM_LEN]>,
    /// The connection was reset because its transport went away, and whether it had ended
    /// (upstream's `SOCK_DONE`) before that: reads report what upstream's
    /// `virtio_vsock_reset_sock` leaves.
    pub(crate) transport_gone: Option<bool>,
}

/// The protocol state of a fresh connection of type `ty` with receive buffer `buf_alloc`, with
/// the kernel's per-packet memory cost.
pub(crate) fn new_conn(ty: SockType, buf_alloc: u32) -> Conn {
    let mut c = Conn::new(ty, buf_alloc);
    c.rx.pkt_cost = crate::kx::sys::SKB_TRUESIZE_0;
    c
}

impl State {
    /// The state of a new socket of type `sock_type`.
    pub(crate) fn new(sock_type: SockType) -> Self {
        let bufs = BufferSizes::default();
        State {
            conn: new_conn(sock_type, bufs.buf_alloc()),
            local: VsockAddr::ANY,
            remote: VsockAddr::ANY,
            transport: None,
            bufs,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT_SECS * crate::kx::HZ,
            rx: RxQueue::default(),
            accept_q: AcceptQueue::new(),
            bound: None,
            connected: None,
            dead: false,
            pending_response: None,
            remote_raw: None,
            transport_gone: None,
        }
    }

    /// Whether the socket is listening.
    pub(crate) fn listening(&self) -> bool {
        self.conn.state == SkState::Listen
    }
}
