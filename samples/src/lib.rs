// SPDX-License-Identifier: GPL-2.0

//! Shared code of the rvsock sample programs (see `samples/README.md`).
//!
//! - [`vsock`]: safe AF_VSOCK sockets over libc, the crate's only `unsafe` code;
//! - [`net`]: one connection/listener type over AF_VSOCK, TCP and AF_UNIX, so the tools use
//!   the same code path whatever the transport;
//! - [`cli`]: command-line parsing, size/duration parsing, the options all tools share;
//! - [`error`]: errors with context and hints, and the `main` wrapper;
//! - [`server`]: the accept loop of the servers;
//! - [`stats`], [`json`]: latency statistics and JSON output.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod json;
pub mod net;
pub mod server;
pub mod stats;
#[allow(unsafe_code)]
pub mod vsock;

pub use error::{Context, Error, Result};

/// Fills `buf` with a deterministic pattern that depends on `seed` and on the position, so
/// that lost, duplicated or reordered bytes show up when comparing.
pub fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The index of the first byte where `a` and `b` differ (or the shorter length, if one is a
/// prefix of the other); `None` if they are equal.
pub fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

/// Formats a throughput in Gbit/s (10^9 bits per second).
pub fn gbits(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e9
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern() {
        let mut a = vec![0u8; 1000];
        let mut b = vec![0u8; 1000];
        fill_pattern(&mut a, 1);
        fill_pattern(&mut b, 1);
        assert_eq!(a, b);
        fill_pattern(&mut b, 2);
        assert_ne!(a, b);
        assert!(a.iter().any(|&x| x != a[0]));
    }

    #[test]
    fn mismatch() {
        assert_eq!(first_mismatch(b"abc", b"abc"), None);
        assert_eq!(first_mismatch(b"abc", b"abd"), Some(2));
        assert_eq!(first_mismatch(b"ab", b"abc"), Some(2));
        assert_eq!(first_mismatch(b"", b"x"), Some(0));
    }

    #[test]
    fn throughput() {
        assert_eq!(gbits(1_000_000_000, 8.0), 1.0);
        assert!(gbits(1, 0.0).is_nan());
    }
}
