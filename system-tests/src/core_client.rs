//! A real client of the system tests: the sync core, its durable store (a
//! [`StoredState`] that survives restarts, as IndexedDB does) and a
//! WebSocket to one of the gateways, driven by [`CoreClient::pump`]; and
//! helpers that drive several until a state holds.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use thoonk_protocol::{
    ChangeId, ErrorCode, FeedName, FeedPattern, ItemId, Operation, Position, ServerMessage,
    ServerState,
};
use thoonk_server::feeds::FeedStore;
use thoonk_sync_core::{
    ChangeOutcome, Config, Notification, OutboxRecord, Status, StoredState, SyncCore, Timing,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Milliseconds since the test process started: the clients' clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Short timers, so that faults are noticed and repaired within seconds.
pub fn test_timing() -> Timing {
    Timing {
        reconnect_base: 100,
        reconnect_max: 1_000,
        handshake_timeout: 3_000,
        submit_timeout: 1_500,
        submit_timeout_max: 4_000,
        outcome_timeout: 4_000,
        replay_timeout: 1_500,
        replay_timeout_max: 4_000,
        ping_interval: 2_000,
        pong_timeout: 3_000,
    }
}

/// One change the app made on a client, as the client's half of the
/// ledger records it.
#[derive(Clone, Debug)]
pub struct LocalChange {
    pub id: ChangeId,
    pub op: Operation,
    pub at: u64,
}

/// A real client: the sync core, its durable store (a [`StoredState`] that
/// survives restarts, as IndexedDB does) and a WebSocket to one of the
/// gateways. Frames and timers are driven by [`CoreClient::pump`].
pub struct CoreClient {
    pub client_id: String,
    pub token: String,
    pub urls: Vec<String>,
    url_index: usize,
    seed: u64,
    core: SyncCore,
    /// The durable store: every batch the core asked for, applied in order.
    pub store: StoredState,
    ws: Option<Socket>,
    /// Every change the app made (the client's half of the ledger).
    pub made: Vec<LocalChange>,
    /// How often each wire id was put on the wire (survives restarts).
    pub submits: BTreeMap<ChangeId, u32>,
    /// Errors the server reported that are not tied to a change.
    pub server_errors: Vec<(ErrorCode, String)>,
    /// Faults the core reported about the server's frames.
    pub core_faults: Vec<String>,
    /// Snapshots received per feed (resets), counted across restarts.
    pub snapshots: BTreeMap<FeedName, u32>,
    /// Restarts from the store.
    pub restarts: u32,
    /// While true the client does not read its socket (a slow consumer).
    pub stalled: bool,
    /// While true the client does not connect (offline).
    pub offline: bool,
    /// The core's timers (kept across restarts).
    timing: Timing,
    /// Every change of the server's state the core reported, in order.
    pub server_states: Vec<ServerState>,
}

impl CoreClient {
    /// A client with a fresh store that subscribes to `patterns`.
    pub fn new(client_id: &str, token: &str, urls: &[String], patterns: &[&str]) -> Self {
        Self::with_timing(client_id, token, urls, patterns, test_timing())
    }

    /// A client as [`CoreClient::new`] makes, with the core's timers as given.
    pub fn with_timing(
        client_id: &str,
        token: &str,
        urls: &[String],
        patterns: &[&str],
        timing: Timing,
    ) -> Self {
        let seed = client_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        let core = SyncCore::open(
            Self::config(client_id, token, seed, &timing),
            StoredState::default(),
            now_ms(),
        )
        .expect("open the core on an empty store");
        let mut client = CoreClient {
            client_id: client_id.into(),
            token: token.into(),
            urls: urls.to_vec(),
            url_index: 0,
            seed,
            core,
            store: StoredState::default(),
            ws: None,
            made: Vec::new(),
            submits: BTreeMap::new(),
            server_errors: Vec::new(),
            core_faults: Vec::new(),
            snapshots: BTreeMap::new(),
            restarts: 0,
            stalled: false,
            offline: false,
            timing,
            server_states: Vec::new(),
        };
        for p in patterns {
            client
                .core
                .subscribe(FeedPattern::new(*p).expect("pattern"), now_ms())
                .expect("subscribe");
        }
        client
    }

    fn config(client_id: &str, token: &str, seed: u64, timing: &Timing) -> Config {
        let mut config = Config::new(client_id, token, seed);
        config.timing = timing.clone();
        config
    }

    pub fn core(&self) -> &SyncCore {
        &self.core
    }

    pub fn is_connected(&self) -> bool {
        self.ws.is_some()
    }

    /// A local change, recorded in the ledger.
    pub fn change(&mut self, op: Operation) -> ChangeId {
        let at = now_ms();
        let id = self.core.change(op.clone(), at).expect("a local change");
        self.made.push(LocalChange {
            id: id.clone(),
            op,
            at,
        });
        id
    }

    pub fn publish(&mut self, feed: &FeedName, id: &str, item: Value) -> ChangeId {
        self.change(Operation::Publish {
            feed: feed.clone(),
            id: ItemId::new(id).expect("item id"),
            item,
            position: None,
        })
    }

    pub fn edit(&mut self, feed: &FeedName, id: &str, item: Value) -> ChangeId {
        self.change(Operation::Edit {
            feed: feed.clone(),
            id: ItemId::new(id).expect("item id"),
            item,
        })
    }

    pub fn retract(&mut self, feed: &FeedName, id: &str) -> ChangeId {
        self.change(Operation::Retract {
            feed: feed.clone(),
            id: ItemId::new(id).expect("item id"),
        })
    }

    pub fn publish_at(&mut self, feed: &FeedName, id: &str, item: Value, at: Position) -> ChangeId {
        self.change(Operation::Publish {
            feed: feed.clone(),
            id: ItemId::new(id).expect("item id"),
            item,
            position: Some(at),
        })
    }

    /// A browser reload: the page (core, socket) is gone, the store stays.
    pub fn restart(&mut self) {
        self.ws = None;
        self.restarts += 1;
        self.core = SyncCore::open(
            Self::config(
                &self.client_id,
                &self.token,
                self.seed ^ self.restarts as u64,
                &self.timing,
            ),
            self.store.clone(),
            now_ms(),
        )
        .expect("reopen the core from its store");
    }

    /// A reload in the middle of an outbox flush: the store batch of the
    /// pending effects is written, the frames it was to send next are lost
    /// with the page.
    pub fn crash_after_store(&mut self) -> usize {
        let fx = self.core.take_effects();
        if let Some(batch) = &fx.store {
            self.store.apply(batch);
        }
        let lost = fx.send.len();
        self.restart();
        lost
    }

    /// Drops the connection as a network failure would.
    pub fn drop_connection(&mut self) {
        if self.ws.take().is_some() {
            let _ = self.core.disconnected(now_ms());
        }
    }

    async fn carry_out(&mut self) {
        loop {
            let fx = self.core.take_effects();
            if fx.is_empty() {
                return;
            }
            if let Some(batch) = &fx.store {
                self.store.apply(batch);
            }
            if fx.close && self.ws.take().is_some() {
                let _ = self.core.disconnected(now_ms());
            }
            for message in fx.send {
                for change in message.submitted() {
                    *self.submits.entry(change.id.clone()).or_default() += 1;
                }
                let Some(ws) = self.ws.as_mut() else { break };
                let text = serde_json::to_string(&message).expect("serialize");
                let sent =
                    tokio::time::timeout(Duration::from_secs(3), ws.send(Message::text(text)))
                        .await;
                if !matches!(sent, Ok(Ok(()))) {
                    self.ws = None;
                    let _ = self.core.disconnected(now_ms());
                    break;
                }
            }
            for note in fx.notify {
                match note {
                    Notification::ServerError { code, message } => {
                        self.server_errors.push((code, message))
                    }
                    Notification::Server { state } => self.server_states.push(state),
                    _ => {}
                }
            }
            if fx.connect {
                self.open_socket().await;
            }
        }
    }

    async fn open_socket(&mut self) {
        if self.offline || self.urls.is_empty() {
            let _ = self.core.disconnected(now_ms());
            return;
        }
        let url = self.urls[self.url_index % self.urls.len()].clone();
        let attempt = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(&url),
        )
        .await;
        match attempt {
            Ok(Ok((ws, _))) => {
                self.ws = Some(ws);
                let _ = self.core.connected(now_ms());
            }
            _ => {
                // The next attempt goes to the next gateway.
                self.url_index += 1;
                let _ = self.core.disconnected(now_ms());
            }
        }
    }

    /// Drives the client for `budget`: effects, frames and timers.
    pub async fn pump(&mut self, budget: Duration) {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            self.carry_out().await;
            let now = now_ms();
            let timer = self.core.poll_timeout().map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now))
            });
            let wake = timer.map_or(deadline, |t| t.min(deadline));
            let frame = match (self.ws.as_mut(), self.stalled) {
                (Some(ws), false) => tokio::time::timeout_at(wake, ws.next()).await.ok(),
                _ => {
                    tokio::time::sleep_until(wake).await;
                    None
                }
            };
            match frame {
                Some(Some(Ok(Message::Text(text)))) => {
                    let message: ServerMessage = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("undecodable server frame ({e}): {text}"));
                    if let ServerMessage::Snapshot { feed, .. } = &message {
                        *self.snapshots.entry(feed.clone()).or_default() += 1;
                    }
                    if let Err(err) = self.core.handle_server(message, now_ms()) {
                        self.core_faults.push(err.to_string());
                    }
                }
                Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) => {
                    self.ws = None;
                    let _ = self.core.disconnected(now_ms());
                }
                Some(Some(Ok(_))) => {}
                None => {
                    if timer.is_some_and(|t| t <= tokio::time::Instant::now()) {
                        let _ = self.core.handle_timeout(now_ms());
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                self.carry_out().await;
                return;
            }
        }
    }

    /// The client's state for a failure message: status, pending changes,
    /// outcomes received of changes made, the position of each of `feeds`,
    /// faults and server errors.
    pub fn describe(&self, feeds: &[FeedName]) -> String {
        let heads: Vec<String> = feeds
            .iter()
            .map(|f| format!("{f}={:?}", self.core.position(f).map(|h| (h.epoch, h.rev))))
            .collect();
        format!(
            "{}: status {:?}, pending {:?}, outcomes {}/{}, heads {heads:?}, faults {:?}, errors {:?}",
            self.client_id,
            self.core.status(),
            self.pending().iter().map(|p| p.wire_id.0.clone()).collect::<Vec<_>>(),
            self.core.outcomes().len(),
            self.made.len(),
            self.core_faults,
            self.server_errors
        )
    }

    /// Every change made has a stored outcome and nothing is pending.
    pub fn settled(&self) -> bool {
        self.core.pending().is_empty()
            && self
                .made
                .iter()
                .all(|m| self.core.outcomes().contains_key(&m.id))
    }

    pub fn pending(&self) -> Vec<OutboxRecord> {
        self.core.pending()
    }

    pub fn outcome(&self, id: &ChangeId) -> Option<&ChangeOutcome> {
        self.core.outcomes().get(id).map(|r| &r.outcome)
    }

    pub fn online(&self) -> bool {
        matches!(self.core.status(), Status::Online)
    }
}

/// Pumps every client in turn until `done` holds, for at most `bound`.
pub async fn pump_until(
    clients: &mut [&mut CoreClient],
    what: &str,
    bound: Duration,
    mut done: impl FnMut(&[&mut CoreClient]) -> bool,
) {
    let deadline = Instant::now() + bound;
    loop {
        for c in clients.iter_mut() {
            c.pump(Duration::from_millis(15)).await;
        }
        if done(clients) {
            return;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = clients.iter().map(|c| c.describe(&[])).collect();
            panic!("{what}: not within {bound:?}:\n{}", states.join("\n"));
        }
    }
}

/// Pumps every client for `time`.
pub async fn pump_for(clients: &mut [&mut CoreClient], time: Duration) {
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        for c in clients.iter_mut() {
            c.pump(Duration::from_millis(15)).await;
        }
    }
}

/// True when every client mirrors every feed at the server's revision.
pub async fn caught_up(store: &FeedStore, clients: &[&mut CoreClient], feeds: &[FeedName]) -> bool {
    for feed in feeds {
        let Ok(snap) = store.snapshot(feed).await else {
            return false;
        };
        for c in clients {
            if c.core.position(feed).map(|h| (h.epoch, h.rev)) != Some((snap.epoch, snap.rev)) {
                return false;
            }
        }
    }
    true
}

/// Pumps until every client is settled (all outcomes in, nothing pending)
/// and mirrors every feed at the server's revision.
pub async fn quiesce(store: &FeedStore, clients: &mut [&mut CoreClient], feeds: &[FeedName]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        pump_for(clients, Duration::from_millis(100)).await;
        if clients.iter().all(|c| c.settled() && c.online())
            && caught_up(store, clients, feeds).await
        {
            return;
        }
        if Instant::now() >= deadline {
            let lines: Vec<String> = clients.iter().map(|c| c.describe(feeds)).collect();
            let mut server = Vec::new();
            for f in feeds {
                if let Ok(s) = store.snapshot(f).await {
                    server.push(format!("{f}=({}, {})", s.epoch, s.rev));
                }
            }
            panic!(
                "no quiescence within 60 s; server {server:?}\n{}",
                lines.join("\n")
            );
        }
    }
}
