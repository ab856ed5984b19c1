//! The frames exchanged over the WebSocket.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::{
    Change, Epoch, ErrorCode, FeedEvent, FeedName, FeedPattern, Item, ItemId, Position, Rev,
};

/// What a client already mirrors of one feed, sent on subscribe so the server
/// can answer with the changes since then instead of a full snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPosition {
    /// The epoch of the mirrored history.
    pub epoch: Epoch,
    /// The last revision applied.
    pub rev: Rev,
}

/// The state of one feed a change was made against, for conflict detection.
///
/// On the wire `{"epoch": e, "rev": r}`; a bare revision (the shape before
/// bases carried their epoch) is still read. A base of another epoch than
/// the feed's current one (epoch 0 included: "the client does not know") is
/// an *unknown* base: its revision is never compared with the feed's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Base {
    /// A revision of a known epoch.
    At(FeedPosition),
    /// A bare revision, compared in the feed's current epoch (clients that
    /// do not send epochs).
    Rev(Rev),
}

/// Read by hand: serde's derive for an untagged enum buffers the value to try
/// each variant in turn.
impl<'de> Deserialize<'de> for Base {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BaseVisitor;

        impl<'de> Visitor<'de> for BaseVisitor {
            type Value = Base;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a base: {"epoch": e, "rev": r} or a revision"#)
            }

            fn visit_u64<E: de::Error>(self, rev: u64) -> Result<Base, E> {
                Ok(Base::Rev(rev))
            }

            fn visit_i64<E: de::Error>(self, rev: i64) -> Result<Base, E> {
                u64::try_from(rev)
                    .map(Base::Rev)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(rev), &self))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Base, A::Error> {
                FeedPosition::deserialize(MapAccessDeserializer::new(map)).map(Base::At)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Base, A::Error> {
                FeedPosition::deserialize(SeqAccessDeserializer::new(seq)).map(Base::At)
            }
        }

        deserializer.deserialize_any(BaseVisitor)
    }
}

impl Base {
    /// A base at revision `rev` of `epoch` (0: unknown epoch).
    pub fn at(epoch: Epoch, rev: Rev) -> Self {
        Self::At(FeedPosition { epoch, rev })
    }

    /// The revision.
    pub fn rev(&self) -> Rev {
        match self {
            Self::At(p) => p.rev,
            Self::Rev(rev) => *rev,
        }
    }

    /// The epoch, when the base names one.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            Self::At(p) => Some(p.epoch),
            Self::Rev(_) => None,
        }
    }
}

/// A client change id: the client's id and its own sequence number,
/// `"<client_id>:<seq>"`. It is the job id on the server and the key of
/// the exactly-once ledger, so it must never be reused by another change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeId(pub String);

impl ChangeId {
    /// Builds the change id of change number `seq` of client `client_id`.
    pub fn new(client_id: &str, seq: u64) -> Self {
        Self(format!("{client_id}:{seq}"))
    }
}

crate::tagged_enum! {
    tag = "kind", expecting = "an operation";
    /// A write the user made: one operation on one feed item, or a named action
    /// that a server worker validates and applies to one or more feeds atomically.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Operation {
        /// Add an item (or replace it, if the id exists) at `position` (default: end).
        Publish {
            /// The feed to write.
            feed: FeedName,
            /// The item id, chosen by the client.
            id: ItemId,
            /// The item's value.
            item: Value,
            /// Where to put it; the end when absent.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            position: Option<Position>,
        },
        /// Replace an existing item's value.
        Edit {
            /// The feed to write.
            feed: FeedName,
            /// The item to replace.
            id: ItemId,
            /// The new value.
            item: Value,
        },
        /// Remove an item.
        Retract {
            /// The feed to write.
            feed: FeedName,
            /// The item to remove.
            id: ItemId,
        },
        /// Move an item within a sorted feed.
        Move {
            /// The feed to write.
            feed: FeedName,
            /// The item to move.
            id: ItemId,
            /// Where to move it.
            position: Position,
        },
        /// A named application action (e.g. `delegate_task`) with a JSON payload.
        Action {
            /// The action's name, which selects the worker handler.
            name: String,
            /// The action's arguments.
            payload: Value,
        },
    }
}

impl Operation {
    /// The feed a single-feed operation writes; `None` for a named action.
    pub fn feed(&self) -> Option<&FeedName> {
        match self {
            Self::Publish { feed, .. }
            | Self::Edit { feed, .. }
            | Self::Retract { feed, .. }
            | Self::Move { feed, .. } => Some(feed),
            Self::Action { .. } => None,
        }
    }
}

/// One change's outcome in an `outcomes` frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeOutcomeOf {
    /// The change id.
    pub id: ChangeId,
    /// How it ended.
    pub outcome: Outcome,
}

/// A change submitted as a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// The change id; submitting the same id again never applies it twice.
    pub id: ChangeId,
    /// What to do.
    pub op: Operation,
    /// The epoch and revision of each feed the change was made against, for
    /// conflict detection.
    #[serde(default)]
    pub base: BTreeMap<FeedName, Base>,
}

impl ClientMessage {
    /// The changes a `submit` or `submit_batch` frame carries, in order.
    pub fn submitted(&self) -> &[ChangeRequest] {
        match self {
            Self::Submit { change } => std::slice::from_ref(change),
            Self::SubmitBatch { changes } => changes,
            _ => &[],
        }
    }
}

/// The length in bytes of a `submit_batch` frame carrying changes whose
/// `submit` frames have the given lengths.
pub fn batch_frame_len(submit_frame_lens: impl IntoIterator<Item = usize>) -> usize {
    const SUBMIT_HEAD: usize = r#"{"type":"submit","change":"#.len() + 1;
    const HEAD: &str = r#"{"type":"submit_batch","changes":[]}"#;
    let mut len = HEAD.len();
    let mut count = 0;
    for submit in submit_frame_lens {
        len += submit - SUBMIT_HEAD;
        count += 1;
    }
    len + count.max(1) - 1
}

impl ChangeRequest {
    /// The length in bytes of the `submit` frame that carries this change.
    pub fn submit_frame_len(&self) -> usize {
        const HEAD: &str = r#"{"type":"submit","change":"#;
        // A change always serializes (its JSON values are already JSON).
        HEAD.len() + serde_json::to_vec(self).map_or(0, |json| json.len()) + 1
    }
}

crate::tagged_enum! {
    tag = "status", expecting = "an outcome";
    /// The final result of a submitted change.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Outcome {
        /// Applied; `revs` holds the revision each written feed reached.
        Accepted {
            /// A result value from the worker (null when it has none).
            #[serde(default)]
            result: Value,
            /// The revision each feed reached with this change.
            #[serde(default)]
            revs: BTreeMap<FeedName, Rev>,
            /// The epoch of each of those revisions (absent from servers that
            /// do not send it: then the feed's epoch when the outcome arrives).
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            epochs: BTreeMap<FeedName, Epoch>,
        },
        /// Refused for good; `message` is fit to show the user.
        Rejected {
            /// Why, as a stable code.
            code: ErrorCode,
            /// Why, in words.
            message: String,
        },
        /// The item changed since the change's base revision; nothing was applied.
        Conflict {
            /// The feed in conflict.
            feed: FeedName,
            /// The item in conflict.
            id: ItemId,
            /// The item's value at the base revision (`None`: it did not exist,
            /// or the base is unknown).
            base: Option<Value>,
            /// True when the server cannot tell the item's value at the base: the
            /// base is of another epoch (the feed was deleted and recreated, or
            /// its history restarted) or the change log no longer reaches it.
            /// `base` is then `None` and means nothing: never merge against it.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            unknown_base: bool,
            /// The feed's current epoch (the epoch of `rev`; 0 from servers that
            /// do not send it).
            #[serde(default)]
            epoch: Epoch,
            /// The item's current value (`None`: it was retracted).
            current: Option<Value>,
            /// The feed's current revision.
            rev: Rev,
            /// The feed's changes after the base revision, oldest first.
            history: Vec<FeedEvent>,
        },
    }
}

crate::tagged_enum! {
    tag = "type", expecting = "a client message";
    /// A frame from the client to the server.
    #[derive(Clone, Debug, PartialEq)]
    pub enum ClientMessage {
        /// First frame of every connection.
        Hello {
            /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
            protocol: u32,
            /// The bearer token that identifies the user.
            token: String,
            /// The client's stable id (one per browser profile and database).
            client_id: String,
        },
        /// Follow a feed or every feed a pattern matches, now and later.
        Subscribe {
            /// A feed name or pattern.
            pattern: FeedPattern,
            /// What the client already mirrors of matching feeds.
            #[serde(default)]
            known: BTreeMap<FeedName, FeedPosition>,
        },
        /// Stop following a pattern given to `subscribe`.
        Unsubscribe {
            /// The pattern exactly as subscribed.
            pattern: FeedPattern,
        },
        /// Ask again for one feed's changes after `rev` (sent after a gap).
        Replay {
            /// The feed.
            feed: FeedName,
            /// The last state the client applied.
            from: FeedPosition,
        },
        /// Submit a change as a job.
        Submit {
            /// The change.
            change: ChangeRequest,
        },
        /// Submit several changes of one feed, in order, as one job (at most
        /// [`crate::MAX_BATCH_CHANGES`]). Each change keeps its id, ledger entry
        /// and outcome; the server applies them in order and stops at the first
        /// conflict, leaving the changes after it unattempted (no `ack` from
        /// the worker's run, no ledger entry: the client sends them again).
        SubmitBatch {
            /// The changes, oldest first, all writing the same feed.
            changes: Vec<ChangeRequest>,
        },
        /// Heartbeat; the server answers `pong`.
        Ping,
    }
}

crate::tagged_enum! {
    tag = "type", expecting = "a server message";
    /// A frame from the server to the client.
    #[derive(Clone, Debug, PartialEq)]
    pub enum ServerMessage {
        /// The answer to `hello`: the session is open.
        Welcome {
            /// The protocol version the server speaks.
            protocol: u32,
            /// The user the token belongs to.
            user: String,
            /// How long, in milliseconds, the server's exactly-once ledger
            /// remembers a change id: a change first submitted longer ago than
            /// this may be applied again if resent. Absent: not told.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            ledger_window_ms: Option<u64>,
        },
        /// The answer to `subscribe`: which feeds the pattern matches now.
        Subscribed {
            /// The pattern as subscribed.
            pattern: FeedPattern,
            /// The feeds it matches that the user may read.
            feeds: Vec<FeedName>,
        },
        /// A feed's whole content, replacing whatever the client had of it.
        Snapshot {
            /// The feed.
            feed: FeedName,
            /// Its epoch.
            epoch: Epoch,
            /// Its revision.
            rev: Rev,
            /// Its items, in order.
            items: Vec<Item>,
        },
        /// A batch of consecutive changes of one feed (a replay), oldest first.
        Changes {
            /// The feed.
            feed: FeedName,
            /// Its epoch.
            epoch: Epoch,
            /// The changes, with dense revisions.
            events: Vec<FeedEvent>,
        },
        /// One live change.
        Event {
            /// The feed.
            feed: FeedName,
            /// Its epoch.
            epoch: Epoch,
            /// The revision this change produced.
            rev: Rev,
            /// The change.
            change: Change,
        },
        /// A submitted change is durably queued.
        Ack {
            /// The change id.
            id: ChangeId,
        },
        /// A submitted change is finished.
        Outcome {
            /// The change id.
            id: ChangeId,
            /// How it ended.
            outcome: Outcome,
        },
        /// The changes of one `submit_batch` that are durably queued, in the
        /// frame's order: one frame in place of an `ack` per change.
        Acks {
            /// The change ids.
            ids: Vec<ChangeId>,
        },
        /// Several submitted changes are finished (the changes of one batch
        /// job, in order): one frame in place of an `outcome` per change.
        Outcomes {
            /// Each change and how it ended.
            outcomes: Vec<ChangeOutcomeOf>,
        },
        /// A request failed; the connection stays open unless the code says otherwise.
        Error {
            /// Why, as a stable code.
            code: ErrorCode,
            /// Why, in words.
            message: String,
        },
        /// The answer to `ping`.
        Pong,
        /// Whether the server can reach its storage (Redis) now. Sent when that
        /// changes, and after `welcome` while it is unavailable; a session starts
        /// as `available`. While unavailable, changes are not queued and
        /// outcomes wait; the client keeps its changes pending and says so.
        Server {
            /// Available or not.
            state: ServerState,
        },
    }
}

/// Whether the server can reach its storage, as the `server` frame says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// The server works normally.
    #[default]
    Available,
    /// The server cannot reach its storage: writes wait until it is back.
    Unavailable,
}

impl ServerState {
    /// The wire name: `available` or `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Available => "available",
            ServerState::Unavailable => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_have_the_documented_shape() {
        let hello: ClientMessage = serde_json::from_value(json!({
            "type": "hello", "protocol": 1, "token": "t", "client_id": "c1"
        }))
        .unwrap();
        assert!(matches!(hello, ClientMessage::Hello { protocol: 1, .. }));

        let submit = ClientMessage::Submit {
            change: ChangeRequest {
                id: ChangeId::new("c1", 7),
                op: Operation::Move {
                    feed: FeedName::new("team:1:tasks").unwrap(),
                    id: ItemId::new("a").unwrap(),
                    position: Position::After(ItemId::new("b").unwrap()),
                },
                base: BTreeMap::from([(FeedName::new("team:1:tasks").unwrap(), Base::at(9, 4))]),
            },
        };
        assert_eq!(
            serde_json::to_value(&submit).unwrap(),
            json!({"type": "submit", "change": {
                "id": "c1:7",
                "op": {"kind": "move", "feed": "team:1:tasks", "id": "a", "position": {"after": "b"}},
                "base": {"team:1:tasks": {"epoch": 9, "rev": 4}}
            }})
        );
        let legacy: ChangeRequest = serde_json::from_value(json!({
            "id": "c1:7", "op": {"kind": "retract", "feed": "f", "id": "a"}, "base": {"f": 4}
        }))
        .unwrap();
        assert_eq!(legacy.base.values().next(), Some(&Base::Rev(4)));
        let ClientMessage::Submit { change } = &submit else {
            unreachable!()
        };
        assert_eq!(
            change.submit_frame_len(),
            serde_json::to_vec(&submit).unwrap().len()
        );

        let event = ServerMessage::Event {
            feed: FeedName::new("f").unwrap(),
            epoch: 9,
            rev: 3,
            change: Change {
                op: crate::ChangeOp::Publish,
                id: ItemId::new("x").unwrap(),
                item: Some(json!({"title": "t"})),
                position: Some(Position::End),
                prev: None,
                job: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"type": "event", "feed": "f", "epoch": 9, "rev": 3, "change": {
                "op": "publish", "id": "x", "item": {"title": "t"}, "position": "end"
            }})
        );
    }

    #[test]
    fn a_batchs_acks_and_outcomes_frames_have_the_documented_shape() {
        let acks = json!({"type": "acks", "ids": ["c5f1:8", "c5f1:9"]});
        let frame: ServerMessage = serde_json::from_value(acks.clone()).unwrap();
        assert_eq!(
            frame,
            ServerMessage::Acks {
                ids: vec![ChangeId("c5f1:8".into()), ChangeId("c5f1:9".into())]
            }
        );
        assert_eq!(serde_json::to_value(&frame).unwrap(), acks);
        let outcomes = json!({"type": "outcomes", "outcomes": [
            {"id": "c5f1:8", "outcome": {"status": "accepted", "result": null,
                "revs": {"f": 42}, "epochs": {"f": 7}}},
            {"id": "c5f1:9", "outcome": {"status": "rejected", "code": "forbidden",
                "message": "no"}}
        ]});
        let frame: ServerMessage = serde_json::from_value(outcomes.clone()).unwrap();
        let ServerMessage::Outcomes { outcomes: list } = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(list.len(), 2);
        assert!(matches!(list[1].outcome, Outcome::Rejected { .. }));
        assert_eq!(serde_json::to_value(&frame).unwrap(), outcomes);
    }

    #[test]
    fn batch_frames_have_the_documented_shape_and_length() {
        let change = |seq: u64, item: Value| ChangeRequest {
            id: ChangeId::new("c1", seq),
            op: Operation::Publish {
                feed: FeedName::new("f").unwrap(),
                id: ItemId::new(format!("i{seq}")).unwrap(),
                item,
                position: None,
            },
            base: BTreeMap::from([(FeedName::new("f").unwrap(), Base::at(9, 4))]),
        };
        let changes = vec![change(1, json!({"a": 1})), change(22, json!("long text"))];
        let batch = ClientMessage::SubmitBatch {
            changes: changes.clone(),
        };
        let wire = serde_json::to_string(&batch).unwrap();
        assert!(wire.starts_with(r#"{"type":"submit_batch","changes":[{"id":"c1:1","#));
        assert_eq!(
            batch_frame_len(changes.iter().map(ChangeRequest::submit_frame_len)),
            wire.len()
        );
        assert_eq!(batch.submitted(), &changes[..]);
        let empty = ClientMessage::SubmitBatch { changes: vec![] };
        assert_eq!(
            batch_frame_len([]),
            serde_json::to_string(&empty).unwrap().len()
        );
        let one = ClientMessage::SubmitBatch {
            changes: vec![change(3, json!(null))],
        };
        assert_eq!(
            batch_frame_len([change(3, json!(null)).submit_frame_len()]),
            serde_json::to_string(&one).unwrap().len()
        );
    }

    #[test]
    fn server_state_frames_have_the_documented_shape() {
        for (state, name) in [
            (ServerState::Available, "available"),
            (ServerState::Unavailable, "unavailable"),
        ] {
            let frame = ServerMessage::Server { state };
            let wire = json!({"type": "server", "state": name});
            assert_eq!(serde_json::to_value(&frame).unwrap(), wire);
            assert_eq!(
                serde_json::from_value::<ServerMessage>(wire).unwrap(),
                frame
            );
            assert_eq!(state.as_str(), name);
        }
    }

    #[test]
    fn invalid_names_fail_decoding() {
        let bad = serde_json::from_value::<ClientMessage>(json!({
            "type": "subscribe", "pattern": "team:\u{0}"
        }));
        assert!(bad.is_err());
    }
}
