//! The gateway's limits against misbehaving clients: malformed, unknown and
//! oversized frames get error frames and leave the connection usable and
//! other clients unaffected; a client that stops reading either catches up
//! completely and in order, or is disconnected — never silently skipped.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use serde_json::json;
use support::{id, name, Env, Frame, WsClient, WAIT};
use thoonk_protocol::{ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

/// The documented frame limit.
const MAX_FRAME: usize = 256 * 1024;

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_usable() {
    let env = Env::start().await;
    let feed = name("team:1:notes");
    let server = env.gateway(&[]).await;

    let mut watcher = WsClient::signed_in(&server.ws_url(), "ann").await;
    watcher.subscribe(feed.as_str()).await;
    watcher.until_rev(&feed, 0).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "bob").await;
    client.subscribe(feed.as_str()).await;
    client.until_rev(&feed, 0).await;

    let big = |size: usize| json!({"type": "ping", "pad": "x".repeat(size)}).to_string();
    let cases: Vec<(&str, Message, ErrorCode)> = vec![
        (
            "truncated JSON",
            Message::text("{\"type\":"),
            ErrorCode::BadRequest,
        ),
        (
            "not JSON",
            Message::text("hello there"),
            ErrorCode::BadRequest,
        ),
        (
            "a JSON array",
            Message::text("[1,2]"),
            ErrorCode::BadRequest,
        ),
        (
            "an unknown type",
            Message::text(r#"{"type":"frobnicate","x":1}"#),
            ErrorCode::BadRequest,
        ),
        (
            "no type",
            Message::text(r#"{"pattern":"a"}"#),
            ErrorCode::BadRequest,
        ),
        (
            "a missing field",
            Message::text(r#"{"type":"subscribe"}"#),
            ErrorCode::BadRequest,
        ),
        (
            "an invalid feed name",
            Message::text(r#"{"type":"replay","feed":"a\u0000b","from":{"epoch":1,"rev":1}}"#),
            ErrorCode::BadRequest,
        ),
        (
            "a second hello",
            Message::text(r#"{"type":"hello","protocol":1,"token":"bob","client_id":"c"}"#),
            ErrorCode::BadRequest,
        ),
        (
            "a binary frame",
            Message::binary(b"{\"type\":\"ping\"}".to_vec()),
            ErrorCode::BadRequest,
        ),
        (
            "a frame just over the limit",
            Message::text(big(MAX_FRAME)),
            ErrorCode::TooLarge,
        ),
        (
            "a frame of 3.5 times the limit",
            Message::text(big(MAX_FRAME * 7 / 2)),
            ErrorCode::TooLarge,
        ),
    ];
    let mut rev = 0;
    for (what, frame, code) in cases {
        client.send_message(frame).await;
        match client.next().await {
            ServerMessage::Error { code: got, .. } if got == code => {}
            other => panic!("{what}: expected an error {code:?}, got {other:?}"),
        }
        // Still usable: a ping is answered, and live events keep coming.
        client.ping().await;
        rev += 1;
        env.publish_many(&feed, "n", rev, 1).await;
        client.until_rev(&feed, rev as u64).await;
        watcher.until_rev(&feed, rev as u64).await;
    }

    // A frame just under the limit is accepted (a ping with padding).
    client.send_text(big(MAX_FRAME - 100)).await;
    assert_eq!(client.next().await, ServerMessage::Pong);

    // The other client saw every change, in order, and no error.
    assert_eq!(watcher.mirror.get(&feed).unwrap().events.len(), rev);
    assert!(watcher.log.iter().all(|f| !f.contains("\"error\"")));
}

#[tokio::test]
async fn a_frame_before_hello_that_is_malformed_is_refused_and_closed() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let mut client = WsClient::connect(&server.ws_url()).await;
    client.send_text("{not json".into()).await;
    client.expect_error(ErrorCode::BadRequest).await;
    client.expect_closed().await;

    // The gateway still serves others.
    let mut other = WsClient::signed_in(&server.ws_url(), "ann").await;
    other.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_catches_up_in_order_or_is_disconnected() {
    const COUNT: usize = 2400;
    const BIG: usize = 400;
    let env = Env::start().await;
    let feed = name("team:1:firehose");
    let server = env.gateway(&[]).await;

    // A control client that reads all along.
    let mut reader = WsClient::signed_in(&server.ws_url(), "ann").await;
    reader.subscribe(feed.as_str()).await;
    reader.until_rev(&feed, 0).await;

    // The slow client has a tiny TCP receive buffer, so that the server's
    // writes to it block soon after it stops reading.
    let mut slow = WsClient::connect_small_buffer(&server.ws_url(), server.port()).await;
    slow.hello("bob").await;
    slow.subscribe(feed.as_str()).await;
    slow.until_rev(&feed, 0).await;

    // First ~10 MiB of large items, more than the socket buffers between the
    // gateway and the slow client hold, then many small ones, more than the
    // session's event queue holds, while the slow client reads nothing.
    let big = "p".repeat(24 * 1024);
    let writer = {
        let store = env.other_store().await;
        let feed = feed.clone();
        tokio::spawn(async move {
            for i in 1..=COUNT {
                let pad = if i <= BIG { big.as_str() } else { "" };
                let item = json!({"i": i, "pad": pad});
                store
                    .publish(&feed, Some(&id(&format!("i{i}"))), &item, None)
                    .await
                    .expect("publish");
            }
        })
    };
    let reader_task = {
        let feed = feed.clone();
        tokio::spawn(async move {
            reader.until_rev(&feed, COUNT as u64).await;
            reader
        })
    };
    writer.await.unwrap();
    let reader = reader_task.await.unwrap();
    assert_eq!(reader.mirror.get(&feed).unwrap().events.len(), COUNT);

    // Now read again. Either every revision arrives in order (the mirror
    // panics on any gap), or the connection ends and the client can resume
    // from its last revision with nothing missing.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let outcome = loop {
        let rev = slow.mirror.rev(&feed).unwrap();
        if rev == COUNT as u64 {
            break "caught up";
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client stuck at rev {rev}"
        );
        if let Frame::Closed(_) = slow.next_frame().await {
            break "disconnected";
        }
    };
    let at = slow.mirror.get(&feed).unwrap().clone();
    if outcome == "disconnected" {
        let mut again = WsClient::signed_in(&server.ws_url(), "bob").await;
        again
            .subscribe_known(feed.as_str(), &[(&feed, at.epoch, at.rev)])
            .await;
        again.until_rev(&feed, COUNT as u64).await;
    }
    let stored = env.store.snapshot(&feed).await.unwrap();
    if outcome == "caught up" {
        assert_eq!(at.items, stored.items);
        // Still a working connection.
        slow.ping().await;
    }
    let replays = slow
        .log
        .iter()
        .filter(|f| f.starts_with(r#"{"type":"changes""#))
        .count();
    assert!(
        replays > 0 || outcome == "disconnected",
        "the slow client never fell behind the session's queue: the test needs more load"
    );
}

#[tokio::test]
async fn a_frame_far_over_the_limit_does_not_affect_other_clients() {
    let env = Env::start().await;
    let feed = name("team:1:notes");
    let server = env.gateway(&[]).await;
    let mut watcher = WsClient::signed_in(&server.ws_url(), "ann").await;
    watcher.subscribe(feed.as_str()).await;
    watcher.until_rev(&feed, 0).await;

    // 8 MiB: the gateway may answer `too_large` or cut the connection,
    // but it must not stall or break anyone else.
    let mut client = WsClient::signed_in(&server.ws_url(), "bob").await;
    let huge = json!({"type": "ping", "pad": "x".repeat(8 << 20)}).to_string();
    let _ = tokio::time::timeout(WAIT, client.try_send_message(Message::text(huge))).await;
    match client.next_frame().await {
        Frame::Message(ServerMessage::Error {
            code: ErrorCode::TooLarge,
            ..
        })
        | Frame::Closed(_) => {}
        Frame::Message(other) => panic!("expected too_large or a close, got {other:?}"),
    }

    env.publish_many(&feed, "n", 1, 3).await;
    watcher.until_rev(&feed, 3).await;
    watcher.ping().await;
    let mut fresh = WsClient::signed_in(&server.ws_url(), "cat").await;
    fresh.subscribe(feed.as_str()).await;
    fresh.until_rev(&feed, 3).await;
}
