//! Which user owns each client id.
//!
//! Change ids and outcome routing are keyed by client id, so a client id is
//! bound to the first user who says `hello` with it (`client.owner:<id>` in
//! Redis); another user presenting it is refused. The binding holds while a
//! session uses the id: each gateway refreshes the bindings of its live
//! sessions ([`ClientOwners::run_refresh`]) well within their expiry, and
//! only after the last session ends does the binding run out, after the
//! exactly-once ledger's retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis_target::{RedisConn, RedisTarget};

const CLAIM: &str = include_str!("../../lua/client_claim.lua");

/// The longest pause between two refreshes of the live bindings.
const MAX_REFRESH: Duration = Duration::from_secs(60);

/// The client-id ownership records.
#[derive(Clone)]
pub struct ClientOwners {
    conn: RedisConn,
    script: redis::Script,
    retention: Duration,
    /// The client ids this process's sessions use: owner and session count.
    live: Arc<Mutex<HashMap<String, (String, usize)>>>,
}

/// A session's hold on its client id: while it lives, the gateway keeps the
/// binding from expiring; dropped when the session ends.
pub struct ClientClaim {
    live: Arc<Mutex<HashMap<String, (String, usize)>>>,
    client_id: String,
}

impl Drop for ClientClaim {
    fn drop(&mut self) {
        let mut live = self.live.lock().expect("client claims lock");
        if let Some((_, sessions)) = live.get_mut(&self.client_id) {
            *sessions -= 1;
            if *sessions == 0 {
                live.remove(&self.client_id);
            }
        }
    }
}

impl ClientOwners {
    /// Connects; bindings last `retention` after the last session that used
    /// the client id.
    pub async fn open(
        redis: impl Into<RedisTarget>,
        retention: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            conn: redis.into().connect().await?,
            script: redis::Script::new(CLAIM),
            retention,
            live: Arc::default(),
        })
    }

    /// How long a binding and the exactly-once ledger last: the window told
    /// to clients in `welcome`.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// How often [`Self::run_refresh`] refreshes: a third of the expiry
    /// (so two refreshes may fail in a row), at most [`MAX_REFRESH`].
    pub fn refresh_interval(&self) -> Duration {
        (self.retention / 3).clamp(Duration::from_millis(1), MAX_REFRESH)
    }

    /// Binds `client_id` to `user`, or refreshes the binding, and holds it
    /// for as long as the returned claim lives; `None` when the id belongs to
    /// another user.
    pub async fn claim(
        &self,
        client_id: &str,
        user: &str,
    ) -> redis::RedisResult<Option<ClientClaim>> {
        if !self.bind(client_id, user).await? {
            return Ok(None);
        }
        let mut live = self.live.lock().expect("client claims lock");
        let entry = live
            .entry(client_id.to_owned())
            .or_insert_with(|| (user.to_owned(), 0));
        entry.1 += 1;
        Ok(Some(ClientClaim {
            live: self.live.clone(),
            client_id: client_id.to_owned(),
        }))
    }

    /// Runs `client_claim.lua`: true when the id is (now) `user`'s.
    async fn bind(&self, client_id: &str, user: &str) -> redis::RedisResult<bool> {
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

    /// Refreshes the binding of every client id a session of this process
    /// uses, every [`Self::refresh_interval`], until the process ends.
    pub async fn run_refresh(self) {
        let mut tick = tokio::time::interval(self.refresh_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let live: Vec<(String, String)> = self
                .live
                .lock()
                .expect("client claims lock")
                .iter()
                .map(|(id, (user, _))| (id.clone(), user.clone()))
                .collect();
            for (client_id, user) in live {
                match self.bind(&client_id, &user).await {
                    Ok(true) => {}
                    // Only after the record was lost (a flush) and another
                    // user took the id in between: that user's sessions
                    // hear only the outcomes of changes they submitted.
                    Ok(false) => tracing::warn!(
                        client_id,
                        user,
                        "a live session's client id was taken by another user"
                    ),
                    Err(err) => tracing::warn!(%err, "cannot refresh a client id's owner"),
                }
            }
        }
    }
}
