//! The wire protocol of thoonk-sync, shared by the browser client and the server.
//!
//! Everything that crosses the WebSocket is a JSON text frame holding one
//! [`ClientMessage`] or [`ServerMessage`], tagged by its `type` field. Every
//! change to a feed carries the feed's `(epoch, rev)`: revisions are dense per
//! feed (each change adds exactly one), and the epoch changes whenever the
//! feed's history can no longer be trusted, so a client can tell "replay from
//! rev r" from "start over". `docs/PROTOCOL.md` documents each message.
//!
//! This crate depends on serde only and compiles natively and to wasm32.

mod change;
mod error;
mod message;
mod name;
pub mod sorted;
pub mod tagged;

pub use change::{Change, ChangeOp, FeedEvent, Item, Position};
pub use error::{ErrorCode, NameError};
pub use message::{
    batch_frame_len, Base, ChangeId, ChangeOutcomeOf, ChangeRequest, ClientMessage, FeedPosition,
    Operation, Outcome, ServerMessage, ServerState,
};
pub use name::{FeedName, FeedPattern, ItemId, MAX_FEED_NAME_LEN, MAX_ITEM_ID_LEN};
pub use sorted::{SortedMap, SortedSet};

/// The protocol version this build speaks; sent in `hello` and `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest text frame a gateway reads (bytes); a larger one is answered
/// with `too_large`. A client refuses a change whose `submit` frame would
/// not fit before it queues it.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// The most changes one `submit_batch` frame may carry (the frame limit
/// applies too); a gateway refuses a larger batch with `bad_request`.
pub const MAX_BATCH_CHANGES: usize = 500;

/// A feed's epoch: changes whenever the feed's history restarts (feed deleted and
/// recreated, change log lost or reset), so revisions of different epochs never compare.
pub type Epoch = u64;

/// A feed's revision: 0 for a feed with no change yet, then +1 for every change.
pub type Rev = u64;
