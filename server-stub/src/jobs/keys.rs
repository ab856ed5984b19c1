//! Redis key and channel names of a job queue (see docs/JOBS.md).

use thoonk_protocol::{ChangeId, FeedName, Outcome};

/// The prefixes of a queue's keys, in the order every queue script takes
/// them in KEYS (`server-stub/lua/job_submit.lua`). All but the last are
/// the classic Thoonk job keys.
pub const QUEUE_KEY_PREFIXES: [&str; 10] = [
    "feed.config:",
    "feed.ids:",
    "feed.items:",
    "feed.published:",
    "feed.claimed:",
    "feed.cancelled:",
    "feed.stalled:",
    "feed.publishes:",
    "feed.finishes:",
    "job.errors:",
];

/// Index of `feed.ids:N` (available ids) in [`queue_keys`].
pub(crate) const IDS: usize = 1;
/// Index of `feed.items:N` (payloads).
pub(crate) const ITEMS: usize = 2;
/// Index of `feed.published:N` (put times).
pub(crate) const PUBLISHED: usize = 3;
/// Index of `feed.claimed:N` (claim times).
pub(crate) const CLAIMED: usize = 4;
/// Index of `feed.cancelled:N` (failure counts).
pub(crate) const CANCELLED: usize = 5;
/// Index of `feed.stalled:N` (dead letters).
pub(crate) const STALLED: usize = 6;
/// Index of `job.errors:N` (last error per job).
pub(crate) const ERRORS: usize = 9;

/// The 10 keys of queue `queue`, in script order.
pub fn queue_keys(queue: &str) -> [String; 10] {
    QUEUE_KEY_PREFIXES.map(|prefix| format!("{prefix}{queue}"))
}

/// `<prefix>:<byte length of first>:<first>:<second>`: the key of a record
/// named by two names that may both contain `:`. The length says where the
/// first name ends, so two different pairs never give the same key; the
/// prefix and the length hold no `{`, so a hash tag of `first` stays the
/// key's hash tag (its Redis Cluster slot is `first`'s).
fn pair_key(prefix: &str, first: &str, second: &str) -> String {
    format!("{prefix}:{}:{first}:{second}", first.len())
}

/// The exactly-once ledger record of job `id` on `queue`
/// (`job.ledger:<byte length of queue>:<queue>:<id>`, in the queue's slot):
/// a hash with the submitting `user`, `state` (`queued` | `finished`), `put`
/// and `finished` times (ms) and the `outcome` JSON; it expires after the
/// queue's retention.
pub fn ledger_key(queue: &str, id: &str) -> String {
    pair_key("job.ledger", queue, id)
}

/// The record that job `id` was applied to the feeds
/// (`job.applied:<byte length of F>:<F>:<id>`), beside the first feed `F` it
/// writes (so in that feed's Redis Cluster slot): the accepted outcome JSON.
pub fn applied_key(first_feed: &FeedName, id: &str) -> String {
    pair_key("job.applied", first_feed.as_str(), id)
}

/// The classic finish channel `job.finish:<queue>`; payload `"id\0<outcome as JSON>"`.
pub fn finish_channel(queue: &str) -> String {
    format!("job.finish:{queue}")
}

/// Parses a `job.finish:N` message `"id\0<outcome as JSON>"`. `None` when it
/// has no NUL or the result is not an outcome (a foreign worker's result).
pub fn parse_finish(payload: &str) -> Option<(ChangeId, Outcome)> {
    let (id, outcome) = payload.split_once('\0')?;
    let outcome = serde_json::from_str(outcome).ok()?;
    Some((ChangeId(id.to_owned()), outcome))
}

/// Parses a `job.finish:N` message of one change (`"id\0<outcome>"`, as
/// [`parse_finish`]) or of a batch job's changes (`job_finish_batch.lua`:
/// the pairs of each change joined by NUL, in the batch's order). Empty
/// when a pair has no id or its result is not an outcome.
pub fn parse_finishes(payload: &str) -> Vec<(ChangeId, Outcome)> {
    let mut parts = payload.split('\0');
    let mut finished = Vec::new();
    while let Some(id) = parts.next() {
        let outcome = parts.next().and_then(|o| serde_json::from_str(o).ok());
        match outcome {
            Some(outcome) if !id.is_empty() => finished.push((ChangeId(id.to_owned()), outcome)),
            _ => return Vec::new(),
        }
    }
    finished
}

/// The channel that rings when a job becomes available on `queue`
/// (put, retry, requeue after a failure); payload: the job id.
pub fn put_channel(queue: &str) -> String {
    format!("job.put:{queue}")
}

/// The channel on which thoonk.py announces its puts (`"id\0item"`); the
/// workers listen to it too, so jobs put by thoonk.py are picked up at once.
pub fn classic_put_channel(queue: &str) -> String {
    format!("feed.publishes:{queue}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use thoonk_sync_core::SplitMix64;

    use super::*;
    use crate::redis_target::{hash_tag, key_slot};

    /// Characters that make names ambiguous or tagged, and some unicode.
    const ALPHABET: [char; 9] = [':', '{', '}', 'a', 'b', '1', 'é', '漢', '🦀'];

    fn name(rng: &mut SplitMix64) -> String {
        let len = 1 + rng.below(6) as usize;
        (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn a_feed_and_a_change_id_that_share_colons_give_different_applied_keys() {
        let board = FeedName::new("demo:board").unwrap();
        let cards = FeedName::new("demo:board:cards").unwrap();
        assert_ne!(applied_key(&board, "cards:A:2"), applied_key(&cards, "A:2"));
        assert_eq!(
            applied_key(&board, "cards:A:2"),
            "job.applied:10:demo:board:cards:A:2"
        );
        assert_ne!(ledger_key("a", "b:c"), ledger_key("a:b", "c"));
    }

    #[test]
    fn distinct_names_and_ids_never_share_a_key_and_keep_the_name_slot() {
        let mut rng = SplitMix64::new(0x5eed);
        let mut applied: HashMap<String, (String, String)> = HashMap::new();
        let mut ledger: HashMap<String, (String, String)> = HashMap::new();
        for _ in 0..50_000 {
            let (first, id) = (name(&mut rng), name(&mut rng));
            let feed = FeedName::new(first.clone()).unwrap();
            let pair = (first.clone(), id.clone());
            for (keys, key) in [
                (&mut applied, applied_key(&feed, &id)),
                (&mut ledger, ledger_key(&first, &id)),
            ] {
                let seen = keys.entry(key.clone()).or_insert_with(|| pair.clone());
                assert_eq!(*seen, pair, "{key} names two pairs");
            }
            // A feed (or queue) with a hash tag keeps its slot.
            if hash_tag(&first).is_some() {
                let slot = key_slot(&format!("feed.ids:{first}"));
                assert_eq!(key_slot(&applied_key(&feed, &id)), slot, "{first} / {id}");
                assert_eq!(key_slot(&ledger_key(&first, &id)), slot, "{first} / {id}");
            }
        }
        assert!(applied.len() > 10_000, "the generator repeats itself");
    }
}
