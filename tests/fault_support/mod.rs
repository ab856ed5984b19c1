//! Shared helpers of the fault, chaos and bad-input suites: Redis processes
//! that can be killed with SIGKILL and restarted from their AOF, gateway and
//! worker processes, a TCP proxy that can cut or freeze a Redis connection,
//! a real client (the sync core, a durable [`StoredState`] and a WebSocket),
//! and the Jepsen-style accounting of every change the clients made against
//! the feeds' change logs and the job ledger.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use thoonk_protocol::{
    ChangeId, ClientMessage, ErrorCode, FeedName, FeedPattern, ItemId, Operation, Position,
    ServerMessage, ServerState,
};
use thoonk_server::feeds::FeedStore;
use thoonk_sync_core::{
    ChangeOutcome, Config, Notification, OutboxRecord, Status, StoredState, SyncCore, Timing,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for one awaited state. A bound is a failure condition (the
/// thing never happened), never a measured speed.
pub const WAIT: Duration = Duration::from_secs(30);

/// The instance id the tests' own feed stores announce.
pub const INSTANCE: &str = "fault-tests";

/// The job queue the gateways and workers use.
pub const QUEUE: &str = "changes";

// ---- processes -------------------------------------------------------------

pub use thoonk_testkit::server_bin;

pub use thoonk_testkit::free_port;
use thoonk_testkit::stop as sigterm_then_kill;

fn wait_blocking(what: &str, ready: impl FnMut() -> bool) {
    thoonk_testkit::wait_until(what, WAIT, ready);
}

fn forward_log(child: &mut Child, tag: String) {
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[{tag}] {line}");
            }
        });
    }
}

/// A `redis-server` of its own that can be killed with SIGKILL and started
/// again on the same port from the same data folder (its AOF).
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// Starts redis-server with AOF on and `appendfsync` as given.
    pub fn start(appendfsync: &str) -> Redis {
        Self::start_with(&["--appendfsync", appendfsync])
    }

    /// Starts redis-server with AOF on and extra `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let port = free_port();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "thoonk-fault-redis-{}-{port}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the redis data folder");
        let mut redis = Redis {
            child: None,
            port,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server: is it installed (scripts/setup)?");
        self.child = Some(child);
        let port = self.port;
        wait_blocking("redis-server", || redis_ping(port));
    }

    /// SIGKILL: what the AOF did not write yet is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: Redis shuts down cleanly (the AOF is flushed); waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm_then_kill(&mut child);
        }
    }

    /// Starts it again on the same port from its data folder.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder (the AOF is in `appendonlydir/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    pub async fn store(&self) -> FeedStore {
        FeedStore::open(&self.client(), INSTANCE)
            .await
            .expect("open a feed store")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm_then_kill(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = StdTcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// How many connections listen to `newfeed`: one per gateway hub.
pub async fn hub_count(redis_url: &str) -> usize {
    let Ok(client) = redis::Client::open(redis_url) else {
        return 0;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let reply: redis::RedisResult<(String, usize)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("newfeed")
        .query_async(&mut conn)
        .await;
    reply.map(|(_, n)| n).unwrap_or(0)
}

/// Polls `check` every 20 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `thoonk-server` process (`serve` or `work`) that can be killed with SIGKILL.
pub struct Process {
    child: Option<Child>,
    pub port: u16,
    pub tag: String,
}

impl Process {
    /// `thoonk-server --redis URL serve --listen … EXTRA` (`--allow-all`
    /// unless EXTRA has `--config`); waits until it
    /// accepts connections and its hub listens to Redis (when `hub_redis` is
    /// given: the Redis to watch, which may differ from `redis_url` behind a proxy).
    pub async fn gateway(redis_url: &str, hub_redis: Option<&str>, extra: &[&str]) -> Process {
        let before = match hub_redis {
            Some(url) => hub_count(url).await,
            None => 0,
        };
        let port = free_port();
        let mut child = Command::new(server_bin())
            .args(["--redis", redis_url, "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(thoonk_testkit::access_args(extra))
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start thoonk-server serve");
        let tag = format!("gateway:{port}");
        forward_log(&mut child, tag.clone());
        wait_blocking("thoonk-server serve", || {
            StdTcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let Some(url) = hub_redis {
            eventually("the gateway's hub subscribes", || async {
                (hub_count(url).await > before).then_some(())
            })
            .await;
        }
        Process {
            child: Some(child),
            port,
            tag,
        }
    }

    /// `thoonk-server --redis URL work EXTRA` (`--allow-all` unless EXTRA
    /// has `--config`).
    pub fn worker(redis_url: &str, extra: &[&str]) -> Process {
        let mut child = Command::new(server_bin())
            .args(["--redis", redis_url, "work"])
            .args(thoonk_testkit::access_args(extra))
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start thoonk-server work");
        let tag = format!("worker:{}", child.id());
        forward_log(&mut child, tag.clone());
        Process {
            child: Some(child),
            port: 0,
            tag,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm_then_kill(&mut child);
        }
    }
}

/// Writes an access config file into a fresh temporary folder; removed on drop.
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    pub fn write(config: &Value) -> ConfigFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("thoonk-fault-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the config folder");
        let path = dir.join("access.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).expect("write config");
        ConfigFile { dir, path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- a TCP proxy in front of Redis ------------------------------------------

struct ProxyState {
    upstream: u16,
    /// Bumped to drop every open connection.
    generation: tokio::sync::watch::Sender<u64>,
    /// While true, connections are accepted and closed at once.
    down: AtomicBool,
    /// When a reply from upstream contains these bytes, that connection
    /// stops forwarding in both directions (frozen) and the sender fires.
    freeze_on: Mutex<Option<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>>,
    /// Releases frozen connections (by dropping them).
    frozen: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of a Redis: a network between a server
/// process and Redis that a test can cut, or freeze right after a chosen reply.
#[derive(Clone)]
pub struct Proxy {
    state: Arc<ProxyState>,
    pub port: u16,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        // A port no server of this process had: a killed server's port stays its own.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let (generation, _) = tokio::sync::watch::channel(0);
        let state = Arc::new(ProxyState {
            upstream,
            generation,
            down: AtomicBool::new(false),
            freeze_on: Mutex::new(None),
            frozen: AtomicU64::new(0),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if accept_state.down.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                tokio::spawn(proxy_conn(accept_state.clone(), client));
            }
        });
        Proxy { state, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Cuts the network: every open connection drops, new ones are refused.
    pub fn cut(&self) {
        self.state.down.store(true, Ordering::Release);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Heals the network.
    pub fn heal(&self) {
        self.state.down.store(false, Ordering::Release);
    }

    /// Freezes the first connection whose upstream reply contains `pattern`
    /// (that reply is not forwarded); the receiver fires when it happens.
    pub fn freeze_on(&self, pattern: &[u8]) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.state.freeze_on.lock().unwrap() = Some((pattern.to_vec(), tx));
        rx
    }
}

async fn proxy_conn(state: Arc<ProxyState>, mut client: TcpStream) {
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", state.upstream)).await else {
        return;
    };
    let mut generation = state.generation.subscribe();
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut up_buf = vec![0u8; 64 * 1024];
    let mut down_buf = vec![0u8; 64 * 1024];
    let mut window: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = generation.changed() => return,
            n = cr.read(&mut up_buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if uw.write_all(&up_buf[..n]).await.is_err() { return },
            },
            n = ur.read(&mut down_buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    window.extend_from_slice(&down_buf[..n]);
                    let hit = {
                        let mut slot = state.freeze_on.lock().unwrap();
                        let hit = slot.as_ref().is_some_and(|(p, _)| {
                            window.windows(p.len()).any(|w| w == p.as_slice())
                        });
                        if hit { slot.take().map(|(_, tx)| tx) } else { None }
                    };
                    if let Some(tx) = hit {
                        state.frozen.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(());
                        // Frozen: nothing more moves on this connection until it is cut.
                        let _ = generation.changed().await;
                        return;
                    }
                    let keep = window.len().saturating_sub(256);
                    window.drain(..keep);
                    if cw.write_all(&down_buf[..n]).await.is_err() { return }
                }
            },
        }
    }
}

// ---- the real client ----------------------------------------------------------

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

/// One change a client made, as the ledger records it.
#[derive(Clone, Debug)]
pub struct Made {
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
    pub made: Vec<Made>,
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
        self.made.push(Made {
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
                if let ClientMessage::Submit { change } = &message {
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
            let states: Vec<String> =
                clients
                    .iter()
                    .map(|c| {
                        format!(
                        "{}: status {:?}, pending {:?}, outcomes {}/{}, faults {:?}, errors {:?}",
                        c.client_id,
                        c.core.status(),
                        c.pending().iter().map(|p| p.wire_id.0.clone()).collect::<Vec<_>>(),
                        c.core.outcomes().len(),
                        c.made.len(),
                        c.core_faults,
                        c.server_errors
                    )
                    })
                    .collect();
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

// ---- accounting ---------------------------------------------------------------

/// The result of checking the clients' ledger against Redis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Changes the clients made.
    pub made: usize,
    /// Of those, applied on the server (accepted or resolved by resubmission).
    pub applied: usize,
    /// Of those, refused (rejected or unresolved).
    pub refused: usize,
    /// Told applied (or never told anything) but absent from every change log.
    pub lost: usize,
    /// In the change logs more than once.
    pub duplicated: usize,
    /// In a change log but never made, or made and told refused.
    pub unexpected: usize,
    /// Applied exactly once although put on the wire more than once (resent
    /// after a fault).
    pub recovered: usize,
    /// Details of every lost, duplicated or unexpected change.
    pub problems: Vec<String>,
}

impl Accounting {
    /// Prints the counts, and appends them to the file named by
    /// `THOONK_ACCOUNTING_LOG` when set (`scripts/test` shows that file).
    pub fn report(&self, name: &str) {
        let line = format!(
            "[accounting] {name}: made {} applied {} refused {} lost {} duplicated {} unexpected {} recovered {}",
            self.made, self.applied, self.refused, self.lost, self.duplicated, self.unexpected, self.recovered
        );
        eprintln!("{line}");
        if let Some(path) = std::env::var_os("THOONK_ACCOUNTING_LOG") {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{line}");
            }
        }
        for p in &self.problems {
            eprintln!("[accounting] {name}: {p}");
        }
    }

    pub fn assert_clean(&self, name: &str) {
        self.report(name);
        assert_eq!(
            (self.lost, self.duplicated, self.unexpected),
            (0, 0, 0),
            "{name}: lost / duplicated / unexpected must be 0: {:#?}",
            self.problems
        );
    }
}

/// Every change-log entry of `feed` by job id: how many entries carry each.
pub async fn log_jobs(store: &FeedStore, feed: &FeedName) -> BTreeMap<String, usize> {
    let mut jobs = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = match store.history(feed, after, 1000).await {
            Ok(page) => page,
            Err(thoonk_server::feeds::FeedError::FeedNotFound { .. }) => break,
            Err(err) => panic!("history of {feed}: {err}"),
        };
        let Some(last) = page.events.last() else {
            break;
        };
        after = last.rev;
        for event in &page.events {
            if let Some(job) = &event.change.job {
                *jobs.entry(job.clone()).or_default() += 1;
            }
        }
    }
    jobs
}

/// Checks every change the clients made against the change logs of `feeds`
/// (and, for refused changes, the job ledger). `logs` may carry entries read
/// before a log was lost on purpose (FLUSHALL), added to what is read now.
pub async fn account(
    store: &FeedStore,
    clients: &[&CoreClient],
    feeds: &[FeedName],
    earlier: &BTreeMap<String, usize>,
) -> Accounting {
    let mut logged: BTreeMap<String, usize> = earlier.clone();
    for feed in feeds {
        for (job, n) in log_jobs(store, feed).await {
            *logged.entry(job).or_default() += n;
        }
    }
    let mut acc = Accounting::default();
    let mut known = BTreeSet::new();
    for client in clients {
        for made in &client.made {
            acc.made += 1;
            let record = client.core.outcomes().get(&made.id);
            // Every wire id the change went out under (a conflict resubmission
            // takes a fresh one).
            let mut wires: BTreeSet<String> = BTreeSet::from([made.id.0.clone()]);
            if let Some(r) = record {
                wires.insert(r.wire_id.0.clone());
            }
            let count: usize = wires
                .iter()
                .map(|w| logged.get(w).copied().unwrap_or(0))
                .sum();
            let sends: u32 = wires
                .iter()
                .map(|w| {
                    client
                        .submits
                        .get(&ChangeId(w.clone()))
                        .copied()
                        .unwrap_or(0)
                })
                .sum();
            known.extend(wires.iter().cloned());
            match record.map(|r| r.outcome.applied()) {
                Some(true) => {
                    acc.applied += 1;
                    match count {
                        0 => {
                            acc.lost += 1;
                            acc.problems
                                .push(format!("lost: {} accepted but not in any log", made.id.0));
                        }
                        1 => {
                            if sends > 1 {
                                acc.recovered += 1;
                            }
                        }
                        n => {
                            acc.duplicated += 1;
                            acc.problems.push(format!(
                                "duplicated: {} is in the logs {n} times",
                                made.id.0
                            ));
                        }
                    }
                }
                Some(false) => {
                    acc.refused += 1;
                    if count > 0 {
                        acc.unexpected += 1;
                        acc.problems.push(format!(
                            "unexpected: {} was told {:?} but is in the logs {count} times",
                            made.id.0,
                            record.map(|r| &r.outcome)
                        ));
                    }
                }
                None => {
                    acc.lost += 1;
                    acc.problems.push(format!(
                        "lost: {} has no outcome (in the logs {count} times, sent {sends} times)",
                        made.id.0
                    ));
                }
            }
        }
    }
    for (job, n) in &logged {
        if !known.contains(job) {
            acc.unexpected += n;
            acc.problems.push(format!(
                "unexpected: log entry of {job}, which no client made"
            ));
        }
    }
    acc
}

/// Every client's mirror equals the server: same epoch, revision and items
/// in the same order, and no client holds a feed the server lacks.
pub async fn assert_converged(store: &FeedStore, clients: &[&CoreClient], feeds: &[FeedName]) {
    for feed in feeds {
        let snap = store.snapshot(feed).await.expect("snapshot");
        let server: Vec<(String, Value)> = snap
            .items
            .iter()
            .map(|i| (i.id.to_string(), i.item.clone()))
            .collect();
        for client in clients {
            let head = client.core.position(feed);
            let mine: Vec<(String, Value)> = client
                .core
                .confirmed(feed)
                .into_iter()
                .map(|(id, value, _)| (id.to_string(), value))
                .collect();
            assert_eq!(
                head.map(|h| (h.epoch, h.rev)),
                Some((snap.epoch, snap.rev)),
                "{}: {feed} mirrored at {head:?}, server at ({}, {})",
                client.client_id,
                snap.epoch,
                snap.rev
            );
            assert_eq!(
                mine, server,
                "{}: {feed} items differ from the server",
                client.client_id
            );
            let view: Vec<(String, Value)> = client
                .core
                .view(feed)
                .into_iter()
                .map(|v| (v.id.to_string(), v.value))
                .collect();
            assert_eq!(
                view, server,
                "{}: {feed} view differs from the server",
                client.client_id
            );
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
            let mut lines = Vec::new();
            for c in clients.iter() {
                let heads: Vec<String> = feeds
                    .iter()
                    .map(|f| format!("{f}={:?}", c.core.position(f).map(|h| (h.epoch, h.rev))))
                    .collect();
                lines.push(format!(
                    "{}: status {:?} pending {:?} outcomes {}/{} heads {heads:?} faults {:?} errors {:?}",
                    c.client_id,
                    c.core.status(),
                    c.pending().iter().map(|p| p.wire_id.0.clone()).collect::<Vec<_>>(),
                    c.core.outcomes().len(),
                    c.made.len(),
                    c.core_faults,
                    c.server_errors
                ));
            }
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

pub fn feed(name: &str) -> FeedName {
    FeedName::new(name).expect("feed name")
}

/// A SplitMix64 generator for seeded test actions.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---- a raw protocol client for bad input --------------------------------------

/// A WebSocket client that sends whatever it is told and keeps every frame.
pub struct RawClient {
    ws: Socket,
    /// Every text frame received.
    pub log: Vec<String>,
}

impl RawClient {
    pub async fn connect(url: &str) -> RawClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("the websocket handshake finishes")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        RawClient {
            ws,
            log: Vec::new(),
        }
    }

    /// Connects and says hello; panics unless `welcome` comes.
    pub async fn signed_in(url: &str, token: &str, client_id: &str) -> RawClient {
        let mut client = Self::connect(url).await;
        client
            .send(&ClientMessage::Hello {
                protocol: thoonk_protocol::PROTOCOL_VERSION,
                token: token.into(),
                client_id: client_id.into(),
            })
            .await;
        match client.next().await {
            Some(ServerMessage::Welcome { .. }) => client,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        self.send_text(serde_json::to_string(message).unwrap())
            .await;
    }

    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(WAIT, self.ws.send(Message::text(text)))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next message, or `None` when the connection closed.
    pub async fn next(&mut self) -> Option<ServerMessage> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    self.log.push(text.to_string());
                    return Some(
                        serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("undecodable server frame ({e}): {text}")),
                    );
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads until `pick` returns `Some`.
    pub async fn until<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> T {
        loop {
            match self.next().await {
                Some(m) => {
                    if let Some(found) = pick(&m) {
                        return found;
                    }
                }
                None => panic!("{what}: the connection closed; received {:#?}", self.log),
            }
        }
    }

    /// Sends `ping` and reads until `pong`: everything sent before is in the log.
    pub async fn ping(&mut self) {
        self.send(&ClientMessage::Ping).await;
        self.until("pong", |m| matches!(m, ServerMessage::Pong).then_some(()))
            .await;
    }

    /// The next message must be an error with `code`.
    pub async fn expect_error(&mut self, code: ErrorCode, what: &str) {
        match self.next().await {
            Some(ServerMessage::Error { code: got, message }) => {
                assert_eq!(got, code, "{what}: {message}")
            }
            other => panic!("{what}: expected an error {code:?}, got {other:?}"),
        }
    }
}
