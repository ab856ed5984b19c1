//! Shared helpers of the fault, chaos and bad-input suites: Redis processes
//! that can be killed with SIGKILL and restarted from their AOF, gateway and
//! worker processes, a TCP proxy that can cut or freeze a Redis connection
//! (all from `thoonk-testkit`), a real client ([`CoreClient`]: the sync core,
//! a durable store and a WebSocket), and the Jepsen-style accounting of
//! every change the clients made against the feeds' change logs and the job
//! ledger ([`crate::accounting`]).

use std::time::Duration;

use thoonk_protocol::FeedName;
use thoonk_server::feeds::FeedStore;

pub use crate::accounting::*;
pub use crate::core_client::*;
pub use thoonk_testkit::{
    eventually, free_port, server_bin, ConfigFile, Proxy, RedisServer, SplitMix64, ThoonkServer,
    WsClient,
};

/// Upper bound for one awaited state. A bound is a failure condition (the
/// thing never happened), never a measured speed.
pub const WAIT: Duration = Duration::from_secs(30);

/// The instance id the tests' own feed stores announce.
pub const INSTANCE: &str = "fault-tests";

/// The job queue the gateways and workers use.
pub const QUEUE: &str = "changes";

/// What the fault suites ask of their Redis besides the process itself.
#[allow(async_fn_in_trait)]
pub trait RedisServerExt {
    /// A client of it.
    fn client(&self) -> redis::Client;
    /// A connection to it.
    async fn conn(&self) -> redis::aio::MultiplexedConnection;
    /// A feed store on it, announcing [`INSTANCE`].
    async fn store(&self) -> FeedStore;
}

impl RedisServerExt for RedisServer {
    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    async fn store(&self) -> FeedStore {
        FeedStore::open(&self.client(), INSTANCE)
            .await
            .expect("open a feed store")
    }
}

/// `thoonk-server serve` on `redis_url` with `extra` (`--allow-all` unless
/// it has `--config`); when `hub_port` is given, waits until the gateway's
/// hub listens to the Redis on that port (which differs from `redis_url`
/// behind a proxy).
pub async fn start_gateway(redis_url: &str, hub_port: Option<u16>, extra: &[&str]) -> ThoonkServer {
    match hub_port {
        Some(port) => ThoonkServer::start_with_hub(server_bin(), redis_url, port, extra).await,
        None => ThoonkServer::start(server_bin(), redis_url, extra),
    }
}

/// `thoonk-server work` on `redis_url` with `extra` (`--allow-all` unless
/// it has `--config`).
pub fn start_worker(redis_url: &str, extra: &[&str]) -> ThoonkServer {
    ThoonkServer::worker(server_bin(), redis_url, extra)
}

pub fn feed(name: &str) -> FeedName {
    FeedName::new(name).expect("feed name")
}
