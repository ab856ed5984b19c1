//! The job layer: every write is a job that a worker validates, checks
//! against the ACL and applies to one or more feeds atomically, exactly once.
//!
//! Queues use the classic Thoonk job keys (`feed.ids:N`, `feed.items:N`,
//! `feed.published:N`, `feed.claimed:N`, `feed.cancelled:N`,
//! `feed.stalled:N`, channel `job.finish:N` with `"id\0result"`), so
//! thoonk.py processes can put and work jobs on the same queues. Beside them:
//! an exactly-once ledger with stored outcomes (`job.ledger:<len N>:N:<id>`), the last
//! error of each job (`job.errors:N`), a put doorbell (`job.put:N`), and an
//! applied record beside the feeds (`job.applied:<len F>:F:<id>`).
//! docs/JOBS.md describes the keys, payloads and lifecycle.

mod apply;
mod batch;
pub mod cli;
mod demo;
mod error;
mod handlers;
mod keys;
mod payload;
mod plan;
mod queue;
mod routing;
mod scripts;
mod settings;
mod worker;

pub use batch::BATCH_JOB_PREFIX;
pub use error::JobError;
pub use handlers::{ActionHandler, AfterApply, HandlerFuture, Handlers, JobContext};
pub use keys::{
    applied_key, classic_put_channel, finish_channel, ledger_key, parse_finish, parse_finishes,
    put_channel, queue_keys, QUEUE_KEY_PREFIXES,
};
pub use payload::{JobPayload, Priority};
pub use plan::{FeedWrite, HandlerError, Plan, WriteKind};
pub use queue::{JobInfo, JobQueue, Submitted};
pub use routing::QueueSet;
pub use settings::QueueSettings;
pub use worker::{run_sweeper, run_workers};

/// The queue the gateway submits client changes to unless configured otherwise.
pub const DEFAULT_QUEUE: &str = "changes";
