//! Shared helpers of the gateway tests: a real Redis (or, with
//! `THOONK_TEST_REDIS=cluster`, a local Redis Cluster, on which feed names
//! get hash tags through [`name`], [`pattern`] and [`shard`]), real
//! `thoonk-server` processes, and the protocol test client of
//! `thoonk-testkit`, which checks, frame by frame, that every feed's
//! revisions arrive dense and in order.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::json;
use thoonk_protocol::{FeedName, FeedPattern, ItemId};
use thoonk_server::feeds::FeedStore;
use thoonk_testkit::ThoonkServer;

pub use thoonk_testkit::{
    ConfigFile, Frame, ReceivedFeed, ReceivedFeeds, WsClient, STREAM_WAIT, WAIT,
};

pub use thoonk_testkit::{server_bin, shard};

/// The feed called `s` on the target: unchanged on one Redis, with a hash
/// tag on a Redis Cluster (see [`thoonk_testkit::shard`]).
pub fn name(s: &str) -> FeedName {
    FeedName::new(shard(s)).expect("valid feed name")
}

/// The pattern `s` on the target, mapped like [`name`]
/// (`team:5:member:*:tasks` → `team:{5}:member:*:tasks` on a cluster).
pub fn pattern(s: &str) -> FeedPattern {
    FeedPattern::new(shard(s)).expect("valid feed pattern")
}

pub fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

// The Redis environment the server's suites share: one definition.
#[path = "../../server-stub/tests/redis_env/mod.rs"]
mod redis_env;
use redis_env::node_conn;
pub use redis_env::{Env, INSTANCE};

impl Env {
    /// A connection to the node the gateways' hubs subscribe on: the server,
    /// or the first node of the cluster (the first of the `--redis` list that
    /// answers). Pub/sub state (`PUBSUB NUMSUB`, `CLIENT KILL TYPE pubsub`)
    /// is per node, so it is asked of this one.
    pub async fn hub_node(&self) -> MultiplexedConnection {
        node_conn(self.redis.port()).await
    }

    /// Runs `cmd` on every node (see [`Env::nodes`]).
    pub async fn on_every_node(&self, cmd: &redis::Cmd) {
        for mut node in self.nodes().await {
            let _: redis::Value = cmd
                .query_async(&mut node)
                .await
                .unwrap_or_else(|e| panic!("{cmd:?} on a node: {e}"));
        }
    }

    /// Starts a gateway on this Redis without waiting for its hub (see
    /// [`Env::gateway`]).
    pub fn spawn_gateway(&self, extra: &[&str]) -> ThoonkServer {
        let args = self.gateway_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ThoonkServer::start(server_bin(), &self.redis.url(), &args)
    }

    /// Starts a gateway on this Redis (open access unless `extra` has
    /// `--config`) and waits until its hub listens to Redis pub/sub, so no
    /// notice published afterwards can be missed for lack of a subscriber.
    pub async fn gateway(&self, extra: &[&str]) -> ThoonkServer {
        let args = self.gateway_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ThoonkServer::start_with_hub(server_bin(), &self.redis.url(), self.redis.port(), &args)
            .await
    }

    /// How many connections are subscribed to `newfeed` on the hub node:
    /// one per gateway hub (the hub subscribes to it after the change
    /// channels).
    pub fn hub_subscribers(&self) -> usize {
        thoonk_testkit::hub_subscribers(self.redis.port())
    }

    /// Waits until `n` gateway hubs are subscribed.
    pub async fn wait_for_hubs(&self, n: usize) {
        thoonk_testkit::eventually(&format!("{n} gateway hub(s) subscribe"), || async {
            (self.hub_subscribers() >= n).then_some(())
        })
        .await;
    }

    /// Feeds that mark a point in the hubs' stream of Redis messages: one on
    /// every node (one on one Redis), named `{prefix}:{mN}` with a hash tag
    /// each (so readable wherever `prefix:…` is). A hub hears one node's
    /// messages in the order they were published there, but a cluster
    /// forwards different nodes' messages in no common order: a change of
    /// one feed only tells that the hub has passed what was published on
    /// that feed's node. See [`Env::pass_markers`].
    pub async fn marker_feeds(&self, prefix: &str) -> Vec<FeedName> {
        let mut markers = Vec::new();
        let mut tag = 0;
        for mut node in self.nodes().await {
            loop {
                let marker = FeedName::new(format!("{prefix}:{{m{tag}}}")).expect("marker name");
                tag += 1;
                // A cluster node answers MOVED for a key of a slot it does not serve.
                let served: redis::RedisResult<i64> = redis::cmd("EXISTS")
                    .arg(marker.as_str())
                    .query_async(&mut node)
                    .await;
                if served.is_ok() {
                    markers.push(marker);
                    break;
                }
            }
        }
        markers
    }

    /// Subscribes `client` to each of `markers` and reads their first state.
    pub async fn follow_markers(&self, client: &mut WsClient, markers: &[FeedName]) {
        for marker in markers {
            let rev = self.store.snapshot(marker).await.expect("snapshot").rev;
            client.subscribe(marker.as_str()).await;
            client.until_rev(marker, rev).await;
        }
    }

    /// Publishes a change to each of `markers` (which `client` follows) and
    /// reads until `client` has every one: each notice and announcement
    /// published before, on any node, has then been handled by the hub and
    /// by the client's session, and any frame it caused is in the log.
    pub async fn pass_markers(&self, client: &mut WsClient, markers: &[FeedName]) {
        for marker in markers {
            let applied = self
                .store
                .publish(marker, Some(&id("mark")), &json!("mark"), None)
                .await
                .expect("publish a marker");
            client.until_rev(marker, applied.rev).await;
        }
    }

    /// Publishes `count` items `{prefix}{i}` (i from `first`) one after the other.
    pub async fn publish_many(&self, feed: &FeedName, prefix: &str, first: usize, count: usize) {
        for i in first..first + count {
            self.store
                .publish(
                    feed,
                    Some(&id(&format!("{prefix}{i}"))),
                    &json!({ "n": i }),
                    None,
                )
                .await
                .expect("publish");
        }
    }
}

/// Waits until `client` mirrors `feed` exactly as the server holds it
/// (epoch, revision and item order), reading frames meanwhile.
pub async fn until_converged(client: &mut WsClient, store: &FeedStore, feed: &FeedName) {
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    loop {
        let server = store.snapshot(feed).await.expect("snapshot");
        let ids: Vec<String> = server.items.iter().map(|i| i.id.to_string()).collect();
        let mirror = client.mirror.get(feed).map(|m| (m.epoch, m.ids()));
        if mirror == Some((server.epoch, ids.clone()))
            && client.mirror.rev(feed) == Some(server.rev)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{feed}: the client never converged: server ({}, {}) {ids:?}, client {mirror:?}",
            server.epoch,
            server.rev
        );
        let _ = client.try_next_frame(Duration::from_millis(200)).await;
    }
}

/// Upserts item `r<round>` (value `round`) into every feed of `feeds`,
/// retrying while a shard whose primary died refuses writes (until its
/// replica takes over).
pub async fn publish_round_through_failover(store: &FeedStore, feeds: &[FeedName], round: usize) {
    for feed in feeds {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Err(err) = store
            .publish(feed, Some(&id(&format!("r{round}"))), &json!(round), None)
            .await
        {
            assert!(tokio::time::Instant::now() < deadline, "{feed}: {err}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until every node of `ports` but the one at `dead` reports
/// `cluster_state:ok`: all slots are served again, by a promoted replica.
pub async fn until_failed_over(ports: &[u16], dead: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .all(|(_, &p)| thoonk_testkit::cluster_info(p).contains("cluster_state:ok"))
    {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes rounds `rounds` to every feed (through a failover) and waits
/// until `client` mirrors each feed as the server holds it.
pub async fn write_rounds_and_converge(
    store: &FeedStore,
    feeds: &[FeedName],
    client: &mut WsClient,
    rounds: std::ops::Range<usize>,
) {
    for round in rounds {
        publish_round_through_failover(store, feeds, round).await;
    }
    for feed in feeds {
        until_converged(client, store, feed).await;
    }
}
