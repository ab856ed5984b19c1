//! Errors of the feed store, by who is at fault: the caller, Redis, or the stored data.

use thoonk_protocol::{FeedName, ItemId, NameError, Rev};

/// Why a feed operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Caller input: a feed name or item id is invalid.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// Caller input: the feed does not exist.
    #[error("feed {feed} does not exist: create it first (or publish, which creates a time-ordered feed)")]
    FeedNotFound {
        /// The feed.
        feed: FeedName,
    },
    /// Caller input: the feed exists already (create).
    #[error("feed {feed} already exists as a {kind}: use config to change it, or delete it first")]
    FeedExists {
        /// The feed.
        feed: FeedName,
        /// Its type.
        kind: String,
    },
    /// Caller input: the operation does not apply to this kind of feed
    /// (e.g. move on a time-ordered feed, or any feed operation on a job queue).
    #[error("feed {feed} is a {kind}: {what}")]
    WrongFeedType {
        /// The feed.
        feed: FeedName,
        /// Its type as stored in `feed.config:N`.
        kind: String,
        /// What is not possible with it.
        what: &'static str,
    },
    /// Caller input: the item does not exist.
    #[error("item {id} does not exist in feed {feed}: check the id (it may have been retracted)")]
    ItemNotFound {
        /// The feed.
        feed: FeedName,
        /// The item.
        id: ItemId,
    },
    /// Caller input: the item exists already (insert).
    #[error("item {id} already exists in feed {feed}: edit it, or choose another id")]
    ItemExists {
        /// The feed.
        feed: FeedName,
        /// The item.
        id: ItemId,
    },
    /// Caller input: a position is not possible here, or names a missing item.
    #[error("bad position in feed {feed}: {reason}")]
    BadPosition {
        /// The feed.
        feed: FeedName,
        /// Why.
        reason: String,
    },
    /// Caller input: some other argument is invalid (the message says which).
    #[error("invalid argument for feed {feed}: {reason}")]
    BadArgument {
        /// The feed.
        feed: FeedName,
        /// Why.
        reason: String,
    },
    /// Caller input: a revision after the feed's current one.
    #[error("revision {rev} of feed {feed} does not exist yet (the feed is at {current})")]
    FutureRevision {
        /// The feed.
        feed: FeedName,
        /// The revision asked for.
        rev: Rev,
        /// The feed's revision.
        current: Rev,
    },
    /// The change log no longer reaches back to the revision asked for:
    /// start over from a snapshot.
    #[error("the history of feed {feed} no longer reaches revision {rev} (oldest kept: {oldest}); read a snapshot instead")]
    HistoryGone {
        /// The feed.
        feed: FeedName,
        /// The revision asked for.
        rev: Rev,
        /// The oldest revision the log still holds.
        oldest: Rev,
    },
    /// Stored data: Redis holds keys of this feed with unexpected types or
    /// contents (written by something else); inspect and repair or delete them.
    #[error("corrupt data for feed {feed}: {reason}")]
    Corrupt {
        /// The feed.
        feed: String,
        /// What is wrong.
        reason: String,
    },
    /// Redis: the connection or the server failed; retry later or check the server.
    #[error("redis failed: {0}")]
    Redis(#[from] redis::RedisError),
}

impl FeedError {
    /// True when the caller's input is at fault (retrying the same call fails again).
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, Self::Redis(_) | Self::Corrupt { .. })
    }
}
