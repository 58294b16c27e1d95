// SPDX-License-Identifier: GPL-2.0

//! Messages of `sendmsg`/`recvmsg` (`struct msghdr`) and user pointers of socket options.
//!
//! C header: [`include/linux/socket.h`](srctree/include/linux/socket.h)

use crate::kx::sys;
use kernel::error::{code::*, to_result, Result};

/// A `struct msghdr` handed to a socket operation.
///
/// # Invariants
///
/// `self.0` is valid and exclusively ours for `'a` (the socket layer passes it to one call).
pub(crate) struct Msg<'a>(&'a mut sys::msghdr);

impl<'a> Msg<'a> {
    /// Wraps the message of a `sendmsg`/`recvmsg` call.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid message that nothing else uses during `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::msghdr) -> Self {
        // SAFETY: Guaranteed by the caller.
        // INVARIANT: Valid and exclusive for `'a`.
        Msg(unsafe { &mut *ptr })
    }

    /// The raw pointer.
    pub(crate) fn as_ptr(&mut self) -> *mut sys::msghdr {
        self.0
    }

    /// The data iterator, for the skb copy functions.
    pub(crate) fn iter(&mut self) -> *mut sys::iov_iter {
        &mut self.0.msg_iter
    }

    /// `msg_flags`: the caller's flags on send, the result flags on receive.
    pub(crate) fn flags(&self) -> u32 {
        self.0.msg_flags
    }

    /// Sets bits in `msg_flags`.
    pub(crate) fn add_flags(&mut self, bits: u32) {
        self.0.msg_flags |= bits;
    }

    /// Clears bits in `msg_flags`.
    pub(crate) fn clear_flags(&mut self, bits: u32) {
        self.0.msg_flags &= !bits;
    }

    /// Length of the destination address given to `sendmsg`.
    pub(crate) fn namelen(&self) -> i32 {
        self.0.msg_namelen
    }

    /// Bytes left in the data iterator.
    pub(crate) fn data_left(&self) -> usize {
        // SAFETY: The message is valid (type invariant).
        unsafe { sys::rvsock_h_msg_data_left(&*self.0) }
    }

    /// Pages the remaining data spans, at most `max`.
    pub(crate) fn npages(&self, max: i32) -> i32 {
        // SAFETY: The message is valid (type invariant).
        unsafe { sys::rvsock_h_iov_iter_npages(&*self.0, max) }
    }

    /// Whether the iterator starts in the middle of a segment (zerocopy needs whole segments).
    pub(crate) fn iter_offset(&self) -> usize {
        self.0.msg_iter.iov_offset
    }

    /// Whether the data is in user memory (not kernel pages, as from `splice` or a kernel
    /// socket).
    pub(crate) fn user_backed(&self) -> bool {
        // SAFETY: The message is valid (type invariant).
        unsafe { sys::rvsock_h_msg_user_backed(&*self.0) }
    }

    /// Moves the data iterator `bytes` back, over data it consumed.
    ///
    /// # Safety
    ///
    /// The iterator must have advanced by at least `bytes` since the message was passed in:
    /// going back further would walk off the start of its segment array.
    pub(crate) unsafe fn revert(&mut self, bytes: usize) {
        // SAFETY: The message is valid (type invariant); the caller bounds `bytes`.
        unsafe { sys::rvsock_h_msg_revert(&mut *self.0, bytes) }
    }

    /// The zerocopy notification io_uring supplies with the message (`msg_ubuf`), or null.
    pub(crate) fn ubuf(&self) -> *mut sys::ubuf_info {
        self.0.msg_ubuf
    }
}

/// The value of a `setsockopt` call (`sockptr_t`: a user or kernel pointer and a length).
pub(crate) struct OptVal {
    ptr: sys::sockptr_t,
    len: u32,
}

impl OptVal {
    /// Wraps a `setsockopt` argument.
    pub(crate) fn new(ptr: sys::sockptr_t, len: u32) -> Self {
        OptVal { ptr, len }
    }

    /// The raw pointer and length, to pass on to `sock_setsockopt` and friends.
    pub(crate) fn raw(&self) -> (sys::sockptr_t, u32) {
        (self.ptr, self.len)
    }

    /// Reads a `T` (`EINVAL` if the value is shorter, `EFAULT` on a fault).
    pub(crate) fn read<T: kernel::types::FromBytes + Default>(&self) -> Result<T> {
        if (self.len as usize) < core::mem::size_of::<T>() {
            return Err(EINVAL);
        }
        let mut v = T::default();
        // SAFETY: `v` is valid for writes of `size_of::<T>()` bytes and any bit pattern is a
        // valid `T` (`FromBytes`); `sockptr_t` was given by the socket layer.
        to_result(unsafe {
            sys::rvsock_h_copy_from_sockptr(
                (&mut v as *mut T).cast(),
                self.ptr,
                core::mem::size_of::<T>(),
            )
        })?;
        Ok(v)
    }
}
