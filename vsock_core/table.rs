// SPDX-License-Identifier: GPL-2.0

//! The socket tables: bound sockets by local address, connected sockets by peer and local port.
//!
//! Linux keeps two hash tables of lists under one spinlock (`vsock_bind_table`,
//! `vsock_connected_table`); rvsock keeps two ordered maps under one spinlock.  Each entry holds
//! a reference to its socket.  A socket records the keys it was inserted under (in its locked
//! state), so it removes exactly its own entries even if its addresses change meanwhile.

use crate::proto::addr::{VsockAddr, VMADDR_CID_ANY, VMADDR_PORT_ANY};
use crate::proto::errno::Errno;
use crate::proto::ports::{bound_matches, Ephemeral};
use crate::vsk::VskRef;
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};

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

/// Both tables, the unbound sockets and the ephemeral port counter.
pub(crate) struct Tables {
    bound: RBTree<BindKey, VskRef>,
    connected: RBTree<ConnKey, VskRef>,
    /// Sockets made by `socket()` and not bound yet, by address (Linux keeps them in
    /// `vsock_unbound_sockets`); only `sock_diag` walks them.  The entry's reference keeps the
    /// address from being reused while it is listed.
    unbound: RBTree<usize, VskRef>,
    ports: Ephemeral,
}

impl Tables {
    /// Empty tables; the ephemeral ports start at a random point above the reserved range.
    pub(crate) fn new(seed: u32) -> Self {
        Tables {
            bound: RBTree::new(),
            connected: RBTree::new(),
            unbound: RBTree::new(),
            ports: Ephemeral::new(seed),
        }
    }

    /// The socket bound to `addr` or to a matching wildcard (`__vsock_find_bound_socket`).
    pub(crate) fn find_bound(&mut self, addr: &VsockAddr) -> Option<VskRef> {
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

    fn port_in_use(&mut self, cid: u32, port: u32) -> bool {
        self.find_bound(&VsockAddr::new(cid, port)).is_some()
    }

    /// Binds a socket to `addr` (port `VMADDR_PORT_ANY` picks an ephemeral one) and returns
    /// the key it is bound under.  `EADDRINUSE` or `EADDRNOTAVAIL` when that fails; the node is
    /// then freed.
    pub(crate) fn bind(
        &mut self,
        addr: VsockAddr,
        sk: VskRef,
        node: BindNode,
    ) -> core::result::Result<BindKey, Errno> {
        let port = if addr.port == VMADDR_PORT_ANY {
            let mut ports = self.ports;
            let r = ports.allocate(|p| self.port_in_use(addr.cid, p));
            self.ports = ports;
            r?
        } else {
            if self.port_in_use(addr.cid, addr.port) {
                return Err(Errno::EADDRINUSE);
            }
            addr.port
        };
        let key = (port, addr.cid);
        self.bound.insert(node.into_node(key, sk));
        Ok(key)
    }

    /// Removes a binding; the caller drops the returned reference outside the lock.
    pub(crate) fn unbind(&mut self, key: &BindKey) -> Option<VskRef> {
        self.bound.remove(key)
    }

    /// Lists a new, unbound socket.
    pub(crate) fn insert_unbound(&mut self, sk: VskRef, node: UnboundNode) {
        let key = unbound_key(&sk);
        self.unbound.insert(node.into_node(key, sk));
    }

    /// Unlists a socket that got bound or was released, if it is listed; the caller drops the
    /// returned reference outside the lock.
    pub(crate) fn remove_unbound(&mut self, sk: &crate::vsk::Vsk) -> Option<VskRef> {
        self.unbound.remove(&unbound_key(sk))
    }

    /// The connected socket whose peer is `src` and whose local port is `dst_port`.
    pub(crate) fn find_connected(&self, src: &VsockAddr, dst_port: u32) -> Option<VskRef> {
        self.connected.get(&(src.cid, src.port, dst_port)).cloned()
    }

    /// Inserts a connected socket, unless its key is taken (`EADDRINUSE`).
    pub(crate) fn insert_connected(
        &mut self,
        key: ConnKey,
        sk: VskRef,
        node: ConnNode,
    ) -> core::result::Result<(), Errno> {
        if self.connected.get(&key).is_some() {
            return Err(Errno::EADDRINUSE);
        }
        self.connected.insert(node.into_node(key, sk));
        Ok(())
    }

    /// Removes a connected socket; the caller drops the returned reference outside the lock.
    pub(crate) fn remove_connected(&mut self, key: &ConnKey) -> Option<VskRef> {
        self.connected.remove(key)
    }

    /// How many sockets (bound or connected) use transport `id`.
    pub(crate) fn count_transport(&self, id: u64) -> usize {
        Iterator::chain(self.bound.values(), self.connected.values())
            .filter(|sk| {
                sk.data()
                    .transport_id
                    .load(core::sync::atomic::Ordering::Acquire)
                    == id
            })
            .count()
    }

    /// References to up to `max` sockets (bound or connected) whose transport is `id`, into
    /// `out`; returns how many matched in all.
    pub(crate) fn collect_transport(&self, id: u64, out: &mut KVec<VskRef>, max: usize) -> usize {
        let mut n = 0;
        for sk in Iterator::chain(self.bound.values(), self.connected.values()) {
            if sk
                .data()
                .transport_id
                .load(core::sync::atomic::Ordering::Acquire)
                != id
            {
                continue;
            }
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
        n
    }

    /// References to the sockets of both tables after the first `skip`, as many as `out` has
    /// room for (it does not grow: the caller reserved capacity, as the lock is a spinlock).
    /// Bound sockets come first, then unbound ones, then connected ones that are not bound
    /// (accepted children), each in key order: the order in which `sock_diag` dumps resume.
    pub(crate) fn collect_from(&mut self, skip: usize, out: &mut KVec<VskRef>) {
        let Tables {
            bound,
            connected,
            unbound,
            ..
        } = self;
        let mut seen = 0usize;
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
