//! Job tests with real worker processes (`examples/job_worker.rs`) killed
//! with SIGKILL at the worst moments, racing sweeps, and the admin commands.

mod jobs_support;

use std::time::Duration;

use jobs_support::*;
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::{ChangeId, ItemId, Operation, Outcome};
use thoonk_server::feeds::FeedStore;
use thoonk_server::gateway::access::User;
use thoonk_server::jobs::cli::{run, JobCommand};
use thoonk_server::jobs::{applied_key, JobError, JobQueue, QueueSettings};

fn alice() -> User {
    User {
        name: "alice".into(),
    }
}

/// Starts the test Redis and opens the suite's queue ([`queue_name`]) and a
/// feed store on it.
async fn open(settings: &QueueSettings) -> (Env, JobQueue, FeedStore) {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), settings.clone())
        .await
        .unwrap();
    let store = FeedStore::open(&env.target, "test").await.unwrap();
    (env, q, store)
}

/// An action of the example worker that publishes to the feed `notes`.
fn test_action(name: &str, id: &str, fail: bool) -> Operation {
    Operation::Action {
        name: name.into(),
        payload: json!({"feed": feed("notes"), "id": id, "item": {"n": id}, "fail": fail}),
    }
}

async fn state_of(q: &JobQueue, id: &str) -> Option<&'static str> {
    q.show(id).await.unwrap().map(|j| j.state)
}

#[tokio::test]
async fn a_worker_killed_mid_job_is_retried_after_the_claim_timeout_and_applied_once() {
    let settings = fast_settings(3);
    let (env, q, store) = open(&settings).await;
    let c = change("k:1", test_action("hang_first_attempt", "n1", false));
    q.submit(&alice(), &c).await.unwrap();
    let mut first = WorkerProcess::start(&env.url(), &queue_name(), &settings, &[]);
    eventually("the first worker claims the job", || async {
        (state_of(&q, "k:1").await == Some("claimed")).then_some(())
    })
    .await;
    first.kill9();
    let _second = WorkerProcess::start(&env.url(), &queue_name(), &settings, &[]);
    let outcome = outcome_of(&q, &c.id).await;
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(applied_count(&store, &feed("notes"), "k:1").await, 1);
}

#[tokio::test]
async fn a_worker_killed_after_its_script_applied_does_not_cause_a_second_apply() {
    let settings = fast_settings(3);
    let (env, q, store) = open(&settings).await;
    let notes = feed("notes");
    let c = change(
        "k:2",
        Operation::Publish {
            feed: notes.clone(),
            id: ItemId::new("n1").unwrap(),
            item: json!({"text": "once"}),
            position: None,
        },
    );
    q.submit(&alice(), &c).await.unwrap();
    let mut first = WorkerProcess::start(
        &env.url(),
        &queue_name(),
        &settings,
        &["--hang-after-apply"],
    );
    let mut conn = env.conn().await;
    let applied = applied_key(&notes, "k:2");
    eventually(
        "the first worker applied the job and has not finished it",
        || {
            let mut conn = conn.clone();
            let applied = applied.clone();
            let q = q.clone();
            async move {
                let record: Option<String> = conn.get(&applied).await.unwrap();
                (record.is_some() && state_of(&q, "k:2").await == Some("claimed")).then_some(())
            }
        },
    )
    .await;
    first.kill9();
    let _second = WorkerProcess::start(&env.url(), &queue_name(), &settings, &[]);
    let outcome = outcome_of(&q, &c.id).await;
    match &outcome {
        Outcome::Accepted { revs, .. } => assert_eq!(revs.get(&notes), Some(&1)),
        other => panic!("expected accepted, got {other:?}"),
    }
    assert_eq!(applied_count(&store, &notes, "k:2").await, 1);
    let rev: u64 = conn.get(format!("feed.rev:{notes}")).await.unwrap();
    assert_eq!(rev, 1, "the feed changed once");
}

#[tokio::test]
async fn a_job_past_max_retries_stalls_and_an_admin_edits_and_retries_it() {
    // No claim times out here, even on a loaded machine: only the handler fails.
    let settings = QueueSettings {
        claim_timeout: Duration::from_secs(5),
        ..fast_settings(1)
    };
    let (env, q, store) = open(&settings).await;
    let client = &env.target;
    let c = change("k:3", test_action("fail_while", "n3", true));
    q.submit(&alice(), &c).await.unwrap();
    let _worker = WorkerProcess::start(&env.url(), &queue_name(), &settings, &[]);
    let stalled = eventually("the job stalls", || async {
        let out = run(
            JobCommand::Stalled {
                queue: queue_name(),
            },
            client,
        )
        .await
        .unwrap();
        let jobs = out["stalled"].as_array().unwrap().clone();
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0]["id"], "k:3");
    assert_eq!(stalled[0]["failures"], 2, "{}", stalled[0]);
    assert_eq!(
        stalled[0]["last_error"]["error"],
        "the payload asks to fail"
    );
    assert_eq!(
        q.outcome(&c.id).await.unwrap(),
        None,
        "a stalled job has no outcome"
    );

    // The admin fixes the payload and retries.
    let mut payload = stalled[0]["payload"].clone();
    payload["op"]["payload"]["fail"] = json!(false);
    run(
        JobCommand::Edit {
            queue: queue_name(),
            id: "k:3".into(),
            payload: payload.to_string(),
        },
        client,
    )
    .await
    .unwrap();
    run(
        JobCommand::Retry {
            queue: queue_name(),
            id: "k:3".into(),
        },
        client,
    )
    .await
    .unwrap();
    let outcome = outcome_of(&q, &c.id).await;
    assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(applied_count(&store, &feed("notes"), "k:3").await, 1);
    let result = run(
        JobCommand::Result {
            queue: queue_name(),
            id: "k:3".into(),
        },
        client,
    )
    .await
    .unwrap();
    assert_eq!(result["outcome"]["status"], "accepted");
    assert_eq!(result["ledger"]["user"], "alice");
    // Only a stalled job can be retried.
    let err = run(
        JobCommand::Retry {
            queue: queue_name(),
            id: "k:3".into(),
        },
        client,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JobError::NotStalled { .. }), "{err}");
}

#[tokio::test]
async fn two_processes_sweeping_at_once_requeue_each_timed_out_claim_once() {
    // The dead worker's claims are ancient; the workers' own claims never time out here.
    let settings = QueueSettings {
        claim_timeout: Duration::from_secs(5),
        ..fast_settings(3)
    };
    let (env, q, store) = open(&settings).await;
    let queue = queue_name();
    let notes = feed("notes");
    let ids: Vec<String> = (0..20).map(|i| format!("s:{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let op = Operation::Publish {
            feed: notes.clone(),
            id: ItemId::new(format!("n{i}")).unwrap(),
            item: json!(i),
            position: None,
        };
        q.submit(&alice(), &change(id, op)).await.unwrap();
    }
    // A classic worker took them all (BRPOP, then ZADD feed.claimed) and died long ago.
    let mut conn = env.conn().await;
    for _ in &ids {
        let id: String = conn.rpop(format!("feed.ids:{queue}"), None).await.unwrap();
        let _: () = conn
            .zadd(format!("feed.claimed:{queue}"), &id, 1_000_000_000_000u64)
            .await
            .unwrap();
    }
    let _a = WorkerProcess::start(&env.url(), &queue_name(), &settings, &[]);
    let _b = WorkerProcess::start(&env.url(), &queue_name(), &settings, &[]);
    for id in &ids {
        let outcome = outcome_of(&q, &ChangeId(id.clone())).await;
        assert!(
            matches!(outcome, Outcome::Accepted { .. }),
            "{id}: {outcome:?}"
        );
        assert_eq!(applied_count(&store, &notes, id).await, 1, "{id}");
    }
    let finishes: u64 = conn.get(format!("feed.finishes:{queue}")).await.unwrap();
    assert_eq!(finishes, 20, "each job finished once");
    let rev: u64 = conn.get(format!("feed.rev:{notes}")).await.unwrap();
    assert_eq!(rev, 20);
    assert!(q.list().await.unwrap().is_empty());
}
