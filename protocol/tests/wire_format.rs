//! The JSON text of every frame variant, byte for byte: what this build
//! writes, and that it reads the same text back, also with its keys in
//! another order (the tag last), as other clients and servers may write them.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use thoonk_protocol::{
    Base, Change, ChangeId, ChangeOp, ChangeRequest, ClientMessage, ErrorCode, FeedEvent, FeedName,
    FeedPattern, FeedPosition, Item, ItemId, Operation, Outcome, Position, ServerMessage,
    ServerState,
};

fn feed(name: &str) -> FeedName {
    FeedName::new(name).unwrap()
}

fn id(name: &str) -> ItemId {
    ItemId::new(name).unwrap()
}

/// The same JSON text with every object's keys in another order: sorted,
/// except that the tags (`type`, `kind`, `status`) come last.
fn tags_last(text: &str) -> String {
    const TAGS: [&str; 3] = ["type", "kind", "status"];
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by_key(|key| (TAGS.contains(&key.as_str()), key.as_str()));
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&serde_json::from_str(text).unwrap(), &mut out);
    out
}

/// `value` encodes to exactly `text`, and `text`, the same object with its
/// tags last, and its parsed `Value` decode to `value`.
fn check<T>(value: &T, text: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), text);
    assert_eq!(&serde_json::from_str::<T>(text).unwrap(), value, "{text}");
    let other = tags_last(text);
    assert_eq!(
        &serde_json::from_str::<T>(&other).unwrap(),
        value,
        "{other}"
    );
    assert_eq!(
        &serde_json::from_value::<T>(serde_json::from_str(text).unwrap()).unwrap(),
        value,
        "from a Value: {text}"
    );
}

fn change_request(op: Operation) -> ChangeRequest {
    ChangeRequest {
        id: ChangeId::new("c1", 7),
        op,
        base: BTreeMap::from([(feed("f"), Base::at(9, 4))]),
    }
}

#[test]
fn client_frames_keep_their_text() {
    check(
        &ClientMessage::Hello {
            protocol: 1,
            token: "t".into(),
            client_id: "c1".into(),
        },
        r#"{"type":"hello","protocol":1,"token":"t","client_id":"c1"}"#,
    );
    check(
        &ClientMessage::Subscribe {
            pattern: FeedPattern::new("team:*:tasks").unwrap(),
            known: BTreeMap::from([(feed("team:1:tasks"), FeedPosition { epoch: 3, rev: 5 })]),
        },
        r#"{"type":"subscribe","pattern":"team:*:tasks","known":{"team:1:tasks":{"epoch":3,"rev":5}}}"#,
    );
    check(
        &ClientMessage::Unsubscribe {
            pattern: FeedPattern::new("team:*:tasks").unwrap(),
        },
        r#"{"type":"unsubscribe","pattern":"team:*:tasks"}"#,
    );
    check(
        &ClientMessage::Replay {
            feed: feed("f"),
            from: FeedPosition { epoch: 2, rev: 8 },
        },
        r#"{"type":"replay","feed":"f","from":{"epoch":2,"rev":8}}"#,
    );
    check(&ClientMessage::Ping, r#"{"type":"ping"}"#);
}

#[test]
fn every_operation_keeps_its_text() {
    let cases = [
        (
            Operation::Publish {
                feed: feed("f"),
                id: id("a"),
                item: json!({"title": "t", "n": 1}),
                position: Some(Position::Before(id("b"))),
            },
            r#"{"kind":"publish","feed":"f","id":"a","item":{"n":1,"title":"t"},"position":{"before":"b"}}"#,
        ),
        (
            Operation::Publish {
                feed: feed("f"),
                id: id("a"),
                item: json!(null),
                position: None,
            },
            r#"{"kind":"publish","feed":"f","id":"a","item":null}"#,
        ),
        (
            Operation::Edit {
                feed: feed("f"),
                id: id("a"),
                item: json!([1, "x"]),
            },
            r#"{"kind":"edit","feed":"f","id":"a","item":[1,"x"]}"#,
        ),
        (
            Operation::Retract {
                feed: feed("f"),
                id: id("a"),
            },
            r#"{"kind":"retract","feed":"f","id":"a"}"#,
        ),
        (
            Operation::Move {
                feed: feed("f"),
                id: id("a"),
                position: Position::Begin,
            },
            r#"{"kind":"move","feed":"f","id":"a","position":"begin"}"#,
        ),
        (
            Operation::Action {
                name: "delegate_task".into(),
                payload: json!({"to": 7}),
            },
            r#"{"kind":"action","name":"delegate_task","payload":{"to":7}}"#,
        ),
    ];
    for (op, text) in cases {
        check(&op, text);
        let submit = ClientMessage::Submit {
            change: change_request(op),
        };
        let frame = format!(
            r#"{{"type":"submit","change":{{"id":"c1:7","op":{text},"base":{{"f":{{"epoch":9,"rev":4}}}}}}}}"#
        );
        check(&submit, &frame);
        let ClientMessage::Submit { change } = &submit else {
            unreachable!()
        };
        assert_eq!(change.submit_frame_len(), frame.len());
    }
}

#[test]
fn bases_read_both_shapes() {
    let bare: ChangeRequest = serde_json::from_str(
        r#"{"id":"c1:7","op":{"kind":"retract","feed":"f","id":"a"},"base":{"f":4}}"#,
    )
    .unwrap();
    assert_eq!(bare.base[&feed("f")], Base::Rev(4));
    assert_eq!(serde_json::to_string(&Base::Rev(4)).unwrap(), "4");
    let none: ChangeRequest =
        serde_json::from_str(r#"{"op":{"kind":"retract","feed":"f","id":"a"},"id":"c1:7"}"#)
            .unwrap();
    assert!(none.base.is_empty());
    for bad in [r#""4""#, "-1", "1.5", r#"{"epoch":1}"#, "null"] {
        assert!(serde_json::from_str::<Base>(bad).is_err(), "{bad}");
    }
}

#[test]
fn server_frames_keep_their_text() {
    let change = Change {
        op: ChangeOp::Edit,
        id: id("x"),
        item: Some(json!({"title": "t"})),
        position: Some(Position::After(id("w"))),
        prev: Some(json!({"title": "s"})),
        job: Some("c1:3".into()),
    };
    let cases = [
        (
            ServerMessage::Welcome {
                protocol: 1,
                user: "u".into(),
                ledger_window_ms: Some(86_400_000),
            },
            r#"{"type":"welcome","protocol":1,"user":"u","ledger_window_ms":86400000}"#,
        ),
        (
            ServerMessage::Welcome {
                protocol: 1,
                user: "u".into(),
                ledger_window_ms: None,
            },
            r#"{"type":"welcome","protocol":1,"user":"u"}"#,
        ),
        (
            ServerMessage::Subscribed {
                pattern: FeedPattern::new("team:*").unwrap(),
                feeds: vec![feed("team:1"), feed("team:2")],
            },
            r#"{"type":"subscribed","pattern":"team:*","feeds":["team:1","team:2"]}"#,
        ),
        (
            ServerMessage::Snapshot {
                feed: feed("f"),
                epoch: 9,
                rev: 12,
                items: vec![Item {
                    id: id("a"),
                    item: json!({"title": "t"}),
                    rev: 11,
                }],
            },
            r#"{"type":"snapshot","feed":"f","epoch":9,"rev":12,"items":[{"id":"a","item":{"title":"t"},"rev":11}]}"#,
        ),
        (
            ServerMessage::Changes {
                feed: feed("f"),
                epoch: 9,
                events: vec![
                    FeedEvent {
                        rev: 13,
                        change: change.clone(),
                    },
                    FeedEvent {
                        rev: 14,
                        change: Change {
                            op: ChangeOp::Retract,
                            id: id("x"),
                            item: None,
                            position: None,
                            prev: Some(json!({"title": "t"})),
                            job: None,
                        },
                    },
                ],
            },
            r#"{"type":"changes","feed":"f","epoch":9,"events":[{"rev":13,"change":{"op":"edit","id":"x","item":{"title":"t"},"position":{"after":"w"},"prev":{"title":"s"},"job":"c1:3"}},{"rev":14,"change":{"op":"retract","id":"x","prev":{"title":"t"}}}]}"#,
        ),
        (
            ServerMessage::Event {
                feed: feed("f"),
                epoch: 9,
                rev: 3,
                change: Change {
                    op: ChangeOp::Position,
                    id: id("x"),
                    item: None,
                    position: Some(Position::End),
                    prev: None,
                    job: None,
                },
            },
            r#"{"type":"event","feed":"f","epoch":9,"rev":3,"change":{"op":"position","id":"x","position":"end"}}"#,
        ),
        (
            ServerMessage::Ack {
                id: ChangeId::new("c1", 7),
            },
            r#"{"type":"ack","id":"c1:7"}"#,
        ),
        (
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
            },
            r#"{"type":"error","code":"rate_limited","message":"slow down"}"#,
        ),
        (ServerMessage::Pong, r#"{"type":"pong"}"#),
        (
            ServerMessage::Server {
                state: ServerState::Unavailable,
            },
            r#"{"type":"server","state":"unavailable"}"#,
        ),
    ];
    for (message, text) in cases {
        check(&message, text);
    }
}

#[test]
fn every_outcome_keeps_its_text() {
    let cases = [
        (
            Outcome::Accepted {
                result: json!({"ok": true}),
                revs: BTreeMap::from([(feed("f"), 5)]),
                epochs: BTreeMap::from([(feed("f"), 9)]),
            },
            r#"{"status":"accepted","result":{"ok":true},"revs":{"f":5},"epochs":{"f":9}}"#,
        ),
        (
            Outcome::Accepted {
                result: Value::Null,
                revs: BTreeMap::new(),
                epochs: BTreeMap::new(),
            },
            r#"{"status":"accepted","result":null,"revs":{}}"#,
        ),
        (
            Outcome::Rejected {
                code: ErrorCode::Forbidden,
                message: "no".into(),
            },
            r#"{"status":"rejected","code":"forbidden","message":"no"}"#,
        ),
        (
            Outcome::Conflict {
                feed: feed("f"),
                id: id("a"),
                base: Some(json!({"title": "b"})),
                unknown_base: false,
                epoch: 9,
                current: None,
                rev: 6,
                history: vec![FeedEvent {
                    rev: 6,
                    change: Change {
                        op: ChangeOp::Retract,
                        id: id("a"),
                        item: None,
                        position: None,
                        prev: Some(json!({"title": "c"})),
                        job: None,
                    },
                }],
            },
            r#"{"status":"conflict","feed":"f","id":"a","base":{"title":"b"},"epoch":9,"current":null,"rev":6,"history":[{"rev":6,"change":{"op":"retract","id":"a","prev":{"title":"c"}}}]}"#,
        ),
        (
            Outcome::Conflict {
                feed: feed("f"),
                id: id("a"),
                base: None,
                unknown_base: true,
                epoch: 10,
                current: Some(json!(3)),
                rev: 1,
                history: vec![],
            },
            r#"{"status":"conflict","feed":"f","id":"a","base":null,"unknown_base":true,"epoch":10,"current":3,"rev":1,"history":[]}"#,
        ),
    ];
    for (outcome, text) in cases {
        check(&outcome, text);
        let frame = ServerMessage::Outcome {
            id: ChangeId::new("c1", 7),
            outcome,
        };
        check(
            &frame,
            &format!(r#"{{"type":"outcome","id":"c1:7","outcome":{text}}}"#),
        );
    }
}

#[test]
fn defaults_and_unknown_fields_read_as_before() {
    // Fields a server of an older version leaves out, and fields a newer one adds.
    let accepted: Outcome =
        serde_json::from_str(r#"{"revs":{"f":2},"status":"accepted","later":1}"#).unwrap();
    assert_eq!(
        accepted,
        Outcome::Accepted {
            result: Value::Null,
            revs: BTreeMap::from([(feed("f"), 2)]),
            epochs: BTreeMap::new(),
        }
    );
    let conflict: Outcome =
        serde_json::from_str(r#"{"status":"conflict","feed":"f","id":"a","rev":3,"history":[]}"#)
            .unwrap();
    assert!(matches!(
        conflict,
        Outcome::Conflict {
            base: None,
            current: None,
            epoch: 0,
            unknown_base: false,
            ..
        }
    ));
    let pong: ServerMessage =
        serde_json::from_str(r#"{"extra":[1,{"a":2}],"type":"pong"}"#).unwrap();
    assert_eq!(pong, ServerMessage::Pong);
    let subscribe: ClientMessage =
        serde_json::from_str(r#"{"type":"subscribe","pattern":"f","future":{"x":1}}"#).unwrap();
    assert_eq!(
        subscribe,
        ClientMessage::Subscribe {
            pattern: FeedPattern::new("f").unwrap(),
            known: BTreeMap::new(),
        }
    );
}

#[test]
fn malformed_frames_fail_decoding() {
    for bad in [
        r#"{"type":"hello","protocol":1,"token":"t"}"#,
        r#"{"protocol":1,"token":"t","client_id":"c"}"#,
        r#"{"type":"nope"}"#,
        r#"{"type":7}"#,
        r#"{"token":"t","type":"hello","protocol":"one","client_id":"c"}"#,
        r#"{"type":"subscribe","pattern":"team:\u0000"}"#,
        r#"{"pattern":"team:\u0000","type":"subscribe"}"#,
        r#""ping""#,
        // serde's derive also read a tagged enum from an array (tag first);
        // frames are objects.
        r#"["ping"]"#,
        r#"{"type":"submit","change":{"id":"c:1","op":{"kind":"fly","feed":"f"}}}"#,
    ] {
        assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
    }
    for bad in [
        r#"{"type":"outcome","id":"c:1","outcome":{"status":"maybe"}}"#,
        r#"{"type":"snapshot","feed":"f","epoch":1,"rev":1,"items":[{"id":"","item":1,"rev":1}]}"#,
    ] {
        assert!(serde_json::from_str::<ServerMessage>(bad).is_err(), "{bad}");
    }
}
