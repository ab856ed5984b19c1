//! Authentication and read access at the gateway, with an access config file
//! like `config/demo.json`: bad tokens and protocol versions are refused and
//! the socket closed, and a user never receives a frame about a feed outside
//! their rules, whatever pattern they subscribe to, now or later.

use thoonk_system_tests::gateway as support;

use serde_json::json;
use support::{name, shard, ConfigFile, Env, WsClient};
use thoonk_protocol::{ClientMessage, ErrorCode, ServerMessage, PROTOCOL_VERSION};
use thoonk_testkit::ThoonkServer;

fn config() -> ConfigFile {
    ConfigFile::write(&json!({
        "users": [
            { "name": "ann", "token": "tok-ann", "teams": { "353": "admin" } },
            { "name": "bob", "token": "tok-bob", "teams": { "353": "member" } },
            { "name": "dan", "token": "tok-dan", "teams": { "7": "admin" } },
            { "name": "eve", "token": "tok-eve" }
        ],
        "read": ["team:<team>:**", "user:<user>:**", "demo:**"],
        "write": ["team:<team>:member:<user>:tasks", "user:<user>:**", "demo:**"],
        "admin": ["team:<admin_team>:**"]
    }))
}

async fn gateway(env: &Env, config: &ConfigFile) -> ThoonkServer {
    env.gateway(&["--config", config.path()]).await
}

#[tokio::test]
async fn a_user_never_receives_a_feed_outside_their_rules() {
    let env = Env::start().await;
    let config = config();
    // Team 353's feeds, one per pattern tried below, and dan's own.
    let secret = [
        name("team:353"),
        name("team:353:notes"),
        name("team:353:member:ann:tasks"),
        name("secrets"),
    ];
    for feed in &secret {
        env.publish_many(feed, "s", 1, 1).await;
    }
    let own = name("team:7:member:dan:tasks");
    env.publish_many(&own, "d", 1, 1).await;
    let server = gateway(&env, &config).await;

    let mut dan = WsClient::signed_in(&server.ws_url(), "tok-dan").await;
    let mut bob = WsClient::signed_in(&server.ws_url(), "tok-bob").await;
    let patterns = ["*", "team:*", "team:353:*", "team:*:member:*:tasks"].map(shard);
    for p in &patterns {
        dan.subscribe(p).await;
        bob.subscribe(p).await;
    }
    let mut dan_sees = Vec::new();
    for _ in &patterns {
        dan_sees.push(
            dan.until("subscribed", |m| match m {
                ServerMessage::Subscribed { pattern, feeds } => {
                    Some((pattern.to_string(), feeds.clone()))
                }
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(
        dan_sees,
        [
            (patterns[0].clone(), vec![]),
            (patterns[1].clone(), vec![]),
            (patterns[2].clone(), vec![]),
            (patterns[3].clone(), vec![own.clone()]),
        ]
    );
    dan.until_rev(&own, 1).await;

    // Bob, a member, is the control: the same patterns do reach these feeds.
    bob.until_rev(&name("team:353:notes"), 1).await;
    bob.until_rev(&name("team:353:member:ann:tasks"), 1).await;

    // Markers: feeds dan may read, one on every node (see `Env::pass_markers`).
    let markers = env.marker_feeds("demo").await;
    env.follow_markers(&mut dan, &markers).await;

    // Changes to existing team feeds, and team feeds created later that
    // match every pattern dan holds.
    for feed in &secret {
        env.publish_many(feed, "s", 2, 2).await;
    }
    let created = [
        name("team:353:member:bob:tasks"),
        name("team:353:plans"),
        name("team:354"),
        name("hidden"),
    ];
    for feed in &created {
        env.publish_many(feed, "c", 1, 2).await;
    }
    // Dan's own feed last, then the markers: once their changes arrive, the
    // hub and dan's session have handled every notice published before, on
    // any node.
    env.publish_many(&own, "d", 2, 1).await;
    dan.until_rev(&own, 2).await;
    env.pass_markers(&mut dan, &markers).await;
    dan.ping().await;

    bob.until_rev(&name("team:353:member:bob:tasks"), 2).await;
    bob.until_rev(&name("team:353:plans"), 2).await;
    bob.until_rev(&name("team:353:notes"), 3).await;

    let leaked: Vec<&String> = dan
        .log
        .iter()
        .filter(|frame| {
            secret
                .iter()
                .chain(&created)
                .any(|feed| frame.contains(&format!("\"{feed}\"")))
        })
        .collect();
    assert!(leaked.is_empty(), "dan received: {leaked:#?}");
    assert_eq!(
        dan.mirror
            .feeds
            .keys()
            .filter(|feed| !markers.contains(feed))
            .collect::<Vec<_>>(),
        [&own],
        "dan mirrors only his own feed (and the markers)"
    );

    // Claiming to mirror a forbidden feed (`known`) brings nothing of it.
    let ann_tasks = name("team:353:member:ann:tasks");
    let epoch = env.store.snapshot(&ann_tasks).await.unwrap().epoch;
    let mut again = WsClient::signed_in(&server.ws_url(), "tok-dan").await;
    again
        .subscribe_known(&patterns[3], &[(&ann_tasks, epoch, 0)])
        .await;
    again.until_rev(&own, 2).await;
    again.ping().await;
    assert!(
        again.log.iter().all(|f| !f.contains(ann_tasks.as_str())),
        "{:#?}",
        again.log
    );

    // Naming a forbidden feed outright is refused with `forbidden`, and the
    // connection stays usable.
    let notes = name("team:353:notes");
    dan.subscribe(notes.as_str()).await;
    let message = dan.expect_error(ErrorCode::Forbidden).await;
    assert!(message.contains(notes.as_str()), "{message}");
    dan.ping().await;
    let replay = ClientMessage::Replay {
        feed: notes,
        from: thoonk_protocol::FeedPosition { epoch: 0, rev: 0 },
    };
    dan.send(&replay).await;
    let frame = dan.next().await;
    assert!(
        matches!(frame, ServerMessage::Error { .. }),
        "a replay of a forbidden feed must be refused, got {frame:?}"
    );
    dan.ping().await;
}

#[tokio::test]
async fn patterns_with_glob_characters_are_refused() {
    let env = Env::start().await;
    let config = config();
    let notes = name("team:353:notes");
    env.publish_many(&notes, "s", 1, 1).await;
    let server = gateway(&env, &config).await;

    let mut eve = WsClient::signed_in(&server.ws_url(), "tok-eve").await;
    for bad in [
        "team:35?:notes",
        "team:[3]53:notes",
        "team:353*",
        "team:**",
        "team:\\353:notes",
        "team:3*:notes",
    ] {
        let frame = json!({"type": "subscribe", "pattern": bad}).to_string();
        eve.send_text(frame).await;
        eve.expect_error(ErrorCode::BadRequest).await;
    }
    eve.ping().await;
    assert!(eve.log.iter().all(|f| !f.contains(&format!("\"{notes}\""))));
    assert!(eve.mirror.feeds.is_empty());

    // A foreign Thoonk process may register names with glob characters; the
    // gateway never offers them, to a member or anyone else.
    let mut bob = WsClient::signed_in(&server.ws_url(), "tok-bob").await;
    bob.subscribe(&shard("team:353:*")).await;
    bob.until_rev(&notes, 1).await;
    let mut conn = env.conn().await;
    // Announced on the hubs' node: delivered to them at once, before any
    // message published later on any node of a cluster.
    let mut hub_node = env.hub_node().await;
    for foreign in ["team:353:*", "team:353:n?tes", "team:353:[x]"].map(shard) {
        let _: () = redis::cmd("SADD")
            .arg("feeds")
            .arg(&foreign)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("PUBLISH")
            .arg("newfeed")
            .arg(format!("{foreign}\0foreign"))
            .query_async(&mut hub_node)
            .await
            .unwrap();
    }
    // A later change of a followed feed marks the point where the hub has
    // passed the announcements; a new subscriber reads the registry.
    env.publish_many(&notes, "s", 2, 1).await;
    bob.until_rev(&notes, 2).await;
    let mut late = WsClient::signed_in(&server.ws_url(), "tok-bob").await;
    late.subscribe(&shard("team:353:*")).await;
    let feeds = late
        .until("subscribed", |m| match m {
            ServerMessage::Subscribed { feeds, .. } => Some(feeds.clone()),
            _ => None,
        })
        .await;
    assert_eq!(feeds, std::slice::from_ref(&notes));
    // (A frame naming an invalid feed would not even decode: the client
    // panics on it.) Bob follows exactly the one real feed.
    bob.ping().await;
    assert_eq!(bob.mirror.feeds.keys().collect::<Vec<_>>(), [&notes]);
}

#[tokio::test]
async fn a_bad_token_is_unauthorized_and_closed() {
    let env = Env::start().await;
    let config = config();
    let server = gateway(&env, &config).await;

    for token in ["nobody", "", "ann", "tok-ann "] {
        let mut client = WsClient::connect(&server.ws_url()).await;
        client
            .send(&ClientMessage::Hello {
                protocol: PROTOCOL_VERSION,
                token: token.into(),
                client_id: "c1".into(),
            })
            .await;
        client.expect_error(ErrorCode::Unauthorized).await;
        client.expect_closed().await;
    }

    // Anything but hello first is refused the same way.
    let mut client = WsClient::connect(&server.ws_url()).await;
    client.send(&ClientMessage::Ping).await;
    client.expect_error(ErrorCode::Unauthorized).await;
    client.expect_closed().await;

    // The right token still works.
    let mut ann = WsClient::connect(&server.ws_url()).await;
    assert_eq!(ann.hello("tok-ann").await, "ann");
    ann.ping().await;
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_and_closed() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;

    for protocol in [0, PROTOCOL_VERSION + 1] {
        let mut client = WsClient::connect(&server.ws_url()).await;
        client
            .send(&ClientMessage::Hello {
                protocol,
                token: "ann".into(),
                client_id: "c1".into(),
            })
            .await;
        let message = client.expect_error(ErrorCode::UnsupportedVersion).await;
        assert!(!message.is_empty());
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn a_feed_that_becomes_forbidden_is_no_longer_sent() {
    let env = Env::start().await;
    let feed = name("team:353:notes");
    let own = name("team:7:notes");
    env.publish_many(&feed, "n", 1, 2).await;
    env.publish_many(&own, "o", 1, 1).await;
    let member = ConfigFile::write(&json!({
        "users": [{ "name": "dan", "token": "tok-dan", "teams": { "353": "member", "7": "admin" } }],
        "read": ["team:<team>:**"]
    }));
    let server = gateway(&env, &member).await;
    let mut dan = WsClient::signed_in(&server.ws_url(), "tok-dan").await;
    let notes = shard("team:*:notes");
    dan.subscribe(&notes).await;
    dan.until_rev(&feed, 2).await;
    dan.until_rev(&own, 1).await;
    let epoch = dan.mirror.get(&feed).unwrap().epoch;
    drop(dan);
    drop(server);

    // The rules change (dan left team 353) and the gateway restarts with them;
    // dan comes back claiming what he mirrors of the team's feed.
    let former = ConfigFile::write(&json!({
        "users": [{ "name": "dan", "token": "tok-dan", "teams": { "7": "admin" } }],
        "read": ["team:<team>:**"]
    }));
    let server = gateway(&env, &former).await;
    let mut dan = WsClient::signed_in(&server.ws_url(), "tok-dan").await;
    dan.subscribe_known(&notes, &[(&feed, epoch, 1)]).await;
    let feeds = dan
        .until("subscribed", |m| match m {
            ServerMessage::Subscribed { feeds, .. } => Some(feeds.clone()),
            _ => None,
        })
        .await;
    assert_eq!(feeds, std::slice::from_ref(&own));
    dan.until_rev(&own, 1).await;
    // Markers dan may read, one on every node (see `Env::pass_markers`).
    let markers = env.marker_feeds("team:7").await;
    env.follow_markers(&mut dan, &markers).await;
    env.publish_many(&feed, "n", 3, 2).await;
    env.publish_many(&own, "o", 2, 1).await;
    dan.until_rev(&own, 2).await;
    env.pass_markers(&mut dan, &markers).await;
    dan.ping().await;
    assert!(
        dan.log.iter().all(|f| !f.contains(feed.as_str())),
        "{:#?}",
        dan.log
    );
    dan.subscribe(feed.as_str()).await;
    dan.expect_error(ErrorCode::Forbidden).await;
}
