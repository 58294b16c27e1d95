// SPDX-License-Identifier: GPL-2.0

//! rvsock: the AF_VSOCK socket family, written in Rust.
//!
//! This module owns address family 40, the socket state machine, the socket tables, the
//! transport registry and `/dev/vsock`.  Transports (`rvsock_loopback`, `rvsock_virtio`,
//! `rvsock_vhost`) are separate modules that register with it through the C ABI in
//! `rust/rvsock_sys.h`.
//!
//! Layout, bottom up: [`vsk`] the per-socket state, [`table`] the socket tables, [`registry`]
//! the transport slots, [`tx`] building and sending packets, [`lifecycle`] a socket's life in
//! the tables and the effects of protocol events, [`rx`] the receive path, [`recv`] the reads,
//! [`ops`] the socket calls, [`abi`] the entry points that transports call, [`diag`] and
//! [`dev`] `sock_diag` and `/dev/vsock`.  The protocol decisions themselves are in `proto` (the
//! kernel-independent `rvsock-proto` crate).  All `unsafe` code is in `kx` (`rust/`): every
//! other module forbids it.

#![deny(unsafe_code)]

use kernel::prelude::*;

#[allow(dead_code, unsafe_code)]
#[path = "../rust/lib.rs"]
mod kx;

#[path = "../rust/proto.rs"]
mod proto;

mod abi;
mod dev;
mod diag;
mod lifecycle;
mod ops;
mod recv;
mod registry;
mod rx;
mod table;
mod tx;
mod vsk;

use kx::diag::DiagReg;
use kx::global::{ModuleGlobal, Published};
use kx::misc::MiscReg;
use kx::sock::ProtoReg;
use kx::socket::{FamilyReg, OpsTable};
use proto::addr::AF_VSOCK;

module! {
    type: Rvsock,
    name: "rvsock",
    author: "rvsock developers",
    description: "AF_VSOCK socket family in Rust",
    license: "GPL",
}

/// The exported C functions of the transport ABI (`rust/rvsock_sys.h`), which `kx` defines
/// over [`abi::Hosting`].
#[allow(unsafe_code, unreachable_pub)]
mod exports {
    crate::kx::transport::host::export_transport_host!(crate::abi::Hosting);
}

/// Everything the family shares.
#[pin_data]
pub(crate) struct Core {
    proto: Pin<KBox<ProtoReg<vsk::Shared>>>,
    #[pin]
    tables: table::Tables,
    #[pin]
    registry: registry::Registry,
    stream_ops: OpsTable,
    seqpacket_ops: OpsTable,
}

static CORE: ModuleGlobal<Core> = ModuleGlobal::new();

/// The core, while the module is loaded.
pub(crate) fn core() -> Option<&'static Core> {
    CORE.get()
}

/// The entry points through which the kernel reaches the core.
struct Entries {
    _diag: Option<DiagReg<diag::VsockDiag>>,
    _dev: Pin<KBox<MiscReg<dev::VsockDev>>>,
    _family: Pin<KBox<FamilyReg<ops::VsockFamily>>>,
}

struct Rvsock {
    _core: Published<Core, Entries>,
}

impl kernel::Module for Rvsock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        kx::timers_init()?;
        let proto = ProtoReg::register(kernel::c_str!("AF_VSOCK"), module)?;
        let core = KBox::pin_init(
            try_pin_init!(Core {
                proto,
                tables <- table::Tables::new(kx::random_u32()),
                registry <- registry::Registry::new(),
                stream_ops: OpsTable::new::<ops::Vsock>(AF_VSOCK as i32, module, true),
                seqpacket_ops: OpsTable::new::<ops::Vsock>(AF_VSOCK as i32, module, false),
            }),
            GFP_KERNEL,
        );
        let core = match core {
            Ok(c) => c,
            Err(e) => {
                kx::timers_exit();
                return Err(e);
            }
        };
        // Unregistered in reverse order when the module goes; then the socket timers' workqueue
        // is drained, and only then the core freed.
        let published = CORE.publish_with(core, kx::timers_exit, |_| {
            let family = FamilyReg::register(AF_VSOCK as i32, module).inspect_err(|e| {
                if *e == EEXIST {
                    pr_err!("address family AF_VSOCK (40) is taken, is the C vsock module loaded? Not loading\n");
                }
            })?;
            let dev = MiscReg::register(kernel::c_str!("vsock"), module)?;
            // `ss --vsock`; without it (a handler of the C vsock_diag is left over) rvsock works on.
            let diag = DiagReg::register()
                .inspect_err(|e| {
                    pr_warn!(
                        "no sock_diag for AF_VSOCK ({:?}): `ss --vsock` lists nothing\n",
                        e
                    )
                })
                .ok();
            Ok(Entries {
                _diag: diag,
                _dev: dev,
                _family: family,
            })
        })?;
        pr_info!("AF_VSOCK registered, /dev/vsock ready\n");
        Ok(Rvsock { _core: published })
    }
}

impl Drop for Rvsock {
    fn drop(&mut self) {
        pr_info!("unloading\n");
    }
}
