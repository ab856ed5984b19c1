//! Test harness of every native suite: real `redis-server` processes (one,
//! or a local Redis Cluster) and `thoonk-server` processes (`serve`, `work`)
//! on free loopback ports, stopped when dropped; the WebSocket protocol test
//! client with its reference mirror (the sync core's own change rules); a TCP
//! proxy that cuts or freezes a connection to Redis; waiting; config files
//! and unique names; a seeded generator.
//!
//! It depends on the protocol and the sync core, never on the server crate
//! (whose tests use it): what needs a feed store or the job ledger lives in
//! the suites' own support.

pub mod files;
pub mod mirror;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod rng;
pub mod wait;
pub mod ws;

pub use files::{unique_name, ConfigFile};
pub use mirror::{ReceivedFeed, ReceivedFeeds};
pub use process::{
    access_args, forward_log, free_port, hub_subscribers, server_bin, stop, wait_until,
    workspace_artifact, ThoonkServer,
};
pub use proxy::Proxy;
pub use redis::{
    cluster_info, command, free_cluster_port, info, on_cluster, shard, tag_shard_key, RedisCluster,
    RedisServer, TestRedis, TARGET_VAR,
};
pub use rng::{IndexRng, SplitMix64};
pub use wait::{eventually, eventually_blocking, PATIENCE};
pub use ws::{Frame, WsClient, STREAM_WAIT, WAIT};
