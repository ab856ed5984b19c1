//! The job lifecycle against a real Redis, step by step without workers:
//! retract, edit, retry, sweep, stall, orphans, queue checks, and a classic
//! (thoonk.py-style) worker on our queue.

mod jobs_support;

use std::time::Duration;

use futures::StreamExt;
use jobs_support::*;
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::{ChangeId, ErrorCode, ItemId, Operation, Outcome};
use thoonk_server::gateway::access::User;
use thoonk_server::jobs::cli::{run, JobCommand};
use thoonk_server::jobs::{
    finish_channel, JobError, JobPayload, JobQueue, QueueSettings, Submitted,
};
use thoonk_server::redis_target::RedisConn;

fn bob() -> User {
    User { name: "bob".into() }
}

fn publish(id: &str) -> Operation {
    Operation::Publish {
        feed: feed("notes"),
        id: ItemId::new(id).unwrap(),
        item: json!(id),
        position: None,
    }
}

/// The key `prefix:<queue>` of the suite's queue ([`queue_name`]).
fn qkey(prefix: &str) -> String {
    format!("{prefix}:{}", queue_name())
}

/// Claims the next job the way a classic worker does (BRPOP, then ZADD feed.claimed).
async fn classic_claim(conn: &mut RedisConn, at_ms: u64) -> String {
    let id: String = conn.rpop(qkey("feed.ids"), None).await.unwrap();
    let _: () = conn.zadd(qkey("feed.claimed"), &id, at_ms).await.unwrap();
    id
}

/// Every unfinished job of `q` as (id, state), in the order `list` gives.
async fn job_states(q: &JobQueue) -> Vec<(String, &'static str)> {
    q.list()
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.id, j.state))
        .collect()
}

/// Starts the test Redis and opens the suite's queue on it; returns a
/// connection for raw commands too.
async fn setup(settings: QueueSettings) -> (Env, JobQueue, RedisConn) {
    let env = Env::start().await;
    let q = JobQueue::open(&env.target, &queue_name(), settings)
        .await
        .unwrap();
    let conn = env.conn().await;
    (env, q, conn)
}

#[tokio::test]
async fn queues_are_created_classically_and_other_thoonk_objects_are_refused() {
    let (env, _q, mut conn) = setup(fast_settings(1)).await;
    let client = &env.target;
    let kind: String = conn.hget(qkey("feed.config"), "type").await.unwrap();
    assert_eq!(kind, "job");
    let registered: bool = conn.sismember("feeds", queue_name()).await.unwrap();
    assert!(registered);
    let notes = shard("notes");
    let _: () = conn
        .hset(format!("feed.config:{notes}"), "type", "sorted_feed")
        .await
        .unwrap();
    let err = JobQueue::open(client, &notes, fast_settings(1))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, JobError::NotAQueue { ref kind, .. } if kind == "sorted_feed"),
        "{err}"
    );
    let err = JobQueue::attach(client, &shard("nothing"), fast_settings(1))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, JobError::NoSuchQueue { .. }), "{err}");
    let err = JobQueue::open(client, "bad*name", fast_settings(1))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, JobError::BadQueueName { .. }), "{err}");
    if env.on_cluster() {
        // A queue whose keys would spread over several slots is refused.
        let err = JobQueue::open(client, "changes", fast_settings(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, JobError::BadQueueName { .. }), "{err}");
    }
}

#[tokio::test]
async fn retract_removes_a_job_from_any_state_and_tells_a_waiting_submitter() {
    let (env, q, mut conn) = setup(fast_settings(0)).await;
    let client = &env.target;
    let mut pubsub = client.pubsub().await.unwrap();
    pubsub
        .subscribe(finish_channel(&queue_name()))
        .await
        .unwrap();
    for id in ["r:1", "r:2", "r:3"] {
        q.submit(&bob(), &change(id, publish(id))).await.unwrap();
    }
    // r:1 claimed, r:2 stalled (claim timed out, no retries allowed), r:3 available.
    assert_eq!(classic_claim(&mut conn, 1).await, "r:1");
    assert_eq!(classic_claim(&mut conn, 1).await, "r:2");
    let _: () = conn
        .zadd(qkey("feed.claimed"), "r:1", u64::MAX >> 12)
        .await
        .unwrap();
    let (requeued, stalled) = q.sweep().await.unwrap();
    assert_eq!((requeued.len(), stalled), (0, vec!["r:2".to_owned()]));
    let states = job_states(&q).await;
    assert_eq!(
        states,
        [
            ("r:3".into(), "available"),
            ("r:1".into(), "claimed"),
            ("r:2".into(), "stalled")
        ]
    );

    for (id, state) in [("r:1", "claimed"), ("r:2", "stalled"), ("r:3", "available")] {
        let out = run(
            JobCommand::Retract {
                queue: queue_name(),
                id: id.into(),
            },
            client,
        )
        .await
        .unwrap();
        assert_eq!(out["retracted_from"], state);
        match q.outcome(&ChangeId(id.into())).await.unwrap() {
            Some(Outcome::Rejected {
                code: ErrorCode::BadRequest,
                message,
            }) => assert!(message.contains("withdrew")),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(q.list().await.unwrap().is_empty());
    for key in [
        qkey("feed.items"),
        qkey("feed.cancelled"),
        qkey("job.errors"),
    ] {
        let len: u64 = conn.hlen(&key).await.unwrap();
        assert_eq!(len, 0, "{key} is empty");
    }
    let mut messages = pubsub.on_message();
    for _ in 0..3 {
        let message = tokio::time::timeout(PATIENCE, messages.next())
            .await
            .unwrap()
            .unwrap();
        let text: String = message.get_payload().unwrap();
        assert!(
            thoonk_server::jobs::parse_finish(&text).is_some(),
            "{text:?}"
        );
    }
    let err = run(
        JobCommand::Retract {
            queue: queue_name(),
            id: "r:1".into(),
        },
        client,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JobError::NoSuchJob { .. }), "{err}");
}

#[tokio::test]
async fn timed_out_claims_count_failures_then_stall_and_only_stalled_jobs_retry() {
    let (env, q, mut conn) = setup(QueueSettings {
        claim_timeout: Duration::from_millis(1),
        ..fast_settings(1)
    })
    .await;
    q.submit(&bob(), &change("t:1", publish("t1")))
        .await
        .unwrap();
    let err = q.retry("t:1").await.unwrap_err();
    assert!(
        matches!(err, JobError::NotStalled { .. }),
        "an available job is not retried: {err}"
    );

    classic_claim(&mut conn, 1).await;
    assert_eq!(q.sweep().await.unwrap(), (vec!["t:1".to_owned()], vec![]));
    let job = q.show("t:1").await.unwrap().unwrap();
    assert_eq!((job.state, job.failures), ("available", 1));
    assert!(job.last_error.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("claim timed out"));
    let put_notice: Option<f64> = conn.zscore(qkey("feed.published"), "t:1").await.unwrap();
    assert!(put_notice.is_some(), "a requeued job stays published");

    classic_claim(&mut conn, 1).await;
    assert_eq!(q.sweep().await.unwrap(), (vec![], vec!["t:1".to_owned()]));
    let job = q.show("t:1").await.unwrap().unwrap();
    assert_eq!((job.state, job.failures), ("stalled", 2));
    let put_notice: Option<f64> = conn.zscore(qkey("feed.published"), "t:1").await.unwrap();
    assert_eq!(
        put_notice, None,
        "a stalled job leaves feed.published, as classic stall does"
    );

    run(
        JobCommand::Retry {
            queue: queue_name(),
            id: "t:1".into(),
        },
        &env.target,
    )
    .await
    .unwrap();
    let job = q.show("t:1").await.unwrap().unwrap();
    assert_eq!((job.state, job.failures), ("available", 0));
    let err = q.retry("t:1").await.unwrap_err();
    assert!(matches!(err, JobError::NotStalled { .. }), "{err}");
}

#[tokio::test]
async fn an_admin_edits_only_jobs_not_in_flight() {
    let (env, q, mut conn) = setup(fast_settings(1)).await;
    q.submit(&bob(), &change("e:1", publish("e1")))
        .await
        .unwrap();
    let mut payload = JobPayload::new("bob", &change("e:1", publish("fixed")));
    q.edit("e:1", &payload).await.unwrap();
    let job = q.show("e:1").await.unwrap().unwrap();
    assert_eq!(job.payload["op"]["id"], "fixed");

    payload.id = ChangeId("e:2".into());
    let err = q.edit("e:1", &payload).await.unwrap_err();
    assert!(matches!(err, JobError::BadPayload { .. }), "{err}");
    let err = run(
        JobCommand::Edit {
            queue: queue_name(),
            id: "e:1".into(),
            payload: "{not json".into(),
        },
        &env.target,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JobError::BadPayload { .. }), "{err}");

    classic_claim(&mut conn, 1).await;
    let err = q
        .edit(
            "e:1",
            &JobPayload::new("bob", &change("e:1", publish("late"))),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::InFlight { .. }), "{err}");
    let err = q
        .edit("e:9", &JobPayload::new("bob", &change("e:9", publish("x"))))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::NoSuchJob { .. }), "{err}");
}

#[tokio::test]
async fn a_classic_worker_can_work_our_jobs_and_orphans_are_listed() {
    let (env, q, mut conn) = setup(fast_settings(1)).await;
    let mut pubsub = env.target.pubsub().await.unwrap();
    pubsub
        .subscribe(finish_channel(&queue_name()))
        .await
        .unwrap();
    q.submit(&bob(), &change("c:1", publish("c1")))
        .await
        .unwrap();
    q.submit(&bob(), &change("c:2", publish("c2")))
        .await
        .unwrap();
    // thoonk.py get: BRPOP, then MULTI ZADD claimed / HGET item / HGET cancelled.
    let (_, id): (String, String) = conn.brpop(qkey("feed.ids"), 1.0).await.unwrap();
    assert_eq!(id, "c:1", "first in, first out");
    let (_, item, cancelled): ((), String, Option<String>) = redis::pipe()
        .atomic()
        .zadd(qkey("feed.claimed"), &id, 1_700_000_000_000u64)
        .hget(qkey("feed.items"), &id)
        .hget(qkey("feed.cancelled"), &id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let payload: JobPayload = serde_json::from_str(&item).unwrap();
    assert_eq!((payload.user.as_str(), cancelled), ("bob", None));
    // thoonk.py finish with a result.
    let _: () = redis::pipe()
        .atomic()
        .zrem(qkey("feed.claimed"), &id)
        .hdel(qkey("feed.cancelled"), &id)
        .zrem(qkey("feed.published"), &id)
        .incr(qkey("feed.finishes"), 1)
        .publish(qkey("job.finish"), format!("{id}\0done"))
        .hdel(qkey("feed.items"), &id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut messages = pubsub.on_message();
    let message = tokio::time::timeout(PATIENCE, messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "c:1\0done");
    let states = job_states(&q).await;
    assert_eq!(states, [("c:2".into(), "available")]);

    // A classic worker that died between BRPOP and its claim leaves an orphan.
    let _: String = conn.rpop(qkey("feed.ids"), None).await.unwrap();
    let states = job_states(&q).await;
    assert_eq!(states, [("c:2".into(), "orphaned")]);
}

#[tokio::test]
async fn a_failure_counts_only_against_the_claim_it_belongs_to() {
    let (_env, q, mut conn) = setup(fast_settings(3)).await;
    q.submit(&bob(), &change("f:1", publish("f1")))
        .await
        .unwrap();
    let keys = thoonk_server::jobs::queue_keys(&queue_name());
    let claim = redis::Script::new(include_str!("../lua/job_claim.lua"));
    let fail = redis::Script::new(include_str!("../lua/job_fail.lua"));
    let mut invocation = claim.prepare_invoke();
    for key in &keys {
        invocation.key(key);
    }
    let (id, _payload, failures, claimed_at, remaining): (String, String, u64, String, u64) =
        invocation.invoke_async(&mut conn).await.unwrap();
    assert_eq!((id.as_str(), failures, remaining), ("f:1", 0, 0));
    let score: f64 = conn.zscore(qkey("feed.claimed"), "f:1").await.unwrap();
    assert_eq!(score.to_string(), claimed_at, "claimed in the same step");

    let run_fail = |token: String| {
        let mut invocation = fail.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation.arg("f:1").arg("boom").arg(3).arg(token);
        invocation
    };
    // A worker whose claim timed out (the job was claimed again since) counts nothing.
    let stale: (String, u64) = run_fail("1".into()).invoke_async(&mut conn).await.unwrap();
    assert_eq!(stale, ("gone".into(), 0));
    assert_eq!(q.show("f:1").await.unwrap().unwrap().state, "claimed");
    let own: (String, u64) = run_fail(claimed_at).invoke_async(&mut conn).await.unwrap();
    assert_eq!(own, ("retry".into(), 1));
    let job = q.show("f:1").await.unwrap().unwrap();
    assert_eq!((job.state, job.failures), ("available", 1));
}

/// Claims the suite queue's next job with `job_claim.lua`; returns its id
/// and claim time.
async fn script_claim(conn: &mut RedisConn) -> (String, String) {
    let claim = redis::Script::new(include_str!("../lua/job_claim.lua"));
    let mut invocation = claim.prepare_invoke();
    for key in thoonk_server::jobs::queue_keys(&queue_name()) {
        invocation.key(key);
    }
    let (id, _payload, _failures, claimed_at, _remaining): (String, String, u64, String, u64) =
        invocation.invoke_async(conn).await.unwrap();
    (id, claimed_at)
}

/// Runs `job_finish.lua` for `id` with `outcome` as the claim made at `claimed_at`.
async fn script_finish(
    conn: &mut RedisConn,
    id: &str,
    outcome: &Outcome,
    claimed_at: &str,
) -> Vec<String> {
    let finish = redis::Script::new(include_str!("../lua/job_finish.lua"));
    let mut invocation = finish.prepare_invoke();
    for key in thoonk_server::jobs::queue_keys(&queue_name()) {
        invocation.key(key);
    }
    invocation.key(thoonk_server::jobs::ledger_key(&queue_name(), id));
    invocation
        .arg(id)
        .arg(serde_json::to_string(outcome).unwrap())
        .arg(3_600_000)
        .arg("")
        .arg(claimed_at);
    invocation.invoke_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_finish_counts_only_for_the_claim_that_still_holds_the_job() {
    let (_env, q, mut conn) = setup(fast_settings(3)).await;
    let c = change("s:1", publish("s1"));
    q.submit(&bob(), &c).await.unwrap();
    let (id, first_claim) = script_claim(&mut conn).await;
    assert_eq!(id, "s:1");
    // The first worker's claim times out (the next millisecond, so that the
    // second claim gets another time) and the sweep puts the job back.
    eventually("Redis time passes the first claim", || {
        let mut conn = conn.clone();
        let first: u64 = first_claim.parse().unwrap();
        async move {
            let (secs, micros): (u64, u64) =
                redis::cmd("TIME").query_async(&mut conn).await.unwrap();
            (secs * 1000 + micros / 1000 > first).then_some(())
        }
    })
    .await;
    let sweep = redis::Script::new(include_str!("../lua/job_sweep.lua"));
    let mut invocation = sweep.prepare_invoke();
    for key in thoonk_server::jobs::queue_keys(&queue_name()) {
        invocation.key(key);
    }
    invocation.arg(0).arg(3).arg(100);
    let (requeued, _stalled): (Vec<String>, Vec<String>) =
        invocation.invoke_async(&mut conn).await.unwrap();
    assert_eq!(requeued, ["s:1"]);

    let rejected = Outcome::Rejected {
        code: ErrorCode::Forbidden,
        message: "decided by a claim that timed out".into(),
    };
    // Available again: the timed-out worker's outcome is not recorded.
    let stale = script_finish(&mut conn, "s:1", &rejected, &first_claim).await;
    assert_eq!(stale, ["gone"]);
    assert_eq!(q.outcome(&c.id).await.unwrap(), None);
    assert_eq!(q.show("s:1").await.unwrap().unwrap().state, "available");

    // Claimed again by another worker: still not recorded.
    let (_, second_claim) = script_claim(&mut conn).await;
    assert_ne!(second_claim, first_claim);
    let stale = script_finish(&mut conn, "s:1", &rejected, &first_claim).await;
    assert_eq!(stale, ["gone"]);
    assert_eq!(q.outcome(&c.id).await.unwrap(), None);
    assert_eq!(q.show("s:1").await.unwrap().unwrap().state, "claimed");

    // The claim that holds the job finishes it.
    let accepted = Outcome::Accepted {
        result: serde_json::Value::Null,
        revs: Default::default(),
        epochs: Default::default(),
    };
    let own = script_finish(&mut conn, "s:1", &accepted, &second_claim).await;
    assert_eq!(own[0], "finished");
    assert_eq!(q.outcome(&c.id).await.unwrap(), Some(accepted));
    assert!(q.show("s:1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_queued_change_whose_ledger_record_is_gone_is_still_refused_to_another_user() {
    let (_env, q, mut conn) = setup(fast_settings(1)).await;
    let c = change("o:1", publish("o1"));
    assert_eq!(q.submit(&bob(), &c).await.unwrap(), Submitted::Queued);
    // The ledger record runs out while the job still waits in the queue.
    let ledger = thoonk_server::jobs::ledger_key(&queue_name(), "o:1");
    let _: () = conn.del(&ledger).await.unwrap();
    let mallory = User {
        name: "mallory".into(),
    };
    let err = q.submit(&mallory, &c).await.unwrap_err();
    assert!(
        matches!(err, JobError::WrongUser { ref owner, .. } if owner == "bob"),
        "{err}"
    );
    assert_eq!(
        q.submit(&bob(), &c).await.unwrap(),
        Submitted::AlreadyQueued
    );
}

#[tokio::test]
async fn a_queued_change_whose_job_was_lost_is_put_again_on_resubmit() {
    let (_env, q, mut conn) = setup(fast_settings(1)).await;
    let c = change("l:1", publish("l1"));
    assert_eq!(q.submit(&bob(), &c).await.unwrap(), Submitted::Queued);
    // Something outside the job scripts deletes the queue's payloads.
    let _: () = conn.del(qkey("feed.items")).await.unwrap();
    assert_eq!(q.submit(&bob(), &c).await.unwrap(), Submitted::Queued);
    let job = q.show("l:1").await.unwrap().unwrap();
    assert_eq!(job.payload["user"], "bob");
    assert_eq!(
        q.submit(&bob(), &c).await.unwrap(),
        Submitted::AlreadyQueued
    );
}
