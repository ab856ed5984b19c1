//! What the core asks its shell to do, and what it tells the app.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{ChangeId, ClientMessage, ErrorCode, FeedName, ItemId, Rev, ServerState};

use crate::outcome::ChangeOutcome;
use crate::store::StoreBatch;

/// The effects of one or more inputs, taken with [`crate::SyncCore::take_effects`].
///
/// The shell handles them in this order: apply `store` in one transaction
/// (if that fails, call [`crate::SyncCore::storage_failed`] and reopen the
/// core from the store, sending nothing); close the connection if `close`;
/// send `send` in order; open a connection if `connect`; hand `notify` to the
/// app. Writing before sending is what makes the outbox durable: a change is
/// never on the wire before it is in the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// Writes to apply atomically before anything else.
    pub store: Option<StoreBatch>,
    /// Frames to send, in order (only while connected).
    pub send: Vec<ClientMessage>,
    /// Notifications for the app.
    pub notify: Vec<Notification>,
    /// Open a connection now, then call [`crate::SyncCore::connected`] (or
    /// [`crate::SyncCore::disconnected`] when it fails).
    pub connect: bool,
    /// Close the current connection, then call [`crate::SyncCore::disconnected`].
    pub close: bool,
}

impl Effects {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.store.is_none()
            && self.send.is_empty()
            && self.notify.is_empty()
            && !self.connect
            && !self.close
    }
}

/// The connection state, as the app sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Not connected; a reconnect is scheduled.
    Offline,
    /// Connecting or waiting for `welcome`.
    Connecting,
    /// Connected and in sync as far as the core knows.
    Online,
    /// The server refused the token: call [`crate::SyncCore::set_token`] to go on.
    Unauthorized,
    /// The core stopped and will not reconnect by itself.
    Stopped {
        /// Why.
        reason: String,
    },
}

thoonk_protocol::tagged_enum! {
    tag = "state", expecting = "an item state";
    /// Whose word an item's value is.
    #[derive(Clone, Debug, PartialEq)]
    pub enum ItemState {
        /// The server's value; no local change is pending on it.
        Confirmed,
        /// Local changes not yet confirmed are laid over it.
        Pending {
            /// The pending changes, oldest first.
            changes: Vec<ChangeId>,
        },
        /// The last local change to it was rejected or left unresolved (until the
        /// app dismisses that outcome or changes the item again).
        Rejected {
            /// The failed change.
            change: ChangeId,
        },
    }
}

/// One item as the app sees it: the confirmed value with pending changes laid over it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemView {
    /// The item id.
    pub id: ItemId,
    /// Its value.
    pub value: Value,
    /// The revision of its last confirmed change (0 when it exists only locally).
    pub rev: Rev,
    /// Confirmed, pending or rejected.
    pub state: ItemState,
}

/// Something the app should know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notification {
    /// Items of a feed's view changed.
    Items {
        /// The feed.
        feed: FeedName,
        /// Items that appeared or changed (value or state).
        changed: Vec<ItemView>,
        /// Items that disappeared.
        removed: Vec<ItemId>,
        /// The feed's full order of ids, when it changed other than by appends
        /// at the end and removals.
        order: Option<Vec<ItemId>>,
    },
    /// A local change ended (also delivered again after a restart until dismissed).
    Outcome {
        /// The change id the app was given.
        change: ChangeId,
        /// How it ended.
        outcome: ChangeOutcome,
    },
    /// The connection state changed.
    Status {
        /// The new state.
        status: Status,
    },
    /// The server said whether it can reach its storage (see
    /// [`crate::SyncCore::server_state`]).
    Server {
        /// The new state.
        state: ServerState,
    },
    /// The server reported an error not tied to a change.
    ServerError {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}
