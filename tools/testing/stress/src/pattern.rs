// SPDX-License-Identifier: GPL-2.0

//! The data the stress tests send, and how the receiving side checks it.
//!
//! A byte stream is a [`Keystream`]: byte `k` of a connection depends only on the connection's
//! seed and on `k`, so the receiver knows what every byte must be whatever sizes the sender's
//! writes had.  A lost, duplicated or reordered byte shows up at the first byte where the
//! received data leaves the keystream, and [`Keystream::locate`] then says how far off it is.
//!
//! A `SOCK_SEQPACKET` connection carries [`Messages`]: the size and the content of message `n`
//! depend only on the seed and `n`, so the receiver checks boundaries and sizes too.
//!
//! Both sides also keep a [`Checksum`] of every byte, compared at the end.

use crate::rng::{derive, mix64, Rng};

/// A position-addressable pseudo-random byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keystream {
    seed: u64,
}

impl Keystream {
    /// The keystream of `seed`.
    pub fn new(seed: u64) -> Keystream {
        Keystream { seed }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        mix64(self.seed ^ index.wrapping_mul(0xD134_2543_DE82_EF95)).to_le_bytes()
    }

    /// Fills `buf` with the keystream's bytes from `offset` on.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let w = self.word(pos / 8);
            let skip = (pos % 8) as usize;
            let n = (8 - skip).min(rest.len());
            let (head, tail) = rest.split_at_mut(n);
            head.copy_from_slice(&w[skip..skip + n]);
            rest = tail;
            pos += n as u64;
        }
    }

    /// The index in `data` of the first byte that differs from the keystream at `offset`, if
    /// any.
    pub fn mismatch(&self, offset: u64, data: &[u8]) -> Option<usize> {
        let mut expect = [0u8; 4096];
        let mut done = 0;
        for chunk in data.chunks(expect.len()) {
            let e = &mut expect[..chunk.len()];
            self.fill(offset + done as u64, e);
            if let Some(i) = chunk.iter().zip(e.iter()).position(|(a, b)| a != b) {
                return Some(done + i);
            }
            done += chunk.len();
        }
        None
    }

    /// Where in the keystream `got` (at least 16 bytes, received where `offset` was expected)
    /// really comes from, searching `offset - back ..= offset + ahead`: the signed distance
    /// (positive: bytes were skipped, i.e. lost; negative: bytes came again, duplicated).
    pub fn locate(&self, offset: u64, got: &[u8], back: u64, ahead: u64) -> Option<i64> {
        if got.len() < 16 {
            return None;
        }
        let probe = &got[..16];
        let start = offset.saturating_sub(back);
        let end = offset.saturating_add(ahead);
        let mut window = vec![0u8; 64 * 1024 + 16];
        let mut pos = start;
        while pos <= end {
            let len = window.len().min((end - pos) as usize + 16);
            let w = &mut window[..len];
            self.fill(pos, w);
            if let Some(i) = w.windows(16).position(|x| x == probe) {
                let at = pos + i as u64;
                return Some(at as i64 - offset as i64);
            }
            pos += (len - 15) as u64;
        }
        None
    }
}

/// Messages per run of tiny ones (see [`Messages::len`]).  A run's packets then weigh about
/// 128 x 700 bytes of `sk_buff` overhead, well under the smallest seqpacket buffer (256 KiB):
/// a reader that falls behind a run does not hit upstream's per-packet bound (which resets the
/// connection with `ENOBUFS`; message ends are never merged).
pub const TINY_RUN: u64 = 128;

/// The messages of a `SOCK_SEQPACKET` connection: message `n`'s size (1 to `max` bytes) and
/// content depend only on the seed and `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Messages {
    seed: u64,
    max: usize,
}

impl Messages {
    /// The messages of `seed`, at most `max` bytes each.
    pub fn new(seed: u64, max: usize) -> Messages {
        Messages {
            seed,
            max: max.max(1),
        }
    }

    /// The size of message `n`: log-uniform in 1..=max, except in one run of
    /// [`TINY_RUN`] messages out of 8 (chosen by the seed), where all are 1 to 64 bytes.
    pub fn len(&self, n: u64) -> usize {
        let mut rng = Rng::new(derive(self.seed, &[n, 1]));
        if mix64(self.seed ^ (n / TINY_RUN)) % 8 == 0 {
            rng.range(1, 64.min(self.max as u64)) as usize
        } else {
            rng.io_size(self.max)
        }
    }

    /// Message `n` into `buf` (resized to the message's size).
    pub fn fill(&self, n: u64, buf: &mut Vec<u8>) {
        buf.resize(self.len(n), 0);
        Keystream::new(derive(self.seed, &[n, 2])).fill(0, buf);
    }

    /// Whether `data` is message `n`.
    pub fn is(&self, n: u64, data: &[u8]) -> bool {
        data.len() == self.len(n)
            && Keystream::new(derive(self.seed, &[n, 2]))
                .mismatch(0, data)
                .is_none()
    }

    /// Which message near `n` (`n - back ..= n + ahead`) `data` is: the signed distance from
    /// `n` (positive: messages were lost; negative: a message came again).
    pub fn locate(&self, n: u64, data: &[u8], back: u64, ahead: u64) -> Option<i64> {
        (n.saturating_sub(back)..=n.saturating_add(ahead))
            .find(|&m| m != n && self.is(m, data))
            .map(|m| m as i64 - n as i64)
    }
}

/// An order-sensitive checksum of a byte sequence (Fletcher-style, 64-bit sums), the same
/// whatever chunks the bytes come in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    a: u64,
    b: u64,
    bytes: u64,
}

impl Checksum {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        let (mut a, mut b) = (self.a, self.b);
        for &x in data {
            a = a.wrapping_add(u64::from(x) + 1);
            b = b.wrapping_add(a);
        }
        self.a = a;
        self.b = b;
        self.bytes += data.len() as u64;
    }

    /// The bytes summed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The 64-bit checksum value.
    pub fn value(&self) -> u64 {
        self.a ^ self.b.rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystream_is_position_addressed() {
        let k = Keystream::new(42);
        let mut whole = vec![0u8; 1000];
        k.fill(0, &mut whole);
        for (off, len) in [(0, 1), (3, 5), (7, 9), (8, 8), (13, 400), (999, 1)] {
            let mut part = vec![0u8; len];
            k.fill(off as u64, &mut part);
            assert_eq!(&part[..], &whole[off..off + len]);
        }
        assert_eq!(k.mismatch(0, &whole), None);
        let mut bad = whole.clone();
        bad[500] ^= 1;
        assert_eq!(k.mismatch(0, &bad), Some(500));
        assert_ne!(Keystream::new(43).mismatch(0, &whole), None);
    }

    #[test]
    fn keystream_locates_loss_and_duplication() {
        let k = Keystream::new(9);
        let mut got = vec![0u8; 32];
        // Expected offset 100_000, but the data is from 100_000 + 4096: 4096 bytes lost.
        k.fill(104_096, &mut got);
        assert_eq!(k.locate(100_000, &got, 1 << 20, 1 << 20), Some(4096));
        // Data from 100 bytes back: duplicated.
        k.fill(99_900, &mut got);
        assert_eq!(k.locate(100_000, &got, 1 << 20, 1 << 20), Some(-100));
        assert_eq!(k.locate(100_000, &[0u8; 32], 1000, 1000), None);
        assert_eq!(k.locate(100_000, &got[..8], 1000, 1000), None);
    }

    #[test]
    fn messages() {
        let m = Messages::new(5, 256 * 1024);
        let mut buf = Vec::new();
        for n in 0..50 {
            m.fill(n, &mut buf);
            assert_eq!(buf.len(), m.len(n));
            assert!((1..=256 * 1024).contains(&buf.len()));
            assert!(m.is(n, &buf));
        }
        let tiny = (0..64 * TINY_RUN).filter(|&n| m.len(n) <= 64).count() as u64;
        assert!(tiny > 4 * TINY_RUN, "{tiny} tiny messages");
        m.fill(10, &mut buf);
        assert!(!m.is(11, &buf));
        assert_eq!(m.locate(7, &buf, 8, 8), Some(3));
        assert_eq!(m.locate(12, &buf, 8, 8), Some(-2));
    }

    #[test]
    fn checksum_ignores_chunking_but_not_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut one = Checksum::default();
        one.update(&data);
        let mut parts = Checksum::default();
        for c in data.chunks(7) {
            parts.update(c);
        }
        assert_eq!(one, parts);
        assert_eq!(one.bytes(), 5000);
        let mut swapped = data.clone();
        swapped.swap(10, 11);
        let mut other = Checksum::default();
        other.update(&swapped);
        assert_ne!(one.value(), other.value());
    }
}
