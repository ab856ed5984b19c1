//! Interoperation with classic Thoonk processes (thoonk.py, thoonk.js).
//!
//! A classic writer changes `feed.ids:N` / `feed.items:N` directly: no
//! revision, no change-log entry, no `feed.changes:N` notice. The adopter
//! notices such changes — from the classic channels (`feed.publish:N`,
//! `feed.edit:N`, `feed.retract:N`, `feed.position:N`, `newfeed`) and, because
//! pub/sub drops messages, from a periodic sweep of every feed — and gives each
//! one a revision and a log entry with `adopt.lua`: one atomic, idempotent
//! script per feed that compares the classic keys with what the change log
//! told its readers (a mirror kept in `feed.adopted:N`). Any number of
//! processes may run it at once; each change is adopted exactly once, and our
//! own writes, which already carry revisions, never. docs/INTEROP.md has the
//! contract.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};
use thoonk_protocol::{Epoch, FeedName, Rev};
use tokio::sync::Notify;

use crate::feeds::{feed_keys, FeedError, FeedStore, NEWFEED_CHANNEL, PRELUDE};

/// Prefix of the adopter's mirror of a feed (a HASH; see docs/INTEROP.md).
pub const ADOPTED_KEY_PREFIX: &str = "feed.adopted:";

/// The classic channel patterns the adopter listens to.
pub const CLASSIC_PATTERNS: [&str; 4] = [
    "feed.publish:*",
    "feed.edit:*",
    "feed.retract:*",
    "feed.position:*",
];

/// The adopter's mirror key of `feed`.
pub fn adopted_key(feed: &FeedName) -> String {
    format!("{ADOPTED_KEY_PREFIX}{feed}")
}

/// The 9 keys `adopt.lua` takes: the feed's 8, then its mirror.
pub fn adopt_keys(feed: &FeedName) -> Vec<String> {
    let mut keys: Vec<String> = feed_keys(feed).into_iter().collect();
    keys.push(adopted_key(feed));
    keys
}

/// The feed a classic item channel (`feed.publish:N` …) belongs to.
pub fn feed_of_classic_channel(channel: &str) -> Option<FeedName> {
    [
        "feed.publish:",
        "feed.edit:",
        "feed.retract:",
        "feed.position:",
    ]
    .iter()
    .find_map(|prefix| channel.strip_prefix(prefix))
    .and_then(|name| FeedName::new(name).ok())
}

/// What one adoption run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adopted {
    /// The feed's epoch afterwards (0: the feed has no history yet).
    pub epoch: Epoch,
    /// The feed's revision afterwards.
    pub rev: Rev,
    /// How many changes this run adopted (each got one revision).
    pub changes: u64,
}

/// Runs `adopt.lua`. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Adopter {
    conn: ConnectionManager,
    script: Arc<Script>,
}

impl Adopter {
    /// Connects and loads the script (reloaded automatically on NOSCRIPT).
    pub async fn open(client: &redis::Client) -> Result<Adopter, FeedError> {
        let mut conn = client.get_connection_manager().await?;
        let script = Script::new(&format!(
            "{PRELUDE}\n{}",
            include_str!("../../lua/adopt.lua")
        ));
        script.load_async(&mut conn).await?;
        Ok(Adopter {
            conn,
            script: Arc::new(script),
        })
    }

    /// Adopts every change classic writers made to `feed` since the last run:
    /// each gets the next revision, a change-log entry and a `feed.changes:N`
    /// notice. A feed that does not exist, or is a queue or job, is left alone.
    pub async fn adopt(&self, feed: &FeedName) -> Result<Adopted, FeedError> {
        let mut invocation = self.script.prepare_invoke();
        for key in adopt_keys(feed) {
            invocation.key(key);
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| script_error(feed, err))?;
        decode(feed, &reply)
    }
}

fn script_error(feed: &FeedName, err: RedisError) -> FeedError {
    match err.code() {
        Some("BADKEYS" | "BADNAME") => FeedError::BadArgument {
            feed: feed.clone(),
            reason: err.detail().unwrap_or_default().to_owned(),
        },
        Some("WRONGTYPE" | "KEYTYPE") => FeedError::Corrupt {
            feed: feed.to_string(),
            reason: err.detail().unwrap_or_default().to_owned(),
        },
        _ => FeedError::Redis(err),
    }
}

fn decode(feed: &FeedName, reply: &Value) -> Result<Adopted, FeedError> {
    let corrupt = |reason: &str| FeedError::Corrupt {
        feed: feed.to_string(),
        reason: format!("adopt reply: {reason}"),
    };
    let number = |value: &Value| -> Result<u64, FeedError> {
        match value {
            Value::Int(n) => u64::try_from(*n).map_err(|_| corrupt("negative number")),
            Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt("not a number")),
            _ => Err(corrupt("not a number")),
        }
    };
    match reply {
        Value::Array(parts) if parts.len() == 3 => Ok(Adopted {
            epoch: number(&parts[0])?,
            rev: number(&parts[1])?,
            changes: number(&parts[2])?,
        }),
        _ => Err(corrupt("expected { epoch, rev, changes }")),
    }
}

/// How the background adopter runs.
#[derive(Clone, Debug)]
pub struct AdopterSettings {
    /// How often every feed in the registry is reconciled, whether or not a
    /// classic message announced a change (pub/sub drops messages; thoonk.py
    /// publishes some of them outside its transactions).
    pub sweep_interval: Duration,
}

impl Default for AdopterSettings {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
struct Pending {
    feeds: BTreeSet<FeedName>,
    sweep: bool,
}

/// Runs the adopter with the default settings until `shutdown` resolves.
pub async fn run_adopter(
    client: redis::Client,
    store: FeedStore,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FeedError> {
    run_adopter_with(client, store, AdopterSettings::default(), shutdown).await
}

/// Runs the adopter until `shutdown` resolves: listens to the classic
/// channels and adopts the feeds they name, and sweeps every feed of the
/// registry at start, after every reconnect of the subscription, and every
/// `sweep_interval`. Fails only when the first connection cannot be made.
pub async fn run_adopter_with(
    client: redis::Client,
    store: FeedStore,
    settings: AdopterSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FeedError> {
    let adopter = Adopter::open(&client).await?;
    let pending = Arc::new(Mutex::new(Pending {
        sweep: true,
        ..Pending::default()
    }));
    let bell = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(client, pending.clone(), bell.clone()));
    let work = async {
        let mut tick = tokio::time::interval(settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = bell.notified() => {}
                _ = tick.tick() => lock(&pending).sweep = true,
            }
            let Pending { feeds, sweep } = std::mem::take(&mut *lock(&pending));
            let feeds: Vec<FeedName> = if sweep {
                match store.feeds().await {
                    Ok(all) => all.into_iter().chain(feeds).collect(),
                    Err(err) => {
                        tracing::warn!(%err, "adopter: cannot list the feeds");
                        feeds.into_iter().collect()
                    }
                }
            } else {
                feeds.into_iter().collect()
            };
            let mut done = BTreeSet::new();
            for feed in feeds {
                if !done.insert(feed.clone()) {
                    continue;
                }
                match adopter.adopt(&feed).await {
                    Ok(adopted) if adopted.changes > 0 => tracing::info!(
                        %feed,
                        changes = adopted.changes,
                        rev = adopted.rev,
                        "adopted changes of classic writers"
                    ),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%feed, %err, "adopter: adoption failed"),
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
    listener.abort();
    Ok(())
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Listens to the classic channels, reconnecting with backoff; marks the
/// feeds they name, and asks for a sweep after every reconnect.
async fn listen(client: redis::Client, pending: Arc<Mutex<Pending>>, bell: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result: redis::RedisResult<()> = async {
            let mut pubsub = client.get_async_pubsub().await?;
            for pattern in CLASSIC_PATTERNS {
                pubsub.psubscribe(pattern).await?;
            }
            pubsub.subscribe(NEWFEED_CHANNEL).await?;
            backoff = Duration::from_millis(100);
            // Whatever happened while not subscribed is found by a sweep.
            lock(&pending).sweep = true;
            bell.notify_one();
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let channel = msg.get_channel_name();
                let feed = if channel == NEWFEED_CHANNEL {
                    let payload = msg.get_payload_bytes();
                    let name = payload.split(|b| *b == 0).next().unwrap_or_default();
                    std::str::from_utf8(name)
                        .ok()
                        .and_then(|n| FeedName::new(n).ok())
                } else {
                    feed_of_classic_channel(channel)
                };
                if let Some(feed) = feed {
                    lock(&pending).feeds.insert(feed);
                    bell.notify_one();
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => tracing::warn!("adopter: redis pub/sub stream ended; reconnecting"),
            Err(err) => tracing::warn!(%err, "adopter: redis pub/sub failed; reconnecting"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
