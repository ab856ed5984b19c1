//! Fan-out of Redis change notices to WebSocket sessions.
//!
//! One gateway process holds one Redis pub/sub connection (Redis pub/sub with
//! a subscriber per client collapses), pattern-subscribed to every feed's
//! change channel and to the classic `newfeed` and `delfeed` channels. Sessions register the
//! feeds and patterns they follow; each notice is parsed once and handed to
//! the sessions that follow its feed. Pub/sub is a doorbell, not a log: when
//! the connection drops, or a session's queue overflows, the session is told
//! to resync from the change logs, so nothing missed is ever skipped.
//!
//! With sharded fan-out ([`super::tag_fanout`]) the change notices come
//! instead from a sharded subscription per hash tag the sessions follow; the
//! registry and outcome channels stay on the classic connection.
//!
//! While the subscription is down the hub counts Redis as unavailable and
//! tells the sessions (they tell their clients with a `server` frame); when
//! it stands again, every session resyncs: the change logs for feeds, the
//! job ledger for the outcomes of its changes still in flight, which were
//! published to nobody meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, Outcome, ServerState};
use tokio::sync::mpsc;

use super::restart_watch::RestartWatch;
use super::tag_fanout::{TagSubscriptions, Untagged};
use crate::feeds::{ChangeNotice, CHANGE_CHANNEL_PATTERN, DELFEED_CHANNEL, NEWFEED_CHANNEL};
use crate::jobs::{finish_channel, parse_finishes};
use crate::redis_target::{hash_tag, RedisTarget};

/// The longest wait between two attempts to subscribe again.
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// What the hub hands to a session.
#[derive(Clone, Debug)]
pub enum HubEvent {
    /// A change of a feed the session follows.
    Change(Arc<ChangeNotice>),
    /// A feed was created whose name matches one of the session's patterns.
    NewFeed(FeedName),
    /// A feed the session follows was deleted.
    Deleted(FeedName),
    /// Changes submitted by the session's client finished (one job's: a
    /// single change, or the changes of a batch job in order).
    Outcomes(Arc<Vec<(ChangeId, Outcome)>>),
    /// Notices may have been missed: check [`Membership::take_lag`].
    Resync,
    /// Redis became reachable or unreachable: see [`Hub::server_state`].
    ServerState,
}

/// A session's registration with the hub: its events and its lag flag.
pub struct Membership {
    /// The session's id in the hub.
    pub id: SessionId,
    /// Events for the session, in the order Redis delivered them, each with
    /// its weight in bytes.
    events: mpsc::Receiver<(HubEvent, usize)>,
    lagged: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
}

impl Membership {
    /// The next event for the session.
    pub async fn recv(&mut self) -> Option<HubEvent> {
        let (event, weight) = self.events.recv().await?;
        self.queued.fetch_sub(weight, Ordering::AcqRel);
        Some(event)
    }

    /// The next event already queued for the session, without waiting.
    pub fn try_recv(&mut self) -> Option<HubEvent> {
        let (event, weight) = self.events.try_recv().ok()?;
        self.queued.fetch_sub(weight, Ordering::AcqRel);
        Some(event)
    }

    /// Bytes of events queued for the session now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// True when an event was refused because the session had more bytes
    /// queued than it may (see [`Hub::join_bounded`]): the session must end.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// True (once) when events were dropped since the last call — because the
    /// session's queue was full or the Redis subscription reconnected — so the
    /// session must catch up every followed feed from its change log.
    pub fn take_lag(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }
}

/// Identifies one session inside the hub.
pub type SessionId = u64;

/// A session's entry in the hub: its event queue, the feeds and patterns
/// it follows, and its client.
struct Subscriber {
    tx: mpsc::Sender<(HubEvent, usize)>,
    queued: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
    max_bytes: usize,
    feeds: HashSet<FeedName>,
    patterns: HashSet<FeedPattern>,
    client: Option<String>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Registry {
    subscribers: HashMap<SessionId, Subscriber>,
    by_feed: HashMap<FeedName, HashSet<SessionId>>,
    by_client: HashMap<String, HashSet<SessionId>>,
}

/// The per-process fan-out hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
    queue_len: usize,
    job_queues: Vec<String>,
    /// Set for sharded fan-out.
    tags: Arc<OnceLock<Arc<TagSubscriptions>>>,
    /// Set on a single Redis: runs after each reconnect, before the resync.
    restarts: Arc<OnceLock<Arc<RestartWatch>>>,
    /// False while the Redis subscription is down.
    available: Arc<AtomicBool>,
}

impl Hub {
    /// Creates a hub whose sessions each queue at most `queue_len` events and
    /// hear the outcomes of their changes on `job_queues`.
    pub fn new(queue_len: usize, job_queues: &[String]) -> Self {
        Self {
            registry: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            queue_len,
            job_queues: job_queues.to_vec(),
            tags: Arc::default(),
            restarts: Arc::default(),
            available: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether Redis is reachable, as the subscription last found it.
    pub fn server_state(&self) -> ServerState {
        if self.available.load(Ordering::Acquire) {
            ServerState::Available
        } else {
            ServerState::Unavailable
        }
    }

    /// Records whether Redis is reachable and tells every session when that changed.
    fn set_available(&self, available: bool) {
        if self.available.swap(available, Ordering::AcqRel) == available {
            return;
        }
        if available {
            tracing::info!("redis is reachable again");
        } else {
            tracing::warn!("redis is unreachable: clients are told the server is unavailable");
        }
        let mut reg = self.lock();
        for subscriber in reg.subscribers.values_mut() {
            subscriber.offer(HubEvent::ServerState, 0);
        }
    }

    /// Has `watch` check for a restarted Redis after every reconnect of the
    /// subscription, before the sessions resync (call before [`Hub::run`]).
    pub fn check_restarts_with(&self, watch: Arc<RestartWatch>) {
        assert!(self.restarts.set(watch).is_ok(), "set once");
    }

    /// Switches the hub to sharded fan-out: change notices come from `tags`
    /// (call before [`Hub::run`] and before any session joins).
    pub fn use_sharded_fanout(&self, tags: Arc<TagSubscriptions>) {
        assert!(self.tags.set(tags).is_ok(), "the fan-out is chosen once");
    }

    /// With sharded fan-out, refuses a feed name or pattern without a hash
    /// tag (or whose tag holds a wildcard): no shard would carry its changes.
    pub fn check_routable(&self, name: &str) -> Result<(), Untagged> {
        if self.tags.get().is_none() {
            return Ok(());
        }
        match hash_tag(name) {
            Some(tag) if !tag.contains('*') => Ok(()),
            _ => Err(Untagged(name.to_owned())),
        }
    }

    /// Returns once changes of `feed` published from now on reach the hub:
    /// at once with broadcast fan-out; with sharded fan-out, once its tag's
    /// channel is subscribed.
    pub async fn hear_changes_of(&self, feed: &FeedName) -> redis::RedisResult<()> {
        match (self.tags.get(), hash_tag(feed.as_str())) {
            (Some(tags), Some(tag)) => tags.ensure(tag).await,
            _ => Ok(()),
        }
    }

    /// Registers a session.
    pub fn join(&self) -> Membership {
        self.join_bounded(usize::MAX)
    }

    /// Registers a session that may have at most `max_bytes` of events
    /// queued (weighed as their JSON): past that, events are refused and the
    /// membership is [`Membership::overflowed`].
    pub fn join_bounded(&self, max_bytes: usize) -> Membership {
        let (tx, events) = mpsc::channel(self.queue_len);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lagged = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let overflowed = Arc::new(AtomicBool::new(false));
        let subscriber = Subscriber {
            tx,
            queued: queued.clone(),
            overflowed: overflowed.clone(),
            max_bytes,
            feeds: HashSet::new(),
            patterns: HashSet::new(),
            client: None,
            lagged: lagged.clone(),
        };
        self.lock().subscribers.insert(id, subscriber);
        Membership {
            id,
            events,
            lagged,
            queued,
            overflowed,
        }
    }

    /// Removes a session and everything it followed.
    pub fn leave(&self, session: SessionId) {
        let mut reg = self.lock();
        if let Some(subscriber) = reg.subscribers.remove(&session) {
            for feed in subscriber.feeds {
                if reg.unindex(&feed, session) {
                    self.last_subscriber_left(&feed);
                }
            }
            if let Some(client) = subscriber.client {
                reg.unindex_client(&client, session);
            }
        }
    }

    /// Delivers the outcomes of changes whose id starts with `client_id:` to `session`.
    pub fn follow_client(&self, session: SessionId, client_id: &str) {
        let mut reg = self.lock();
        if let Some(subscriber) = reg.subscribers.get_mut(&session) {
            subscriber.client = Some(client_id.to_owned());
            reg.by_client
                .entry(client_id.to_owned())
                .or_default()
                .insert(session);
        }
    }

    /// Starts delivering changes of `feed` to `session`.
    pub fn follow_feed(&self, session: SessionId, feed: &FeedName) {
        let mut reg = self.lock();
        if let Some(subscriber) = reg.subscribers.get_mut(&session) {
            if subscriber.feeds.insert(feed.clone()) {
                let sessions = reg.by_feed.entry(feed.clone()).or_default();
                if sessions.is_empty() {
                    if let (Some(tags), Some(tag)) = (self.tags.get(), hash_tag(feed.as_str())) {
                        tags.feed_followed(tag);
                    }
                }
                sessions.insert(session);
            }
        }
    }

    /// No session follows `feed` any more: with sharded fan-out its tag may
    /// no longer be needed.
    fn last_subscriber_left(&self, feed: &FeedName) {
        if let (Some(tags), Some(tag)) = (self.tags.get(), hash_tag(feed.as_str())) {
            tags.feed_unfollowed(tag);
        }
    }

    /// Stops delivering changes of `feed` to `session`.
    pub fn unfollow_feed(&self, session: SessionId, feed: &FeedName) {
        let mut reg = self.lock();
        if let Some(subscriber) = reg.subscribers.get_mut(&session) {
            if subscriber.feeds.remove(feed) && reg.unindex(feed, session) {
                self.last_subscriber_left(feed);
            }
        }
    }

    /// Announces feeds created later that match `pattern` to `session`.
    pub fn follow_pattern(&self, session: SessionId, pattern: &FeedPattern) {
        if let Some(subscriber) = self.lock().subscribers.get_mut(&session) {
            subscriber.patterns.insert(pattern.clone());
        }
    }

    /// Stops announcing feeds that match `pattern`.
    pub fn unfollow_pattern(&self, session: SessionId, pattern: &FeedPattern) {
        if let Some(subscriber) = self.lock().subscribers.get_mut(&session) {
            subscriber.patterns.remove(pattern);
        }
    }

    /// Number of sessions registered.
    pub fn sessions(&self) -> usize {
        self.lock().subscribers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a change notice to every session that follows its feed.
    pub fn dispatch_change(&self, notice: ChangeNotice) {
        let feed = notice.feed.clone();
        let weight = json_len(&notice.change);
        let notice = Arc::new(notice);
        self.offer_to_subscribers_of(&feed, weight, || HubEvent::Change(notice.clone()));
    }

    /// Tells the sessions following `feed` that it was deleted.
    pub fn dispatch_deleted_feed(&self, feed: FeedName) {
        let weight = feed.as_str().len();
        self.offer_to_subscribers_of(&feed, weight, || HubEvent::Deleted(feed.clone()));
    }

    /// Queues `event()` to every session that follows `feed`.
    fn offer_to_subscribers_of(
        &self,
        feed: &FeedName,
        weight: usize,
        event: impl Fn() -> HubEvent,
    ) {
        let mut reg = self.lock();
        let Some(sessions) = reg.by_feed.get(feed).cloned() else {
            return;
        };
        for id in sessions {
            if let Some(subscriber) = reg.subscribers.get_mut(&id) {
                subscriber.offer(event(), weight);
            }
        }
    }

    /// Announces a new feed to every session with a matching pattern.
    pub fn dispatch_new_feed(&self, feed: FeedName) {
        let mut reg = self.lock();
        for subscriber in reg.subscribers.values_mut() {
            if subscriber.patterns.iter().any(|p| p.matches(&feed)) {
                subscriber.offer(HubEvent::NewFeed(feed.clone()), feed.as_str().len());
            }
        }
    }

    /// Hands the outcomes of one job (a change, or a batch job's changes) to
    /// the sessions of the clients that made the changes, in order.
    pub fn dispatch_outcomes(&self, outcomes: Vec<(ChangeId, Outcome)>) {
        // Client ids hold no `:`: the client is the text before the first one.
        let mut by_client: BTreeMap<&str, Vec<(ChangeId, Outcome)>> = BTreeMap::new();
        for (id, outcome) in &outcomes {
            if let Some((client, _)) = id.0.split_once(':') {
                by_client
                    .entry(client)
                    .or_default()
                    .push((id.clone(), outcome.clone()));
            }
        }
        let mut reg = self.lock();
        for (client, outcomes) in by_client {
            let Some(sessions) = reg.by_client.get(client).cloned() else {
                continue;
            };
            let weight = json_len(&outcomes);
            let outcomes = Arc::new(outcomes);
            for session in sessions {
                if let Some(subscriber) = reg.subscribers.get_mut(&session) {
                    subscriber.offer(HubEvent::Outcomes(outcomes.clone()), weight);
                }
            }
        }
    }

    /// Tells every session to catch up from the change logs.
    pub fn dispatch_resync(&self) {
        let mut reg = self.lock();
        for subscriber in reg.subscribers.values_mut() {
            subscriber.lagged.store(true, Ordering::Release);
            // A wake-up for idle sessions; a full queue is woken by its own events.
            let _ = subscriber.tx.try_send((HubEvent::Resync, 0));
        }
    }

    /// Notices a Redis that lost its data (FLUSHALL, a restart that lost
    /// writes): a key this process keeps (`gateway.alive:<instance>`, with a
    /// TTL it refreshes) is checked every `every`; when it is gone, every session catches up from
    /// the change logs, which then answer with new epochs and snapshots.
    pub async fn watch_for_data_loss(
        self,
        redis: impl Into<RedisTarget>,
        instance: String,
        every: Duration,
    ) {
        let redis = redis.into();
        let key = format!("gateway.alive:{instance}");
        let mut first = true;
        // One connection for every check (it reconnects by itself).
        let mut held = None;
        loop {
            let created: redis::RedisResult<Option<String>> = async {
                if held.is_none() {
                    held = Some(redis.connect().await?);
                }
                let conn = held.as_mut().expect("connected above");
                // Kept alive with a TTL so that a stopped gateway leaves nothing behind.
                let ttl = (every.as_secs() * 15).max(30);
                let created: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg("1")
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .query_async(conn)
                    .await?;
                if created.is_none() {
                    let _: bool = redis::cmd("EXPIRE")
                        .arg(&key)
                        .arg(ttl)
                        .query_async(conn)
                        .await?;
                }
                Ok(created)
            }
            .await;
            match created {
                Ok(Some(_)) if !first => {
                    tracing::warn!("Redis lost this gateway's key: data was lost; sessions resync");
                    self.dispatch_resync();
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(%err, "cannot check for data loss"),
            }
            first = false;
            tokio::time::sleep(every).await;
        }
    }

    /// Runs the Redis subscription until the process ends, reconnecting with
    /// backoff (at most [`RECONNECT_MAX`] apart, so that clients hear of a
    /// Redis that is back within about that); after each reconnect every
    /// session resyncs.
    pub async fn run(self, redis: impl Into<RedisTarget>) {
        let redis = redis.into();
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match self.listen(&redis, &mut first, &mut backoff).await {
                Ok(()) => tracing::warn!("redis pub/sub stream ended; reconnecting"),
                Err(err) => tracing::warn!(%err, "redis pub/sub failed; reconnecting"),
            }
            self.set_available(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    async fn listen(
        &self,
        redis: &RedisTarget,
        first: &mut bool,
        backoff: &mut Duration,
    ) -> redis::RedisResult<()> {
        // A restarted Redis may have lost writes: its older feeds get new
        // epochs before the subscription stands (the sign that the hub
        // listens), so the sessions' catch-up after it hands them out.
        if let Some(watch) = self.restarts.get() {
            if let Err(err) = watch.check().await {
                tracing::warn!(%err, "cannot check for a restarted Redis; the timer retries");
            }
        }
        let mut pubsub = redis.pubsub().await?;
        if self.tags.get().is_none() {
            pubsub.psubscribe(CHANGE_CHANNEL_PATTERN).await?;
        }
        pubsub.subscribe(NEWFEED_CHANNEL).await?;
        pubsub.subscribe(DELFEED_CHANNEL).await?;
        let finishes: HashSet<String> = self.job_queues.iter().map(|q| finish_channel(q)).collect();
        for finish in &finishes {
            pubsub.subscribe(finish).await?;
        }
        *backoff = Duration::from_millis(100);
        self.set_available(true);
        // Notices published before this subscription (at start, or while it
        // was down) reached nobody: every session catches up from the logs.
        if !std::mem::replace(first, false) {
            tracing::info!("redis pub/sub reconnected; sessions resync from the change logs");
        }
        self.dispatch_resync();
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
            if finishes.contains(msg.get_channel_name()) {
                let outcomes = std::str::from_utf8(&payload)
                    .ok()
                    .map(parse_finishes)
                    .unwrap_or_default();
                if outcomes.is_empty() {
                    tracing::debug!("ignoring a job.finish message that is not an outcome");
                } else {
                    self.dispatch_outcomes(outcomes);
                }
                continue;
            }
            let registry = msg.get_channel_name();
            if registry == NEWFEED_CHANNEL || registry == DELFEED_CHANNEL {
                // Classic payload: "name\0instance".
                let name = payload.split(|b| *b == 0).next().unwrap_or_default();
                match std::str::from_utf8(name).map(FeedName::new) {
                    Ok(Ok(feed)) if registry == NEWFEED_CHANNEL => self.dispatch_new_feed(feed),
                    Ok(Ok(feed)) => self.dispatch_deleted_feed(feed),
                    _ => tracing::warn!(
                        channel = registry,
                        "ignoring a registry message with an invalid feed name"
                    ),
                }
                continue;
            }
            match serde_json::from_slice::<ChangeNotice>(&payload) {
                Ok(notice) => self.dispatch_change(notice),
                Err(err) => tracing::warn!(
                    channel = msg.get_channel_name(),
                    %err,
                    "ignoring a malformed change notice"
                ),
            }
        }
        Ok(())
    }
}

impl Registry {
    fn unindex_client(&mut self, client: &str, session: SessionId) {
        if let Some(set) = self.by_client.get_mut(client) {
            set.remove(&session);
            if set.is_empty() {
                self.by_client.remove(client);
            }
        }
    }

    /// Drops `session` from `feed`'s subscribers; true when it was the last.
    fn unindex(&mut self, feed: &FeedName, session: SessionId) -> bool {
        if let Some(set) = self.by_feed.get_mut(feed) {
            set.remove(&session);
            if set.is_empty() {
                self.by_feed.remove(feed);
                return true;
            }
        }
        false
    }
}

impl Subscriber {
    /// Queues an event of `weight` bytes without waiting. A session whose
    /// queue is full misses the event and is marked lagged, so it catches up
    /// from the change logs once it has drained its queue instead of
    /// silently skipping; one that would hold more than its bytes is marked
    /// overflowed (and ends).
    fn offer(&self, event: HubEvent, weight: usize) {
        let before = self.queued.fetch_add(weight, Ordering::AcqRel);
        if before.saturating_add(weight) > self.max_bytes {
            self.queued.fetch_sub(weight, Ordering::AcqRel);
            self.overflowed.store(true, Ordering::Release);
            self.lagged.store(true, Ordering::Release);
            // A wake-up, so that an idle session notices at once.
            let _ = self.tx.try_send((HubEvent::Resync, 0));
            return;
        }
        if self.tx.try_send((event, weight)).is_err() {
            self.queued.fetch_sub(weight, Ordering::AcqRel);
            self.lagged.store(true, Ordering::Release);
        }
    }
}

/// The length of `value` as JSON: what an event weighs in a session's queue.
fn json_len(value: &impl serde::Serialize) -> usize {
    serde_json::to_vec(value).map_or(0, |json| json.len())
}
