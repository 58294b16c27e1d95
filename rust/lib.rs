// SPDX-License-Identifier: GPL-2.0

//! rvsock's kernel abstractions: safe Rust over the C APIs that the 6.12 `kernel` crate lacks.
//!
//! Every module (`.ko`) of rvsock is a single crate that pulls this file in as `mod kx`; 6.12 has
//! no cross-module Rust dependencies.  The `unsafe` code of rvsock lives here, behind safe types
//! whose invariants are documented; the socket family and the transports are written against
//! these types.

pub(crate) mod diag;
pub(crate) mod global;
pub(crate) mod ksock;
pub(crate) mod misc;
pub(crate) mod msg;
pub(crate) mod params;
pub(crate) mod skb;
pub(crate) mod sock;
pub(crate) mod socket;
pub(crate) mod sys;
pub(crate) mod transport;
#[cfg(rvsock_virtio)]
pub(crate) mod virtio;
pub(crate) mod zerocopy;

/// Allocation context of a socket-layer allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gfp {
    /// May sleep (`GFP_KERNEL`).
    Kernel,
    /// Atomic context (`GFP_ATOMIC`).
    Atomic,
    /// May sleep, but an opportunistic allocation that has a fallback: no retrying and no
    /// warning when it fails (`GFP_KERNEL | __GFP_NOWARN | __GFP_NORETRY`).
    KernelTry,
}

impl Gfp {
    /// The `gfp_t` value.
    pub(crate) fn raw(self) -> sys::gfp_t {
        match self {
            Gfp::Kernel => sys::GFP_KERNEL,
            Gfp::Atomic => sys::GFP_ATOMIC,
            Gfp::KernelTry => sys::GFP_KERNEL_TRY,
        }
    }

    /// The `kernel` crate's allocation flags.
    pub(crate) fn flags(self) -> kernel::alloc::Flags {
        match self {
            Gfp::Kernel => kernel::alloc::flags::GFP_KERNEL,
            Gfp::Atomic => kernel::alloc::flags::GFP_ATOMIC,
            // 6.12's kernel crate has no `__GFP_NORETRY`.
            Gfp::KernelTry => kernel::alloc::flags::GFP_KERNEL | kernel::alloc::flags::__GFP_NOWARN,
        }
    }
}

/// Converts a protocol errno into a kernel error.
pub(crate) fn error(e: crate::proto::errno::Errno) -> kernel::error::Error {
    kernel::error::Error::from_errno(-e.get())
}

/// `HZ`: jiffies per second.
pub(crate) const HZ: u64 = sys::HZ as u64;

/// `MAX_SCHEDULE_TIMEOUT`: an infinite wait, in jiffies.
pub(crate) const MAX_SCHEDULE_TIMEOUT: i64 = sys::MAX_SCHEDULE_TIMEOUT as i64;

/// A random number (`get_random_u32`).
pub(crate) fn random_u32() -> u32 {
    // SAFETY: FFI call without preconditions.
    unsafe { sys::rvsock_h_random_u32() }
}

/// Whether the current task may bind reserved ports (`CAP_NET_BIND_SERVICE`).
pub(crate) fn capable_net_bind_service() -> bool {
    // SAFETY: FFI call without preconditions.
    unsafe { sys::rvsock_h_capable_net_bind_service() }
}

/// Creates the workqueue that socket timers run on (`rvsock.ko` only; see `rust/helpers.c`).
pub(crate) fn timers_init() -> kernel::error::Result {
    // SAFETY: FFI call without preconditions; called once, at module init.
    kernel::error::to_result(unsafe { sys::rvsock_h_wq_init() })
}

/// Waits for the socket timers still running and destroys their workqueue; called at module
/// exit, once no socket is left to arm one.
pub(crate) fn timers_exit() {
    // SAFETY: FFI call; no socket, so no timer can be armed any more, and the call waits for
    // the ones still running.
    unsafe { sys::rvsock_h_wq_exit() };
}

/// Whether the current task is exiting (`PF_EXITING`).
pub(crate) fn current_exiting() -> bool {
    // SAFETY: FFI call without preconditions.
    unsafe { sys::rvsock_h_current_exiting() }
}

/// Declares that this module uses `rvsock.ko`'s exports, which live in symbol namespace `RVSOCK`
/// (`MODULE_IMPORT_NS(RVSOCK)`).  Every module but the core invokes it once.
#[allow(unused_macros)]
macro_rules! import_rvsock_namespace {
    () => {
        // The section holds the module's `modinfo` strings; nothing reads the static itself.
        #[allow(unsafe_code)]
        #[link_section = ".modinfo"]
        #[used]
        static __RVSOCK_IMPORT_NS: [u8; 17] = *b"import_ns=RVSOCK\0";
    };
}
#[allow(unused_imports)]
pub(crate) use import_rvsock_namespace;
