//! Sharded fan-out (`--fanout sharded`) on a local Redis Cluster: a gateway
//! subscribes (SSUBSCRIBE) only to the hash tags its clients follow, on the
//! shards that own them, and holds no pattern subscription; patterns that
//! name their tag work as with broadcast fan-out, and deliver the same
//! streams; a name or pattern without a tag is refused with `bad_request`;
//! after a primary fails over, the gateway resubscribes and its clients
//! converge.

use thoonk_system_tests::gateway as support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::{
    id, name, publish_round_through_failover, until_converged, until_failed_over,
    write_rounds_and_converge, WsClient,
};
use thoonk_protocol::{ClientMessage, ErrorCode, FeedPattern};
use thoonk_server::feeds::FeedStore;
use thoonk_server::redis_target::RedisTarget;
use thoonk_testkit::{server_bin, RedisCluster, ThoonkServer};

/// A sharded gateway; the adopter, which listens to every feed's events,
/// runs elsewhere (`work --adopt`) in such a deployment.
const SHARDED: [&str; 5] = ["--queue", "{changes}", "--fanout", "sharded", "--no-adopt"];

/// A plain connection to the node on `port`.
async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The sharded channels subscribed on any node.
async fn shard_channels(cluster: &RedisCluster) -> BTreeSet<String> {
    let mut channels = BTreeSet::new();
    for port in cluster.ports() {
        let on_node: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query_async(&mut node(port).await)
            .await
            .unwrap();
        channels.extend(on_node);
    }
    channels
}

/// How many connections hear a classic change notice: a probe published on
/// every node counts the subscribers on that node (a hub's pattern
/// subscription matches it wherever the hub listens).
async fn classic_notice_listeners(cluster: &RedisCluster) -> usize {
    let mut listeners = 0;
    for port in cluster.ports() {
        let heard: usize = redis::cmd("PUBLISH")
            .arg("feed.changes:{probe}:x")
            .arg("probe")
            .query_async(&mut node(port).await)
            .await
            .unwrap();
        listeners += heard;
    }
    listeners
}

/// Waits until the nodes' sharded channels are `want`.
async fn until_shard_channels(cluster: &RedisCluster, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|c| c.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let channels = shard_channels(cluster).await;
        if channels == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sharded channels {channels:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_gateway_subscribes_only_the_tags_its_clients_follow() {
    let cluster = RedisCluster::start(3, 0);
    let target = RedisTarget::parse(&cluster.url()).unwrap();
    let store = FeedStore::open(&target, "sharded-test").await.unwrap();
    let tasks = |team: u32, member: &str| name(&format!("team:{{{team}}}:member:{member}:tasks"));
    let feeds = [
        tasks(1, "ann"),
        tasks(1, "bob"),
        tasks(2, "ann"),
        tasks(3, "cat"),
    ];
    for feed in &feeds {
        store
            .publish(feed, Some(&id("seed")), &json!(0), None)
            .await
            .unwrap();
    }

    let sharded = ThoonkServer::start(server_bin(), &cluster.url(), &SHARDED);
    let mut ann = WsClient::signed_in(&sharded.ws_url(), "ann").await;

    ann.subscribe("team:{1}:member:*:tasks").await;
    ann.until_rev(&feeds[0], 1).await;
    ann.until_rev(&feeds[1], 1).await;
    let mut bob = WsClient::signed_in(&sharded.ws_url(), "bob").await;
    bob.subscribe("team:{2}:member:ann:tasks").await;
    bob.until_rev(&feeds[2], 1).await;
    until_shard_channels(&cluster, &["feed.tag.changes:{1}", "feed.tag.changes:{2}"]).await;
    assert_eq!(
        classic_notice_listeners(&cluster).await,
        0,
        "the sharded gateway does not hear every feed's notices"
    );
    // The same pattern on a broadcast gateway, for comparison: it hears them.
    let broadcast = ThoonkServer::start(server_bin(), &cluster.url(), &["--queue", "{changes}"]);
    let mut cat = WsClient::signed_in(&broadcast.ws_url(), "cat").await;
    cat.subscribe("team:{1}:member:*:tasks").await;
    cat.until_rev(&feeds[0], 1).await;
    cat.until_rev(&feeds[1], 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while classic_notice_listeners(&cluster).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broadcast gateway never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writes on every shard, and a feed of team 1 created now (the pattern
    // finds it through its tag's channel and `newfeed`).
    let new = tasks(1, "dan");
    for round in 1..=5 {
        for feed in feeds.iter().chain([&new]) {
            store
                .publish(feed, Some(&id(&format!("r{round}"))), &json!(round), None)
                .await
                .unwrap();
        }
    }
    // A change through the sharded gateway: its outcome comes back too.
    let submit = json!({"type": "submit", "change": {
        "id": "test-ann:1",
        "op": {"kind": "publish", "feed": feeds[0].as_str(), "id": "from-ws", "item": {"t": 1}},
        "base": {},
    }});
    ann.send_text(submit.to_string()).await;
    let outcome = ann.until_outcome("test-ann:1").await;
    assert!(
        matches!(outcome, thoonk_protocol::Outcome::Accepted { .. }),
        "{outcome:?}"
    );
    for client in [&mut ann, &mut cat] {
        for feed in [&feeds[0], &feeds[1], &new] {
            until_converged(client, &store, feed).await;
        }
        assert!(
            client.mirror.get(&feeds[2]).is_none() && client.mirror.get(&feeds[3]).is_none(),
            "no other team's feed reached the client"
        );
    }
    until_converged(&mut bob, &store, &feeds[2]).await;
    // (The feed created meanwhile may start from different snapshots.)
    for feed in [&feeds[0], &feeds[1]] {
        assert_eq!(
            ann.mirror.get(feed).unwrap().events,
            cat.mirror.get(feed).unwrap().events,
            "{feed}: sharded and broadcast fan-out deliver the same stream"
        );
    }

    // Without a tag the gateway cannot route a pattern: refused, nothing else changes.
    ann.send(&ClientMessage::Subscribe {
        pattern: FeedPattern::new("team:*:member:ann:tasks").unwrap(),
        known: Default::default(),
    })
    .await;
    let message = ann.expect_error(ErrorCode::BadRequest).await;
    assert!(message.contains("hash tag"), "{message}");

    // When the last follower of a tag leaves, its channel is dropped.
    drop(bob);
    until_shard_channels(&cluster, &["feed.tag.changes:{1}"]).await;
    store
        .publish(&feeds[0], Some(&id("after")), &json!("after"), None)
        .await
        .unwrap();
    until_converged(&mut ann, &store, &feeds[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_gateway_resubscribes_after_a_failover_and_clients_converge() {
    let mut cluster = RedisCluster::start(3, 1);
    let ports = cluster.ports();
    let target = RedisTarget::parse(&cluster.url()).unwrap();
    let store = FeedStore::open(&target, "sharded-failover").await.unwrap();
    let feeds: Vec<_> = (1..=6)
        .map(|n| name(&format!("team:{{{n}}}:tasks")))
        .collect();
    publish_round_through_failover(&store, &feeds, 0).await;
    let gateway = ThoonkServer::start(server_bin(), &cluster.url(), &SHARDED);
    let mut client = WsClient::signed_in(&gateway.ws_url(), "ann").await;
    for n in 1..=6 {
        client.subscribe(&format!("team:{{{n}}}:*")).await;
    }
    for feed in &feeds {
        client.until_rev(feed, 1).await;
    }
    for round in 1..3 {
        publish_round_through_failover(&store, &feeds, round).await;
    }
    for feed in &feeds {
        client.until_rev(feed, 3).await;
    }
    // Let the replicas catch up: this test is about the subscriptions, not
    // about writes a crash may lose (docs/SECURITY.md).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Not the first node, where the hub's classic subscription listens: its
    // reconnect would resync every session anyway. The second primary's
    // tags must come back through the sharded subscriptions alone.
    cluster.kill9(1);
    until_failed_over(&ports, 1).await;
    write_rounds_and_converge(&store, &feeds, &mut client, 3..6).await;
}
