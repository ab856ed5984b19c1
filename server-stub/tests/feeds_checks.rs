//! Failed checks write nothing; trimming; names with `:` and `{}`; Redis Cluster slots.

mod feeds_support;

use std::collections::BTreeMap;
use std::time::Duration;

use feeds_support::{id, msg, name, Env, INSTANCE};
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::{ChangeOp, FeedName, FeedPosition, Position};
use thoonk_server::feeds::{
    feed_keys, ConfigChange, FeedError, FeedSettings, FeedStore, FeedType, Since,
};
use thoonk_server::redis_target::RedisConn;
use thoonk_testkit::RedisServer;

/// Every key of the database with its DUMP.
async fn dump_all(conn: &mut RedisConn) -> BTreeMap<String, Vec<u8>> {
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        out.insert(key, dump);
    }
    out
}

#[tokio::test]
async fn a_failed_check_writes_and_publishes_nothing() {
    let env = Env::start().await;
    let s = &env.store;
    let sorted = name("sorted");
    let timed = name("timed");
    let missing = name("missing");
    let job = name("jobs");
    s.create(&sorted, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    s.insert(&sorted, Some(&id("a")), &json!(1), None, None)
        .await
        .unwrap();
    s.insert(&sorted, None, &json!(2), None, None)
        .await
        .unwrap();
    let settings = FeedSettings {
        kind: FeedType::Feed,
        max_length: Some(1),
        retention: None,
    };
    s.create(&timed, &settings).await.unwrap();
    s.publish(&timed, Some(&id("t")), &json!(1), None)
        .await
        .unwrap();
    let mut conn = env.conn().await;
    let _: () = conn
        .hset(format!("feed.config:{}", name("jobs")), "type", "job")
        .await
        .unwrap();

    let mut rec = env.listen(&[], &["*"]).await;
    let before = dump_all(&mut conn).await;

    let nowhere = id("nowhere");
    let x = id("x");
    let results: Vec<(&str, Result<(), FeedError>)> = vec![
        (
            "edit missing item (sorted)",
            s.edit(&sorted, &nowhere, &json!(0), None).await.map(drop),
        ),
        (
            "edit missing item (timed)",
            s.edit(&timed, &nowhere, &json!(0), None).await.map(drop),
        ),
        (
            "edit in missing feed",
            s.edit(&missing, &x, &json!(0), None).await.map(drop),
        ),
        (
            "retract missing item",
            s.retract(&sorted, &nowhere, None).await.map(drop),
        ),
        (
            "move missing item",
            s.move_item(&sorted, &nowhere, &Position::Begin, None)
                .await
                .map(drop),
        ),
        (
            "move before missing ref",
            s.move_item(&sorted, &id("a"), &Position::Before(nowhere.clone()), None)
                .await
                .map(drop),
        ),
        (
            "move after itself",
            s.move_item(&sorted, &id("a"), &Position::After(id("a")), None)
                .await
                .map(drop),
        ),
        (
            "move in a time-ordered feed",
            s.move_item(&timed, &id("t"), &Position::Begin, None)
                .await
                .map(drop),
        ),
        (
            "insert after missing ref",
            s.insert(
                &sorted,
                None,
                &json!(0),
                Some(&Position::After(nowhere.clone())),
                None,
            )
            .await
            .map(drop),
        ),
        (
            "insert at begin of a time-ordered feed",
            s.insert(&timed, Some(&x), &json!(0), Some(&Position::Begin), None)
                .await
                .map(drop),
        ),
        (
            "insert an existing id",
            s.insert(&sorted, Some(&id("a")), &json!(0), None, None)
                .await
                .map(drop),
        ),
        (
            "publish into a job queue",
            s.publish(&job, Some(&x), &json!(0), None).await.map(drop),
        ),
        (
            "max_length on a sorted feed",
            s.configure(
                &sorted,
                &ConfigChange {
                    max_length: Some(1),
                    retention: None,
                },
            )
            .await
            .map(drop),
        ),
        (
            "retention 0",
            s.configure(
                &timed,
                &ConfigChange {
                    max_length: None,
                    retention: Some(0),
                },
            )
            .await
            .map(drop),
        ),
        (
            "insert at the start of a missing feed",
            s.insert(&missing, Some(&x), &json!(0), Some(&Position::Begin), None)
                .await
                .map(drop),
        ),
        ("delete a job queue", s.delete(&job).await.map(drop)),
        (
            "create an existing feed",
            s.create(&sorted, &FeedSettings::new(FeedType::SortedFeed))
                .await
                .map(drop),
        ),
        (
            "configure a missing feed",
            s.configure(&missing, &ConfigChange::default())
                .await
                .map(drop),
        ),
    ];
    for (what, result) in &results {
        let err = result.as_ref().expect_err(what);
        assert!(err.is_caller_error(), "{what}: {err}");
        match (*what, err) {
            (w, FeedError::ItemNotFound { .. }) if w.contains("missing item") => {}
            (
                "edit in missing feed"
                | "configure a missing feed"
                | "insert at the start of a missing feed",
                FeedError::FeedNotFound { .. },
            ) => {}
            (w, FeedError::BadPosition { .. })
                if w.contains("ref") || w.contains("itself") || w.contains("begin") => {}
            (w, FeedError::WrongFeedType { .. })
                if w.contains("time-ordered") || w.contains("job") => {}
            ("insert an existing id", FeedError::ItemExists { .. }) => {}
            ("max_length on a sorted feed" | "retention 0", FeedError::BadArgument { .. }) => {}
            ("create an existing feed", FeedError::FeedExists { .. }) => {}
            _ => panic!("{what}: unexpected error {err:?}"),
        }
    }
    assert_eq!(dump_all(&mut conn).await, before, "a failed check wrote");
    assert_eq!(rec.drain().await, vec![], "a failed check published");
}

#[tokio::test]
async fn trimming_retracts_the_oldest_and_never_over_trims() {
    let env = Env::start().await;
    let s = &env.store;
    let feed = name("capped");
    let settings = FeedSettings {
        kind: FeedType::Feed,
        max_length: Some(3),
        retention: None,
    };
    s.create(&feed, &settings).await.unwrap();
    let mut rec = env
        .listen(
            &[
                format!("feed.retract:{}", name("capped")),
                "conffeed".to_owned(),
            ],
            &[],
        )
        .await;
    for item in ["a", "b", "c"] {
        s.publish(&feed, Some(&id(item)), &json!(item), None)
            .await
            .unwrap();
    }
    // Edits of a full feed, including of its oldest item, trim nothing.
    s.publish(&feed, Some(&id("a")), &json!("a2"), None)
        .await
        .unwrap();
    s.edit(&feed, &id("b"), &json!("b2"), None).await.unwrap();
    let ids = |snap: thoonk_server::feeds::Snapshot| {
        snap.items
            .into_iter()
            .map(|i| i.id.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(s.snapshot(&feed).await.unwrap()), ["c", "a", "b"]);
    assert_eq!(rec.drain().await, vec![]);

    // A new item trims exactly one: the oldest.
    let d = s
        .publish(&feed, Some(&id("d")), &json!("d"), Some("job-7"))
        .await
        .unwrap();
    assert_eq!(ids(s.snapshot(&feed).await.unwrap()), ["a", "b", "d"]);
    let history = s.history(&feed, d.rev - 2, 10).await.unwrap();
    let trim = &history.events[0];
    assert_eq!(
        (trim.rev, trim.change.op, trim.change.id.as_str()),
        (d.rev - 1, ChangeOp::Retract, "c")
    );
    assert_eq!(trim.change.prev, Some(json!("c")));
    assert_eq!(trim.change.job.as_deref(), Some("job-7"));
    assert_eq!(history.events[1].change.op, ChangeOp::Publish);

    // Lowering max_length trims at once, each trim its own revision, before conffeed.
    let (_, rev) = s
        .configure(
            &feed,
            &ConfigChange {
                max_length: Some(1),
                retention: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rev, d.rev + 2);
    assert_eq!(ids(s.snapshot(&feed).await.unwrap()), ["d"]);
    assert_eq!(
        rec.drain().await,
        [
            msg(&format!("feed.retract:{}", name("capped")), "c"),
            msg(&format!("feed.retract:{}", name("capped")), "a"),
            msg(&format!("feed.retract:{}", name("capped")), "b"),
            msg("conffeed", &format!("{feed}\0{INSTANCE}")),
        ]
    );

    // 0 means unbounded.
    s.configure(
        &feed,
        &ConfigChange {
            max_length: Some(0),
            retention: None,
        },
    )
    .await
    .unwrap();
    for n in 0..5 {
        s.publish(&feed, Some(&id(&format!("n{n}"))), &json!(n), None)
            .await
            .unwrap();
    }
    assert_eq!(s.snapshot(&feed).await.unwrap().items.len(), 6);
}

async fn exercise(store: &FeedStore, feed: &FeedName) {
    store
        .create(feed, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    let a = store
        .publish(feed, Some(&id("a:{1}")), &json!(1), None)
        .await
        .unwrap();
    store
        .insert(
            feed,
            Some(&id("{b}")),
            &json!(2),
            Some(&Position::Before(id("a:{1}"))),
            None,
        )
        .await
        .unwrap();
    store
        .move_item(feed, &id("a:{1}"), &Position::Begin, None)
        .await
        .unwrap();
    store.edit(feed, &id("{b}"), &json!(3), None).await.unwrap();
    let snap = store.snapshot(feed).await.unwrap();
    assert_eq!(snap.rev, 4);
    let ids: Vec<&str> = snap.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a:{1}", "{b}"]);
    let since = store
        .changes_since(
            feed,
            FeedPosition {
                epoch: a.epoch,
                rev: 1,
            },
        )
        .await
        .unwrap();
    assert!(matches!(since, Since::Changes { ref events, .. } if events.len() == 3));
    assert_eq!(
        store.item_at(feed, &id("{b}"), 2).await.unwrap().item,
        Some(json!(2))
    );
    store.retract(feed, &id("a:{1}"), None).await.unwrap();
    assert!(store.feeds().await.unwrap().contains(feed));
    assert!(store.delete(feed).await.unwrap());
}

#[tokio::test]
async fn names_with_colons_and_braces_work() {
    let env = Env::start().await;
    for feed in [
        "team:1:member:7:tasks",
        "{team:1}:member:{7}:tasks",
        "}{odd}{",
    ] {
        let feed = name(feed);
        exercise(&env.store, &feed).await;
        let mut conn = env.conn().await;
        let left: Vec<String> = conn.keys("feed.*").await.unwrap();
        assert_eq!(left, Vec::<String>::new(), "{feed}: delete leaves nothing");
    }
    // Every key of a feed is exactly <prefix><name>.
    let feed = name("{team:1}:x");
    env.store
        .publish(&feed, Some(&id("i")), &json!(0), None)
        .await
        .unwrap();
    let mut conn = env.conn().await;
    for key in feed_keys(&feed) {
        if key.starts_with("feed.idincr:") {
            continue; // only sorted feeds number their items
        }
        let exists: bool = conn.exists(&key).await.unwrap();
        assert!(exists, "{key}");
    }
}

/// A one-node Redis Cluster owning every slot: scripts whose keys span
/// slots fail with CROSSSLOT, exactly as on a real cluster.
async fn cluster_node() -> RedisServer {
    let redis = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg(&["ADDSLOTSRANGE", "0", "16383"])
        .query_async(&mut conn)
        .await
        .unwrap();
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.contains("cluster_state:ok") {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_feed_with_a_hash_tag_runs_on_redis_cluster() {
    let redis = cluster_node().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let store = FeedStore::open(&client, INSTANCE).await.unwrap();
    exercise(&store, &name("{team:1}:tasks")).await;
    let timed = name("{team:2}:news");
    store
        .publish(&timed, None, &json!("x"), None)
        .await
        .unwrap();
    store
        .configure(
            &timed,
            &ConfigChange {
                max_length: Some(1),
                retention: Some(5),
            },
        )
        .await
        .unwrap();
    store
        .publish(&timed, None, &json!("y"), None)
        .await
        .unwrap();
    assert_eq!(store.snapshot(&timed).await.unwrap().items.len(), 1);

    // Without a hash tag the keys of one feed land in different slots.
    let err = store
        .publish(&FeedName::new("untagged").unwrap(), None, &json!(0), None)
        .await
        .unwrap_err();
    assert!(matches!(err, FeedError::Redis(_)), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("crossslot"),
        "{err}"
    );
}

#[tokio::test]
async fn scripts_validate_names_for_every_caller() {
    let env = Env::start().await;
    env.store
        .publish(&name("f"), Some(&id("i")), &json!(0), None)
        .await
        .unwrap();
    let mut conn = env.conn().await;
    let before = dump_all(&mut conn).await;
    let publish = redis::Script::new(&format!(
        "{}\n{}",
        thoonk_server::feeds::PRELUDE,
        include_str!("../lua/publish.lua")
    ));
    let call = |keys: Vec<String>, item_id: &str| {
        let mut invocation = publish.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(&["upsert", item_id, "", "1", "", "", ""]);
        invocation
    };
    let good = feed_keys(&name("f"));
    let long = "x".repeat(257);
    // Every key ends with the name: `f*` is no feed name.
    let bad_name: Vec<String> = good.iter().map(|k| format!("{k}*")).collect();
    let mut wrong_order = good.to_vec();
    wrong_order.swap(1, 2);
    let cases = [
        (good.to_vec(), "a\0b", "BADNAME"),
        (good.to_vec(), long.as_str(), "BADNAME"),
        (bad_name, "a", "BADNAME"),
        (wrong_order, "a", "BADKEYS"),
        (good[..7].to_vec(), "a", "BADKEYS"),
    ];
    for (keys, item_id, code) in cases {
        let err = call(keys, item_id)
            .invoke_async::<redis::Value>(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code), "{err}");
    }
    assert_eq!(dump_all(&mut conn).await, before);
}
