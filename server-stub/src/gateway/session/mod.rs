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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use thoonk_protocol::{
    ChangeId, ClientMessage, ErrorCode, FeedName, FeedPattern, ServerMessage, ServerState,
};

mod catch_up;
mod fanout;
mod hello;
mod submit;

/// Positions the pure decisions' tests share.
#[cfg(test)]
mod positions {
    use super::Sent;
    use thoonk_protocol::FeedPosition;

    /// A feed sent up to revision 5 of epoch 7.
    pub const AT_5: Sent = Sent { epoch: 7, rev: 5 };

    /// A client's position.
    pub fn pos(epoch: u64, rev: u64) -> FeedPosition {
        FeedPosition { epoch, rev }
    }
}

use super::access::{AccessRules, User};
use super::hub::{Hub, Membership};
use super::limits::{FrameBudget, SlotGuard, Verdict};
use crate::feeds::FeedStore;
use crate::jobs::QueueSet;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    fn user(&self) -> &User {
        self.user.as_ref().expect("only called after hello")
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
