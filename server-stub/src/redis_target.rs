//! Where the server's data lives: one Redis, or a Redis Cluster.
//!
//! Every script of the feed and job layers names all its keys in KEYS, and
//! the keys of one feed (or one queue) share the feed's name, so a name with
//! a `{hash tag}` keeps them in one slot and every script runs on a cluster
//! as it does on one Redis (see docs/REDIS.md). Classic pub/sub (`PUBLISH`,
//! `PSUBSCRIBE`) reaches every node of a cluster, so the notices the scripts
//! publish are heard on a subscription to any one node.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A Redis deployment: one server, or a cluster given by some of its nodes.
#[derive(Clone)]
pub enum RedisTarget {
    /// One Redis server.
    Single(redis::Client),
    /// A Redis Cluster: the client routes each command by its keys' slot.
    Cluster {
        /// Routes commands by slot.
        cluster: Box<ClusterClient>,
        /// One client per node given, for pub/sub (any node hears every
        /// classic `PUBLISH`; the next is tried when one is down).
        nodes: Vec<redis::Client>,
    },
}

impl From<redis::Client> for RedisTarget {
    fn from(client: redis::Client) -> Self {
        Self::Single(client)
    }
}

impl From<&redis::Client> for RedisTarget {
    fn from(client: &redis::Client) -> Self {
        Self::Single(client.clone())
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(target: &RedisTarget) -> Self {
        target.clone()
    }
}

impl RedisTarget {
    /// Reads `spec`: a `redis://host:port/db` URL for one server; for a
    /// cluster, `redis+cluster://host:port,host:port` or several `redis://`
    /// URLs separated by commas.
    pub fn parse(spec: &str) -> RedisResult<Self> {
        let nodes: Vec<String> = match spec.strip_prefix("redis+cluster://") {
            Some(rest) => rest
                .trim_end_matches('/')
                .split(',')
                .map(|node| format!("redis://{}/", node.trim()))
                .collect(),
            None => spec.split(',').map(|url| url.trim().to_owned()).collect(),
        };
        let clients = nodes
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<RedisResult<Vec<_>>>()?;
        if spec.starts_with("redis+cluster://") || clients.len() > 1 {
            let cluster = ClusterClient::builder(nodes)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
            Ok(Self::Cluster {
                cluster: Box::new(cluster),
                nodes: clients,
            })
        } else {
            Ok(Self::Single(clients.into_iter().next().expect("one URL")))
        }
    }

    /// True for a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A multiplexed connection that reconnects by itself.
    pub async fn connect(&self) -> RedisResult<RedisConn> {
        match self {
            Self::Single(client) => {
                let config =
                    ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(RedisConn::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Self::Cluster { cluster, .. } => {
                Ok(RedisConn::Cluster(cluster.get_async_connection().await?))
            }
        }
    }

    /// A pub/sub connection: to the server, or to the first node of the
    /// cluster that answers.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match self {
            Self::Single(client) => client.get_async_pubsub().await,
            Self::Cluster { nodes, .. } => {
                let mut last = None;
                for node in nodes {
                    match node.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.expect("a cluster has nodes"))
            }
        }
    }
}

/// How long one Redis call may take before it fails. The redis crate's
/// default (500 ms) fails a snapshot of a 100k-item feed, or any call on a
/// loaded host, that would have succeeded; a lost connection still fails at
/// once, so this only bounds a Redis that is alive but slow.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The part of a key (or feed name) Redis Cluster hashes: the text between
/// the first `{` and the next `}` when it is not empty (the hash tag).
/// Keys with the same tag share a slot; a feed name without one spreads its
/// keys (`feed.ids:N`, `feed.items:N`, …) over several slots.
pub fn hash_tag(name: &str) -> Option<&str> {
    let open = name.find('{')?;
    let close = name[open + 1..].find('}')?;
    (close > 0).then(|| &name[open + 1..open + 1 + close])
}

/// The Redis Cluster slot of `key` (0..16384): CRC16 (XMODEM) of its hash
/// tag, or of the whole key without one, as every cluster node computes it.
pub fn key_slot(key: &str) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    let crc = hashed.bytes().fold(0u16, |mut crc, byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    });
    crc & 0x3fff
}

/// A connection to a [`RedisTarget`]: commands and scripts run on it alike.
#[derive(Clone)]
pub enum RedisConn {
    /// To one server.
    Single(ConnectionManager),
    /// To a cluster, routed by slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// True on a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hash_tag;

    #[test]
    fn the_hash_tag_is_the_first_non_empty_braces() {
        assert_eq!(hash_tag("team:{353}:member:bob:tasks"), Some("353"));
        assert_eq!(hash_tag("{team:1}:tasks"), Some("team:1"));
        assert_eq!(hash_tag("a{b}c{d}"), Some("b"));
        assert_eq!(hash_tag("team:353:tasks"), None);
        assert_eq!(
            hash_tag("a{}b{c}"),
            None,
            "an empty first tag: the whole key is hashed"
        );
        assert_eq!(hash_tag("a{b"), None);
    }
}
