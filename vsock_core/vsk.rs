// SPDX-License-Identifier: GPL-2.0

//! A VM socket: its state, and what the socket layer calls back for it.

use crate::kx::skb::{SkBuff, SkbList};
use crate::kx::sock::{ProtoSock, SockGuard, SockProto};
use crate::proto::addr::{VsockAddr, SOCKADDR_VM_LEN};
use crate::proto::conn::{Conn, SkState, SockType};
use crate::proto::opts::BufferSizes;
use crate::registry::Transport;
use crate::table::{BindKey, ConnKey};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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

/// State readable without the socket lock.
pub(crate) struct Shared {
    /// Payload bytes handed to the transport and not consumed yet (`SIOCOUTQ`).
    pub(crate) unsent: AtomicU32,
    /// Identity of the assigned transport (0: none), for walks over the tables.
    pub(crate) transport_id: AtomicU64,
    /// Bytes of packets the backlog may hold while an owner has the socket.
    pub(crate) backlog_limit: AtomicU32,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            unsent: AtomicU32::new(0),
            transport_id: AtomicU64::new(0),
            backlog_limit: AtomicU32::new(1 << 20),
        }
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
    pub(crate) rx: SkbList,
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
    /// The connection was reset because its transport went away: reads report it.
    pub(crate) transport_gone: bool,
    /// Large sends left that copy rather than lend their pages, after a receiver was slow to
    /// read lent ones (see `tx::may_lend`).
    pub(crate) lend_backoff: u8,
}

impl State {
    /// The state of a new socket of type `sock_type`.
    pub(crate) fn new(sock_type: SockType) -> Self {
        let bufs = BufferSizes::default();
        State {
            conn: Conn::new(sock_type, bufs.buf_alloc()),
            local: VsockAddr::ANY,
            remote: VsockAddr::ANY,
            transport: None,
            bufs,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT_SECS * crate::kx::HZ,
            rx: SkbList::new(),
            accept_q: AcceptQueue::new(),
            bound: None,
            connected: None,
            dead: false,
            pending_response: None,
            remote_raw: None,
            transport_gone: false,
            lend_backoff: 0,
        }
    }

    /// Whether the socket is listening.
    pub(crate) fn listening(&self) -> bool {
        self.conn.state == SkState::Listen
    }
}

impl SockProto for Shared {
    type Locked = State;

    fn backlog_rcv(guard: &mut Guard<'_>, skb: SkBuff) {
        crate::rx::backlog_rcv(guard, skb);
    }

    fn timer_fired(sk: ARef<Vsk>, timer: usize) {
        crate::ops::timer_fired(&sk, timer);
    }

    fn skb_sent(&self, bytes: u32) {
        let _ = self
            .unsent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(bytes))
            });
    }
}
