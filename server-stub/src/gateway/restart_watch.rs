//! Restarts of a single Redis that may have lost acknowledged writes.
//!
//! Unless Redis runs with `appendonly yes` and `appendfsync always`, a
//! restart can lose the last writes it acknowledged (`everysec` and a power
//! loss, an older backup restored), and a feed would go on with its epoch
//! and reuse the lost revisions, which clients that saw them would then
//! skip. So a gateway that sees a Redis process it has not seen before
//! (`INFO server` `run_id`, also at its own start) starts a new epoch for
//! every feed whose epoch began in another process (`epoch.lua`: each epoch
//! records the process it began in; items and revision stay; idempotent, so
//! several gateways may all do it), and makes every session catch up:
//! clients reset to a snapshot instead of silently diverging. The hub checks after every reconnect of its
//! subscription (a restart always breaks it), before its sessions resync,
//! and a timer checks besides. A Redis Cluster node's feeds get the same
//! from the feed scripts themselves (see `read_feed` in
//! `server-stub/lua/prelude.lua`).

use std::time::Duration;

use crate::feeds::{FeedError, FeedStore};
use crate::redis_target::{RedisConn, RedisTarget};

use super::hub::Hub;

/// Which Redis process this gateway last checked, and the means to check.
pub struct RestartWatch {
    store: FeedStore,
    redis: RedisTarget,
    state: tokio::sync::Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// The `run_id` whose feeds are handled.
    handled: Option<String>,
    conn: Option<RedisConn>,
}

impl RestartWatch {
    /// A watch over `redis` (a single Redis; nothing to do on a cluster).
    pub fn new(store: FeedStore, redis: RedisTarget) -> Self {
        Self {
            store,
            redis,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Checks which Redis process runs; for one not seen before that may
    /// have lost writes, starts new epochs for the feeds older than it.
    /// Returns how many feeds started one. The hub calls it after every
    /// reconnect of its subscription, before its sessions resync.
    pub async fn check(&self) -> Result<usize, FeedError> {
        if self.redis.is_cluster() {
            return Ok(0);
        }
        let mut state = self.state.lock().await;
        // A held connection fails its first command after Redis restarted:
        // then once more on a new one.
        match self.check_locked(&mut state).await {
            Ok(restarted) => Ok(restarted),
            Err(_) => {
                state.conn = None;
                let result = self.check_locked(&mut state).await;
                if result.is_err() {
                    state.conn = None;
                }
                result
            }
        }
    }

    async fn check_locked(&self, state: &mut WatchState) -> Result<usize, FeedError> {
        if state.conn.is_none() {
            state.conn = Some(self.redis.connect().await?);
        }
        let conn = state.conn.as_mut().expect("connected above");
        let process = RedisProcess::read(conn).await?;
        if state.handled.as_deref() == Some(process.run_id.as_str()) {
            return Ok(0);
        }
        let mut restarted = 0;
        if !process.loses_nothing(conn).await {
            for feed in self.store.feeds().await? {
                let began = self.store.renew_epoch_after_restart(&feed).await?;
                restarted += usize::from(began);
            }
            if restarted > 0 {
                tracing::warn!(
                    restarted,
                    "Redis restarted without appendfsync always and may have lost writes: \
                     feeds older than it start new epochs"
                );
            }
        }
        state.handled = Some(process.run_id);
        Ok(restarted)
    }

    /// Checks every `every` until the process ends (a restart the hub's
    /// subscription did not notice), making every session resync when
    /// feeds started new epochs.
    pub async fn run(self: std::sync::Arc<Self>, hub: Hub, every: Duration) {
        if self.redis.is_cluster() {
            return;
        }
        loop {
            match self.check().await {
                Ok(0) => {}
                Ok(_) => hub.dispatch_resync(),
                Err(err) => tracing::debug!(%err, "cannot check which Redis process runs"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The Redis process serving a connection.
struct RedisProcess {
    run_id: String,
}

impl RedisProcess {
    async fn read(conn: &mut RedisConn) -> Result<Self, FeedError> {
        let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
        let run_id = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(str::trim)
            .ok_or_else(|| {
                FeedError::Redis(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "INFO server lacks run_id",
                )))
            })?;
        Ok(Self {
            run_id: run_id.to_owned(),
        })
    }

    /// True when it loses no acknowledged write at a crash: `appendonly
    /// yes` with `appendfsync always`. Unknown (`CONFIG` renamed or
    /// forbidden) counts as false.
    async fn loses_nothing(&self, conn: &mut RedisConn) -> bool {
        let setting = |name: &'static str| {
            let mut conn = conn.clone();
            async move {
                let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut conn)
                    .await;
                reply.ok().and_then(|pair| pair.get(1).cloned())
            }
        };
        setting("appendonly").await.as_deref() == Some("yes")
            && setting("appendfsync").await.as_deref() == Some("always")
    }
}
