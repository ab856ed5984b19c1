//! The JSON text of the core's tagged values: stored outcomes (IndexedDB
//! records written by earlier versions must still read), item states and
//! the messages between tabs. Each is written as before, and read back from
//! that text and from the same object with its tag moved last.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use thoonk_protocol::{ChangeId, ErrorCode, FeedName, FeedPattern, ItemId, Operation};
use thoonk_sync_core::tabs::{
    FeedChange, LeaderStatus, OutboxEntry, OutcomeEvent, Refusal, SharedState, TabMessage,
};
use thoonk_sync_core::{ChangeOutcome, ConflictCase, ItemState, ItemView, ResolutionKind};

/// `text` (an object whose first key is its tag) with the tag moved last.
fn tag_moved_last(text: &str) -> String {
    let body = text.strip_prefix('{').unwrap();
    let mut depth = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' | '[' if !in_string => depth += 1,
            '}' | ']' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => {
                let (tag, rest) = (&body[..at], &body[at + 1..]);
                return format!("{{{},{tag}}}", rest.strip_suffix('}').unwrap());
            }
            _ => {}
        }
    }
    text.to_string() // the tag is the only key
}

fn check<T>(value: &T, text: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), text);
    round_trip(value);
}

/// `value` reads back from its own text, and from that text with its tag last.
fn round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(value).unwrap();
    assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value, "{text}");
    let moved = tag_moved_last(&text);
    assert_eq!(
        &serde_json::from_str::<T>(&moved).unwrap(),
        value,
        "{moved}"
    );
}

fn feed(name: &str) -> FeedName {
    FeedName::new(name).unwrap()
}

fn conflict() -> ConflictCase {
    ConflictCase {
        change: ChangeId("c1:4".into()),
        feed: feed("f"),
        id: ItemId::new("a").unwrap(),
        base: Some(json!({"v": 1})),
        unknown_base: false,
        ours: Some(json!({"v": 2})),
        theirs: None,
        rev: 7,
    }
}

fn outcomes() -> Vec<(ChangeOutcome, &'static str)> {
    vec![
        (
            ChangeOutcome::Accepted {
                result: json!({"ok": 1}),
                revs: BTreeMap::from([(feed("f"), 3)]),
            },
            r#"{"status":"accepted","result":{"ok":1},"revs":{"f":3}}"#,
        ),
        (
            ChangeOutcome::Rejected {
                code: ErrorCode::Expired,
                message: "too old".into(),
            },
            r#"{"status":"rejected","code":"expired","message":"too old"}"#,
        ),
        (
            ChangeOutcome::ConflictResolved {
                resolution: ResolutionKind::Merged,
                result: Value::Null,
                revs: BTreeMap::new(),
            },
            r#"{"status":"conflict_resolved","resolution":"merged","result":null,"revs":{}}"#,
        ),
        (
            ChangeOutcome::Unresolved {
                conflict: conflict(),
                reason: "both edited".into(),
            },
            r#"{"status":"unresolved","conflict":{"change":"c1:4","feed":"f","id":"a","base":{"v":1},"unknown_base":false,"ours":{"v":2},"theirs":null,"rev":7},"reason":"both edited"}"#,
        ),
    ]
}

#[test]
fn stored_outcomes_keep_their_text() {
    for (outcome, text) in outcomes() {
        check(&outcome, text);
    }
    // A record of a version before `unknown_base` still reads.
    let old: ChangeOutcome = serde_json::from_str(
        r#"{"status":"unresolved","reason":"r","conflict":{"change":"c1:4","feed":"f","id":"a","base":null,"ours":null,"theirs":null,"rev":7}}"#,
    )
    .unwrap();
    assert!(matches!(old, ChangeOutcome::Unresolved { conflict, .. } if !conflict.unknown_base));
    assert!(serde_json::from_str::<ChangeOutcome>(r#"{"status":"lost"}"#).is_err());
    assert!(serde_json::from_str::<ChangeOutcome>(r#"{"code":"expired","message":"m"}"#).is_err());
}

#[test]
fn item_states_keep_their_text() {
    check(&ItemState::Confirmed, r#"{"state":"confirmed"}"#);
    check(
        &ItemState::Pending {
            changes: vec![ChangeId("c1:1".into()), ChangeId("c1:2".into())],
        },
        r#"{"state":"pending","changes":["c1:1","c1:2"]}"#,
    );
    check(
        &ItemState::Rejected {
            change: ChangeId("c1:1".into()),
        },
        r#"{"state":"rejected","change":"c1:1"}"#,
    );
}

#[test]
fn every_tab_message_reads_back() {
    let id = || ChangeId("c1:t1-1".into());
    let op = Operation::Retract {
        feed: feed("f"),
        id: ItemId::new("a").unwrap(),
    };
    let view = FeedChange {
        feed: feed("f"),
        changed: vec![ItemView {
            id: ItemId::new("a").unwrap(),
            value: json!({"v": 1}),
            rev: 2,
            state: ItemState::Pending {
                changes: vec![id()],
            },
        }],
        removed: vec![ItemId::new("b").unwrap()],
        order: Some(vec![ItemId::new("a").unwrap()]),
    };
    let status: LeaderStatus = serde_json::from_value(
        json!({"connection": "online", "pending": 1, "feeds": {"f": {"rev": 2}}, "storageError": null}),
    )
    .unwrap();
    assert_eq!(status.connection, "online");
    assert_eq!(status.pending, 1);
    assert_eq!(status.rest["feeds"], json!({"f": {"rev": 2}}));
    let state = SharedState {
        status,
        outbox: vec![OutboxEntry {
            id: id(),
            op: op.clone(),
            created_at: 5,
            conflicts: 0,
            accepted: false,
        }],
    };
    let event = OutcomeEvent {
        id: id(),
        outcome: outcomes().remove(3).0,
    };
    let messages = [
        TabMessage::Join { tab: "t1".into() },
        TabMessage::Leave { tab: "t1".into() },
        TabMessage::Subscribe {
            tab: "t1".into(),
            req: 3,
            pattern: FeedPattern::new("team:*").unwrap(),
        },
        TabMessage::Unsubscribe {
            tab: "t1".into(),
            pattern: FeedPattern::new("team:*").unwrap(),
        },
        TabMessage::Change {
            tab: "t1".into(),
            id: id(),
            op,
        },
        TabMessage::Dismiss { id: id() },
        TabMessage::SetOnline { online: false },
        TabMessage::Ping { tab: "t1".into() },
        TabMessage::Leader { tab: "t2".into() },
        TabMessage::Welcome {
            to: "t1".into(),
            client_id: "c1".into(),
            state: state.clone(),
            outcomes: vec![event.clone()],
        },
        TabMessage::Views {
            to: "t1".into(),
            req: 3,
            feeds: vec![view.clone()],
        },
        TabMessage::Queued {
            to: "t1".into(),
            id: id(),
        },
        TabMessage::Refused {
            to: "t1".into(),
            id: id(),
            refusal: Refusal::new("storage", "full"),
        },
        TabMessage::Items { change: view },
        TabMessage::Outcome { event },
        TabMessage::State { state },
        TabMessage::Pong { to: "t1".into() },
    ];
    for message in &messages {
        round_trip(message);
    }
    check(
        &TabMessage::SetOnline { online: true },
        r#"{"t":"set_online","online":true}"#,
    );
    for bad in [
        r#"{"t":"state","state":{"status":{"pending":1},"outbox":[]}}"#,
        r#"{"t":"state","state":{"status":{"connection":"online","pending":-1},"outbox":[]}}"#,
        r#"{"t":"nope"}"#,
    ] {
        assert!(serde_json::from_str::<TabMessage>(bad).is_err(), "{bad}");
    }
}
