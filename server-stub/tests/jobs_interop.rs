//! Jobs shared with real thoonk.py 1.0.1.0 processes (tests/interop/driver.py):
//! thoonk.py puts a job that our workers work and hears its outcome on
//! `job.finish`; thoonk.py works a job we queued; a thoonk.py worker that
//! dies holding a claim loses nothing. On a Redis Cluster
//! (`THOONK_TEST_REDIS=cluster`) thoonk.py runs on redis-py's cluster client
//! and the queue and feeds carry hash tags (the driver's `call` maps the
//! `queue` and `feed` it is given; names inside payloads are mapped here).
// Both supports include the one Redis environment (`redis_env`); this suite
// uses the interop one's.
#![allow(clippy::duplicate_mod)]

mod interop_support;
mod jobs_support;

use std::sync::Arc;

use interop_support::Env;
use jobs_support::{fast_settings, feed, outcome_of, queue_name, steady_settings, InProcess};
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::{ChangeId, ItemId, Operation, Outcome};
use thoonk_server::gateway::{OpenAccess, User};
use thoonk_server::jobs::{Handlers, JobPayload, JobQueue};

fn publish(feed: &str, id: &str) -> Operation {
    Operation::Publish {
        feed: jobs_support::feed(feed),
        id: ItemId::new(id).unwrap(),
        item: json!({"from": id}),
        position: None,
    }
}

#[tokio::test]
async fn thoonk_py_puts_a_job_and_hears_its_outcome_on_job_finish() {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), steady_settings(2))
        .await
        .unwrap();
    // The listener subscribes to job.finish of queues that exist when it starts.
    let mut py = env.py(true).await;
    // Without an "id": the job id is the change id (thoonk.py's put picks ids itself).
    let payload = json!({"user": "alice", "op": {"kind": "publish", "feed": feed("notes"), "id": "n1", "item": {"text": "from thoonk.py"}}});
    let put = py
        .call(json!({"op": "put", "queue": "changes", "id": "py:1", "item": payload.to_string()}))
        .await;
    assert_eq!(put, json!("py:1"));
    let workers = InProcess::start(
        &env.redis.url(),
        &queue_name(),
        steady_settings(2),
        Handlers::with_demo_actions(),
        Arc::new(OpenAccess),
        1,
    );
    let heard = py.event_where(|e| e["event"] == "finish").await;
    assert_eq!(heard["feed"], queue_name());
    assert_eq!(heard["id"], "py:1");
    let outcome: Outcome = serde_json::from_str(heard["result"].as_str().unwrap()).unwrap();
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(
        q.outcome(&ChangeId("py:1".into())).await.unwrap(),
        Some(outcome)
    );
    let items = py.call(json!({"op": "items", "feed": "notes"})).await;
    assert_eq!(items["n1"], json!({"text": "from thoonk.py"}).to_string());
    workers.stop().await;
}

#[tokio::test]
async fn thoonk_py_works_a_job_we_queued() {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), steady_settings(2))
        .await
        .unwrap();
    let alice = User {
        name: "alice".into(),
    };
    let change = jobs_support::change("web:1", publish("notes", "n1"));
    q.submit(&alice, &change).await.unwrap();
    let mut py = env.py(false).await;
    let got = py
        .call(json!({"op": "get", "queue": "changes", "timeout": 5}))
        .await;
    assert_eq!(got[0], "web:1");
    assert_eq!(got[2], 0, "no failures yet");
    let payload: JobPayload = serde_json::from_str(got[1].as_str().unwrap()).unwrap();
    assert_eq!(payload, JobPayload::new("alice", &change));
    assert_eq!(q.show("web:1").await.unwrap().unwrap().state, "claimed");
    py.call(json!({"op": "finish", "queue": "changes", "id": "web:1", "result": "done"}))
        .await;
    assert!(
        q.list().await.unwrap().is_empty(),
        "thoonk.py's finish removes it everywhere"
    );
    let mut conn = env.conn().await;
    let finishes: u64 = conn
        .get(format!("feed.finishes:{}", queue_name()))
        .await
        .unwrap();
    assert_eq!(finishes, 1);
}

#[tokio::test]
async fn a_job_held_by_a_dead_thoonk_py_worker_is_requeued_and_worked_once() {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), fast_settings(3))
        .await
        .unwrap();
    let alice = User {
        name: "alice".into(),
    };
    let change = jobs_support::change("web:2", publish("notes", "n2"));
    q.submit(&alice, &change).await.unwrap();
    let mut py = env.py(false).await;
    let got = py
        .call(json!({"op": "get", "queue": "changes", "timeout": 5}))
        .await;
    assert_eq!(got[0], "web:2");
    drop(py); // killed while holding the claim
    let workers = InProcess::start(
        &env.redis.url(),
        &queue_name(),
        fast_settings(3),
        Handlers::with_demo_actions(),
        Arc::new(OpenAccess),
        1,
    );
    let outcome = outcome_of(&q, &change.id).await;
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    let history = env.store.history(&feed("notes"), 0, 100).await.unwrap();
    assert_eq!(history.events.len(), 1, "applied once");
    workers.stop().await;
}
