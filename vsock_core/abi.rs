// SPDX-License-Identifier: GPL-2.0

//! The core's side of the transport ABI (`rust/rvsock_sys.h`): what transport modules call.
//!
//! Unlike Linux, a transport module can be unloaded while sockets use it: unregistering first
//! revokes its operations, waiting for the calls in flight into it and for the packets in flight
//! from it, then resets every socket that uses it, which get `ECONNRESET`.  Listeners have no
//! transport and are not affected.

use crate::core;
use crate::kx::skb::SkBuff;
use crate::kx::transport::host::{Desc, Host, Ops};
use crate::proto::route::slots_of;
use crate::registry::Transport;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The core's side of the transport ABI.
pub(crate) struct Hosting;

impl Host for Hosting {
    type Transport = Transport;

    fn register(desc: Desc, ops: Ops, publish: &mut dyn FnMut(&Arc<Transport>)) -> Result {
        let core = core().ok_or(ENODEV)?;
        let mut slots = KVec::new();
        for s in slots_of(desc.features).map_err(crate::kx::error)? {
            slots.push(s, GFP_KERNEL)?;
        }
        let t = core.registry.new_transport(desc, ops)?;
        if let Err((taken, holder)) = core.registry.fill(&t, &slots, || publish(&t)) {
            pr_warn!(
                "transport {} refused: slot {:?} is held by {}\n",
                t.desc.name(),
                taken,
                holder.desc.name()
            );
            return Err(EBUSY);
        }
        pr_debug!(
            "transport {} registered (features {:#x}, local CID {})\n",
            t.desc.name(),
            t.desc.features,
            t.local_cid()
        );
        Ok(())
    }

    fn unregister(t: Arc<Transport>) {
        let Some(core) = core() else { return };
        core.registry.remove(&t);
        // After this no call goes into the transport and no packet of it is being received.
        t.ops.revoke();
        let n = crate::lifecycle::reset_transport_sockets(core, &t);
        pr_debug!(
            "transport {} unregistered, {} socket(s) reset\n",
            t.desc.name(),
            n
        );
    }

    fn recv(t: &Arc<Transport>, skb: SkBuff) {
        let Some(core) = core() else { return };
        // A packet racing the transport's unregistration is dropped, or finishes before the
        // unregistration resets the transport's sockets (which then includes anything it made).
        let Some(_entered) = t.ops.enter() else {
            return;
        };
        crate::rx::recv(core, t, skb);
    }

    fn set_local_cid(t: &Arc<Transport>, cid: u32) {
        t.set_local_cid(cid);
    }

    fn reset_all(t: &Arc<Transport>) {
        if let Some(core) = core() {
            crate::lifecycle::reset_transport_sockets(core, t);
        }
    }
}
