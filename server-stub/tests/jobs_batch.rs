//! Batch jobs against a real Redis with in-process workers: one client's
//! changes to one feed put as one job (`submit_batch`) and applied in order
//! in one script, each change with its own ledger record and outcome; a
//! rejection does not stop the batch, a conflict does (the rest is not
//! attempted and not recorded); a batch run again applies nothing twice;
//! the access rules are checked per change.

mod jobs_support;

use std::sync::Arc;

use jobs_support::*;
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::{
    Base, ChangeId, ChangeRequest, Epoch, ErrorCode, FeedName, ItemId, Operation, Outcome, Rev,
};
use thoonk_server::feeds::FeedStore;
use thoonk_server::gateway::access::{AccessConfig, AccessRules, ConfigRules, User};
use thoonk_server::gateway::OpenAccess;
use thoonk_server::jobs::{ledger_key, Handlers, JobContext, JobQueue, Submitted};

fn user(name: &str) -> User {
    User { name: name.into() }
}

fn publish(feed: &FeedName, item: &str, value: serde_json::Value) -> Operation {
    Operation::Publish {
        feed: feed.clone(),
        id: ItemId::new(item).unwrap(),
        item: value,
        position: None,
    }
}

fn edit(feed: &FeedName, item: &str, value: serde_json::Value) -> Operation {
    Operation::Edit {
        feed: feed.clone(),
        id: ItemId::new(item).unwrap(),
        item: value,
    }
}

fn based(id: &str, op: Operation, base: Option<(Epoch, Rev)>) -> ChangeRequest {
    let mut c = change(id, op);
    if let (Some((epoch, rev)), Some(feed)) = (base, c.op.feed().cloned()) {
        c.base.insert(feed, Base::at(epoch, rev));
    }
    c
}

async fn open(
    access: Arc<dyn AccessRules>,
    handlers: Handlers,
) -> (Env, JobQueue, FeedStore, InProcess) {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), steady_settings(2))
        .await
        .unwrap();
    let store = FeedStore::open(&env.target, "test").await.unwrap();
    let workers = InProcess::start(
        &env.url(),
        &queue_name(),
        steady_settings(2),
        handlers,
        access,
        1,
    );
    (env, q, store, workers)
}

fn accepted_rev(outcome: &Outcome, feed: &FeedName) -> (Epoch, Rev) {
    match outcome {
        Outcome::Accepted { revs, epochs, .. } => (epochs[feed], revs[feed]),
        other => panic!("expected accepted, got {other:?}"),
    }
}

async fn value_of(store: &FeedStore, feed: &FeedName, item: &str) -> Option<serde_json::Value> {
    store
        .get(feed, &ItemId::new(item).unwrap())
        .await
        .unwrap()
        .item
        .map(|i| i.item)
}

#[tokio::test]
async fn a_batch_applies_in_order_and_a_rejection_does_not_stop_it() {
    let (_env, q, store, workers) = open(Arc::new(OpenAccess), Handlers::new()).await;
    let f = feed("batch:notes");
    let batch = vec![
        based("c1:1", publish(&f, "a", json!(1)), Some((0, 0))),
        based("c1:2", edit(&f, "missing", json!(2)), Some((0, 0))),
        based("c1:3", publish(&f, "b", json!(3)), Some((0, 0))),
        // Made against the same (unknown) base as the first: checked from
        // the revision the first produced, as the client lifts it.
        based("c1:4", edit(&f, "a", json!(4)), Some((0, 0))),
    ];
    let answers = q.submit_batch(&user("ann"), &batch).await.unwrap();
    assert_eq!(answers, vec![Submitted::Queued; 4]);
    let first = outcome_of(&q, &batch[0].id).await;
    assert!(matches!(
        outcome_of(&q, &batch[1].id).await,
        Outcome::Rejected {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    let third = outcome_of(&q, &batch[2].id).await;
    let fourth = outcome_of(&q, &batch[3].id).await;
    let revs: Vec<Rev> = [&first, &third, &fourth]
        .iter()
        .map(|o| accepted_rev(o, &f).1)
        .collect();
    assert_eq!(revs, [1, 2, 3], "applied in order, one revision each");
    assert_eq!(value_of(&store, &f, "a").await, Some(json!(4)));
    assert_eq!(value_of(&store, &f, "b").await, Some(json!(3)));
    // Submitted again: every change answers with its outcome, nothing is queued.
    let again = q.submit_batch(&user("ann"), &batch).await.unwrap();
    assert!(again.iter().all(|a| matches!(a, Submitted::Finished(_))));
    for c in &batch[..] {
        let id = c.id.0.as_str();
        let expected = usize::from(id != "c1:2");
        assert_eq!(applied_count(&store, &f, id).await, expected, "{id}");
    }
    // A new change behind a finished one waits until the client has that
    // outcome (which lifts its base, as one change at a time would).
    let later = based("c1:5", edit(&f, "a", json!(5)), Some((0, 0)));
    let mixed = q
        .submit_batch(&user("ann"), &[batch[3].clone(), later.clone()])
        .await
        .unwrap();
    assert!(matches!(mixed[0], Submitted::Finished(_)));
    assert_eq!(mixed[1], Submitted::Deferred);
    assert_eq!(q.outcome(&later.id).await.unwrap(), None);
    workers.stop().await;
}

#[tokio::test]
async fn a_conflict_stops_the_batch_and_the_rest_is_queued_again_later() {
    let (env, q, store, workers) = open(Arc::new(OpenAccess), Handlers::new()).await;
    let f = feed("batch:tasks");
    // Another client writes x.
    let other = change("other:1", publish(&f, "x", json!("theirs")));
    q.submit(&user("ann"), &other).await.unwrap();
    let (epoch, rev) = accepted_rev(&outcome_of(&q, &other.id).await, &f);
    let batch = vec![
        based("c2:1", publish(&f, "y", json!("y")), Some((epoch, rev))),
        based("c2:2", edit(&f, "x", json!("ours")), Some((epoch, rev - 1))),
        based("c2:3", publish(&f, "z", json!("z")), Some((epoch, rev))),
    ];
    q.submit_batch(&user("ann"), &batch).await.unwrap();
    accepted_rev(&outcome_of(&q, &batch[0].id).await, &f);
    assert!(matches!(
        outcome_of(&q, &batch[1].id).await,
        Outcome::Conflict { current: Some(ref v), .. } if *v == json!("theirs")
    ));
    // The change after the conflict was not attempted, and not recorded.
    let mut conn = env.conn().await;
    let recorded: bool = conn
        .exists(ledger_key(&queue_name(), "c2:3"))
        .await
        .unwrap();
    assert!(!recorded, "no ledger record for a change not attempted");
    assert_eq!(q.outcome(&batch[2].id).await.unwrap(), None);
    assert_eq!(value_of(&store, &f, "z").await, None);
    assert_eq!(value_of(&store, &f, "x").await, Some(json!("theirs")));
    // Sent again as it was: the conflict still holds the rest back.
    let again = q.submit_batch(&user("ann"), &batch).await.unwrap();
    assert!(matches!(
        again[0],
        Submitted::Finished(Outcome::Accepted { .. })
    ));
    assert!(matches!(
        again[1],
        Submitted::Finished(Outcome::Conflict { .. })
    ));
    assert_eq!(again[2], Submitted::Deferred);
    // The resolution, then the rest: both applied, in order.
    let (epoch, now) = match &again[1] {
        Submitted::Finished(Outcome::Conflict { epoch, rev, .. }) => (*epoch, *rev),
        _ => unreachable!(),
    };
    let resolved = vec![
        based("c2:4", edit(&f, "x", json!("merged")), Some((epoch, now))),
        batch[2].clone(),
    ];
    let answers = q.submit_batch(&user("ann"), &resolved).await.unwrap();
    assert_eq!(answers, vec![Submitted::Queued; 2]);
    let r4 = accepted_rev(&outcome_of(&q, &resolved[0].id).await, &f).1;
    let r3 = accepted_rev(&outcome_of(&q, &resolved[1].id).await, &f).1;
    assert!(r4 < r3, "in order");
    assert_eq!(value_of(&store, &f, "z").await, Some(json!("z")));
    assert_eq!(applied_count(&store, &f, "c2:3").await, 1);
    workers.stop().await;
}

#[tokio::test]
async fn a_batch_whose_worker_died_after_applying_is_run_again_and_applies_nothing_twice() {
    let mut handlers = Handlers::new();
    // The first run dies after its writes, before it finishes the job.
    handlers.after_apply(|ctx: JobContext, _| async move {
        if ctx.failures == 0 {
            panic!("the worker dies after applying");
        }
    });
    let (_env, q, store, workers) = open(Arc::new(OpenAccess), handlers).await;
    let f = feed("batch:rerun");
    let batch = vec![
        // Refused (no item w yet): on the run again, w exists (the next
        // change made it), but the refusal stands and nothing is applied.
        change("c3:1", edit(&f, "w", json!("early"))),
        change("c3:2", publish(&f, "w", json!("w"))),
        change("c3:3", publish(&f, "v", json!("v"))),
    ];
    q.submit_batch(&user("ann"), &batch).await.unwrap();
    assert!(matches!(
        outcome_of(&q, &batch[0].id).await,
        Outcome::Rejected {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    let r2 = accepted_rev(&outcome_of(&q, &batch[1].id).await, &f).1;
    let r3 = accepted_rev(&outcome_of(&q, &batch[2].id).await, &f).1;
    assert_eq!((r2, r3), (1, 2), "the outcomes of the first run");
    assert_eq!(value_of(&store, &f, "w").await, Some(json!("w")));
    for (id, times) in [("c3:1", 0), ("c3:2", 1), ("c3:3", 1)] {
        assert_eq!(applied_count(&store, &f, id).await, times, "{id}");
    }
    workers.stop().await;
}

#[tokio::test]
async fn the_access_rules_are_checked_for_every_change_of_a_batch() {
    let config: AccessConfig = serde_json::from_value(json!({
        "users": [
            {"name": "bob", "token": "t-bob", "teams": {"353": "member"}},
            {"name": "eve", "token": "t-eve", "teams": {"7": "member"}}
        ],
        "read": ["team:<team>:**"],
        "write": ["team:<team>:member:<user>:tasks"],
        "admin": ["team:<admin_team>:**"]
    }))
    .unwrap();
    let rules = Arc::new(ConfigRules::new(config).unwrap());
    let (_env, q, store, workers) = open(rules, Handlers::new()).await;
    let bobs = feed("team:353:member:bob:tasks");
    let own = vec![
        change("bob-1:1", publish(&bobs, "t1", json!({"title": "one"}))),
        change("bob-1:2", publish(&bobs, "t2", json!({"title": "two"}))),
    ];
    q.submit_batch(&user("bob"), &own).await.unwrap();
    for c in &own {
        accepted_rev(&outcome_of(&q, &c.id).await, &bobs);
    }
    let intruder = vec![
        change("eve-1:1", edit(&bobs, "t1", json!({"title": "mine"}))),
        change("eve-1:2", publish(&bobs, "t3", json!({"title": "three"}))),
    ];
    q.submit_batch(&user("eve"), &intruder).await.unwrap();
    for c in &intruder {
        assert!(matches!(
            outcome_of(&q, &c.id).await,
            Outcome::Rejected {
                code: ErrorCode::Forbidden,
                ..
            }
        ));
        assert_eq!(applied_count(&store, &bobs, &c.id.0).await, 0);
    }
    assert_eq!(
        value_of(&store, &bobs, "t1").await,
        Some(json!({"title": "one"}))
    );
    // Another user's change id is refused: the ledger names its owner.
    let stolen = vec![
        own[0].clone(),
        change("bob-1:3", publish(&bobs, "t4", json!(4))),
    ];
    assert!(q.submit_batch(&user("eve"), &stolen).await.is_err());
    assert_eq!(
        q.outcome(&ChangeId("bob-1:3".into())).await.unwrap(),
        None,
        "nothing of a refused batch is queued"
    );
    workers.stop().await;
}
