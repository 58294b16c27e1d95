// SPDX-License-Identifier: GPL-2.0

//! The socket tables: bound sockets by local address, connected sockets by peer and local port.
//!
//! Linux keeps two hash tables of lists under one spinlock (`vsock_bind_table`,
//! `vsock_connected_table`).  rvsock splits them by local port into [`SHARDS`] shards, each
//! with its own spinlock and ordered maps: everything a packet's lookup needs (the connected
//! socket, the bound one) lies in the shard of the packet's destination port, and a connect
//! flood against one listener (each refused client binds, is looked up and unbinds) takes the
//! listener's shard once per attempt, instead of one global lock five times.  No code holds
//! two shards at once.  Each entry holds a reference to its socket.  A socket records the keys
//! it was inserted under (in its locked state), so it removes exactly its own entries even if
//! its addresses change meanwhile.

use crate::proto::addr::{VsockAddr, VMADDR_CID_ANY, VMADDR_PORT_ANY};
use crate::proto::errno::Errno;
use crate::proto::ports::{bound_matches, Ephemeral, MAX_PORT_RETRIES};
use crate::vsk::VskRef;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::SpinLock;

/// How many shards the tables have (a power of two).
pub(crate) const SHARDS: usize = 64;

/// Key of the bind table: port, then CID, so that a port's entries are adjacent.
pub(crate) type BindKey = (u32, u32);
/// Key of the connected table: remote CID, remote port, local port.
pub(crate) type ConnKey = (u32, u32, u32);

/// A node reserved for a bind-table insertion (allocated before taking the table lock).
pub(crate) type BindNode = RBTreeNodeReservation<BindKey, VskRef>;
/// A node reserved for a connected-table insertion.
pub(crate) type ConnNode = RBTreeNodeReservation<ConnKey, VskRef>;
/// A node reserved for the list of unbound sockets.
pub(crate) type UnboundNode = RBTreeNodeReservation<usize, VskRef>;

/// One shard: the sockets bound to, and connected at, the local ports of this shard, and the
/// unbound sockets whose addresses hash here.
struct Shard {
    bound: RBTree<BindKey, VskRef>,
    connected: RBTree<ConnKey, VskRef>,
    /// Sockets made by `socket()` and not bound yet, by address (Linux keeps them in
    /// `vsock_unbound_sockets`); only `sock_diag` walks them.  The entry's reference keeps the
    /// address from being reused while it is listed.
    unbound: RBTree<usize, VskRef>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            bound: RBTree::new(),
            connected: RBTree::new(),
            unbound: RBTree::new(),
        }
    }

    /// The socket bound to `addr` or to a matching wildcard (`__vsock_find_bound_socket`).
    fn find_bound(&mut self, addr: &VsockAddr) -> Option<VskRef> {
        if let Some(sk) = self.bound.get(&(addr.port, addr.cid)) {
            return Some(sk.clone());
        }
        if let Some(sk) = self.bound.get(&(addr.port, VMADDR_CID_ANY)) {
            return Some(sk.clone());
        }
        if addr.cid == VMADDR_CID_ANY {
            let cursor = self.bound.cursor_lower_bound(&(addr.port, 0))?;
            let (k, sk) = cursor.current();
            if bound_matches(&VsockAddr::new(k.1, k.0), addr) {
                return Some(sk.clone());
            }
        }
        None
    }

    /// Sockets of this shard that use transport `id`: bound ones, then connected ones.
    fn of_transport(&self, id: u64) -> impl Iterator<Item = &VskRef> {
        Iterator::chain(self.bound.values(), self.connected.values())
            .filter(move |sk| sk.data().transport_id.load(Ordering::Acquire) == id)
    }
}

/// The tables, in shards, and the ephemeral port counter.
#[pin_data]
pub(crate) struct Tables {
    #[pin]
    shards: [SpinLock<Shard>; SHARDS],
    /// The state of a [`Ephemeral`] counter, shared by all shards.
    ports: AtomicU32,
}

impl Tables {
    /// Empty tables; the ephemeral ports start at a random point above the reserved range.
    pub(crate) fn new(seed: u32) -> impl PinInit<Self> {
        pin_init!(Tables {
            shards <- kernel::init::pin_init_array_from_fn(|_| {
                kernel::new_spinlock!(Shard::new(), "rvsock:tables")
            }),
            ports: AtomicU32::new(seed),
        })
    }

    fn shard(&self, port: u32) -> &SpinLock<Shard> {
        &self.shards[port as usize % SHARDS]
    }

    fn shard_of(&self, sk: &crate::vsk::Vsk) -> &SpinLock<Shard> {
        let key = unbound_key(sk);
        // Socket objects are at least 64-byte aligned: the bits above pick the shard.
        &self.shards[((key >> 6) ^ (key >> 16)) % SHARDS]
    }

    /// The socket a packet from `src` to `dst` is for: the connected socket of that peer at
    /// `dst`'s port, else the socket bound to `dst` (`vsock_find_connected_socket`, then
    /// `vsock_find_bound_socket`).
    pub(crate) fn lookup(&self, src: &VsockAddr, dst: &VsockAddr) -> Option<VskRef> {
        let mut shard = self.shard(dst.port).lock();
        if let Some(sk) = shard.connected.get(&(src.cid, src.port, dst.port)) {
            return Some(sk.clone());
        }
        shard.find_bound(dst)
    }

    /// The next candidate of the shared ephemeral port counter.
    fn next_ephemeral(&self) -> u32 {
        let mut old = self.ports.load(Ordering::Relaxed);
        loop {
            let mut e = Ephemeral::new(old);
            let port = e.next_candidate();
            match self.ports.compare_exchange_weak(
                old,
                e.state(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return port,
                Err(now) => old = now,
            }
        }
    }

    /// Binds a socket to `addr` (port `VMADDR_PORT_ANY` picks an ephemeral one, as
    /// [`Ephemeral::allocate`] does, each candidate checked and taken under its shard's lock)
    /// and returns the key it is bound under.  `EADDRINUSE` or `EADDRNOTAVAIL` when that fails;
    /// the node is then freed.
    pub(crate) fn bind(
        &self,
        addr: VsockAddr,
        sk: VskRef,
        node: BindNode,
    ) -> core::result::Result<BindKey, Errno> {
        let (tries, fixed) = if addr.port == VMADDR_PORT_ANY {
            (MAX_PORT_RETRIES, None)
        } else {
            (1, Some(addr.port))
        };
        for _ in 0..tries {
            let port = fixed.unwrap_or_else(|| self.next_ephemeral());
            let mut shard = self.shard(port).lock();
            if shard.find_bound(&VsockAddr::new(addr.cid, port)).is_some() {
                continue;
            }
            let key = (port, addr.cid);
            shard.bound.insert(node.into_node(key, sk));
            return Ok(key);
        }
        Err(if fixed.is_some() {
            Errno::EADDRINUSE
        } else {
            Errno::EADDRNOTAVAIL
        })
    }

    /// Removes a binding; the caller drops the returned reference outside the lock.
    pub(crate) fn unbind(&self, key: &BindKey) -> Option<VskRef> {
        self.shard(key.0).lock().bound.remove(key)
    }

    /// Lists a new, unbound socket.
    pub(crate) fn insert_unbound(&self, sk: VskRef, node: UnboundNode) {
        let key = unbound_key(&sk);
        self.shard_of(&sk)
            .lock()
            .unbound
            .insert(node.into_node(key, sk));
    }

    /// Unlists a socket that got bound or was released, if it is listed; the caller drops the
    /// returned reference outside the lock.
    pub(crate) fn remove_unbound(&self, sk: &crate::vsk::Vsk) -> Option<VskRef> {
        self.shard_of(sk).lock().unbound.remove(&unbound_key(sk))
    }

    /// Inserts a connected socket, unless its key is taken (`EADDRINUSE`).
    pub(crate) fn insert_connected(
        &self,
        key: ConnKey,
        sk: VskRef,
        node: ConnNode,
    ) -> core::result::Result<(), Errno> {
        let mut shard = self.shard(key.2).lock();
        if shard.connected.get(&key).is_some() {
            return Err(Errno::EADDRINUSE);
        }
        shard.connected.insert(node.into_node(key, sk));
        Ok(())
    }

    /// Removes a connected socket; the caller drops the returned reference outside the lock.
    pub(crate) fn remove_connected(&self, key: &ConnKey) -> Option<VskRef> {
        self.shard(key.2).lock().connected.remove(key)
    }

    /// How many sockets (bound or connected) use transport `id`.
    pub(crate) fn count_transport(&self, id: u64) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().of_transport(id).count())
            .sum()
    }

    /// References to up to `max` sockets (bound or connected) whose transport is `id`, into
    /// `out`; returns how many matched in all.
    pub(crate) fn collect_transport(&self, id: u64, out: &mut KVec<VskRef>, max: usize) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            for sk in shard.lock().of_transport(id) {
                n += 1;
                if out.len() < max
                    && !out
                        .iter()
                        .any(|s| core::ptr::eq::<crate::vsk::Vsk>(&**s, &**sk))
                {
                    // Capacity was reserved by the caller, so this does not allocate.
                    let _ = out.push(sk.clone(), GFP_ATOMIC);
                }
            }
        }
        n
    }

    /// References to the sockets of the tables after the first `skip`, as many as `out` has
    /// room for (it does not grow: the caller reserved capacity, as the locks are spinlocks).
    /// Shard by shard, bound sockets come first, then unbound ones, then connected ones that
    /// are not bound (accepted children), each in key order: the order in which `sock_diag`
    /// dumps resume.
    pub(crate) fn collect_from(&self, skip: usize, out: &mut KVec<VskRef>) {
        let mut seen = 0usize;
        for shard in self.shards.iter() {
            if out.len() >= out.capacity() {
                return;
            }
            let mut guard = shard.lock();
            let Shard {
                bound,
                connected,
                unbound,
            } = &mut *guard;
            let mut add = |sk: &VskRef, out: &mut KVec<VskRef>| {
                if seen >= skip && out.len() < out.capacity() {
                    // Within the reserved capacity: does not allocate.
                    let _ = out.push(sk.clone(), GFP_ATOMIC);
                }
                seen += 1;
            };
            for sk in Iterator::chain(bound.values(), unbound.values()) {
                add(sk, out);
            }
            for (key, sk) in connected.iter() {
                if !is_bound_at(bound, key.2, sk) {
                    add(sk, out);
                }
            }
        }
    }
}

fn unbound_key(sk: &crate::vsk::Vsk) -> usize {
    sk.as_ptr() as usize
}

/// Whether `sk` is in the bind table under port `port` (any CID).
fn is_bound_at(bound: &mut RBTree<BindKey, VskRef>, port: u32, sk: &VskRef) -> bool {
    let mut cursor = bound.cursor_lower_bound(&(port, 0));
    while let Some(c) = cursor {
        let (key, v) = c.current();
        if key.0 != port {
            return false;
        }
        if core::ptr::eq::<crate::vsk::Vsk>(&**v, &**sk) {
            return true;
        }
        cursor = c.move_next();
    }
    false
}
