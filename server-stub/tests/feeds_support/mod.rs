//! Shared helpers of the feed tests: a real Redis, a store, and a recorder of
//! published messages.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use thoonk_protocol::{FeedName, ItemId};
use thoonk_server::feeds::FeedStore;
use thoonk_testkit::RedisServer;

/// The instance id the tests' stores announce in newfeed/delfeed/conffeed.
pub const INSTANCE: &str = "0123456789abcdef0123456789abcdef";

/// A running Redis with a store on it.
pub struct Env {
    pub redis: RedisServer,
    pub client: redis::Client,
    pub store: FeedStore,
}

impl Env {
    pub async fn start() -> Env {
        let redis = RedisServer::start();
        let client = redis::Client::open(redis.url()).expect("redis url");
        let store = FeedStore::open(&client, INSTANCE)
            .await
            .expect("open the store");
        Env {
            redis,
            client,
            store,
        }
    }

    /// A plain connection for inspecting keys.
    pub async fn conn(&self) -> MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    /// Another store on its own connection.
    pub async fn other_store(&self) -> FeedStore {
        FeedStore::open(&self.client, INSTANCE)
            .await
            .expect("open a store")
    }

    /// Subscribes to `channels` and `patterns` and returns a recorder.
    pub async fn listen(&self, channels: &[String], patterns: &[&str]) -> Recorder {
        let mut pubsub = self.client.get_async_pubsub().await.expect("pubsub");
        for channel in channels {
            pubsub.subscribe(channel).await.expect("subscribe");
        }
        for pattern in patterns {
            pubsub.psubscribe(*pattern).await.expect("psubscribe");
        }
        pubsub.subscribe(MARK).await.expect("subscribe");
        Recorder {
            stream: pubsub.into_on_message(),
            conn: self.conn().await,
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
    conn: MultiplexedConnection,
}

impl Recorder {
    /// Every message published since the last call, in order, as
    /// (channel, payload bytes): publishes a mark and reads up to it.
    pub async fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(MARK)
            .arg("mark")
            .query_async(&mut self.conn)
            .await
            .expect("publish mark");
        let mut out = Vec::new();
        loop {
            // A guard against hanging, not a timing assertion: the mark is
            // always delivered after everything published before it.
            let msg = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .expect("the mark arrives")
                .expect("pubsub stream open");
            if msg.get_channel_name() == MARK {
                return out;
            }
            out.push((
                msg.get_channel_name().to_owned(),
                msg.get_payload_bytes().to_vec(),
            ));
        }
    }
}

pub fn name(s: &str) -> FeedName {
    FeedName::new(s).expect("valid feed name")
}

pub fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

/// A (channel, payload) pair from text.
pub fn msg(channel: &str, payload: &str) -> (String, Vec<u8>) {
    (channel.to_owned(), payload.as_bytes().to_vec())
}
