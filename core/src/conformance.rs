//! The conformance suite every [`Store`] implementation must pass.
//!
//! Each [`Case`] is a list of batches and the state that loading must give
//! back after applying them (computed by the reference, [`StoredState::apply`]).
//! The cases are plain data so that a store with an asynchronous API (the
//! browser's IndexedDB store) can run them with its own loop: for each case,
//! open a fresh store, apply the batches in order, load, and compare with
//! [`Case::expected`]. Synchronous stores call [`run_all`].

use std::collections::BTreeMap;

use serde_json::json;
use thoonk_protocol::{
    Base, ChangeId, ErrorCode, FeedName, FeedPattern, ItemId, Operation, Position, ServerMessage,
};

use crate::config::Config;
use crate::core::SyncCore;
use crate::outcome::{ChangeOutcome, ConflictCase, OutcomeRecord, ResolutionKind};
use crate::store::{
    AcceptedRecord, ClientMeta, FeedHead, OutboxRecord, Store, StoreBatch, StoreWrite, StoredItem,
    StoredState,
};

/// One conformance case.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    /// The batches to apply, in order, each in one transaction.
    pub batches: Vec<StoreBatch>,
}

impl Case {
    /// The state a load must return after all batches were applied.
    pub fn expected(&self) -> StoredState {
        let mut state = StoredState::default();
        for batch in &self.batches {
            state.apply(batch);
        }
        state
    }
}

/// A store failed a case.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("store conformance case `{case}` failed: {detail}")]
pub struct Failure {
    /// The case's name.
    pub case: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// Runs one case on a fresh store: applies every batch, loads, compares; then
/// loads a second time to check that loading changes nothing.
pub fn run_case<S: Store>(store: &mut S, case: &Case) -> Result<(), Failure> {
    let fail = |detail: String| Failure {
        case: case.name,
        detail,
    };
    let empty = store
        .load()
        .map_err(|e| fail(format!("loading a fresh store: {e}")))?;
    if empty != StoredState::default() {
        return Err(fail(format!("a fresh store is not empty: {empty:?}")));
    }
    for (i, batch) in case.batches.iter().enumerate() {
        store
            .apply(batch)
            .map_err(|e| fail(format!("batch {i} failed: {e}")))?;
    }
    let expected = case.expected();
    for round in ["first", "second"] {
        let loaded = store
            .load()
            .map_err(|e| fail(format!("{round} load failed: {e}")))?;
        if loaded != expected {
            return Err(fail(format!(
                "{round} load differs\n  expected: {expected:?}\n  loaded:   {loaded:?}"
            )));
        }
    }
    Ok(())
}

/// Runs every case, each on a store fresh from `make`.
pub fn run_all<S: Store>(make: impl Fn() -> S) -> Result<(), Failure> {
    for case in cases() {
        run_case(&mut make(), &case)?;
    }
    Ok(())
}

fn feed(name: &str) -> FeedName {
    FeedName::new(name).expect("valid feed name")
}

fn item_id(id: &str) -> ItemId {
    ItemId::new(id).expect("valid item id")
}

fn item(feed_name: &str, id: &str, value: serde_json::Value, rev: u64, order: u64) -> StoreWrite {
    StoreWrite::PutItem {
        item: StoredItem {
            feed: feed(feed_name),
            id: item_id(id),
            value,
            rev,
            order,
        },
    }
}

fn head(feed_name: &str, epoch: u64, rev: u64) -> StoreWrite {
    StoreWrite::PutFeed {
        feed: feed(feed_name),
        head: FeedHead { epoch, rev },
    }
}

fn batch(writes: Vec<StoreWrite>) -> StoreBatch {
    StoreBatch { writes }
}

fn outbox_entry(seq: u64, op: Operation) -> OutboxRecord {
    // Odd entries keep a bare revision, as records stored before bases
    // carried their epoch: a store must give both shapes back.
    let base = op
        .feed()
        .map(|f| {
            let base = if seq % 2 == 0 {
                Base::at(1_764_440_000_123_456 + seq, seq * 3)
            } else {
                Base::Rev(seq * 3)
            };
            BTreeMap::from([(f.clone(), base)])
        })
        .unwrap_or_default();
    OutboxRecord {
        seq,
        id: ChangeId::new("client-1", seq),
        wire_id: ChangeId::new("client-1", seq),
        op,
        base,
        created_at: 1_700_000_000_000 + seq,
        conflicts: 0,
        resolution: None,
        accepted: None,
    }
}

/// Every case of the suite.
pub fn cases() -> Vec<Case> {
    let tasks = "team:1:tasks";
    vec![
        Case {
            name: "meta and subscriptions are replaced and deleted",
            batches: vec![
                batch(vec![
                    StoreWrite::PutMeta {
                        meta: ClientMeta {
                            client_id: "client-1".into(),
                            next_seq: 1,
                        },
                    },
                    StoreWrite::PutSubscription {
                        pattern: FeedPattern::new("team:1:*").unwrap(),
                    },
                    StoreWrite::PutSubscription {
                        pattern: FeedPattern::new("team:2:tasks").unwrap(),
                    },
                ]),
                batch(vec![
                    StoreWrite::PutMeta {
                        meta: ClientMeta {
                            client_id: "client-1".into(),
                            next_seq: 42,
                        },
                    },
                    StoreWrite::DeleteSubscription {
                        pattern: FeedPattern::new("team:2:tasks").unwrap(),
                    },
                ]),
            ],
        },
        Case {
            name: "items are keyed by feed and id and keep value, rev and order",
            batches: vec![
                batch(vec![
                    head(tasks, 7, 3),
                    item(tasks, "b", json!({"title": "b", "tags": ["x"]}), 2, 1 << 62),
                    item(tasks, "a", json!("plain text"), 1, (1 << 62) + (1 << 32)),
                    item("team:2:tasks", "a", json!(null), 3, 5),
                ]),
                batch(vec![
                    head(tasks, 7, 5),
                    item(tasks, "b", json!({"title": "b2"}), 5, 17),
                    StoreWrite::DeleteItem {
                        feed: feed(tasks),
                        id: item_id("a"),
                    },
                    StoreWrite::DeleteItem {
                        feed: feed(tasks),
                        id: item_id("never-there"),
                    },
                ]),
            ],
        },
        Case {
            name: "clearing a feed removes its head and items only",
            batches: vec![
                batch(vec![
                    head("a", 1, 1),
                    head("a:b", 1, 1),
                    head("a\u{1}", 1, 1),
                    item("a", "x", json!(1), 1, 1),
                    item("a:b", "x", json!(2), 1, 1),
                    item("a\u{1}", "x", json!(3), 1, 1),
                ]),
                batch(vec![StoreWrite::ClearFeed { feed: feed("a") }]),
            ],
        },
        Case {
            name: "a reset clears and refills a feed in one batch",
            batches: vec![
                batch(vec![
                    head(tasks, 1, 9),
                    item(tasks, "old", json!(1), 9, 1),
                    item(tasks, "kept", json!(1), 8, 2),
                ]),
                batch(vec![
                    StoreWrite::ClearFeed { feed: feed(tasks) },
                    head(tasks, 2, 4),
                    item(tasks, "kept", json!(2), 4, 1 << 62),
                    item(tasks, "new", json!(3), 3, (1 << 62) + (1 << 32)),
                ]),
            ],
        },
        Case {
            name: "writes of one batch take effect in order",
            batches: vec![batch(vec![
                head(tasks, 1, 1),
                item(tasks, "x", json!(1), 1, 1),
                StoreWrite::DeleteItem {
                    feed: feed(tasks),
                    id: item_id("x"),
                },
                StoreWrite::DeleteItem {
                    feed: feed(tasks),
                    id: item_id("y"),
                },
                item(tasks, "y", json!(2), 1, 2),
                StoreWrite::PutOutbox {
                    entry: outbox_entry(
                        1,
                        Operation::Retract {
                            feed: feed(tasks),
                            id: item_id("y"),
                        },
                    ),
                },
                StoreWrite::DeleteOutbox { seq: 1 },
            ])],
        },
        Case {
            name: "the outbox survives with every kind of operation",
            batches: vec![
                batch(vec![
                    StoreWrite::PutOutbox {
                        entry: outbox_entry(
                            1,
                            Operation::Publish {
                                feed: feed(tasks),
                                id: item_id("t1"),
                                item: json!({"title": "write docs", "done": false, "n": 1.5}),
                                position: Some(Position::After(item_id("t0"))),
                            },
                        ),
                    },
                    StoreWrite::PutOutbox {
                        entry: outbox_entry(
                            2,
                            Operation::Edit {
                                feed: feed(tasks),
                                id: item_id("t1"),
                                item: json!({"title": "write the docs"}),
                            },
                        ),
                    },
                    StoreWrite::PutOutbox {
                        entry: outbox_entry(
                            3,
                            Operation::Move {
                                feed: feed(tasks),
                                id: item_id("t1"),
                                position: Position::Begin,
                            },
                        ),
                    },
                    StoreWrite::PutOutbox {
                        entry: outbox_entry(
                            4,
                            Operation::Action {
                                name: "delegate_task".into(),
                                payload: json!({"task": "t1", "to": [7, 8], "deep": {"a": null}}),
                            },
                        ),
                    },
                    StoreWrite::PutOutbox {
                        entry: outbox_entry(
                            5,
                            Operation::Retract {
                                feed: feed(tasks),
                                id: item_id("t9"),
                            },
                        ),
                    },
                ]),
                batch(vec![
                    StoreWrite::DeleteOutbox { seq: 2 },
                    StoreWrite::PutOutbox {
                        entry: OutboxRecord {
                            wire_id: ChangeId::new("client-1", 6),
                            conflicts: 1,
                            resolution: Some(ResolutionKind::Merged),
                            accepted: Some(AcceptedRecord {
                                revs: BTreeMap::from([(feed(tasks), 12)]),
                                epochs: BTreeMap::from([(feed(tasks), 3)]),
                            }),
                            ..outbox_entry(
                                1,
                                Operation::Publish {
                                    feed: feed(tasks),
                                    id: item_id("t1"),
                                    item: json!({"title": "merged"}),
                                    position: None,
                                },
                            )
                        },
                    },
                ]),
            ],
        },
        Case {
            name: "every kind of outcome is kept until deleted",
            batches: vec![
                batch(outcome_writes()),
                batch(vec![StoreWrite::DeleteOutcome {
                    id: ChangeId::new("client-1", 2),
                }]),
            ],
        },
        Case {
            name: "unusual ids and values round-trip",
            batches: vec![batch(vec![
                head("team:ü:✓", u64::MAX, u64::MAX - 1),
                item(
                    "team:ü:✓",
                    "🦀 id with spaces",
                    json!({"big": u64::MAX, "neg": -1, "f": 0.1, "s": "\u{0}\n\"", "e": {}, "l": []}),
                    1,
                    u64::MAX,
                ),
                item("team:ü:✓", "0", json!(false), 0, 0),
            ])],
        },
        core_session_case(),
    ]
}

fn outcome_writes() -> Vec<StoreWrite> {
    let op = Operation::Edit {
        feed: feed("f"),
        id: item_id("i"),
        item: json!({"v": 1}),
    };
    let outcomes = [
        ChangeOutcome::Accepted {
            result: json!({"ok": true}),
            revs: BTreeMap::from([(feed("f"), 4)]),
        },
        ChangeOutcome::Rejected {
            code: ErrorCode::Forbidden,
            message: "not yours".into(),
        },
        ChangeOutcome::ConflictResolved {
            resolution: ResolutionKind::KeptTheirs,
            result: json!(null),
            revs: BTreeMap::new(),
        },
        ChangeOutcome::Unresolved {
            conflict: ConflictCase {
                change: ChangeId::new("client-1", 4),
                feed: feed("f"),
                id: item_id("i"),
                base: Some(json!({"v": 0})),
                unknown_base: false,
                ours: Some(json!({"v": 1})),
                theirs: None,
                rev: 9,
            },
            reason: "both sides changed the whole item".into(),
        },
    ];
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| StoreWrite::PutOutcome {
            outcome: OutcomeRecord {
                id: ChangeId::new("client-1", i as u64 + 1),
                seq: i as u64 + 1,
                wire_id: ChangeId::new("client-1", i as u64 + 11),
                op: op.clone(),
                outcome,
                at: 1_000 + i as u64,
            },
        })
        .collect()
}

/// The batches a real core session emits: subscribe, snapshot, live events,
/// local changes, an accepted and a rejected outcome.
fn core_session_case() -> Case {
    let mut batches = Vec::new();
    let mut core = SyncCore::open(
        Config::new("client-1", "token", 1),
        StoredState::default(),
        0,
    )
    .expect("a fresh core opens");
    let mut collect = |core: &mut SyncCore| {
        if let Some(batch) = core.take_effects().store {
            batches.push(batch);
        }
    };
    let tasks = feed("team:1:tasks");
    let pattern = FeedPattern::new("team:1:*").unwrap();
    core.subscribe(pattern.clone(), 1).expect("subscribe");
    collect(&mut core);
    core.connected(2).expect("connected");
    core.handle_server(
        ServerMessage::Welcome {
            protocol: thoonk_protocol::PROTOCOL_VERSION,
            user: "u".into(),
            ledger_window_ms: None,
        },
        3,
    )
    .expect("welcome");
    collect(&mut core);
    let snapshot = ServerMessage::Snapshot {
        feed: tasks.clone(),
        epoch: 5,
        rev: 2,
        items: vec![
            thoonk_protocol::Item {
                id: item_id("a"),
                item: json!({"t": "a"}),
                rev: 1,
            },
            thoonk_protocol::Item {
                id: item_id("b"),
                item: json!({"t": "b"}),
                rev: 2,
            },
        ],
    };
    core.handle_server(
        ServerMessage::Subscribed {
            pattern,
            feeds: vec![tasks.clone()],
        },
        4,
    )
    .expect("subscribed");
    core.handle_server(snapshot, 5).expect("snapshot");
    collect(&mut core);
    let edit = core
        .edit(tasks.clone(), item_id("a"), json!({"t": "a2"}), 6)
        .expect("edit");
    let retract = core
        .retract(tasks.clone(), item_id("b"), 7)
        .expect("retract");
    collect(&mut core);
    core.handle_server(
        ServerMessage::Outcome {
            id: edit,
            outcome: thoonk_protocol::Outcome::Accepted {
                result: json!(null),
                revs: BTreeMap::from([(tasks.clone(), 3)]),
                epochs: BTreeMap::new(),
            },
        },
        8,
    )
    .expect("outcome");
    collect(&mut core);
    core.handle_server(
        ServerMessage::Event {
            feed: tasks.clone(),
            epoch: 5,
            rev: 3,
            change: thoonk_protocol::Change {
                op: thoonk_protocol::ChangeOp::Edit,
                id: item_id("a"),
                item: Some(json!({"t": "a2"})),
                position: Some(Position::End),
                prev: Some(json!({"t": "a"})),
                job: Some("client-1:1".into()),
            },
        },
        9,
    )
    .expect("event");
    core.handle_server(
        ServerMessage::Outcome {
            id: retract,
            outcome: thoonk_protocol::Outcome::Rejected {
                code: ErrorCode::Forbidden,
                message: "no".into(),
            },
        },
        10,
    )
    .expect("outcome");
    collect(&mut core);
    Case {
        name: "the batches of a real session round-trip",
        batches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, MemoryStoreError};

    #[test]
    fn the_memory_store_conforms() {
        run_all(MemoryStore::new).unwrap();
    }

    #[test]
    fn the_session_case_covers_the_whole_state() {
        let expected = core_session_case().expected();
        assert!(expected.meta.is_some());
        assert_eq!(expected.subscriptions.len(), 1);
        assert_eq!(expected.items.len(), 2);
        assert!(expected.outbox.is_empty(), "both changes are settled");
        assert_eq!(expected.outcomes.len(), 2);
    }

    /// A store that forgets everything: the suite must catch it.
    struct Forgetful;

    impl Store for Forgetful {
        type Error = MemoryStoreError;
        fn load(&mut self) -> Result<StoredState, Self::Error> {
            Ok(StoredState::default())
        }
        fn apply(&mut self, _: &StoreBatch) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn a_store_that_drops_writes_fails() {
        let err = run_all(|| Forgetful).unwrap_err();
        assert!(err.detail.contains("first load differs"), "{err}");
    }

    #[test]
    fn a_quota_failure_writes_nothing() {
        let mut store = MemoryStore::with_quota(1);
        let case = &cases()[1];
        let err = store.apply(&case.batches[0]).unwrap_err();
        assert_eq!(err, MemoryStoreError::QuotaExceeded { limit: 1 });
        assert_eq!(store.load().unwrap(), StoredState::default());
    }
}
