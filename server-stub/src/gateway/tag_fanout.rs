//! Sharded fan-out on a Redis Cluster: a gateway hears only the shards its
//! sessions need.
//!
//! Every write script announces a change of a feed whose name has a hash tag
//! on the sharded channel `feed.tag.changes:{<tag>}` too (`SPUBLISH`, in the
//! tag's slot; see docs/REDIS.md). With `--fanout sharded` the hub does not
//! pattern-subscribe to every feed's classic change channel (a broadcast that
//! reaches every gateway from every shard); it `SSUBSCRIBE`s the channel of
//! each tag its sessions follow, on the shard that owns it, and drops it when
//! the last feed of that tag is unfollowed. A pattern names its tag
//! (`team:{353}:member:*:tasks`), so patterns work as before.
//!
//! When a shard's connection drops (a restart, a failover), notices
//! published meanwhile reached nobody: this module subscribes every tag
//! again, retrying until the cluster routes it to a live primary (the
//! command is what makes the connection learn a failover's new slot map),
//! and then every session catches up from the change logs. So does a
//! subscription Redis ends itself (its slot moved to another shard).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;

use super::hub::Hub;
use crate::feeds::{tag_change_channel, ChangeNotice, TAG_CHANGE_CHANNEL_PREFIX};
use crate::redis_target::{RedisTarget, RESPONSE_TIMEOUT};

/// How a gateway hears about changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Fanout {
    /// One pattern subscription to every feed's change channel (on a
    /// cluster, every node forwards every notice to every gateway).
    #[default]
    Broadcast,
    /// A sharded subscription per hash tag its sessions follow (a Redis
    /// Cluster only; feed names and patterns must name a tag).
    Sharded,
}

/// A name or pattern this gateway cannot route in sharded mode.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} has no hash tag: this gateway routes changes by tag (--fanout sharded); \
     name the tag, e.g. team:{{353}}:member:*:tasks"
)]
pub struct Untagged(pub String);

/// The tags this gateway follows and its sharded subscriptions.
pub struct TagSubscriptions {
    /// Serializes SSUBSCRIBE and SUNSUBSCRIBE, so that they reach Redis in
    /// the order they were decided.
    conn: tokio::sync::Mutex<ClusterConnection>,
    state: Mutex<TagState>,
    /// Connection losses heard so far.
    disruptions: AtomicU64,
    /// True while a task renews the subscriptions.
    renewing: AtomicBool,
}

#[derive(Default)]
struct TagState {
    /// Feeds followed by at least one session, per tag.
    feeds: HashMap<String, usize>,
    /// Tags whose channel Redis confirmed (a tag leaves the set before it
    /// is unsubscribed).
    subscribed: HashSet<String>,
}

impl TagSubscriptions {
    /// Connects to the cluster with RESP3 (sharded pub/sub arrives as
    /// pushes) and starts handing notices and resubscriptions to `hub`.
    pub async fn connect(redis: &RedisTarget, hub: Hub) -> RedisResult<Arc<Self>> {
        let RedisTarget::Cluster { nodes, .. } = redis else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "--fanout sharded needs a Redis Cluster (--redis redis+cluster://…)",
            )));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = ClusterClientBuilder::new(nodes.iter().map(|n| n.get_connection_info().clone()))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .response_timeout(RESPONSE_TIMEOUT)
            .push_sender(tx)
            .build()?
            .get_async_connection()
            .await?;
        let subscriptions = Arc::new(Self {
            conn: tokio::sync::Mutex::new(conn),
            state: Mutex::default(),
            disruptions: AtomicU64::new(0),
            renewing: AtomicBool::new(false),
        });
        tokio::spawn(subscriptions.clone().hear(rx, hub));
        Ok(subscriptions)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TagState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A session's first follower of a feed of `tag` arrived.
    pub(super) fn feed_followed(&self, tag: &str) {
        *self.state().feeds.entry(tag.to_owned()).or_default() += 1;
    }

    /// The last follower of a feed of `tag` left; the tag's channel is
    /// dropped once no feed of it is followed.
    pub(super) fn feed_unfollowed(self: &Arc<Self>, tag: &str) {
        let mut state = self.state();
        let Some(count) = state.feeds.get_mut(tag) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            state.feeds.remove(tag);
            drop(state);
            tokio::spawn(self.clone().drop_unused(tag.to_owned()));
        }
    }

    /// Returns once the channel of `tag` is subscribed, so that no notice
    /// published after this call is missed.
    pub async fn ensure(&self, tag: &str) -> RedisResult<()> {
        if self.state().subscribed.contains(tag) {
            return Ok(());
        }
        let mut conn = self.conn.lock().await;
        if self.state().subscribed.contains(tag) {
            return Ok(());
        }
        conn.ssubscribe(tag_change_channel(tag)).await?;
        self.state().subscribed.insert(tag.to_owned());
        Ok(())
    }

    async fn drop_unused(self: Arc<Self>, tag: String) {
        let mut conn = self.conn.lock().await;
        {
            let mut state = self.state();
            // Followed again meanwhile, or never subscribed: keep it as it is.
            if state.feeds.contains_key(&tag) || !state.subscribed.remove(&tag) {
                return;
            }
        }
        if let Err(err) = conn.sunsubscribe(tag_change_channel(&tag)).await {
            tracing::debug!(%err, tag, "cannot unsubscribe a tag's channel");
        }
    }

    /// Reads the pushes: notices go to the hub; a lost connection, or a
    /// subscription Redis ended while the tag is still wanted, starts a
    /// renewal.
    async fn hear(self: Arc<Self>, mut pushes: mpsc::UnboundedReceiver<PushInfo>, hub: Hub) {
        while let Some(push) = pushes.recv().await {
            match push.kind {
                PushKind::SMessage => match notice_of(&push.data) {
                    Some(notice) => hub.dispatch_change(notice),
                    None => tracing::warn!("ignoring a malformed sharded change notice"),
                },
                PushKind::SUnsubscribe => {
                    let tag = push.data.first().and_then(text).and_then(|channel| {
                        channel
                            .strip_prefix(TAG_CHANGE_CHANNEL_PREFIX)
                            .and_then(|t| t.strip_prefix('{'))
                            .and_then(|t| t.strip_suffix('}'))
                            .map(str::to_owned)
                    });
                    if tag.is_some_and(|tag| self.state().subscribed.contains(&tag)) {
                        tracing::warn!("Redis ended a tag's subscription; subscribing again");
                        self.disrupted(&hub);
                    }
                }
                PushKind::Disconnection => {
                    tracing::warn!("a shard's pub/sub connection dropped; subscribing again");
                    self.disrupted(&hub);
                }
                _ => {}
            }
        }
    }
}

impl TagSubscriptions {
    /// Starts renewing every subscription, unless a renewal runs (it goes
    /// round again when it sees a loss it started before).
    fn disrupted(self: &Arc<Self>, hub: &Hub) {
        self.disruptions.fetch_add(1, Ordering::SeqCst);
        if !self.renewing.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().renew(hub.clone()));
        }
    }

    async fn renew(self: Arc<Self>, hub: Hub) {
        loop {
            let seen = self.disruptions.load(Ordering::SeqCst);
            self.subscribe_all_again().await;
            hub.dispatch_resync();
            self.renewing.store(false, Ordering::SeqCst);
            let again = self.disruptions.load(Ordering::SeqCst) != seen;
            if !again || self.renewing.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// SSUBSCRIBEs every subscribed tag again (a no-op on a node that
    /// still holds it) until all succeed, backing off up to 5 s.
    async fn subscribe_all_again(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut conn = self.conn.lock().await;
            let tags: Vec<String> = self.state().subscribed.iter().cloned().collect();
            let mut failed = None;
            for tag in tags {
                if let Err(err) = conn.ssubscribe(tag_change_channel(&tag)).await {
                    failed = Some(err);
                    break;
                }
            }
            drop(conn);
            match failed {
                None => return,
                Some(err) => tracing::debug!(%err, "cannot subscribe a tag again yet"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The notice of an `smessage` push: `[channel, payload]`.
fn notice_of(data: &[Value]) -> Option<ChangeNotice> {
    match data.get(1)? {
        Value::BulkString(payload) => serde_json::from_slice(payload).ok(),
        _ => None,
    }
}
