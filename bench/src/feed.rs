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

/// The publish script as one `EVAL` script (prelude + body), as the store
/// ran it before the function library.
fn publish_script() -> redis::Script {
    redis::Script::new(&format!(
        "{PRELUDE}\n{}",
        include_str!("../../server-stub/lua/publish.lua")
    ))
}

/// The 14 Redis calls of a publish of a new item to a time-ordered feed,
/// with the same keys and arguments and no logic: what the calls and the
/// argument/reply conversion cost inside a script, without the prelude's
/// checks and the notice. KEYS and ARGV as `publish.lua`'s (the feed's
/// revision moves on like a publish's, its log gets the same entry).
const CALLS_ONLY: &str = r#"
redis.call('HMGET', KEYS[1], 'type', 'max_length', 'retention', 'epoch', 'history')
local rev = tonumber(redis.call('GET', KEYS[6])) or 0
redis.call('EXISTS', KEYS[8])
redis.call('ZSCORE', KEYS[2], ARGV[2])
redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] .. '000', ARGV[2])
redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
rev = rev + 1
redis.call('SET', KEYS[6], rev)
redis.call('XADD', KEYS[8], 'MAXLEN', '~', 10000, rev .. '-0', 'op', 'publish', 'id', ARGV[2], 'item', ARGV[4])
redis.call('HSET', KEYS[7], ARGV[2], rev)
redis.call('PUBLISH', 'feed.publish:bench', ARGV[2] .. '\0' .. ARGV[4])
redis.call('PUBLISH', 'feed.changes:bench', ARGV[4])
return 1
"#;

/// Creates the feed (when missing), loads the function library and the
/// comparison scripts; prints their shas so that redis-benchmark can call
/// them with EVALSHA: `return 1` (the floor), the prelude followed by
/// `return 1`, the 14 calls of a publish without logic, and the publish as
/// one script.
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
    let prelude = redis::Script::new(&format!("{PRELUDE}\nreturn 1"));
    prelude.load_async(&mut conn).await?;
    let calls = redis::Script::new(CALLS_ONLY);
    calls.load_async(&mut conn).await?;
    Ok(json!({
        "feed": feed.as_str(),
        "publish_sha": script.get_hash(),
        "trivial_sha": trivial.get_hash(),
        "prelude_sha": prelude.get_hash(),
        "calls_sha": calls.get_hash(),
    }))
}

/// Calls completed and failed by [`run_for`].
pub(crate) struct Counted {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
}

/// Runs `concurrency` tasks, each calling `call(task, n)` for n = 1, 2, …
/// until `seconds` have passed; counts the calls that succeeded by then.
/// A failed call (the client's response timeout on an overloaded machine)
/// is counted and the task goes on, up to 1,000 failures in all.
pub(crate) async fn run_for<F, Fut>(
    concurrency: usize,
    seconds: f64,
    call: F,
) -> anyhow::Result<Counted>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (done, errors, stop, call) = (done.clone(), errors.clone(), stop.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match call(task, n).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) if errors.fetch_add(1, Ordering::Relaxed) < 1000 => continue,
                    Err(err) => return Err(err.context("too many errors")),
                };
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let ops = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(Counted {
        ops,
        errors: errors.load(Ordering::Relaxed),
        secs,
    })
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
    let run_id = std::process::id();
    let publish = which == "publish";
    let counted = run_for(concurrency, seconds, move |task, n| {
        let (store, feed, mut conn, trivial) =
            (store.clone(), feed.clone(), conn.clone(), trivial.clone());
        async move {
            if publish {
                let id = ItemId::new(format!("{run_id}-{task}-{n}"))?;
                store
                    .publish(&feed, Some(&id), &json!({"title": "x", "n": n}), None)
                    .await?;
            } else {
                trivial.invoke_async::<_, i64>(&mut conn).await?;
            }
            Ok(())
        }
    })
    .await?;
    Ok(json!({
        "script": which,
        "concurrency": concurrency,
        "ops": counted.ops,
        "errors": counted.errors,
        "secs": counted.secs,
        "per_sec": counted.ops as f64 / counted.secs,
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
    let run_id = std::process::id();
    let counted = run_for(concurrency, seconds, move |task, n| {
        let (store, feed) = (store.clone(), names[task % feeds].clone());
        async move {
            let id = ItemId::new(format!("{run_id}-{task}-{n}"))?;
            store
                .publish(&feed, Some(&id), &json!({"n": n}), None)
                .await?;
            Ok(())
        }
    })
    .await?;
    Ok(json!({
        "cluster": target.is_cluster(),
        "feeds": feeds,
        "concurrency": concurrency,
        "ops": counted.ops,
        "errors": counted.errors,
        "secs": counted.secs,
        "per_sec": counted.ops as f64 / counted.secs,
    }))
}
