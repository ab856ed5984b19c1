//! How a local change ended, as stored and as shown to the app.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{ChangeId, ErrorCode, FeedName, ItemId, Operation, Rev};

/// A conflict the server reported for one of our changes: the item changed
/// since the change's base revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictCase {
    /// The change id the app was given.
    pub change: ChangeId,
    /// The feed in conflict.
    pub feed: FeedName,
    /// The item in conflict.
    pub id: ItemId,
    /// The item at the change's base revision (`None`: it did not exist, or
    /// the base is unknown).
    pub base: Option<Value>,
    /// True when the item's value at the base is unknown (the feed's history
    /// restarted since, or no longer reaches the base): `base` then means
    /// nothing, and the sides must never be merged against it.
    #[serde(default)]
    pub unknown_base: bool,
    /// What our change wanted the item to be (`None`: retracted).
    pub ours: Option<Value>,
    /// The item now on the server (`None`: retracted).
    pub theirs: Option<Value>,
    /// The feed's revision at the time of the conflict.
    pub rev: Rev,
}

/// How a conflict was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionKind {
    /// The server's value stays; our change is withdrawn as already covered.
    KeptTheirs,
    /// Our value was resubmitted against the new revision.
    KeptOurs,
    /// A merged value was resubmitted against the new revision.
    Merged,
    /// Our change was dropped on the app's request.
    DroppedOurs,
}

thoonk_protocol::tagged_enum! {
    tag = "status", expecting = "an outcome";
    /// The final state of a local change.
    #[derive(Clone, Debug, PartialEq)]
    pub enum ChangeOutcome {
        /// Applied as made.
        Accepted {
            /// The worker's result value.
            result: Value,
            /// The revision each written feed reached.
            revs: BTreeMap<FeedName, Rev>,
        },
        /// Refused by the server for good.
        Rejected {
            /// Why, as a stable code.
            code: ErrorCode,
            /// Why, in words fit for the user.
            message: String,
        },
        /// Ran into a conflict that was settled (by the merge or the app's resolver).
        ConflictResolved {
            /// How it was settled.
            resolution: ResolutionKind,
            /// The worker's result for a resubmitted value (null otherwise).
            result: Value,
            /// The revisions a resubmitted value reached (empty otherwise).
            revs: BTreeMap<FeedName, Rev>,
        },
        /// Ran into a conflict that could not be settled; nothing of it was applied.
        Unresolved {
            /// The conflict, for the app to show or settle by a new change.
            conflict: ConflictCase,
            /// Why it stayed unresolved.
            reason: String,
        },
    }
}

impl ChangeOutcome {
    /// True when the change (or its resolved resubmission) was applied on the server.
    pub fn applied(&self) -> bool {
        match self {
            Self::Accepted { .. } => true,
            Self::ConflictResolved { resolution, .. } => {
                matches!(
                    resolution,
                    ResolutionKind::KeptOurs | ResolutionKind::Merged
                )
            }
            Self::Rejected { .. } | Self::Unresolved { .. } => false,
        }
    }

    /// True for outcomes that mark the item as rejected in the app's view.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Rejected { .. } | Self::Unresolved { .. })
    }
}

/// A stored outcome: kept until the app dismisses it, and delivered again after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// The change id the app was given.
    pub id: ChangeId,
    /// The change's sequence number (its order among the client's changes).
    pub seq: u64,
    /// The id it was last submitted under (differs from `id` after a conflict resubmission).
    pub wire_id: ChangeId,
    /// The operation as last submitted (after a conflict: the resolved one).
    pub op: Operation,
    /// How it ended.
    pub outcome: ChangeOutcome,
    /// When it ended (the `now` of the input that settled it).
    pub at: u64,
}
