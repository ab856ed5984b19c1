//! Per-queue settings: claim timeout, retries, retention of outcomes.

use std::time::Duration;

/// How a queue treats its jobs. Every process working or sweeping a queue
/// should use the same settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// A job claimed longer than this goes back to the queue (counting a failure).
    pub claim_timeout: Duration,
    /// Failures allowed before a job stalls (dead letter); 3 means at most 4 attempts.
    pub max_retries: u32,
    /// How long the exactly-once ledger, the stored outcomes and the applied
    /// records are kept: as long as a client may stay offline.
    pub retention: Duration,
    /// How often an idle worker looks for jobs without a put notice (jobs put
    /// by processes that publish none, e.g. thoonk.js).
    pub poll_interval: Duration,
    /// How often each process sweeps for claims past their timeout.
    pub sweep_interval: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            claim_timeout: Duration::from_secs(30),
            max_retries: 3,
            retention: Duration::from_secs(30 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

impl QueueSettings {
    /// The retention in whole milliseconds (at least 1), as the scripts take it.
    pub(crate) fn retention_ms(&self) -> String {
        self.retention.as_millis().max(1).to_string()
    }

    /// The claim timeout in whole milliseconds (at least 1).
    pub(crate) fn claim_timeout_ms(&self) -> String {
        self.claim_timeout.as_millis().max(1).to_string()
    }
}
