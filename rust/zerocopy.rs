// SPDX-License-Identifier: GPL-2.0

//! `MSG_ZEROCOPY` sends: user pages attached to packets, completions on the error queue.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h) (`ubuf_info`).
//!
//! The same rules as Linux's virtio-vsock: the zerocopy path is taken only when the whole
//! message fits in the credit granted and starts at a segment boundary; otherwise the data is
//! copied and the completion says so (`SO_EE_CODE_ZEROCOPY_COPIED`).  io_uring supplies its
//! own notification (`msg_ubuf`).
//!
//! [`Lent`] is rvsock's own use of the same mechanism, without the user asking: a large
//! blocking send to a receiver on this machine attaches the sender's pages, and the call
//! returns once the receiver copied them out (or, when it is slow to, once the packets it has
//! not read got their own copies).  The bytes are then copied once instead of twice.

use crate::kx::msg::Msg;
use crate::kx::skb::{SkBuff, Skb};
use crate::kx::sock::{ProtoSock, SockProto};
use crate::kx::sys;
use core::ptr::NonNull;
use kernel::error::{code::*, to_result, Result};
use kernel::types::ARef;

/// The zerocopy plan of one `sendmsg` call.
///
/// # Invariants
///
/// `uarg` is null or a notification this call may attach to packets; when `have_uref`, the
/// plan owns the reference `msg_zerocopy_realloc` returned, given up in [`Plan::finish`].
pub(crate) struct Plan {
    uarg: *mut sys::ubuf_info,
    have_uref: bool,
    zerocopy: bool,
    lent: bool,
}

impl Plan {
    /// Decides how to send `granted` bytes of `msg` from socket `sk` over a transport that
    /// supports zerocopy if `transport_zc`.  Without `SO_ZEROCOPY`, `MSG_ZEROCOPY` is ignored.
    pub(crate) fn new<P: SockProto>(
        sk: &ProtoSock<P>,
        transport_zc: bool,
        msg: &mut Msg<'_>,
        granted: u32,
    ) -> Result<Self> {
        let mut plan = Plan {
            uarg: core::ptr::null_mut(),
            have_uref: false,
            zerocopy: false,
            lent: false,
        };
        if !sk.flag(sys::sock_flags_SOCK_ZEROCOPY) {
            msg.clear_flags(sys::MSG_ZEROCOPY);
        }
        if msg.flags() & sys::MSG_ZEROCOPY == 0 {
            return Ok(plan);
        }
        plan.zerocopy =
            transport_zc && msg.iter_offset() == 0 && msg.data_left() <= granted as usize;
        plan.uarg = msg.ubuf();
        if plan.uarg.is_null() {
            // SAFETY: The socket is valid and owned by the caller (socket lock held).
            let uarg = unsafe {
                sys::msg_zerocopy_realloc(sk.as_ptr(), granted as usize, core::ptr::null_mut())
            };
            if uarg.is_null() {
                return Err(ENOMEM);
            }
            if !plan.zerocopy {
                // SAFETY: A fresh notification from `msg_zerocopy_realloc`.
                unsafe { sys::rvsock_h_uarg_mark_copied(uarg) };
            }
            // INVARIANT: We own the reference just returned.
            plan.uarg = uarg;
            plan.have_uref = true;
        }
        Ok(plan)
    }

    /// The plan of a send whose pages are lent: every packet attaches them, under `lent`'s
    /// notification, which outlives the plan.
    pub(crate) fn lend(lent: &Lent) -> Self {
        // INVARIANT: `lent` keeps its notification until the packets released it.
        Plan {
            uarg: lent.uarg.as_ptr(),
            have_uref: false,
            zerocopy: true,
            lent: true,
        }
    }

    /// Whether the user pages are attached rather than copied.
    pub(crate) fn active(&self) -> bool {
        self.zerocopy
    }

    /// The largest packet payload: attached pages must fit the fragments of one buffer.
    pub(crate) fn max_packet(&self, max: u32) -> u32 {
        if self.zerocopy {
            max.min(sys::MAX_SKB_FRAGS * sys::PAGE_SIZE)
        } else {
            max
        }
    }

    /// Fills `skb` (fresh, charged to `sk`) with the next `n` bytes of `msg`.
    ///
    /// `EAGAIN` when lent pages could not be attached (a fault, or more pages than fragments):
    /// the iterator is back where it was, and the plan copies from then on, so the caller
    /// fills a fresh buffer again.
    pub(crate) fn fill<P: SockProto>(
        &mut self,
        _sk: &ProtoSock<P>,
        skb: &mut SkBuff,
        msg: &mut Msg<'_>,
        n: u32,
    ) -> Result {
        if !self.uarg.is_null() {
            // SAFETY: `uarg` is valid for this call (type invariant); the buffer is fresh.
            unsafe { sys::rvsock_h_skb_zcopy_set(skb.as_ptr(), self.uarg) };
        }
        if self.zerocopy {
            let before = msg.data_left();
            // SAFETY: The buffer is charged to its socket (`skb->sk` set, as the function
            // needs), has no payload yet, and the iterator is the message's.
            let r = to_result(unsafe {
                sys::__zerocopy_sg_from_iter(
                    msg.as_ptr(),
                    core::ptr::null_mut(),
                    skb.as_ptr(),
                    msg.iter(),
                    n as usize,
                )
            });
            if r.is_err() && self.lent {
                // The user did not ask for zerocopy: give the bytes back to the iterator and
                // let the caller copy them, with the errors a copy has.
                // SAFETY: The iterator advanced by exactly this much in the call above.
                unsafe { msg.revert(before - msg.data_left()) };
                self.zerocopy = false;
                self.uarg = core::ptr::null_mut();
                return Err(EAGAIN);
            }
            r
        } else {
            skb.fill_from_msg(msg, n)
        }
    }

    /// Gives up the plan's reference: aborting the notification if nothing was sent.
    pub(crate) fn finish(self, sent: u32) {
        if self.have_uref {
            // SAFETY: We own this reference (type invariant); each packet holds its own.
            unsafe {
                if sent == 0 {
                    sys::rvsock_h_net_zcopy_put_abort(self.uarg, true);
                } else {
                    sys::rvsock_h_net_zcopy_put(self.uarg);
                }
            }
        }
    }
}

/// The pages of one blocking send, lent to the receiving socket's queue.
///
/// The notification's first reference is the sender's, given up by [`Lent::sent`]; each
/// packet holds one more.  Once all are gone the pages are free again and the send may
/// return.  A sender that stops waiting early (a fatal signal) leaves the notification to its
/// last packet, which frees it: the pages stay referenced until then.
///
/// # Invariants
///
/// `uarg` is a notification from `rvsock_h_lent_alloc`, on which this value holds the sender's
/// reference to the structure until dropped; `released` says whether the sender's reference on
/// the notification itself was given up; `done` whether the completion was seen.
pub(crate) struct Lent {
    uarg: NonNull<sys::ubuf_info>,
    released: bool,
    done: bool,
}

// SAFETY: The notification is only touched through the kernel's thread-safe functions.
unsafe impl Send for Lent {}

/// How a wait for lent pages ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LentWait {
    /// No packet holds the pages any more.
    Done,
    /// Packets still hold them after the timeout.
    Timeout,
    /// A fatal signal is pending: the sender is being killed.
    Killed,
}

impl Lent {
    /// A fresh notification, or `None` when memory is short (the send copies then).
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: No preconditions.
        let uarg = NonNull::new(unsafe { sys::rvsock_h_lent_alloc() })?;
        // INVARIANT: A fresh notification holding the sender's references.
        Some(Lent {
            uarg,
            released: false,
            done: false,
        })
    }

    /// Records, at delivery, the socket whose queue `skb` joins, if `skb` lends pages.
    pub(crate) fn note_receiver<P: SockProto>(skb: &Skb, sk: &ProtoSock<P>) {
        // SAFETY: Both are valid; the function takes its own reference on the socket.
        unsafe { sys::rvsock_h_lent_note_peer(skb.as_ptr(), sk.as_ptr()) };
    }

    /// Whether `skb` holds pages lent by some send (rather than the user's own `MSG_ZEROCOPY`
    /// pages, whose sender does not wait for them).
    pub(crate) fn lends(skb: &Skb) -> bool {
        // SAFETY: The buffer is valid.
        unsafe { sys::rvsock_h_skb_lends(skb.as_ptr()) }
    }

    /// Whether `skb` holds these pages.
    pub(crate) fn holds(&self, skb: &Skb) -> bool {
        // SAFETY: Both are valid.
        unsafe { sys::rvsock_h_skb_zcopy_is(skb.as_ptr(), self.uarg.as_ptr()) }
    }

    /// Gives the pages in `skb` their own copy, so that it no longer holds the sender's.
    pub(crate) fn copy_out(&self, skb: &mut Skb, gfp: crate::kx::Gfp) -> Result {
        if !self.holds(skb) {
            return Ok(());
        }
        skb.copy_user_pages(gfp)
    }

    /// The socket the packets were queued on, if it is one of `sk`'s protocol.
    pub(crate) fn receiver<P: SockProto>(&self, sk: &ProtoSock<P>) -> Option<ARef<ProtoSock<P>>> {
        // SAFETY: The notification is valid (type invariant).
        let peer = unsafe { sys::rvsock_h_lent_peer(self.uarg.as_ptr()) };
        if peer.is_null() {
            return None;
        }
        // SAFETY: `peer` is a valid socket on which the notification holds a reference.
        if unsafe { (*peer).__sk_common.skc_prot } != unsafe { (*sk.as_ptr()).__sk_common.skc_prot }
        {
            return None;
        }
        // SAFETY: A socket of `sk`'s protocol is a `ProtoSock<P>` (one `struct proto` per
        // registered `P`); the notification's reference keeps it alive during the borrow.
        let peer = unsafe { ProtoSock::<P>::from_raw(peer) };
        Some(peer.into())
    }

    /// The sender queued its last packet: gives up its own reference.
    pub(crate) fn sent(&mut self) {
        if !self.released {
            self.released = true;
            // SAFETY: The sender's reference is still held (type invariant).
            unsafe { sys::rvsock_h_net_zcopy_put(self.uarg.as_ptr()) };
        }
    }

    /// Waits up to `timeout` jiffies for the receiver to release the pages; a fatal signal
    /// ends the wait.
    pub(crate) fn wait(&mut self, timeout: u64) -> LentWait {
        if self.done {
            return LentWait::Done;
        }
        self.sent();
        // SAFETY: The notification is valid (type invariant).
        match unsafe { sys::rvsock_h_lent_wait(self.uarg.as_ptr(), timeout as _) } {
            1 => {
                self.done = true;
                LentWait::Done
            }
            0 => LentWait::Timeout,
            _ => LentWait::Killed,
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Packets may still point to the user's pages if the sender was killed while waiting;
        // they keep the pages referenced, and the last of them frees the notification.
        self.sent();
        // SAFETY: The sender's reference to the structure is held (type invariant) and given
        // up here, once.
        unsafe { sys::rvsock_h_lent_release(self.uarg.as_ptr()) };
    }
}
