//! A small seeded pseudo-random generator for retry jitter (SplitMix64).
//!
//! The core never asks the platform for randomness: the seed comes from the
//! shell at construction, which also makes every run reproducible in tests.

/// SplitMix64: fast, tiny, and good enough for jitter and simulations.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((self.next_u64() as u128 * n as u128) >> 64) as u64
        }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The delay before retry number `attempt` (0 for the first retry): `base`
/// doubled per attempt up to `max`, then drawn uniformly from its upper half
/// ("equal jitter"), so that clients that failed together do not retry together.
pub fn backoff(base: u64, max: u64, attempt: u32, rng: &mut SplitMix64) -> u64 {
    let full = base.saturating_mul(1u64 << attempt.min(20)).min(max).max(1);
    let half = full / 2;
    half + rng.below(full - half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], SplitMix64::new(8).next_u64());
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let mut rng = SplitMix64::new(1);
        for attempt in 0..10 {
            let full = (100u64 << attempt).min(3_000);
            for _ in 0..50 {
                let d = backoff(100, 3_000, attempt, &mut rng);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}");
            }
        }
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|_| backoff(1_000, 1_000, 0, &mut rng))
            .collect();
        assert!(spread.len() > 10, "jitter must spread retries");
    }
}
