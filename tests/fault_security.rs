//! Bad input and security at a real gateway with an access config, beyond
//! what tests/gateway_*.rs cover: wrong field types, invalid feed and item
//! names inside submits, change ids of another client, near-miss tokens,
//! writes to feeds outside the rules, the job queue as a feed, and another
//! user's job results. Each gets a clear error code or a rejected outcome,
//! nothing is written, nothing leaks, and the gateway keeps serving a
//! bystander throughout.
#![cfg(not(target_arch = "wasm32"))]

mod fault_support;

use fault_support::*;
use serde_json::json;
use thoonk_protocol::{ErrorCode, ServerMessage};

fn config() -> ConfigFile {
    ConfigFile::write(&json!({
        "users": [
            { "name": "ann", "token": "tok-ann", "teams": { "353": "admin" } },
            { "name": "bob", "token": "tok-bob", "teams": { "353": "member" } },
            { "name": "eve", "token": "tok-eve" }
        ],
        "read": ["team:<team>:**", "user:<user>:**"],
        "write": ["team:<team>:member:<user>:tasks", "user:<user>:**"],
        "admin": ["team:<admin_team>:**"]
    }))
}

struct Setup {
    redis: Redis,
    _config: ConfigFile,
    gateway: Process,
}

async fn setup() -> Setup {
    let redis = Redis::start("always");
    let config = config();
    let url = redis.url();
    let gateway = Process::gateway(
        &url,
        Some(&url),
        &["--config", config.path(), "--workers", "2"],
    )
    .await;
    Setup {
        redis,
        _config: config,
        gateway,
    }
}

fn submit(id: &str, op: serde_json::Value) -> String {
    json!({"type": "submit", "change": {"id": id, "op": op}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_invalid_submits_get_bad_request_and_write_nothing() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let mut bystander = RawClient::signed_in(&url, "tok-bob", "bob1").await;
    let mut eve = RawClient::signed_in(&url, "tok-eve", "eve1").await;
    let long = "x".repeat(257);
    let glob = ["user:eve:*", "user:eve:a?", "user:eve:[a]", "user:eve:a\\b"];
    let mut cases: Vec<(String, String)> = vec![
        ("wrong type: pattern a number".into(), json!({"type": "subscribe", "pattern": 5}).to_string()),
        ("wrong type: known a list".into(), json!({"type": "subscribe", "pattern": "user:eve:n", "known": []}).to_string()),
        ("wrong type: rev a string".into(), json!({"type": "replay", "feed": "user:eve:n", "from": {"epoch": 1, "rev": "1"}}).to_string()),
        ("wrong type: negative rev".into(), json!({"type": "replay", "feed": "user:eve:n", "from": {"epoch": 1, "rev": -1}}).to_string()),
        ("wrong type: change id a number".into(), json!({"type": "submit", "change": {"id": 7, "op": {"kind": "retract", "feed": "user:eve:n", "id": "a"}}}).to_string()),
        ("unknown op kind".into(), submit("eve1:1", json!({"kind": "truncate", "feed": "user:eve:n"}))),
        ("empty feed name".into(), submit("eve1:2", json!({"kind": "publish", "feed": "", "id": "a", "item": 1}))),
        ("NUL in a feed name".into(), submit("eve1:3", json!({"kind": "publish", "feed": "user:eve:\u{0}", "id": "a", "item": 1}))),
        ("oversized feed name".into(), submit("eve1:4", json!({"kind": "publish", "feed": format!("user:eve:{long}"), "id": "a", "item": 1}))),
        ("empty item id".into(), submit("eve1:5", json!({"kind": "publish", "feed": "user:eve:n", "id": "", "item": 1}))),
        ("NUL in an item id".into(), submit("eve1:6", json!({"kind": "publish", "feed": "user:eve:n", "id": "a\u{0}b", "item": 1}))),
        ("oversized item id".into(), submit("eve1:7", json!({"kind": "publish", "feed": "user:eve:n", "id": long, "item": 1}))),
        ("oversized subscribe".into(), json!({"type": "subscribe", "pattern": format!("user:eve:{long}")}).to_string()),
        ("empty pattern".into(), json!({"type": "subscribe", "pattern": ""}).to_string()),
        ("a bare number".into(), "42".into()),
        ("null".into(), "null".into()),
        ("deep nesting".into(), format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
    ];
    for (i, g) in glob.iter().enumerate() {
        cases.push((
            format!("glob characters in a submit's feed: {g}"),
            submit(
                &format!("eve1:{}", 10 + i),
                json!({"kind": "publish", "feed": g, "id": "a", "item": 1}),
            ),
        ));
    }
    for (what, frame) in cases {
        eve.send_text(frame).await;
        eve.expect_error(ErrorCode::BadRequest, &what).await;
        eve.ping().await;
        bystander.ping().await;
    }
    // Nothing was written anywhere: the only keys are the queue's own.
    let mut conn = s.redis.conn().await;
    let feeds: Vec<String> = redis::cmd("SMEMBERS")
        .arg("feeds")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(feeds, vec![QUEUE.to_string()], "no feed was created");
    let jobs: usize = redis::cmd("HLEN")
        .arg(format!("feed.items:{QUEUE}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no job was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_tokens_are_unauthorized() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    for token in [
        "tok-ann ",
        " tok-ann",
        "TOK-ANN",
        "tok-an",
        "tok-ann\u{0}",
        "",
        "ann",
    ] {
        let mut c = RawClient::connect(&url).await;
        c.send_text(
            json!({"type": "hello", "protocol": 1, "token": token, "client_id": "x"}).to_string(),
        )
        .await;
        c.expect_error(ErrorCode::Unauthorized, &format!("token {token:?}"))
            .await;
        assert!(c.next().await.is_none(), "closed after unauthorized");
    }
    let mut ann = RawClient::signed_in(&url, "tok-ann", "ann1").await;
    ann.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_the_rules_are_rejected_and_change_nothing() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let store = s.redis.store().await;
    let team = feed("team:353:member:bob:tasks");
    store
        .publish(
            &team,
            Some(&thoonk_protocol::ItemId::new("t1").unwrap()),
            &json!({"title": "x"}),
            None,
        )
        .await
        .unwrap();
    let before = store.snapshot(&team).await.unwrap();
    let mut eve = RawClient::signed_in(&url, "tok-eve", "eve1").await;
    let ops = [
        json!({"kind": "publish", "feed": "team:353:member:bob:tasks", "id": "t2", "item": {"title": "evil"}}),
        json!({"kind": "edit", "feed": "team:353:member:bob:tasks", "id": "t1", "item": {"title": "evil"}}),
        json!({"kind": "retract", "feed": "team:353:member:bob:tasks", "id": "t1"}),
        json!({"kind": "move", "feed": "team:353:member:bob:tasks", "id": "t1", "position": "begin"}),
        json!({"kind": "publish", "feed": "user:ann:notes", "id": "n", "item": 1}),
        json!({"kind": "publish", "feed": QUEUE, "id": "fake", "item": {"id": "fake", "user": "ann"}}),
        json!({"kind": "action", "name": "delete_task", "payload": {"feed": "team:353:member:bob:tasks", "id": "t1"}}),
    ];
    for (i, op) in ops.iter().enumerate() {
        let id = format!("eve1:{}", i + 1);
        eve.send_text(submit(&id, op.clone())).await;
        let outcome = eve
            .until("the outcome", |m| match m {
                ServerMessage::Outcome { id: got, outcome } if got.0 == id => Some(outcome.clone()),
                _ => None,
            })
            .await;
        assert!(
            matches!(&outcome, thoonk_protocol::Outcome::Rejected { code, .. } if matches!(code, ErrorCode::Forbidden | ErrorCode::BadRequest)),
            "{op}: {outcome:?}"
        );
    }
    assert_eq!(
        store.snapshot(&team).await.unwrap(),
        before,
        "nothing changed"
    );
    // Subscribing to the job queue (whose items are every user's changes) is refused.
    eve.send_text(json!({"type": "subscribe", "pattern": QUEUE}).to_string())
        .await;
    eve.expect_error(ErrorCode::Forbidden, "the queue as a feed")
        .await;
    eve.ping().await;
    assert!(eve
        .log
        .iter()
        .all(|f| !f.contains("evil") || f.contains("\"outcome\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_ids_of_another_client_are_forbidden() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let mut eve = RawClient::signed_in(&url, "tok-eve", "eve1").await;
    for id in ["ann1:1", "eve:1", "eve1", "eve1:", "eve10:1", ":1"] {
        eve.send_text(submit(
            id,
            json!({"kind": "publish", "feed": "user:eve:n", "id": "a", "item": 1}),
        ))
        .await;
        eve.expect_error(ErrorCode::Forbidden, &format!("change id {id}"))
            .await;
    }
    eve.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_job_results_never_reach_a_client_that_borrows_the_client_id() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    // A client id belongs to the first user who says hello with it.
    let mut ann = RawClient::signed_in(&url, "tok-ann", "ann1").await;
    let borrowed = || thoonk_protocol::ClientMessage::Hello {
        protocol: thoonk_protocol::PROTOCOL_VERSION,
        token: "tok-eve".into(),
        client_id: "ann1".into(),
    };
    let mut eve = RawClient::connect(&url).await;
    eve.send(&borrowed()).await;
    eve.expect_error(ErrorCode::Forbidden, "eve presenting ann's client id")
        .await;
    assert!(eve.next().await.is_none(), "eve's connection is closed");

    ann.send_text(submit(
        "ann1:1",
        json!({"kind": "publish", "feed": "user:ann:diary", "id": "d1", "item": {"secret": "s3cr3t"}}),
    ))
    .await;
    ann.until("ann's outcome", |m| {
        matches!(m, ServerMessage::Outcome { .. }).then_some(())
    })
    .await;
    // Eve trying again after ann's change is refused the same way and learns nothing.
    let mut eve2 = RawClient::connect(&url).await;
    eve2.send(&borrowed()).await;
    eve2.expect_error(ErrorCode::Forbidden, "eve presenting ann's client id again")
        .await;
    let leaked: Vec<&String> = eve
        .log
        .iter()
        .chain(eve2.log.iter())
        .filter(|f| {
            f.contains("user:ann:diary") || f.contains("s3cr3t") || f.contains("\"ann1:1\"")
        })
        .collect();
    assert!(leaked.is_empty(), "eve received ann's results: {leaked:#?}");
    // Ann herself reconnects with her client id.
    RawClient::signed_in(&url, "tok-ann", "ann1")
        .await
        .ping()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_items_in_a_submit_are_too_large_and_others_keep_syncing() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let mut bob = RawClient::signed_in(&url, "tok-bob", "bob1").await;
    bob.send_text(json!({"type": "subscribe", "pattern": "user:bob:n"}).to_string())
        .await;
    bob.until("subscribed", |m| {
        matches!(m, ServerMessage::Snapshot { .. }).then_some(())
    })
    .await;
    let mut eve = RawClient::signed_in(&url, "tok-eve", "eve1").await;
    let huge = "y".repeat(300 * 1024);
    eve.send_text(submit(
        "eve1:1",
        json!({"kind": "publish", "feed": "user:eve:n", "id": "a", "item": huge}),
    ))
    .await;
    eve.expect_error(ErrorCode::TooLarge, "a huge item").await;
    // Bob is still served: his own write comes back as an event.
    bob.send_text(submit(
        "bob1:1",
        json!({"kind": "publish", "feed": "user:bob:n", "id": "b", "item": 1}),
    ))
    .await;
    bob.until("bob's event", |m| {
        matches!(m, ServerMessage::Event { .. }).then_some(())
    })
    .await;
    eve.ping().await;
}
