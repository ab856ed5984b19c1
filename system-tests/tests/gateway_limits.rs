//! The gateway's limits against misbehaving clients: malformed, unknown and
//! oversized frames get error frames and leave the connection usable and
//! other clients unaffected; a client that stops reading either catches up
//! completely and in order, or is disconnected — never silently skipped.

use thoonk_system_tests::gateway as support;

use serde_json::json;
use support::{id, name, shard, Env, Frame, WsClient, WAIT};
use thoonk_protocol::{ErrorCode, FeedName, ServerMessage};
use thoonk_server::feeds::FeedStore;
use tokio_tungstenite::tungstenite::Message;

/// The documented frame limit.
const MAX_FRAME: usize = 256 * 1024;

/// A client signed in with `token` that read `feed`'s first state: empty.
async fn reader_of_empty(url: &str, token: &str, feed: &FeedName) -> WsClient {
    let mut client = WsClient::signed_in(url, token).await;
    client.subscribe(feed.as_str()).await;
    client.until_rev(feed, 0).await;
    client
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_usable() {
    let env = Env::start().await;
    let feed = name("team:1:notes");
    let server = env.gateway(&[]).await;

    let mut watcher = reader_of_empty(&server.ws_url(), "ann", &feed).await;

    let mut client = reader_of_empty(&server.ws_url(), "bob", &feed).await;

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

/// Feeds of 8 items of 128 KiB each: 1 MiB per snapshot.
const BIG_FEEDS: usize = 8;

/// Creates the big feeds `{prefix}:big:{k}`.
async fn big_feeds(env: &Env, prefix: &str) -> Vec<FeedName> {
    let pad = "b".repeat(128 * 1024);
    let mut feeds = Vec::new();
    for k in 0..BIG_FEEDS {
        let feed = name(&format!("{prefix}:big:{k}"));
        for i in 0..8 {
            env.store
                .publish(
                    &feed,
                    Some(&id(&format!("b{i}"))),
                    &json!({ "pad": pad }),
                    None,
                )
                .await
                .expect("publish");
        }
        feeds.push(feed);
    }
    feeds
}

/// Makes `slow`'s session fall behind: it asks for the big feeds' snapshots
/// (8 MiB, more than the socket buffers between the gateway and a client with
/// a 256 KiB receive buffer hold) and reads nothing, so the gateway's writes
/// to it block.
async fn stop_reading(slow: &mut WsClient, big: &[FeedName]) {
    for feed in big {
        slow.subscribe(feed.as_str()).await;
    }
}

/// Publishes `count` small items `i1..` to `feed`: more notices than a
/// session's event queue holds. Returns the feed's revision afterwards.
///
/// A publish that fails (the store's client gives up on a reply after
/// 500 ms, which a loaded machine can exceed) is retried; it may have been
/// applied, so the caller takes the revision returned, not `count`.
async fn flood(store: &FeedStore, feed: &FeedName, count: usize) -> u64 {
    for i in 1..=count {
        let item_id = id(&format!("i{i}"));
        let mut attempt = 0;
        while let Err(err) = store
            .publish(feed, Some(&item_id), &json!({ "i": i }), None)
            .await
        {
            attempt += 1;
            assert!(attempt < 5, "publish {i}: {err}");
        }
    }
    store.snapshot(feed).await.expect("snapshot").rev
}

/// Frames by which the gateway caught a client up after it fell behind:
/// `changes`, and snapshots of a feed after its first one.
fn replay_frames(client: &WsClient) -> usize {
    let changes = client
        .log
        .iter()
        .filter(|f| f.starts_with(r#"{"type":"changes""#))
        .count();
    let again: usize = client
        .mirror
        .feeds
        .values()
        .map(|m| m.snapshots.len().saturating_sub(1))
        .sum();
    changes + again
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_catches_up_in_order_or_is_disconnected() {
    const COUNT: usize = 1600;
    let env = Env::start().await;
    let feed = name("team:1:firehose");
    env.publish_many(&feed, "pre", 1, 1).await;
    let big = big_feeds(&env, "team:1").await;
    let server = env.gateway(&[]).await;

    // A control client that reads all along.
    let mut reader = WsClient::signed_in(&server.ws_url(), "ann").await;
    reader.subscribe(feed.as_str()).await;
    reader.until_rev(&feed, 1).await;

    let mut slow = WsClient::connect_small_buffer(&server.ws_url(), server.port()).await;
    slow.hello("bob").await;
    slow.subscribe(feed.as_str()).await;
    slow.until_rev(&feed, 1).await;
    stop_reading(&mut slow, &big).await;

    let last = flood(&env.other_store().await, &feed, COUNT).await;
    assert!(last > COUNT as u64);
    reader.until_rev(&feed, last).await;
    assert_eq!(
        reader.mirror.get(&feed).unwrap().events.len() as u64,
        last - 1
    );

    // Now read again. Either every revision arrives in order (the mirror
    // panics on any gap) and every snapshot, or the connection ends and the
    // client can resume from its last revision with nothing missing.
    let caught_up = slow
        .read_until(|m| m.rev(&feed) == Some(last) && big.iter().all(|f| m.rev(f) == Some(8)))
        .await;
    let at = slow.mirror.get(&feed).unwrap().clone();
    let stored = env.store.snapshot(&feed).await.unwrap();
    if caught_up {
        assert_eq!(at.items(), stored.items);
        assert!(
            replay_frames(&slow) > 0,
            "the slow client never fell behind the session's queue: the test needs more load"
        );
        // Still a working connection.
        slow.ping().await;
    } else {
        assert!(
            slow.closed.is_some(),
            "neither caught up nor disconnected: stuck at rev {} of {last}; last frames: {:#?}",
            at.rev,
            slow.tail()
        );
        let mut again = WsClient::signed_in(&server.ws_url(), "bob").await;
        again
            .subscribe_known(feed.as_str(), &[(&feed, at.epoch, at.rev)])
            .await;
        assert_eq!(
            again.until_rev(&feed, last).await.events.len() as u64,
            last - at.rev
        );
    }
}

#[tokio::test]
async fn a_frame_far_over_the_limit_does_not_affect_other_clients() {
    let env = Env::start().await;
    let feed = name("team:1:notes");
    let server = env.gateway(&[]).await;
    let mut watcher = reader_of_empty(&server.ws_url(), "ann", &feed).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_still_learns_of_feeds_created_while_it_lagged() {
    const COUNT: usize = 1600;
    let env = Env::start().await;
    let feed = name("team:2:firehose");
    env.publish_many(&feed, "pre", 1, 1).await;
    let big = big_feeds(&env, "other").await;
    let server = env.gateway(&[]).await;

    let mut slow = WsClient::connect_small_buffer(&server.ws_url(), server.port()).await;
    slow.hello("bob").await;
    slow.subscribe(&shard("team:2:*")).await;
    slow.until_rev(&feed, 1).await;
    stop_reading(&mut slow, &big).await;

    // While the slow client reads nothing, its session's queue overflows;
    // then a feed matching its pattern is created.
    let last = flood(&env.store, &feed, COUNT).await;
    let late = name("team:2:late");
    env.publish_many(&late, "l", 1, 1).await;

    let complete = slow
        .read_until(|m| m.rev(&feed) == Some(last) && m.rev(&late) == Some(1))
        .await;
    assert!(
        slow.closed.is_none(),
        "disconnected: the test needs less load"
    );
    assert!(
        replay_frames(&slow) > 0,
        "the slow client never fell behind the session's queue: the test needs more load"
    );
    assert_eq!(slow.mirror.rev(&feed), Some(last), "{:#?}", slow.tail());
    assert!(
        complete,
        "{late} was never announced; the last frames: {:#?}",
        slow.tail()
    );
}

#[tokio::test]
async fn too_many_subscriptions_are_rate_limited() {
    const LIMIT: usize = 256;
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    for i in 0..LIMIT {
        client.subscribe(&shard(&format!("sub:{i}:*"))).await;
    }
    for _ in 0..LIMIT {
        client
            .until("subscribed", |m| {
                matches!(m, ServerMessage::Subscribed { .. }).then_some(())
            })
            .await;
    }
    client.subscribe(&shard("one:more:*")).await;
    client.expect_error(ErrorCode::RateLimited).await;
    // Subscribing again to a pattern already held is no new subscription.
    client.subscribe(&shard("sub:0:*")).await;
    assert!(matches!(
        client.next().await,
        ServerMessage::Subscribed { .. }
    ));
    // After an unsubscribe there is room again, and the connection works.
    client
        .send(&thoonk_protocol::ClientMessage::Unsubscribe {
            pattern: support::pattern("sub:1:*"),
        })
        .await;
    let feed = name("one:more:feed");
    client.subscribe(&shard("one:more:*")).await;
    client
        .until("subscribed after unsubscribe", |m| {
            matches!(m, ServerMessage::Subscribed { .. }).then_some(())
        })
        .await;
    env.publish_many(&feed, "x", 1, 1).await;
    client.until_rev(&feed, 1).await;
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    let feed = name("team:1:notes");
    client.subscribe(feed.as_str()).await;
    client.until_rev(&feed, 0).await;
    // Dropping the server sends SIGTERM and waits for the process to exit.
    drop(server);
    let frame = client.expect_closed().await;
    let frame = frame.expect("a close frame with a reason");
    assert_eq!(u16::from(frame.code), 1001, "going away: {frame:?}");
}

// ---- rate limits ---------------------------------------------------------------

#[tokio::test]
async fn a_flood_of_frames_is_rate_limited_then_closed() {
    let env = Env::start().await;
    let server = env
        .gateway(&["--frame-rate", "1", "--frame-burst", "50"])
        .await;
    let mut flooder = WsClient::signed_in(&server.ws_url(), "ann").await;
    // Far more frames than the burst, sent without reading.
    let mut sent = 0;
    for _ in 0..2_000 {
        let ping = Message::text(r#"{"type":"ping"}"#);
        if flooder.try_send_message(ping).await.is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 60, "the first frames were taken in");
    let mut pongs = 0;
    let mut limited = 0;
    let close = loop {
        match flooder.next_frame().await {
            Frame::Message(ServerMessage::Pong) => pongs += 1,
            Frame::Message(ServerMessage::Error {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            Frame::Message(other) => panic!("unexpected {other:?}"),
            Frame::Closed(close) => break close,
        }
    };
    // The hello took one token; the rest of the burst (and the little
    // refilled meanwhile) was answered, nothing more.
    assert!((49..=51).contains(&pongs), "{pongs} pongs");
    assert!(limited >= 1, "told `rate_limited` before the close");
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "rate_limited");

    // Others are served as before.
    let mut other = WsClient::signed_in(&server.ws_url(), "bob").await;
    other.ping().await;
}

#[tokio::test]
async fn a_client_over_its_budget_for_a_moment_is_told_and_goes_on() {
    let env = Env::start().await;
    let server = env
        .gateway(&["--frame-rate", "1", "--frame-burst", "10"])
        .await;
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    for _ in 0..12 {
        client.send_text(r#"{"type":"ping"}"#.into()).await;
    }
    // Nine tokens were left after hello: nine pongs, then the error; the
    // frames after it are dropped without an answer.
    for _ in 0..9 {
        assert_eq!(client.next().await, ServerMessage::Pong);
    }
    client.expect_error(ErrorCode::RateLimited).await;
    // The bucket refills (a frame a second): the connection is usable again.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    client.ping().await;
}

#[tokio::test]
async fn connections_not_signed_in_are_capped_per_address() {
    let env = Env::start().await;
    let server = env
        .gateway(&["--max-unauthenticated-per-address", "3"])
        .await;
    let url = server.ws_url();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(WsClient::connect(&url).await);
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429)
        }
        other => panic!("a fourth connection not signed in is refused: {other:?}"),
    }
    // One signs in: its slot is free again.
    waiting[0].hello("ann").await;
    let mut fourth = WsClient::connect(&url).await;
    fourth.hello("bob").await;
    // A closed connection frees its slot too.
    drop(waiting.pop());
    let mut later = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            later = Some(ws);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(later.is_some(), "the closed connection's slot was freed");
}

// ---- web hygiene ---------------------------------------------------------------

/// A plain HTTP/1.1 GET: the status and the headers (names lower-cased).
async fn http_get(port: u16, path: &str) -> (u16, Vec<(String, String)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("a response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn static_responses_carry_the_security_headers_and_long_paths_are_not_errors() {
    let env = Env::start().await;
    let www = concat!(env!("CARGO_MANIFEST_DIR"), "/../www");
    let server = env.gateway(&["--static", www]).await;
    let port = server.port();
    for path in ["/", "/app.js", "/style.css", "/missing.js"] {
        let (status, headers) = http_get(port, path).await;
        let expected = if path == "/missing.js" { 404 } else { 200 };
        assert_eq!(status, expected, "{path}");
        assert_eq!(
            header(&headers, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        for directive in [
            "script-src 'self' 'wasm-unsafe-eval'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp:?}");
        }
        assert_eq!(
            header(&headers, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{path}");
    }
    // A path longer than a file name can be, and one longer than any URL served.
    let (status, _) = http_get(port, &format!("/{}", "a".repeat(300))).await;
    assert_eq!(status, 404, "a segment longer than a file name");
    let (status, _) = http_get(port, &format!("/{}", "a/".repeat(3_000))).await;
    assert_eq!(status, 414, "a path far too long");
    // The gateway is still fine.
    let (status, _) = http_get(port, "/").await;
    assert_eq!(status, 200);
}

/// Opens `/ws` with `origin` (none: as a non-browser client); the HTTP
/// status of a refusal, or `None` when the upgrade succeeded.
async fn ws_status_with_origin(url: &str, origin: Option<&str>) -> Option<u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a ws request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Some(response.status().as_u16())
        }
        Err(err) => panic!("connect: {err}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_are_checked_against_the_allowed_origins() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let url = server.ws_url();
    let own = format!("http://127.0.0.1:{}", server.port());
    assert_eq!(
        ws_status_with_origin(&url, None).await,
        None,
        "not a browser"
    );
    assert_eq!(
        ws_status_with_origin(&url, Some(&own)).await,
        None,
        "the page's own origin"
    );
    for other in [
        "http://evil.example",
        "http://127.0.0.1:1",
        "null",
        "https://app.example.com",
    ] {
        assert_eq!(
            ws_status_with_origin(&url, Some(other)).await,
            Some(403),
            "{other}"
        );
    }

    let listed = env
        .gateway(&["--allow-origin", "https://app.example.com"])
        .await;
    let url = listed.ws_url();
    let own = format!("http://127.0.0.1:{}", listed.port());
    for allowed in [Some("https://app.example.com"), Some(own.as_str()), None] {
        assert_eq!(
            ws_status_with_origin(&url, allowed).await,
            None,
            "{allowed:?}"
        );
    }
    assert_eq!(
        ws_status_with_origin(&url, Some("http://evil.example")).await,
        Some(403)
    );
    // An allowed browser client works as any other.
    let mut client = WsClient::signed_in(&url, "ann").await;
    client.ping().await;
}

// ---- memory under slow readers ---------------------------------------------------

/// The close code of a session whose client reads too slowly.
const SLOW_READER_CLOSE: u16 = 4008;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_over_their_queued_bytes_are_closed_with_their_code_and_others_are_served() {
    let env = Env::start().await;
    let big = big_feeds(&env, "slowmem").await;
    // A long send timeout: what closes the slow sessions is their queue's bytes.
    let server = env
        .gateway(&[
            "--max-queued-bytes",
            "2097152",
            "--send-timeout-ms",
            "60000",
        ])
        .await;
    let url = server.ws_url();
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut client = WsClient::connect_small_buffer(&url, server.port()).await;
        client.hello("bob").await;
        stop_reading(&mut client, &big).await;
        slow.push(client);
    }
    // A legitimate client of the same feeds meanwhile gets everything.
    let mut legit = WsClient::signed_in(&url, "ann").await;
    for feed in &big {
        legit.subscribe(feed.as_str()).await;
        legit.until_rev(feed, 8).await;
    }
    // 5 MiB of changes to a feed the stalled sessions follow: more than the
    // 2 MiB their queues may hold while their writes are blocked. The
    // legitimate client reads each before the next is made.
    let pad = "c".repeat(128 * 1024);
    for i in 0..40u64 {
        env.store
            .publish(
                &big[0],
                Some(&id(&format!("c{i}"))),
                &json!({ "pad": pad }),
                None,
            )
            .await
            .expect("publish");
        legit.until_rev(&big[0], 9 + i).await;
    }
    legit.ping().await;

    // The slow clients read again: what was sent before, then the close.
    for client in &mut slow {
        let close = loop {
            match client.next_frame().await {
                Frame::Message(_) => {}
                Frame::Closed(close) => break close,
            }
        };
        let close = close.expect("a close frame with a code");
        assert_eq!(u16::from(close.code), SLOW_READER_CLOSE, "{close:?}");
        assert!(
            close.reason.as_str().starts_with("slow_reader"),
            "{close:?}"
        );
        assert!(
            client.mirror.rev(&big[0]).is_none_or(|rev| rev < 48),
            "a closed slow reader did not get every change"
        );
    }
}
