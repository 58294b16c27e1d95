// SPDX-License-Identifier: GPL-2.0

//! What the host side of virtio-vsock (vhost, H2G) decides about its guest, which is untrusted:
//! the CID it may be given, the packets it puts on its tx queue, and how a packet for it is cut
//! to the rx buffers it posts.  The rules are those of 6.12.117's `drivers/vhost/vsock.c`:
//!
//! - [`guest_cid`]: `VHOST_VSOCK_SET_GUEST_CID`'s own checks (whether the CID is taken is the
//!   caller's: `EADDRINUSE`);
//! - [`tx_chain`], [`tx_payload`], [`tx_addressed`]: a guest tx descriptor chain
//!   (`vhost_vsock_alloc_skb`, `vhost_vsock_handle_tx_kick`);
//! - [`rx_piece`]: the part of a packet that fits one guest rx buffer, and its flags
//!   (`vhost_transport_do_send_pkt`).

use super::addr::VMADDR_CID_HOST;
use super::errno::Errno;
use super::hdr::{Hdr, HDR_LEN, MAX_PKT_PAYLOAD, SEQ_EOM, SEQ_EOR};

/// The CID `VHOST_VSOCK_SET_GUEST_CID` may give a guest: not a reserved one (0, 1, 2), not
/// `VMADDR_CID_ANY` (`U32_MAX`) and within 32 bits; `EINVAL` otherwise.
pub fn guest_cid(cid: u64) -> Result<u32, Errno> {
    match u32::try_from(cid) {
        Ok(c) if c > VMADDR_CID_HOST && c != u32::MAX => Ok(c),
        _ => Err(Errno::EINVAL),
    }
}

/// Why a guest tx chain is refused.  Upstream drops the packet; the descriptor chain is
/// consumed either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// The chain has device-writable descriptors (a tx chain is device-readable only).
    Writable,
    /// Fewer readable bytes than a header.
    Short,
    /// More readable bytes than a header and the largest payload.
    TooLong,
    /// The header's `len` is more than the payload the chain holds.
    BadLen,
}

/// Checks a tx chain's shape before its header is read: `readable` bytes in device-readable
/// descriptors, `writable` device-writable descriptors.
pub fn tx_chain(readable: usize, writable: u32) -> Result<(), TxError> {
    if writable != 0 {
        return Err(TxError::Writable);
    }
    if readable < HDR_LEN {
        return Err(TxError::Short);
    }
    if readable > HDR_LEN + MAX_PKT_PAYLOAD as usize {
        return Err(TxError::TooLong);
    }
    Ok(())
}

/// The payload length of a tx chain of `readable` bytes (checked by [`tx_chain`]) with header
/// `hdr`: its `len`, which must fit in what follows the header.  Only that much is copied;
/// bytes beyond it are ignored, as upstream.
pub fn tx_payload(readable: usize, hdr: &Hdr) -> Result<u32, TxError> {
    if hdr.len as usize > readable.saturating_sub(HDR_LEN) {
        return Err(TxError::BadLen);
    }
    Ok(hdr.len)
}

/// Whether a guest packet is addressed as upstream accepts it: from the guest's own CID to the
/// host's (both compared as the 64-bit header fields).  Others are dropped, unanswered.
pub fn tx_addressed(hdr: &Hdr, guest_cid: u32, host_cid: u32) -> bool {
    hdr.src_cid == u64::from(guest_cid) && hdr.dst_cid == u64::from(host_cid)
}

/// One piece of a packet for the guest: `len` payload bytes under a header with `flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxPiece {
    /// Payload bytes in this piece.
    pub len: u32,
    /// The piece's header flags.
    pub flags: u32,
    /// Whether the piece ends the packet.
    pub last: bool,
}

/// The next piece of a packet with header flags `flags` and `left` payload bytes still to go,
/// for a guest rx buffer of `room` bytes (header included).  `None` when the buffer cannot hold
/// a header (upstream drops the packet then).
///
/// A packet larger than the buffer is split over several; a SEQPACKET message's `SEQ_EOM`, and
/// with it `SEQ_EOR`, stays only on the last piece, so the guest sees one message.  (Upstream
/// clears `SEQ_EOR` only together with `SEQ_EOM`; a packet with `SEQ_EOR` alone keeps it on
/// every piece, which no sender produces.)
pub fn rx_piece(flags: u32, left: u32, room: usize) -> Option<RxPiece> {
    let cap = room.checked_sub(HDR_LEN)?;
    let cap = u32::try_from(cap).unwrap_or(u32::MAX);
    if left <= cap {
        return Some(RxPiece {
            len: left,
            flags,
            last: true,
        });
    }
    let flags = if flags & SEQ_EOM != 0 {
        flags & !(SEQ_EOM | SEQ_EOR)
    } else {
        flags
    };
    Some(RxPiece {
        len: cap,
        flags,
        last: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn hdr(src: u64, dst: u64, len: u32) -> Hdr {
        Hdr {
            src_cid: src,
            dst_cid: dst,
            len,
            ..Hdr::default()
        }
    }

    #[test]
    fn guest_cids() {
        for bad in [0u64, 1, 2, u64::from(u32::MAX), 1 << 32, u64::MAX] {
            assert_eq!(guest_cid(bad), Err(Errno::EINVAL), "{bad}");
        }
        assert_eq!(guest_cid(3), Ok(3));
        assert_eq!(guest_cid(u64::from(u32::MAX - 1)), Ok(u32::MAX - 1));
    }

    #[test]
    fn tx_chains() {
        assert_eq!(tx_chain(100, 1), Err(TxError::Writable));
        assert_eq!(tx_chain(HDR_LEN - 1, 0), Err(TxError::Short));
        assert_eq!(tx_chain(HDR_LEN, 0), Ok(()));
        let max = HDR_LEN + MAX_PKT_PAYLOAD as usize;
        assert_eq!(tx_chain(max, 0), Ok(()));
        assert_eq!(tx_chain(max + 1, 0), Err(TxError::TooLong));
        assert_eq!(tx_payload(HDR_LEN + 10, &hdr(3, 2, 10)), Ok(10));
        assert_eq!(tx_payload(HDR_LEN + 10, &hdr(3, 2, 4)), Ok(4));
        assert_eq!(
            tx_payload(HDR_LEN + 10, &hdr(3, 2, 11)),
            Err(TxError::BadLen)
        );
        assert_eq!(tx_payload(HDR_LEN, &hdr(3, 2, 0)), Ok(0));
    }

    #[test]
    fn addressing() {
        assert!(tx_addressed(&hdr(3, 2, 0), 3, 2));
        assert!(!tx_addressed(&hdr(4, 2, 0), 3, 2));
        assert!(!tx_addressed(&hdr(3, 1, 0), 3, 2));
        // The upper halves count: a CID is not truncated to 32 bits.
        assert!(!tx_addressed(&hdr(3 | 1 << 32, 2, 0), 3, 2));
        assert!(!tx_addressed(&hdr(3, 2 | 1 << 40, 0), 3, 2));
    }

    #[test]
    fn pieces() {
        assert_eq!(rx_piece(0, 10, HDR_LEN - 1), None);
        assert_eq!(
            rx_piece(SEQ_EOM | SEQ_EOR, 0, HDR_LEN),
            Some(RxPiece {
                len: 0,
                flags: SEQ_EOM | SEQ_EOR,
                last: true
            })
        );
        assert_eq!(
            rx_piece(SEQ_EOM | SEQ_EOR, 100, HDR_LEN + 60),
            Some(RxPiece {
                len: 60,
                flags: 0,
                last: false
            })
        );
        // EOR alone is left as it is, as upstream.
        assert_eq!(
            rx_piece(SEQ_EOR, 100, HDR_LEN + 60).map(|p| p.flags),
            Some(SEQ_EOR)
        );
    }

    proptest! {
        /// Cutting a packet to buffers of any sizes that hold a header delivers exactly its
        /// payload, each piece within its buffer, with EOM (and EOR) only on the last one.
        #[test]
        fn pieces_cover_the_packet(
            len in 0u32..=MAX_PKT_PAYLOAD,
            eor: bool,
            rooms in proptest::collection::vec(HDR_LEN..HDR_LEN + 70_000, 1..64),
        ) {
            let flags = SEQ_EOM | if eor { SEQ_EOR } else { 0 };
            let mut left = len;
            let mut got = Vec::new();
            for room in rooms.iter().cycle().take(100_000) {
                let p = rx_piece(flags, left, *room).unwrap();
                prop_assert!(p.len as usize <= room - HDR_LEN);
                prop_assert_eq!(p.last, p.len == left);
                prop_assert_eq!(p.flags, if p.last { flags } else { 0 });
                got.push(p);
                left -= p.len;
                if p.last {
                    break;
                }
                prop_assert!(p.len > 0 || *room == HDR_LEN);
            }
            prop_assert!(got.last().is_some_and(|p| p.last) || rooms.iter().all(|&r| r == HDR_LEN));
            if got.last().is_some_and(|p| p.last) {
                prop_assert_eq!(got.iter().map(|p| p.len).sum::<u32>(), len);
            }
        }

        /// A chain that passes both checks holds the header and the payload it declares.
        #[test]
        fn accepted_chains_hold_their_payload(readable in 0usize..80_000, writable in 0u32..3, len: u32) {
            let h = hdr(3, 2, len);
            if tx_chain(readable, writable).is_ok() {
                if let Ok(n) = tx_payload(readable, &h) {
                    prop_assert_eq!(writable, 0);
                    prop_assert!(HDR_LEN + n as usize <= readable);
                    prop_assert!(n <= MAX_PKT_PAYLOAD);
                }
            }
        }
    }
}
