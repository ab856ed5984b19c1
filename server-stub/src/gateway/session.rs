//! One client connection: the protocol state machine of the gateway.
//!
//! A session authenticates the `hello`, then serves subscriptions: for each
//! feed it sends a snapshot or the changes since the client's `(epoch, rev)`,
//! then live events strictly in revision order. It follows each feed in the
//! hub *before* reading its state, so no change falls between the read and the
//! live stream; events at or below the revision already sent are dropped, and
//! a gap (a lost notice) is filled from the change log.
//!
//! A session remembers which of its client's changes it queued and has not
//! answered yet, and pushes no other outcome (not even one of its own
//! client's other sessions). Whenever it resyncs — the hub's subscription
//! came back, or its queue overflowed — it looks their outcomes up in the
//! job ledger (at most [`MAX_IN_FLIGHT`] of them), since one published
//! meanwhile reached nobody. It tells its client whether the server can reach Redis.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use thoonk_protocol::{
    ChangeId, ChangeRequest, ClientMessage, ErrorCode, FeedName, FeedPattern, FeedPosition,
    Outcome, ServerMessage, ServerState, MAX_BATCH_CHANGES, PROTOCOL_VERSION,
};

use super::access::{AccessRules, User};
use super::hub::{Hub, HubEvent, Membership};
use super::limits::{FrameBudget, SlotGuard, Verdict};
use crate::feeds::{ChangeNotice, FeedStore, Since};
use crate::jobs::{QueueSet, Submitted};

/// Limits that protect the gateway from one client.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// Largest accepted frame, in bytes; larger ones get a `too_large` error.
    pub max_frame: usize,
    /// Most patterns one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Most changes sent in one `changes` frame of a replay.
    pub replay_batch: usize,
    /// How long a send may wait on a client that does not read before it is dropped.
    pub send_timeout: Duration,
    /// How long a connection may stay silent (no frame, not even `ping`) before it is closed.
    pub idle_timeout: Duration,
    /// Frames per second a connection may send on average ([`FrameBudget`]).
    pub frame_rate: u32,
    /// Frames a connection may send at once above its rate.
    pub frame_burst: u32,
    /// Frames over budget in a row (after the `rate_limited` error) before
    /// the connection is closed.
    pub frame_grace: u32,
    /// Most bytes of events a session may have queued (weighed as JSON);
    /// past that it is closed with [`SLOW_READER_CLOSE`].
    pub max_queued_bytes: usize,
    /// Most snapshot and replay reads the gateway runs at once (the others
    /// wait), so that slow sessions cannot swamp Redis.
    pub big_reads: usize,
}

/// The close code of a session dropped because its client did not read:
/// its queue grew past [`SessionLimits::max_queued_bytes`], or a frame
/// waited longer than [`SessionLimits::send_timeout`]. The client reconnects
/// and catches up.
pub const SLOW_READER_CLOSE: u16 = 4008;

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_frame: thoonk_protocol::MAX_FRAME_BYTES,
            max_subscriptions: 256,
            replay_batch: 500,
            send_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            frame_rate: 200,
            frame_burst: 2000,
            frame_grace: 100,
            max_queued_bytes: 16 * 1024 * 1024,
            big_reads: 4,
        }
    }
}

/// What every session of a gateway shares.
#[derive(Clone)]
pub struct Shared {
    /// The feed store.
    pub store: FeedStore,
    /// The queues client changes are submitted to.
    pub jobs: QueueSet,
    /// Which user owns each client id.
    pub owners: super::ClientOwners,
    /// The fan-out hub.
    pub hub: Hub,
    /// Authentication and authorization.
    pub access: Arc<dyn AccessRules>,
    /// Per-connection limits.
    pub limits: SessionLimits,
    /// Turns true when the server shuts down: sessions close with "going away".
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Permits for snapshot and replay reads ([`SessionLimits::big_reads`]).
    pub big_reads: Arc<tokio::sync::Semaphore>,
}

/// Why a session ends.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("the client closed the connection")]
    ClientClosed,
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the client did not read its frames in time")]
    SlowClient,
    #[error("the server is shutting down")]
    Shutdown,
    #[error("websocket: {0}")]
    Socket(#[from] axum::Error),
}

/// The last state of a feed that this session sent to its client.
#[derive(Clone, Copy, Debug)]
struct Sent {
    epoch: u64,
    rev: u64,
}

struct Session {
    shared: Shared,
    socket: WebSocket,
    membership: Membership,
    user: Option<User>,
    client_id: String,
    /// Holds the client id for this session's user while the session lives.
    _claim: Option<super::clients::ClientClaim>,
    patterns: HashSet<FeedPattern>,
    feeds: HashMap<FeedName, Sent>,
    /// Set when a read from Redis failed: everything is caught up again then.
    resync_at: Option<tokio::time::Instant>,
    /// Changes this session submitted (and the ledger took as its user's)
    /// whose outcome it has not pushed yet, with the position of their queue
    /// ([`crate::jobs::QueueSet::index_for`]): the only outcomes it pushes.
    in_flight: HashMap<ChangeId, usize>,
    /// What the client was last told of the server's state.
    told: ServerState,
    /// The connection's frame budget.
    budget: FrameBudget,
    /// The address slot held until `hello` succeeds.
    slot: Option<SlotGuard>,
    /// The largest frame sent, in bytes.
    largest_frame: usize,
}

/// Most changes in flight a session looks up after a resync; beyond, the
/// client's own outcome timeout asks again.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How long after a failed read a session tries again.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Serves one upgraded WebSocket until it closes; `slot` (the address's
/// count of connections not signed in) is released once `hello` succeeds.
pub async fn serve(shared: Shared, socket: WebSocket, slot: Option<SlotGuard>) {
    let limits = &shared.limits;
    let membership = shared.hub.join_bounded(limits.max_queued_bytes);
    let budget = FrameBudget::new(limits.frame_rate, limits.frame_burst, limits.frame_grace);
    let session_id = membership.id;
    let hub = shared.hub.clone();
    let mut session = Session {
        shared,
        socket,
        membership,
        user: None,
        client_id: String::new(),
        _claim: None,
        patterns: HashSet::new(),
        feeds: HashMap::new(),
        resync_at: None,
        in_flight: HashMap::new(),
        told: ServerState::Available,
        budget,
        slot,
        largest_frame: 0,
    };
    let end = session.run().await;
    match end {
        SessionEnd::ClientClosed => tracing::debug!(session_id, "session closed"),
        SessionEnd::Refused { code, message } => {
            tracing::info!(session_id, code = code.as_str(), %message, "session refused");
            let frame = ServerMessage::Error { code, message };
            let _ = session.send(&frame).await;
            let _ = session
                .socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1008,
                    reason: code.as_str().into(),
                })))
                .await;
            // Reads (and drops) what the client still sends until it
            // answers the close, so that closing with unread input does not
            // reset the connection before the client read the error.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(frame)) = session.socket.recv().await {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        SessionEnd::SlowClient => {
            // Best effort: a client that does not read may not see it.
            let close = CloseFrame {
                code: SLOW_READER_CLOSE,
                reason: "slow_reader: reconnect to catch up".into(),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                session.socket.send(Message::Close(Some(close))),
            )
            .await;
            tracing::info!(session_id, "session dropped: the client read too slowly");
        }
        SessionEnd::Shutdown => {
            // 1001 "going away": the client reconnects, to this or another gateway.
            let close = CloseFrame {
                code: 1001,
                reason: "server shutting down; reconnect".into(),
            };
            let _ = session.socket.send(Message::Close(Some(close))).await;
        }
        other => tracing::info!(session_id, reason = %other, "session ended"),
    }
    let big = session.largest_frame >= BIG_FRAME;
    drop(session);
    if big {
        release_memory();
    }
    // Last, so that a server shutting down waits for the close frames.
    hub.leave(session_id);
}

/// A session that sent a frame this big hands freed memory back to the OS
/// when it ends.
const BIG_FRAME: usize = 1024 * 1024;

/// Hands the memory the allocator holds free back to the OS (glibc keeps
/// the buffers of a burst of big frames otherwise): once, a second after the
/// first of a burst of big sessions ended, so that the burst is over.
fn release_memory() {
    static SCHEDULED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SCHEDULED.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        SCHEDULED.store(false, std::sync::atomic::Ordering::Release);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim only returns free pages of the allocator's
            // arenas to the OS; it takes the arenas' locks itself.
            unsafe { libc::malloc_trim(0) };
        })
        .await;
    });
}

impl Session {
    async fn run(&mut self) -> SessionEnd {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if *shutdown.borrow_and_update() {
                return SessionEnd::Shutdown;
            }
            let idle = tokio::time::sleep(self.shared.limits.idle_timeout);
            let retry = async {
                match self.resync_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                () = retry => {
                    self.resync_at = None;
                    self.resync_all().await
                }
                _ = shutdown.changed() => return SessionEnd::Shutdown,
                frame = self.socket.recv() => match frame {
                    None | Some(Ok(Message::Close(_))) => return SessionEnd::ClientClosed,
                    Some(Err(err)) => return SessionEnd::Socket(err),
                    Some(Ok(message)) => match self.budget.on_frame(std::time::Instant::now()) {
                        Verdict::Serve => self.on_frame(message).await,
                        Verdict::Refuse => {
                            let message = format!(
                                "more than {} frames per second: slow down (frames over the budget are dropped)",
                                self.shared.limits.frame_rate
                            );
                            self.send_error(ErrorCode::RateLimited, message).await
                        }
                        Verdict::Drop => Ok(()),
                        Verdict::Close => return SessionEnd::Refused {
                            code: ErrorCode::RateLimited,
                            message: "too many frames over the budget: closing".into(),
                        },
                    },
                },
                Some(event) = self.membership.recv() => self.on_hub(event).await,
                () = idle => return SessionEnd::Refused {
                    code: ErrorCode::BadRequest,
                    message: "no frame for too long: send `ping` as a heartbeat".into(),
                },
            };
            if let Err(end) = result {
                return end;
            }
            if self.membership.overflowed() {
                return SessionEnd::SlowClient;
            }
            if self.membership.take_lag() {
                if let Err(end) = self.resync_all().await {
                    return end;
                }
            }
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), SessionEnd> {
        self.send_text(json(message)).await
    }

    /// Sends a serialized frame (big ones are serialized, and their parts
    /// dropped, before the wait on a slow client).
    async fn send_text(&mut self, text: String) -> Result<(), SessionEnd> {
        if self.membership.overflowed() {
            return Err(SessionEnd::SlowClient);
        }
        self.largest_frame = self.largest_frame.max(text.len());
        match tokio::time::timeout(
            self.shared.limits.send_timeout,
            self.socket.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(result) => Ok(result?),
            Err(_) => Err(SessionEnd::SlowClient),
        }
    }

    async fn send_error(&mut self, code: ErrorCode, message: String) -> Result<(), SessionEnd> {
        self.send(&ServerMessage::Error { code, message }).await
    }

    async fn on_frame(&mut self, message: Message) -> Result<(), SessionEnd> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .send_error(
                        ErrorCode::BadRequest,
                        "frames are JSON text, not binary".into(),
                    )
                    .await
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
        };
        if text.len() > self.shared.limits.max_frame {
            let message = format!(
                "frame of {} bytes exceeds the limit of {} bytes",
                text.len(),
                self.shared.limits.max_frame
            );
            return self.send_error(ErrorCode::TooLarge, message).await;
        }
        let request = match serde_json::from_str::<ClientMessage>(&text) {
            Ok(request) => request,
            Err(err) => {
                let message = format!("malformed frame: {err}");
                return match self.user {
                    Some(_) => self.send_error(ErrorCode::BadRequest, message).await,
                    None => Err(SessionEnd::Refused {
                        code: ErrorCode::BadRequest,
                        message,
                    }),
                };
            }
        };
        match (request, self.user.is_some()) {
            (
                ClientMessage::Hello {
                    protocol,
                    token,
                    client_id,
                },
                false,
            ) => self.on_hello(protocol, &token, client_id).await,
            (ClientMessage::Hello { .. }, true) => {
                self.send_error(ErrorCode::BadRequest, "hello was already received".into())
                    .await
            }
            (_, false) => Err(SessionEnd::Refused {
                code: ErrorCode::Unauthorized,
                message: "the first frame must be `hello` with a token".into(),
            }),
            (ClientMessage::Subscribe { pattern, known }, true) => {
                self.on_subscribe(pattern, known).await
            }
            (ClientMessage::Unsubscribe { pattern }, true) => {
                self.on_unsubscribe(&pattern);
                Ok(())
            }
            (ClientMessage::Replay { feed, from }, true) => {
                if self.feeds.contains_key(&feed) {
                    self.catch_up(&feed, Some(from)).await
                } else {
                    let message = format!(
                        "replay of {feed}, which this connection does not follow: subscribe first"
                    );
                    self.send_error(ErrorCode::BadRequest, message).await
                }
            }
            (ClientMessage::Submit { change }, true) => self.on_submit(change).await,
            (ClientMessage::SubmitBatch { changes }, true) => self.on_submit_batch(changes).await,
            (ClientMessage::Ping, true) => self.send(&ServerMessage::Pong).await,
        }
    }

    async fn on_hello(
        &mut self,
        protocol: u32,
        token: &str,
        client_id: String,
    ) -> Result<(), SessionEnd> {
        if protocol != PROTOCOL_VERSION {
            return Err(SessionEnd::Refused {
                code: ErrorCode::UnsupportedVersion,
                message: format!(
                    "this server speaks protocol {PROTOCOL_VERSION}, the client {protocol}: update the client"
                ),
            });
        }
        let Some(user) = self.shared.access.authenticate(token) else {
            return Err(SessionEnd::Refused {
                code: ErrorCode::Unauthorized,
                message: "the token is not valid: sign in again".into(),
            });
        };
        if client_id.is_empty() || client_id.len() > 128 || client_id.contains([':', '\0']) {
            return Err(SessionEnd::Refused {
                code: ErrorCode::BadRequest,
                message: "client_id must be 1-128 bytes without `:` or NUL".into(),
            });
        }
        match self.shared.owners.claim(&client_id, &user.name).await {
            Ok(Some(claim)) => self._claim = Some(claim),
            Ok(None) => {
                return Err(SessionEnd::Refused {
                    code: ErrorCode::Forbidden,
                    message: "this client id belongs to another user: use a client id of your own"
                        .into(),
                })
            }
            Err(err) => {
                tracing::error!(%err, "cannot check the client id's owner");
                return Err(SessionEnd::Refused {
                    code: ErrorCode::Internal,
                    message: "the server failed; retry later".into(),
                });
            }
        }
        self.shared
            .hub
            .follow_client(self.membership.id, &client_id);
        self.client_id = client_id;
        // Signed in: no longer counts against the address's cap.
        self.slot = None;
        let welcome = ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            user: user.name.clone(),
            ledger_window_ms: Some(
                u64::try_from(self.shared.owners.retention().as_millis()).unwrap_or(u64::MAX),
            ),
        };
        self.user = Some(user);
        self.send(&welcome).await?;
        self.tell_server_state().await
    }

    /// Tells the client the hub's view of Redis when it differs from what
    /// the client was told last.
    async fn tell_server_state(&mut self) -> Result<(), SessionEnd> {
        let state = self.shared.hub.server_state();
        if state == self.told {
            return Ok(());
        }
        self.told = state;
        self.send(&ServerMessage::Server { state }).await
    }

    /// Sends the outcomes the ledger holds for changes in flight (published
    /// while this session could not hear them). False when Redis failed.
    async fn recover_outcomes(&mut self) -> Result<bool, SessionEnd> {
        let pending: Vec<(ChangeId, usize)> = self
            .in_flight
            .iter()
            .take(MAX_IN_FLIGHT)
            .map(|(id, q)| (id.clone(), *q))
            .collect();
        for (id, queue) in pending {
            match self.shared.jobs.outcome_in(queue, &id).await {
                Ok(Some(outcome)) => {
                    self.in_flight.remove(&id);
                    self.send(&ServerMessage::Outcome { id, outcome }).await?;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "cannot look up outcomes in flight; retrying");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn user(&self) -> &User {
        self.user.as_ref().expect("only called after hello")
    }

    async fn on_subscribe(
        &mut self,
        pattern: FeedPattern,
        known: BTreeMap<FeedName, FeedPosition>,
    ) -> Result<(), SessionEnd> {
        if !self.patterns.contains(&pattern)
            && self.patterns.len() >= self.shared.limits.max_subscriptions
        {
            let message = format!(
                "at most {} subscriptions per connection: unsubscribe first",
                self.shared.limits.max_subscriptions
            );
            return self.send_error(ErrorCode::RateLimited, message).await;
        }
        if let Err(untagged) = self.shared.hub.check_routable(pattern.as_str()) {
            return self
                .send_error(ErrorCode::BadRequest, untagged.to_string())
                .await;
        }
        let id = self.membership.id;
        let feeds = if pattern.is_concrete() {
            let feed = FeedName::new(pattern.as_str()).expect("a concrete pattern is a feed name");
            if !self.shared.access.can_read(self.user(), &feed) {
                let message = format!("you may not read {feed}");
                return self.send_error(ErrorCode::Forbidden, message).await;
            }
            vec![feed]
        } else {
            // Announcements start before the list is read, so a feed created in
            // between is announced (and deduplicated) rather than missed.
            self.shared.hub.follow_pattern(id, &pattern);
            match self.readable_unfollowed(&pattern).await {
                Ok(feeds) => feeds,
                Err(err) => {
                    self.shared.hub.unfollow_pattern(id, &pattern);
                    return self.internal(err).await;
                }
            }
        };
        self.patterns.insert(pattern.clone());
        self.send(&ServerMessage::Subscribed {
            pattern,
            feeds: feeds.clone(),
        })
        .await?;
        for feed in feeds {
            let from = known.get(&feed).copied();
            self.follow(feed, from).await?;
        }
        Ok(())
    }

    /// The feeds `pattern` matches now that the user may read and this session
    /// does not follow yet.
    async fn readable_unfollowed(
        &mut self,
        pattern: &FeedPattern,
    ) -> Result<Vec<FeedName>, crate::feeds::FeedError> {
        let store = self.shared.store.clone();
        let all = store.feeds().await?;
        Ok(all
            .into_iter()
            .filter(|feed| {
                pattern.matches(feed)
                    && !self.feeds.contains_key(feed)
                    && self.shared.access.can_read(self.user(), feed)
            })
            .collect())
    }

    fn on_unsubscribe(&mut self, pattern: &FeedPattern) {
        if !self.patterns.remove(pattern) {
            return;
        }
        let id = self.membership.id;
        self.shared.hub.unfollow_pattern(id, pattern);
        let still_wanted = |feed: &FeedName, patterns: &HashSet<FeedPattern>| {
            patterns.iter().any(|p| p.matches(feed))
        };
        let dropped: Vec<FeedName> = self
            .feeds
            .keys()
            .filter(|feed| !still_wanted(feed, &self.patterns))
            .cloned()
            .collect();
        for feed in dropped {
            self.feeds.remove(&feed);
            self.shared.hub.unfollow_feed(id, &feed);
        }
    }

    /// Follows a feed (if not already) and brings the client up to date on it.
    async fn follow(
        &mut self,
        feed: FeedName,
        from: Option<FeedPosition>,
    ) -> Result<(), SessionEnd> {
        if let Some(sent) = self.feeds.get(&feed) {
            // Already streaming: only a client that is behind needs a catch-up.
            let behind = from.is_none_or(|f| f.epoch != sent.epoch || f.rev < sent.rev);
            let from = from.filter(|f| f.epoch == sent.epoch);
            return if behind {
                self.catch_up(&feed, from).await
            } else {
                Ok(())
            };
        }
        self.shared.hub.follow_feed(self.membership.id, &feed);
        self.catch_up(&feed, from).await
    }

    /// Sends what the client lacks of `feed` after `from` (a snapshot when
    /// `from` is unknown or history no longer reaches back) and records it.
    async fn catch_up(
        &mut self,
        feed: &FeedName,
        from: Option<FeedPosition>,
    ) -> Result<(), SessionEnd> {
        // Changes published after this read must reach the hub (with
        // sharded fan-out: the feed's tag is subscribed first). Big reads
        // take turns; the permit is held until the frames are serialized.
        let heard = self.shared.hub.hear_changes_of(feed).await;
        let gate = self.shared.big_reads.clone();
        let permit = gate.acquire().await.expect("the semaphore is never closed");
        let since = match heard {
            Err(err) => Err(err.into()),
            Ok(()) => match from {
                Some(from) => self.shared.store.changes_since(feed, from).await,
                None => self.shared.store.snapshot(feed).await.map(Since::Reset),
            },
        };
        let since = match since {
            Ok(since) => since,
            Err(err) => {
                drop(permit);
                // Remember the feed is behind (a feed never sent gets a snapshot)
                // and try again shortly, rather than leave the client stale.
                self.feeds
                    .entry(feed.clone())
                    .or_insert(Sent { epoch: 0, rev: 0 });
                self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
                return self.internal(err).await;
            }
        };
        match since {
            Since::Reset(snapshot) => {
                self.feeds.insert(
                    feed.clone(),
                    Sent {
                        epoch: snapshot.epoch,
                        rev: snapshot.rev,
                    },
                );
                let frame = json(&ServerMessage::Snapshot {
                    feed: feed.clone(),
                    epoch: snapshot.epoch,
                    rev: snapshot.rev,
                    items: snapshot.items,
                });
                drop(permit);
                self.send_text(frame).await
            }
            Since::Changes { epoch, events } => {
                let base = from.map_or(0, |f| f.rev);
                let last = events.last().map_or(base, |e| e.rev);
                self.feeds.insert(feed.clone(), Sent { epoch, rev: last });
                drop(permit);
                let batch = self.shared.limits.replay_batch.max(1);
                for chunk in events.chunks(batch) {
                    self.send(&ServerMessage::Changes {
                        feed: feed.clone(),
                        epoch,
                        events: chunk.to_vec(),
                    })
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Catches up every followed feed from its change log, and announces the
    /// feeds created meanwhile that a pattern matches (their `newfeed` notice
    /// may have been lost with the rest).
    async fn resync_all(&mut self) -> Result<(), SessionEnd> {
        self.tell_server_state().await?;
        if !self.recover_outcomes().await? {
            self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
        }
        let feeds: Vec<(FeedName, Sent)> =
            self.feeds.iter().map(|(f, s)| (f.clone(), *s)).collect();
        for (feed, sent) in feeds {
            let from = FeedPosition {
                epoch: sent.epoch,
                rev: sent.rev,
            };
            self.catch_up(&feed, Some(from)).await?;
        }
        let patterns: Vec<FeedPattern> = self
            .patterns
            .iter()
            .filter(|p| !p.is_concrete())
            .cloned()
            .collect();
        for pattern in patterns {
            let created = match self.readable_unfollowed(&pattern).await {
                Ok(created) => created,
                Err(err) => {
                    self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
                    return self.internal(err).await;
                }
            };
            for feed in created {
                self.send(&ServerMessage::Subscribed {
                    pattern: pattern.clone(),
                    feeds: vec![feed.clone()],
                })
                .await?;
                self.follow(feed, None).await?;
            }
        }
        Ok(())
    }

    async fn on_hub(&mut self, event: HubEvent) -> Result<(), SessionEnd> {
        match event {
            HubEvent::Change(notice) => self.on_change(&notice).await,
            HubEvent::NewFeed(feed) => {
                let matching: Vec<FeedPattern> = self
                    .patterns
                    .iter()
                    .filter(|p| p.matches(&feed))
                    .cloned()
                    .collect();
                if matching.is_empty()
                    || self.feeds.contains_key(&feed)
                    || !self.shared.access.can_read(self.user(), &feed)
                {
                    return Ok(());
                }
                for pattern in matching {
                    self.send(&ServerMessage::Subscribed {
                        pattern,
                        feeds: vec![feed.clone()],
                    })
                    .await?;
                }
                self.follow(feed, None).await
            }
            HubEvent::Deleted(feed) => {
                // The log no longer continues what was sent: the catch-up
                // answers with the feed's state now (epoch 0 while it is gone).
                let Some(sent) = self.feeds.get(&feed).copied() else {
                    return Ok(());
                };
                let from = FeedPosition {
                    epoch: sent.epoch,
                    rev: sent.rev,
                };
                self.catch_up(&feed, Some(from)).await
            }
            HubEvent::Outcome(id, outcome) => {
                if self.in_flight.remove(&id).is_none() {
                    // Not submitted here: another session's, maybe another user's.
                    return Ok(());
                }
                let outcome = Outcome::clone(&outcome);
                self.send(&ServerMessage::Outcome { id, outcome }).await
            }
            HubEvent::Resync => Ok(()),
            HubEvent::ServerState => self.tell_server_state().await,
        }
    }

    async fn on_change(&mut self, notice: &ChangeNotice) -> Result<(), SessionEnd> {
        let Some(sent) = self.feeds.get(&notice.feed).copied() else {
            return Ok(());
        };
        if notice.epoch == sent.epoch && notice.rev <= sent.rev {
            return Ok(()); // already sent (in a snapshot or replay)
        }
        // (0, 0) stands for a feed that did not exist: the first change of any
        // epoch follows it with nothing missed.
        let next = (notice.epoch == sent.epoch || (sent.epoch, sent.rev) == (0, 0))
            && notice.rev == sent.rev + 1;
        if next {
            self.feeds.insert(
                notice.feed.clone(),
                Sent {
                    epoch: notice.epoch,
                    rev: notice.rev,
                },
            );
            return self
                .send(&ServerMessage::Event {
                    feed: notice.feed.clone(),
                    epoch: notice.epoch,
                    rev: notice.rev,
                    change: notice.change.clone(),
                })
                .await;
        }
        // A gap or a new epoch: the change log decides what the client gets.
        let from = FeedPosition {
            epoch: sent.epoch,
            rev: sent.rev,
        };
        self.catch_up(&notice.feed, Some(from)).await
    }

    /// True when change id `id` is this connection's client's.
    fn owns(&self, id: &ChangeId) -> bool {
        id.0.strip_prefix(self.client_id.as_str())
            .is_some_and(|rest| rest.starts_with(':') && rest.len() > 1)
    }

    /// A batch: one client's changes to one feed, queued as one job. Each
    /// change is answered as a single submit would be (`ack`, and the stored
    /// `outcome` when it finished before), except a change deferred because
    /// one before it is still queued or ended in a conflict: it gets no
    /// answer, and the client sends it again after the outcomes before it.
    async fn on_submit_batch(&mut self, changes: Vec<ChangeRequest>) -> Result<(), SessionEnd> {
        let feed = changes.first().and_then(|c| c.op.feed()).cloned();
        let refusal = if changes.is_empty() || changes.len() > MAX_BATCH_CHANGES {
            Some((
                ErrorCode::BadRequest,
                format!(
                    "a batch holds 1 to {MAX_BATCH_CHANGES} changes, not {}",
                    changes.len()
                ),
            ))
        } else if let Some(c) = changes.iter().find(|c| !self.owns(&c.id)) {
            Some((
                ErrorCode::Forbidden,
                format!(
                    "change id {} does not start with this connection's client id `{}:`",
                    c.id.0, self.client_id
                ),
            ))
        } else if changes.iter().any(|c| c.op.feed() != feed.as_ref()) {
            Some((
                ErrorCode::BadRequest,
                "a batch holds changes to one feed only (publish, edit, retract, move)".into(),
            ))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            return self.send_error(code, message).await;
        }
        let user = self.user().clone();
        match self.shared.jobs.submit_batch(&user, &changes).await {
            Ok(answers) => {
                for (change, answer) in changes.iter().zip(answers) {
                    let id = change.id.clone();
                    match answer {
                        Submitted::Queued | Submitted::AlreadyQueued => {
                            let queue = self.shared.jobs.index_for(change);
                            self.in_flight.insert(id.clone(), queue);
                            self.send(&ServerMessage::Ack { id }).await?;
                        }
                        Submitted::Finished(outcome) => {
                            self.send(&ServerMessage::Ack { id: id.clone() }).await?;
                            self.send(&ServerMessage::Outcome { id, outcome }).await?;
                        }
                        Submitted::Deferred => {}
                    }
                }
                Ok(())
            }
            Err(err) if err.is_caller_error() => {
                for change in changes {
                    let outcome = Outcome::Rejected {
                        code: err.code(),
                        message: err.to_string(),
                    };
                    let id = change.id;
                    self.send(&ServerMessage::Outcome { id, outcome }).await?;
                }
                Ok(())
            }
            Err(err) => self.internal(err).await,
        }
    }

    async fn on_submit(&mut self, change: ChangeRequest) -> Result<(), SessionEnd> {
        let id = change.id.clone();
        let own = self.owns(&id);
        if !own {
            let message = format!(
                "change id {} does not start with this connection's client id `{}:`",
                id.0, self.client_id
            );
            return self.send_error(ErrorCode::Forbidden, message).await;
        }
        let user = self.user().clone();
        match self.shared.jobs.submit(&user, &change).await {
            Ok(Submitted::Queued | Submitted::AlreadyQueued) => {
                let queue = self.shared.jobs.index_for(&change);
                self.in_flight.insert(id.clone(), queue);
                self.send(&ServerMessage::Ack { id }).await
            }
            Ok(Submitted::Finished(outcome)) => {
                self.send(&ServerMessage::Ack { id: id.clone() }).await?;
                self.send(&ServerMessage::Outcome { id, outcome }).await
            }
            // A single change is never deferred (only a batch defers).
            Ok(Submitted::Deferred) => Ok(()),
            Err(err) if err.is_caller_error() => {
                let outcome = Outcome::Rejected {
                    code: err.code(),
                    message: err.to_string(),
                };
                self.send(&ServerMessage::Outcome { id, outcome }).await
            }
            Err(err) => self.internal(err).await,
        }
    }

    async fn internal(&mut self, err: impl std::fmt::Display) -> Result<(), SessionEnd> {
        tracing::error!(%err, "request failed");
        self.send_error(ErrorCode::Internal, "the server failed; retry later".into())
            .await
    }
}

/// A server frame as JSON text.
fn json(message: &ServerMessage) -> String {
    serde_json::to_string(message).expect("server messages always serialize")
}
