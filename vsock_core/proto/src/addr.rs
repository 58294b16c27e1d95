// SPDX-License-Identifier: GPL-2.0

//! VM socket addresses: `struct sockaddr_vm` and the well-known CIDs and ports.
//!
//! Layout (`include/uapi/linux/vm_sockets.h`), 16 bytes, native endian:
//! `svm_family: u16, svm_reserved1: u16, svm_port: u32, svm_cid: u32, svm_flags: u8,
//! svm_zero: [u8; 3]`.

use super::errno::Errno;

/// The address family number of VM sockets.
pub const AF_VSOCK: u16 = 40;
/// Size of `struct sockaddr_vm`.
pub const SOCKADDR_VM_LEN: usize = 16;

/// Any CID (bind to all local CIDs).
pub const VMADDR_CID_ANY: u32 = u32::MAX;
/// The hypervisor.
pub const VMADDR_CID_HYPERVISOR: u32 = 0;
/// Loopback: this very machine.
pub const VMADDR_CID_LOCAL: u32 = 1;
/// The host.
pub const VMADDR_CID_HOST: u32 = 2;
/// Any port (bind picks an ephemeral one).
pub const VMADDR_PORT_ANY: u32 = u32::MAX;
/// Route to the host even for a CID above 2 (sibling VMs, enclaves).
pub const VMADDR_FLAG_TO_HOST: u8 = 0x01;
/// Ports up to this one need `CAP_NET_BIND_SERVICE`.
pub const LAST_RESERVED_PORT: u32 = 1023;

/// A VM socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VsockAddr {
    /// Context identifier.
    pub cid: u32,
    /// Port.
    pub port: u32,
    /// `VMADDR_FLAG_*` bits.
    pub flags: u8,
}

impl VsockAddr {
    /// The unbound address `(VMADDR_CID_ANY, VMADDR_PORT_ANY)` every socket starts with.
    pub const ANY: VsockAddr = VsockAddr::new(VMADDR_CID_ANY, VMADDR_PORT_ANY);

    /// An address without flags.
    pub const fn new(cid: u32, port: u32) -> Self {
        VsockAddr {
            cid,
            port,
            flags: 0,
        }
    }

    /// Whether a port is set (`vsock_addr_bound`).
    pub const fn is_bound(&self) -> bool {
        self.port != VMADDR_PORT_ANY
    }

    /// Parses and validates a `struct sockaddr_vm` given by userspace.
    ///
    /// Like `vsock_addr_cast` and `vsock_addr_validate`: a buffer shorter than the structure is
    /// `EFAULT`, a family other than `AF_VSOCK` is `EAFNOSUPPORT`, a flag other than
    /// [`VMADDR_FLAG_TO_HOST`] is `EINVAL`.  The reserved fields are not checked.
    pub fn parse(buf: &[u8]) -> Result<Self, Errno> {
        let b: &[u8; SOCKADDR_VM_LEN] = buf
            .get(..SOCKADDR_VM_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Errno::EFAULT)?;
        let family = u16::from_ne_bytes([b[0], b[1]]);
        if family != AF_VSOCK {
            return Err(Errno::EAFNOSUPPORT);
        }
        let flags = b[12];
        if flags & !VMADDR_FLAG_TO_HOST != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(VsockAddr {
            port: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            cid: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            flags,
        })
    }

    /// The `struct sockaddr_vm` image of this address, as `getsockname` and friends return it.
    pub fn to_bytes(self) -> [u8; SOCKADDR_VM_LEN] {
        let mut b = [0u8; SOCKADDR_VM_LEN];
        b[0..2].copy_from_slice(&AF_VSOCK.to_ne_bytes());
        b[4..8].copy_from_slice(&self.port.to_ne_bytes());
        b[8..12].copy_from_slice(&self.cid.to_ne_bytes());
        b[12] = self.flags;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_rejects_short_wrong_family_and_flags() {
        let good = VsockAddr::new(1, 1234).to_bytes();
        assert_eq!(VsockAddr::parse(&good[..15]), Err(Errno::EFAULT));
        let mut bad = good;
        bad[0] = 2;
        assert_eq!(VsockAddr::parse(&bad), Err(Errno::EAFNOSUPPORT));
        let mut bad = good;
        bad[12] = 0x02;
        assert_eq!(VsockAddr::parse(&bad), Err(Errno::EINVAL));
        let mut to_host = good;
        to_host[12] = VMADDR_FLAG_TO_HOST;
        assert_eq!(VsockAddr::parse(&to_host).map(|a| a.flags), Ok(1));
    }

    proptest! {
        #[test]
        fn roundtrip(cid: u32, port: u32, to_host: bool, extra in proptest::collection::vec(any::<u8>(), 0..8)) {
            let a = VsockAddr { cid, port, flags: to_host as u8 };
            let mut buf = a.to_bytes().to_vec();
            buf.extend_from_slice(&extra);
            prop_assert_eq!(VsockAddr::parse(&buf), Ok(a));
        }

        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = VsockAddr::parse(&buf);
        }
    }
}
