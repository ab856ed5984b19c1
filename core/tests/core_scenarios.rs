//! Scenarios that drive one `SyncCore` by hand and check its effects.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use thoonk_protocol::{
    Base, Change, ChangeId, ChangeOp, ClientMessage, ErrorCode, FeedName, FeedPattern, Item,
    ItemId, Operation, Outcome, ServerMessage, ServerState, PROTOCOL_VERSION,
};
use thoonk_sync_core::{
    ChangeOutcome, Config, CoreError, Effects, FnResolver, ItemState, MemoryStore, Notification,
    Resolution, ResolutionKind, ResolverError, Status, StorageFault, Store, StoreWrite,
    StoredState, SyncCore,
};

fn feed() -> FeedName {
    FeedName::new("team:1:tasks").unwrap()
}

fn id(s: &str) -> ItemId {
    ItemId::new(s).unwrap()
}

/// A core, its store, and helpers to feed it and carry out its effects.
struct Harness {
    core: SyncCore,
    store: MemoryStore,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_outbox(Vec::new())
    }

    fn reopen(&mut self) -> Effects {
        let state = self.store.load().unwrap();
        self.core = SyncCore::open(Config::new("other-id", "tok", 8), state, self.now).unwrap();
        self.effects()
    }

    fn effects(&mut self) -> Effects {
        let fx = self.core.take_effects();
        if let Some(batch) = &fx.store {
            self.store.apply(batch).unwrap();
        }
        fx
    }

    fn server(&mut self, msg: ServerMessage) -> Effects {
        self.now += 1;
        self.core.handle_server(msg, self.now).unwrap();
        self.effects()
    }

    /// The server's `outcome` frame for change `id`.
    fn outcome(&mut self, id: ChangeId, outcome: Outcome) -> Effects {
        self.server(ServerMessage::Outcome { id, outcome })
    }

    /// Connects, subscribes and loads a snapshot with items `a` (rev 1) and `b` (rev 2).
    fn online(&mut self) -> Effects {
        self.core
            .subscribe(FeedPattern::new("team:1:*").unwrap(), 0)
            .unwrap();
        self.effects();
        self.core.connected(1).unwrap();
        let fx = self.effects();
        assert!(matches!(fx.send[..], [ClientMessage::Hello { .. }]));
        let fx = self.server(ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            user: "u".into(),
            ledger_window_ms: None,
        });
        assert!(matches!(fx.send[0], ClientMessage::Subscribe { .. }));
        self.server(ServerMessage::Subscribed {
            pattern: FeedPattern::new("team:1:*").unwrap(),
            feeds: vec![feed()],
        });
        self.server(ServerMessage::Snapshot {
            feed: feed(),
            epoch: 1,
            rev: 2,
            items: vec![
                Item {
                    id: id("a"),
                    item: json!({"title": "a", "done": false}),
                    rev: 1,
                },
                Item {
                    id: id("b"),
                    item: json!({"title": "b"}),
                    rev: 2,
                },
            ],
        })
    }

    fn edit(&mut self, item: &str, value: Value) -> (ChangeId, Effects) {
        self.now += 1;
        let change = self.core.edit(feed(), id(item), value, self.now).unwrap();
        (change, self.effects())
    }
}

fn submitted(fx: &Effects) -> Vec<(ChangeId, Operation, BTreeMap<FeedName, Base>)> {
    fx.send
        .iter()
        .flat_map(ClientMessage::submitted)
        .map(|change| (change.id.clone(), change.op.clone(), change.base.clone()))
        .collect()
}

fn outcomes(fx: &Effects) -> Vec<(ChangeId, ChangeOutcome)> {
    fx.notify
        .iter()
        .filter_map(|n| match n {
            Notification::Outcome { change, outcome } => Some((change.clone(), outcome.clone())),
            _ => None,
        })
        .collect()
}

fn state_of(core: &SyncCore, item: &str) -> ItemState {
    core.view(&feed())
        .into_iter()
        .find(|v| v.id == id(item))
        .map(|v| v.state)
        .expect("the item is in the view")
}

#[test]
fn a_change_is_stored_with_its_overlay_before_it_is_sent() {
    let mut h = Harness::new();
    h.online();
    let (change, fx) = h.edit("a", json!({"title": "A", "done": false}));
    assert_eq!(change, ChangeId::new("c1", 1));
    let batch = fx.store.as_ref().expect("the outbox entry is written");
    assert!(batch
        .writes
        .iter()
        .any(|w| matches!(w, StoreWrite::PutOutbox { entry } if entry.id == change)));
    assert!(batch
        .writes
        .iter()
        .any(|w| matches!(w, StoreWrite::PutMeta { meta } if meta.next_seq == 2)));
    let sent = submitted(&fx);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].2,
        BTreeMap::from([(feed(), Base::at(1, 2))]),
        "the base is the mirrored epoch and rev"
    );
    assert!(fx
        .notify
        .iter()
        .any(|n| matches!(n, Notification::Items { changed, .. }
        if changed[0].value == json!({"title": "A", "done": false}))));
    assert_eq!(
        state_of(&h.core, "a"),
        ItemState::Pending {
            changes: vec![change.clone()]
        }
    );

    h.server(ServerMessage::Ack { id: change.clone() });
    let fx = h.outcome(
        change.clone(),
        Outcome::Accepted {
            result: json!(null),
            revs: BTreeMap::from([(feed(), 3)]),
            epochs: BTreeMap::new(),
        },
    );
    assert!(matches!(&outcomes(&fx)[..], [(c, ChangeOutcome::Accepted { .. })] if c == &change));
    assert!(
        matches!(state_of(&h.core, "a"), ItemState::Pending { .. }),
        "pending until the event shows it"
    );
    h.server(ServerMessage::Event {
        feed: feed(),
        epoch: 1,
        rev: 3,
        change: Change {
            op: ChangeOp::Edit,
            id: id("a"),
            item: Some(json!({"title": "A", "done": false})),
            position: None,
            prev: None,
            job: Some(change.0.clone()),
        },
    });
    assert_eq!(state_of(&h.core, "a"), ItemState::Confirmed);
    assert!(h.core.pending().is_empty());
    assert_eq!(h.store.state(), &h.core.stored_state());
}

#[test]
fn the_server_state_is_shown_apart_from_the_connection_and_resets_with_a_session() {
    let mut h = Harness::new();
    h.online();
    assert_eq!(h.core.server_state(), ServerState::Available);
    let fx = h.server(ServerMessage::Server {
        state: ServerState::Unavailable,
    });
    assert_eq!(h.core.server_state(), ServerState::Unavailable);
    assert_eq!(h.core.status(), &Status::Online, "still connected");
    assert!(fx.notify.contains(&Notification::Server {
        state: ServerState::Unavailable
    }));
    // Said again: no second notification.
    let fx = h.server(ServerMessage::Server {
        state: ServerState::Unavailable,
    });
    assert!(!fx
        .notify
        .iter()
        .any(|n| matches!(n, Notification::Server { .. })));
    // A change made meanwhile stays pending.
    let (change, _) = h.edit("x", json!(1));
    assert!(h.core.pending().iter().any(|p| p.wire_id == change));
    let fx = h.server(ServerMessage::Server {
        state: ServerState::Available,
    });
    assert!(fx.notify.contains(&Notification::Server {
        state: ServerState::Available
    }));
    // A new session starts available: the server repeats it if not.
    h.server(ServerMessage::Server {
        state: ServerState::Unavailable,
    });
    h.core.disconnected(h.now).unwrap();
    h.effects();
    let at = h.core.poll_timeout().expect("a reconnect is scheduled");
    h.core.handle_timeout(at).unwrap();
    h.effects();
    h.core.connected(at).unwrap();
    h.effects();
    let fx = h.server(ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        user: "u".into(),
        ledger_window_ms: None,
    });
    assert_eq!(h.core.server_state(), ServerState::Available);
    assert!(fx.notify.contains(&Notification::Server {
        state: ServerState::Available
    }));
}

#[test]
fn nothing_is_sent_before_welcome_and_everything_after_a_reconnect() {
    let mut h = Harness::new();
    let (_, fx) = h.edit("x", json!(1));
    assert!(submitted(&fx).is_empty(), "offline: queued only");
    h.online();
    h.core.disconnected(h.now).unwrap();
    let fx = h.effects();
    assert_eq!(h.core.status(), &Status::Offline);
    assert!(fx.notify.contains(&Notification::Status {
        status: Status::Offline
    }));
    let at = h.core.poll_timeout().expect("a reconnect is scheduled");
    h.core.handle_timeout(at).unwrap();
    assert!(h.effects().connect);
    h.core.connected(at).unwrap();
    h.effects();
    let fx = h.server(ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        user: "u".into(),
        ledger_window_ms: None,
    });
    let known = fx.send.iter().find_map(|m| match m {
        ClientMessage::Subscribe { known, .. } => Some(known.clone()),
        _ => None,
    });
    assert_eq!(
        known.unwrap()[&feed()].rev,
        2,
        "resubscribes from its position"
    );
    assert_eq!(
        submitted(&fx).len(),
        1,
        "the unconfirmed change is sent again"
    );
}

#[test]
fn a_conflict_is_merged_and_resubmitted_against_the_new_revision() {
    let mut h = Harness::new();
    h.online();
    let (change, _) = h.edit("a", json!({"title": "mine", "done": false}));
    let fx = h.outcome(
        change.clone(),
        known_base_conflict(
            "a",
            json!({"title": "a", "done": false}),
            json!({"title": "a", "done": true}),
            5,
        ),
    );
    let sent = submitted(&fx);
    assert_eq!(sent.len(), 1);
    let (wire, op, base) = &sent[0];
    assert_ne!(wire, &change, "a resubmission has a fresh id");
    assert_eq!(base, &BTreeMap::from([(feed(), Base::at(1, 5))]));
    assert!(
        matches!(op, Operation::Edit { item, .. } if item == &json!({"title": "mine", "done": true}))
    );
    assert!(outcomes(&fx).is_empty(), "not settled yet");
    let fx = h.outcome(
        wire.clone(),
        Outcome::Accepted {
            result: json!(null),
            revs: BTreeMap::from([(feed(), 6)]),
            epochs: BTreeMap::new(),
        },
    );
    assert!(matches!(
        &outcomes(&fx)[..],
        [(c, ChangeOutcome::ConflictResolved { resolution: ResolutionKind::Merged, .. })] if c == &change
    ));
}

#[test]
fn a_conflict_on_the_same_field_is_unresolved_and_marks_the_item() {
    let mut h = Harness::new();
    h.online();
    let (change, _) = h.edit("a", json!({"title": "mine", "done": false}));
    let fx = h.outcome(
        change.clone(),
        known_base_conflict(
            "a",
            json!({"title": "a", "done": false}),
            json!({"title": "theirs", "done": false}),
            5,
        ),
    );
    assert!(submitted(&fx).is_empty());
    let [(_, ChangeOutcome::Unresolved { conflict, reason })] = &outcomes(&fx)[..] else {
        panic!("expected an unresolved outcome: {fx:?}")
    };
    assert_eq!(conflict.ours, Some(json!({"title": "mine", "done": false})));
    assert!(reason.contains("/title"), "{reason}");
    assert_eq!(
        state_of(&h.core, "a"),
        ItemState::Rejected {
            change: change.clone()
        }
    );

    let fx = h.reopen();
    assert_eq!(h.core.client_id(), "c1", "the stored client id wins");
    assert!(
        outcomes(&fx).iter().any(|(c, _)| c == &change),
        "stored outcomes are delivered again after a restart"
    );
    assert!(matches!(state_of(&h.core, "a"), ItemState::Rejected { .. }));
    h.core.dismiss_outcome(&change, h.now).unwrap();
    h.effects();
    assert_eq!(state_of(&h.core, "a"), ItemState::Confirmed);
    assert!(h.store.state().outcomes.is_empty());
}

#[test]
fn the_app_resolver_decides_and_its_failure_is_reported() {
    let mut h = Harness::new();
    h.online();
    h.core.set_resolver(Box::new(FnResolver(
        |case: &thoonk_sync_core::ConflictCase| match case.id.as_str() {
            "a" => Ok(Resolution::DropOurs),
            "b" => Ok(Resolution::Merged(Some(json!({"title": "both"})))),
            _ => Err(ResolverError("cannot decide".into())),
        },
    )));
    let conflict = |item: &str| known_base_conflict(item, json!({}), json!({"title": "theirs"}), 9);
    let (a, _) = h.edit("a", json!({"title": "mine"}));
    let fx = h.outcome(a, conflict("a"));
    assert!(matches!(
        &outcomes(&fx)[..],
        [(
            _,
            ChangeOutcome::ConflictResolved {
                resolution: ResolutionKind::DroppedOurs,
                ..
            }
        )]
    ));
    let (b, _) = h.edit("b", json!({"title": "mine"}));
    let fx = h.outcome(b, conflict("b"));
    assert!(
        matches!(&submitted(&fx)[..], [(_, Operation::Edit { item, .. }, _)] if item == &json!({"title": "both"}))
    );
    h.now += 1;
    let c = h
        .core
        .publish(feed(), id("c"), json!({"title": "mine"}), None, h.now)
        .unwrap();
    h.effects();
    let err = h
        .core
        .handle_server(
            ServerMessage::Outcome {
                id: c.clone(),
                outcome: conflict("c"),
            },
            h.now,
        )
        .unwrap_err();
    assert!(matches!(err, CoreError::Resolver(_)), "{err}");
    let fx = h.effects();
    assert!(matches!(&outcomes(&fx)[..], [(id, ChangeOutcome::Unresolved { .. })] if id == &c));
}

#[test]
fn a_rejection_never_blocks_another_feed_and_lanes_keep_order() {
    let mut h = Harness::new();
    h.online();
    let (first, fx) = h.edit("a", json!({"v": 1}));
    assert_eq!(submitted(&fx).len(), 1);
    let (_, fx) = h.edit("b", json!({"v": 2}));
    assert!(submitted(&fx).is_empty(), "same feed: waits for the first");
    h.now += 1;
    let action = h
        .core
        .action("archive", json!({"all": true}), h.now)
        .unwrap();
    let fx = h.effects();
    assert!(
        matches!(&submitted(&fx)[..], [(id, Operation::Action { .. }, base)] if id == &action && base.is_empty()),
        "another lane goes at once"
    );
    let fx = h.outcome(
        first,
        Outcome::Rejected {
            code: ErrorCode::Forbidden,
            message: "no".into(),
        },
    );
    assert_eq!(submitted(&fx).len(), 1, "the lane moves on");
    assert!(matches!(state_of(&h.core, "a"), ItemState::Rejected { .. }));
}

#[test]
fn a_newer_protocol_stops_the_core() {
    let mut h = Harness::new();
    h.core.connected(1).unwrap();
    h.effects();
    let err = h
        .core
        .handle_server(
            ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION + 1,
                user: "u".into(),
                ledger_window_ms: None,
            },
            2,
        )
        .unwrap_err();
    assert!(matches!(err, CoreError::ProtocolMismatch { .. }));
    let fx = h.effects();
    assert!(fx.close);
    assert!(matches!(h.core.status(), Status::Stopped { .. }));
    assert_eq!(h.core.poll_timeout(), None, "no reconnect");
    h.core.connected(3).unwrap();
    assert!(h.effects().send.is_empty(), "a stopped core says nothing");
}

#[test]
fn an_unauthorized_token_waits_for_a_new_one() {
    let mut h = Harness::new();
    h.online();
    let fx = h.server(ServerMessage::Error {
        code: ErrorCode::Unauthorized,
        message: "expired".into(),
    });
    assert!(fx.close);
    assert_eq!(h.core.status(), &Status::Unauthorized);
    assert_eq!(h.core.poll_timeout(), None);
    h.core.set_token("fresh", 100).unwrap();
    h.effects();
    let at = h.core.poll_timeout().unwrap();
    h.core.handle_timeout(at).unwrap();
    assert!(h.effects().connect);
    h.core.connected(at).unwrap();
    let fx = h.effects();
    assert!(matches!(&fx.send[..], [ClientMessage::Hello { token, .. }] if token == "fresh"));
}

#[test]
fn a_failed_batch_stops_the_core_and_the_store_keeps_the_outbox() {
    let mut h = Harness::new();
    h.online();
    let (kept, _) = h.edit("a", json!({"v": 1}));
    h.now += 1;
    h.core
        .edit(feed(), id("b"), json!({"v": 2}), h.now)
        .unwrap();
    let fx = h.core.take_effects();
    assert!(fx.store.is_some(), "this batch is the one that fails");
    assert!(
        submitted(&fx).is_empty(),
        "the same lane waits for the first change"
    );
    h.core.storage_failed("quota exceeded");
    assert!(h.core.take_effects().close);
    assert!(matches!(
        h.core.edit(feed(), id("b"), json!({}), h.now),
        Err(CoreError::Storage(StorageFault::BatchFailed(_)))
    ));
    h.reopen();
    let pending: Vec<ChangeId> = h.core.pending().into_iter().map(|r| r.id).collect();
    assert_eq!(
        pending,
        [kept],
        "what was stored survives; the failed change is gone"
    );
    assert_eq!(h.core.pending_ids(), pending);
    assert_eq!(h.core.pending_len(), pending.len());
    h.now += 1;
    let next = h
        .core
        .edit(feed(), id("b"), json!({"v": 3}), h.now)
        .unwrap();
    assert_eq!(
        next,
        ChangeId::new("c1", 2),
        "the failed change never left the client (its frames are not sent), so its id is free"
    );
}

#[test]
fn a_gap_asks_for_one_replay_and_the_answer_fills_it() {
    let mut h = Harness::new();
    h.online();
    let event = |rev: u64, item: &str| ServerMessage::Event {
        feed: feed(),
        epoch: 1,
        rev,
        change: Change {
            op: ChangeOp::Publish,
            id: id(item),
            item: Some(json!(rev)),
            position: None,
            prev: None,
            job: None,
        },
    };
    let fx = h.server(event(4, "d"));
    let replays: Vec<&ClientMessage> = fx
        .send
        .iter()
        .filter(|m| matches!(m, ClientMessage::Replay { .. }))
        .collect();
    assert_eq!(replays.len(), 1);
    let fx = h.server(event(5, "e"));
    assert!(fx.send.is_empty(), "no second request while one is out");
    h.server(ServerMessage::Changes {
        feed: feed(),
        epoch: 1,
        events: vec![thoonk_protocol::FeedEvent {
            rev: 3,
            change: Change {
                op: ChangeOp::Retract,
                id: id("a"),
                item: None,
                position: None,
                prev: None,
                job: None,
            },
        }],
    });
    let ids: Vec<String> = h
        .core
        .view(&feed())
        .iter()
        .map(|v| v.id.to_string())
        .collect();
    assert_eq!(ids, ["b", "d", "e"]);
    assert_eq!(h.core.position(&feed()).unwrap().rev, 5);
    assert_eq!(h.store.state(), &h.core.stored_state());
    let reloaded = StoredState::clone(h.store.state());
    assert_eq!(reloaded.feed_items(&feed()).len(), 3);
}

#[test]
fn a_change_with_a_chosen_id_is_queued_once_however_often_it_is_given() {
    let mut h = Harness::new();
    h.online();
    let chosen = ChangeId("c1:tab7-1".into());
    let op = Operation::Edit {
        feed: feed(),
        id: id("a"),
        item: json!({"title": "from another tab"}),
    };
    h.now += 1;
    let given = h
        .core
        .change_with_id(chosen.clone(), op.clone(), h.now)
        .unwrap();
    assert_eq!(given, chosen);
    let fx = h.effects();
    assert_eq!(submitted(&fx).len(), 1, "sent under the chosen id");
    assert_eq!(submitted(&fx)[0].0, chosen);

    // Given again while pending (the forwarding tab never heard back): nothing new.
    let again = h
        .core
        .change_with_id(chosen.clone(), op.clone(), h.now)
        .unwrap();
    assert_eq!(again, chosen);
    let fx = h.effects();
    assert!(fx.store.is_none() && fx.send.is_empty());
    assert_eq!(h.core.pending().len(), 1);

    // Given again after its outcome is stored: still nothing new.
    h.outcome(
        chosen.clone(),
        Outcome::Rejected {
            code: ErrorCode::Forbidden,
            message: "no".into(),
        },
    );
    assert!(h.core.pending().is_empty());
    h.core
        .change_with_id(chosen.clone(), op.clone(), h.now)
        .unwrap();
    assert!(h.core.pending().is_empty());
    assert_eq!(h.store.state(), &h.core.stored_state());

    // An id of another client, or a bare prefix, is refused.
    for bad in ["c2:tab7-1", "c1:", "c1", "c1x:1"] {
        let err = h
            .core
            .change_with_id(ChangeId(bad.into()), op.clone(), h.now)
            .unwrap_err();
        assert!(matches!(err, CoreError::Usage(_)), "{bad}: {err}");
    }
}

#[test]
fn a_change_too_large_for_one_frame_is_refused_before_it_is_queued() {
    let mut h = Harness::new();
    h.online();
    let big = |bytes: usize| Operation::Publish {
        feed: feed(),
        id: id("big"),
        item: json!("x".repeat(bytes)),
        position: None,
    };
    h.now += 1;
    let err = h
        .core
        .change(big(thoonk_protocol::MAX_FRAME_BYTES), h.now)
        .unwrap_err();
    assert!(
        matches!(err, CoreError::TooLarge { bytes, limit } if bytes > limit),
        "{err}"
    );
    let fx = h.effects();
    assert!(fx.store.is_none() && fx.send.is_empty(), "nothing queued");
    assert!(h.core.pending().is_empty());
    // Just under the limit it goes out as usual.
    let fits = thoonk_protocol::MAX_FRAME_BYTES - 1_000;
    h.core.change(big(fits), h.now).unwrap();
    let fx = h.effects();
    assert_eq!(submitted(&fx).len(), 1);
}

impl Harness {
    /// A core opened over a store that holds `records` in its outbox.
    fn with_outbox(records: Vec<thoonk_sync_core::OutboxRecord>) -> Self {
        let mut store = MemoryStore::new();
        let writes = records
            .into_iter()
            .map(|entry| StoreWrite::PutOutbox { entry })
            .collect();
        store
            .apply(&thoonk_sync_core::StoreBatch { writes })
            .unwrap();
        let core = SyncCore::open(Config::new("c1", "tok", 7), store.load().unwrap(), 0).unwrap();
        let mut h = Self {
            core,
            store,
            now: 0,
        };
        h.effects();
        h
    }

    /// Subscribes, connects and gets `welcome` naming `window`: the effects
    /// of the `welcome`.
    fn welcome(&mut self, window: Option<u64>) -> Effects {
        self.core
            .subscribe(FeedPattern::new("team:1:*").unwrap(), self.now)
            .unwrap();
        self.effects();
        self.connect(window)
    }

    /// Connects and gets `welcome` naming `window`: its effects.
    fn connect(&mut self, window: Option<u64>) -> Effects {
        self.core.connected(self.now).unwrap();
        self.effects();
        self.server(ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            user: "u".into(),
            ledger_window_ms: window,
        })
    }

    /// Drops the connection, then connects again; the server's `welcome`
    /// names `window` as its exactly-once window.
    /// The connection drops a millisecond later; its effects are dropped.
    fn disconnect(&mut self) {
        self.now += 1;
        self.core.disconnected(self.now).unwrap();
        self.effects();
    }

    fn reconnect(&mut self, window: Option<u64>) -> Effects {
        self.disconnect();
        self.connect(window)
    }
}

/// A conflict outcome on a base the server could not place (another epoch).
/// A `conflict` outcome on a known base, in epoch 1.
fn known_base_conflict(item: &str, base: Value, current: Value, rev: u64) -> Outcome {
    Outcome::Conflict {
        feed: feed(),
        id: id(item),
        base: Some(base),
        current: Some(current),
        unknown_base: false,
        epoch: 1,
        rev,
        history: vec![],
    }
}

fn unknown_base_conflict(item: &str, current: Value, epoch: u64, rev: u64) -> Outcome {
    Outcome::Conflict {
        feed: feed(),
        id: id(item),
        base: None,
        unknown_base: true,
        epoch,
        current: Some(current),
        rev,
        history: vec![],
    }
}

#[test]
fn an_offline_edit_carries_its_epoch_and_an_unknown_base_is_never_merged() {
    let mut h = Harness::new();
    h.online();
    h.disconnect();
    // Offline, on what the client mirrors of epoch 1.
    let (change, _) = h.edit("a", json!(["a", "b", "c"]));
    let fx = h.reconnect(None);
    let sent = submitted(&fx);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].2,
        BTreeMap::from([(feed(), Base::at(1, 2))]),
        "the base names the epoch its revision belongs to"
    );
    // The feed was deleted and recreated meanwhile (epoch 7, rev 1): the
    // server cannot say what the item was at the base.
    let fx = h.outcome(
        change.clone(),
        unknown_base_conflict("a", json!(["a", "b", "d"]), 7, 1),
    );
    assert!(
        submitted(&fx).is_empty(),
        "nothing merged against an empty base: {fx:?}"
    );
    let [(c, ChangeOutcome::Unresolved { conflict, reason })] = &outcomes(&fx)[..] else {
        panic!("expected an unresolved outcome: {fx:?}")
    };
    assert_eq!(c, &change);
    assert!(conflict.unknown_base && conflict.base.is_none());
    assert!(reason.contains("unknown"), "{reason}");
}

#[test]
fn a_resolution_on_an_unknown_base_is_resubmitted_against_the_epoch_the_server_named() {
    let mut h = Harness::new();
    h.online();
    h.core.set_resolver(Box::new(FnResolver(
        |case: &thoonk_sync_core::ConflictCase| {
            assert!(case.unknown_base);
            Ok(Resolution::KeepOurs)
        },
    )));
    let (change, _) = h.edit("a", json!({"title": "mine"}));
    let fx = h.outcome(
        change.clone(),
        unknown_base_conflict("a", json!({"title": "theirs"}), 7, 3),
    );
    let sent = submitted(&fx);
    assert_eq!(sent.len(), 1, "{fx:?}");
    assert_eq!(sent[0].2, BTreeMap::from([(feed(), Base::at(7, 3))]));
}

#[test]
fn an_outbox_record_stored_without_epochs_loads_with_an_unknown_base() {
    let record: thoonk_sync_core::OutboxRecord = serde_json::from_value(json!({
        "seq": 1, "id": "c1:1", "wire_id": "c1:1",
        "op": {"kind": "edit", "feed": "team:1:tasks", "id": "a", "item": {"v": 1}},
        "base": {"team:1:tasks": 2},
        "created_at": 0, "conflicts": 0, "resolution": null, "accepted": null
    }))
    .expect("a record of the earlier format loads");
    assert_eq!(record.base[&feed()], Base::Rev(2));
    let mut h = Harness::with_outbox(vec![record]);
    let fx = h.welcome(None);
    let sent = submitted(&fx);
    assert_eq!(
        sent.iter().map(|s| s.2.clone()).collect::<Vec<_>>(),
        [BTreeMap::from([(feed(), Base::at(0, 2))])],
        "a revision without its epoch is sent as an unknown base (epoch 0), never compared"
    );
    assert_eq!(
        h.store.state().outbox[&1].base[&feed()],
        Base::at(0, 2),
        "the store holds what the core holds"
    );
}

#[test]
fn a_resolved_value_over_the_frame_limit_settles_as_too_large_and_frees_its_lane() {
    let mut h = Harness::new();
    h.online();
    h.core.set_resolver(Box::new(FnResolver(
        |_: &thoonk_sync_core::ConflictCase| {
            Ok(Resolution::Merged(Some(json!(
                "x".repeat(thoonk_protocol::MAX_FRAME_BYTES)
            ))))
        },
    )));
    let (first, _) = h.edit("a", json!({"title": "mine"}));
    let (second, fx) = h.edit("b", json!({"title": "next"}));
    assert!(submitted(&fx).is_empty(), "the lane waits for the first");
    let fx = h.outcome(
        first.clone(),
        known_base_conflict(
            "a",
            json!({"title": "a", "done": false}),
            json!({"title": "theirs"}),
            5,
        ),
    );
    let [(c, ChangeOutcome::Unresolved { reason, .. })] = &outcomes(&fx)[..] else {
        panic!("expected an unresolved outcome: {fx:?}")
    };
    assert_eq!(c, &first);
    assert!(reason.starts_with("too_large"), "{reason}");
    let sent = submitted(&fx);
    assert_eq!(
        sent.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        [second],
        "the oversized value is never sent; the lane moves on"
    );
}

#[test]
fn a_queued_change_over_the_frame_limit_settles_as_too_large_and_frees_its_lane() {
    // Queued by a build that did not measure changes (or under a larger limit).
    let big = thoonk_sync_core::OutboxRecord {
        seq: 1,
        id: ChangeId::new("c1", 1),
        wire_id: ChangeId::new("c1", 1),
        op: Operation::Edit {
            feed: feed(),
            id: id("a"),
            item: json!("x".repeat(thoonk_protocol::MAX_FRAME_BYTES)),
        },
        base: BTreeMap::from([(feed(), Base::at(1, 2))]),
        created_at: 0,
        conflicts: 0,
        resolution: None,
        accepted: None,
    };
    let mut small = big.clone();
    small.seq = 2;
    small.id = ChangeId::new("c1", 2);
    small.wire_id = small.id.clone();
    small.op = Operation::Edit {
        feed: feed(),
        id: id("b"),
        item: json!("small"),
    };
    let mut h = Harness::with_outbox(vec![big, small]);
    let fx = h.welcome(None);
    assert!(
        matches!(
            &outcomes(&fx)[..],
            [(c, ChangeOutcome::Rejected { code: ErrorCode::TooLarge, .. })] if c == &ChangeId::new("c1", 1)
        ),
        "{:?}",
        outcomes(&fx)
    );
    assert_eq!(
        submitted(&fx)
            .iter()
            .map(|s| s.0.clone())
            .collect::<Vec<_>>(),
        [ChangeId::new("c1", 2)],
        "the lane is not blocked"
    );
    assert!(h
        .store
        .state()
        .outcomes
        .contains_key(&ChangeId::new("c1", 1)));
}

#[test]
fn a_change_queued_longer_than_the_ledger_window_is_not_resent_blindly() {
    let mut h = Harness::new();
    h.online();
    let (old, fx) = h.edit("a", json!({"title": "old"}));
    assert_eq!(submitted(&fx).len(), 1, "sent once, its outcome lost");
    // Offline for longer than the server remembers change ids.
    h.disconnect();
    h.now += 60_000;
    let fx = h.reconnect(Some(30_000));
    assert!(
        submitted(&fx).iter().all(|s| s.0 != old),
        "the ledger may have forgotten it: a resend could apply it twice"
    );
    let [(c, ChangeOutcome::Unresolved { reason, conflict })] = &outcomes(&fx)[..] else {
        panic!("expected an unresolved outcome: {fx:?}")
    };
    assert_eq!(c, &old);
    assert!(reason.starts_with("expired"), "{reason}");
    assert_eq!(conflict.ours, Some(json!({"title": "old"})));
    assert!(h.core.pending().is_empty());
    // A fresh change goes out as usual.
    let (fresh, fx) = h.edit("a", json!({"title": "new"}));
    assert_eq!(submitted(&fx)[0].0, fresh);
    // Within the window a change is resent as before.
    let fx = h.reconnect(Some(30_000));
    assert_eq!(submitted(&fx)[0].0, fresh);
}

#[test]
fn a_too_large_error_for_a_queued_change_settles_it_and_frees_its_lane() {
    // A server whose frame limit is below this client's.
    let mut h = Harness::new();
    h.online();
    let (big, fx) = h.edit("a", json!("x".repeat(20_000)));
    let (small, _) = h.edit("b", json!("small"));
    let frame = fx
        .send
        .iter()
        .find(|m| matches!(m, ClientMessage::Submit { .. }))
        .map(|m| serde_json::to_string(m).unwrap())
        .expect("the big change is sent");
    let fx = h.server(ServerMessage::Error {
        code: ErrorCode::TooLarge,
        message: format!(
            "frame of {} bytes exceeds the limit of 16384 bytes",
            frame.len()
        ),
    });
    assert!(
        matches!(
            &outcomes(&fx)[..],
            [(c, ChangeOutcome::Rejected { code: ErrorCode::TooLarge, .. })] if c == &big
        ),
        "{fx:?}"
    );
    assert_eq!(
        submitted(&fx)
            .iter()
            .map(|s| s.0.clone())
            .collect::<Vec<_>>(),
        [small],
        "the lane moves on"
    );
    // An error naming no frame of ours changes nothing.
    let fx = h.server(ServerMessage::Error {
        code: ErrorCode::TooLarge,
        message: "frame of 12 bytes exceeds the limit of 10 bytes".into(),
    });
    assert!(outcomes(&fx).is_empty());
}

#[test]
fn an_offline_lane_goes_out_in_one_batch_and_a_conflict_holds_back_the_rest() {
    let mut h = Harness::new();
    h.online();
    h.disconnect();
    let (c1, _) = h.edit("a", json!({"title": "a1", "done": false}));
    let (c2, _) = h.edit("b", json!({"title": "b1"}));
    let (c3, _) = h.edit("a", json!({"title": "a2", "done": false}));
    h.now += 1;
    h.core.connected(h.now).unwrap();
    h.effects();
    let fx = h.server(ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        user: "u".into(),
        ledger_window_ms: None,
    });
    let batches: Vec<Vec<ChangeId>> = fx
        .send
        .iter()
        .filter(|m| matches!(m, ClientMessage::SubmitBatch { .. }))
        .map(|m| m.submitted().iter().map(|c| c.id.clone()).collect())
        .collect();
    assert_eq!(
        batches,
        [vec![c1.clone(), c2.clone(), c3.clone()]],
        "the lane's queue goes out in one frame, in order"
    );
    for c in [&c1, &c2, &c3] {
        h.server(ServerMessage::Ack { id: c.clone() });
    }
    // The first is rejected: the batch went on, the others wait for theirs.
    let fx = h.outcome(
        c1.clone(),
        Outcome::Rejected {
            code: ErrorCode::Forbidden,
            message: "no".into(),
        },
    );
    assert!(submitted(&fx).is_empty(), "{:?}", fx.send);
    // The second conflicts and stays unresolved (both changed the title):
    // the server did not attempt the third, which goes out again at once
    // (not after the outcome timeout).
    let fx = h.outcome(
        c2.clone(),
        known_base_conflict("b", json!({"title": "b"}), json!({"title": "b-theirs"}), 3),
    );
    assert!(matches!(
        &outcomes(&fx)[..],
        [(c, ChangeOutcome::Unresolved { .. })] if *c == c2
    ));
    let sent: Vec<ChangeId> = submitted(&fx).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(sent, [c3], "{:?}", fx.send);
}

#[test]
fn a_merged_conflict_goes_out_with_the_rest_of_its_lane_behind_it() {
    let mut h = Harness::new();
    h.online();
    h.disconnect();
    let (c1, _) = h.edit("b", json!({"title": "b1"}));
    let (c2, _) = h.edit("a", json!({"title": "a2", "done": false}));
    h.now += 1;
    h.core.connected(h.now).unwrap();
    h.effects();
    h.server(ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        user: "u".into(),
        ledger_window_ms: None,
    });
    for c in [&c1, &c2] {
        h.server(ServerMessage::Ack { id: c.clone() });
    }
    let fx = h.outcome(
        c1.clone(),
        known_base_conflict(
            "b",
            json!({"title": "b"}),
            json!({"title": "b", "done": true}),
            3,
        ),
    );
    let sent: Vec<ChangeId> = submitted(&fx).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(sent.len(), 2, "{:?}", fx.send);
    assert_ne!(sent[0], c1, "the resolution goes under a fresh id");
    assert_eq!(sent[1], c2);
    assert!(matches!(fx.send[..], [ClientMessage::SubmitBatch { .. }]));
}

#[test]
fn a_batch_size_of_one_sends_one_change_per_round_trip() {
    let mut h = Harness::new();
    h.online();
    h.disconnect();
    let state = h.store.load().unwrap();
    let mut config = Config::new("c", "tok", 8);
    config.max_batch = 1;
    h.core = SyncCore::open(config, state, h.now).unwrap();
    h.effects();
    let (c1, _) = h.edit("a", json!({"title": "a1"}));
    h.edit("b", json!({"title": "b1"}));
    h.now += 1;
    h.core.connected(h.now).unwrap();
    h.effects();
    let fx = h.server(ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        user: "u".into(),
        ledger_window_ms: None,
    });
    let sent: Vec<ChangeId> = submitted(&fx).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(sent, [c1]);
    assert!(fx
        .send
        .iter()
        .all(|m| !matches!(m, ClientMessage::SubmitBatch { .. })));
}

/// A server's job ledger as `job_submit_batch.lua` keeps it, for the drain
/// below: each change is finished (ack and its outcome; the new changes after
/// it are deferred), queued (ack; the new changes after it are deferred), new
/// (ack, queued in the batch's job) or deferred (no answer).
#[derive(Default)]
struct DrainServer {
    finished: BTreeMap<ChangeId, Outcome>,
    queued: std::collections::BTreeSet<ChangeId>,
    rev: u64,
}

impl DrainServer {
    /// The frames answering `changes`: the acks (and stored outcomes), and
    /// the outcomes of the job they queued, which the worker ran at once.
    fn submit(
        &mut self,
        changes: Vec<thoonk_protocol::ChangeRequest>,
    ) -> (Vec<ServerMessage>, Vec<ServerMessage>) {
        let (mut answers, mut job) = (Vec::new(), Vec::new());
        let mut blocked = false;
        for change in changes {
            let id = change.id;
            if let Some(outcome) = self.finished.get(&id) {
                blocked = true;
                answers.push(ServerMessage::Ack { id: id.clone() });
                answers.push(ServerMessage::Outcome {
                    id,
                    outcome: outcome.clone(),
                });
            } else if self.queued.contains(&id) {
                blocked = true;
                answers.push(ServerMessage::Ack { id });
            } else if !blocked {
                answers.push(ServerMessage::Ack { id: id.clone() });
                job.push(id);
            }
        }
        let outcomes = job
            .into_iter()
            .map(|id| {
                self.rev += 1;
                let outcome = Outcome::Accepted {
                    result: Value::Null,
                    revs: BTreeMap::from([(feed(), self.rev)]),
                    epochs: BTreeMap::from([(feed(), 1)]),
                };
                self.finished.insert(id.clone(), outcome.clone());
                ServerMessage::Outcome { id, outcome }
            })
            .collect();
        (answers, outcomes)
    }
}

/// A core with 1,000 edits of one lane queued offline, and their ids.
fn queued_offline() -> (Harness, std::collections::BTreeSet<ChangeId>) {
    let mut h = Harness::new();
    h.online();
    h.disconnect();
    let mut pending = std::collections::BTreeSet::new();
    for n in 0..1000 {
        let (c, _) = h.edit(&format!("i{n}"), json!({"n": n}));
        pending.insert(c);
    }
    (h, pending)
}

/// Connects again: the frames the server sends first (`welcome`).
fn reconnect(h: &mut Harness) -> std::collections::VecDeque<ServerMessage> {
    h.now += 1;
    h.core.connected(h.now).unwrap();
    h.effects();
    [ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        user: "u".into(),
        ledger_window_ms: None,
    }]
    .into()
}

/// Takes the changes `fx` settles out of `pending`; each is accepted, once.
fn accepted(fx: &Effects, pending: &mut std::collections::BTreeSet<ChangeId>) {
    for (c, outcome) in outcomes(fx) {
        assert!(
            matches!(outcome, ChangeOutcome::Accepted { .. }),
            "{outcome:?}"
        );
        assert!(pending.remove(&c), "one outcome per change: {c:?}");
    }
}

/// Drains 1,000 changes of one lane queued offline; the server's outcomes
/// of a batch reach the client after its first `outcomes_after` acks.
/// Returns the simulated time the drain took (a millisecond per frame
/// read), the timeouts it needed and how many changes it sent.
fn drain(outcomes_after: usize) -> (u64, u32, usize) {
    drain_with(outcomes_after, false)
}

/// As [`drain`]; with `late`, the first job's outcomes are read only after
/// the client's deadline ran out (a client too busy to read them in time).
fn drain_with(outcomes_after: usize, late: bool) -> (u64, u32, usize) {
    let (mut h, mut pending) = queued_offline();
    let start = h.now;
    let (mut server, mut inbox) = (DrainServer::default(), reconnect(&mut h));
    let (mut timeouts, mut sent) = (0, 0);
    let mut held: Option<Vec<ServerMessage>> = None;
    while !pending.is_empty() {
        let fx = match inbox.pop_front() {
            Some(msg) => h.server(msg),
            None if held.as_ref().is_some_and(|h| !h.is_empty()) && timeouts > 0 => {
                inbox.extend(held.as_mut().unwrap().drain(..));
                continue;
            }
            None => {
                let at = h
                    .core
                    .poll_timeout()
                    .expect("a change waits: something is due");
                assert!(at - start < 600_000, "the drain is stuck");
                h.now = h.now.max(at);
                h.core.handle_timeout(h.now).unwrap();
                timeouts += 1;
                h.effects()
            }
        };
        accepted(&fx, &mut pending);
        for msg in fx.send {
            let changes = match msg {
                ClientMessage::Submit { change } => vec![change],
                ClientMessage::SubmitBatch { changes } => changes,
                _ => continue,
            };
            sent += changes.len();
            let (answers, outcomes) = server.submit(changes);
            let acks = answers
                .iter()
                .take_while(|m| matches!(m, ServerMessage::Ack { .. }))
                .count();
            let at = outcomes_after.min(acks);
            let mut frames = answers;
            let tail = frames.split_off(at);
            match &mut held {
                None if late => held = Some(outcomes),
                _ => frames.extend(outcomes),
            }
            frames.extend(tail);
            inbox.extend(frames);
        }
    }
    (h.now - start, timeouts, sent)
}

#[test]
fn a_queued_lane_drains_without_a_timer_or_a_resend_in_any_order_of_acks_and_outcomes() {
    let submit_timeout = Config::new("c", "tok", 8).timing.submit_timeout;
    for outcomes_after in [usize::MAX, 499, 250, 1, 0] {
        let (took, timeouts, sent) = drain(outcomes_after);
        let run = format!("outcomes after {outcomes_after} acks: {took} ms, {sent} sent");
        assert_eq!(timeouts, 0, "{run}");
        assert_eq!(sent, 1000, "each change is sent once: {run}");
        assert!(took < submit_timeout, "{run}");
    }
}

#[test]
fn outcomes_read_after_a_deadline_resend_the_lane_once_not_at_every_outcome() {
    let (took, timeouts, sent) = drain_with(usize::MAX, true);
    let run = format!("{took} ms, {timeouts} timeouts, {sent} sent");
    assert!(timeouts >= 1, "{run}");
    assert!(sent <= 2000, "each change is sent at most twice: {run}");
}

/// Drains 1,000 changes of one lane queued offline, the server answering
/// each batch with its acks, then the outcomes of its job: one `acks` and
/// one `outcomes` frame per batch when `compact`, else an `ack` and an
/// `outcome` frame per change. Returns the batches sent, the frames read
/// and the store batches those frames made.
fn drain_frames(compact: bool) -> (usize, usize, usize) {
    let (mut h, mut pending) = queued_offline();
    let (mut server, mut inbox) = (DrainServer::default(), reconnect(&mut h));
    let (mut batches, mut frames, mut store_batches) = (0, 0, 0);
    while let Some(msg) = inbox.pop_front() {
        let fx = h.server(msg);
        frames += 1;
        store_batches += usize::from(fx.store.is_some());
        accepted(&fx, &mut pending);
        for msg in fx.send {
            let ClientMessage::SubmitBatch { changes } = msg else {
                continue;
            };
            batches += 1;
            let (answers, job) = server.submit(changes);
            if !compact {
                inbox.extend(answers.into_iter().chain(job));
                continue;
            }
            let ids = answers
                .into_iter()
                .filter_map(|m| match m {
                    ServerMessage::Ack { id } => Some(id),
                    _ => None,
                })
                .collect();
            let outcomes = job
                .into_iter()
                .filter_map(|m| match m {
                    ServerMessage::Outcome { id, outcome } => {
                        Some(thoonk_protocol::ChangeOutcomeOf { id, outcome })
                    }
                    _ => None,
                })
                .collect();
            inbox.push_back(ServerMessage::Acks { ids });
            inbox.push_back(ServerMessage::Outcomes { outcomes });
        }
    }
    assert!(pending.is_empty(), "{} changes left", pending.len());
    (batches, frames, store_batches)
}

#[test]
fn a_batch_answered_in_one_acks_and_one_outcomes_frame_settles_in_one_store_batch() {
    // One frame per change: a round, and a store batch, per outcome.
    let (batches, frames, stored) = drain_frames(false);
    assert_eq!((batches, frames, stored), (2, 2001, 1000));
    // One `acks` and one `outcomes` frame per batch: each batch's outcomes
    // settle in one round and one store batch.
    let (batches, frames, stored) = drain_frames(true);
    assert_eq!((batches, frames, stored), (2, 5, 2));
}
