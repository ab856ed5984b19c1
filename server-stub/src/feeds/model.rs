//! The values the feed store returns and the notices it publishes.

use serde::{Deserialize, Serialize};
use thoonk_protocol::{Change, Epoch, FeedEvent, FeedName, Item, ItemId, Rev};

/// The kind of a feed, as stored in the `type` field of `feed.config:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FeedType {
    /// Time-ordered: newest last, optionally bounded by `max_length`.
    #[value(name = "feed")]
    Feed,
    /// Explicit order: items placed at the begin, end, or before/after another.
    #[value(name = "sorted_feed")]
    SortedFeed,
}

impl FeedType {
    /// The name stored in `feed.config:N`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Feed => "feed",
            Self::SortedFeed => "sorted_feed",
        }
    }
}

/// Settings of a new feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedSettings {
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: FeedType,
    /// Most items kept (time-ordered feeds only); older items are retracted. `None` or 0: unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Change-log entries kept at least; `None`: the default ([`DEFAULT_RETENTION`]).
    /// Writes trim the log in whole stream nodes, so somewhat more may stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
}

impl FeedSettings {
    /// Settings of a feed of `kind` with the defaults.
    pub fn new(kind: FeedType) -> Self {
        Self {
            kind,
            max_length: None,
            retention: None,
        }
    }
}

impl From<FeedType> for FeedSettings {
    fn from(kind: FeedType) -> Self {
        Self::new(kind)
    }
}

/// Change-log entries a feed keeps at least unless configured otherwise.
pub const DEFAULT_RETENTION: u64 = 10_000;

/// A change of settings; `None` keeps a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// New `max_length` (0: unbounded); lowering it trims the feed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// New change-log retention (≥ 1); setting it trims the log to exactly that at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
}

/// A feed's stored settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedInfo {
    /// The feed.
    pub feed: FeedName,
    /// Its `type` field (`feed`, `sorted_feed`, or a classic `queue`/`job`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its `max_length` (0: unbounded).
    pub max_length: u64,
    /// Change-log entries kept at least.
    pub retention: u64,
    /// Its epoch (0 before its first change through this store).
    pub epoch: Epoch,
}

/// The result of a write: the feed's epoch and the revision the change produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The feed's epoch.
    pub epoch: Epoch,
    /// The revision of this change (the last one, when trimming added retracts before it).
    pub rev: Rev,
    /// The item written (generated when none was given).
    pub id: ItemId,
}

/// A feed's whole content, read atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The feed's epoch (0: the feed does not exist or has no history yet).
    pub epoch: Epoch,
    /// The feed's revision.
    pub rev: Rev,
    /// Its items in order.
    pub items: Vec<Item>,
}

/// The answer to [`super::FeedStore::changes_since`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Since {
    /// The changes after the given revision, oldest first (possibly none).
    Changes {
        /// The feed's epoch (the one asked for).
        epoch: Epoch,
        /// The changes, with dense revisions.
        events: Vec<FeedEvent>,
    },
    /// The history cannot serve the request: start over from this snapshot.
    Reset(Snapshot),
}

/// One item read with the feed's position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRead {
    /// The feed's epoch.
    pub epoch: Epoch,
    /// The feed's revision.
    pub rev: Rev,
    /// The item and the revision of its last change; `None` when absent.
    pub item: Option<Item>,
}

/// An item's value as of a past revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemVersion {
    /// The feed's epoch.
    pub epoch: Epoch,
    /// The revision asked for.
    pub at: Rev,
    /// The feed's current revision.
    pub rev: Rev,
    /// The item's value at `at`; `None` when it did not exist then.
    pub item: Option<serde_json::Value>,
}

/// A page of a feed's change log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The feed's epoch.
    pub epoch: Epoch,
    /// The feed's revision.
    pub rev: Rev,
    /// The oldest revision the log still holds (0: empty log).
    pub oldest: Rev,
    /// The entries, oldest first.
    pub events: Vec<FeedEvent>,
}

/// The JSON payload of a feed's change channel ([`super::change_channel`])
/// and of its tag's sharded channel: the one definition of the notice.
/// The Lua that sends it (`record` in `lua/prelude.lua`) builds this JSON
/// as one string, field for field, absent fields left out; the test
/// `every_change_notice_is_a_change_notice_field_for_field`
/// (`tests/feeds_revisions.rs`) runs every kind of change through the Lua
/// and checks that each notice parses as this type and serializes back to
/// the same JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// The feed.
    pub feed: FeedName,
    /// Its epoch.
    pub epoch: Epoch,
    /// The revision this change produced.
    pub rev: Rev,
    /// The change, as its change-log entry.
    pub change: Change,
    /// Set (`"adopted": true`) on the notice of a classic writer's change
    /// that the adopter recorded (docs/INTEROP.md); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}
