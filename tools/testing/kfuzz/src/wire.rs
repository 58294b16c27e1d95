// SPDX-License-Identifier: GPL-2.0

//! The wire format the fuzzer speaks: the 44-byte virtio-vsock header, and the ABI of
//! `/dev/rvsock_inject` (`tools/testing/transport/inject.rs`): its ioctl numbers, the records
//! of an injection batch and of the feed.
//!
//! This is written independently of `rvsock-proto` on purpose: the fuzzer must not share the
//! code under test.

/// Size of the virtio-vsock header.
pub const HDR_LEN: usize = 44;

/// Operations (`VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Never valid.
    pub const INVALID: u16 = 0;
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Reset.
    pub const RST: u16 = 3;
    /// Shutdown, with `SHUTDOWN_*` flags.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Credit update.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Credit request.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;
/// `VIRTIO_VSOCK_TYPE_SEQPACKET`.
pub const TYPE_SEQPACKET: u16 = 2;
/// SHUTDOWN flag: no more receiving.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: no more sending.
pub const SHUTDOWN_SEND: u32 = 2;
/// RW flag: end of a SEQPACKET message.
pub const SEQ_EOM: u32 = 1;
/// RW flag: the message was sent with `MSG_EOR`.
pub const SEQ_EOR: u32 = 2;

/// Registry slot of a host-to-guest transport (`RVSOCK_TRANSPORT_F_H2G`).
pub const SLOT_H2G: u32 = 0x1;
/// Registry slot of a guest-to-host transport.
pub const SLOT_G2H: u32 = 0x2;
/// Registry slot of a loopback transport.
pub const SLOT_LOCAL: u32 = 0x8;
/// The slots in the order `RVSOCK_INJECT_INFO` lists their CIDs.
pub const SLOTS: [u32; 3] = [SLOT_H2G, SLOT_G2H, SLOT_LOCAL];

/// A short name of an operation number, for the summary.
pub fn op_name(op: u16) -> &'static str {
    match op {
        op::INVALID => "INVALID(0)",
        op::REQUEST => "REQUEST",
        op::RESPONSE => "RESPONSE",
        op::RST => "RST",
        op::SHUTDOWN => "SHUTDOWN",
        op::RW => "RW",
        op::CREDIT_UPDATE => "CREDIT_UPDATE",
        op::CREDIT_REQUEST => "CREDIT_REQUEST",
        _ => "UNKNOWN(>7)",
    }
}

/// A header, in host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hdr {
    /// Sender CID.
    pub src_cid: u64,
    /// Receiver CID.
    pub dst_cid: u64,
    /// Sender port.
    pub src_port: u32,
    /// Receiver port.
    pub dst_port: u32,
    /// Payload length as the header claims it.
    pub len: u32,
    /// Socket type.
    pub ty: u16,
    /// Operation.
    pub op: u16,
    /// Flags.
    pub flags: u32,
    /// Sender's receive buffer.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed.
    pub fwd_cnt: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The little-endian `u32` at `b[at..]`.
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The little-endian `u64` at `b[at..]`.
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

impl Hdr {
    /// The header as the wire carries it.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.ty.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Decodes the header at the start of `b` (at least [`HDR_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Hdr {
        Hdr {
            src_cid: le64(b, 0),
            dst_cid: le64(b, 8),
            src_port: le32(b, 16),
            dst_port: le32(b, 20),
            len: le32(b, 24),
            ty: le16(b, 28),
            op: le16(b, 30),
            flags: le32(b, 32),
            buf_alloc: le32(b, 36),
            fwd_cnt: le32(b, 40),
        }
    }
}

impl std::fmt::Display for Hdr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{} len {} type {} flags {:#x} buf_alloc {} fwd_cnt {}",
            op_name(self.op),
            self.src_cid,
            self.src_port,
            self.dst_cid,
            self.dst_port,
            self.len,
            self.ty,
            self.flags,
            self.buf_alloc,
            self.fwd_cnt
        )
    }
}

/// The ioctl type of `/dev/rvsock_inject`.
const MAGIC: u64 = b'v' as u64;
/// `_IOC_READ`.
const IOC_READ: u64 = 2;
/// `_IOC_WRITE`.
const IOC_WRITE: u64 = 1;

const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (MAGIC << 8) | nr
}

/// Size of the `RVSOCK_INJECT_INFO` answer.
pub const INFO_LEN: usize = 48;
/// Size of the batch and feed arguments.
pub const BATCH_LEN: usize = 24;
/// Size of a feed record: the header, then the slot.
pub const FEED_REC: usize = HDR_LEN + 4;
/// `RVSOCK_INJECT_INFO`.
pub const IOC_INFO: u64 = ioc(IOC_READ, 0xa0, INFO_LEN as u64);
/// `RVSOCK_INJECT_BATCH`.
pub const IOC_BATCH: u64 = ioc(IOC_READ | IOC_WRITE, 0xa1, BATCH_LEN as u64);
/// `RVSOCK_INJECT_FEED`.
pub const IOC_FEED: u64 = ioc(IOC_READ | IOC_WRITE, 0xa2, BATCH_LEN as u64);

/// Batch flag: build each packet and free it, without handing it to the core.
pub const BATCH_DRY_RUN: u32 = 1;

/// Size of the `RVSOCK_INJECT_EVENT` argument.
pub const EVENT_LEN: usize = 12;
/// `RVSOCK_INJECT_EVENT`.
pub const IOC_EVENT: u64 = ioc(IOC_WRITE, 0xa3, EVENT_LEN as u64);
/// Event: the transport resets every connection (a device reset).
pub const EVENT_RESET_ALL: u32 = 1;
/// Event: the transport's local CID changes.
pub const EVENT_SET_CID: u32 = 2;

/// What `RVSOCK_INJECT_INFO` tells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// Registered test transports (`SLOT_*` bits).
    pub slots: u32,
    /// Local CID of the H2G, G2H and LOCAL transport (`u32::MAX`: not registered).
    pub cids: [u32; 3],
    /// Packets injected through the device so far.
    pub injected: u64,
    /// Packets the core sent through the test transports so far.
    pub sent: u64,
    /// Records not injected for want of memory.
    pub failed: u64,
    /// Headers each transport keeps for the feed.
    pub feed_len: u32,
    /// Largest payload of a record.
    pub max_payload: u32,
}

impl Info {
    /// Decodes the ioctl's answer.
    pub fn decode(b: &[u8; INFO_LEN]) -> Info {
        Info {
            slots: le32(b, 0),
            cids: [le32(b, 4), le32(b, 8), le32(b, 12)],
            injected: le64(b, 16),
            sent: le64(b, 24),
            failed: le64(b, 32),
            feed_len: le32(b, 40),
            max_payload: le32(b, 44),
        }
    }

    /// The local CID of the transport in `slot`, if it is registered.
    pub fn cid(&self, slot: u32) -> Option<u32> {
        let i = SLOTS.iter().position(|&s| s == slot)?;
        (self.slots & slot != 0).then_some(self.cids[i])
    }
}

/// Appends one injection record to `buf`: payload length, slot, header bytes, payload.
pub fn push_record(buf: &mut Vec<u8>, slot: u32, hdr: &Hdr, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&slot.to_le_bytes());
    buf.extend_from_slice(&hdr.encode());
    buf.extend_from_slice(payload);
}

/// The batch argument: records at `addr`, `len` bytes.
pub fn batch_arg(addr: u64, len: u32) -> [u8; BATCH_LEN] {
    let mut b = [0u8; BATCH_LEN];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b
}

/// The feed argument: room for `max` records at `addr`.
pub fn feed_arg(addr: u64, max: u32) -> [u8; BATCH_LEN] {
    batch_arg(addr, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = Hdr {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 3,
            src_port: 0x1122_3344,
            dst_port: 1234,
            len: 5,
            ty: TYPE_SEQPACKET,
            op: op::RW,
            flags: SEQ_EOM,
            buf_alloc: 0xAABB_CCDD,
            fwd_cnt: 7,
        };
        let b = h.encode();
        assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(le32(&b, 24), 5);
        assert_eq!(&b[28..32], &[2, 0, 5, 0]);
        assert_eq!(le32(&b, 36), 0xAABB_CCDD);
        assert_eq!(Hdr::decode(&b), h);
    }

    #[test]
    fn ioctl_numbers() {
        // _IOR('v', 0xa0, 48) and _IOWR('v', 0xa1/0xa2, 24), as the kernel computes them.
        assert_eq!(IOC_INFO, 0x8030_76a0);
        assert_eq!(IOC_BATCH, 0xc018_76a1);
        assert_eq!(IOC_FEED, 0xc018_76a2);
        assert_eq!(IOC_EVENT, 0x400c_76a3);
    }

    #[test]
    fn record_layout() {
        let mut buf = Vec::new();
        let h = Hdr {
            len: 99,
            ..Hdr::default()
        };
        push_record(&mut buf, SLOT_G2H, &h, &[1, 2, 3]);
        assert_eq!(buf.len(), 8 + HDR_LEN + 3);
        assert_eq!(le32(&buf, 0), 3);
        assert_eq!(le32(&buf, 4), SLOT_G2H);
        assert_eq!(Hdr::decode(&buf[8..]).len, 99);
        assert_eq!(&buf[8 + HDR_LEN..], &[1, 2, 3]);
    }

    #[test]
    fn info_decode() {
        let mut b = [0u8; INFO_LEN];
        b[0..4].copy_from_slice(&3u32.to_le_bytes());
        b[4..8].copy_from_slice(&2u32.to_le_bytes());
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        b[16..24].copy_from_slice(&77u64.to_le_bytes());
        let i = Info::decode(&b);
        assert_eq!(i.cid(SLOT_H2G), Some(2));
        assert_eq!(i.cid(SLOT_G2H), Some(3));
        assert_eq!(i.cid(SLOT_LOCAL), None);
        assert_eq!(i.injected, 77);
    }
}
