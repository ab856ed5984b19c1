//! Limits against abusive connections, as plain state machines.
//!
//! A [`FrameBudget`] is a token bucket per connection: each frame takes a
//! token, tokens come back at a steady rate up to a burst. The first frame
//! over budget is answered `rate_limited` and dropped; a client that goes on
//! sending over budget is closed. [`AddressSlots`] caps the connections one
//! address holds open before their `hello` succeeds. Neither reads a clock:
//! the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with a frame, by [`FrameBudget::on_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget: serve it.
    Serve,
    /// Over budget: drop it and answer `rate_limited` (once per overrun).
    Refuse,
    /// Over budget: drop it silently (already told).
    Drop,
    /// Over budget for too long: close the connection.
    Close,
}

/// A token bucket over a connection's frames.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    /// Tokens regained per second.
    rate: f64,
    /// Most tokens held.
    burst: f64,
    /// Frames dropped over budget in a row before the connection is closed.
    grace: u32,
    tokens: f64,
    at: Option<Instant>,
    dropped: u32,
}

impl FrameBudget {
    /// A full bucket of `burst` frames, refilled at `per_second`; after
    /// `grace` frames over budget in a row the connection is closed.
    pub fn new(per_second: u32, burst: u32, grace: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            grace,
            tokens: f64::from(burst.max(1)),
            at: None,
            dropped: 0,
        }
    }

    /// Accounts for one frame received at `now`.
    pub fn on_frame(&mut self, now: Instant) -> Verdict {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped = 0;
            return Verdict::Serve;
        }
        self.dropped = self.dropped.saturating_add(1);
        match self.dropped {
            1 => Verdict::Refuse,
            n if n > self.grace => Verdict::Close,
            _ => Verdict::Drop,
        }
    }

    /// How long until the bucket has one token again (zero when it has one).
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

/// Connections per address that have not completed `hello`, capped.
#[derive(Clone, Debug, Default)]
pub struct AddressSlots {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

impl AddressSlots {
    /// At most `max` unauthenticated connections per address.
    pub fn new(max: usize) -> Self {
        Self {
            held: Arc::default(),
            max,
        }
    }

    /// Takes a slot for a new connection from `addr`; `None` when the
    /// address holds `max` already. The slot is freed when the returned
    /// guard drops (at `hello`, or when the connection ends).
    pub fn take(&self, addr: IpAddr) -> Option<SlotGuard> {
        let mut held = self.lock();
        let count = held.entry(addr).or_default();
        if *count >= self.max {
            if *count == 0 {
                held.remove(&addr);
            }
            return None;
        }
        *count += 1;
        Some(SlotGuard {
            slots: self.clone(),
            addr,
        })
    }

    /// Slots held by `addr` now.
    pub fn held_by(&self, addr: IpAddr) -> usize {
        self.lock().get(&addr).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A slot of [`AddressSlots`], freed on drop.
#[derive(Debug)]
pub struct SlotGuard {
    slots: AddressSlots,
    addr: IpAddr,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(count) = held.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_served_then_refused_once_then_dropped_then_closed() {
        let t0 = Instant::now();
        let mut budget = FrameBudget::new(10, 5, 3);
        for _ in 0..5 {
            assert_eq!(budget.on_frame(t0), Verdict::Serve);
        }
        assert_eq!(budget.on_frame(t0), Verdict::Refuse);
        assert_eq!(budget.on_frame(t0), Verdict::Drop);
        assert_eq!(budget.on_frame(t0), Verdict::Drop);
        assert_eq!(budget.on_frame(t0), Verdict::Close);
    }

    #[test]
    fn tokens_come_back_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut budget = FrameBudget::new(10, 5, 100);
        for _ in 0..5 {
            assert_eq!(budget.on_frame(t0), Verdict::Serve);
        }
        assert_eq!(budget.on_frame(t0), Verdict::Refuse);
        assert_eq!(budget.wait(), Duration::from_millis(100));
        // 100 ms later one token is back; the overrun is over.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(budget.on_frame(t1), Verdict::Serve);
        assert_eq!(
            budget.on_frame(t1),
            Verdict::Refuse,
            "a new overrun is told"
        );
        // An hour later the bucket holds the burst, not more.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(budget.on_frame(t2), Verdict::Serve);
        }
        assert_eq!(budget.on_frame(t2), Verdict::Refuse);
    }

    #[test]
    fn a_client_within_its_rate_is_never_limited() {
        let t0 = Instant::now();
        let mut budget = FrameBudget::new(100, 10, 0);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert_eq!(budget.on_frame(now), Verdict::Serve, "frame {i}");
        }
    }

    #[test]
    fn address_slots_are_capped_per_address_and_freed_on_drop() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "a third is refused");
        assert!(slots.take(b).is_some(), "another address is not affected");
        drop(first);
        assert_eq!(slots.held_by(a), 1);
        assert!(slots.take(a).is_some(), "a freed slot is taken again");
        let none = AddressSlots::new(0);
        assert!(none.take(a).is_none());
        assert_eq!(none.held_by(a), 0);
    }
}
