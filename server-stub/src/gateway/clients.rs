//! Which user owns each client id.
//!
//! Change ids and outcome routing are keyed by client id, so a client id is
//! bound to the first user who says `hello` with it (`client.owner:<id>` in
//! Redis, refreshed on every hello, kept as long as the exactly-once ledger);
//! another user presenting it is refused.

use std::time::Duration;

use crate::redis_target::{RedisConn, RedisTarget};

const CLAIM: &str = include_str!("../../lua/client_claim.lua");

/// The client-id ownership records.
#[derive(Clone)]
pub struct ClientOwners {
    conn: RedisConn,
    script: redis::Script,
    retention: Duration,
}

impl ClientOwners {
    /// Connects; bindings last `retention` after the client's last hello.
    pub async fn open(
        redis: impl Into<RedisTarget>,
        retention: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            conn: redis.into().connect().await?,
            script: redis::Script::new(CLAIM),
            retention,
        })
    }

    /// How long a binding and the exactly-once ledger last: the window told
    /// to clients in `welcome`.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Binds `client_id` to `user`, or refreshes the binding; false when the
    /// id belongs to another user.
    pub async fn claim(&self, client_id: &str, user: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let claimed: i64 = self
            .script
            .key(format!("client.owner:{client_id}"))
            .arg(user)
            .arg(self.retention.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(claimed == 1)
    }
}
