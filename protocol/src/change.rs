//! Feed items and the changes that the change log records and the server pushes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ItemId, Rev};

/// One item of a feed as a snapshot carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The item's id within its feed.
    pub id: ItemId,
    /// The item's JSON value. A stored item that is not JSON (written by a
    /// foreign Thoonk process) arrives as a JSON string holding its text.
    pub item: Value,
    /// The feed revision of the item's last change.
    pub rev: Rev,
}

/// What a change did to a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// A new item was added.
    Publish,
    /// An existing item's value was replaced.
    Edit,
    /// An item was removed (also when trimmed by `max_length`).
    Retract,
    /// An item was moved to another place in the feed's order.
    Position,
}

/// Where an item stands in a feed's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// First in the feed.
    Begin,
    /// Last in the feed (newest, for a time-ordered feed).
    End,
    /// Immediately before the given item.
    Before(ItemId),
    /// Immediately after the given item.
    After(ItemId),
}

/// One change to one feed: an entry of its change log and the body of a pushed event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// What happened.
    pub op: ChangeOp,
    /// The item it happened to.
    pub id: ItemId,
    /// The item's new value (publish and edit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
    /// Where the item now stands (publish and position; an edit of a
    /// time-ordered feed also moves the item to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The item's value before the change (edit and retract), so that the
    /// version at any retained revision can be rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Value>,
    /// The change id of the job that caused the change, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// A change together with the revision it produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// The feed revision after this change.
    pub rev: Rev,
    /// The change.
    pub change: Change,
}
