// SPDX-License-Identifier: GPL-2.0

//! rvsock_test_transport: test transports that take registry slots of rvsock.ko, log every
//! packet they are given (`<name> saw <OP> <src> -> <dst>` on the kernel log) and answer as a
//! peer would.  Built only for tests: it lets userspace check the transport selection rules
//! (H2G, G2H, nested) on a machine without VMs, and through `/dev/rvsock_inject` play the peer
//! of the transports itself (the kernel packet fuzzer, see `inject.rs`).
//!
//! Parameters: `slots` (0x1 H2G, 0x2 G2H, 0x8 LOCAL; one transport per bit), `g2h_cid` (the
//! G2H transport's local CID, default 3), `answer` (0 nothing, 1 RST, 2 accept), `verbose` (log
//! every packet, default on), `feed` (headers each transport keeps for `/dev/rvsock_inject`).

#![deny(unsafe_code)]

use core::sync::atomic::AtomicU64;
use kernel::prelude::*;

#[allow(dead_code, unsafe_code)]
#[path = "../../../rust/lib.rs"]
mod kx;

#[path = "../../../rust/proto.rs"]
mod proto;

mod inject;
#[allow(dead_code)]
mod test_transport;

use kx::global::{ModuleGlobal, Published};
use kx::misc::MiscReg;
use kx::transport::{features, Info, Registration};
use proto::addr::{VMADDR_CID_HOST, VMADDR_CID_LOCAL};
use test_transport::{Answer, TestTransport};

kx::import_rvsock_namespace!();

module! {
    type: RvsockTestTransport,
    name: "rvsock_test_transport",
    author: "rvsock developers",
    description: "Recording test transports for rvsock (tests only)",
    license: "GPL",
}

struct Params {
    slots: u32,
    g2h_cid: u32,
    answer: Answer,
    verbose: bool,
    feed: u32,
}

fn params() -> Params {
    use kx::params::test_transport as p;
    Params {
        slots: p::slots(),
        g2h_cid: p::g2h_cid(),
        answer: Answer::from_u32(p::answer()),
        verbose: p::verbose(),
        feed: p::feed(),
    }
}

type Reg = Pin<KBox<Registration<TestTransport>>>;

/// The registered test transports, reachable from the injection device.
pub(crate) struct Transports {
    /// The H2G, G2H and LOCAL transports (the order of [`inject::SLOTS`]).
    regs: [Option<Reg>; 3],
    /// Their local CIDs.
    cids: [u32; 3],
    /// Headers each transport keeps for the injection device.
    feed_len: u32,
    /// Packets injected through the device.
    injected: AtomicU64,
    /// Records the device could not inject for want of memory.
    failed: AtomicU64,
}

impl Transports {
    /// The transport in registry slot `slot` (one `features::*` bit), if registered.
    fn reg(&self, slot: u32) -> Option<&Registration<TestTransport>> {
        let i = inject::SLOTS.iter().position(|&s| s == slot)?;
        self.regs[i].as_deref()
    }

    /// The transport a record names: its slot, or the first registered one for 0.
    fn pick(&self, slot: u32) -> Option<&Registration<TestTransport>> {
        if slot == 0 {
            return self.regs.iter().flatten().next().map(|r| &**r);
        }
        self.reg(slot)
    }
}

static TRANSPORTS: ModuleGlobal<Transports> = ModuleGlobal::new();

/// The registered test transports, while the module is loaded.
fn transports() -> Option<&'static Transports> {
    TRANSPORTS.get()
}

struct RvsockTestTransport {
    /// The transports, published for the injection device, which is unregistered before them.
    _transports: Published<Transports, Pin<KBox<MiscReg<inject::InjectDev>>>>,
}

impl kernel::Module for RvsockTestTransport {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let p = params();
        let mk = |feature: u32, name: &'static CStr, cid: u32| -> Result<Option<Reg>> {
            if p.slots & feature == 0 {
                return Ok(None);
            }
            let info = Info {
                name,
                features: feature,
                local_cid: cid,
                msgzerocopy: true,
            };
            let reg = Registration::register(
                info,
                module,
                TestTransport::new(name, p.answer, p.verbose),
            )?;
            if p.feed > 0 {
                reg.data().enable_feed(p.feed as usize)?;
            }
            Ok(Some(reg))
        };
        let h2g = mk(features::H2G, kernel::c_str!("test-h2g"), VMADDR_CID_HOST)?;
        let g2h = mk(features::G2H, kernel::c_str!("test-g2h"), p.g2h_cid)?;
        let local = mk(
            features::LOCAL,
            kernel::c_str!("test-local"),
            VMADDR_CID_LOCAL,
        )?;
        let t = KBox::pin(
            Transports {
                regs: [h2g, g2h, local],
                cids: [VMADDR_CID_HOST, p.g2h_cid, VMADDR_CID_LOCAL],
                feed_len: p.feed,
                injected: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?;
        let published = TRANSPORTS.publish_with(
            t,
            || {},
            |_| MiscReg::register(kernel::c_str!("rvsock_inject"), module),
        )?;
        Ok(RvsockTestTransport {
            _transports: published,
        })
    }
}
