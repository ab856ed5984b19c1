//! Adoption of foreign writes: real thoonk.py processes write feeds and
//! sorted feeds; `adopt.lua` gives each change a revision and a change-log
//! entry exactly once, and a reader of the log ends where the classic keys are.

mod interop_support;

use interop_support::*;
use redis::AsyncCommands;
use serde_json::{json, Value};
use thoonk_protocol::{ChangeOp, FeedName, Position};
use thoonk_server::interop::{adopted_key, AdoptMode, Adopter};
use thoonk_server::redis_target::RedisConn;

async fn adopt_new(
    env: &Env,
    adopter: &Adopter,
    feed: &thoonk_protocol::FeedName,
    seen: &mut usize,
) -> Vec<String> {
    let adopted = adopter.adopt(feed).await.expect("adopt");
    let log = full_log(&env.store, feed).await;
    assert_eq!(adopted.rev, log.len() as u64);
    let new = ops(&log[*seen..]);
    assert_eq!(adopted.changes as usize, new.len());
    *seen = log.len();
    let again = adopter.adopt(feed).await.expect("adopt again");
    assert_eq!(again.changes, 0, "a second run adopts nothing");
    assert_eq!(again.rev, adopted.rev);
    new
}

/// The classic state as thoonk.py reads it: ids in order, values as readers
/// see them (JSON, or a JSON string for other text).
async fn py_view(py: &mut Py, feed: &str) -> Vec<(String, Value)> {
    let ids = py.call(json!({"op": "ids", "feed": feed})).await;
    let items = py.call(json!({"op": "items", "feed": feed})).await;
    ids.as_array()
        .expect("ids")
        .iter()
        .map(|i| {
            let i = i.as_str().unwrap().to_owned();
            let text = items[&i].as_str().unwrap();
            let value = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
            (i, value)
        })
        .collect()
}

async fn assert_consistent(env: &Env, py: &mut Py, feed: &str) {
    let log = full_log(&env.store, &name(feed)).await;
    let replayed = ReceivedFeed::replayed(&name(feed), &log);
    let snapshot = snapshot_items(&env.store, &name(feed)).await;
    assert_eq!(
        replayed.values(),
        snapshot,
        "{feed}: the log replays to the snapshot"
    );
    assert_eq!(
        py_view(py, feed).await,
        snapshot,
        "{feed}: thoonk.py reads the same"
    );
}

#[tokio::test]
async fn each_thoonk_py_change_gets_one_revision_in_order() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "notes", "type": "feed"}))
        .await;
    py.call(json!({"op": "create", "feed": "tasks", "type": "sorted_feed"}))
        .await;
    let (notes, tasks) = (name("notes"), name("tasks"));
    let (mut n, mut t) = (0, 0);

    // A time-ordered feed.
    py.call(json!({"op": "publish", "feed": "notes", "id": "a", "item": "{\"n\":1}"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &notes, &mut n).await,
        ["publish a"]
    );
    let epoch = env.store.info(&notes).await.unwrap().unwrap().epoch;
    assert!(epoch > 0, "the first adoption starts the feed's epoch");
    py.call(json!({"op": "publish", "feed": "notes", "id": "b", "item": "plain text"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &notes, &mut n).await,
        ["publish b"]
    );
    py.call(json!({"op": "publish", "feed": "notes", "id": "a", "item": "{\"n\":2}"}))
        .await;
    assert_eq!(adopt_new(&env, &adopter, &notes, &mut n).await, ["edit a"]);
    // thoonk.py scores in seconds; adopted items get milliseconds, in log order.
    let mut conn = env.conn().await;
    let scores: Vec<(String, f64)> = conn
        .zrange_withscores(format!("feed.ids:{notes}"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        scores.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert!(scores.iter().all(|s| s.1 > 1e11), "{scores:?}");
    py.call(json!({"op": "retract", "feed": "notes", "id": "b"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &notes, &mut n).await,
        ["retract b"]
    );
    let log = full_log(&env.store, &notes).await;
    assert_eq!(log[1].change.item, Some(json!("plain text")));
    assert_eq!(log[2].change.prev, Some(json!({"n": 1})), "an edit's prev");
    assert_eq!(log[2].change.position, Some(Position::End));
    assert_eq!(
        log[3].change.prev,
        Some(json!("plain text")),
        "a retract's prev"
    );
    assert_consistent(&env, &mut py, "notes").await;

    // A sorted feed.
    let one = py
        .call(json!({"op": "append", "feed": "tasks", "item": "{\"t\":1}"}))
        .await;
    assert_eq!(one, "1");
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["publish 1"]
    );
    py.call(json!({"op": "append", "feed": "tasks", "item": "{\"t\":2}"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["publish 2"]
    );
    py.call(json!({"op": "prepend", "feed": "tasks", "item": "{\"t\":3}"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["publish 3"]
    );
    py.call(json!({"op": "after", "feed": "tasks", "rel": "1", "item": "{\"t\":4}"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["publish 4"]
    );
    // thoonk.py announces this edit on feed.publish: it is still an edit.
    py.call(json!({"op": "edit", "feed": "tasks", "id": "2", "item": "{\"t\":22}"}))
        .await;
    assert_eq!(adopt_new(&env, &adopter, &tasks, &mut t).await, ["edit 2"]);
    py.call(json!({"op": "move", "feed": "tasks", "pos": ":end", "id": "3"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["position 3"]
    );
    py.call(json!({"op": "move", "feed": "tasks", "pos": "begin:", "id": "2"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["position 2"]
    );
    py.call(json!({"op": "move", "feed": "tasks", "pos": ":1", "id": "4"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["position 4"]
    );
    py.call(json!({"op": "retract", "feed": "tasks", "id": "1"}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &tasks, &mut t).await,
        ["retract 1"]
    );
    let log = full_log(&env.store, &tasks).await;
    assert_eq!(log[2].change.position, Some(Position::Begin), "prepend");
    assert_eq!(
        log[3].change.position,
        Some(Position::After(id("1"))),
        "publish_after"
    );
    assert_eq!(log[4].change.prev, Some(json!({"t": 2})));
    assert_consistent(&env, &mut py, "tasks").await;
    let snapshot = snapshot_items(&env.store, &tasks).await;
    let ids: Vec<&str> = snapshot.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, ["2", "4", "3"]);
}

#[tokio::test]
async fn a_burst_of_changes_is_adopted_as_the_difference_and_replays_exactly() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "s", "type": "sorted_feed"}))
        .await;
    for i in 0..8 {
        py.call(json!({"op": "append", "feed": "s", "item": format!("{{\"i\":{i}}}")}))
            .await;
    }
    adopter.adopt(&name("s")).await.unwrap();
    // Many changes between two runs (as when pub/sub dropped the notices).
    for (pos, item) in [
        ("begin:", "8"),
        (":end", "1"),
        ("3:", "7"),
        (":5", "2"),
        ("begin:", "6"),
    ] {
        py.call(json!({"op": "move", "feed": "s", "pos": pos, "id": item}))
            .await;
    }
    py.call(json!({"op": "edit", "feed": "s", "id": "4", "item": "four"}))
        .await;
    py.call(json!({"op": "retract", "feed": "s", "id": "5"}))
        .await;
    py.call(json!({"op": "before", "feed": "s", "rel": "6", "item": "{\"new\":1}"}))
        .await;
    py.call(json!({"op": "append", "feed": "s", "item": "{\"new\":2}"}))
        .await;
    let adopted = adopter.adopt(&name("s")).await.unwrap();
    assert!(adopted.changes >= 4, "{adopted:?}");
    assert_eq!(adopter.adopt(&name("s")).await.unwrap().changes, 0);
    assert_consistent(&env, &mut py, "s").await;

    py.call(json!({"op": "create", "feed": "f", "type": "feed"}))
        .await;
    for i in 0..5 {
        py.call(
            json!({"op": "publish", "feed": "f", "id": format!("k{i}"), "item": format!("{i}")}),
        )
        .await;
    }
    py.call(json!({"op": "publish", "feed": "f", "id": "k1", "item": "11"}))
        .await;
    py.call(json!({"op": "retract", "feed": "f", "id": "k3"}))
        .await;
    let adopted = adopter.adopt(&name("f")).await.unwrap();
    assert_eq!(
        adopted.changes, 4,
        "k0 k2 k4 and k1 (its latest value), not k3"
    );
    assert_consistent(&env, &mut py, "f").await;
}

#[tokio::test]
async fn our_own_writes_are_never_adopted_and_mix_with_foreign_ones() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    let s = name("mixed");
    env.store
        .create(
            &s,
            &thoonk_server::feeds::FeedSettings::new(thoonk_server::feeds::FeedType::SortedFeed),
        )
        .await
        .unwrap();
    env.store
        .insert(
            &s,
            Some(&id("ours1")),
            &json!({"by": "us"}),
            None,
            Some("c:1"),
        )
        .await
        .unwrap();
    assert_eq!(adopter.adopt(&s).await.unwrap().changes, 0);
    py.call(json!({"op": "append", "feed": "mixed", "item": "{\"by\":\"py\"}"}))
        .await;
    env.store
        .insert(
            &s,
            Some(&id("ours2")),
            &json!({"by": "us"}),
            Some(&Position::Begin),
            None,
        )
        .await
        .unwrap();
    env.store
        .move_item(&s, &id("ours1"), &Position::End, None)
        .await
        .unwrap();
    let adopted = adopter.adopt(&s).await.unwrap();
    assert_eq!(adopted.changes, 1, "only the thoonk.py append");
    env.store
        .edit(&s, &id("ours2"), &json!({"by": "us", "v": 2}), None)
        .await
        .unwrap();
    py.call(json!({"op": "retract", "feed": "mixed", "id": "ours2"}))
        .await;
    assert_eq!(adopter.adopt(&s).await.unwrap().changes, 1);
    let log = full_log(&env.store, &s).await;
    assert_eq!(
        ops(&log),
        [
            "publish ours1",
            "publish ours2",
            "position ours1",
            "publish 1",
            "edit ours2",
            "retract ours2"
        ],
        "the append is adopted at the run after our writes, placed where it is"
    );
    assert_eq!(log[5].change.prev, Some(json!({"by": "us", "v": 2})));
    assert_consistent(&env, &mut py, "mixed").await;
}

#[tokio::test]
async fn concurrent_adopters_adopt_each_change_exactly_once() {
    let env = Env::start().await;
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "busy", "type": "sorted_feed"}))
        .await;
    let feed = name("busy");
    let mut adopters = Vec::new();
    for _ in 0..4 {
        adopters.push(Adopter::open(&env.target).await.unwrap());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for adopter in adopters {
        let (feed, stop) = (feed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut total = 0;
            loop {
                let done = stop.load(std::sync::atomic::Ordering::Acquire);
                total += adopter.adopt(&feed).await.unwrap().changes;
                if done {
                    return total;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for i in 0..20 {
        let reply = py
            .call(json!({"op": "append", "feed": "busy", "item": format!("{i}")}))
            .await;
        if i % 3 == 0 {
            py.call(json!({"op": "move", "feed": "busy", "pos": "begin:", "id": reply}))
                .await;
        }
        if i % 5 == 4 {
            py.call(json!({"op": "edit", "feed": "busy", "id": reply, "item": "\"edited\""}))
                .await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let log = full_log(&env.store, &feed).await;
    assert_eq!(
        total as usize,
        log.len(),
        "every revision was adopted by exactly one run"
    );
    let publishes = log
        .iter()
        .filter(|e| e.change.op == ChangeOp::Publish)
        .count();
    assert_eq!(publishes, 20, "each item was published once");
    assert_consistent(&env, &mut py, "busy").await;
}

#[tokio::test]
async fn a_lost_mirror_or_a_classic_delete_adopts_nothing_twice() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "f", "type": "feed"}))
        .await;
    for i in 0..3 {
        py.call(json!({"op": "publish", "feed": "f", "id": format!("x{i}"), "item": "1"}))
            .await;
    }
    let feed = name("f");
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 3);
    let mut conn = env.conn().await;
    let _: () = conn.del(adopted_key(&feed)).await.unwrap();
    assert_eq!(
        adopter.adopt(&feed).await.unwrap().changes,
        0,
        "rebuilt from the log"
    );
    // A feed that does not exist, or a job queue, is left alone.
    assert_eq!(adopter.adopt(&name("nothing")).await.unwrap().changes, 0);
    py.call(json!({"op": "create", "feed": "q", "type": "job"}))
        .await;
    assert_eq!(adopter.adopt(&name("q")).await.unwrap().rev, 0);
}

#[tokio::test]
async fn a_sweep_compares_fingerprints_a_check_sorted_feeds_in_full_and_a_full_run_everything() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "s", "type": "sorted_feed"}))
        .await;
    for i in 0..3 {
        py.call(json!({"op": "append", "feed": "s", "item": format!("{i}")}))
            .await;
    }
    let s = name("s");
    assert_eq!(adopter.sweep(&s).await.unwrap().changes, 3, "a new feed");
    assert_eq!(adopter.sweep(&s).await.unwrap().changes, 0);
    py.call(json!({"op": "edit", "feed": "s", "id": "2", "item": "\"two\""}))
        .await;
    assert_eq!(
        adopter.sweep(&s).await.unwrap().changes,
        1,
        "an edit counts in feed.publishes"
    );
    py.call(json!({"op": "retract", "feed": "s", "id": "1"}))
        .await;
    assert_eq!(adopter.sweep(&s).await.unwrap().changes, 1, "one item less");
    // Our own write changes the fingerprint; the sweep replays it, adopts nothing.
    env.store
        .insert(&s, Some(&id("ours")), &json!(1), None, None)
        .await
        .unwrap();
    assert_eq!(adopter.sweep(&s).await.unwrap().changes, 0);
    // A move leaves the fingerprint alone: only a full run finds it.
    py.call(json!({"op": "move", "feed": "s", "pos": "begin:", "id": "3"}))
        .await;
    assert_eq!(adopter.sweep(&s).await.unwrap().changes, 0);
    // `check` compares a sorted feed in full, so it finds a move too.
    assert_eq!(adopter.check(&s).await.unwrap().changes, 1);
    py.call(json!({"op": "move", "feed": "s", "pos": "begin:", "id": "2"}))
        .await;
    assert_eq!(adopter.adopt(&s).await.unwrap().changes, 1);
    assert_consistent(&env, &mut py, "s").await;

    // A time-ordered feed: `check` is a fingerprint sweep, and every
    // thoonk.py write changes the fingerprint.
    py.call(json!({"op": "create", "feed": "t", "type": "feed"}))
        .await;
    let t = name("t");
    for (i, title) in ["a", "b"].iter().enumerate() {
        py.call(json!({"op": "publish", "feed": "t", "id": format!("t{i}"), "item": format!("\"{title}\"")}))
            .await;
    }
    assert_eq!(adopter.check(&t).await.unwrap().changes, 2);
    assert_eq!(adopter.check(&t).await.unwrap().changes, 0);
    py.call(json!({"op": "publish", "feed": "t", "id": "t0", "item": "\"a2\""}))
        .await;
    assert_eq!(adopter.check(&t).await.unwrap().changes, 1, "an edit");
    py.call(json!({"op": "retract", "feed": "t", "id": "t1"}))
        .await;
    assert_eq!(adopter.check(&t).await.unwrap().changes, 1, "a retract");
    assert_consistent(&env, &mut py, "t").await;
}

#[tokio::test]
async fn thoonk_py_trimming_and_same_value_republishing_are_adopted() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    py.call(
        json!({"op": "create", "feed": "short", "type": "feed", "config": {"max_length": "2"}}),
    )
    .await;
    let feed = name("short");
    let mut seen = 0;
    for key in ["a", "b"] {
        py.call(json!({"op": "publish", "feed": "short", "id": key, "item": "\"v\""}))
            .await;
        assert_eq!(
            adopt_new(&env, &adopter, &feed, &mut seen).await,
            [format!("publish {key}")]
        );
    }
    // thoonk.py trims the oldest item itself when the feed is full.
    py.call(json!({"op": "publish", "feed": "short", "id": "c", "item": "\"v\""}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &feed, &mut seen).await,
        ["retract a", "publish c"]
    );
    // Publishing b again with the same value moves it to the end (classic
    // semantics, a seconds score): an edit at the end.
    py.call(json!({"op": "publish", "feed": "short", "id": "b", "item": "\"v\""}))
        .await;
    assert_eq!(
        adopt_new(&env, &adopter, &feed, &mut seen).await,
        ["edit b"]
    );
    assert_consistent(&env, &mut py, "short").await;
    let ids: Vec<String> = snapshot_items(&env.store, &feed)
        .await
        .into_iter()
        .map(|i| i.0)
        .collect();
    assert_eq!(ids, ["c", "b"]);
}

#[tokio::test]
async fn a_sweep_follows_our_own_writes_to_a_time_ordered_feed_from_the_log_alone() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "big", "type": "feed"}))
        .await;
    let big = name("big");
    for i in 0..300 {
        env.store
            .publish(&big, Some(&id(&format!("i{i}"))), &json!({ "n": i }), None)
            .await
            .unwrap();
    }
    assert_eq!(adopter.adopt(&big).await.unwrap().changes, 0);

    // Our writes since the last run: publishes, an edit, retracts.
    env.store
        .publish(&big, Some(&id("new")), &json!("new"), None)
        .await
        .unwrap();
    env.store
        .edit(&big, &id("i1"), &json!("edited"), None)
        .await
        .unwrap();
    env.store.retract(&big, &id("i2"), None).await.unwrap();
    env.store.retract(&big, &id("new"), None).await.unwrap();
    // Every node's counts: on a cluster the feed lives on one of them.
    let mut nodes = env.nodes().await;
    for node in &mut nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(node)
            .await
            .unwrap();
    }
    assert_eq!(adopter.sweep(&big).await.unwrap().changes, 0);
    for node in &mut nodes {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(node)
            .await
            .unwrap();
        for whole in ["cmdstat_hgetall", "cmdstat_zrange"] {
            assert!(
                !stats.contains(whole),
                "the sweep read the feed in full:\n{stats}"
            );
        }
    }
    // The mirror it left is the one a full run agrees with.
    assert_eq!(adopter.adopt(&big).await.unwrap().changes, 0);

    // A classic write among ours breaks the account: the sweep compares in full.
    env.store
        .publish(&big, Some(&id("ours")), &json!(1), None)
        .await
        .unwrap();
    py.call(json!({"op": "publish", "feed": "big", "id": "theirs", "item": "\"2\""}))
        .await;
    assert_eq!(adopter.sweep(&big).await.unwrap().changes, 1);
    assert_consistent(&env, &mut py, "big").await;
}

#[tokio::test]
async fn a_sweep_after_many_of_our_writes_goes_on_in_bounded_runs() {
    let env = Env::start().await;
    let adopter = Adopter::open(&env.target).await.unwrap();
    let mut py = env.py(false).await;
    let feed = name("busy");
    env.store
        .publish(&feed, Some(&id("first")), &json!(0), None)
        .await
        .unwrap();
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
    // 4,500 of our writes since the last run: more than one run accounts for.
    for i in 0..4_500 {
        env.store
            .publish(
                &feed,
                Some(&id(&format!("i{}", i % 3_000))),
                &json!(i),
                None,
            )
            .await
            .unwrap();
    }
    // A classic write among them, found once the account reaches the end.
    py.call(json!({"op": "publish", "feed": "busy", "id": "theirs", "item": "\"c\""}))
        .await;
    let mut conn = env.conn().await;
    let mirror_rev = |conn: &mut thoonk_server::redis_target::RedisConn| {
        let mut conn = conn.clone();
        async move {
            let rev: u64 = conn.hget(adopted_key(&name("busy")), "rev").await.unwrap();
            rev
        }
    };
    // Each call accounts for one page of entries and says that it goes on.
    let paged = Adopter::open(&env.target).await.unwrap().with_page(500);
    for call in 1..=8 {
        let step = paged.step(&feed, AdoptMode::Sweep).await.unwrap();
        assert!(step.more && step.changes == 0, "{step:?}");
        assert_eq!(
            mirror_rev(&mut conn).await,
            1 + 500 * call,
            "one bounded call"
        );
    }
    // The call that reaches the feed's revision finds the account off by
    // the classic write: a pass follows, and adopts it.
    let step = paged.step(&feed, AdoptMode::Sweep).await.unwrap();
    assert_eq!(mirror_rev(&mut conn).await, 4_501);
    assert!(step.more, "a pass begins");
    let run = paged.sweep(&feed).await.unwrap();
    assert_eq!(run.changes, 1);
    assert!(
        run.calls > 1 && !run.more,
        "a run calls again while a call says more: {run:?}"
    );
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
    let quiet = adopter.sweep(&feed).await.unwrap();
    assert_eq!(
        (quiet.calls, quiet.changes),
        (1, 0),
        "an unchanged feed: one call"
    );
    let mut py = env.py(false).await;
    assert_consistent(&env, &mut py, "busy").await;
}

/// A classic write as thoonk.py's `Feed.publish` makes it, with the raw
/// commands: a score in seconds, the value, the publish counter.
async fn classic_publish(
    conn: &mut RedisConn,
    feed: &FeedName,
    item: &str,
    value: &str,
    secs: u64,
) {
    let _: () = conn
        .zadd(format!("feed.ids:{feed}"), item, secs)
        .await
        .unwrap();
    let _: () = conn
        .hset(format!("feed.items:{feed}"), item, value)
        .await
        .unwrap();
    let _: () = conn
        .incr(format!("feed.publishes:{feed}"), 1)
        .await
        .unwrap();
}

/// A classic retract (thoonk.py's `Feed.retract`).
async fn classic_retract(conn: &mut RedisConn, feed: &FeedName, item: &str) {
    let _: () = conn.zrem(format!("feed.ids:{feed}"), item).await.unwrap();
    let _: () = conn.hdel(format!("feed.items:{feed}"), item).await.unwrap();
}

/// Every change in the log happened once: no item published while it
/// exists, edited or retracted while it does not.
fn assert_each_change_once(log: &[thoonk_protocol::FeedEvent]) {
    let mut live = std::collections::HashSet::new();
    for event in log {
        let item = event.change.id.as_str().to_owned();
        let ok = match event.change.op {
            ChangeOp::Publish => live.insert(item.clone()),
            ChangeOp::Retract => live.remove(&item),
            ChangeOp::Edit | ChangeOp::Position => live.contains(&item),
        };
        assert!(
            ok,
            "revision {}: {:?} of {item}",
            event.rev, event.change.op
        );
    }
}

/// The log replays to the snapshot, which is the classic state.
async fn assert_log_is_feed(env: &Env, feed: &FeedName) {
    let log = full_log(&env.store, feed).await;
    assert_each_change_once(&log);
    let replayed = ReceivedFeed::replayed(feed, &log);
    assert_eq!(replayed.values(), snapshot_items(&env.store, feed).await);
    let mut conn = env.conn().await;
    let ids: Vec<String> = conn
        .zrange(format!("feed.ids:{feed}"), 0, -1)
        .await
        .unwrap();
    let snapshot: Vec<String> = snapshot_items(&env.store, feed)
        .await
        .into_iter()
        .map(|i| i.0)
        .collect();
    assert_eq!(ids, snapshot, "the classic order is the log's");
}

async fn mirror_field(conn: &mut RedisConn, feed: &FeedName, field: &str) -> Option<String> {
    conn.hget(adopted_key(feed), field).await.unwrap()
}

const PAGE: u32 = 7;

/// `n` items published by our scripts: o00, o01 …
async fn publish_ours(env: &Env, feed: &FeedName, n: usize) {
    for i in 0..n {
        env.store
            .publish(feed, Some(&id(&format!("o{i:02}"))), &json!(i), None)
            .await
            .unwrap();
    }
}

/// Runs calls of a full pass until it is in its items phase with a cursor
/// (a page of items behind it).
async fn into_the_items(adopter: &Adopter, conn: &mut RedisConn, feed: &FeedName) {
    for _ in 0..100 {
        if mirror_field(conn, feed, "pass").await.as_deref() == Some("i")
            && !mirror_field(conn, feed, "pcur")
                .await
                .unwrap_or_default()
                .is_empty()
        {
            return;
        }
        adopter.step(feed, AdoptMode::Full).await.unwrap();
    }
    panic!("the pass never got a page into its items");
}

#[tokio::test]
async fn a_pass_reads_one_page_of_items_per_call() {
    let env = Env::start().await;
    let feed = name("pages");
    for i in 0..40 {
        env.store
            .publish(&feed, Some(&id(&format!("i{i:02}"))), &json!(i), None)
            .await
            .unwrap();
    }
    let mut conn = env.conn().await;
    let adopter = Adopter::open(&env.target).await.unwrap().with_page(PAGE);
    // The mirror is first caught up from the log, a page of entries a call.
    let mut calls = 0;
    while mirror_field(&mut conn, &feed, "pass").await.as_deref() != Some("i") {
        let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
        assert!(step.more && step.changes == 0, "{step:?}");
        calls += 1;
        assert!(calls < 20, "the pass never reached its items phase");
    }
    let rev: u64 = mirror_field(&mut conn, &feed, "rev")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rev, 40);
    // Then each call compares the next 7 items in score order, no more.
    let ids: Vec<(String, String)> = conn
        .zrange_withscores(format!("feed.ids:{feed}"), 0, -1)
        .await
        .map(|pairs: Vec<(String, f64)>| {
            pairs
                .into_iter()
                .map(|(i, s)| (i, format!("{s}")))
                .collect()
        })
        .unwrap();
    for page in 1..=5 {
        let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
        assert!(step.more && step.changes == 0, "{step:?}");
        let (last, score) = &ids[page * PAGE as usize - 1];
        assert_eq!(
            mirror_field(&mut conn, &feed, "pcur").await,
            Some(format!("{score} {last}")),
            "page {page} ends at item {}",
            page * PAGE as usize
        );
    }
    // The last page (5 items) ends the pass.
    let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
    assert!(!step.more, "{step:?}");
    assert_eq!(mirror_field(&mut conn, &feed, "pass").await, None);

    // Classic items new to readers: each call adopts at most a page of them.
    for i in 0..30 {
        classic_publish(
            &mut conn,
            &feed,
            &format!("c{i:02}"),
            "\"c\"",
            1_700_000_000 + i,
        )
        .await;
    }
    let mut adopted = Vec::new();
    loop {
        let step = adopter.step(&feed, AdoptMode::Sweep).await.unwrap();
        assert!(step.changes <= u64::from(PAGE), "{step:?}");
        adopted.push(step.changes);
        if !step.more {
            break;
        }
    }
    assert_eq!(adopted.iter().sum::<u64>(), 30);
    assert!(adopted.contains(&u64::from(PAGE)), "{adopted:?}");
    assert_log_is_feed(&env, &feed).await;

    // However large the page, a call records at most 32 changes (each is
    // several writes); retracts too.
    let wide = Adopter::open(&env.target).await.unwrap().with_page(200);
    for i in 0..40 {
        classic_publish(
            &mut conn,
            &feed,
            &format!("w{i:02}"),
            "\"w\"",
            1_700_000_100 + i,
        )
        .await;
    }
    for i in 0..40 {
        classic_retract(&mut conn, &feed, &format!("i{i:02}")).await;
    }
    let mut adopted = Vec::new();
    loop {
        let step = wide.step(&feed, AdoptMode::Sweep).await.unwrap();
        if step.changes > 0 {
            adopted.push(step.changes);
        }
        if !step.more {
            break;
        }
    }
    assert_eq!(adopted, [32, 8, 32, 8], "retracts, then publishes");
    assert_log_is_feed(&env, &feed).await;
}

#[tokio::test]
async fn classic_and_own_writes_between_pages_are_adopted_exactly_once() {
    let env = Env::start().await;
    let feed = name("between");
    let mut conn = env.conn().await;
    publish_ours(&env, &feed, 30).await;
    // Classic writes before the pass: new items, edits and retracts of ours.
    for i in 0..20 {
        classic_publish(
            &mut conn,
            &feed,
            &format!("c{i:02}"),
            &format!("{i}"),
            1_700_000_000 + i,
        )
        .await;
    }
    for i in 0..3 {
        classic_publish(
            &mut conn,
            &feed,
            &format!("o{i:02}"),
            "\"edited\"",
            1_700_000_100 + i,
        )
        .await;
    }
    for i in 10..14 {
        classic_retract(&mut conn, &feed, &format!("o{i:02}")).await;
    }
    // Two adopters run the pages of one pass in turn; between pages, our
    // writes and classic ones.
    let a = Adopter::open(&env.target).await.unwrap().with_page(PAGE);
    let b = Adopter::open(&env.target).await.unwrap().with_page(PAGE);
    let mut adopted = 0;
    let mut ours = 30; // the writes of our scripts
    let mut call = 0u64;
    loop {
        let adopter = if call % 2 == 0 { &a } else { &b };
        let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
        adopted += step.changes;
        if !step.more {
            break;
        }
        call += 1;
        assert!(call < 500, "the pass never ends");
        if call % 5 < 2 || (call % 5 == 4 && call > 5) {
            ours += 1;
        }
        match call % 5 {
            0 => {
                env.store
                    .publish(&feed, Some(&id(&format!("n{call}"))), &json!(call), None)
                    .await
                    .unwrap();
            }
            1 => {
                env.store
                    .edit(
                        &feed,
                        &id(&format!("o{:02}", 20 + call % 10)),
                        &json!("ours"),
                        None,
                    )
                    .await
                    .unwrap();
            }
            2 => {
                classic_publish(
                    &mut conn,
                    &feed,
                    &format!("late{call}"),
                    "\"late\"",
                    1_700_000_200 + call,
                )
                .await
            }
            3 => classic_retract(&mut conn, &feed, &format!("c{:02}", call % 20)).await,
            _ if call > 5 => {
                env.store
                    .retract(&feed, &id(&format!("n{}", call - 4)), None)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    assert!(call > 10, "the pass took {call} calls");
    // Writes behind the pass's cursor are found by the next runs.
    let later = a.sweep(&feed).await.unwrap().changes + b.adopt(&feed).await.unwrap().changes;
    assert_eq!(a.adopt(&feed).await.unwrap().changes, 0);
    let log = full_log(&env.store, &feed).await;
    assert_eq!(
        (adopted + later) as usize,
        log.len() - ours,
        "every adopted revision counted by one call"
    );
    assert_log_is_feed(&env, &feed).await;
}

#[tokio::test]
async fn a_classic_write_behind_the_cursor_is_adopted_by_the_next_sweep() {
    let env = Env::start().await;
    let feed = name("behind");
    let mut conn = env.conn().await;
    publish_ours(&env, &feed, 30).await;
    let adopter = Adopter::open(&env.target).await.unwrap().with_page(PAGE);
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
    // A pass that has gone past the first pages.
    into_the_items(&adopter, &mut conn, &feed).await;
    // thoonk.py's score in seconds sorts before every item: behind the cursor.
    classic_publish(&mut conn, &feed, "early", "\"e\"", 1_700_000_000).await;
    let mut during = 0;
    loop {
        let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
        during += step.changes;
        if !step.more {
            break;
        }
    }
    assert_eq!(during, 0, "the pass did not meet it");
    assert_eq!(
        adopter.sweep(&feed).await.unwrap().changes,
        1,
        "the next sweep did"
    );
    assert_eq!(adopter.sweep(&feed).await.unwrap().changes, 0);
    assert_log_is_feed(&env, &feed).await;
}

#[tokio::test]
async fn a_log_gap_in_the_middle_of_a_pass_rebuilds_the_mirror_in_pages() {
    let env = Env::start().await;
    let feed = name("gap");
    let mut conn = env.conn().await;
    publish_ours(&env, &feed, 40).await;
    let adopter = Adopter::open(&env.target).await.unwrap().with_page(PAGE);
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
    for i in 0..10 {
        classic_publish(
            &mut conn,
            &feed,
            &format!("c{i}"),
            "\"c\"",
            1_700_000_000 + i,
        )
        .await;
    }
    // A pass in its items phase, a page in.
    into_the_items(&adopter, &mut conn, &feed).await;
    // Our writes, then the log trimmed past the mirror's revision (as
    // retention does on a feed written faster than the adopter follows).
    for i in 0..10 {
        env.store
            .publish(&feed, Some(&id(&format!("n{i}"))), &json!(i), None)
            .await
            .unwrap();
    }
    env.store
        .edit(&feed, &id("o05"), &json!("ours"), None)
        .await
        .unwrap();
    classic_retract(&mut conn, &feed, "o07").await;
    let rev: u64 = conn.get(format!("feed.rev:{feed}")).await.unwrap();
    let _: () = redis::cmd("XTRIM")
        .arg(format!("feed.log:{feed}"))
        .arg("MINID")
        .arg(format!("{}-0", rev - 2))
        .query_async(&mut conn)
        .await
        .unwrap();
    let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
    assert!(step.more);
    assert_eq!(
        mirror_field(&mut conn, &feed, "pass").await.as_deref(),
        Some("r"),
        "the mirror is rebuilt from the item revisions"
    );
    let mut rebuild_calls = 0;
    while mirror_field(&mut conn, &feed, "pass").await.as_deref() == Some("r") {
        let step = adopter.step(&feed, AdoptMode::Full).await.unwrap();
        assert_eq!(step.changes, 0);
        rebuild_calls += 1;
    }
    assert!(rebuild_calls >= 1);
    let mut adopted = adopter.adopt(&feed).await.unwrap().changes;
    adopted += adopter.sweep(&feed).await.unwrap().changes;
    // The pass's first pages adopted c0..c9 (seconds scores sort first);
    // the rebuilt mirror knows them, our writes and every item of ours:
    // only the classic retract is new.
    assert_eq!(adopted, 1);
    let log = full_log_from(&env, &feed, rev - 2).await;
    assert_eq!(ops(&log[log.len() - 1..]), ["retract o07"]);
    let adopted_c = ops(&log).iter().filter(|op| op.contains(" c")).count();
    assert_eq!(adopted_c, 0, "nothing adopted twice: {:?}", ops(&log));
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
}

/// The change log from revision `from` on (the entries before it trimmed).
async fn full_log_from(env: &Env, feed: &FeedName, from: u64) -> Vec<thoonk_protocol::FeedEvent> {
    env.store
        .history(feed, from - 1, 100_000)
        .await
        .expect("history")
        .events
}

#[tokio::test]
async fn a_lost_log_is_adopted_in_pages_under_a_new_epoch() {
    let env = Env::start().await;
    let feed = name("lost");
    let mut conn = env.conn().await;
    publish_ours(&env, &feed, 40).await;
    let adopter = Adopter::open(&env.target).await.unwrap().with_page(PAGE);
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
    let epoch = env.store.info(&feed).await.unwrap().unwrap().epoch;
    // The log is lost (the revision stays): the next write starts a new
    // epoch. A classic publish is that write; the mirror still describes
    // what readers were told, so nothing else is adopted.
    let _: () = conn.del(format!("feed.log:{feed}")).await.unwrap();
    classic_publish(&mut conn, &feed, "late", "\"l\"", 1_700_000_000).await;
    let first = adopter.step(&feed, AdoptMode::Sweep).await.unwrap();
    assert_eq!(
        first.epoch, epoch,
        "no new epoch before a change: {first:?}"
    );
    let run = adopter.sweep(&feed).await.unwrap();
    assert_eq!(run.changes, 1, "{run:?}");
    assert!(run.calls > 1, "in pages: {run:?}");
    assert_ne!(run.epoch, epoch, "a new epoch");
    assert_eq!(run.rev, 41);
    let log = full_log_from(&env, &feed, 41).await;
    assert_eq!(ops(&log), ["publish late"]);
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 0);
    assert_eq!(adopter.sweep(&feed).await.unwrap().calls, 1);
}

/// Polls `ready` until it holds (a failure after [`WAIT`]).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_feed_whose_sweep_took_several_calls_is_swept_again_soon() {
    use thoonk_server::feeds::{FeedSettings, FeedType};
    use thoonk_server::interop::{run_adopter_with, AdopterSettings};
    let env = Env::start().await;
    let feed = name("resweep");
    env.store
        .create(&feed, &FeedSettings::new(FeedType::Feed))
        .await
        .unwrap();
    let mut conn = env.conn().await;
    // 20,000 classic items, adopted: a pass over them takes some 300 calls.
    let mut pipe = redis::pipe();
    for i in 0..20_000u64 {
        let item = format!("k{i:05}");
        pipe.zadd(format!("feed.ids:{feed}"), &item, 1_700_000_000 + i)
            .hset(format!("feed.items:{feed}"), &item, "1")
            .incr(format!("feed.publishes:{feed}"), 1);
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let adopter = Adopter::open(&env.target).await.unwrap();
    assert_eq!(adopter.adopt(&feed).await.unwrap().changes, 20_000);
    // The adopter process: no regular sweep during the test.
    let settings = AdopterSettings {
        sweep_interval: std::time::Duration::from_secs(3600),
        busy_interval: std::time::Duration::from_millis(20),
        ..AdopterSettings::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let process = tokio::spawn(run_adopter_with(
        env.target.clone(),
        env.store.clone(),
        settings,
        async {
            let _ = stopped.await;
        },
    ));
    // Its start-up runs are done once the listener is subscribed and the
    // mirror has no pass in progress.
    let mut nodes = env.nodes().await;
    until("the adopter listens", || {
        let mut nodes = nodes.clone();
        async move {
            for node in &mut nodes {
                let n: i64 = redis::cmd("PUBSUB")
                    .arg("NUMPAT")
                    .query_async(node)
                    .await
                    .unwrap();
                if n > 0 {
                    return true;
                }
            }
            false
        }
    })
    .await;
    nodes.clear();
    until("the start-up runs end", || {
        let mut conn = conn.clone();
        let feed = feed.clone();
        async move { mirror_field(&mut conn, &feed, "pass").await.is_none() }
    })
    .await;
    // A thoonk.py-like write with its classic message: the adopter checks
    // the feed, the account fails, a pass of many calls runs.
    classic_publish(&mut conn, &feed, "announced", "\"a\"", 1_800_000_000).await;
    let _: () = conn
        .publish(format!("feed.publish:{feed}"), "announced\0\"a\"")
        .await
        .unwrap();
    until("the pass is among the items", || {
        let mut conn = conn.clone();
        let feed = feed.clone();
        async move {
            mirror_field(&mut conn, &feed, "pass").await.as_deref() == Some("i")
                && !mirror_field(&mut conn, &feed, "pcur")
                    .await
                    .unwrap_or_default()
                    .is_empty()
        }
    })
    .await;
    // A raw classic write behind the pass's cursor, with no message: the
    // pass misses it, and nothing but a sweep finds it. The run took many
    // calls, so the feed is swept again within busy_interval, not in an hour.
    classic_publish(&mut conn, &feed, "unannounced", "\"u\"", 1_600_000_000).await;
    until("both writes are adopted", || {
        let mut conn = conn.clone();
        let feed = feed.clone();
        async move {
            let rev: u64 = conn.get(format!("feed.rev:{feed}")).await.unwrap();
            rev >= 20_002
        }
    })
    .await;
    let _ = stop.send(());
    process.await.unwrap().unwrap();
    let log = full_log_from(&env, &feed, 20_001).await;
    let mut adopted = ops(&log);
    adopted.sort();
    assert_eq!(adopted, ["publish announced", "publish unannounced"]);
}
