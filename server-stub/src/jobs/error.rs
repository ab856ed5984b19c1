//! Errors of the job layer, by who is at fault: the caller, Redis, or the stored data.

use thoonk_protocol::ErrorCode;

use crate::feeds::FeedError;

/// Why a job-queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Caller input: the queue name cannot be a Thoonk feed name.
    #[error("invalid queue name {queue:?}: {reason}")]
    BadQueueName {
        /// The name given.
        queue: String,
        /// Why it is refused.
        reason: String,
    },
    /// Caller input or deployment: the name belongs to a Thoonk object that is not a job queue.
    #[error("{queue} is a Thoonk {kind}, not a job queue: choose another queue name or delete it")]
    NotAQueue {
        /// The queue name.
        queue: String,
        /// The type stored in `feed.config:N`.
        kind: String,
    },
    /// Caller input: there is no queue of this name.
    #[error("there is no job queue {queue}: check the name, or start a worker, which creates it")]
    NoSuchQueue {
        /// The queue name.
        queue: String,
    },
    /// Caller input: the change id was submitted before by another user.
    /// Change ids must be unique per client: `<client id>:<sequence>`.
    #[error(
        "change id {id} was already submitted by another user ({owner}): use a fresh client id"
    )]
    WrongUser {
        /// The change id.
        id: String,
        /// The user who submitted it first.
        owner: String,
    },
    /// Caller input: no job with this id is on the queue.
    #[error("no job {id} on queue {queue}: list the queue to see its jobs")]
    NoSuchJob {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// Caller input: only a stalled job can be retried.
    #[error("job {id} on queue {queue} is not stalled: only stalled jobs can be retried (see `job stalled`)")]
    NotStalled {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// Caller timing: a worker is working on the job right now.
    #[error("job {id} on queue {queue} is in flight: wait until it finishes, fails or times out")]
    InFlight {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// Caller input: a job payload is not the documented JSON.
    #[error("invalid job payload: {reason} (see docs/JOBS.md for its shape)")]
    BadPayload {
        /// What is wrong.
        reason: String,
    },
    /// Stored data: Redis holds something this layer did not expect (written
    /// by something else); inspect and repair or remove it.
    #[error("corrupt data on queue {queue}: {reason}")]
    Corrupt {
        /// The queue.
        queue: String,
        /// What is wrong.
        reason: String,
    },
    /// The feed layer failed (see the inner error for who is at fault).
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// Redis: the connection or the server failed; retry later or check the server.
    #[error("redis failed: {0}")]
    Redis(#[from] redis::RedisError),
}

impl JobError {
    /// True when the caller's input is at fault (retrying the same call fails again).
    pub fn is_caller_error(&self) -> bool {
        match self {
            Self::Redis(_) | Self::Corrupt { .. } => false,
            Self::Feed(err) => err.is_caller_error(),
            _ => true,
        }
    }

    /// The protocol error code for a client whose request failed this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoSuchJob { .. } | Self::NoSuchQueue { .. } => ErrorCode::NotFound,
            Self::WrongUser { .. } => ErrorCode::Forbidden,
            _ if self.is_caller_error() => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}
