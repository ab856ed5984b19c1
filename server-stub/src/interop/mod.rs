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

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::{RedisError, Value};
use thoonk_protocol::{Epoch, FeedName, Rev};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::feeds::{
    feed_keys, feed_of_change_channel, FeedError, FeedStore, CHANGE_CHANNEL_PATTERN,
    NEWFEED_CHANNEL,
};
use crate::library::{self, Function};
use crate::redis_target::{RedisConn, RedisTarget};

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
    /// Whether the run stopped partway (a pass over a large time-ordered
    /// feed, or a catch-up from its change log, goes on in the next call).
    /// [`Adopter::adopt`], [`Adopter::sweep`] and [`Adopter::check`] call
    /// again until it is false; only [`Adopter::step`] returns it set.
    pub more: bool,
    /// How many calls of `adopt.lua` the run made (1 for a step).
    pub calls: u32,
}

/// What one call of `adopt.lua` compares (its `ARGV[1]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdoptMode {
    /// Everything: a whole compare of a sorted feed, a pass over a
    /// time-ordered one (joining a pass in progress).
    Full,
    /// The fingerprint first, then, for a time-ordered feed, the account of
    /// the change-log entries since the last run; a pass only when they do
    /// not explain the change.
    Sweep,
    /// [`AdoptMode::Full`] for a sorted feed, [`AdoptMode::Sweep`] for a
    /// time-ordered one.
    Auto,
}

impl AdoptMode {
    fn arg(self) -> &'static str {
        match self {
            AdoptMode::Full => "full",
            AdoptMode::Sweep => "sweep",
            AdoptMode::Auto => "auto",
        }
    }
}

/// The most calls one run makes before it leaves the rest to the next run
/// (a pass over a feed of a million items takes some 8,000).
const MAX_CALLS: u32 = 100_000;

/// Runs `adopt.lua`. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Adopter {
    conn: RedisConn,
    script: Function,
    page: Option<u32>,
}

impl Adopter {
    /// Connects and loads the function library (loaded again by a call that
    /// finds a node without it).
    pub async fn open(redis: impl Into<RedisTarget>) -> Result<Adopter, FeedError> {
        let mut conn = redis.into().connect().await?;
        library::load(&mut conn).await?;
        Ok(Adopter {
            conn,
            script: Function::new("adopt"),
            page: None,
        })
    }

    /// The same adopter with calls that read at most `page` items, log
    /// entries or mirror fields of a time-ordered feed (1..=1000; the
    /// script's default is 128, about a millisecond of Redis time).
    pub fn with_page(mut self, page: u32) -> Adopter {
        self.page = Some(page);
        self
    }

    /// Adopts every change classic writers made to `feed` since the last run:
    /// each gets the next revision, a change-log entry and a `feed.changes:N`
    /// notice. A feed that does not exist, or is a queue or job, is left alone.
    pub async fn adopt(&self, feed: &FeedName) -> Result<Adopted, FeedError> {
        self.run(feed, AdoptMode::Full).await
    }

    /// Like [`Adopter::adopt`], but first compares the feed's fingerprint
    /// (epoch, revision, `feed.publishes:N`, number of items and ids) with the
    /// one the last run stored, and does nothing more when it is unchanged.
    /// Cheap enough to run for every feed every few seconds; it misses only
    /// changes that leave the fingerprint alone (a sorted feed's move, whose
    /// classic event cannot be lost without a reconnect, or a raw `HSET` of a
    /// value), which the next full run finds.
    pub async fn sweep(&self, feed: &FeedName) -> Result<Adopted, FeedError> {
        self.run(feed, AdoptMode::Sweep).await
    }

    /// [`Adopter::adopt`] for a sorted feed, [`Adopter::sweep`] for a
    /// time-ordered one: every classic write to a time-ordered feed changes
    /// its fingerprint, so this finds all of them at O(1) cost per unchanged
    /// feed, where a full run reads every item.
    pub async fn check(&self, feed: &FeedName) -> Result<Adopted, FeedError> {
        self.run(feed, AdoptMode::Auto).await
    }

    /// One call of `adopt.lua`: at most a page of work. `more` in the reply
    /// says whether the run goes on (call again at once).
    pub async fn step(&self, feed: &FeedName, mode: AdoptMode) -> Result<Adopted, FeedError> {
        let mut invocation = self.script.prepare_invoke();
        for key in adopt_keys(feed) {
            invocation.key(key);
        }
        invocation.arg(mode.arg());
        if let Some(page) = self.page {
            invocation.arg(page);
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| script_error(feed, err))?;
        decode(feed, &reply)
    }

    /// Calls [`Adopter::step`] until the run is complete, or `MAX_CALLS`
    /// calls were made (then `more` stays set and the next run goes on);
    /// the changes of all its calls.
    async fn run(&self, feed: &FeedName, mode: AdoptMode) -> Result<Adopted, FeedError> {
        let mut changes = 0;
        let mut calls = 0;
        loop {
            let step = self.step(feed, mode).await?;
            changes += step.changes;
            calls += 1;
            if !step.more || calls >= MAX_CALLS {
                return Ok(Adopted {
                    changes,
                    calls,
                    ..step
                });
            }
        }
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
        Value::Array(parts) if parts.len() == 4 => Ok(Adopted {
            epoch: number(&parts[0])?,
            rev: number(&parts[1])?,
            changes: number(&parts[2])?,
            more: number(&parts[3])? != 0,
            calls: 1,
        }),
        _ => Err(corrupt("expected { epoch, rev, changes, more }")),
    }
}

/// How the background adopter runs.
#[derive(Clone, Debug)]
pub struct AdopterSettings {
    /// How often every feed in the registry is reconciled, whether or not a
    /// classic message announced a change (pub/sub drops messages; thoonk.py
    /// publishes some of them outside its transactions).
    pub sweep_interval: Duration,
    /// Every how many sweeps one compares everything of sorted feeds
    /// ([`Adopter::check`]) rather than fingerprints ([`Adopter::sweep`]).
    pub full_sweep_every: u32,
    /// How long a classic message waits for the change notice of the same
    /// write: our own scripts publish `feed.changes:N` right after their
    /// classic messages, and such a write needs no adoption.
    pub notice_wait: Duration,
    /// How often a *busy* feed is swept: one whose last sweep took more
    /// than one call (a page of change-log entries or of a pass each). A
    /// feed written faster than its log retention per `sweep_interval`
    /// would otherwise outrun its mirror, whose catch-up from the log then
    /// fails and a whole pass follows.
    pub busy_interval: Duration,
}

impl Default for AdopterSettings {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(5),
            full_sweep_every: 12,
            notice_wait: Duration::from_millis(100),
            busy_interval: Duration::from_millis(250),
        }
    }
}

#[derive(Default)]
struct Pending {
    feeds: BTreeSet<FeedName>,
    sweep: Option<Sweep>,
}

/// How much a sweep of every feed compares (from cheap to thorough).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sweep {
    /// Fingerprints only ([`Adopter::sweep`]).
    Fingerprints,
    /// Sorted feeds in full, time-ordered ones by fingerprint ([`Adopter::check`]).
    Sorted,
    /// Everything ([`Adopter::adopt`]): at start and after a reconnect.
    Full,
}

/// Runs the adopter with the default settings until `shutdown` resolves.
pub async fn run_adopter(
    redis: impl Into<RedisTarget>,
    store: FeedStore,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FeedError> {
    run_adopter_with(redis, store, AdopterSettings::default(), shutdown).await
}

/// Runs the adopter until `shutdown` resolves: listens to the classic
/// channels and adopts the feeds they name, and sweeps every feed of the
/// registry at start, after every reconnect of the subscription, and every
/// `sweep_interval`. Fails only when the first connection cannot be made.
pub async fn run_adopter_with(
    redis: impl Into<RedisTarget>,
    store: FeedStore,
    settings: AdopterSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FeedError> {
    let redis = redis.into();
    let adopter = Adopter::open(&redis).await?;
    let pending = Arc::new(Mutex::new(Pending {
        sweep: Some(Sweep::Full),
        ..Pending::default()
    }));
    let bell = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(
        redis,
        pending.clone(),
        bell.clone(),
        settings.notice_wait,
    ));
    let work = async {
        let mut tick = tokio::time::interval(settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quick = tokio::time::interval(settings.busy_interval);
        quick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut busy: BTreeSet<FeedName> = BTreeSet::new();
        let mut sweeps: u32 = 0;
        loop {
            tokio::select! {
                _ = bell.notified() => {}
                _ = quick.tick(), if !busy.is_empty() => {
                    lock(&pending).feeds.extend(busy.iter().cloned());
                }
                _ = tick.tick() => {
                    sweeps = sweeps.wrapping_add(1);
                    let kind = if sweeps % settings.full_sweep_every.max(1) == 0 {
                        Sweep::Sorted
                    } else {
                        Sweep::Fingerprints
                    };
                    let mut p = lock(&pending);
                    p.sweep = p.sweep.max(Some(kind));
                }
            }
            let Pending { feeds, sweep } = std::mem::take(&mut *lock(&pending));
            // A feed a classic message named is checked like a sorted sweep.
            let mut runs: Vec<(FeedName, Sweep)> =
                feeds.into_iter().map(|f| (f, Sweep::Sorted)).collect();
            if let Some(sweep) = sweep {
                match store.feeds().await {
                    Ok(all) => runs.extend(all.into_iter().map(|f| (f, sweep))),
                    Err(err) => tracing::warn!(%err, "adopter: cannot list the feeds"),
                }
            }
            // The most thorough run of a feed comes first; the others are skipped.
            runs.sort_by_key(|run| std::cmp::Reverse(run.1));
            let mut done = BTreeSet::new();
            for (feed, sweep) in runs {
                if !done.insert(feed.clone()) {
                    continue;
                }
                let result = match sweep {
                    Sweep::Full => adopter.adopt(&feed).await,
                    Sweep::Sorted => adopter.check(&feed).await,
                    Sweep::Fingerprints => adopter.sweep(&feed).await,
                };
                if let Ok(adopted) = &result {
                    if adopted.calls > 1 {
                        busy.insert(feed.clone());
                    } else {
                        busy.remove(&feed);
                    }
                }
                match result {
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

/// The item id of a change notice written by one of our write scripts
/// (`None` for a notice of an adoption, marked `"adopted": true`).
fn own_notice_item(payload: &[u8]) -> Option<String> {
    let notice: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if notice.get("adopted").and_then(serde_json::Value::as_bool) == Some(true) {
        return None;
    }
    notice["change"]["id"].as_str().map(str::to_owned)
}

/// Listens to the classic channels, reconnecting with backoff; marks the
/// feeds they name, and asks for a full sweep after every reconnect. A
/// classic message followed, within `notice_wait`, by a `feed.changes:N`
/// notice for the same item came from one of our scripts and is dropped.
async fn listen(
    redis: RedisTarget,
    pending: Arc<Mutex<Pending>>,
    bell: Arc<Notify>,
    notice_wait: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result: redis::RedisResult<()> = async {
            let mut pubsub = redis.pubsub().await?;
            for pattern in CLASSIC_PATTERNS {
                pubsub.psubscribe(pattern).await?;
            }
            pubsub.psubscribe(CHANGE_CHANNEL_PATTERN).await?;
            // A pattern without wildcards: only `newfeed` itself. A pattern
            // so that `PUBSUB NUMSUB newfeed` keeps counting one connection
            // per gateway hub, which tools and tests use as its readiness.
            pubsub.psubscribe(NEWFEED_CHANNEL).await?;
            backoff = Duration::from_millis(100);
            // Whatever happened while not subscribed is found by a full sweep.
            lock(&pending).sweep = Some(Sweep::Full);
            bell.notify_one();
            let mut messages = pubsub.on_message();
            // Classic messages waiting for the notice of the same write:
            // (feed, item id, group, since). The group counts notices, so
            // only a notice right after a classic message (the same script)
            // can claim it.
            let mut waiting: VecDeque<(FeedName, Vec<u8>, u64, Instant)> = VecDeque::new();
            let mut group: u64 = 0;
            loop {
                let wait = waiting
                    .front()
                    .map(|entry| (entry.3 + notice_wait).saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(3600));
                let msg = match tokio::time::timeout(wait, messages.next()).await {
                    Ok(Some(msg)) => Some(msg),
                    Ok(None) => break,
                    Err(_) => None,
                };
                if let Some(msg) = msg {
                    let channel = msg.get_channel_name();
                    let payload = msg.get_payload_bytes();
                    if let Some(feed) = feed_of_change_channel(channel) {
                        if let Some(id) = own_notice_item(payload) {
                            waiting.retain(|(f, i, g, _)| {
                                !(*g == group && f == &feed && i.as_slice() == id.as_bytes())
                            });
                        }
                        group += 1;
                    } else if channel == NEWFEED_CHANNEL {
                        let name = payload.split(|b| *b == 0).next().unwrap_or_default();
                        if let Some(feed) = std::str::from_utf8(name)
                            .ok()
                            .and_then(|n| FeedName::new(n).ok())
                        {
                            lock(&pending).feeds.insert(feed);
                            bell.notify_one();
                        }
                    } else if let Some(feed) = feed_of_classic_channel(channel) {
                        let id = payload.split(|b| *b == 0).next().unwrap_or_default();
                        waiting.push_back((feed, id.to_vec(), group, Instant::now()));
                    }
                }
                let now = Instant::now();
                let mut rang = false;
                while let Some(entry) = waiting.front() {
                    if now.duration_since(entry.3) < notice_wait {
                        break;
                    }
                    let (feed, _, _, _) = waiting.pop_front().expect("a front entry");
                    lock(&pending).feeds.insert(feed);
                    rang = true;
                }
                if rang {
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
