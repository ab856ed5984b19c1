//! The feed write script: publishes per second through `FeedStore::publish`
//! beside a trivial script on the same connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thoonk_protocol::{FeedName, ItemId};
use thoonk_server::feeds::{FeedSettings, FeedStore, FeedType, PRELUDE};
use thoonk_server::redis_target::RedisTarget;

use crate::args::Args;

/// The publish script exactly as the store loads it (prelude + body).
fn publish_script() -> redis::Script {
    redis::Script::new(&format!(
        "{PRELUDE}\n{}",
        include_str!("../../server-stub/lua/publish.lua")
    ))
}

/// Creates the feed (when missing) and loads the publish script; prints its sha
/// so that redis-benchmark can call it with EVALSHA.
pub async fn prepare(args: &Args) -> anyhow::Result<Value> {
    let client = redis::Client::open(args.text("redis")?.as_str())?;
    let feed = FeedName::new(args.text("feed")?)?;
    let store = crate::ws::retry(|| FeedStore::open(&client, "thoonk-bench")).await?;
    let _ = store
        .create(&feed, &FeedSettings::new(FeedType::Feed))
        .await;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let script = publish_script();
    script.load_async(&mut conn).await?;
    let trivial = redis::Script::new("return 1");
    trivial.load_async(&mut conn).await?;
    Ok(
        json!({"feed": feed.as_str(), "publish_sha": script.get_hash(), "trivial_sha": trivial.get_hash()}),
    )
}

/// `--concurrency` tasks call the script in a loop for `--seconds` over one
/// multiplexed connection (as the gateway and workers do).
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let client = redis::Client::open(args.text("redis")?.as_str())?;
    let feed = FeedName::new(args.text("feed")?)?;
    let which = args.text("script")?;
    let concurrency: usize = args.or("concurrency", 50)?;
    let seconds: f64 = args.or("seconds", 5.0)?;
    let store = crate::ws::retry(|| FeedStore::open(&client, "thoonk-bench")).await?;
    let _ = store
        .create(&feed, &FeedSettings::new(FeedType::Feed))
        .await;
    let conn = client.get_connection_manager().await?;
    let trivial = Arc::new(redis::Script::new("return 1"));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = std::process::id();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (store, feed, conn, trivial) =
            (store.clone(), feed.clone(), conn.clone(), trivial.clone());
        let (done, stop, which) = (done.clone(), stop.clone(), which.clone());
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let result = if which == "publish" {
                    let id = ItemId::new(format!("{run_id}-{task}-{n}"))?;
                    store
                        .publish(&feed, Some(&id), &json!({"title": "x", "n": n}), None)
                        .await
                        .map(drop)
                        .map_err(anyhow::Error::from)
                } else {
                    let mut conn = conn.clone();
                    trivial
                        .invoke_async::<_, i64>(&mut conn)
                        .await
                        .map(drop)
                        .map_err(anyhow::Error::from)
                };
                match result {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    // The client's response timeout (500 ms by default) fires
                    // when the machine is overloaded: count it, go on.
                    Err(err) if errors.fetch_add(1, Ordering::Relaxed) < 1000 => {
                        let _ = err;
                        continue;
                    }
                    Err(err) => return Err(err.context("publish: too many errors")),
                };
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let ops_at_stop = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(json!({
        "script": which,
        "concurrency": concurrency,
        "ops": ops_at_stop,
        "errors": errors.load(Ordering::Relaxed),
        "secs": elapsed,
        "per_sec": ops_at_stop as f64 / elapsed,
    }))
}

/// Publishes per second spread over `--feeds` feeds named
/// `bench:{s<i>}:spread` (each its own hash tag, so on a Redis Cluster the
/// feeds, and the load, spread over the shards), by `--concurrency` tasks on
/// one store for `--seconds`. `--redis` may name a cluster.
pub async fn spread(args: &Args) -> anyhow::Result<Value> {
    let target = RedisTarget::parse(&args.text("redis")?)?;
    let feeds: usize = args.or("feeds", 12)?;
    let concurrency: usize = args.or("concurrency", 50)?;
    let seconds: f64 = args.or("seconds", 3.0)?;
    let store = crate::ws::retry(|| FeedStore::open(&target, "thoonk-bench")).await?;
    let names: Vec<FeedName> = (0..feeds)
        .map(|i| FeedName::new(format!("bench:{{s{i}}}:spread")))
        .collect::<Result<_, _>>()?;
    for feed in &names {
        let _ = store.create(feed, &FeedSettings::new(FeedType::Feed)).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = std::process::id();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (store, feed) = (store.clone(), names[task % feeds].clone());
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = ItemId::new(format!("{run_id}-{task}-{n}"))?;
                match store
                    .publish(&feed, Some(&id), &json!({"n": n}), None)
                    .await
                {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) if errors.fetch_add(1, Ordering::Relaxed) < 1000 => continue,
                    Err(err) => return Err(anyhow::Error::from(err).context("too many errors")),
                };
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let ops = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(json!({
        "cluster": target.is_cluster(),
        "feeds": feeds,
        "concurrency": concurrency,
        "ops": ops,
        "errors": errors.load(Ordering::Relaxed),
        "secs": elapsed,
        "per_sec": ops as f64 / elapsed,
    }))
}
