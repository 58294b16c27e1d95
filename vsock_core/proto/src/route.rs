// SPDX-License-Identifier: GPL-2.0

//! Transport selection: which registered transport serves a socket, exactly as Linux 6.12
//! (`vsock_assign_transport`, `vsock_use_local_transport`, `vsock_find_cid` and the
//! `/dev/vsock` local CID).
//!
//! The core holds at most one transport per [`Slot`].  Since Linux 5.5 an H2G and a G2H
//! transport coexist, so a nested L1 guest reaches its host L0 over virtio (G2H) and its own L2
//! guests over vhost (H2G); since 5.6 the local (loopback) transport serves CID 1.

use super::addr::{
    VsockAddr, VMADDR_CID_ANY, VMADDR_CID_HOST, VMADDR_CID_LOCAL, VMADDR_FLAG_TO_HOST,
};
use super::errno::Errno;

/// A transport slot of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Host to guest (vhost): this machine is a host, towards its guests.
    H2g,
    /// Guest to host (virtio): this machine is a guest, towards its host.
    G2h,
    /// Datagrams (VMCI only upstream).
    Dgram,
    /// Loopback (`VMADDR_CID_LOCAL`).
    Local,
}

impl Slot {
    /// Every slot, in registry order.
    pub const ALL: [Slot; 4] = [Slot::H2g, Slot::G2h, Slot::Dgram, Slot::Local];

    /// The `VSOCK_TRANSPORT_F_*` feature bit of this slot.
    pub const fn feature(self) -> u32 {
        match self {
            Slot::H2g => F_H2G,
            Slot::G2h => F_G2H,
            Slot::Dgram => F_DGRAM,
            Slot::Local => F_LOCAL,
        }
    }

    /// Index of the slot in [`Slot::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Slot::H2g => 0,
            Slot::G2h => 1,
            Slot::Dgram => 2,
            Slot::Local => 3,
        }
    }
}

/// Feature flag: host-to-guest transport.
pub const F_H2G: u32 = 0x1;
/// Feature flag: guest-to-host transport.
pub const F_G2H: u32 = 0x2;
/// Feature flag: datagram transport.
pub const F_DGRAM: u32 = 0x4;
/// Feature flag: local (loopback) transport.
pub const F_LOCAL: u32 = 0x8;
/// Every known feature flag.
pub const F_ALL: u32 = F_H2G | F_G2H | F_DGRAM | F_LOCAL;

/// The slots `features` asks for, or `EINVAL` for unknown bits or none at all.
pub fn slots_of(features: u32) -> Result<impl Iterator<Item = Slot>, Errno> {
    if features == 0 || features & !F_ALL != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(Slot::ALL
        .into_iter()
        .filter(move |s| features & s.feature() != 0))
}

/// What is registered: the input of every selection rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// An H2G transport is registered.
    pub h2g: bool,
    /// A G2H transport is registered, with this local (guest) CID.
    pub g2h: Option<u32>,
    /// A datagram transport is registered.
    pub dgram: bool,
    /// A local transport is registered.
    pub local: bool,
}

impl Loaded {
    fn has(&self, slot: Slot) -> bool {
        match slot {
            Slot::H2g => self.h2g,
            Slot::G2h => self.g2h.is_some(),
            Slot::Dgram => self.dgram,
            Slot::Local => self.local,
        }
    }

    /// Whether the local transport serves `remote_cid` (`vsock_use_local_transport`): CID 1, the
    /// G2H transport's own CID, or CID 2 when there is no G2H transport.
    pub fn use_local(&self, remote_cid: u32) -> bool {
        if !self.local {
            return false;
        }
        if remote_cid == VMADDR_CID_LOCAL {
            return true;
        }
        match self.g2h {
            Some(own) => remote_cid == own,
            None => remote_cid == VMADDR_CID_HOST,
        }
    }

    /// The slot a stream or seqpacket socket talking to `remote` uses, or `ENODEV` if that slot
    /// is empty (`vsock_assign_transport`).
    pub fn select(&self, remote: &VsockAddr) -> Result<Slot, Errno> {
        let slot = if self.use_local(remote.cid) {
            Slot::Local
        } else if remote.cid <= VMADDR_CID_HOST
            || !self.h2g
            || remote.flags & VMADDR_FLAG_TO_HOST != 0
        {
            Slot::G2h
        } else {
            Slot::H2g
        };
        if self.has(slot) {
            Ok(slot)
        } else {
            Err(Errno::ENODEV)
        }
    }

    /// The slot of a datagram socket.
    pub fn select_dgram(&self) -> Result<Slot, Errno> {
        if self.dgram {
            Ok(Slot::Dgram)
        } else {
            Err(Errno::ENODEV)
        }
    }

    /// Whether `cid` is one of this machine's CIDs, so that `bind` may use it (`vsock_find_cid`):
    /// the G2H transport's CID, 2 when an H2G transport is registered, 1 when a local one is.
    pub fn is_local_cid(&self, cid: u32) -> bool {
        self.g2h == Some(cid)
            || (self.h2g && cid == VMADDR_CID_HOST)
            || (self.local && cid == VMADDR_CID_LOCAL)
    }

    /// The CID `IOCTL_VM_SOCKETS_GET_LOCAL_CID` on `/dev/vsock` reports.
    pub fn dev_local_cid(&self) -> u32 {
        match self.g2h {
            Some(cid) => cid,
            None if self.h2g => VMADDR_CID_HOST,
            None if self.local => VMADDR_CID_LOCAL,
            None => VMADDR_CID_ANY,
        }
    }
}

/// The remote address of a child socket born on a listener: when both ends have CIDs above 2,
/// the peer is a sibling reached through the host, so replies must go out on G2H.
pub fn child_remote(local: &VsockAddr, remote: VsockAddr) -> VsockAddr {
    let mut remote = remote;
    if local.cid > VMADDR_CID_HOST && remote.cid > VMADDR_CID_HOST {
        remote.flags |= VMADDR_FLAG_TO_HOST;
    }
    remote
}

/// The seed's scenarios, shared by the host tests and the KUnit suites.
pub mod scenarios {
    use super::Loaded;

    /// A bare host or test VM: only the loopback transport.
    pub const LOOPBACK_ONLY: Loaded = Loaded {
        h2g: false,
        g2h: None,
        dgram: false,
        local: true,
    };
    /// A host (L0) running guests: vhost (H2G) and loopback.
    pub const L0_HOST: Loaded = Loaded {
        h2g: true,
        g2h: None,
        dgram: false,
        local: true,
    };
    /// A guest (L2) with CID 4: virtio (G2H) and loopback.
    pub const L2_GUEST: Loaded = Loaded {
        h2g: false,
        g2h: Some(4),
        dgram: false,
        local: true,
    };
    /// A nested guest (L1) with CID 3 running its own guests: virtio, vhost and loopback.
    pub const L1_NESTED: Loaded = Loaded {
        h2g: true,
        g2h: Some(3),
        dgram: false,
        local: true,
    };
}

#[cfg(test)]
mod tests {
    use super::scenarios::*;
    use super::*;
    use proptest::prelude::*;

    fn to(cid: u32) -> VsockAddr {
        VsockAddr::new(cid, 1234)
    }

    fn to_host(cid: u32) -> VsockAddr {
        VsockAddr {
            flags: VMADDR_FLAG_TO_HOST,
            ..to(cid)
        }
    }

    #[test]
    fn reference_table() {
        // The scenario table of vsock-reference.md §2.2.
        assert_eq!(LOOPBACK_ONLY.select(&to(1)), Ok(Slot::Local));
        assert_eq!(LOOPBACK_ONLY.select(&to(2)), Ok(Slot::Local));
        assert_eq!(LOOPBACK_ONLY.select(&to(5)), Err(Errno::ENODEV));
        assert_eq!(LOOPBACK_ONLY.select(&to_host(5)), Err(Errno::ENODEV));

        assert_eq!(L2_GUEST.select(&to(1)), Ok(Slot::Local));
        assert_eq!(L2_GUEST.select(&to(2)), Ok(Slot::G2h));
        assert_eq!(L2_GUEST.select(&to(4)), Ok(Slot::Local));
        assert_eq!(L2_GUEST.select(&to(7)), Ok(Slot::G2h));

        assert_eq!(L0_HOST.select(&to(1)), Ok(Slot::Local));
        assert_eq!(L0_HOST.select(&to(2)), Ok(Slot::Local));
        assert_eq!(L0_HOST.select(&to(7)), Ok(Slot::H2g));
        assert_eq!(L0_HOST.select(&to_host(7)), Err(Errno::ENODEV));

        assert_eq!(L1_NESTED.select(&to(1)), Ok(Slot::Local));
        assert_eq!(L1_NESTED.select(&to(2)), Ok(Slot::G2h));
        assert_eq!(L1_NESTED.select(&to(3)), Ok(Slot::Local));
        assert_eq!(L1_NESTED.select(&to(0)), Ok(Slot::G2h));
        assert_eq!(L1_NESTED.select(&to(4)), Ok(Slot::H2g));
        assert_eq!(L1_NESTED.select(&to_host(4)), Ok(Slot::G2h));

        let virtio_only = Loaded {
            g2h: Some(3),
            ..Loaded::default()
        };
        assert_eq!(virtio_only.select(&to(1)), Ok(Slot::G2h));
        assert_eq!(virtio_only.select(&to(3)), Ok(Slot::G2h));
        assert_eq!(Loaded::default().select(&to(1)), Err(Errno::ENODEV));
    }

    #[test]
    fn bind_locality_is_narrower_than_routing() {
        assert!(LOOPBACK_ONLY.is_local_cid(1));
        assert!(!LOOPBACK_ONLY.is_local_cid(2));
        assert!(L0_HOST.is_local_cid(2));
        assert!(L1_NESTED.is_local_cid(3));
        assert!(!L1_NESTED.is_local_cid(4));
    }

    #[test]
    fn dev_cid() {
        assert_eq!(Loaded::default().dev_local_cid(), VMADDR_CID_ANY);
        assert_eq!(LOOPBACK_ONLY.dev_local_cid(), 1);
        assert_eq!(L0_HOST.dev_local_cid(), 2);
        assert_eq!(L1_NESTED.dev_local_cid(), 3);
    }

    #[test]
    fn features() {
        assert!(slots_of(0).is_err());
        assert!(slots_of(0x10).is_err());
        let mut it = slots_of(F_LOCAL | F_G2H).unwrap();
        assert_eq!(
            (it.next(), it.next(), it.next()),
            (Some(Slot::G2h), Some(Slot::Local), None)
        );
    }

    #[test]
    fn sibling_children_reply_via_host() {
        assert_eq!(child_remote(&to(3), to(5)).flags, VMADDR_FLAG_TO_HOST);
        assert_eq!(child_remote(&to(1), to(5)).flags, 0);
        assert_eq!(child_remote(&to(3), to(2)).flags, 0);
    }

    proptest! {
        /// A selection only ever names a loaded slot, and the local slot exactly when
        /// `use_local` says so.
        #[test]
        fn selection_is_consistent(h2g: bool, g2h: Option<u32>, local: bool, cid: u32, to_host_flag: bool) {
            let l = Loaded { h2g, g2h, dgram: false, local };
            let a = VsockAddr { cid, port: 1, flags: to_host_flag as u8 };
            match l.select(&a) {
                Ok(s) => {
                    prop_assert!(l.has(s));
                    prop_assert_eq!(s == Slot::Local, l.use_local(cid));
                    if s == Slot::H2g {
                        prop_assert!(cid > 2 && !to_host_flag);
                    }
                }
                Err(e) => prop_assert_eq!(e, Errno::ENODEV),
            }
        }
    }
}
