//! Job queue tests against a real Redis with in-process workers: the
//! exactly-once ledger, conflicts, delegation, ACL codes, priority, panics,
//! and a job put by a foreign process through Redis alone.

mod jobs_support;

use std::sync::Arc;

use jobs_support::*;
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::{Base, ChangeId, ErrorCode, FeedName, ItemId, Operation, Outcome};
use thoonk_server::feeds::{FeedSettings, FeedStore, FeedType};
use thoonk_server::gateway::access::{AccessConfig, ConfigRules, User};
use thoonk_server::gateway::OpenAccess;
use thoonk_server::jobs::{
    finish_channel, HandlerError, Handlers, JobError, JobQueue, Plan, Priority, QueueSettings,
    Submitted,
};

fn user(name: &str) -> User {
    User { name: name.into() }
}

fn team_rules() -> Arc<ConfigRules> {
    let config: AccessConfig = serde_json::from_value(json!({
        "users": [
            {"name": "ann", "token": "t-ann", "teams": {"353": "admin"}},
            {"name": "bob", "token": "t-bob", "teams": {"353": "member"}},
            {"name": "cat", "token": "t-cat", "teams": {"353": "member"}},
            {"name": "eve", "token": "t-eve", "teams": {"7": "member"}}
        ],
        "read": ["team:<team>:**"],
        "write": ["team:<team>:member:<user>:tasks"],
        "admin": ["team:<admin_team>:**"]
    }))
    .unwrap();
    Arc::new(ConfigRules::new(config).unwrap())
}

fn action(name: &str, payload: serde_json::Value) -> Operation {
    Operation::Action {
        name: name.into(),
        payload,
    }
}

/// `concurrency` workers with the standard handlers and open access (every
/// user may write every feed) on the suite's queue.
fn standard_workers(env: &Env, concurrency: usize) -> InProcess {
    InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        Handlers::with_demo_actions(),
        Arc::new(OpenAccess),
        concurrency,
    )
}

/// Starts the test Redis and opens the queue `changes` (mapped by
/// [`queue_name`]) and a feed store on it.
async fn open() -> (Env, JobQueue, FeedStore) {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), steady_settings(2))
        .await
        .unwrap();
    let store = FeedStore::open(&env.target, "test").await.unwrap();
    (env, q, store)
}

/// A queue, a feed store and one worker with the standard handlers, open access.
async fn open_with_workers() -> (Env, JobQueue, FeedStore, InProcess) {
    let (env, q, store) = open().await;
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        Handlers::with_demo_actions(),
        Arc::new(OpenAccess),
        1,
    );
    (env, q, store, workers)
}

#[tokio::test]
async fn the_same_change_id_is_applied_once_and_answers_with_its_outcome() {
    let (env, q, store) = open().await;
    let f = feed("notes");
    let c = change(
        "c1:1",
        Operation::Publish {
            feed: f.clone(),
            id: ItemId::new("n1").unwrap(),
            item: json!({"text": "hello"}),
            position: None,
        },
    );
    let alice = user("alice");
    assert_eq!(q.submit(&alice, &c).await.unwrap(), Submitted::Queued);
    // Again while queued: nothing added.
    assert_eq!(
        q.submit(&alice, &c).await.unwrap(),
        Submitted::AlreadyQueued
    );
    assert_eq!(q.list().await.unwrap().len(), 1);
    // The same id from another user is refused.
    let err = q.submit(&user("mallory"), &c).await.unwrap_err();
    assert!(
        matches!(err, JobError::WrongUser { ref owner, .. } if owner == "alice"),
        "{err}"
    );

    let workers = standard_workers(&env, 2);
    let outcome = outcome_of(&q, &c.id).await;
    let Outcome::Accepted { ref revs, .. } = outcome else {
        panic!("expected accepted, got {outcome:?}");
    };
    assert_eq!(revs.get(&f), Some(&1));
    // After finishing, the classic job record is gone; the ledger still answers.
    let queue = queue_name();
    let mut conn = env.conn().await;
    let exists: bool = conn
        .hexists(format!("feed.items:{queue}"), "c1:1")
        .await
        .unwrap();
    assert!(!exists, "the finished job's payload is removed");
    let published: Option<f64> = conn
        .zscore(format!("feed.published:{queue}"), "c1:1")
        .await
        .unwrap();
    assert_eq!(published, None);
    assert_eq!(
        q.submit(&alice, &c).await.unwrap(),
        Submitted::Finished(outcome.clone())
    );
    assert_eq!(q.list().await.unwrap().len(), 0, "nothing was queued again");
    workers.stop().await;
    assert_eq!(applied_count(&store, &f, "c1:1").await, 1);
    let finishes: u64 = conn.get(format!("feed.finishes:{queue}")).await.unwrap();
    assert_eq!(finishes, 1);
    // The ledger and the applied record expire after the queue's retention (1 h here).
    for key in [
        thoonk_server::jobs::ledger_key(&queue, "c1:1"),
        thoonk_server::jobs::applied_key(&f, "c1:1"),
    ] {
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key} expires: {ttl}");
    }
}

#[tokio::test]
async fn changes_whose_feed_and_id_join_to_the_same_text_are_each_applied_to_their_own_feed() {
    let (env, q, store) = open().await;
    let board = feed("demo:board");
    let cards = FeedName::new(format!("{board}:cards")).unwrap();
    let publish = |feed: &FeedName, item: &str| Operation::Publish {
        feed: feed.clone(),
        id: ItemId::new(item).unwrap(),
        item: json!({"by": item}),
        position: None,
    };
    let workers = standard_workers(&env, 2);
    // bob (client `cards`) writes `demo:board`, then ann (client `A`)
    // `demo:board:cards`: "demo:board" + "cards:A:2" and "demo:board:cards" +
    // "A:2" read the same once joined with `:`. Then the other way round.
    let steps = [
        ("bob", "cards:A:2", &board),
        ("ann", "A:2", &cards),
        ("ann", "A:3", &cards),
        ("bob", "cards:A:3", &board),
    ];
    for (name, id, target) in steps {
        let c = change(id, publish(target, name));
        assert_eq!(q.submit(&user(name), &c).await.unwrap(), Submitted::Queued);
        let outcome = outcome_of(&q, &c.id).await;
        let Outcome::Accepted { revs, .. } = outcome else {
            panic!("{name}'s {id}: expected accepted, got {outcome:?}");
        };
        assert_eq!(
            revs.keys().collect::<Vec<_>>(),
            [target],
            "{name}'s {id} reports its own feed"
        );
        assert_eq!(applied_count(&store, target, id).await, 1, "{name}'s {id}");
    }
    workers.stop().await;
    for target in [&board, &cards] {
        let snapshot = store.snapshot(target).await.unwrap();
        assert_eq!(snapshot.rev, 2, "{target}: both of its writes happened");
    }
}

#[tokio::test]
async fn a_clients_own_earlier_change_is_no_conflict_whatever_its_sequence_holds() {
    let (env, q, _store) = open().await;
    let workers = standard_workers(&env, 1);
    let f = feed("own:notes");
    let write = |id: &str, base: Option<u64>| {
        let mut c = change(
            id,
            Operation::Publish {
                feed: f.clone(),
                id: ItemId::new("x").unwrap(),
                item: json!(id),
                position: None,
            },
        );
        if let Some(base) = base {
            c.base.insert(f.clone(), Base::Rev(base));
        }
        c
    };
    // Client `cards` writes x, then again from the same base: its own change.
    for (name, c, accepted) in [
        ("bob", write("cards:1", None), true),
        ("bob", write("cards:A:2", Some(0)), true),
        // Client `A` (ann) from that base: bob's changes are another client's.
        ("ann", write("A:1", Some(0)), false),
    ] {
        q.submit(&user(name), &c).await.unwrap();
        let outcome = outcome_of(&q, &c.id).await;
        assert_eq!(
            matches!(outcome, Outcome::Accepted { .. }),
            accepted,
            "{}: {outcome:?}",
            c.id.0
        );
    }
    workers.stop().await;
}

#[tokio::test]
async fn a_change_to_an_item_changed_since_its_base_is_a_conflict_with_history() {
    let (env, q, store) = open().await;
    let f = feed("team:353:member:bob:tasks");
    store
        .create(&f, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    let t1 = ItemId::new("t1").unwrap();
    let t2 = ItemId::new("t2").unwrap();
    store
        .publish(&f, Some(&t1), &json!({"title": "v1", "done": false}), None)
        .await
        .unwrap(); // rev 1
    store
        .publish(
            &f,
            Some(&t2),
            &json!({"title": "other", "done": false}),
            None,
        )
        .await
        .unwrap(); // rev 2
                   // Another client edits t1 after the base revision 2, and t2 is edited by bob's own client.
    store
        .edit(
            &f,
            &t1,
            &json!({"title": "v2", "done": false}),
            Some("other:1"),
        )
        .await
        .unwrap(); // rev 3
    store
        .edit(
            &f,
            &t2,
            &json!({"title": "mine", "done": false}),
            Some("bobs-phone:1"),
        )
        .await
        .unwrap(); // rev 4
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        Handlers::with_demo_actions(),
        team_rules(),
        1,
    );
    let bob = user("bob");

    let mut stale = change(
        "bobs-phone:2",
        action("complete_task", json!({"feed": f, "id": "t1"})),
    );
    stale.base.insert(f.clone(), Base::Rev(2));
    q.submit(&bob, &stale).await.unwrap();
    match outcome_of(&q, &stale.id).await {
        Outcome::Conflict {
            feed,
            id,
            base,
            current,
            rev,
            history,
            ..
        } => {
            assert_eq!(feed, f);
            assert_eq!(id, t1);
            assert_eq!(base, Some(json!({"title": "v1", "done": false})));
            assert_eq!(current, Some(json!({"title": "v2", "done": false})));
            assert_eq!(rev, 4);
            let revs: Vec<u64> = history.iter().map(|e| e.rev).collect();
            assert_eq!(revs, vec![3, 4], "the feed's changes after the base");
            assert_eq!(history[0].change.id, t1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Nothing was applied.
    let now = store.get(&f, &t1).await.unwrap();
    assert_eq!(now.rev, 4);

    // The client's own earlier change after the base is not a conflict.
    let mut own = change(
        "bobs-phone:3",
        action("complete_task", json!({"feed": f, "id": "t2"})),
    );
    own.base.insert(f.clone(), Base::Rev(2));
    q.submit(&bob, &own).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &own.id).await,
        Outcome::Accepted { .. }
    ));
    let t2_now = store.get(&f, &t2).await.unwrap().item.unwrap().item;
    assert_eq!(t2_now, json!({"title": "mine", "done": true}));

    // An item retracted after the base: conflict with no current value.
    store.retract(&f, &t1, Some("other:2")).await.unwrap(); // rev 6
    let mut gone = change(
        "bobs-phone:4",
        action(
            "edit_task",
            json!({"feed": f, "id": "t1", "fields": {"title": "v3"}}),
        ),
    );
    gone.base.insert(f.clone(), Base::Rev(5));
    q.submit(&bob, &gone).await.unwrap();
    match outcome_of(&q, &gone.id).await {
        Outcome::Conflict {
            base,
            current,
            history,
            ..
        } => {
            assert_eq!(base, Some(json!({"title": "v2", "done": false})));
            assert_eq!(current, None);
            assert_eq!(history.len(), 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    workers.stop().await;
}

#[tokio::test]
async fn delegation_moves_a_task_atomically_or_not_at_all() {
    let (env, q, store) = open().await;
    let rules = team_rules();
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        Handlers::with_demo_actions(),
        rules,
        1,
    );
    let bob = user("bob");
    let bobs = feed("team:353:member:bob:tasks");
    let cats = feed("team:353:member:cat:tasks");
    let t1 = ItemId::new("t1").unwrap();

    let create = change(
        "bob-1:1",
        action(
            "create_task",
            json!({"feed": bobs, "id": "t1", "task": {"title": "write docs"}}),
        ),
    );
    q.submit(&bob, &create).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &create.id).await,
        Outcome::Accepted { .. }
    ));
    // cat already has a task t1: the delegation must fail and change nothing.
    let cat_task = change(
        "cat-1:1",
        action(
            "create_task",
            json!({"feed": cats, "id": "t1", "task": {"title": "cat's own"}}),
        ),
    );
    q.submit(&user("cat"), &cat_task).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &cat_task.id).await,
        Outcome::Accepted { .. }
    ));
    let before = (
        store.snapshot(&bobs).await.unwrap(),
        store.snapshot(&cats).await.unwrap(),
    );

    let clash = change(
        "bob-1:2",
        action(
            "delegate_task",
            json!({"feed": bobs, "id": "t1", "to": "cat"}),
        ),
    );
    q.submit(&bob, &clash).await.unwrap();
    match outcome_of(&q, &clash.id).await {
        Outcome::Rejected { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("already exists"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let after = (
        store.snapshot(&bobs).await.unwrap(),
        store.snapshot(&cats).await.unwrap(),
    );
    assert_eq!(
        before, after,
        "a failed delegation leaves both feeds untouched"
    );

    // cat deletes hers; now the delegation goes through, both feeds in one step.
    let delete = change(
        "cat-1:2",
        action("delete_task", json!({"feed": cats, "id": "t1"})),
    );
    q.submit(&user("cat"), &delete).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &delete.id).await,
        Outcome::Accepted { .. }
    ));
    let ok = change(
        "bob-1:3",
        action(
            "delegate_task",
            json!({"feed": bobs, "id": "t1", "to": "cat"}),
        ),
    );
    q.submit(&bob, &ok).await.unwrap();
    match outcome_of(&q, &ok.id).await {
        Outcome::Accepted { revs, result, .. } => {
            assert_eq!(revs.len(), 2, "both feeds changed: {revs:?}");
            assert_eq!(result, json!({"feed": cats}));
        }
        other => panic!("expected accepted, got {other:?}"),
    }
    assert!(store.get(&bobs, &t1).await.unwrap().item.is_none());
    let moved = store.get(&cats, &t1).await.unwrap().item.unwrap().item;
    assert_eq!(
        moved,
        json!({"title": "write docs", "done": false, "delegated_by": "bob"})
    );
    workers.stop().await;
}

#[tokio::test]
async fn acl_rejections_carry_clear_codes() {
    let (env, q, _store) = open().await;
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        Handlers::with_demo_actions(),
        team_rules(),
        2,
    );
    let bobs = feed("team:353:member:bob:tasks");
    let mut n = 0;
    let mut run = |who: &str, op: Operation| {
        n += 1;
        (user(who), change(&format!("acl:{n}"), op))
    };
    let cases = vec![
        (
            run(
                "bob",
                action(
                    "create_task",
                    json!({"feed": bobs, "id": "t1", "task": {"title": "mine"}}),
                ),
            ),
            None,
        ),
        (
            run(
                "eve",
                action(
                    "create_task",
                    json!({"feed": bobs, "id": "t2", "task": {"title": "x"}}),
                ),
            ),
            Some(ErrorCode::Forbidden),
        ),
        (
            run(
                "cat",
                action("complete_task", json!({"feed": bobs, "id": "t1"})),
            ),
            Some(ErrorCode::Forbidden),
        ),
        (
            run(
                "ann",
                action("complete_task", json!({"feed": bobs, "id": "t1"})),
            ),
            None,
        ),
        (
            run(
                "bob",
                action(
                    "delegate_task",
                    json!({"feed": bobs, "id": "t1", "to": "eve"}),
                ),
            ),
            Some(ErrorCode::Forbidden),
        ),
        (
            run(
                "bob",
                action(
                    "delegate_task",
                    json!({"feed": bobs, "id": "t1", "to": "nobody"}),
                ),
            ),
            Some(ErrorCode::NotFound),
        ),
        (
            run(
                "bob",
                action(
                    "create_task",
                    json!({"feed": bobs, "id": "t3", "task": {"title": ""}}),
                ),
            ),
            Some(ErrorCode::BadRequest),
        ),
        (
            run("bob", action("launch_rockets", json!({}))),
            Some(ErrorCode::BadRequest),
        ),
        (
            run(
                "bob",
                action(
                    "edit_task",
                    json!({"feed": bobs, "id": "missing", "fields": {"title": "x"}}),
                ),
            ),
            Some(ErrorCode::NotFound),
        ),
        (
            run(
                "cat",
                Operation::Retract {
                    feed: bobs.clone(),
                    id: ItemId::new("t1").unwrap(),
                },
            ),
            Some(ErrorCode::Forbidden),
        ),
        (
            run(
                "ghost",
                Operation::Retract {
                    feed: bobs.clone(),
                    id: ItemId::new("t1").unwrap(),
                },
            ),
            Some(ErrorCode::Unauthorized),
        ),
    ];
    for ((who, c), expected) in cases {
        q.submit(&who, &c).await.unwrap();
        let outcome = outcome_of(&q, &c.id).await;
        match (expected, &outcome) {
            (None, Outcome::Accepted { .. }) => {}
            (Some(code), Outcome::Rejected { code: got, message }) => {
                assert_eq!(*got, code, "{}: {message}", c.id.0);
                assert!(!message.is_empty());
            }
            _ => panic!("{}: expected {expected:?}, got {outcome:?}", c.id.0),
        }
    }
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_jobs_are_served_first_and_a_panic_fails_only_its_job() {
    let (env, q, _store) = open().await;
    let f = feed("notes");
    let publish = |id: &str| Operation::Publish {
        feed: f.clone(),
        id: ItemId::new(id).unwrap(),
        item: json!(id),
        position: None,
    };
    let alice = user("alice");
    q.put(&alice, &change("a:1", publish("one")), Priority::Normal)
        .await
        .unwrap();
    q.put(&alice, &change("a:2", publish("two")), Priority::Normal)
        .await
        .unwrap();
    q.put(
        &alice,
        &change("a:3", action("boom", json!({}))),
        Priority::High,
    )
    .await
    .unwrap();
    let order: Vec<String> = q.list().await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(order, ["a:3", "a:1", "a:2"]);

    let mut handlers = Handlers::with_demo_actions();
    handlers.register("boom", |_ctx, _payload| async move {
        if true {
            panic!("boom");
        }
        Ok::<Plan, HandlerError>(Plan::default())
    });
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(0),
        handlers,
        Arc::new(OpenAccess),
        1,
    );
    for id in ["a:1", "a:2"] {
        let outcome = outcome_of(&q, &ChangeId(id.into())).await;
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "{id}: {outcome:?}"
        );
    }
    let stalled = eventually("the panicking job stalls", || async {
        let jobs = q.list().await.unwrap();
        jobs.into_iter().find(|j| j.state == "stalled")
    })
    .await;
    assert_eq!(stalled.id, "a:3");
    let error = stalled.last_error.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("panicked: boom"),
        "{error}"
    );
    workers.stop().await;
}

#[tokio::test]
async fn a_job_put_through_redis_alone_is_worked_and_its_outcome_published_and_stored() {
    let (env, _q, store) = open().await;
    let queue = queue_name();
    let mut pubsub = env.target.pubsub().await.unwrap();
    pubsub.subscribe(finish_channel(&queue)).await.unwrap();
    let workers = standard_workers(&env, 1);
    // A foreign process with only redis-cli: the classic put (as thoonk.py/js do it).
    let payload = json!({"id": "py:1", "user": "alice", "op": {"kind": "publish", "feed": feed("notes"), "id": "n1", "item": {"text": "from outside"}}}).to_string();
    // On a cluster redis-cli follows redirects (-c) to the node of each key's slot.
    let mut node = vec!["-p".to_owned(), env.redis.port().to_string()];
    if env.on_cluster() {
        node.insert(0, "-c".to_owned());
    }
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(&node)
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let script = concat!(
        "redis.call('LPUSH', KEYS[1], ARGV[1]); redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]);",
        "redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]); redis.call('INCR', KEYS[4]); return 1"
    );
    cli(&[
        "EVAL",
        script,
        "4",
        &format!("feed.ids:{queue}"),
        &format!("feed.items:{queue}"),
        &format!("feed.published:{queue}"),
        &format!("feed.publishes:{queue}"),
        "py:1",
        &payload,
        "1700000000000",
    ]);
    // And one through job_submit.lua, as docs/JOBS.md shows.
    let submit = concat!(env!("CARGO_MANIFEST_DIR"), "/lua/job_submit.lua");
    let payload2 = json!({"id": "py:2", "user": "alice", "op": {"kind": "retract", "feed": feed("notes"), "id": "n1"}}).to_string();
    let keys: Vec<String> = thoonk_server::jobs::queue_keys(&queue)
        .into_iter()
        .chain([thoonk_server::jobs::ledger_key(&queue, "py:2")])
        .collect();
    let mut args: Vec<&str> = vec!["--eval", submit];
    args.extend(keys.iter().map(String::as_str));
    args.extend([",", "py:2", &payload2, "alice", "normal", "86400000"]);
    assert_eq!(cli(&args), "queued");

    let mut messages = pubsub.on_message();
    let mut finished = Vec::new();
    while finished.len() < 2 {
        let message = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut messages))
            .await
            .expect("a job.finish message")
            .unwrap();
        let text: String = message.get_payload().unwrap();
        let (id, outcome) = text.split_once('\0').expect("id\\0outcome, with the NUL");
        let outcome: Outcome = serde_json::from_str(outcome).unwrap();
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "{id}: {outcome:?}"
        );
        finished.push(id.to_owned());
    }
    assert_eq!(finished, ["py:1", "py:2"]);
    // The outcome is readable later through Redis alone too.
    let stored = cli(&[
        "HGET",
        &thoonk_server::jobs::ledger_key(&queue, "py:1"),
        "outcome",
    ]);
    assert!(stored.contains("\"status\":\"accepted\""), "{stored}");
    assert_eq!(applied_count(&store, &feed("notes"), "py:1").await, 1);
    drop(messages);
    workers.stop().await;
}

#[test]
fn finish_messages_parse_only_with_the_nul_and_an_outcome() {
    let (id, outcome) = thoonk_server::jobs::parse_finish(
        "c1:9\0{\"status\":\"rejected\",\"code\":\"forbidden\",\"message\":\"no\"}",
    )
    .expect("a finish message");
    assert_eq!(id, ChangeId("c1:9".into()));
    assert!(matches!(
        outcome,
        Outcome::Rejected {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    assert!(thoonk_server::jobs::parse_finish("c1:9").is_none());
    assert!(thoonk_server::jobs::parse_finish("c1:9\0done").is_none());
}

#[test]
fn a_batch_jobs_finish_message_parses_into_its_outcomes_in_order() {
    let rejected = "{\"status\":\"rejected\",\"code\":\"forbidden\",\"message\":\"no\"}";
    let batch = format!("c1:9\0{rejected}\0c1:10\0{rejected}");
    let ids: Vec<String> = thoonk_server::jobs::parse_finishes(&batch)
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(ids, ["c1:9", "c1:10"]);
    assert_eq!(
        thoonk_server::jobs::parse_finishes(&format!("c1:9\0{rejected}")).len(),
        1,
        "one change's message, as job_finish.lua publishes it"
    );
    for broken in [
        format!("c1:9\0{rejected}\0c1:10"),
        format!("c1:9\0{rejected}\0c1:10\0done"),
        "c1:9".to_owned(),
    ] {
        assert!(
            thoonk_server::jobs::parse_finishes(&broken).is_empty(),
            "{broken:?}"
        );
    }
}

#[tokio::test]
async fn generic_operations_apply_with_base_revisions_and_report_conflicts() {
    let (_env, q, store, workers) = open_with_workers().await;
    let list = feed("lists:groceries");
    let id = |s: &str| ItemId::new(s).unwrap();
    let alice = user("alice");
    let mut n = 0;
    let mut submit = |op: Operation, base: Option<u64>| {
        n += 1;
        let mut c = change(&format!("phone:{n}"), op);
        if let Some(base) = base {
            c.base.insert(list.clone(), Base::Rev(base));
        }
        c
    };
    let steps = vec![
        // A publish with a position creates a sorted feed.
        submit(
            Operation::Publish {
                feed: list.clone(),
                id: id("milk"),
                item: json!("milk"),
                position: Some(thoonk_protocol::Position::Begin),
            },
            None,
        ),
        submit(
            Operation::Publish {
                feed: list.clone(),
                id: id("eggs"),
                item: json!("eggs"),
                position: Some(thoonk_protocol::Position::Begin),
            },
            Some(1),
        ),
        submit(
            Operation::Move {
                feed: list.clone(),
                id: id("milk"),
                position: thoonk_protocol::Position::Begin,
            },
            Some(2),
        ),
        submit(
            Operation::Edit {
                feed: list.clone(),
                id: id("eggs"),
                item: json!("6 eggs"),
            },
            Some(3),
        ),
    ];
    for c in &steps {
        q.submit(&alice, c).await.unwrap();
        let outcome = outcome_of(&q, &c.id).await;
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "{}: {outcome:?}",
            c.id.0
        );
    }
    let snapshot = store.snapshot(&list).await.unwrap();
    let items: Vec<(String, serde_json::Value)> = snapshot
        .items
        .into_iter()
        .map(|i| (i.id.to_string(), i.item))
        .collect();
    assert_eq!(
        items,
        [
            ("milk".to_owned(), json!("milk")),
            ("eggs".to_owned(), json!("6 eggs"))
        ]
    );
    assert_eq!(snapshot.rev, 4);

    // Another client's edit after base 3 makes this retract a conflict.
    let other = change(
        "laptop:1",
        Operation::Edit {
            feed: list.clone(),
            id: id("milk"),
            item: json!("oat milk"),
        },
    );
    q.submit(&alice, &other).await.unwrap();
    outcome_of(&q, &other.id).await;
    let late = submit(
        Operation::Retract {
            feed: list.clone(),
            id: id("milk"),
        },
        Some(3),
    );
    q.submit(&alice, &late).await.unwrap();
    match outcome_of(&q, &late.id).await {
        Outcome::Conflict {
            base,
            current,
            rev,
            history,
            ..
        } => {
            assert_eq!(
                (base, current, rev),
                (Some(json!("milk")), Some(json!("oat milk")), 5)
            );
            assert_eq!(history.len(), 2, "changes 4 and 5");
            assert_eq!(history[1].change.job.as_deref(), Some("laptop:1"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Without a base it is applied (last writer wins); a missing item is not_found.
    let blind = submit(
        Operation::Retract {
            feed: list.clone(),
            id: id("milk"),
        },
        None,
    );
    q.submit(&alice, &blind).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &blind.id).await,
        Outcome::Accepted { .. }
    ));
    let missing = submit(
        Operation::Edit {
            feed: list.clone(),
            id: id("milk"),
            item: json!("x"),
        },
        None,
    );
    q.submit(&alice, &missing).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &missing.id).await,
        Outcome::Rejected {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    // Moving within a time-ordered feed is refused with a reason.
    let notes = feed("notes");
    let first = change(
        "tablet:1",
        Operation::Publish {
            feed: notes.clone(),
            id: id("a"),
            item: json!(1),
            position: None,
        },
    );
    q.submit(&alice, &first).await.unwrap();
    outcome_of(&q, &first.id).await;
    let mv = change(
        "tablet:2",
        Operation::Move {
            feed: notes.clone(),
            id: id("a"),
            position: thoonk_protocol::Position::Begin,
        },
    );
    q.submit(&alice, &mv).await.unwrap();
    match outcome_of(&q, &mv.id).await {
        Outcome::Rejected { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("notes"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    workers.stop().await;
}

#[tokio::test]
async fn a_handler_slower_than_the_claim_timeout_fails_its_job_only() {
    let (env, q, _store) = open().await;
    let mut handlers = Handlers::with_demo_actions();
    handlers.register("slow", |_ctx, _payload| async move {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        Ok::<Plan, HandlerError>(Plan::default())
    });
    let alice = user("alice");
    let slow = change("s:1", action("slow", json!({})));
    q.submit(&alice, &slow).await.unwrap();
    let fine = change(
        "s:2",
        Operation::Publish {
            feed: feed("notes"),
            id: ItemId::new("n").unwrap(),
            item: json!(1),
            position: None,
        },
    );
    q.submit(&alice, &fine).await.unwrap();
    let settings = QueueSettings {
        claim_timeout: std::time::Duration::from_millis(800),
        ..fast_settings(0)
    };
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        settings,
        handlers,
        Arc::new(OpenAccess),
        2,
    );
    assert!(matches!(
        outcome_of(&q, &fine.id).await,
        Outcome::Accepted { .. }
    ));
    let stalled = eventually("the slow job stalls", || async {
        q.show("s:1")
            .await
            .unwrap()
            .filter(|j| j.state == "stalled")
    })
    .await;
    let error = stalled.last_error.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("longer than") || error.contains("timed out"),
        "{error}"
    );
    workers.stop().await;
}

#[tokio::test]
async fn a_plan_writing_one_item_twice_is_refused_and_writes_nothing() {
    let (env, q, store) = open().await;
    let mut handlers = Handlers::with_demo_actions();
    handlers.register("twice", |_ctx, _payload| async move {
        let write = |item: serde_json::Value| thoonk_server::jobs::FeedWrite {
            feed: feed("notes"),
            id: ItemId::new("n").unwrap(),
            kind: thoonk_server::jobs::WriteKind::Upsert {
                item,
                position: None,
            },
            base: None,
            guard: None,
            create: Some(thoonk_server::feeds::FeedType::Feed.into()),
        };
        Ok::<Plan, HandlerError>(Plan {
            writes: vec![write(json!(1)), write(json!(2))],
            result: serde_json::Value::Null,
        })
    });
    let c = change("t:1", action("twice", json!({})));
    q.submit(&user("alice"), &c).await.unwrap();
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        handlers,
        Arc::new(OpenAccess),
        1,
    );
    match outcome_of(&q, &c.id).await {
        Outcome::Rejected { code, message } => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("two writes"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(store.snapshot(&feed("notes")).await.unwrap().rev, 0);
    workers.stop().await;
}

/// A first attempt that created its feed and then failed before registering
/// it (the connection cut between the two steps) leaves a feed that is not
/// in `feeds`: pattern subscribers never hear of it. The retry, which finds
/// the feed and creates nothing, registers it.
#[tokio::test]
async fn a_retried_job_registers_a_feed_an_earlier_attempt_created() {
    use thoonk_server::jobs::{FeedWrite, WriteKind};

    let (env, q, store) = open().await;
    let created = feed("team:5:created");
    // What the first attempt left behind: the feed, not its registration.
    store
        .create(&created, &FeedSettings::new(FeedType::Feed))
        .await
        .unwrap();
    let mut conn = env.conn().await;
    let _: () = conn.srem("feeds", created.as_str()).await.unwrap();
    let mut handlers = Handlers::with_demo_actions();
    handlers.register("publish_after_a_failure", |ctx, payload| async move {
        if ctx.failures == 0 {
            return Err(HandlerError::Failed("the first attempt fails".into()));
        }
        let feed = thoonk_protocol::FeedName::new(payload["feed"].as_str().unwrap_or("")).unwrap();
        Ok(Plan {
            writes: vec![FeedWrite {
                feed,
                id: ItemId::new("n").unwrap(),
                kind: WriteKind::Upsert {
                    item: json!(1),
                    position: None,
                },
                base: None,
                guard: None,
                create: Some(FeedType::Feed.into()),
            }],
            result: serde_json::Value::Null,
        })
    });
    let job = change(
        "r:1",
        action("publish_after_a_failure", json!({"feed": created.as_str()})),
    );
    q.submit(&user("alice"), &job).await.unwrap();
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        fast_settings(2),
        handlers,
        Arc::new(OpenAccess),
        1,
    );
    let outcome = outcome_of(&q, &job.id).await;
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    let registered: bool = conn.sismember("feeds", created.as_str()).await.unwrap();
    assert!(registered, "the retry registered the feed");
    workers.stop().await;
}

/// Submits `op` (writing one feed) made against `base`; its outcome.
async fn submit_against(q: &JobQueue, id: &str, op: Operation, base: Base) -> Outcome {
    let feed = op.feed().expect("a feed operation").clone();
    let mut c = change(id, op);
    c.base.insert(feed, base);
    q.submit(&user("alice"), &c).await.unwrap();
    outcome_of(q, &c.id).await
}

/// Submits an edit of `item` in `feed` made against `base`; its outcome.
async fn edit_against(
    q: &JobQueue,
    id: &str,
    feed: &thoonk_protocol::FeedName,
    item: &str,
    value: serde_json::Value,
    base: Base,
) -> Outcome {
    let op = Operation::Edit {
        feed: feed.clone(),
        id: ItemId::new(item).unwrap(),
        item: value,
    };
    submit_against(q, id, op, base).await
}

fn assert_unknown_base(outcome: Outcome, theirs: serde_json::Value) {
    match outcome {
        Outcome::Conflict {
            base,
            unknown_base,
            current,
            history,
            ..
        } => {
            assert!(unknown_base, "the base is unknown, not \"no item\"");
            assert_eq!(base, None);
            assert_eq!(current, Some(theirs));
            assert!(history.is_empty(), "no history reaches an unknown base");
        }
        other => panic!("expected a conflict on an unknown base, got {other:?}"),
    }
}

#[tokio::test]
async fn a_base_of_a_deleted_and_recreated_feed_is_a_conflict_not_an_overwrite() {
    let (_env, q, store, workers) = open_with_workers().await;
    let f = feed("lists:recreated");
    let t1 = ItemId::new("t1").unwrap();
    let old = store
        .publish(&f, Some(&t1), &json!("milk"), Some("other:1"))
        .await
        .unwrap();
    store
        .edit(&f, &t1, &json!("oat milk"), Some("other:2"))
        .await
        .unwrap(); // the client mirrors (old epoch, rev 2)
    assert!(store.delete(&f).await.unwrap());
    let fresh = store
        .publish(&f, Some(&t1), &json!("bread"), Some("other:3"))
        .await
        .unwrap();
    assert_ne!(fresh.epoch, old.epoch);
    assert_eq!(
        fresh.rev, 1,
        "the revision restarts below the client's base"
    );

    let outcome = edit_against(
        &q,
        "phone:1",
        &f,
        "t1",
        json!("soy milk"),
        Base::at(old.epoch, 2),
    )
    .await;
    assert_unknown_base(outcome, json!("bread"));
    let now = store.get(&f, &t1).await.unwrap();
    assert_eq!(
        now.item.unwrap().item,
        json!("bread"),
        "nothing was applied"
    );

    // A new item of the recreated feed is no conflict, whatever the base.
    let outcome = submit_against(
        &q,
        "phone:2",
        Operation::Publish {
            feed: f.clone(),
            id: ItemId::new("t2").unwrap(),
            item: json!("eggs"),
            position: None,
        },
        Base::at(old.epoch, 2),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");

    // The same base in the current epoch is compared by revision as before.
    let outcome = edit_against(
        &q,
        "phone:3",
        &f,
        "t1",
        json!("rye bread"),
        Base::at(fresh.epoch, 1),
    )
    .await;
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    workers.stop().await;
}

#[tokio::test]
async fn a_base_of_an_epoch_renewed_with_a_lower_revision_is_a_conflict() {
    let (env, q, store, workers) = open_with_workers().await;
    let f = feed("lists:renewed");
    let t1 = ItemId::new("t1").unwrap();
    let mut last = store
        .publish(&f, Some(&t1), &json!(0), Some("other:1"))
        .await
        .unwrap();
    for n in 1..4 {
        last = store
            .edit(&f, &t1, &json!(n), Some(&format!("other:{}", n + 1)))
            .await
            .unwrap();
    }
    let old = last; // the client's base: (old epoch, rev 4)
                    // The feed's revision counter is lost (a restart that kept only part of
                    // the data): the content stays, the next write starts a new epoch and
                    // the revision over from 0.
    let mut conn = env.conn().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("feed.rev:{f}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let renewed = store
        .edit(&f, &t1, &json!("theirs"), Some("other:9"))
        .await
        .unwrap();
    assert_ne!(renewed.epoch, old.epoch);
    assert!(renewed.rev < old.rev, "the revision went back: {renewed:?}");

    let outcome = edit_against(
        &q,
        "phone:1",
        &f,
        "t1",
        json!("ours"),
        Base::at(old.epoch, old.rev),
    )
    .await;
    assert_unknown_base(outcome, json!("theirs"));
    workers.stop().await;
}

#[tokio::test]
async fn a_base_the_log_no_longer_reaches_is_unknown_not_empty() {
    let (_env, q, store, workers) = open_with_workers().await;
    let f = feed("lists:trimmed");
    store
        .create(
            &f,
            &FeedSettings {
                kind: FeedType::Feed,
                max_length: None,
                retention: Some(2),
            },
        )
        .await
        .unwrap();
    let t1 = ItemId::new("t1").unwrap();
    store
        .publish(&f, Some(&t1), &json!(["a", "b"]), Some("other:1"))
        .await
        .unwrap(); // the client's base: rev 1, t1 = [a, b]
    store
        .edit(&f, &t1, &json!(["a", "b", "c"]), Some("other:2"))
        .await
        .unwrap();
    for n in 0..300 {
        let id = ItemId::new(format!("x{n}")).unwrap();
        store
            .publish(&f, Some(&id), &json!(n), Some("other:3"))
            .await
            .unwrap();
    }
    assert!(store.history(&f, 0, 1000).await.unwrap().oldest > 2);
    let outcome = edit_against(
        &q,
        "phone:1",
        &f,
        "t1",
        json!(["a", "b", "d"]),
        Base::at(store.snapshot(&f).await.unwrap().epoch, 1),
    )
    .await;
    assert_unknown_base(outcome, json!(["a", "b", "c"]));
    workers.stop().await;
}
