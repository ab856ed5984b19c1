//! Jobs end to end: put → claimed and worked → outcome stored and published,
//! with `--workers` in-process workers (as `serve --workers N` runs them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use thoonk_protocol::{ChangeId, ChangeRequest, FeedName, ItemId, Operation};
use thoonk_server::gateway::OpenAccess;
use thoonk_server::jobs::{
    finish_channel, run_workers, Handlers, JobPayload, JobQueue, Plan, Priority, QueueSettings,
};

use crate::args::Args;

pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let client = redis::Client::open(args.text("redis")?.as_str())?;
    let jobs: u64 = args.or("jobs", 10_000)?;
    let workers: usize = args.or("workers", 1)?;
    let putters: u64 = args.or("putters", 16)?;
    let op_kind = args.text("op")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let queue = format!("bench:jobs:{op_kind}:{workers}:{stamp}");
    let target = FeedName::new(format!("bench:jobfeed:{stamp}"))?;
    let settings = QueueSettings::default();

    let mut handlers = Handlers::new();
    handlers.register("noop", |_ctx, _payload| async { Ok(Plan::default()) });
    let job_queue = crate::ws::retry(|| JobQueue::open(&client, &queue, settings.clone())).await?;

    // Listen for every finish before the first put.
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(finish_channel(&queue)).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers_task = tokio::spawn(run_workers(
        client.clone(),
        queue.clone(),
        settings,
        handlers,
        Arc::new(OpenAccess),
        workers,
        async move {
            let mut stop = stop_rx;
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut put_tasks = Vec::new();
    for _ in 0..putters {
        let (job_queue, next, op_kind, target) = (
            job_queue.clone(),
            next.clone(),
            op_kind.clone(),
            target.clone(),
        );
        put_tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return Ok::<_, anyhow::Error>(());
                }
                let op = if op_kind == "noop" {
                    Operation::Action {
                        name: "noop".into(),
                        payload: json!({}),
                    }
                } else {
                    Operation::Publish {
                        feed: target.clone(),
                        id: ItemId::new(format!("i{n}"))?,
                        item: json!({"title": "job", "n": n}),
                        position: None,
                    }
                };
                let change = ChangeRequest {
                    id: ChangeId::new("bench", n),
                    op,
                    base: BTreeMap::new(),
                };
                // A put is exactly-once by id: retrying after a timeout is safe.
                let payload = JobPayload::new("bench", &change);
                crate::ws::retry(|| job_queue.put_payload(&payload, Priority::Normal))
                    .await
                    .context("put")?;
            }
        }));
    }
    let mut finished = 0u64;
    let mut accepted = 0u64;
    {
        let mut messages = pubsub.on_message();
        while finished < jobs {
            let message = tokio::time::timeout(Duration::from_secs(60), messages.next())
                .await
                .context("no job finished for 60 s")?;
            let Some(message) = message else {
                bail!("the pub/sub connection closed")
            };
            let payload: String = message.get_payload()?;
            finished += 1;
            if payload.contains("\"accepted\"") {
                accepted += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for task in put_tasks {
        task.await??;
    }
    // The outcome of the last job is stored in the ledger.
    let stored = job_queue
        .outcome(&ChangeId::new("bench", jobs - 1))
        .await?
        .is_some();
    let _ = stop_tx.send(true);
    let _ = workers_task.await;
    Ok(json!({
        "op": op_kind,
        "workers": workers,
        "jobs": jobs,
        "accepted": accepted,
        "last_outcome_stored": stored,
        "secs": elapsed,
        "per_sec": jobs as f64 / elapsed,
    }))
}
