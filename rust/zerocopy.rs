// SPDX-License-Identifier: GPL-2.0

//! `MSG_ZEROCOPY` sends: user pages attached to packets, completions on the error queue.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h) (`ubuf_info`).
//!
//! The same rules as Linux's virtio-vsock: the zerocopy path is taken only when the whole
//! message fits in the credit granted and starts at a segment boundary; otherwise the data is
//! copied and the completion says so (`SO_EE_CODE_ZEROCOPY_COPIED`).  io_uring supplies its
//! own notification (`msg_ubuf`).

use crate::kx::msg::Msg;
use crate::kx::skb::SkBuff;
use crate::kx::sock::{ProtoSock, SockProto};
use crate::kx::sys;
use kernel::error::{code::*, to_result, Result};

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
            // SAFETY: The buffer is charged to its socket (`skb->sk` set, as the function
            // needs), has no payload yet, and the iterator is the message's.
            to_result(unsafe {
                sys::__zerocopy_sg_from_iter(
                    msg.as_ptr(),
                    core::ptr::null_mut(),
                    skb.as_ptr(),
                    msg.iter(),
                    n as usize,
                )
            })
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
