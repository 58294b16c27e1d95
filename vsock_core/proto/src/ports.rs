// SPDX-License-Identifier: GPL-2.0

//! Port binding rules: bind-table matching and the ephemeral port allocator (`__vsock_bind`).

use super::addr::{VsockAddr, LAST_RESERVED_PORT, VMADDR_CID_ANY, VMADDR_PORT_ANY};
use super::errno::Errno;

/// How many ports the allocator tries before giving up (`MAX_PORT_RETRIES`).
pub const MAX_PORT_RETRIES: u32 = 24;

/// Whether a socket bound to `bound` conflicts with, or receives for, `addr`
/// (`__vsock_find_bound_socket`): same port, and the same CID or `VMADDR_CID_ANY` on either side.
pub fn bound_matches(bound: &VsockAddr, addr: &VsockAddr) -> bool {
    bound.port == addr.port
        && (bound.cid == addr.cid || bound.cid == VMADDR_CID_ANY || addr.cid == VMADDR_CID_ANY)
}

/// Whether binding `port` needs `CAP_NET_BIND_SERVICE`.
pub fn is_reserved(port: u32) -> bool {
    port <= LAST_RESERVED_PORT
}

/// The ephemeral port counter.  Linux keeps one for the whole system, seeded at random above
/// the reserved range on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ephemeral {
    next: u32,
}

impl Ephemeral {
    /// A counter starting from `seed` (a random number; any value is brought into range).
    pub fn new(seed: u32) -> Self {
        Ephemeral { next: seed }
    }

    /// Picks a free port: up to [`MAX_PORT_RETRIES`] consecutive candidates above the reserved
    /// range, skipping `VMADDR_PORT_ANY`; `in_use` says whether a candidate is taken.
    /// `EADDRNOTAVAIL` when all are.
    pub fn allocate(&mut self, mut in_use: impl FnMut(u32) -> bool) -> Result<u32, Errno> {
        for _ in 0..MAX_PORT_RETRIES {
            let port = self.next_candidate();
            if !in_use(port) {
                return Ok(port);
            }
        }
        Err(Errno::EADDRNOTAVAIL)
    }

    /// The next candidate (above the reserved range, never `VMADDR_PORT_ANY`); the counter
    /// moves past it.
    pub fn next_candidate(&mut self) -> u32 {
        if self.next == VMADDR_PORT_ANY || self.next <= LAST_RESERVED_PORT {
            self.next = LAST_RESERVED_PORT + 1;
        }
        let port = self.next;
        self.next = self.next.wrapping_add(1);
        port
    }

    /// The counter's state, for keeping it in an atomic word ([`Ephemeral::new`] takes it
    /// back).
    pub fn state(self) -> u32 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matching_rules() {
        let any = |p| VsockAddr::new(VMADDR_CID_ANY, p);
        let at = VsockAddr::new;
        assert!(bound_matches(&at(1, 5), &at(1, 5)));
        assert!(!bound_matches(&at(1, 5), &at(2, 5)));
        assert!(bound_matches(&any(5), &at(2, 5)));
        assert!(bound_matches(&at(2, 5), &any(5)));
        assert!(!bound_matches(&any(5), &any(6)));
    }

    #[test]
    fn wraps_past_the_top_into_the_unreserved_range() {
        let mut e = Ephemeral::new(u32::MAX - 1);
        assert_eq!(e.allocate(|_| false), Ok(u32::MAX - 1));
        assert_eq!(e.allocate(|_| false), Ok(1024));
        let mut e = Ephemeral::new(0);
        assert_eq!(e.allocate(|_| false), Ok(1024));
    }

    #[test]
    fn gives_up_after_the_retries() {
        let mut e = Ephemeral::new(5000);
        let mut tried = 0;
        assert_eq!(
            e.allocate(|_| {
                tried += 1;
                true
            }),
            Err(Errno::EADDRNOTAVAIL)
        );
        assert_eq!(tried, MAX_PORT_RETRIES);
    }

    #[test]
    fn candidates_from_a_saved_state_continue_the_sequence() {
        let mut a = Ephemeral::new(u32::MAX - 2);
        let mut b = a;
        for _ in 0..5 {
            let mut c = Ephemeral::new(b.state());
            assert_eq!(c.next_candidate(), a.next_candidate());
            b = c;
        }
        assert_eq!(a, b);
    }

    proptest! {
        #[test]
        fn never_hands_out_reserved_or_any(seed: u32, taken in proptest::collection::vec(any::<bool>(), 0..40)) {
            let mut e = Ephemeral::new(seed);
            let mut i = 0;
            if let Ok(p) = e.allocate(|_| { let t = taken.get(i).copied().unwrap_or(false); i += 1; t }) {
                prop_assert!(p > LAST_RESERVED_PORT && p != VMADDR_PORT_ANY);
            }
        }
    }
}
