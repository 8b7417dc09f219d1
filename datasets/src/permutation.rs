//! A seeded permutation of `0..n` that maps any position in O(1) without storing the order: a
//! four-round Feistel network over the smallest power-of-two domain (of even bit count) covering
//! `n`, with cycle walking back into range. Each pass over a source uses a fresh key, so every
//! epoch visits the windows in a new order, and where training stands stays a pure function of
//! the sample index.

/// A bijection on `0..len`, determined by `key`.
#[derive(Debug, Clone, Copy)]
pub struct Permutation {
    len: u64,
    half_bits: u32,
    key: u64,
}

const ROUNDS: u64 = 4;

impl Permutation {
    pub fn new(len: u64, key: u64) -> Self {
        let bits = 64 - len.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        Self {
            len,
            half_bits,
            key,
        }
    }

    /// The position that `index` moves to; `index < len`.
    pub fn apply(&self, index: u64) -> u64 {
        debug_assert!(index < self.len);
        let mut x = index;
        // The Feistel domain is at most 4× `len`, so a walk ends after a few steps on average.
        loop {
            x = self.round_trip(x);
            if x < self.len {
                return x;
            }
        }
    }

    fn round_trip(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for round in 0..ROUNDS {
            let f = mix(right
                ^ self
                    .key
                    .wrapping_add(round.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            (left, right) = (right, (left ^ f) & mask);
        }
        (left << self.half_bits) | right
    }
}

/// SplitMix64's step and finaliser: a cheap, well-mixed 64-bit hash, and the generator's output
/// for state `z` (the next state being `z + 0x9E37_79B9_7F4A_7C15`).
pub fn mix(z: u64) -> u64 {
    finalize(z.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

/// SplitMix64's finaliser alone.
pub fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_gets_a_bijection() {
        for len in [1u64, 2, 3, 5, 16, 17, 100, 1000, 4097] {
            for key in [0, 1, 12345] {
                let p = Permutation::new(len, key);
                let mut seen = vec![false; len as usize];
                for i in 0..len {
                    let j = p.apply(i);
                    assert!(
                        j < len && !seen[j as usize],
                        "len {len}, key {key}: {i} → {j}"
                    );
                    seen[j as usize] = true;
                }
            }
        }
    }

    #[test]
    fn keys_give_different_orders() {
        let a: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1).apply(i))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 2).apply(i))
            .collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }
}
