// SPDX-License-Identifier: GPL-2.0

//! rvsock: the AF_VSOCK socket family, written in Rust.
//!
//! This module owns address family 40, the socket state machine, the socket tables, the
//! transport registry and `/dev/vsock`.  Transports (`rvsock_loopback`, `rvsock_virtio`,
//! `rvsock_vhost`) are separate modules that register with it through the C ABI in
//! `rust/rvsock_sys.h`.
//!
//! Layout: [`ops`] has the socket calls, [`rx`] the receive path, [`tx`] the send path,
//! [`recv`] the reads, [`registry`] the transports, [`table`] the socket tables, [`vsk`] the
//! per-socket state; the protocol decisions themselves are in `proto` (the kernel-independent
//! `rvsock-proto` crate).

use kernel::prelude::*;
use kernel::sync::SpinLock;

#[allow(dead_code)]
#[path = "../rust/lib.rs"]
mod kx;

#[path = "../rust/proto.rs"]
mod proto;

mod dev;
mod diag;
mod ops;
mod recv;
mod registry;
mod rx;
mod table;
mod tx;
mod vsk;

use kx::diag::DiagReg;
use kx::global::ModuleGlobal;
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

kx::transport::host::export_transport_host!(registry::Hosting);

/// Everything the family shares.
#[pin_data]
pub(crate) struct Core {
    proto: Pin<KBox<ProtoReg<vsk::Shared>>>,
    #[pin]
    tables: SpinLock<table::Tables>,
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

struct Rvsock {
    family: Option<Pin<KBox<FamilyReg<ops::VsockFamily>>>>,
    dev: Option<Pin<KBox<MiscReg<dev::VsockDev>>>>,
    diag: Option<DiagReg<diag::VsockDiag>>,
}

impl kernel::Module for Rvsock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let proto = ProtoReg::register(kernel::c_str!("AF_VSOCK"), module)?;
        let core = KBox::pin_init(
            try_pin_init!(Core {
                proto,
                tables <- kernel::new_spinlock!(table::Tables::new(kx::random_u32()), "rvsock:tables"),
                registry <- registry::Registry::new(),
                stream_ops: OpsTable::new::<ops::Vsock>(AF_VSOCK as i32, module, true),
                seqpacket_ops: OpsTable::new::<ops::Vsock>(AF_VSOCK as i32, module, false),
            }),
            GFP_KERNEL,
        )?;
        let _ = CORE.publish(core);
        let mut this = Rvsock {
            family: None,
            dev: None,
            diag: None,
        };
        match FamilyReg::register(AF_VSOCK as i32, module) {
            Ok(f) => this.family = Some(f),
            Err(e) => {
                if e == EEXIST {
                    pr_err!("address family AF_VSOCK (40) is taken, is the C vsock module loaded? Not loading\n");
                }
                return Err(e);
            }
        }
        this.dev = Some(MiscReg::register(kernel::c_str!("vsock"), module)?);
        // `ss --vsock`; without it (a handler of the C vsock_diag is left over) rvsock works on.
        match DiagReg::register() {
            Ok(d) => this.diag = Some(d),
            Err(e) => pr_warn!(
                "no sock_diag for AF_VSOCK ({:?}): `ss --vsock` lists nothing\n",
                e
            ),
        }
        pr_info!("AF_VSOCK registered, /dev/vsock ready\n");
        Ok(this)
    }
}

impl Drop for Rvsock {
    fn drop(&mut self) {
        let was_up = self.dev.is_some();
        // Unregister the entry points first; then nothing can reach the core.
        drop(self.diag.take());
        drop(self.dev.take());
        drop(self.family.take());
        // SAFETY: The family and the device are unregistered (their callbacks finished:
        // `sock_unregister` and `misc_deregister` wait), no socket exists (each pins this module)
        // and no transport is registered (transports use this module's symbols).
        drop(unsafe { CORE.withdraw() });
        if was_up {
            pr_info!("unloaded\n");
        }
    }
}
