// SPDX-License-Identifier: GPL-2.0

//! The transport registry: one slot each for H2G, G2H, DGRAM and LOCAL transports, filled by
//! transport modules at load time, in any order (`vsock_core_register`).
//!
//! Unlike Linux, a transport module can be unloaded while sockets use it: unregistering first
//! revokes its operations (waiting for calls in flight), then resets every socket that uses it,
//! which get `ECONNRESET`.  Listeners have no transport and are not affected.

use crate::core;
use crate::kx::skb::SkBuff;
use crate::kx::transport::host::{Desc, Host, Ops};
use crate::proto::addr::VsockAddr;
use crate::proto::errno::Errno;
use crate::proto::route::{slots_of, Loaded, Slot};
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

/// The core's side of the transport ABI.
pub(crate) struct Hosting;

impl Host for Hosting {
    type Transport = Transport;

    fn register(desc: Desc, ops: Ops, publish: &mut dyn FnMut(&Arc<Transport>)) -> Result {
        let core = core().ok_or(ENODEV)?;
        let slots: KVec<Slot> = {
            let mut v = KVec::new();
            for s in slots_of(desc.features).map_err(crate::kx::error)? {
                v.push(s, GFP_KERNEL)?;
            }
            v
        };
        let t = Arc::new(
            Transport {
                id: core.registry.next_id.fetch_add(1, Ordering::Relaxed),
                local_cid: AtomicU32::new(desc.local_cid),
                desc,
                ops,
            },
            GFP_KERNEL,
        )?;
        let mut s = core.registry.slots.lock();
        if let Some(taken) = slots.iter().find(|sl| s[sl.index()].is_some()) {
            let holder = s[taken.index()]
                .as_ref()
                .map(|h| h.desc.name())
                .unwrap_or("?");
            pr_warn!(
                "transport {} refused: slot {:?} is held by {}\n",
                t.desc.name(),
                taken,
                holder
            );
            return Err(EBUSY);
        }
        publish(&t);
        for sl in slots.iter() {
            s[sl.index()] = Some(t.clone());
        }
        drop(s);
        pr_info!(
            "transport {} registered (features {:#x}, local CID {})\n",
            t.desc.name(),
            t.desc.features,
            t.local_cid()
        );
        Ok(())
    }

    fn unregister(t: Arc<Transport>) {
        let Some(core) = core() else { return };
        {
            let mut s = core.registry.slots.lock();
            for slot in s.iter_mut() {
                if slot.as_ref().is_some_and(|x| Arc::ptr_eq(x, &t)) {
                    *slot = None;
                }
            }
        }
        t.ops.revoke();
        let n = crate::ops::reset_transport_sockets(core, &t);
        pr_info!(
            "transport {} unregistered, {} socket(s) reset\n",
            t.desc.name(),
            n
        );
    }

    fn recv(t: &Arc<Transport>, skb: SkBuff) {
        if let Some(core) = core() {
            crate::rx::recv(core, t, skb);
        }
    }

    fn set_local_cid(t: &Arc<Transport>, cid: u32) {
        t.local_cid.store(cid, Ordering::Release);
    }

    fn reset_all(t: &Arc<Transport>) {
        if let Some(core) = core() {
            crate::ops::reset_transport_sockets(core, t);
        }
    }
}
