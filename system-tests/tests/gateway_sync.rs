//! The gateway's subscription paths against a real Redis and a real
//! `thoonk-server`: snapshot on first subscribe, replay of the changes since a
//! known revision, reset on a new epoch, a deletion or a trimmed log, live events in
//! revision order under concurrent writers, and patterns that pick up feeds
//! created later.

use thoonk_system_tests::gateway as support;

use serde_json::json;
use support::{id, name, pattern, shard, Env, WsClient};
use thoonk_protocol::{ClientMessage, ErrorCode, FeedName, FeedPosition, ServerMessage};
use thoonk_server::feeds::{ConfigChange, FeedSettings, FeedType};

#[tokio::test]
async fn first_subscribe_gets_a_snapshot_then_live_events() {
    let env = Env::start().await;
    let feed = name("team:1:member:ann:tasks");
    env.publish_many(&feed, "t", 1, 3).await;
    env.store.retract(&feed, &id("t2"), None).await.unwrap();
    let state = env.store.snapshot(&feed).await.unwrap();
    assert_eq!(state.rev, 4);
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(feed.as_str()).await;
    assert_eq!(
        client.next().await,
        ServerMessage::Subscribed {
            pattern: pattern(feed.as_str()),
            feeds: vec![feed.clone()],
        }
    );
    assert_eq!(
        client.next().await,
        ServerMessage::Snapshot {
            feed: feed.clone(),
            epoch: state.epoch,
            rev: 4,
            items: state.items.clone(),
        }
    );
    assert_eq!(client.mirror.get(&feed).unwrap().ids(), ["t1", "t3"]);

    env.publish_many(&feed, "t", 4, 1).await;
    match client.next().await {
        ServerMessage::Event {
            feed: f,
            epoch,
            rev,
            change,
        } => {
            assert_eq!((f, epoch, rev), (feed.clone(), state.epoch, 5));
            assert_eq!(change.id, id("t4"));
            assert_eq!(change.item, Some(json!({"n": 4})));
        }
        other => panic!("expected the event of rev 5, got {other:?}"),
    }

    // A feed that does not exist yet: an empty snapshot at (0, 0), then its
    // first change under whatever epoch it gets.
    let later = name("team:1:member:bob:tasks");
    client.subscribe(later.as_str()).await;
    client
        .until("subscribed to the missing feed", |m| {
            matches!(m, ServerMessage::Subscribed { feeds, .. } if feeds == std::slice::from_ref(&later)).then_some(())
        })
        .await;
    assert_eq!(
        client.next().await,
        ServerMessage::Snapshot {
            feed: later.clone(),
            epoch: 0,
            rev: 0,
            items: vec![],
        }
    );
    env.publish_many(&later, "b", 1, 2).await;
    let mirror = client.until_rev(&later, 2).await;
    assert_eq!(mirror.ids(), ["b1", "b2"]);
    assert_eq!(
        mirror.epoch,
        env.store.snapshot(&later).await.unwrap().epoch
    );
}

#[tokio::test]
async fn a_known_revision_still_in_the_log_gets_the_changes_since() {
    let env = Env::start().await;
    let feed = name("team:1:notes");
    env.publish_many(&feed, "n", 1, 10).await;
    let epoch = env.store.snapshot(&feed).await.unwrap().epoch;
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client
        .subscribe_known(feed.as_str(), &[(&feed, epoch, 4)])
        .await;
    assert!(matches!(
        client.next().await,
        ServerMessage::Subscribed { .. }
    ));
    match client.next().await {
        ServerMessage::Changes {
            feed: f,
            epoch: e,
            events,
        } => {
            assert_eq!((f, e), (feed.clone(), epoch));
            let revs: Vec<u64> = events.iter().map(|e| e.rev).collect();
            assert_eq!(revs, (5..=10).collect::<Vec<_>>());
            assert_eq!(events[0].change.id, id("n5"));
        }
        other => panic!("expected changes 5..=10 and no snapshot, got {other:?}"),
    }

    // Live events continue right after the replay.
    env.publish_many(&feed, "n", 11, 2).await;
    client.until_rev(&feed, 12).await;

    // A replay from the current revision has nothing to send.
    let seen = client.log.len();
    client
        .send(&ClientMessage::Replay {
            feed: feed.clone(),
            from: FeedPosition { epoch, rev: 12 },
        })
        .await;
    client.ping().await;
    assert_nothing_but_pong(&client.log[seen..]);

    // A replay from an older revision: the mirror checks that the changes
    // continue exactly from there, so rewind it first.
    client.mirror.assume(&feed, epoch, 8);
    client
        .send(&ClientMessage::Replay {
            feed: feed.clone(),
            from: FeedPosition { epoch, rev: 8 },
        })
        .await;
    let revs = client
        .until("the replay from 8", |m| match m {
            ServerMessage::Changes { events, .. } => {
                Some(events.iter().map(|e| e.rev).collect::<Vec<_>>())
            }
            _ => None,
        })
        .await;
    assert_eq!(revs, (9..=12).collect::<Vec<_>>());

    // A client that is already up to date gets neither a snapshot nor changes.
    let mut current = WsClient::signed_in(&server.ws_url(), "bob").await;
    current
        .subscribe_known(feed.as_str(), &[(&feed, epoch, 12)])
        .await;
    assert!(matches!(
        current.next().await,
        ServerMessage::Subscribed { .. }
    ));
    current.ping().await;
    assert_nothing_but_pong(&current.log[2..]);
    env.publish_many(&feed, "n", 13, 1).await;
    current.until_rev(&feed, 13).await;

    // A client that claims a revision the feed never reached (a Redis restored
    // from an older backup) cannot be served from the log: a snapshot.
    let mut ahead = WsClient::signed_in(&server.ws_url(), "cat").await;
    ahead
        .subscribe_known(feed.as_str(), &[(&feed, epoch, 99)])
        .await;
    assert!(matches!(
        ahead.next().await,
        ServerMessage::Subscribed { .. }
    ));
    assert!(
        matches!(ahead.next().await, ServerMessage::Snapshot { rev: 13, items, .. } if items.len() == 13),
        "{:?}",
        ahead.tail()
    );
}

#[tokio::test]
async fn a_long_replay_comes_in_batches_of_at_most_500() {
    let env = Env::start().await;
    let feed = name("bulk");
    env.publish_many(&feed, "i", 1, 1200).await;
    let epoch = env.store.snapshot(&feed).await.unwrap().epoch;
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client
        .subscribe_known(feed.as_str(), &[(&feed, epoch, 0)])
        .await;
    client.until_rev(&feed, 1200).await;
    let batches: Vec<usize> = client
        .log
        .iter()
        .filter_map(|text| match serde_json::from_str(text).unwrap() {
            ServerMessage::Changes { events, .. } => Some(events.len()),
            ServerMessage::Snapshot { .. } => panic!("a snapshot where the log reaches back"),
            _ => None,
        })
        .collect();
    assert!(
        batches.iter().all(|&n| (1..=500).contains(&n)),
        "{batches:?}"
    );
    assert_eq!(batches.iter().sum::<usize>(), 1200);
    assert_eq!(client.mirror.get(&feed).unwrap().items.len(), 1200);
}

/// A replay goes out page by page as it is read: the pages read before one
/// that cannot be read (its log entry corrupt) still reach the client, and
/// its position moves past them.
#[tokio::test]
async fn a_replay_sends_each_page_before_reading_the_next() {
    let env = Env::start().await;
    let feed = name("paged");
    env.publish_many(&feed, "i", 1, 1200).await;
    let epoch = env.store.snapshot(&feed).await.unwrap().epoch;
    // Rewrites the log with the entry of revision 501 (the first of the
    // second page) unreadable.
    let log = format!("feed.log:{feed}");
    let mut redis = env.conn().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&log)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1200);
    let _: () = redis::cmd("DEL")
        .arg(&log)
        .query_async(&mut redis)
        .await
        .unwrap();
    for (id, fields) in entries {
        let mut add = redis::cmd("XADD");
        add.arg(&log).arg(&id);
        for (name, value) in fields {
            let value = if id == "501-0" && name == "op" {
                "unknown".into()
            } else {
                value
            };
            add.arg(name).arg(value);
        }
        let _: String = add.query_async(&mut redis).await.unwrap();
    }
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client
        .subscribe_known(feed.as_str(), &[(&feed, epoch, 0)])
        .await;
    assert!(matches!(
        client.next().await,
        ServerMessage::Subscribed { .. }
    ));
    match client.next().await {
        ServerMessage::Changes { events, .. } => {
            let revs: Vec<u64> = events.iter().map(|e| e.rev).collect();
            assert_eq!(revs, (1..=500).collect::<Vec<_>>());
        }
        other => panic!("expected the first page, changes 1..=500, got {other:?}"),
    }
    assert!(matches!(
        client.next().await,
        ServerMessage::Error {
            code: ErrorCode::Internal,
            ..
        }
    ));
    assert_eq!(client.mirror.get(&feed).unwrap().rev, 500);
}

#[tokio::test]
async fn a_new_epoch_gets_a_snapshot() {
    let env = Env::start().await;
    let feed = name("team:2:notes");
    env.publish_many(&feed, "old", 1, 3).await;
    let old = env.store.snapshot(&feed).await.unwrap().epoch;
    assert!(env.store.delete(&feed).await.unwrap());
    env.publish_many(&feed, "new", 1, 2).await;
    let new = env.store.snapshot(&feed).await.unwrap();
    assert_ne!(new.epoch, old);
    assert_eq!(new.rev, 2);
    let server = env.gateway(&[]).await;

    // The client mirrors rev 3 of the old epoch: more than the new epoch's
    // rev 2, and a replay "since 3" would be meaningless anyway.
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client
        .subscribe_known(feed.as_str(), &[(&feed, old, 3)])
        .await;
    assert!(matches!(
        client.next().await,
        ServerMessage::Subscribed { .. }
    ));
    assert_eq!(
        client.next().await,
        ServerMessage::Snapshot {
            feed: feed.clone(),
            epoch: new.epoch,
            rev: 2,
            items: new.items.clone(),
        }
    );

    // Old epoch, revision lower than the new one: still a snapshot, never changes.
    let mut behind = WsClient::signed_in(&server.ws_url(), "bob").await;
    behind
        .subscribe_known(feed.as_str(), &[(&feed, old, 1)])
        .await;
    assert!(matches!(
        behind.next().await,
        ServerMessage::Subscribed { .. }
    ));
    assert!(
        matches!(behind.next().await, ServerMessage::Snapshot { epoch, rev: 2, .. } if epoch == new.epoch),
        "{:?}",
        behind.tail()
    );
}

#[tokio::test]
async fn a_feed_deleted_and_recreated_while_followed_resets_to_the_new_epoch() {
    let env = Env::start().await;
    let feed = name("team:3:notes");
    env.publish_many(&feed, "old", 1, 3).await;
    let old = env.store.snapshot(&feed).await.unwrap().epoch;
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(feed.as_str()).await;
    client.until_rev(&feed, 3).await;

    env.store.delete(&feed).await.unwrap();
    env.publish_many(&feed, "new", 1, 2).await;
    let new = env.store.snapshot(&feed).await.unwrap();
    assert_ne!(new.epoch, old);

    // The mirror refuses an event of another epoch without a snapshot, so
    // reaching the new state proves the reset came first.
    let deadline = tokio::time::Instant::now() + support::STREAM_WAIT;
    while client.mirror.get(&feed).unwrap().epoch != new.epoch
        || client.mirror.rev(&feed) != Some(2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached the new epoch; last frames: {:#?}",
            client.tail()
        );
        client.next().await;
    }
    let mirror = client.mirror.get(&feed).unwrap();
    assert_eq!(mirror.ids(), ["new1", "new2"]);
    // The reset is a snapshot of the new epoch, or the epoch-0 snapshot that
    // announced the deletion (the new epoch's events then follow from (0, 0)).
    assert!(mirror
        .snapshots
        .iter()
        .any(|&(e, _)| e == new.epoch || e == 0));
}

#[tokio::test]
async fn a_feed_deleted_while_followed_is_announced_as_an_epoch_0_snapshot() {
    let env = Env::start().await;
    let feed = name("team:3:gone");
    env.publish_many(&feed, "old", 1, 2).await;
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(feed.as_str()).await;
    client.until_rev(&feed, 2).await;

    env.store.delete(&feed).await.unwrap();
    let deadline = tokio::time::Instant::now() + support::STREAM_WAIT;
    loop {
        let frame = client.next().await;
        if let ServerMessage::Snapshot {
            feed: f,
            epoch,
            rev,
            items,
        } = &frame
        {
            assert_eq!((f, *epoch, *rev), (&feed, 0, 0));
            assert!(items.is_empty());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deletion was never announced; last frames: {:#?}",
            client.tail()
        );
    }
}

#[tokio::test]
async fn a_log_trimmed_past_the_known_revision_gets_a_snapshot() {
    let env = Env::start().await;
    let feed = name("team:4:notes");
    env.store
        .create(&feed, &FeedSettings::new(FeedType::Feed))
        .await
        .unwrap();
    env.publish_many(&feed, "n", 1, 40).await;
    let (epoch, rev) = env
        .store
        .configure(
            &feed,
            &ConfigChange {
                retention: Some(5),
                ..ConfigChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rev, 40);
    let history = env.store.history(&feed, 0, 1).await.unwrap();
    assert_eq!(history.oldest, 36, "retention 5 keeps revisions 36..=40");
    let server = env.gateway(&[]).await;

    // Rev 35 is the oldest position the log can still serve (36 is the next change).
    let mut edge = WsClient::signed_in(&server.ws_url(), "ann").await;
    edge.subscribe_known(feed.as_str(), &[(&feed, epoch, 35)])
        .await;
    assert!(matches!(
        edge.next().await,
        ServerMessage::Subscribed { .. }
    ));
    match edge.next().await {
        ServerMessage::Changes { events, .. } => {
            let revs: Vec<u64> = events.iter().map(|e| e.rev).collect();
            assert_eq!(revs, (36..=40).collect::<Vec<_>>());
        }
        other => panic!("expected changes 36..=40, got {other:?}"),
    }

    for known in [34, 10, 0] {
        let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
        client
            .subscribe_known(feed.as_str(), &[(&feed, epoch, known)])
            .await;
        assert!(matches!(
            client.next().await,
            ServerMessage::Subscribed { .. }
        ));
        match client.next().await {
            ServerMessage::Snapshot {
                epoch: e,
                rev,
                items,
                ..
            } => {
                assert_eq!((e, rev, items.len()), (epoch, 40, 40), "known rev {known}");
            }
            other => panic!("known rev {known}: expected a snapshot, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_arrive_in_revision_order_under_concurrent_writers() {
    const WRITERS: usize = 4;
    const EACH: usize = 100;
    let env = Env::start().await;
    let feeds = [name("burst:a"), name("burst:b")];
    let server = env.gateway(&[]).await;

    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(&shard("burst:*")).await;
    for feed in &feeds {
        client.subscribe(feed.as_str()).await;
    }
    for feed in &feeds {
        client
            .until("the empty snapshot", |m| {
                matches!(m, ServerMessage::Snapshot { feed: f, .. } if f == feed).then_some(())
            })
            .await;
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = env.other_store().await;
        let feed = feeds[w % feeds.len()].clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                store
                    .publish(
                        &feed,
                        Some(&id(&format!("w{w}-{i}"))),
                        &json!({"w": w, "i": i}),
                        None,
                    )
                    .await
                    .expect("publish");
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let per_feed = (WRITERS / feeds.len() * EACH) as u64;
    for feed in &feeds {
        let stored = env.store.snapshot(feed).await.unwrap();
        assert_eq!(stored.rev, per_feed);
        let mirror = client.until_rev(feed, per_feed).await;
        assert_eq!(
            mirror.items(),
            stored.items,
            "{feed}: mirror and store differ"
        );
        assert_eq!(mirror.events.len() as u64, per_feed);
    }
}

#[tokio::test]
async fn a_pattern_picks_up_feeds_created_later() {
    let env = Env::start().await;
    let first = name("team:5:member:ann:tasks");
    env.publish_many(&first, "a", 1, 2).await;
    let server = env.gateway(&[]).await;

    let tasks = pattern("team:5:member:*:tasks");
    let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
    client.subscribe(tasks.as_str()).await;
    assert_eq!(
        client.next().await,
        ServerMessage::Subscribed {
            pattern: tasks.clone(),
            feeds: vec![first.clone()],
        }
    );
    client.until_rev(&first, 2).await;

    // Created by its first publish.
    let second = name("team:5:member:bob:tasks");
    env.publish_many(&second, "b", 1, 3).await;
    client
        .until("the announcement of the new feed", |m| match m {
            ServerMessage::Subscribed { pattern: p, feeds } => {
                assert_eq!(p, &tasks);
                assert_eq!(feeds, std::slice::from_ref(&second));
                Some(())
            }
            _ => None,
        })
        .await;
    assert_eq!(client.until_rev(&second, 3).await.ids(), ["b1", "b2", "b3"]);

    // Created empty, then written.
    let third = name("team:5:member:cat:tasks");
    env.store
        .create(&third, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    client
        .until("the announcement of the empty feed", |m| match m {
            ServerMessage::Subscribed { feeds, .. } => {
                assert_eq!(feeds, std::slice::from_ref(&third));
                Some(())
            }
            _ => None,
        })
        .await;
    env.store
        .publish(&third, Some(&id("c1")), &json!("x"), None)
        .await
        .unwrap();
    client.until_rev(&third, 1).await;

    // A feed that does not match is never mentioned; later changes of
    // followed feeds on every node (the markers) mark the point where the
    // hub has passed it.
    let markers = env.marker_feeds("barrier").await;
    env.follow_markers(&mut client, &markers).await;
    let other = name("team:5:member:dan:notes");
    env.publish_many(&other, "o", 1, 2).await;
    env.publish_many(&first, "a", 3, 1).await;
    client.until_rev(&first, 3).await;
    env.pass_markers(&mut client, &markers).await;
    client.ping().await;
    assert!(
        client.log.iter().all(|f| !f.contains(other.as_str())),
        "{other} was sent: {:#?}",
        client.log
    );

    // After unsubscribe, neither changes nor new feeds of the pattern arrive.
    client
        .send(&ClientMessage::Unsubscribe {
            pattern: tasks.clone(),
        })
        .await;
    client.ping().await;
    let seen = client.log.len();
    env.publish_many(&first, "a", 4, 1).await;
    env.publish_many(&name("team:5:member:eve:tasks"), "e", 1, 1)
        .await;
    env.pass_markers(&mut client, &markers).await;
    client.ping().await;
    // Any frame naming a feed of team 5 (the prefix maps like a name).
    let team = shard("team:5:");
    let after: Vec<&String> = client.log[seen..]
        .iter()
        .filter(|f| f.contains(&team))
        .collect();
    assert!(after.is_empty(), "sent after unsubscribe: {after:#?}");
}

/// Frames that bring nothing: `pong`, or a `changes` frame without events.
fn assert_nothing_but_pong(frames: &[String]) {
    for text in frames {
        match serde_json::from_str(text).unwrap() {
            ServerMessage::Pong => {}
            ServerMessage::Changes { events, .. } if events.is_empty() => {}
            other => panic!("expected nothing for an up-to-date client, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscribed_while_feeds_are_being_created_misses_none() {
    const FEEDS: usize = 300;
    const CLIENTS: usize = 8;
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(WsClient::signed_in(&server.ws_url(), "ann").await);
    }

    // Feeds are created one after the other while the clients subscribe,
    // one every few feeds.
    let writer = {
        let store = env.other_store().await;
        tokio::spawn(async move {
            for i in 0..FEEDS {
                let feed = name(&format!("race:{i}:x"));
                store
                    .publish(&feed, Some(&id("only")), &json!(i), None)
                    .await
                    .unwrap();
            }
        })
    };
    let mut started = 0;
    while started < CLIENTS {
        let created = env.store.feeds().await.unwrap().len();
        if created >= (started + 1) * FEEDS / (CLIENTS + 2) {
            clients[started].subscribe(&shard("race:*:x")).await;
            started += 1;
        } else {
            tokio::task::yield_now().await;
        }
    }
    writer.await.unwrap();

    let all: Vec<FeedName> = (0..FEEDS).map(|i| name(&format!("race:{i}:x"))).collect();
    let mut missed = Vec::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let complete = |m: &support::ReceivedFeeds| all.iter().all(|f| m.rev(f) == Some(1));
        if !client.read_until(complete).await {
            let lacking: Vec<&FeedName> = all
                .iter()
                .filter(|f| client.mirror.rev(f) != Some(1))
                .collect();
            missed.push(format!("client {n} lacks {lacking:?}"));
        }
    }
    assert!(missed.is_empty(), "feeds never announced: {missed:#?}");
}

// The checker the tests above rely on: the mirror refuses what a correct
// gateway never sends.

fn event(epoch: u64, rev: u64, item: &str) -> ServerMessage {
    ServerMessage::Event {
        feed: name("f"),
        epoch,
        rev,
        change: thoonk_protocol::Change {
            op: thoonk_protocol::ChangeOp::Publish,
            id: id(item),
            item: Some(json!(item)),
            position: Some(thoonk_protocol::Position::End),
            prev: None,
            job: None,
        },
    }
}

fn mirror_at(epoch: u64, rev: u64) -> support::ReceivedFeeds {
    let mut mirror = support::ReceivedFeeds::default();
    mirror.apply(&ServerMessage::Snapshot {
        feed: name("f"),
        epoch,
        rev,
        items: vec![],
    });
    mirror
}

#[test]
fn the_mirror_applies_dense_revisions() {
    let mut mirror = mirror_at(7, 2);
    mirror.apply(&event(7, 3, "a"));
    mirror.apply(&event(7, 4, "b"));
    assert_eq!(mirror.get(&name("f")).unwrap().ids(), ["a", "b"]);
    // A feed that did not exist (0, 0) takes its first change of any epoch.
    let mut fresh = mirror_at(0, 0);
    fresh.apply(&event(9, 1, "a"));
    assert_eq!(fresh.rev(&name("f")), Some(1));
}

#[test]
#[should_panic(expected = "a gap or a repeat")]
fn the_mirror_refuses_a_gap() {
    mirror_at(7, 2).apply(&event(7, 4, "a"));
}

#[test]
#[should_panic(expected = "a gap or a repeat")]
fn the_mirror_refuses_a_repeat() {
    mirror_at(7, 2).apply(&event(7, 2, "a"));
}

#[test]
#[should_panic(expected = "without a snapshot")]
fn the_mirror_refuses_another_epoch_without_a_snapshot() {
    mirror_at(7, 2).apply(&event(8, 3, "a"));
}

#[test]
#[should_panic(expected = "before any snapshot")]
fn the_mirror_refuses_an_event_of_an_unknown_feed() {
    support::ReceivedFeeds::default().apply(&event(7, 1, "a"));
}
