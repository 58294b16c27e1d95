// SPDX-License-Identifier: GPL-2.0

//! The transport registry: one slot each for H2G, G2H, DGRAM and LOCAL transports, filled by
//! transport modules at load time, in any order (`vsock_core_register`).
//!
//! A plain data structure: the entry points that transports call, which also reset sockets and
//! receive packets, are in [`crate::abi`].

use crate::kx::transport::host::{Desc, Ops};
use crate::proto::addr::VsockAddr;
use crate::proto::errno::Errno;
use crate::proto::route::{Loaded, Slot};
use ::core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

/// A registered transport.
pub(crate) struct Transport {
    /// Unique identity (never reused), recorded in sockets and packets.
    pub(crate) id: u64,
    /// What it registered with.
    pub(crate) desc: Desc,
    /// Its operations (revoked when it unregisters).
    pub(crate) ops: Ops,
    local_cid: AtomicU32,
}

impl Transport {
    /// This side's CID on the transport.
    pub(crate) fn local_cid(&self) -> u32 {
        self.local_cid.load(Ordering::Acquire)
    }

    /// Changes this side's CID.
    pub(crate) fn set_local_cid(&self, cid: u32) {
        self.local_cid.store(cid, Ordering::Release);
    }
}

/// The slots.
#[pin_data]
pub(crate) struct Registry {
    #[pin]
    slots: SpinLock<[Option<Arc<Transport>>; 4]>,
    next_id: AtomicU64,
}

impl Registry {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            slots <- kernel::new_spinlock!([None, None, None, None], "rvsock:registry"),
            next_id: AtomicU64::new(1),
        })
    }

    /// A record for a transport that registers with `desc` and `ops`, with a fresh identity.
    pub(crate) fn new_transport(&self, desc: Desc, ops: Ops) -> Result<Arc<Transport>> {
        Ok(Arc::new(
            Transport {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                local_cid: AtomicU32::new(desc.local_cid),
                desc,
                ops,
            },
            GFP_KERNEL,
        )?)
    }

    /// Puts `t` in every slot of `slots`, all or nothing: `Err` names a slot that is taken and
    /// its holder.  `before` runs under the registry's lock just before the slots are filled.
    pub(crate) fn fill(
        &self,
        t: &Arc<Transport>,
        slots: &[Slot],
        before: impl FnOnce(),
    ) -> ::core::result::Result<(), (Slot, Arc<Transport>)> {
        let mut s = self.slots.lock();
        for sl in slots {
            if let Some(holder) = &s[sl.index()] {
                return Err((*sl, holder.clone()));
            }
        }
        before();
        for sl in slots {
            s[sl.index()] = Some(t.clone());
        }
        Ok(())
    }

    /// Empties the slots that hold `t`.
    pub(crate) fn remove(&self, t: &Arc<Transport>) {
        let mut s = self.slots.lock();
        for slot in s.iter_mut() {
            if slot.as_ref().is_some_and(|x| Arc::ptr_eq(x, t)) {
                *slot = None;
            }
        }
    }

    /// What is loaded, as the selection rules see it.
    pub(crate) fn loaded(&self) -> Loaded {
        let s = self.slots.lock();
        Loaded {
            h2g: s[Slot::H2g.index()].is_some(),
            g2h: s[Slot::G2h.index()].as_ref().map(|t| t.local_cid()),
            dgram: s[Slot::Dgram.index()].is_some(),
            local: s[Slot::Local.index()].is_some(),
        }
    }

    /// The transport in `slot`.
    pub(crate) fn slot(&self, slot: Slot) -> Option<Arc<Transport>> {
        self.slots.lock()[slot.index()].clone()
    }

    /// The transport for a stream or seqpacket socket talking to `remote` (`ENODEV` if none).
    pub(crate) fn select(
        &self,
        remote: &VsockAddr,
    ) -> ::core::result::Result<Arc<Transport>, Errno> {
        let slot = self.loaded().select(remote)?;
        self.slot(slot).ok_or(Errno::ENODEV)
    }

    /// The registered transport with identity `id`.
    pub(crate) fn by_id(&self, id: u64) -> Option<Arc<Transport>> {
        let s = self.slots.lock();
        s.iter().flatten().find(|t| t.id == id).cloned()
    }
}
