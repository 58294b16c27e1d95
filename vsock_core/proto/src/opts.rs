// SPDX-License-Identifier: GPL-2.0

//! Socket option rules of AF_VSOCK: buffer sizes and the connect timeout.

use super::errno::Errno;

/// `SO_VM_SOCKETS_BUFFER_SIZE`.
pub const SO_VM_SOCKETS_BUFFER_SIZE: i32 = 0;
/// `SO_VM_SOCKETS_BUFFER_MIN_SIZE`.
pub const SO_VM_SOCKETS_BUFFER_MIN_SIZE: i32 = 1;
/// `SO_VM_SOCKETS_BUFFER_MAX_SIZE`.
pub const SO_VM_SOCKETS_BUFFER_MAX_SIZE: i32 = 2;
/// `SO_VM_SOCKETS_PEER_HOST_VM_ID` (not implemented upstream either).
pub const SO_VM_SOCKETS_PEER_HOST_VM_ID: i32 = 3;
/// `SO_VM_SOCKETS_TRUSTED` (not implemented upstream either).
pub const SO_VM_SOCKETS_TRUSTED: i32 = 5;
/// `SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD`: a native `struct timeval`.
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD: i32 = 6;
/// `SO_VM_SOCKETS_NONBLOCK_TXRX` (not implemented upstream either).
pub const SO_VM_SOCKETS_NONBLOCK_TXRX: i32 = 7;
/// `SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW`: a 64-bit `struct __kernel_sock_timeval`.
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW: i32 = 8;

/// Default receive buffer (`VSOCK_DEFAULT_BUFFER_SIZE`).
pub const DEFAULT_BUFFER_SIZE: u64 = 256 * 1024;
/// Default upper bound (`VSOCK_DEFAULT_BUFFER_MAX_SIZE`).
pub const DEFAULT_BUFFER_MAX_SIZE: u64 = 256 * 1024;
/// Default lower bound (`VSOCK_DEFAULT_BUFFER_MIN_SIZE`).
pub const DEFAULT_BUFFER_MIN_SIZE: u64 = 128;
/// Largest buffer the virtio protocol can advertise.
pub const MAX_BUF_ALLOC: u64 = u32::MAX as u64;

/// The three buffer-size options of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSizes {
    /// Current size.
    pub size: u64,
    /// Lower bound.
    pub min: u64,
    /// Upper bound.
    pub max: u64,
}

impl Default for BufferSizes {
    fn default() -> Self {
        BufferSizes {
            size: DEFAULT_BUFFER_SIZE,
            min: DEFAULT_BUFFER_MIN_SIZE,
            max: DEFAULT_BUFFER_MAX_SIZE,
        }
    }
}

impl BufferSizes {
    /// Applies a set of option `opt` to `val` (`vsock_update_buffer_size`): the size is clamped
    /// to `min`, then to `max` (never an error), and setting either bound re-clamps the size.
    /// Once a transport is assigned, a changed size is also capped to what the protocol can
    /// advertise.  Returns whether the size changed (the transport then sends a CREDIT_UPDATE).
    pub fn set(&mut self, opt: i32, val: u64, transport_assigned: bool) -> bool {
        let mut size = self.size;
        match opt {
            SO_VM_SOCKETS_BUFFER_SIZE => size = val,
            SO_VM_SOCKETS_BUFFER_MAX_SIZE => self.max = val,
            SO_VM_SOCKETS_BUFFER_MIN_SIZE => self.min = val,
            _ => return false,
        }
        size = size.max(self.min).min(self.max);
        let changed = size != self.size;
        if changed && transport_assigned {
            size = size.min(MAX_BUF_ALLOC);
        }
        self.size = size;
        changed
    }

    /// The receive buffer a transport advertises for the current size.
    pub fn buf_alloc(&self) -> u32 {
        self.size.min(MAX_BUF_ALLOC) as u32
    }
}

/// Converts a connect timeout given as seconds and microseconds to ticks of `hz` per second,
/// exactly as `vsock_connectible_setsockopt` does: negative seconds, microseconds of a second or
/// more, or seconds near `MAX_SCHEDULE_TIMEOUT` give `ERANGE`; microseconds round up, computed
/// in unsigned arithmetic as in C (so a negative value wraps, as upstream); zero means the
/// default timeout (`None`).
pub fn connect_timeout_ticks(sec: i64, usec: i64, hz: u64) -> Result<Option<u64>, Errno> {
    const MAX_SCHEDULE_TIMEOUT: u64 = i64::MAX as u64;
    if sec < 0 || usec >= 1_000_000 || sec as u64 >= MAX_SCHEDULE_TIMEOUT / hz - 1 {
        return Err(Errno::ERANGE);
    }
    let per_tick = 1_000_000 / hz;
    let usec_ticks = (usec as u64).wrapping_add(per_tick - 1) / per_tick;
    let ticks = (sec as u64 * hz).wrapping_add(usec_ticks);
    Ok(if ticks == 0 { None } else { Some(ticks) })
}

/// Splits a timeout in ticks back into seconds and microseconds (`sock_get_timeout`).
pub fn ticks_to_timeval(ticks: u64, hz: u64) -> (i64, i64) {
    ((ticks / hz) as i64, ((ticks % hz) * 1_000_000 / hz) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clamping() {
        let mut b = BufferSizes::default();
        assert!(!b.set(SO_VM_SOCKETS_BUFFER_SIZE, 1 << 21, false));
        assert_eq!(b.size, 256 * 1024);
        assert!(!b.set(SO_VM_SOCKETS_BUFFER_MAX_SIZE, 1 << 21, false));
        assert!(b.set(SO_VM_SOCKETS_BUFFER_SIZE, 1 << 21, false));
        assert_eq!(b.size, 1 << 21);
        assert!(b.set(SO_VM_SOCKETS_BUFFER_MAX_SIZE, 4096, false));
        assert_eq!(b.size, 4096);
        assert!(b.set(SO_VM_SOCKETS_BUFFER_SIZE, 1, false));
        assert_eq!(b.size, 128);
        // Max wins over min, as upstream clamps to min first.
        b.set(SO_VM_SOCKETS_BUFFER_MIN_SIZE, 8192, false);
        assert_eq!(b.size, 4096);
        let mut huge = BufferSizes {
            size: 1 << 40,
            min: 0,
            max: u64::MAX,
        };
        assert_eq!(huge.buf_alloc(), u32::MAX);
        assert!(huge.set(SO_VM_SOCKETS_BUFFER_SIZE, 1 << 41, true));
        assert_eq!(huge.size, u32::MAX as u64);
        huge.set(SO_VM_SOCKETS_BUFFER_SIZE, 5, true);
        assert_eq!(huge.buf_alloc(), 5);
    }

    #[test]
    fn timeouts() {
        assert_eq!(connect_timeout_ticks(0, 0, 1000), Ok(None));
        assert_eq!(connect_timeout_ticks(1, 1, 1000), Ok(Some(1001)));
        assert_eq!(connect_timeout_ticks(-1, 0, 1000), Err(Errno::ERANGE));
        assert_eq!(
            connect_timeout_ticks(0, 1_000_000, 1000),
            Err(Errno::ERANGE)
        );
        assert_eq!(ticks_to_timeval(2500, 1000), (2, 500_000));
    }

    proptest! {
        #[test]
        fn size_always_within_bounds_after_set(min: u64, max: u64, size: u64, opt in 0i32..3) {
            let mut b = BufferSizes { size, min: 0, max: u64::MAX };
            b.set(SO_VM_SOCKETS_BUFFER_MIN_SIZE, min, false);
            b.set(SO_VM_SOCKETS_BUFFER_MAX_SIZE, max, false);
            b.set(opt, size, false);
            // Linux clamps to min first, then to max, so max wins when min > max.
            prop_assert!(b.size <= b.max);
            prop_assert!(b.size >= b.min || b.size == b.max);
        }

        #[test]
        fn timeval_roundtrip(sec in 0i64..100_000, usec in 0i64..1_000_000) {
            let t = connect_timeout_ticks(sec, usec, 1000).unwrap();
            if let Some(t) = t {
                let (s, u) = ticks_to_timeval(t, 1000);
                prop_assert_eq!(s * 1_000_000 + u, sec * 1_000_000 + ((usec + 999) / 1000) * 1000);
            }
        }
    }
}
