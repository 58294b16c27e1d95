// SPDX-License-Identifier: GPL-2.0

//! What a virtio-vsock guest driver checks of the buffers its (untrusted) device hands back.
//!
//! The device reports how many bytes it wrote to each buffer (the used length); the driver
//! reads only what it lent and what the device says it wrote:
//!
//! - an rx buffer holds a packet, header and payload in one descriptor ([`validate_rx`]);
//! - how large the rx buffers are and how many are posted ([`rx_buf_size`], [`rx_buf_count`]);
//! - an event buffer holds `struct virtio_vsock_event`, one le32 `id` at offset 0
//!   ([`event_id`]).

use super::hdr::{Hdr, HDR_LEN, MAX_PKT_PAYLOAD};

/// Why a used rx buffer is dropped ([`validate_rx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// The device wrote fewer bytes than a header.
    Short,
    /// The device claims to have written more than the buffer it was lent.
    Overrun,
    /// The header's `len` is more than the payload the device wrote.
    BadLen,
    /// The header's `len` is above the largest packet (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
    TooBig,
}

/// Checks a used rx buffer as 6.12's `virtio_transport_rx_work` does: `used_len` is what the
/// device says it wrote, `buf_len` what it was lent (header included), `hdr` the header decoded
/// from the buffer's first [`HDR_LEN`] bytes.  `Ok(len)`: a packet with `len` payload bytes
/// after the header (`hdr.len`); otherwise the buffer is dropped, unanswered.
///
/// The device may write more than `HDR_LEN + hdr.len` (the rest is ignored), never less, as
/// upstream.  The payload is also bounded by [`MAX_PKT_PAYLOAD`] whatever the buffer size
/// (upstream's bound is its 4 KiB buffer; vhost's is this one).
///
/// The operation and the type are not checked here: upstream hands such packets to
/// `virtio_transport_recv_pkt`, which answers an unknown type with a RST (never a RST to a
/// RST) and ignores an unknown operation in each state, and so does rvsock's core.  Dropping
/// them here would leave the peer without its RST.
pub fn validate_rx(used_len: u32, buf_len: usize, hdr: &Hdr) -> Result<u32, RxError> {
    let used = usize::try_from(used_len).map_err(|_| RxError::Overrun)?;
    if used < HDR_LEN {
        return Err(RxError::Short);
    }
    if used > buf_len {
        return Err(RxError::Overrun);
    }
    if hdr.len as usize > used - HDR_LEN {
        return Err(RxError::BadLen);
    }
    if hdr.len > MAX_PKT_PAYLOAD {
        return Err(RxError::TooBig);
    }
    Ok(hdr.len)
}

/// Largest rx buffer: a header and the largest payload (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const RX_BUF_MAX: u32 = HDR_LEN as u32 + MAX_PKT_PAYLOAD;
/// Most rx buffers posted at once, whatever the ring size.
pub const RX_BUFS_MAX: u32 = 128;
/// Most memory the posted rx buffers take together (2 MiB).
pub const RX_MEM_MAX: u32 = 2 << 20;

/// The rx buffer size (header included) for a `requested` one, and whether it was clamped into
/// `min ..= RX_BUF_MAX` (`min`: the smallest the driver allows, `RX_BUF_MAX` when larger).
pub fn rx_buf_size(requested: u32, min: u32) -> (u32, bool) {
    let min = min.min(RX_BUF_MAX);
    let size = requested.clamp(min, RX_BUF_MAX);
    (size, size != requested)
}

/// The memory one linear rx buffer of `size` bytes costs: `alloc_skb` aligns the data to 64
/// bytes, adds `shinfo` (the aligned `struct skb_shared_info`), and the allocator rounds that
/// up to a power of two (slab caches up to 8 KiB, whole page orders above).
pub fn rx_buf_cost(size: u32, shinfo: u32) -> u32 {
    let data = size.saturating_add(63) & !63;
    let total = data.saturating_add(shinfo);
    total.checked_next_power_of_two().unwrap_or(u32::MAX)
}

/// How many rx buffers to keep posted: as many as the ring holds (`ring` descriptors, one per
/// buffer), at most [`RX_BUFS_MAX`] and as many as fit in [`RX_MEM_MAX`] at `cost` bytes each,
/// and at least one (if the ring has room).  Refilling starts below half of it, as upstream.
pub fn rx_buf_count(ring: u32, cost: u32) -> u32 {
    let by_mem = RX_MEM_MAX / cost.max(1);
    ring.min(RX_BUFS_MAX).min(by_mem.max(1))
}

/// Bytes of `struct virtio_vsock_event` (a le32 `id`).
pub const EVENT_LEN: usize = 4;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`: the device was migrated; CID and connections are gone.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// The event id of a used event buffer: `buf` is the buffer lent to the device, `used_len` the
/// length the device reported.  `None` (the event is ignored, as upstream does) when the device
/// wrote less than an event, or claims more than it was lent.
pub fn event_id(used_len: u32, buf: &[u8]) -> Option<u32> {
    let used = usize::try_from(used_len).ok()?;
    if used < EVENT_LEN || used > buf.len() {
        return None;
    }
    let id = buf.get(..EVENT_LEN)?;
    Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BUF: usize = 4096 - 320;

    fn rw(len: u32) -> Hdr {
        Hdr {
            src_cid: 2,
            dst_cid: 3,
            len,
            type_: super::super::hdr::TYPE_STREAM,
            op: super::super::hdr::Op::Rw as u16,
            ..Hdr::default()
        }
    }

    #[test]
    fn rx_lengths() {
        let h = |len| rw(len);
        assert_eq!(validate_rx(44, BUF, &h(0)), Ok(0));
        assert_eq!(validate_rx(45, BUF, &h(1)), Ok(1));
        // More written than the header says: the rest is ignored.
        assert_eq!(validate_rx(100, BUF, &h(1)), Ok(1));
        assert_eq!(
            validate_rx(BUF as u32, BUF, &h(BUF as u32 - 44)),
            Ok(BUF as u32 - 44)
        );
        assert_eq!(validate_rx(0, BUF, &h(0)), Err(RxError::Short));
        assert_eq!(validate_rx(43, BUF, &h(0)), Err(RxError::Short));
        assert_eq!(
            validate_rx(BUF as u32 + 1, BUF, &h(0)),
            Err(RxError::Overrun)
        );
        assert_eq!(validate_rx(u32::MAX, BUF, &h(0)), Err(RxError::Overrun));
        assert_eq!(validate_rx(44, BUF, &h(1)), Err(RxError::BadLen));
        assert_eq!(validate_rx(45, BUF, &h(u32::MAX)), Err(RxError::BadLen));
        // A buffer larger than a packet: the payload bound still holds.
        let big = HDR_LEN + MAX_PKT_PAYLOAD as usize + 100;
        assert_eq!(
            validate_rx(big as u32, big, &h(MAX_PKT_PAYLOAD)),
            Ok(MAX_PKT_PAYLOAD)
        );
        assert_eq!(
            validate_rx(big as u32, big, &h(MAX_PKT_PAYLOAD + 1)),
            Err(RxError::TooBig)
        );
    }

    #[test]
    fn rx_leaves_op_and_type_to_the_core() {
        let h = Hdr {
            op: 99,
            type_: 7,
            ..rw(4)
        };
        assert_eq!(validate_rx(48, BUF, &h), Ok(4));
    }

    /// `SKB_DATA_ALIGN(sizeof(struct skb_shared_info))` on x86_64 6.12.
    const SHINFO: u32 = 320;

    #[test]
    fn rx_sizes() {
        let min = 4096 - SHINFO;
        assert_eq!(rx_buf_size(65536 - SHINFO, min), (65216, false));
        assert_eq!(rx_buf_size(0, min), (3776, true));
        assert_eq!(rx_buf_size(4096, min), (4096, false));
        assert_eq!(rx_buf_size(RX_BUF_MAX, min), (65580, false));
        assert_eq!(rx_buf_size(RX_BUF_MAX + 1, min), (65580, true));
        assert_eq!(rx_buf_size(u32::MAX, u32::MAX), (RX_BUF_MAX, true));
        // Upstream's 4 KiB buffer fills one page; the default, 64 KiB less the overhead, 16.
        assert_eq!(rx_buf_cost(4096 - SHINFO, SHINFO), 4096);
        assert_eq!(rx_buf_cost(65536 - SHINFO, SHINFO), 65536);
        // A whole packet and its header spill into the next order.
        assert_eq!(rx_buf_cost(RX_BUF_MAX, SHINFO), 131072);
        assert_eq!(rx_buf_cost(u32::MAX, SHINFO), u32::MAX);
        assert_eq!(rx_buf_count(128, 4096), 128);
        assert_eq!(rx_buf_count(128, 65536), 32);
        assert_eq!(rx_buf_count(128, 131072), 16);
        assert_eq!(rx_buf_count(1024, 4096), RX_BUFS_MAX);
        assert_eq!(rx_buf_count(64, 4096), 64);
        assert_eq!(rx_buf_count(0, 4096), 0);
        assert_eq!(rx_buf_count(128, u32::MAX), 1);
    }

    #[test]
    fn event_is_a_le32_at_offset_0() {
        assert_eq!(event_id(4, &[0, 0, 0, 0]), Some(EVENT_TRANSPORT_RESET));
        assert_eq!(event_id(4, &[1, 2, 3, 4]), Some(0x0403_0201));
        assert_eq!(event_id(3, &[0, 0, 0, 0]), None);
        assert_eq!(event_id(5, &[0, 0, 0, 0]), None);
        assert_eq!(event_id(4, &[0, 0, 0]), None);
        assert_eq!(event_id(u32::MAX, &[0; 8]), None);
    }

    fn any_hdr() -> impl Strategy<Value = Hdr> {
        (
            any::<[u64; 2]>(),
            any::<[u32; 3]>(),
            any::<[u16; 2]>(),
            any::<[u32; 3]>(),
        )
            .prop_map(|(c, p, t, f)| Hdr {
                src_cid: c[0],
                dst_cid: c[1],
                src_port: p[0],
                dst_port: p[1],
                len: p[2],
                type_: t[0],
                op: t[1],
                flags: f[0],
                buf_alloc: f[1],
                fwd_cnt: f[2],
            })
    }

    proptest! {
        #[test]
        fn rx_buffers_stay_bounded(requested: u32, ring in 0u32..4096) {
            let (size, clamped) = rx_buf_size(requested, 4096 - SHINFO);
            prop_assert!((4096 - SHINFO..=RX_BUF_MAX).contains(&size));
            prop_assert_eq!(clamped, size != requested);
            let cost = rx_buf_cost(size, SHINFO);
            prop_assert!(cost >= size + SHINFO && cost.is_power_of_two());
            let n = rx_buf_count(ring, cost);
            prop_assert!(n <= ring && n <= RX_BUFS_MAX);
            prop_assert!(ring == 0 || n >= 1);
            prop_assert!(u64::from(n) * u64::from(cost) <= u64::from(RX_MEM_MAX).max(u64::from(cost)));
        }

        #[test]
        fn rx_accepts_exactly_what_fits(used_len: u32, buf_len in 0usize..70_000, hdr in any_hdr(), small_len in 0u32..70_000, pick_small: bool) {
            let hdr = Hdr { len: if pick_small { small_len } else { hdr.len }, ..hdr };
            let used = used_len as usize;
            let fits = used >= HDR_LEN
                && used <= buf_len
                && hdr.len as usize <= used - HDR_LEN
                && hdr.len <= MAX_PKT_PAYLOAD;
            match validate_rx(used_len, buf_len, &hdr) {
                Ok(n) => {
                    prop_assert!(fits);
                    prop_assert_eq!(n, hdr.len);
                    // What the driver then reads lies within what was lent and written.
                    prop_assert!(HDR_LEN + n as usize <= used && used <= buf_len);
                }
                Err(_) => prop_assert!(!fits),
            }
        }

        #[test]
        fn rx_verdict_ignores_all_but_len(used_len in 0u32..70_000, buf_len in 0usize..70_000, a in any_hdr(), b in any_hdr()) {
            let b = Hdr { len: a.len, ..b };
            prop_assert_eq!(validate_rx(used_len, buf_len, &a), validate_rx(used_len, buf_len, &b));
        }

        #[test]
        fn rx_on_decoded_bytes_never_reads_past_the_write(raw in proptest::collection::vec(any::<u8>(), 0..200), used_len in 0u32..300) {
            let mut head = [0u8; HDR_LEN];
            let n = raw.len().min(HDR_LEN);
            head[..n].copy_from_slice(&raw[..n]);
            let hdr = Hdr::decode(&head);
            if let Ok(len) = validate_rx(used_len, raw.len(), &hdr) {
                prop_assert!(raw.get(HDR_LEN..HDR_LEN + len as usize).is_some());
            }
        }

        #[test]
        fn event_needs_a_whole_id_within_the_buffer(used_len: u32, buf in proptest::collection::vec(any::<u8>(), 0..16)) {
            let got = event_id(used_len, &buf);
            let ok = used_len as usize >= EVENT_LEN && used_len as usize <= buf.len();
            prop_assert_eq!(got.is_some(), ok);
            if let Some(id) = got {
                prop_assert_eq!(id.to_le_bytes(), [buf[0], buf[1], buf[2], buf[3]]);
            }
        }
    }
}
