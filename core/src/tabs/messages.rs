//! The messages tabs of one database post to each other (BroadcastChannel,
//! JSON text with a `t` field), typed. They never leave the browser and only
//! tabs of the same build read them: no compatibility across versions.

use serde::de::{self, Unexpected};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation};

use crate::effects::ItemView;
use crate::outcome::ChangeOutcome;

thoonk_protocol::tagged_enum! {
    tag = "t", expecting = "a tab message";
    /// A message between the tabs of one database.
    #[derive(Clone, Debug, PartialEq)]
    pub enum TabMessage {
        // ---- follower → leader ----------------------------------------------
        /// A follower asks for the shared state; answered by `Welcome`.
        Join {
            /// The asking tab.
            tab: String,
        },
        /// A follower closed.
        Leave {
            /// The tab that closed.
            tab: String,
        },
        /// A follower's app follows `pattern`; answered by `Views`.
        Subscribe {
            /// The asking tab.
            tab: String,
            /// Matches the answer to the question.
            req: u64,
            /// The feed or pattern.
            pattern: FeedPattern,
        },
        /// A follower's app stopped following `pattern`.
        Unsubscribe {
            /// The tab.
            tab: String,
            /// The feed or pattern.
            pattern: FeedPattern,
        },
        /// A change made in a follower, under the id it chose; answered by
        /// `Queued` once it is durable in the outbox, or `Refused`.
        Change {
            /// The tab that made it.
            tab: String,
            /// Its change id (`<client_id>:<tab>-<n>`).
            id: ChangeId,
            /// What to do.
            op: Operation,
        },
        /// A follower's app has shown an outcome.
        Dismiss {
            /// The change whose outcome to forget.
            id: ChangeId,
        },
        /// A follower's app asked to work offline (`false`) or online again.
        SetOnline {
            /// Whether to connect.
            online: bool,
        },
        /// A follower checks that the leader answers; answered by `Pong`.
        Ping {
            /// The asking tab.
            tab: String,
        },
        // ---- leader → followers ---------------------------------------------
        /// A tab took the lead: followers join it and send again what it did
        /// not answer.
        Leader {
            /// The new leader.
            tab: String,
        },
        /// The shared state, for a follower that joined.
        Welcome {
            /// The joining tab.
            to: String,
            /// The database's client id (the prefix of every change id).
            client_id: String,
            /// Status and outbox, as `State` carries them.
            state: SharedState,
            /// Stored outcomes.
            outcomes: Vec<OutcomeEvent>,
        },
        /// The views of the feeds a follower's new pattern matches.
        Views {
            /// The asking tab.
            to: String,
            /// The `req` of its `Subscribe`.
            req: u64,
            /// One change per matching feed, listing every item and the order.
            feeds: Vec<FeedChange>,
        },
        /// A follower's change is durable in the outbox.
        Queued {
            /// The tab that made it.
            to: String,
            /// Its id.
            id: ChangeId,
        },
        /// A follower's change was refused before it was queued.
        Refused {
            /// The tab that made it.
            to: String,
            /// Its id.
            id: ChangeId,
            /// Why.
            #[serde(flatten)]
            refusal: Refusal,
        },
        /// A feed's view changed, as the app's callbacks get it.
        Items {
            /// The change.
            change: FeedChange,
        },
        /// A change ended, as `onOutcome` gets it.
        Outcome {
            /// The event.
            event: OutcomeEvent,
        },
        /// The status or the outbox changed.
        State {
            /// The new state.
            state: SharedState,
        },
        /// The leader answers a `Ping`.
        Pong {
            /// The tab that pinged.
            to: String,
        },
    }
}

impl TabMessage {
    /// True for messages only a leader sends.
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            Self::Leader { .. }
                | Self::Welcome { .. }
                | Self::Views { .. }
                | Self::Queued { .. }
                | Self::Refused { .. }
                | Self::Items { .. }
                | Self::Outcome { .. }
                | Self::State { .. }
                | Self::Pong { .. }
        )
    }
}

/// How a feed's view changed: items that appeared or changed (new ones go at
/// the end), ids that disappeared, and the full order when it changed other
/// than by appends and removals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedChange {
    /// The feed.
    pub feed: FeedName,
    /// Items that appeared or changed.
    pub changed: Vec<ItemView>,
    /// Ids that disappeared.
    pub removed: Vec<ItemId>,
    /// The whole order, when it changed other than by appends and removals.
    pub order: Option<Vec<ItemId>>,
}

impl FeedChange {
    /// A whole view as one change: every item, and the order.
    pub fn full(feed: FeedName, items: Vec<ItemView>, removed: Vec<ItemId>) -> Self {
        let order = items.iter().map(|item| item.id.clone()).collect();
        Self {
            feed,
            changed: items,
            removed,
            order: Some(order),
        }
    }
}

/// A change ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvent {
    /// The change.
    pub id: ChangeId,
    /// How it ended.
    pub outcome: ChangeOutcome,
}

/// Why a forwarded change was not queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The error code, as thrown to the app (`storage`, `bad_request`, `closed`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What the leader shares with every follower: its status and its outbox.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedState {
    /// The leader's status, as its `status()` shows it.
    pub status: LeaderStatus,
    /// The pending changes, as `outbox()` shows them.
    pub outbox: Vec<OutboxEntry>,
}

/// The leader's status: the fields the tab protocol reads, and the rest as
/// the leader's `status()` shows it (passed on to the follower's app as is).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LeaderStatus {
    /// `online`, `connecting`, `offline`, `unauthorized` or `stopped`.
    pub connection: String,
    /// How many changes the outbox holds.
    pub pending: u64,
    /// The other fields (feeds, storage errors, ...).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Read through a JSON map: serde's derive for a `flatten` field buffers the
/// object in its own tree (see [`thoonk_protocol::tagged`]).
impl<'de> Deserialize<'de> for LeaderStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut rest = Map::<String, Value>::deserialize(deserializer)?;
        let connection = match rest.remove("connection") {
            Some(Value::String(connection)) => connection,
            Some(_) => return Err(de::Error::invalid_type(Unexpected::Map, &"a string")),
            None => return Err(de::Error::missing_field("connection")),
        };
        let pending = match rest.remove("pending") {
            Some(pending) => pending
                .as_u64()
                .ok_or_else(|| de::Error::invalid_type(Unexpected::Map, &"a count"))?,
            None => return Err(de::Error::missing_field("pending")),
        };
        Ok(Self {
            connection,
            pending,
            rest,
        })
    }
}

/// One pending change, as `outbox()` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// Its id.
    pub id: ChangeId,
    /// What it does.
    pub op: Operation,
    /// When it was made (ms).
    pub created_at: u64,
    /// How many conflicts it ran into.
    pub conflicts: u32,
    /// Whether the server accepted it.
    pub accepted: bool,
}
