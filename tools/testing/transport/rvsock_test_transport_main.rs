// SPDX-License-Identifier: GPL-2.0

//! rvsock_test_transport: test transports that take registry slots of rvsock.ko, log every
//! packet they are given (`<name> saw <OP> <src> -> <dst>` on the kernel log) and answer as a
//! peer would.  Built only for tests: it lets userspace check the transport selection rules
//! (H2G, G2H, nested) on a machine without VMs.
//!
//! Parameters: `slots` (0x1 H2G, 0x2 G2H, 0x8 LOCAL; one transport per bit), `g2h_cid` (the
//! G2H transport's local CID, default 3), `answer` (0 nothing, 1 RST, 2 accept).

use kernel::prelude::*;

#[allow(dead_code)]
#[path = "../../../rust/lib.rs"]
mod kx;

#[path = "../../../rust/proto.rs"]
mod proto;

#[allow(dead_code)]
mod test_transport;

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

extern "C" {
    fn rvsock_tt_slots() -> u32;
    fn rvsock_tt_g2h_cid() -> u32;
    fn rvsock_tt_answer() -> u32;
}

struct Params {
    slots: u32,
    g2h_cid: u32,
    answer: Answer,
}

fn params() -> Params {
    // SAFETY: Plain reads of this module's parameters, set before `init` runs.
    unsafe {
        Params {
            slots: rvsock_tt_slots(),
            g2h_cid: rvsock_tt_g2h_cid(),
            answer: Answer::from_u32(rvsock_tt_answer()),
        }
    }
}

type Reg = Pin<KBox<Registration<TestTransport>>>;

struct RvsockTestTransport {
    _regs: [Option<Reg>; 3],
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
            Registration::register(info, module, TestTransport::new(name, p.answer, true)).map(Some)
        };
        let h2g = mk(features::H2G, kernel::c_str!("test-h2g"), VMADDR_CID_HOST)?;
        let g2h = mk(features::G2H, kernel::c_str!("test-g2h"), p.g2h_cid)?;
        let local = mk(
            features::LOCAL,
            kernel::c_str!("test-local"),
            VMADDR_CID_LOCAL,
        )?;
        Ok(RvsockTestTransport {
            _regs: [h2g, g2h, local],
        })
    }
}
