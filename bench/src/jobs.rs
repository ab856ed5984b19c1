//! Jobs end to end: put → claimed and worked → outcome stored and published,
//! with `--workers` in-process workers (as `serve --workers N` runs them),
//! on one queue or on a queue per shard of a Redis Cluster.

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
    finish_channel, run_workers, Handlers, JobPayload, Plan, Priority, QueueSet, QueueSettings,
};
use thoonk_server::redis_target::{key_slot, RedisTarget};

use crate::args::Args;

/// `--jobs` jobs put by `--putters` concurrent tasks and worked by
/// `--workers` in-process workers in all; the clock runs from the first put
/// to the last finish notice.
///
/// By default one queue on one Redis, every job on one feed. With
/// `--queues K` the jobs go to K queues through the gateway's own routing
/// ([`QueueSet`], by the hash tag of the feed a change writes), each queue
/// named by its own tag and, on a Redis Cluster (`--redis
/// redis+cluster://…`), on a different primary where the cluster has that
/// many; the workers are split evenly over the queues. With `--teams T`
/// the publish jobs spread over T feeds `team:{<n>}:…`.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let spec = args.text("redis")?;
    let target = RedisTarget::parse(&spec)?;
    let jobs: u64 = args.or("jobs", 10_000)?;
    let workers: usize = args.or("workers", 1)?;
    let putters: u64 = args.or("putters", 16)?;
    let queue_count: usize = args.or("queues", 0)?;
    let teams: usize = args.or("teams", 0)?;
    let op_kind = args.text("op")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let names = if queue_count == 0 {
        vec![format!("bench:jobs:{op_kind}:{workers}:{stamp}")]
    } else {
        queue_names(&target, queue_count, &format!("bjobs:{stamp}")).await?
    };
    anyhow::ensure!(
        workers >= names.len(),
        "{workers} workers cannot work {} queues",
        names.len()
    );
    let targets: Vec<FeedName> = if teams == 0 {
        vec![FeedName::new(format!("bench:jobfeed:{stamp}"))?]
    } else {
        (0..teams)
            .map(|n| FeedName::new(format!("team:{{{n}}}:bench-jobs:{stamp}")))
            .collect::<Result<_, _>>()?
    };
    let settings = QueueSettings::default();
    let queues = crate::ws::retry(|| QueueSet::open(&target, &names, settings.clone())).await?;

    // Listen for every finish before the first put (classic PUBLISH: one
    // node of a cluster hears every node's).
    let mut pubsub = target.pubsub().await?;
    for name in &names {
        pubsub.subscribe(finish_channel(name)).await?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The workers, split evenly over the queues (the first queues get the rest).
    let mut worker_tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut handlers = Handlers::new();
        handlers.register("noop", |_ctx, _payload| async { Ok(Plan::default()) });
        let per_queue = workers / names.len() + usize::from(i < workers % names.len());
        let mut stop = stop_rx.clone();
        worker_tasks.push(tokio::spawn(run_workers(
            target.clone(),
            name.clone(),
            settings.clone(),
            handlers,
            Arc::new(OpenAccess),
            per_queue,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let noop = op_kind == "noop";
    let change = move |n: u64| -> anyhow::Result<ChangeRequest> {
        let op = if noop {
            Operation::Action {
                name: "noop".into(),
                payload: json!({}),
            }
        } else {
            Operation::Publish {
                feed: targets[n as usize % targets.len()].clone(),
                id: ItemId::new(format!("i{n}"))?,
                item: json!({"title": "job", "n": n}),
                position: None,
            }
        };
        Ok(ChangeRequest {
            id: ChangeId::new("bench", n),
            op,
            base: BTreeMap::new(),
        })
    };
    let change = Arc::new(change);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut put_tasks = Vec::new();
    for _ in 0..putters {
        let (queues, next, change) = (queues.clone(), next.clone(), change.clone());
        put_tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return Ok::<_, anyhow::Error>(());
                }
                let change = change(n)?;
                // A put is exactly-once by id: retrying after a timeout is safe.
                let payload = JobPayload::new("bench", &change);
                let queue = queues.queue_for(&change);
                crate::ws::retry(|| queue.put_payload(&payload, Priority::Normal))
                    .await
                    .context("put")?;
            }
        }));
    }
    let mut finished = 0u64;
    let mut accepted = 0u64;
    let mut per_queue: BTreeMap<String, u64> = BTreeMap::new();
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
            let channel = message.get_channel_name();
            *per_queue
                .entry(
                    channel
                        .strip_prefix("job.finish:")
                        .unwrap_or(channel)
                        .to_owned(),
                )
                .or_default() += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for task in put_tasks {
        task.await??;
    }
    // The outcome of the last job is stored in its queue's ledger.
    let stored = queues.outcome(&change(jobs - 1)?).await?.is_some();
    let _ = stop_tx.send(true);
    for task in worker_tasks {
        let _ = task.await;
    }
    Ok(json!({
        "op": op_kind,
        "cluster": target.is_cluster(),
        "queues": names.len(),
        "teams": teams,
        "workers": workers,
        "jobs": jobs,
        "accepted": accepted,
        "jobs_per_queue": names.iter().map(|n| per_queue.get(n).copied().unwrap_or(0)).collect::<Vec<_>>(),
        "last_outcome_stored": stored,
        "secs": elapsed,
        "per_sec": jobs as f64 / elapsed,
    }))
}

/// `count` queue names `{<prefix>:<letter>}`, each its own hash tag; on a
/// cluster, chosen so that the queues live on different primaries (as far
/// as the cluster has primaries).
async fn queue_names(
    target: &RedisTarget,
    count: usize,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let candidates = (0..2000).map(|i| format!("{{{prefix}:q{i}}}"));
    let RedisTarget::Cluster { nodes, .. } = target else {
        return Ok(candidates.take(count).collect());
    };
    let ranges = slot_owners(&nodes[0]).await?;
    let owner = |slot: u16| {
        ranges
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .map(|(_, _, node)| node.clone())
    };
    let primaries: std::collections::BTreeSet<String> =
        ranges.iter().map(|(_, _, node)| node.clone()).collect();
    let mut taken: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for name in candidates {
        if names.len() == count {
            break;
        }
        let node = owner(key_slot(&name)).unwrap_or_default();
        // Another primary first; once every primary has a queue, any.
        if taken.contains(&node) && taken.len() < primaries.len().min(count) {
            continue;
        }
        taken.push(node);
        names.push(name);
    }
    // The gateway's routing gives the i-th queue the i-th range of slots:
    // in slot order, each team's jobs are queued on its feeds' primary.
    names.sort_by_key(|name| key_slot(name));
    Ok(names)
}

/// The slot ranges of a cluster and the `host:port` of the primary that
/// serves each (`CLUSTER SLOTS` on `node`).
pub async fn slot_owners(node: &redis::Client) -> anyhow::Result<Vec<(u16, u16, String)>> {
    let mut conn = node.get_multiplexed_async_connection().await?;
    let reply: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    let mut ranges = Vec::new();
    for entry in reply {
        let [lo, hi, primary, ..] = entry.as_slice() else {
            bail!("CLUSTER SLOTS entry {entry:?}");
        };
        let lo: u16 = redis::from_redis_value_ref(lo)?;
        let hi: u16 = redis::from_redis_value_ref(hi)?;
        let primary: Vec<redis::Value> = redis::from_redis_value_ref(primary)?;
        let host: String = redis::from_redis_value_ref(&primary[0])?;
        let port: u16 = redis::from_redis_value_ref(&primary[1])?;
        ranges.push((lo, hi, format!("{host}:{port}")));
    }
    Ok(ranges)
}
