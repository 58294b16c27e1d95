// SPDX-License-Identifier: GPL-2.0

//! The virtio-vsock packet header (`struct virtio_vsock_hdr`): 44 bytes, packed, little-endian.
//!
//! | off | field | size |
//! |---|---|---|
//! | 0 | `src_cid` | le64 |
//! | 8 | `dst_cid` | le64 |
//! | 16 | `src_port` | le32 |
//! | 20 | `dst_port` | le32 |
//! | 24 | `len` | le32 |
//! | 28 | `type` | le16 |
//! | 30 | `op` | le16 |
//! | 32 | `flags` | le32 |
//! | 36 | `buf_alloc` | le32 |
//! | 40 | `fwd_cnt` | le32 |

/// Size of the header on the wire.
pub const HDR_LEN: usize = 44;
/// Largest payload of one packet (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_PAYLOAD: u32 = 64 * 1024;

/// `VIRTIO_VSOCK_TYPE_STREAM`.
pub const TYPE_STREAM: u16 = 1;
/// `VIRTIO_VSOCK_TYPE_SEQPACKET`.
pub const TYPE_SEQPACKET: u16 = 2;

/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;
/// RW flag (SEQPACKET): last packet of a message.
pub const SEQ_EOM: u32 = 1;
/// RW flag (SEQPACKET): the message was sent with `MSG_EOR`.
pub const SEQ_EOR: u32 = 2;

/// Packet operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// Never sent; ignored while connecting.
    Invalid = 0,
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Reset: refusal, abort or close completion.
    Rst = 3,
    /// Shutdown with `SHUTDOWN_RCV`/`SHUTDOWN_SEND` flags.
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// Fresh credit, no payload.
    CreditUpdate = 6,
    /// Asks the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation with wire number `v`, if there is one.
    pub const fn from_u16(v: u16) -> Option<Op> {
        Some(match v {
            0 => Op::Invalid,
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// A decoded packet header, in host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hdr {
    /// Sender CID (Linux uses the low 32 bits).
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Sender port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload bytes that follow the header.
    pub len: u32,
    /// `TYPE_STREAM` or `TYPE_SEQPACKET`.
    pub type_: u16,
    /// Operation number (see [`Op`]).
    pub op: u16,
    /// Per-operation flags.
    pub flags: u32,
    /// Sender's receive buffer for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender's receiver has consumed (free-running).
    pub fwd_cnt: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    (le32(b, at) as u64) | ((le32(b, at + 4) as u64) << 32)
}

impl Hdr {
    /// Decodes a header.
    pub fn decode(b: &[u8; HDR_LEN]) -> Hdr {
        Hdr {
            src_cid: le64(b, 0),
            dst_cid: le64(b, 8),
            src_port: le32(b, 16),
            dst_port: le32(b, 20),
            len: le32(b, 24),
            type_: le16(b, 28),
            op: le16(b, 30),
            flags: le32(b, 32),
            buf_alloc: le32(b, 36),
            fwd_cnt: le32(b, 40),
        }
    }

    /// Decodes the header at the start of `buf`, or `None` if `buf` is too short.
    pub fn parse(buf: &[u8]) -> Option<Hdr> {
        buf.get(..HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .map(Hdr::decode)
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The operation, if the number is known.
    pub const fn op(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }

    /// Whether the type is one Linux speaks (stream or seqpacket).
    pub const fn valid_type(&self) -> bool {
        self.type_ == TYPE_STREAM || self.type_ == TYPE_SEQPACKET
    }

    /// The RST a socket-less receiver answers this packet with (`virtio_transport_reset_no_sock`),
    /// or `None` for a RST: a reset is never answered.
    ///
    /// Source and destination are swapped, the type is kept, and no credit is advertised.
    pub fn rst_reply(&self) -> Option<Hdr> {
        if self.op == Op::Rst as u16 {
            return None;
        }
        Some(Hdr {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            len: 0,
            type_: self.type_,
            op: Op::Rst as u16,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_little_endian_and_packed() {
        let h = Hdr {
            src_cid: 0x0102030405060708,
            dst_cid: 2,
            src_port: 0x11223344,
            dst_port: 1234,
            len: 5,
            type_: TYPE_SEQPACKET,
            op: Op::Rw as u16,
            flags: SEQ_EOM | SEQ_EOR,
            buf_alloc: 262144,
            fwd_cnt: 7,
        };
        let b = h.encode();
        assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&b[28..32], &[2, 0, 5, 0]);
        assert_eq!(&b[36..40], &262144u32.to_le_bytes());
        assert_eq!(Hdr::decode(&b), h);
    }

    #[test]
    fn rst_is_never_answered() {
        let rst = Hdr {
            op: Op::Rst as u16,
            ..Hdr::default()
        };
        assert_eq!(rst.rst_reply(), None);
    }

    proptest! {
        #[test]
        fn roundtrip(b in proptest::array::uniform32(any::<u8>()), c in proptest::array::uniform12(any::<u8>())) {
            let mut raw = [0u8; HDR_LEN];
            raw[..32].copy_from_slice(&b);
            raw[32..].copy_from_slice(&c);
            let h = Hdr::decode(&raw);
            prop_assert_eq!(h.encode(), raw);
        }

        #[test]
        fn rst_reply_swaps_endpoints(src_cid: u64, dst_cid: u64, src_port: u32, dst_port: u32, op in 0u16..16, type_: u16) {
            let h = Hdr { src_cid, dst_cid, src_port, dst_port, op, type_, len: 9, flags: 3, buf_alloc: 1, fwd_cnt: 1 };
            match h.rst_reply() {
                None => prop_assert_eq!(op, Op::Rst as u16),
                Some(r) => {
                    prop_assert_eq!((r.src_cid, r.dst_cid, r.src_port, r.dst_port), (dst_cid, src_cid, dst_port, src_port));
                    prop_assert_eq!((r.op, r.type_, r.len, r.buf_alloc, r.fwd_cnt), (Op::Rst as u16, type_, 0, 0, 0));
                }
            }
        }
    }
}
