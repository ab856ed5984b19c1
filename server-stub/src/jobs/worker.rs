//! The workers: claim jobs, run their handlers, apply their plans, finish
//! them; plus the claim-timeout sweep. A panic or error in one job fails
//! that job only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use thoonk_protocol::{ChangeId, ErrorCode, Outcome};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::apply::{apply, Applied};
use super::batch::{apply_batch, created_feeds, BatchPayload, Planned};
use super::error::JobError;
use super::handlers::{Handlers, JobContext};
use super::keys::{classic_put_channel, put_channel};
use super::payload::JobPayload;
use super::plan::HandlerError;
use super::queue::{Claimed, Failed, JobQueue};
use super::settings::QueueSettings;
use crate::feeds::FeedStore;
use crate::gateway::access::AccessRules;
use crate::redis_target::RedisTarget;

/// How often a handler runs again when the items it read changed before its write.
const STALE_ATTEMPTS: usize = 5;
/// Pause after a Redis error before a worker tries again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// What a worker needs, shared by all workers of a process.
struct Shared {
    queue: JobQueue,
    store: FeedStore,
    handlers: Handlers,
    access: Arc<dyn AccessRules>,
}

/// How one job ended, for the worker to record.
enum Ending {
    Finish(Outcome),
    /// A batch job: each change's outcome, `None` for one not attempted.
    FinishBatch(Vec<(ChangeId, Option<Outcome>)>),
    Fail(String),
}

/// Runs `concurrency` workers on `queue` until `shutdown` resolves; also runs
/// the claim-timeout sweep. Jobs in flight when `shutdown` resolves are
/// finished first. Returns an error only when the queue cannot be opened.
pub async fn run_workers(
    redis: impl Into<RedisTarget>,
    queue: String,
    settings: QueueSettings,
    handlers: Handlers,
    access: Arc<dyn AccessRules>,
    concurrency: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), JobError> {
    let redis = redis.into();
    let job_queue = JobQueue::open(&redis, &queue, settings.clone()).await?;
    let store = FeedStore::open(&redis, &format!("thoonk-worker-{}", std::process::id())).await?;
    let shared = Arc::new(Shared {
        queue: job_queue,
        store,
        handlers,
        access,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let doorbell = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    tasks.spawn(listen(
        redis,
        queue.clone(),
        doorbell.clone(),
        stop_rx.clone(),
    ));
    tasks.spawn(sweep_loop(shared.queue.clone(), stop_rx.clone()));
    for _ in 0..concurrency.max(1) {
        tasks.spawn(worker(shared.clone(), doorbell.clone(), stop_rx.clone()));
    }
    tracing::info!(queue, concurrency, "job workers started");
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!(queue, "job workers stopped");
    Ok(())
}

/// Runs only the claim-timeout sweep of `queue` until `shutdown` resolves
/// (for server processes that run no workers; [`run_workers`] sweeps too).
pub async fn run_sweeper(
    redis: impl Into<RedisTarget>,
    queue: String,
    settings: QueueSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), JobError> {
    let job_queue = JobQueue::open(redis, &queue, settings).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_loop(job_queue, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    Ok(())
}

/// Rings `doorbell` on every put notice of the queue (`job.put:N`, and
/// thoonk.py's `feed.publishes:N`); reconnects after errors.
async fn listen(
    redis: RedisTarget,
    queue: String,
    doorbell: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let subscribed = async {
            let mut pubsub = redis.pubsub().await?;
            pubsub.subscribe(put_channel(&queue)).await?;
            pubsub.subscribe(classic_put_channel(&queue)).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = tokio::select! {
            result = subscribed => match result {
                Ok(pubsub) => pubsub,
                Err(err) => {
                    tracing::warn!(queue, %err, "job put notices unavailable; polling");
                    tokio::select! {
                        _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        };
        // A notice may have been missed while (re)subscribing.
        doorbell.notify_waiters();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                // One notice, one job: wake one idle worker (or leave it a permit).
                message = messages.next() => match message {
                    Some(_) => doorbell.notify_one(),
                    None => break,
                },
                _ = stop.changed() => return,
            }
        }
    }
}

async fn sweep_loop(queue: JobQueue, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(queue.settings().sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match queue.sweep().await {
            Ok((requeued, stalled)) => {
                if !requeued.is_empty() || !stalled.is_empty() {
                    tracing::warn!(
                        queue = queue.name(),
                        ?requeued,
                        ?stalled,
                        "claims timed out"
                    );
                }
            }
            Err(err) => tracing::warn!(queue = queue.name(), %err, "claim-timeout sweep failed"),
        }
    }
}

async fn worker(shared: Arc<Shared>, doorbell: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let poll = shared.queue.settings().poll_interval;
    // A job claimed together with the previous job's finish. It is worked
    // even when stopping: it is claimed already.
    let mut next: Option<Claimed> = None;
    while next.is_some() || !*stop.borrow() {
        let rang = doorbell.notified();
        tokio::pin!(rang);
        rang.as_mut().enable();
        let claimed = match next.take() {
            Some(job) => Ok(Some(job)),
            None => shared.queue.claim().await,
        };
        match claimed {
            Ok(Some(job)) => {
                if job.remaining > 0 {
                    // More jobs wait: pass the doorbell on to an idle worker.
                    doorbell.notify_one();
                }
                // Run the job in its own task: a panic in it ends that task only.
                let (id, claimed_at) = (job.id.clone(), job.claimed_at.clone());
                let run = tokio::spawn(work_one(shared.clone(), job));
                let ending = match run.await {
                    Ok(ending) => ending,
                    Err(err) => Ending::Fail(panic_message(err)),
                };
                let claim_next = !*stop.borrow();
                next = record(&shared.queue, &id, &claimed_at, ending, claim_next).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = &mut rang => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(err) => {
                tracing::warn!(queue = shared.queue.name(), %err, "claiming a job failed");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_PAUSE) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return "the job was cancelled".to_owned();
    }
    let panic = err.into_panic();
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    format!("the handler panicked: {text}")
}

/// Finishes or fails the job; Redis errors are retried a few times, then
/// left to the claim-timeout sweep. A finish or a failure counts only for
/// this worker's own claim: after a timeout another worker may have claimed
/// the job, and its attempt decides the outcome.
async fn record(
    queue: &JobQueue,
    id: &str,
    claimed_at: &str,
    ending: Ending,
    claim_next: bool,
) -> Option<Claimed> {
    for attempt in 1..=3 {
        let result = match &ending {
            Ending::Finish(outcome) => {
                let text = serde_json::to_string(outcome).unwrap_or_default();
                queue
                    .finish_and_claim(id, claimed_at, &text, claim_next)
                    .await
                    .map(|(stored, next)| {
                        if stored.is_none() {
                            tracing::info!(
                                queue = queue.name(),
                                id,
                                "job finished elsewhere, retracted, or claimed again"
                            );
                        }
                        next
                    })
            }
            Ending::FinishBatch(outcomes) => queue
                .finish_batch(id, claimed_at, outcomes)
                .await
                .map(|finished| {
                    if !finished {
                        tracing::info!(
                            queue = queue.name(),
                            id,
                            "batch finished elsewhere, retracted, or claimed again"
                        );
                    }
                    None
                }),
            Ending::Fail(error) => queue.fail(id, Some(claimed_at), error).await.map(|failed| {
                match failed {
                    Failed::Retry(n) => tracing::warn!(
                        queue = queue.name(),
                        id,
                        error,
                        failures = n,
                        "job failed; retrying"
                    ),
                    Failed::Stalled(n) => tracing::error!(
                        queue = queue.name(),
                        id,
                        error,
                        failures = n,
                        "job stalled"
                    ),
                    Failed::Gone => tracing::info!(
                        queue = queue.name(),
                        id,
                        error,
                        "failed job no longer claimed"
                    ),
                }
                None
            }),
        };
        match result {
            Ok(next) => return next,
            Err(err) if attempt == 3 => {
                tracing::error!(queue = queue.name(), id, %err, "cannot record the job's end; the sweep will retry it");
            }
            Err(_) => tokio::time::sleep(ERROR_PAUSE).await,
        }
    }
    None
}

/// Works one claimed job within the claim timeout.
async fn work_one(shared: Arc<Shared>, job: Claimed) -> Ending {
    let timeout = shared.queue.settings().claim_timeout;
    match tokio::time::timeout(timeout, work(&shared, &job)).await {
        Ok(ending) => ending,
        Err(_) => Ending::Fail(format!(
            "the job took longer than {} ms",
            timeout.as_millis()
        )),
    }
}

async fn work(shared: &Shared, job: &Claimed) -> Ending {
    if let Some(batch) = BatchPayload::parse_for(&job.id, &job.payload) {
        return match batch {
            Ok(batch) => work_batch(shared, job, batch).await,
            Err(error) => Ending::Fail(format!("unreadable batch payload: {error}")),
        };
    }
    let payload = match JobPayload::parse_for(&job.id, &job.payload) {
        Ok(payload) => payload,
        Err(err) => {
            return Ending::Finish(Outcome::Rejected {
                code: ErrorCode::BadRequest,
                message: err.to_string(),
            })
        }
    };
    let Some(user) = shared.access.find_user(&payload.user) else {
        return Ending::Finish(Outcome::Rejected {
            code: ErrorCode::Unauthorized,
            message: format!("unknown user {:?}", payload.user),
        });
    };
    let ctx = JobContext {
        id: payload.id.clone(),
        user,
        base: payload.base.clone(),
        access: shared.access.clone(),
        feeds: shared.store.clone(),
        failures: job.failures,
    };
    let retention = shared.queue.settings().retention_ms();
    let conn = shared.queue.connection();
    for _ in 0..STALE_ATTEMPTS {
        let plan = match shared.handlers.plan(ctx.clone(), &payload.op).await {
            Ok(plan) => plan,
            Err(HandlerError::Rejected { code, message }) => {
                return Ending::Finish(Outcome::Rejected { code, message })
            }
            Err(HandlerError::Failed(error)) => return Ending::Fail(error),
        };
        let scripts = shared.queue.scripts();
        match apply(&conn, scripts, &shared.store, &job.id, &plan, &retention).await {
            Ok(Applied::Done(outcome)) => {
                // An earlier attempt may have created a feed and failed
                // before registering it (`feeds`, `newfeed`); this attempt
                // found the feed and created nothing, so it registers them.
                if job.failures > 0 && matches!(outcome, Outcome::Accepted { .. }) {
                    for write in plan.writes.iter().filter(|w| w.create.is_some()) {
                        if let Err(err) = shared.store.register(&write.feed).await {
                            return Ending::Fail(format!(
                                "register {} after a retry: {err}",
                                write.feed
                            ));
                        }
                    }
                }
                if let (Some(hook), Outcome::Accepted { .. }) =
                    (shared.handlers.after_apply_hook(), &outcome)
                {
                    if !plan.writes.is_empty() {
                        hook(ctx.clone(), outcome.clone()).await;
                    }
                }
                return Ending::Finish(outcome);
            }
            Ok(Applied::Stale) => continue,
            Err(err) if err.is_caller_error() => {
                return Ending::Finish(Outcome::Rejected {
                    code: ErrorCode::BadRequest,
                    message: err.to_string(),
                })
            }
            Err(err) => return Ending::Fail(err.to_string()),
        }
    }
    Ending::Fail(format!(
        "the items this change reads kept changing ({STALE_ATTEMPTS} attempts)"
    ))
}

/// Works a batch job: plans each change (access rules per change), applies
/// them in order in one script, and finishes every change at once.
async fn work_batch(shared: &Shared, job: &Claimed, batch: BatchPayload) -> Ending {
    let ids: Vec<ChangeId> = batch.batch.iter().map(|p| p.id.clone()).collect();
    let Some(user) = shared.access.find_user(&batch.user) else {
        let outcome = Outcome::Rejected {
            code: ErrorCode::Unauthorized,
            message: format!("unknown user {:?}", batch.user),
        };
        return Ending::FinishBatch(
            ids.into_iter()
                .map(|id| (id, Some(outcome.clone())))
                .collect(),
        );
    };
    let Some(feed) = batch.batch.first().and_then(|p| p.op.feed()).cloned() else {
        let outcome = Outcome::Rejected {
            code: ErrorCode::BadRequest,
            message: "a batch holds changes to one feed only".into(),
        };
        return Ending::FinishBatch(
            ids.into_iter()
                .map(|id| (id, Some(outcome.clone())))
                .collect(),
        );
    };
    let mut planned = Vec::with_capacity(batch.batch.len());
    let mut contexts = Vec::with_capacity(batch.batch.len());
    for payload in &batch.batch {
        let ctx = JobContext {
            id: payload.id.clone(),
            user: user.clone(),
            base: payload.base.clone(),
            access: shared.access.clone(),
            feeds: shared.store.clone(),
            failures: job.failures,
        };
        let plan = shared.handlers.plan(ctx.clone(), &payload.op).await;
        match Planned::from_plan(&feed, plan) {
            Ok(p) => planned.push(p),
            Err(error) => return Ending::Fail(error),
        }
        contexts.push(ctx);
    }
    let retention = shared.queue.settings().retention_ms();
    let conn = shared.queue.connection();
    let scripts = shared.queue.scripts();
    let outcomes = match apply_batch(
        &conn,
        scripts,
        &shared.store,
        &feed,
        &ids,
        &mut planned,
        &retention,
    )
    .await
    {
        Ok(outcomes) => outcomes,
        Err(err) => return Ending::Fail(err.to_string()),
    };
    if job.failures > 0 {
        for feed in created_feeds(&planned, &outcomes) {
            if let Err(err) = shared.store.register(&feed).await {
                return Ending::Fail(format!("register {feed} after a retry: {err}"));
            }
        }
    }
    if let Some(hook) = shared.handlers.after_apply_hook() {
        for (ctx, outcome) in contexts.iter().zip(&outcomes) {
            if let Some(outcome @ Outcome::Accepted { .. }) = outcome {
                hook(ctx.clone(), outcome.clone()).await;
            }
        }
    }
    Ending::FinishBatch(ids.into_iter().zip(outcomes).collect())
}
