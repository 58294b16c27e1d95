// SPDX-License-Identifier: GPL-2.0

//! Kernel-owned sockets (`sock_create_kern`), for tests that drive a socket family from inside
//! the kernel.
//!
//! C header: [`include/linux/net.h`](srctree/include/linux/net.h)

use crate::kx::sys;
use core::ptr::NonNull;
use kernel::error::{code::*, to_result, Error, Result};

/// A socket created by the kernel, released when dropped.
///
/// # Invariants
///
/// `0` is a valid `struct socket` from `sock_create_kern` or `kernel_accept`, owned by this value.
pub(crate) struct KernelSocket(NonNull<sys::socket>);

// SAFETY: A `struct socket` may be used and released from any task.
unsafe impl Send for KernelSocket {}
// SAFETY: The socket calls may run concurrently on one socket, from several tasks (they take the
// socket lock themselves), as they do for a socket shared by userspace threads.
unsafe impl Sync for KernelSocket {}

fn ret(r: i32) -> Result<usize> {
    if r < 0 {
        Err(Error::from_errno(r))
    } else {
        Ok(r as usize)
    }
}

impl KernelSocket {
    /// `socket(family, ty, 0)` in the initial network namespace.
    pub(crate) fn new(family: i32, ty: u32) -> Result<Self> {
        let mut s: *mut sys::socket = core::ptr::null_mut();
        // SAFETY: `init_net` is always valid; `s` receives the new socket.
        to_result(unsafe {
            sys::sock_create_kern(sys::rvsock_h_init_net(), family, ty as i32, 0, &mut s)
        })?;
        // INVARIANT: Created just now and owned here.
        NonNull::new(s).map(KernelSocket).ok_or(ENOMEM)
    }

    fn ptr(&self) -> *mut sys::socket {
        self.0.as_ptr()
    }

    /// `bind()` with the address bytes.
    pub(crate) fn bind(&self, addr: &[u8]) -> Result {
        let mut a = [0u8; 128];
        let n = addr.len().min(a.len());
        a[..n].copy_from_slice(&addr[..n]);
        // SAFETY: The socket is valid; `a` holds `n` initialised bytes.
        to_result(unsafe { sys::kernel_bind(self.ptr(), a.as_mut_ptr().cast(), n as i32) })
    }

    /// `listen()`.
    pub(crate) fn listen(&self, backlog: i32) -> Result {
        // SAFETY: The socket is valid.
        to_result(unsafe { sys::kernel_listen(self.ptr(), backlog) })
    }

    /// `connect()`, non-blocking if asked (then `EINPROGRESS` is the normal result).
    pub(crate) fn connect(&self, addr: &[u8], nonblock: bool) -> Result {
        let mut a = [0u8; 128];
        let n = addr.len().min(a.len());
        a[..n].copy_from_slice(&addr[..n]);
        let flags = if nonblock { sys::O_NONBLOCK } else { 0 };
        // SAFETY: The socket is valid; `a` holds `n` initialised bytes.
        to_result(unsafe {
            sys::kernel_connect(self.ptr(), a.as_mut_ptr().cast(), n as i32, flags)
        })
    }

    /// `accept()`.
    pub(crate) fn accept(&self, nonblock: bool) -> Result<Self> {
        let mut s: *mut sys::socket = core::ptr::null_mut();
        let flags = if nonblock { sys::O_NONBLOCK } else { 0 };
        // SAFETY: The socket is valid; `s` receives the new socket.
        to_result(unsafe { sys::kernel_accept(self.ptr(), &mut s, flags) })?;
        // INVARIANT: Returned by `kernel_accept`, owned here.
        NonNull::new(s).map(KernelSocket).ok_or(ENOMEM)
    }

    /// `sendmsg()` of `data` with `flags`.
    pub(crate) fn send(&self, data: &[u8], flags: u32) -> Result<usize> {
        let mut msg = sys::msghdr {
            msg_flags: flags,
            ..Default::default()
        };
        let mut v = sys::kvec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: The socket is valid; `v` describes `data`, which is only read.
        ret(unsafe { sys::kernel_sendmsg(self.ptr(), &mut msg, &mut v, 1, data.len()) })
    }

    /// `recvmsg()` into `buf` with `flags`.
    pub(crate) fn recv(&self, buf: &mut [u8], flags: u32) -> Result<usize> {
        let mut msg = sys::msghdr::default();
        let mut v = sys::kvec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: The socket is valid; `v` describes `buf`, writable.
        ret(unsafe {
            sys::kernel_recvmsg(self.ptr(), &mut msg, &mut v, 1, buf.len(), flags as i32)
        })
    }

    /// The pending socket error (`sk_err`), 0 if none.
    pub(crate) fn sk_err(&self) -> i32 {
        // SAFETY: The socket is valid and has an `sk` until released.
        unsafe { (*(*self.ptr()).sk).sk_err }
    }

    /// The receive queue's memory (`sk_rmem_alloc`, as `SO_MEMINFO` reports it).
    pub(crate) fn rmem(&self) -> u32 {
        // SAFETY: As in `sk_err`; an atomic read.
        unsafe { sys::rvsock_h_sk_rmem((*self.ptr()).sk) }
    }

    /// `sk_state` (TCP state numbers).
    pub(crate) fn sk_state(&self) -> u8 {
        // SAFETY: As in `sk_err`.
        unsafe { (*(*self.ptr()).sk).__sk_common.skc_state }
    }
}

/// The lock of a kernel socket's `sock`, owned as a task inside a socket call owns it: packets
/// for the socket wait on its backlog until this is dropped.
///
/// # Invariants
///
/// The socket lock of `0`'s `sock` is owned by this value.
pub(crate) struct Owner<'a>(&'a KernelSocket);

impl KernelSocket {
    /// Takes the socket's lock as its owner (`lock_sock`), until the result is dropped.
    pub(crate) fn own(&self) -> Owner<'_> {
        // SAFETY: The socket is valid and has an `sk` until released, which `&self` prevents.
        unsafe { sys::rvsock_h_lock_sock((*self.ptr()).sk) };
        // INVARIANT: Owned just now.
        Owner(self)
    }
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        // SAFETY: Owned (type invariant); `release_sock` processes the backlog and releases it.
        unsafe { sys::release_sock((*self.0.ptr()).sk) };
    }
}

impl Drop for KernelSocket {
    fn drop(&mut self) {
        // SAFETY: Owned (type invariant) and released once, here.
        unsafe { sys::sock_release(self.ptr()) };
    }
}
