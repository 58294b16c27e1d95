// SPDX-License-Identifier: GPL-2.0

//! A small deterministic random number generator (SplitMix64), so that a run is reproducible
//! from its `--seed`, and the hash that derives per-connection seeds from it.

use std::time::Duration;

/// The SplitMix64 output function: a good 64-bit mixer of any input.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a seed from a seed and a list of numbers (connection indexes, directions...).
pub fn derive(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix64(seed), |acc, &p| {
        mix64(acc ^ mix64(p.wrapping_add(0x51)))
    })
}

/// A SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for test traffic, and never a division by zero.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration uniformly in `lo..=hi`, to the microsecond.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_us = lo.as_micros().min(u128::from(u64::MAX)) as u64;
        let hi_us = hi.as_micros().min(u128::from(u64::MAX)) as u64;
        Duration::from_micros(self.range(lo_us, hi_us))
    }

    /// A size in `1..=max`, log-uniform: as many sizes of 1 to 2 bytes as of 128 to 256 KiB,
    /// so that tiny writes are frequent and large ones still move most of the bytes.
    pub fn io_size(&mut self, max: usize) -> usize {
        let max = max.max(1) as u64;
        let top = 63 - u64::from(max.leading_zeros()); // floor(log2(max))
        let e = self.range(0, top);
        let lo = 1u64 << e;
        let hi = ((lo << 1) - 1).min(max);
        self.range(lo, hi) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(derive(1, &[2, 3]), derive(1, &[3, 2]));
        assert_ne!(derive(1, &[2]), derive(2, &[2]));
    }

    #[test]
    fn ranges() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let x = r.range(3, 9);
            assert!((3..=9).contains(&x));
            assert!(r.below(5) < 5);
            let s = r.io_size(256 * 1024);
            assert!((1..=256 * 1024).contains(&s));
            let d = r.duration(Duration::from_millis(10), Duration::from_millis(20));
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(5, 5), 5);
        assert_eq!(r.io_size(1), 1);
    }

    #[test]
    fn io_sizes_are_spread() {
        let mut r = Rng::new(3);
        let sizes: Vec<usize> = (0..10_000).map(|_| r.io_size(256 * 1024)).collect();
        let tiny = sizes.iter().filter(|&&s| s <= 64).count();
        let large = sizes.iter().filter(|&&s| s >= 64 * 1024).count();
        assert!(tiny > 2000, "{tiny} tiny sizes");
        assert!(large > 500, "{large} large sizes");
    }
}
