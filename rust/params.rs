// SPDX-License-Identifier: GPL-2.0

//! Module parameters, which 6.12's `module!` cannot declare: a module declares them in C with
//! `module_param()` and a getter each (prototypes in `rvsock_sys.h`), read here.  Only the
//! module that defines a getter may call it.

use crate::kx::sys;

/// The parameters of `rvsock_test_transport.ko`
/// (`tools/testing/transport/rvsock_test_transport_params.c`).
pub(crate) mod test_transport {
    use super::sys;

    /// `slots`: registry slots to take, one test transport each.
    pub(crate) fn slots() -> u32 {
        // SAFETY: A read of a parameter, set before the module's `init` runs.
        unsafe { sys::rvsock_tt_slots() }
    }

    /// `g2h_cid`: the local CID of the G2H test transport.
    pub(crate) fn g2h_cid() -> u32 {
        // SAFETY: As in `slots`.
        unsafe { sys::rvsock_tt_g2h_cid() }
    }

    /// `answer`: how the peer answers (0 nothing, 1 RST, 2 accept).
    pub(crate) fn answer() -> u32 {
        // SAFETY: As in `slots`.
        unsafe { sys::rvsock_tt_answer() }
    }

    /// `verbose`: log every packet.
    pub(crate) fn verbose() -> bool {
        // SAFETY: As in `slots`.
        unsafe { sys::rvsock_tt_verbose() }
    }

    /// `feed`: headers each transport keeps for `/dev/rvsock_inject`.
    pub(crate) fn feed() -> u32 {
        // SAFETY: As in `slots`.
        unsafe { sys::rvsock_tt_feed() }
    }
}
