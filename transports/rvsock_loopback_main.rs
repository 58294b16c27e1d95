// SPDX-License-Identifier: GPL-2.0

//! rvsock_loopback: the local transport (`VMADDR_CID_LOCAL`) for rvsock.
//!
//! Linux's `vsock_loopback` queues every packet of every socket on one global work item, which
//! delivers them later from a kworker.  Here a packet is handed back to the core at once, in the
//! sender's context: the core then processes it under the receiving socket's lock, or queues it
//! on that socket's backlog if its owner holds it.  There is no shared queue, so no socket's
//! traffic waits behind another's, and no extra context switch per packet.
//!
//! `rvsock_loopback_ksym.c` names a symbol `loopback_transport`, as upstream's transport object
//! is named, so that tools which look for the loaded transports in `/proc/kallsyms` (newer
//! upstream `vsock_test`) find this one.

#![deny(unsafe_code)]

use kernel::prelude::*;

#[allow(dead_code, unsafe_code)]
#[path = "../rust/lib.rs"]
mod kx;

#[path = "../rust/proto.rs"]
mod proto;

use kx::skb::SkBuff;
use kx::transport::{features, Core, Info, Registration, Transport};
use proto::addr::VMADDR_CID_LOCAL;

kx::import_rvsock_namespace!();

module! {
    type: RvsockLoopback,
    name: "rvsock_loopback",
    author: "rvsock developers",
    description: "AF_VSOCK loopback transport for rvsock",
    license: "GPL",
    alias: ["net-pf-40"],
}

/// The loopback transport: everything sent comes straight back.
struct Loopback;

impl Transport for Loopback {
    fn send_pkt(&self, core: &Core<'_>, skb: SkBuff) -> Result {
        core.recv(skb);
        Ok(())
    }

    fn seqpacket_allow(&self, _remote_cid: u32) -> bool {
        true
    }
}

struct RvsockLoopback {
    _reg: Pin<KBox<Registration<Loopback>>>,
}

impl kernel::Module for RvsockLoopback {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let info = Info {
            name: kernel::c_str!("loopback"),
            features: features::LOCAL,
            local_cid: VMADDR_CID_LOCAL,
            msgzerocopy: true,
        };
        let reg = Registration::register(info, module, Loopback)?;
        Ok(RvsockLoopback { _reg: reg })
    }
}
