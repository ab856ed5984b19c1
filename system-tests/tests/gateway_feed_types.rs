//! The types of the feeds clients create come from the server's config: a
//! feed whose name matches a `feeds` rule of type `sorted_feed` is created
//! sorted (with the rule's retention) by a client's first publish, so a
//! `move` on it is accepted; a feed no rule names stays time-ordered, and a
//! `move` on it is refused.

use thoonk_system_tests::gateway as support;

use serde_json::{json, Value};
use support::{name, shard, ConfigFile, Env, WsClient};
use thoonk_protocol::{ErrorCode, FeedName, Outcome, ServerMessage};
use thoonk_server::feeds::FeedType;

fn config() -> ConfigFile {
    ConfigFile::write(&json!({
        "users": [{ "name": "ann", "token": "tok-ann", "teams": { "353": "admin" } }],
        "read": ["team:<team>:**"],
        "write": ["team:<team>:**"],
        "feeds": [
            { "pattern": "team:*:member:*:tasks", "type": "sorted_feed", "retention": 50 },
            { "pattern": "team:*:log", "type": "feed", "max_length": 2 }
        ]
    }))
}

/// Submits change `n` of `op` (whose `feed` is filled in) and returns its outcome.
async fn outcome(client: &mut WsClient, n: u32, feed: &FeedName, mut op: Value) -> Outcome {
    let id = format!("test-tok-ann:{n}");
    op["feed"] = json!(feed);
    let frame = json!({"type": "submit", "change": {"id": id, "op": op, "base": {}}});
    client.send_text(frame.to_string()).await;
    client
        .until("the outcome", |m| match m {
            ServerMessage::Outcome { id: got, outcome } if got.0 == id => Some(outcome.clone()),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn a_feed_created_by_a_clients_publish_gets_the_type_the_config_names() {
    let env = Env::start().await;
    let config = config();
    let server = env.gateway(&["--config", config.path()]).await;
    let store = env.other_store().await;
    let mut ann = WsClient::signed_in(&server.ws_url(), "tok-ann").await;
    let tasks = name(&shard("team:353:member:ann:tasks"));
    let notes = name(&shard("team:353:notes"));
    let log = name(&shard("team:353:log"));

    let mut n = 0;
    for (feed, id) in [(&tasks, "a"), (&tasks, "b"), (&notes, "a"), (&notes, "b")] {
        n += 1;
        let op = json!({"kind": "publish", "id": id, "item": {"title": id}});
        let got = outcome(&mut ann, n, feed, op).await;
        assert!(matches!(got, Outcome::Accepted { .. }), "{feed}: {got:?}");
    }
    let info = store.info(&tasks).await.unwrap().expect("tasks created");
    assert_eq!(
        (info.kind.as_str(), info.retention),
        (FeedType::SortedFeed.as_str(), 50)
    );
    let info = store.info(&notes).await.unwrap().expect("notes created");
    assert_eq!(info.kind, FeedType::Feed.as_str());

    // The README's `move` works on the configured feed…
    let up = json!({"kind": "move", "id": "b", "position": "begin"});
    let moved = outcome(&mut ann, 5, &tasks, up.clone()).await;
    assert!(matches!(moved, Outcome::Accepted { .. }), "{moved:?}");
    let ids: Vec<String> = store
        .snapshot(&tasks)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|item| item.id.to_string())
        .collect();
    assert_eq!(ids, ["b", "a"]);
    // …and not on a feed no rule names.
    let refused = outcome(&mut ann, 6, &notes, up).await;
    assert!(
        matches!(
            refused,
            Outcome::Rejected {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{refused:?}"
    );

    // A time-ordered rule's max_length holds from the first publish.
    for (i, id) in ["x", "y", "z"].into_iter().enumerate() {
        let op = json!({"kind": "publish", "id": id, "item": {}});
        let got = outcome(&mut ann, 7 + i as u32, &log, op).await;
        assert!(matches!(got, Outcome::Accepted { .. }), "{got:?}");
    }
    let info = store.info(&log).await.unwrap().expect("log created");
    assert_eq!(
        (info.kind.as_str(), info.max_length),
        (FeedType::Feed.as_str(), 2)
    );
    assert_eq!(store.snapshot(&log).await.unwrap().items.len(), 2);
}
