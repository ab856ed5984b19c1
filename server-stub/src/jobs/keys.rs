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

/// The exactly-once ledger record of job `id` on `queue`: a hash with the
/// submitting `user`, `state` (`queued` | `finished`), `put` and `finished`
/// times (ms) and the `outcome` JSON; it expires after the queue's retention.
pub fn ledger_key(queue: &str, id: &str) -> String {
    format!("job.ledger:{queue}:{id}")
}

/// The record that job `id` was applied to the feeds, beside the first feed
/// it writes (so in that feed's Redis Cluster slot): the accepted outcome JSON.
pub fn applied_key(first_feed: &FeedName, id: &str) -> String {
    format!("job.applied:{first_feed}:{id}")
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
