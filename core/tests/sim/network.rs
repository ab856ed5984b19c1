//! A network that drops, duplicates, reorders and delays messages.
//!
//! Each message gets its own random delay, so later messages can overtake
//! earlier ones. A disconnect loses everything in flight.

use thoonk_sync_core::SplitMix64;

/// How badly the network behaves.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Percent of messages lost.
    pub drop_pct: u64,
    /// Percent of messages delivered twice.
    pub dup_pct: u64,
    /// Shortest delay, in ms.
    pub min_delay: u64,
    /// Random extra delay, up to this many ms.
    pub jitter: u64,
}

impl Faults {
    /// A healthy network: nothing lost or doubled, small delays, still reordering.
    pub fn calm() -> Self {
        Self {
            drop_pct: 0,
            dup_pct: 0,
            min_delay: 1,
            jitter: 5,
        }
    }
}

struct InFlight<M> {
    at: u64,
    order: u64,
    msg: M,
}

/// One direction of the connection.
pub struct Pipe<M> {
    queue: Vec<InFlight<M>>,
    counter: u64,
}

impl<M: Clone> Pipe<M> {
    /// An empty pipe.
    pub fn new() -> Self {
        Self {
            queue: Vec::new(),
            counter: 0,
        }
    }

    /// Sends a message at `now` under `faults`.
    pub fn send(&mut self, msg: M, now: u64, faults: &Faults, rng: &mut SplitMix64) {
        if rng.chance(faults.drop_pct) {
            return;
        }
        let copies = if rng.chance(faults.dup_pct) { 2 } else { 1 };
        for _ in 0..copies {
            self.counter += 1;
            self.queue.push(InFlight {
                at: now + faults.min_delay + rng.below(faults.jitter + 1),
                order: self.counter,
                msg: msg.clone(),
            });
        }
    }

    /// When the next message arrives.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.iter().map(|m| m.at).min()
    }

    /// Takes the next message due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<M> {
        let (index, _) = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, m)| m.at <= now)
            .min_by_key(|(_, m)| (m.at, m.order))?;
        Some(self.queue.swap_remove(index).msg)
    }

    /// Loses everything in flight.
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
