//! The Redis environment of every suite that runs against the target
//! `THOONK_TEST_REDIS` picks (one `redis-server`, or a local Redis Cluster):
//! the Redis, the server's target that reaches it, and a feed store on it.
//! One definition, included by the server's suite supports
//! (`feeds_support`, `jobs_support`, `interop_support`) and by the system
//! tests' gateway support (`system-tests/src/gateway.rs`), each of which adds
//! its own methods in an `impl Env` block.
#![allow(dead_code)]

use redis::aio::MultiplexedConnection;
use thoonk_server::feeds::FeedStore;
use thoonk_server::redis_target::{RedisConn, RedisTarget};
use thoonk_testkit::TestRedis;

/// The instance id the suites' stores announce in newfeed/delfeed/conffeed.
pub const INSTANCE: &str = "0123456789abcdef0123456789abcdef";

/// A Redis of its own (one server, or a Redis Cluster with
/// `THOONK_TEST_REDIS=cluster`) with a feed store on it.
pub struct Env {
    /// The Redis processes.
    pub redis: TestRedis,
    /// The server's target that reaches them.
    pub target: RedisTarget,
    /// A feed store on them, announcing [`INSTANCE`].
    pub store: FeedStore,
}

impl Env {
    /// Starts the Redis the suite runs against and opens a feed store on it.
    pub async fn start() -> Env {
        let redis = TestRedis::start();
        let target = RedisTarget::parse(&redis.url()).expect("the test Redis URL");
        let store = open_store(&target).await;
        Env {
            redis,
            target,
            store,
        }
    }

    /// True when the suite runs on a Redis Cluster.
    pub fn on_cluster(&self) -> bool {
        self.redis.is_cluster()
    }

    /// The URL worker processes and `thoonk-server --redis` take.
    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// A connection for commands on keys (routed by slot on a cluster).
    /// Commands without keys go to a chosen node: [`Env::nodes`].
    pub async fn conn(&self) -> RedisConn {
        self.target.connect().await.expect("connect to redis")
    }

    /// Another feed store on its own connection (for concurrent writers).
    pub async fn other_store(&self) -> FeedStore {
        open_store(&self.target).await
    }

    /// The arguments a gateway on this Redis starts with: `extra`, after the
    /// job queue on a cluster (whose keys need a hash tag: `{changes}`).
    pub fn gateway_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = Vec::new();
        if self.on_cluster() {
            args.push("--queue".to_owned());
            args.push(thoonk_testkit::shard("changes"));
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// A plain connection to every node (every primary of a cluster; the
    /// server on one Redis), for commands without keys that must reach all
    /// of them (`INFO`, `PUBSUB`).
    pub async fn nodes(&self) -> Vec<MultiplexedConnection> {
        let mut nodes = Vec::new();
        for port in self.redis.ports() {
            nodes.push(node_conn(port).await);
        }
        nodes
    }
}

/// Opens a feed store, retrying: the store's client gives up on a reply
/// after a few seconds, which a badly loaded machine can exceed (loading the
/// scripts is idempotent).
pub async fn open_store(target: &RedisTarget) -> FeedStore {
    let mut attempt = 0;
    loop {
        match FeedStore::open(target, INSTANCE).await {
            Ok(store) => return store,
            Err(err) => {
                attempt += 1;
                assert!(attempt < 5, "open a feed store: {err}");
            }
        }
    }
}

/// A plain connection to the Redis node listening on `port`.
pub async fn node_conn(port: u16) -> MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("node url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to the redis node on port {port}: {e}"))
}
