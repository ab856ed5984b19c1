//! The seeded generator of the tests that draw random actions or inputs:
//! the sync core's [`SplitMix64`], so that every seeded run of the project
//! draws from one generator.

pub use thoonk_sync_core::SplitMix64;

/// [`SplitMix64`] drawing indexes into slices (`usize` in and out).
#[derive(Clone, Debug)]
pub struct IndexRng(SplitMix64);

impl IndexRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// One of `from`, drawn evenly.
    pub fn pick<'a, T: ?Sized>(&mut self, from: &[&'a T]) -> &'a T {
        from[self.below(from.len())]
    }
}
