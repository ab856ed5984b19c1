//! What a handler asks for: the feed writes of one job and its result.

use serde_json::Value as Json;
use thoonk_protocol::{Base, ErrorCode, FeedName, ItemId, Position, Rev};

use crate::feeds::{FeedError, FeedSettings};

/// What one write does to its item.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteKind {
    /// Add the item at `position` (default: end), or replace it when the id exists.
    Upsert {
        /// The new value.
        item: Json,
        /// Where a new item goes.
        position: Option<Position>,
    },
    /// Add the item at `position`; refused when the id exists.
    Insert {
        /// The value.
        item: Json,
        /// Where it goes.
        position: Option<Position>,
    },
    /// Replace an existing item's value.
    Edit {
        /// The new value.
        item: Json,
    },
    /// Remove the item.
    Retract,
    /// Move the item within a sorted feed.
    Move {
        /// Where it goes.
        position: Position,
    },
}

/// One write of a job to one item of one feed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedWrite {
    /// The feed.
    pub feed: FeedName,
    /// The item.
    pub id: ItemId,
    /// What to do to it.
    pub kind: WriteKind,
    /// The feed epoch and revision the user's change was made against: the
    /// job ends in a conflict when another client changed the item after it,
    /// or when the base is of another epoch and the item exists or changed
    /// in this one (an unknown base). `None`: no check (last writer wins).
    pub base: Option<Base>,
    /// The item revision the handler read before computing the new value;
    /// when the item changed since, the handler runs again. `None`: no guard.
    pub guard: Option<Rev>,
    /// Create the feed with these settings when it does not exist; `None`:
    /// a missing feed rejects the job with `not_found`.
    pub create: Option<FeedSettings>,
}

/// A handler's answer: the writes to apply atomically, and the result
/// returned to the client in the accepted outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The writes, applied in order in one script. At most one write per
    /// item (a plan with two is rejected as an internal error); all feeds of one plan must share a Redis Cluster slot when run
    /// on a cluster (a `{hash tag}` in their names).
    pub writes: Vec<FeedWrite>,
    /// The result value (null when there is none).
    pub result: Json,
}

impl Plan {
    /// A plan with one write and no result.
    pub fn one(write: FeedWrite) -> Self {
        Self {
            writes: vec![write],
            result: Json::Null,
        }
    }
}

/// Why a handler did not produce a plan.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HandlerError {
    /// The change is refused for good: the user's input or rights are at
    /// fault. `message` is shown to the user.
    #[error("{code:?}: {message}")]
    Rejected {
        /// Why, as a stable code.
        code: ErrorCode,
        /// Why, in words fit to show the user.
        message: String,
    },
    /// A transient failure (Redis unreachable, …): the job counts a failure
    /// and is tried again, until it stalls past the queue's max retries.
    #[error("{0}")]
    Failed(String),
}

impl HandlerError {
    /// A rejection with `code` and `message`.
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Rejected {
            code,
            message: message.into(),
        }
    }
}

impl From<FeedError> for HandlerError {
    fn from(err: FeedError) -> Self {
        match &err {
            FeedError::Redis(_) | FeedError::Corrupt { .. } => Self::Failed(err.to_string()),
            FeedError::FeedNotFound { .. } | FeedError::ItemNotFound { .. } => {
                Self::rejected(ErrorCode::NotFound, err.to_string())
            }
            _ => Self::rejected(ErrorCode::BadRequest, err.to_string()),
        }
    }
}
