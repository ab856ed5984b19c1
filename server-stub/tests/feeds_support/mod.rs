//! Shared helpers of the feed tests: a real Redis (or Redis Cluster, with
//! `THOONK_TEST_REDIS=cluster`), a store, and a recorder of published messages.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use thoonk_protocol::{FeedName, ItemId};

#[path = "../redis_env/mod.rs"]
mod redis_env;
#[allow(unused_imports)]
pub use redis_env::{Env, INSTANCE};

impl Env {
    /// Subscribes to `channels` and `patterns` and returns a recorder.
    pub async fn listen(&self, channels: &[String], patterns: &[&str]) -> Recorder {
        let mut pubsub = self.target.pubsub().await.expect("pubsub");
        for channel in channels {
            pubsub.subscribe(channel).await.expect("subscribe");
        }
        for pattern in patterns {
            pubsub.psubscribe(*pattern).await.expect("psubscribe");
        }
        pubsub.subscribe(MARK).await.expect("subscribe");
        let nodes = self.nodes().await;
        Recorder {
            stream: pubsub.into_on_message(),
            nodes,
        }
    }

    /// The Redis server's time in milliseconds.
    pub async fn redis_ms(&self) -> u64 {
        let (s, us): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut self.conn().await)
            .await
            .expect("TIME");
        s * 1000 + us / 1000
    }
}

const MARK: &str = "test.mark";

/// Records messages published on the channels it listens to.
pub struct Recorder {
    stream: PubSubStream,
    /// A connection to every node: a cluster forwards each node's messages
    /// in order, but not in order with another node's.
    nodes: Vec<MultiplexedConnection>,
}

impl Recorder {
    /// Every message published since the last call, as (channel, payload
    /// bytes): publishes a mark on every node and reads up to the last one.
    /// Messages keep their order per node (on one Redis: all of them).
    pub async fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        for node in &mut self.nodes {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(MARK)
                .arg("mark")
                .query_async(node)
                .await
                .expect("publish mark");
        }
        let mut marks = 0;
        let mut out = Vec::new();
        loop {
            // A guard against hanging, not a timing assertion: the mark is
            // always delivered after everything published before it.
            let msg = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .expect("the mark arrives")
                .expect("pubsub stream open");
            if msg.get_channel_name() == MARK {
                marks += 1;
                if marks == self.nodes.len() {
                    return out;
                }
                continue;
            }
            out.push((
                msg.get_channel_name().to_owned(),
                msg.get_payload_bytes().to_vec(),
            ));
        }
    }
}

/// The feed called `s` on the target (with a hash tag on a cluster: see
/// [`thoonk_testkit::shard`]).
pub fn name(s: &str) -> FeedName {
    FeedName::new(thoonk_testkit::shard(s)).expect("valid feed name")
}

pub fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

/// A (channel, payload) pair from text.
pub fn msg(channel: &str, payload: &str) -> (String, Vec<u8>) {
    (channel.to_owned(), payload.as_bytes().to_vec())
}
