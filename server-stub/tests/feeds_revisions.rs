//! Revisions, the change log, replay, old item versions and epochs.

mod feeds_support;

use futures::future::join_all;

use feeds_support::{id, name, Env};
use serde_json::{json, Value};
use thoonk_protocol::{
    Change, ChangeOp, FeedEvent, FeedName, FeedPosition, Item, ItemId, Position,
};
use thoonk_server::feeds::{
    feed_keys, Applied, ChangeNotice, ConfigChange, FeedError, FeedSettings, FeedType, Since,
    Snapshot, CHANGE_CHANNEL_PATTERN, SNAPSHOT_PAGE,
};

#[tokio::test]
async fn revisions_stay_dense_under_concurrent_writers() {
    const WRITERS: usize = 8;
    const WRITES: usize = 40;
    let env = Env::start().await;
    let feed = name("{team:9}:busy");
    let mut rec = env.listen(&[], &[CHANGE_CHANNEL_PATTERN]).await;
    env.store
        .create(&feed, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = env.other_store().await;
        let feed = feed.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for n in 0..WRITES {
                let item = id(&format!("w{w}-{n}"));
                let applied = match n % 4 {
                    0 | 1 => store.publish(&feed, Some(&item), &json!(n), None).await,
                    2 => {
                        let prev = id(&format!("w{w}-{}", n - 1));
                        store.edit(&feed, &prev, &json!("edited"), None).await
                    }
                    _ => {
                        let prev = id(&format!("w{w}-{}", n - 3));
                        store.retract(&feed, &prev, None).await
                    }
                };
                revs.push(applied.unwrap().rev);
            }
            revs
        }));
    }
    let mut revs = Vec::new();
    for task in tasks {
        revs.extend(task.await.unwrap());
    }
    revs.sort_unstable();
    let total = (WRITERS * WRITES) as u64;
    assert_eq!(revs, (1..=total).collect::<Vec<_>>(), "no gap, no repeat");

    let history = env.store.history(&feed, 0, 10_000).await.unwrap();
    let logged: Vec<u64> = history.events.iter().map(|e| e.rev).collect();
    assert_eq!(logged, (1..=total).collect::<Vec<_>>());

    let notices: Vec<ChangeNotice> = rec
        .drain()
        .await
        .into_iter()
        .map(|(_, payload)| serde_json::from_slice(&payload).unwrap())
        .collect();
    let noticed: Vec<u64> = notices.iter().map(|n| n.rev).collect();
    assert_eq!(noticed, (1..=total).collect::<Vec<_>>());
    for (notice, event) in notices.iter().zip(&history.events) {
        assert_eq!(notice.feed, feed);
        assert_eq!(notice.epoch, history.epoch);
        assert_eq!(&notice.change, &event.change);
    }
}

/// Applies one logged change to a list of items, as a client would.
fn apply(items: &mut Vec<Item>, event: &FeedEvent) {
    let Change {
        op,
        id,
        item,
        position,
        ..
    } = &event.change;
    let at = |items: &Vec<Item>, id: &ItemId| items.iter().position(|i| &i.id == id);
    let place = |items: &mut Vec<Item>, entry: Item, position: &Option<Position>| {
        let index = match position {
            Some(Position::Begin) => 0,
            None | Some(Position::End) => items.len(),
            Some(Position::Before(rel)) => at(items, rel).expect("rel exists"),
            Some(Position::After(rel)) => at(items, rel).expect("rel exists") + 1,
        };
        items.insert(index, entry);
    };
    match op {
        ChangeOp::Publish => {
            let entry = Item {
                id: id.clone(),
                item: item.clone().unwrap(),
                rev: event.rev,
            };
            place(items, entry, position);
        }
        ChangeOp::Edit => {
            let index = at(items, id).expect("edited item exists");
            let mut entry = items.remove(index);
            entry.item = item.clone().unwrap();
            entry.rev = event.rev;
            match position {
                Some(_) => place(items, entry, position),
                None => items.insert(index, entry),
            }
        }
        ChangeOp::Retract => {
            let index = at(items, id).expect("retracted item exists");
            items.remove(index);
        }
        ChangeOp::Position => {
            let index = at(items, id).expect("moved item exists");
            let mut entry = items.remove(index);
            entry.rev = event.rev;
            place(items, entry, position);
        }
    }
}

#[tokio::test]
async fn replaying_the_log_rebuilds_the_snapshot() {
    let env = Env::start().await;
    let s = &env.store;
    let sorted = name("replay:sorted");
    let timed = name("replay:timed");
    s.create(&sorted, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    let settings = FeedSettings {
        kind: FeedType::Feed,
        max_length: Some(4),
        retention: None,
    };
    s.create(&timed, &settings).await.unwrap();

    // A deterministic mix of every operation.
    let mut seed: u64 = 7;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for step in 0..150u64 {
        let snap = s.snapshot(&sorted).await.unwrap();
        let pick = |k: u64| snap.items[(k as usize) % snap.items.len()].id.clone();
        let roll = next(6);
        if snap.items.len() < 2 || roll == 0 {
            let position = match next(4) {
                0 => Position::Begin,
                1 => Position::End,
                2 if !snap.items.is_empty() => Position::Before(pick(next(100))),
                _ if !snap.items.is_empty() => Position::After(pick(next(100))),
                _ => Position::End,
            };
            s.insert(&sorted, None, &json!({"step": step}), Some(&position), None)
                .await
                .unwrap();
        } else if roll == 1 {
            s.edit(&sorted, &pick(next(100)), &json!([step]), None)
                .await
                .unwrap();
        } else if roll == 2 {
            s.retract(&sorted, &pick(next(100)), None).await.unwrap();
        } else {
            let target = pick(next(100));
            let position = match next(4) {
                0 => Position::Begin,
                1 => Position::End,
                2 => Position::Before(pick(next(100))),
                _ => Position::After(pick(next(100))),
            };
            match s
                .move_item(&sorted, &target, &position, Some("mover"))
                .await
            {
                Ok(_) => {}
                Err(FeedError::BadPosition { .. }) => {} // placed relative to itself
                Err(other) => panic!("{other}"),
            }
        }
        let key = id(&format!("t{}", next(8)));
        if next(3) == 0 && s.get(&timed, &key).await.unwrap().item.is_some() {
            s.retract(&timed, &key, None).await.unwrap();
        } else {
            s.publish(&timed, Some(&key), &json!(step), None)
                .await
                .unwrap();
        }
    }

    for feed in [&sorted, &timed] {
        let snap = s.snapshot(feed).await.unwrap();
        let history = s.history(feed, 0, 100_000).await.unwrap();
        assert_eq!(history.oldest, 1);
        let mut items = Vec::new();
        for event in &history.events {
            apply(&mut items, event);
        }
        assert_eq!(
            Snapshot {
                epoch: history.epoch,
                rev: history.rev,
                items
            },
            snap,
            "{feed}"
        );
        // A client that saw half the changes catches up to the same state.
        let half = history.rev / 2;
        let Since::Changes { events, .. } = s
            .changes_since(
                feed,
                FeedPosition {
                    epoch: snap.epoch,
                    rev: half,
                },
            )
            .await
            .unwrap()
        else {
            panic!("the log reaches back")
        };
        assert_eq!(events, history.events[half as usize..]);
    }
}

#[tokio::test]
async fn old_item_versions_are_rebuilt_from_the_log() {
    let env = Env::start().await;
    let s = &env.store;
    let feed = name("versions");
    let x = id("x");
    let mut expected: Vec<Option<Value>> = vec![None]; // value of x at rev 0, 1, ...
    let mut write = |value: Option<Value>| expected.push(value);

    s.publish(&feed, Some(&x), &json!("v1"), None)
        .await
        .unwrap();
    write(Some(json!("v1")));
    s.publish(&feed, Some(&id("other")), &json!(0), None)
        .await
        .unwrap();
    write(Some(json!("v1")));
    s.edit(&feed, &x, &json!({"v": 2}), None).await.unwrap();
    write(Some(json!({"v": 2})));
    s.retract(&feed, &x, None).await.unwrap();
    write(None);
    s.edit(&feed, &id("other"), &json!(1), None).await.unwrap();
    write(None);
    s.publish(&feed, Some(&x), &json!([4]), None).await.unwrap();
    write(Some(json!([4])));

    for (rev, value) in expected.iter().enumerate() {
        let version = s.item_at(&feed, &x, rev as u64).await.unwrap();
        assert_eq!(&version.item, value, "x at rev {rev}");
        assert_eq!(version.rev, 6);
    }
    assert!(matches!(
        s.item_at(&feed, &x, 7).await,
        Err(FeedError::FutureRevision {
            rev: 7,
            current: 6,
            ..
        })
    ));

    // Once the log is trimmed, old versions are gone; recent ones are not.
    s.configure(
        &feed,
        &ConfigChange {
            max_length: None,
            retention: Some(2),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        s.item_at(&feed, &x, 2).await,
        Err(FeedError::HistoryGone {
            rev: 2,
            oldest: 5,
            ..
        })
    ));
    assert_eq!(s.item_at(&feed, &x, 4).await.unwrap().item, None);
    let read = s.get(&feed, &x).await.unwrap();
    assert_eq!(read.item.unwrap().rev, 6);
}

/// Publishes (or edits) item `item` of `feed` with `value` through the
/// suite's store.
async fn put(env: &Env, feed: &FeedName, item: &str, value: Value) -> Applied {
    env.store
        .publish(feed, Some(&id(item)), &value, None)
        .await
        .unwrap()
}

async fn position(env: &Env, feed: &thoonk_protocol::FeedName) -> FeedPosition {
    let snap = env.store.snapshot(feed).await.unwrap();
    FeedPosition {
        epoch: snap.epoch,
        rev: snap.rev,
    }
}

#[tokio::test]
async fn delete_and_recreate_starts_a_new_epoch() {
    let env = Env::start().await;
    let feed = name("again");
    put(&env, &feed, "a", json!(1)).await;
    put(&env, &feed, "b", json!(2)).await;
    let old = position(&env, &feed).await;
    assert!(env.store.delete(&feed).await.unwrap());
    assert_eq!(
        env.store.snapshot(&feed).await.unwrap(),
        Snapshot {
            epoch: 0,
            rev: 0,
            items: vec![]
        }
    );
    let fresh = put(&env, &feed, "c", json!(3)).await;
    assert_ne!(fresh.epoch, old.epoch);
    assert_eq!(fresh.rev, 1);
    let Since::Reset(snap) = env.store.changes_since(&feed, old).await.unwrap() else {
        panic!("an old epoch must reset");
    };
    assert_eq!(
        (snap.epoch, snap.rev, snap.items.len()),
        (fresh.epoch, 1, 1)
    );
}

#[tokio::test]
async fn flushall_makes_the_first_write_start_a_new_epoch() {
    let env = Env::start().await;
    let feed = name("flushed");
    put(&env, &feed, "a", json!(1)).await;
    let old = position(&env, &feed).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut env.conn().await)
        .await
        .unwrap();
    let fresh = put(&env, &feed, "b", json!(2)).await;
    assert_ne!(fresh.epoch, old.epoch);
    assert_eq!(fresh.rev, 1);
    assert!(matches!(
        env.store.changes_since(&feed, old).await.unwrap(),
        Since::Reset(_)
    ));
    assert_eq!(env.store.feeds().await.unwrap(), vec![feed]);
}

#[tokio::test]
async fn a_lost_log_or_classic_delete_starts_a_new_epoch() {
    let env = Env::start().await;
    let mut conn = env.conn().await;
    let feed = name("lost");
    put(&env, &feed, "a", json!(1)).await;
    let old = position(&env, &feed).await;

    // The change log vanishes: the revision goes on, under a new epoch.
    let _: () = redis::cmd("DEL")
        .arg(format!("feed.log:{}", name("lost")))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        env.store
            .changes_since(
                &feed,
                FeedPosition {
                    epoch: old.epoch,
                    rev: 0
                }
            )
            .await
            .unwrap(),
        Since::Reset(_)
    ));
    let next = put(&env, &feed, "b", json!(2)).await;
    assert_ne!(next.epoch, old.epoch);
    assert_eq!(next.rev, 2);
    assert!(matches!(
        env.store.changes_since(&feed, old).await.unwrap(),
        Since::Reset(_)
    ));
    assert!(matches!(
        env.store
            .changes_since(
                &feed,
                FeedPosition {
                    epoch: next.epoch,
                    rev: 1
                }
            )
            .await
            .unwrap(),
        Since::Changes { .. }
    ));

    // A classic peer deletes the feed (its own keys only) and creates it again.
    let _: () = redis::cmd("DEL")
        .arg(&[
            format!("feed.config:{}", name("lost")),
            format!("feed.ids:{}", name("lost")),
            format!("feed.items:{}", name("lost")),
            format!("feed.publishes:{}", name("lost")),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&[
            format!("feed.config:{}", name("lost")).as_str(),
            "type",
            "feed",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let recreated = put(&env, &feed, "c", json!(3)).await;
    assert_ne!(recreated.epoch, next.epoch);
    assert_eq!(recreated.rev, 1, "the old history is dropped");
    let history = env.store.history(&feed, 0, 10).await.unwrap();
    assert_eq!(history.events.len(), 1);
}

#[tokio::test]
async fn the_log_keeps_the_configured_retention() {
    let env = Env::start().await;
    let feed = name("short");
    let settings = FeedSettings {
        kind: FeedType::Feed,
        max_length: None,
        retention: Some(3),
    };
    let epoch = env.store.create(&feed, &settings).await.unwrap();
    for n in 0..250 {
        env.store
            .publish(&feed, Some(&id(&format!("i{n}"))), &json!(n), None)
            .await
            .unwrap();
    }
    // Writes trim whole stream nodes: at least `retention` entries stay, and
    // the log is contiguous up to the current revision.
    let history = env.store.history(&feed, 0, 1000).await.unwrap();
    let revs: Vec<u64> = history.events.iter().map(|e| e.rev).collect();
    assert!(
        revs.len() >= 3 && revs.len() < 250,
        "{} entries kept",
        revs.len()
    );
    assert_eq!(revs, (history.oldest..=250).collect::<Vec<_>>());

    // Configuring the retention trims exactly.
    env.store
        .configure(
            &feed,
            &ConfigChange {
                max_length: None,
                retention: Some(3),
            },
        )
        .await
        .unwrap();
    let history = env.store.history(&feed, 0, 1000).await.unwrap();
    assert_eq!(history.oldest, 248);
    assert_eq!(
        history.events.iter().map(|e| e.rev).collect::<Vec<_>>(),
        [248, 249, 250]
    );
    assert!(matches!(
        env.store
            .changes_since(&feed, FeedPosition { epoch, rev: 246 })
            .await
            .unwrap(),
        Since::Reset(_)
    ));
    let Since::Changes { events, .. } = env
        .store
        .changes_since(&feed, FeedPosition { epoch, rev: 247 })
        .await
        .unwrap()
    else {
        panic!("rev 248 is still logged");
    };
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn an_epoch_from_another_redis_process_is_renewed_once_keeping_items_and_revision() {
    let env = Env::start().await;
    let feed = name("team:4:renewed");
    put(&env, &feed, "a", json!(1)).await;
    let before = env.store.snapshot(&feed).await.unwrap();
    assert!(
        !env.store.renew_epoch_after_restart(&feed).await.unwrap(),
        "an epoch of this Redis process stays"
    );
    // As after a restart: the epoch began in another process.
    let _: () = redis::cmd("HSET")
        .arg(format!("feed.config:{feed}"))
        .arg("epoch_run")
        .arg("0123456789abcdef0123456789abcdef01234567")
        .query_async(&mut env.conn().await)
        .await
        .unwrap();
    assert!(env.store.renew_epoch_after_restart(&feed).await.unwrap());
    assert!(!env.store.renew_epoch_after_restart(&feed).await.unwrap());
    let after = env.store.snapshot(&feed).await.unwrap();
    assert!(after.epoch > before.epoch);
    assert_eq!((after.rev, after.items), (before.rev, before.items));
    // A client of the old epoch is answered with a snapshot of the new one.
    let position = thoonk_protocol::FeedPosition {
        epoch: before.epoch,
        rev: before.rev,
    };
    assert!(matches!(
        env.store.changes_since(&feed, position).await.unwrap(),
        Since::Reset(snapshot) if snapshot.epoch == after.epoch
    ));
    // The next change goes on from the revision, under the new epoch.
    let next = put(&env, &feed, "b", json!(2)).await;
    assert_eq!((next.epoch, next.rev), (after.epoch, before.rev + 1));
}

/// Every call of the function library has its own context: the server time
/// one call read is not reused by the next (a module-level clock, which the
/// library keeps between calls, would give a feed created later the very
/// epoch of an earlier one).
#[tokio::test]
async fn each_call_reads_the_server_time_afresh() {
    let env = Env::start().await;
    let settings = FeedSettings::new(FeedType::Feed);
    let first = env
        .store
        .create(&name("{team:9}:clock-a"), &settings)
        .await
        .unwrap();
    // Epochs are microseconds of the Redis clock: wait until it has passed
    // the first one.
    while env.redis_ms().await <= first / 1000 + 1 {
        tokio::task::yield_now().await;
    }
    let second = env
        .store
        .create(&name("{team:9}:clock-b"), &settings)
        .await
        .unwrap();
    assert!(
        second > first,
        "the second feed's epoch {second} is not later than the first's {first}"
    );
}

/// A feed of more than one page is read in pages, each call returning at
/// most [`SNAPSHOT_PAGE`] ids, all at the state of the first page: a page
/// asked for at another state fails with `CHANGED`. The store's snapshot and
/// replay put the pages together in order.
#[tokio::test]
async fn a_large_feed_is_read_in_pages_of_one_state() {
    let env = Env::start().await;
    let feed = name("{team:9}:large");
    env.store
        .create(&feed, &FeedSettings::new(FeedType::Feed))
        .await
        .unwrap();
    let count = 2 * SNAPSHOT_PAGE as usize + 5;
    let ids: Vec<String> = (0..count).map(|n| format!("i{n:05}")).collect();
    for chunk in ids.chunks(100) {
        let writes = chunk.iter().map(|i| {
            let (store, feed) = (&env.store, &feed);
            async move { store.publish(feed, Some(&id(i)), &json!(i), None).await }
        });
        for applied in join_all(writes).await {
            applied.unwrap();
        }
    }
    let written: Vec<String> = env
        .store
        .snapshot(&feed)
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| i.id.to_string())
        .collect();
    let mut sorted = written.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "every item once");

    // One page, as the function answers it.
    let page = SNAPSHOT_PAGE.to_string();
    let mut conn = env.conn().await;
    let reply: Vec<redis::Value> = redis::cmd("FCALL")
        .arg("thoonk_snapshot")
        .arg(8)
        .arg(&feed_keys(&feed))
        .arg(&["0", page.as_str()])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        reply.len(),
        7,
        "epoch, rev, ids, items, revs, total, publishes"
    );
    let first_ids: Vec<String> = redis::from_redis_value(reply[2].clone()).unwrap();
    assert_eq!(first_ids, written[..SNAPSHOT_PAGE as usize]);
    let pin: Vec<String> = [0, 1, 5, 6]
        .iter()
        .map(|&i| redis::from_redis_value::<String>(reply[i].clone()).unwrap())
        .collect();
    assert_eq!(pin[2], count.to_string(), "total");
    let second = |pin: Vec<String>| {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("thoonk_snapshot")
            .arg(8)
            .arg(&feed_keys(&feed))
            .arg(&[page.as_str(), page.as_str()])
            .arg(&pin);
        cmd
    };
    let next: Vec<redis::Value> = second(pin.clone()).query_async(&mut conn).await.unwrap();
    let next_ids: Vec<String> = redis::from_redis_value(next[2].clone()).unwrap();
    assert_eq!(
        next_ids,
        written[SNAPSHOT_PAGE as usize..2 * SNAPSHOT_PAGE as usize]
    );

    // A write between two pages: the next page refuses to mix states.
    put(&env, &feed, "late", json!("late")).await;
    let stale: Result<Vec<redis::Value>, _> = second(pin).query_async(&mut conn).await;
    assert_eq!(stale.unwrap_err().code(), Some("CHANGED"));

    // The store reads the whole feed, and replays its whole log, in pages.
    let snapshot = env.store.snapshot(&feed).await.unwrap();
    assert_eq!(snapshot.items.len(), count + 1);
    assert_eq!(snapshot.rev, count as u64 + 1);
    match env
        .store
        .changes_since(
            &feed,
            FeedPosition {
                epoch: snapshot.epoch,
                rev: 0,
            },
        )
        .await
        .unwrap()
    {
        Since::Changes { events, .. } => {
            let revs: Vec<u64> = events.iter().map(|e| e.rev).collect();
            assert_eq!(revs, (1..=count as u64 + 1).collect::<Vec<_>>());
        }
        other => panic!("expected the changes, got {other:?}"),
    }
    match env
        .store
        .changes_since(
            &feed,
            FeedPosition {
                epoch: snapshot.epoch + 1,
                rev: 0,
            },
        )
        .await
        .unwrap()
    {
        Since::Reset(reset) => assert_eq!(reset, snapshot),
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// A single Redis has no replication history to follow: writes to a feed
/// with a hash tag make no `INFO` call (whether Redis runs as a cluster is
/// read once per process), where each of them used to make one. (A cluster
/// node reads `INFO replication` once per call: failover changes it.)
#[tokio::test]
async fn writes_on_a_single_redis_make_no_info_call() {
    let env = Env::start().await;
    if env.target.is_cluster() {
        return;
    }
    let feed = name("{team:9}:quiet");
    env.store
        .create(&feed, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    put(&env, &feed, "first", json!(0)).await;
    let mut conn = env.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    for n in 0..10 {
        env.store
            .publish(&feed, Some(&id(&format!("i{n}"))), &json!(n), None)
            .await
            .unwrap();
    }
    env.store
        .edit(&feed, &id("i0"), &json!("e"), None)
        .await
        .unwrap();
    env.store.retract(&feed, &id("i1"), None).await.unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stats.contains("cmdstat_fcall:calls=12,"), "{stats}");
    assert!(!stats.contains("cmdstat_info:"), "{stats}");
}

/// The notice a change's Lua sends on `feed.changes:N` is the
/// `ChangeNotice` type, field for field: every kind of change (publish at
/// each position, edit, move, retract, with and without a job, a trim, an
/// edit of a value a classic peer stored as text that is not JSON, an
/// adopted change) is parsed as one, and serializing it again gives the
/// same JSON: no field the type lacks, no `null` for an absent field.
#[tokio::test]
async fn every_change_notice_is_a_change_notice_field_for_field() {
    use thoonk_server::interop::Adopter;

    let env = Env::start().await;
    let sorted = name("notices:sorted");
    let timed = name("notices:timed");
    let mut rec = env.listen(&[], &[CHANGE_CHANNEL_PATTERN]).await;
    env.store
        .create(&sorted, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    let bounded = FeedSettings {
        max_length: Some(2),
        ..FeedSettings::new(FeedType::Feed)
    };
    env.store.create(&timed, &bounded).await.unwrap();
    let store = &env.store;
    let change = |op, item_id: &str| Change {
        op,
        id: id(item_id),
        item: None,
        position: None,
        prev: None,
        job: None,
    };
    let mut expected: Vec<ChangeNotice> = Vec::new();
    let mut expect = |feed: &FeedName, epoch, rev, change: Change, adopted| {
        expected.push(ChangeNotice {
            feed: feed.clone(),
            epoch,
            rev,
            change,
            adopted,
        })
    };

    let a = store
        .publish(&sorted, Some(&id("a")), &json!({"t": "a"}), Some("c1:1"))
        .await
        .unwrap();
    let epoch = a.epoch;
    expect(
        &sorted,
        epoch,
        1,
        Change {
            item: Some(json!({"t": "a"})),
            position: Some(Position::End),
            job: Some("c1:1".into()),
            ..change(ChangeOp::Publish, "a")
        },
        false,
    );
    let begin = Position::Begin;
    store
        .publish_at(
            &sorted,
            Some(&id("b")),
            &json!([1, "two"]),
            Some(&begin),
            None,
        )
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        2,
        Change {
            item: Some(json!([1, "two"])),
            position: Some(Position::Begin),
            ..change(ChangeOp::Publish, "b")
        },
        false,
    );
    let before_a = Position::Before(id("a"));
    store
        .publish_at(
            &sorted,
            Some(&id("c \"q\"")),
            &json!("text"),
            Some(&before_a),
            None,
        )
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        3,
        Change {
            item: Some(json!("text")),
            position: Some(before_a.clone()),
            ..change(ChangeOp::Publish, "c \"q\"")
        },
        false,
    );
    let after_a = Position::After(id("a"));
    store
        .insert(
            &sorted,
            Some(&id("d")),
            &json!(true),
            Some(&after_a),
            Some("c1:2"),
        )
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        4,
        Change {
            item: Some(json!(true)),
            position: Some(after_a),
            job: Some("c1:2".into()),
            ..change(ChangeOp::Publish, "d")
        },
        false,
    );
    store
        .edit(&sorted, &id("a"), &json!({"t": "a2"}), Some("c2:1"))
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        5,
        Change {
            item: Some(json!({"t": "a2"})),
            prev: Some(json!({"t": "a"})),
            job: Some("c2:1".into()),
            ..change(ChangeOp::Edit, "a")
        },
        false,
    );
    let after_b = Position::After(id("b"));
    store
        .move_item(&sorted, &id("d"), &after_b, None)
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        6,
        Change {
            position: Some(after_b),
            ..change(ChangeOp::Position, "d")
        },
        false,
    );
    store
        .retract(&sorted, &id("b"), Some("c2:2"))
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        7,
        Change {
            prev: Some(json!([1, "two"])),
            job: Some("c2:2".into()),
            ..change(ChangeOp::Retract, "b")
        },
        false,
    );
    // A value a classic peer stored as text that is not JSON: read as the
    // JSON string holding it.
    let mut conn = env.conn().await;
    let _: i64 = redis::cmd("HSET")
        .arg(format!("feed.items:{}", sorted.as_str()))
        .arg("a")
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    store
        .edit(&sorted, &id("a"), &json!(3), None)
        .await
        .unwrap();
    expect(
        &sorted,
        epoch,
        8,
        Change {
            item: Some(json!(3)),
            prev: Some(json!("not json")),
            ..change(ChangeOp::Edit, "a")
        },
        false,
    );
    // A classic writer's new item, adopted.
    let _: () = redis::pipe()
        .cmd("RPUSH")
        .arg(format!("feed.ids:{}", sorted.as_str()))
        .arg("z")
        .ignore()
        .cmd("HSET")
        .arg(format!("feed.items:{}", sorted.as_str()))
        .arg("z")
        .arg(r#"{"z":1}"#)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let adopter = Adopter::open(&env.target).await.unwrap();
    adopter.adopt(&sorted).await.unwrap();
    expect(
        &sorted,
        epoch,
        9,
        Change {
            item: Some(json!({"z": 1})),
            position: Some(Position::End),
            ..change(ChangeOp::Publish, "z")
        },
        true,
    );

    // A time-ordered feed with max_length 2: the third publish trims the
    // oldest item first (a retract with its value), under the same job.
    let mut timed_epoch = 0;
    for (n, item_id) in ["x", "y", "w"].into_iter().enumerate() {
        let applied = store
            .publish(&timed, Some(&id(item_id)), &json!(n), Some("c3:1"))
            .await
            .unwrap();
        timed_epoch = applied.epoch;
    }
    for (rev, item_id) in [(1, "x"), (2, "y")] {
        expect(
            &timed,
            timed_epoch,
            rev,
            Change {
                item: Some(json!(rev - 1)),
                position: Some(Position::End),
                job: Some("c3:1".into()),
                ..change(ChangeOp::Publish, item_id)
            },
            false,
        );
    }
    expect(
        &timed,
        timed_epoch,
        3,
        Change {
            prev: Some(json!(0)),
            job: Some("c3:1".into()),
            ..change(ChangeOp::Retract, "x")
        },
        false,
    );
    expect(
        &timed,
        timed_epoch,
        4,
        Change {
            item: Some(json!(2)),
            position: Some(Position::End),
            job: Some("c3:1".into()),
            ..change(ChangeOp::Publish, "w")
        },
        false,
    );
    // An edit of a time-ordered feed also moves the item to the end.
    store
        .edit(&timed, &id("y"), &json!("y2"), None)
        .await
        .unwrap();
    expect(
        &timed,
        timed_epoch,
        5,
        Change {
            item: Some(json!("y2")),
            position: Some(Position::End),
            prev: Some(json!(1)),
            ..change(ChangeOp::Edit, "y")
        },
        false,
    );

    let received = rec.drain().await;
    // Per feed in revision order (a cluster interleaves nodes).
    let mut notices: Vec<(String, Value)> = received
        .iter()
        .map(|(channel, payload)| {
            let text = std::str::from_utf8(payload).unwrap();
            (channel.clone(), serde_json::from_str(text).unwrap())
        })
        .collect();
    notices.sort_by_key(|(channel, v)| (channel.clone(), v["rev"].as_u64()));
    expected.sort_by_key(|n| (format!("feed.changes:{}", n.feed.as_str()), n.rev));
    assert_eq!(notices.len(), expected.len(), "{notices:?}");
    for ((channel, json), want) in notices.into_iter().zip(&expected) {
        assert_eq!(channel, format!("feed.changes:{}", want.feed.as_str()));
        let notice: ChangeNotice = serde_json::from_value(json.clone())
            .unwrap_or_else(|err| panic!("{json} is not a ChangeNotice: {err}"));
        assert_eq!(
            serde_json::to_value(&notice).unwrap(),
            json,
            "the type holds every field of the notice, and only those"
        );
        assert_eq!(&notice, want, "{json}");
    }
}
