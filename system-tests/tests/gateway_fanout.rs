//! Fan-out across gateway processes and across Redis pub/sub outages: two
//! gateways on one Redis deliver identical ordered streams, and a gateway
//! whose pub/sub connection is killed recovers every missed revision from
//! the change logs, so no gap ever reaches a client.

use thoonk_system_tests::gateway as support;

use std::time::Duration;

use serde_json::json;
use support::{id, name, shard, Env, WsClient};
use thoonk_protocol::{FeedName, ServerMessage};

async fn wait_for_snapshot(client: &mut WsClient, feed: &FeedName) {
    client
        .until("the first snapshot", |m| {
            matches!(m, ServerMessage::Snapshot { feed: f, .. } if f == feed).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_deliver_identical_ordered_streams() {
    const EACH: usize = 120;
    let env = Env::start().await;
    let feeds = [
        name("team:9:member:ann:tasks"),
        name("team:9:member:bob:tasks"),
    ];
    env.publish_many(&feeds[0], "pre", 1, 3).await;
    let one = env.gateway(&[]).await;
    let two = env.gateway(&[]).await;

    // On each gateway: one client by pattern, one by feed names.
    let mut clients = Vec::new();
    for server in [&one, &two] {
        let mut by_pattern = WsClient::signed_in(&server.ws_url(), "ann").await;
        by_pattern.subscribe(&shard("team:9:member:*:tasks")).await;
        wait_for_snapshot(&mut by_pattern, &feeds[0]).await;
        let mut by_name = WsClient::signed_in(&server.ws_url(), "bob").await;
        for feed in &feeds {
            by_name.subscribe(feed.as_str()).await;
            wait_for_snapshot(&mut by_name, feed).await;
        }
        clients.push(by_pattern);
        clients.push(by_name);
    }

    // Concurrent writers on both feeds, publishes mixed with edits and retracts.
    let mut writers = Vec::new();
    for (w, feed) in feeds.iter().cycle().take(4).enumerate() {
        let store = env.other_store().await;
        let feed = feed.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let item_id = id(&format!("w{w}-{i}"));
                store
                    .publish(&feed, Some(&item_id), &json!({"w": w, "i": i}), None)
                    .await
                    .unwrap();
                if i % 10 == 9 {
                    store
                        .edit(&feed, &item_id, &json!({"edited": true}), None)
                        .await
                        .unwrap();
                    store.retract(&feed, &item_id, None).await.unwrap();
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    for feed in &feeds {
        let stored = env.store.snapshot(feed).await.unwrap();
        let mut streams = Vec::new();
        for client in &mut clients {
            let mirror = client.until_rev(feed, stored.rev).await.clone();
            assert_eq!(
                mirror.items(),
                stored.items,
                "{feed}: mirror and store differ"
            );
            streams.push(mirror.events);
        }
        // The pattern client on the second gateway learned of feeds[1] only
        // when it was created, so compare the revisions all four saw.
        let common = streams.iter().map(|s| s[0].rev).max().unwrap();
        let tail = |s: &Vec<thoonk_protocol::FeedEvent>| -> Vec<thoonk_protocol::FeedEvent> {
            s.iter().filter(|e| e.rev >= common).cloned().collect()
        };
        let first = tail(&streams[0]);
        assert_eq!(first.len() as u64, stored.rev - common + 1);
        for (n, stream) in streams.iter().enumerate().skip(1) {
            assert!(
                tail(stream) == first,
                "{feed}: client {n} saw another stream"
            );
        }
    }
}

/// Kills every pub/sub connection on the hubs' node (the gateways' hubs).
async fn kill_pubsub(env: &Env) -> usize {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut env.hub_node().await)
        .await
        .expect("CLIENT KILL TYPE pubsub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pubsub_connection_loses_no_revision() {
    let env = Env::start().await;
    let feed = name("team:8:notes");
    let quiet = name("team:8:quiet");
    env.publish_many(&feed, "pre", 1, 2).await;
    env.publish_many(&quiet, "q", 1, 1).await;
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(&shard("team:8:*")).await;
    client.until_rev(&feed, 2).await;
    client.until_rev(&quiet, 1).await;

    // Publishes continue while the hub's connection is killed twice.
    let writer = {
        let store = env.other_store().await;
        let feed = feed.clone();
        tokio::spawn(async move {
            for i in 3..=300 {
                store
                    .publish(&feed, Some(&id(&format!("n{i}"))), &json!({ "i": i }), None)
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(kill_pubsub(&env).await >= 1, "the hub's pub/sub connection");
        env.wait_for_hubs(1).await;
    }
    writer.await.unwrap();
    client.until_rev(&feed, 300).await;

    // Changes made while no gateway listens at all, and none after: only the
    // hub's resync from the change logs can bring them.
    // (Retried when the hub was back before the writes were done.)
    let mut late = 0;
    let mut quiet_rev = 1;
    for attempt in 1.. {
        assert!(attempt <= 5, "the hub always resubscribed before 3 writes");
        assert!(kill_pubsub(&env).await >= 1);
        env.publish_many(&feed, "late", late + 1, 2).await;
        env.publish_many(&quiet, "q", quiet_rev as usize + 1, 1)
            .await;
        late += 2;
        quiet_rev += 1;
        if env.hub_subscribers() == 0 {
            break;
        }
        env.wait_for_hubs(1).await;
    }
    let last = 300 + late as u64;
    let mirror = client.until_rev(&feed, last).await;
    let stored = env.store.snapshot(&feed).await.unwrap();
    assert_eq!(mirror.items(), stored.items);
    client.until_rev(&quiet, quiet_rev).await;

    // And the hub is subscribed again: live events flow.
    env.wait_for_hubs(1).await;
    env.publish_many(&feed, "after", 1, 1).await;
    client.until_rev(&feed, last + 1).await;
    client.ping().await;
}

#[tokio::test]
async fn a_feed_created_while_the_hub_was_disconnected_is_still_announced() {
    let env = Env::start().await;
    let known = name("team:6:notes");
    env.publish_many(&known, "n", 1, 1).await;
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(&shard("team:6:*")).await;
    client.until_rev(&known, 1).await;

    // The feed is created (and written) while no hub listens: its `newfeed`
    // announcement is lost, like its change notices.
    let created = name("team:6:plans");
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(
            attempt <= 5,
            "the hub always resubscribed before the writes were done"
        );
        assert!(kill_pubsub(&env).await >= 1);
        env.publish_many(&created, "p", attempt * 2 - 1, 2).await;
        if env.hub_subscribers() == 0 {
            break;
        }
        env.wait_for_hubs(1).await;
    }
    let rev = (attempt * 2) as u64;
    env.wait_for_hubs(1).await;

    client
        .until(
            "the announcement of the feed created during the outage",
            |m| match m {
                ServerMessage::Subscribed { feeds, .. } if feeds.contains(&created) => Some(()),
                _ => None,
            },
        )
        .await;
    client.until_rev(&created, rev).await;
}

#[tokio::test]
async fn a_resync_that_fails_is_not_forgotten() {
    let env = Env::start().await;
    let feed = name("team:5:notes");
    env.publish_many(&feed, "n", 1, 1).await;
    let server = env.gateway(&[]).await;
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(feed.as_str()).await;
    client.until_rev(&feed, 1).await;

    // Changes whose notices are lost (no hub listens), then Redis refuses
    // scripts (every node of a cluster) for longer than the gateway's Redis
    // client waits for a reply, so the resync after the hub's reconnect
    // cannot read the change log.
    let pause = thoonk_server::redis_target::RESPONSE_TIMEOUT + Duration::from_millis(1500);
    let mut rev = 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(
            attempt <= 5,
            "the hub always resubscribed before Redis was paused"
        );
        assert!(kill_pubsub(&env).await >= 1);
        env.publish_many(&feed, "lost", rev as usize, 2).await;
        rev += 2;
        env.on_every_node(
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(pause.as_millis() as u64)
                .arg("WRITE"),
        )
        .await;
        if env.hub_subscribers() == 0 {
            break;
        }
        // The hub was back first: its resync may have worked. Try again.
        env.on_every_node(redis::cmd("CLIENT").arg("UNPAUSE")).await;
        client.until_rev(&feed, rev).await;
    }

    // However the gateway copes — a retry, a `changes`, or closing the
    // connection so that the client resumes — the client must end up with
    // every revision. What it must not do is go quiet behind.
    let caught_up = client.read_until(|m| m.rev(&feed) == Some(rev)).await;
    if !caught_up {
        assert!(
            client.closed.is_some(),
            "stuck at rev {:?} of {rev} with the connection open; last frames: {:#?}",
            client.mirror.rev(&feed),
            client.tail()
        );
        let at = client.mirror.get(&feed).unwrap().clone();
        let mut again = WsClient::signed_in(&server.ws_url(), "ann").await;
        again
            .subscribe_known(feed.as_str(), &[(&feed, at.epoch, at.rev)])
            .await;
        again.until_rev(&feed, rev).await;
    }
}

#[tokio::test]
async fn changes_before_the_hubs_first_subscription_are_not_lost() {
    let env = Env::start().await;
    // ACL rules are per node: set on every node of a cluster alike.
    let acl = |args: &[&str]| {
        let mut cmd = redis::cmd("ACL");
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    };
    let store = &env.store;
    let feed = name("team:4:notes");
    store
        .publish(&feed, Some(&id("n1")), &json!(1), None)
        .await
        .unwrap();
    // Every client may still publish and subscribe to channels, but not
    // pattern-subscribe (a PSUBSCRIBE pattern must be listed literally),
    // which the hub needs.
    env.on_every_node(&acl(&["SETUSER", "default", "resetchannels", "&?*"]))
        .await;

    // The gateway serves sessions while its hub cannot subscribe yet.
    let server = env.spawn_gateway(&[]);
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(feed.as_str()).await;
    client.until_rev(&feed, 1).await;
    for n in 2..=3 {
        store
            .publish(&feed, Some(&id(&format!("n{n}"))), &json!(n), None)
            .await
            .unwrap();
    }
    assert_eq!(env.hub_subscribers(), 0, "no hub listened to these changes");

    // The hub may subscribe now; the client must then get what it missed.
    env.on_every_node(&acl(&["SETUSER", "default", "allchannels"]))
        .await;
    env.wait_for_hubs(1).await;
    let caught_up = client.read_until(|m| m.rev(&feed) == Some(3)).await;
    assert!(
        caught_up,
        "stuck at rev {:?} of 3 after the hub subscribed; last frames: {:#?}",
        client.mirror.rev(&feed),
        client.tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_gateway_after_a_crash_without_a_gap() {
    let env = Env::start().await;
    let feed = name("team:3:member:ann:tasks");
    env.publish_many(&feed, "pre", 1, 5).await;
    let mut one = env.gateway(&[]).await;
    let two = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&one.ws_url(), "ann").await;
    let tasks = shard("team:3:member:*:tasks");
    client.subscribe(&tasks).await;
    client.until_rev(&feed, 5).await;

    // Writes go on while the first gateway crashes.
    let writer = {
        let store = env.other_store().await;
        let feed = feed.clone();
        tokio::spawn(async move {
            for i in 6..=200 {
                store
                    .publish(&feed, Some(&id(&format!("n{i}"))), &json!({ "i": i }), None)
                    .await
                    .unwrap();
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    client.until_rev(&feed, 20).await;
    one.kill9();
    while client.closed.is_none() {
        client.next_frame().await;
    }
    let at = client.mirror.get(&feed).unwrap().clone();

    // Resume on the other gateway from the last applied revision, with
    // what the first connection mirrored.
    let mut resumed = WsClient::signed_in(&two.ws_url(), "ann").await;
    resumed.mirror.feeds.insert(feed.clone(), at.clone());
    resumed
        .subscribe_known(&tasks, &[(&feed, at.epoch, at.rev)])
        .await;
    writer.await.unwrap();
    let mirror = resumed.until_rev(&feed, 200).await.clone();
    assert_eq!(
        mirror.snapshots, at.snapshots,
        "the log reaches back: changes, not a snapshot"
    );
    assert_eq!(
        mirror.events.len() - at.events.len(),
        200 - at.rev as usize,
        "every revision after {} exactly once",
        at.rev
    );
    assert_eq!(
        mirror.items(),
        env.store.snapshot(&feed).await.unwrap().items
    );
}
