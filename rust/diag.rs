// SPDX-License-Identifier: GPL-2.0

//! `sock_diag` for the family: what `ss --vsock` lists (`net/vmw_vsock/diag.c`).
//!
//! C header: [`include/linux/sock_diag.h`](srctree/include/linux/sock_diag.h)
//!
//! The handler and the netlink framing are C helpers; a [`DiagDump`] walks the sockets, one
//! netlink buffer at a time, and says where the next buffer resumes.

use crate::kx::sock::{ProtoSock, SockProto};
use crate::kx::sys;
use core::marker::PhantomData;
use kernel::error::{to_result, Result};

/// One socket's addresses as a dump reports them; type, state and shutdown come from the
/// socket itself.
#[derive(Clone, Copy, Default)]
pub(crate) struct DiagRow {
    /// Local CID and port.
    pub(crate) src: (u32, u32),
    /// Remote CID and port.
    pub(crate) dst: (u32, u32),
}

/// The family's socket walk.
pub(crate) trait DiagDump: 'static {
    /// Fills `dump` with the sockets after the ones earlier calls reported.
    fn dump(dump: &mut Dump<'_>);
}

/// One call of a multi-part dump: a netlink buffer to fill, and the request.
///
/// # Invariants
///
/// `skb` and `cb` are the buffer and the callback state netlink passed for this call.
pub(crate) struct Dump<'a> {
    skb: *mut sys::sk_buff,
    cb: *mut sys::netlink_callback,
    _p: PhantomData<&'a mut sys::netlink_callback>,
}

impl Dump<'_> {
    /// The states asked for, a bit per `sk_state` value.
    pub(crate) fn states(&self) -> u32 {
        // SAFETY: `cb` is valid and its request was checked for length (type invariant).
        unsafe { sys::rvsock_h_diag_states(self.cb) }
    }

    /// How many sockets earlier calls of this dump went past.
    pub(crate) fn cursor(&self) -> usize {
        // SAFETY: `cb` is valid (type invariant); its `args` are ours to keep state in.
        unsafe { sys::rvsock_h_diag_cursor(self.cb) as usize }
    }

    /// Records where the next call resumes.
    pub(crate) fn set_cursor(&mut self, n: usize) {
        // SAFETY: As in `cursor`.
        unsafe { sys::rvsock_h_diag_set_cursor(self.cb, n as _) };
    }

    /// Whether `sk` is in the network namespace of the requester.
    pub(crate) fn same_net<P: SockProto>(&self, sk: &ProtoSock<P>) -> bool {
        // SAFETY: Both are valid; the buffer's socket is the requester's netlink socket.
        unsafe { sys::rvsock_h_diag_same_net(self.skb, sk.as_ptr()) }
    }

    /// Whether a socket in `sk`'s current state was asked for.
    pub(crate) fn wants<P: SockProto>(&self, sk: &ProtoSock<P>) -> bool {
        let state = sk.sk_state();
        state < 32 && self.states() & (1 << state) != 0
    }

    /// Adds `sk` to the buffer; `EMSGSIZE` when it is full.
    pub(crate) fn fill<P: SockProto>(&mut self, sk: &ProtoSock<P>, row: &DiagRow) -> Result {
        let raw = sys::rvsock_diag_row {
            src_cid: row.src.0,
            src_port: row.src.1,
            dst_cid: row.dst.0,
            dst_port: row.dst.1,
        };
        // SAFETY: All pointers are valid (type invariant); `sk` is alive for the call.
        to_result(unsafe { sys::rvsock_h_diag_fill(self.skb, self.cb, sk.as_ptr(), &raw) })
    }
}

/// The `dump` of the netlink dump control: one call per buffer.
///
/// # Safety
///
/// Called by netlink only, with the buffer and callback state of one dump call.
unsafe extern "C" fn dump_callback<T: DiagDump>(
    skb: *mut sys::sk_buff,
    cb: *mut sys::netlink_callback,
) -> core::ffi::c_int {
    // INVARIANT: netlink passes the buffer and callback state of this call.
    let mut d = Dump {
        skb,
        cb,
        _p: PhantomData,
    };
    T::dump(&mut d);
    // SAFETY: `skb` is valid; netlink ends the dump when a call adds nothing.
    unsafe { (*skb).len as core::ffi::c_int }
}

/// The family's registration with `sock_diag`; unregistered when dropped.
///
/// # Invariants
///
/// While it exists, the handler is registered with `T`'s walk.
pub(crate) struct DiagReg<T: DiagDump>(PhantomData<T>);

impl<T: DiagDump> DiagReg<T> {
    /// Registers the handler (`EBUSY` if the family has one, e.g. the C `vsock_diag`).
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: The callback has the right signature; it stays valid while the module is
        // loaded, and the registration is dropped before the module is.
        to_result(unsafe { sys::rvsock_h_diag_register(Some(dump_callback::<T>)) })?;
        // INVARIANT: Registered just now.
        Ok(DiagReg(PhantomData))
    }
}

impl<T: DiagDump> Drop for DiagReg<T> {
    fn drop(&mut self) {
        // SAFETY: Registered (type invariant); dumps in progress hold a reference on the
        // module, so none can run after it is unloaded.
        unsafe { sys::rvsock_h_diag_unregister() };
    }
}
