//! Shared helpers of the gateway tests: a real Redis (or, with
//! `THOONK_TEST_REDIS=cluster`, a local Redis Cluster, on which feed names
//! get hash tags through [`name`], [`pattern`] and [`shard`]), real
//! `thoonk-server` processes, and a WebSocket test client that speaks the
//! protocol types and checks, frame by frame, that every feed's revisions
//! arrive dense and in order.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use thoonk_protocol::{
    ChangeOp, ClientMessage, Epoch, ErrorCode, FeedEvent, FeedName, FeedPattern, FeedPosition,
    Item, ItemId, Position, Rev, ServerMessage, PROTOCOL_VERSION,
};
use thoonk_server::feeds::FeedStore;
use thoonk_server::redis_target::{RedisConn, RedisTarget};
use thoonk_testkit::{TestRedis, ThoonkServer};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for one awaited frame or state. A bound is a failure
/// condition (the thing never happened), not a measured speed.
pub const WAIT: Duration = Duration::from_secs(10);

/// Upper bound for a stream of frames that keeps coming (each frame within
/// [`WAIT`]) to reach an expected state.
pub const STREAM_WAIT: Duration = Duration::from_secs(60);

/// The instance id the tests' stores announce in newfeed/delfeed/conffeed.
pub const INSTANCE: &str = "gateway-tests";

pub use thoonk_testkit::{server_bin, shard};

/// The feed called `s` on the target: unchanged on one Redis, with a hash
/// tag on a Redis Cluster (see [`thoonk_testkit::shard`]).
pub fn name(s: &str) -> FeedName {
    FeedName::new(shard(s)).expect("valid feed name")
}

/// The pattern `s` on the target, mapped like [`name`]
/// (`team:5:member:*:tasks` → `team:{5}:member:*:tasks` on a cluster).
pub fn pattern(s: &str) -> FeedPattern {
    FeedPattern::new(shard(s)).expect("valid feed pattern")
}

pub fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

/// A Redis of its own (one server, or a Redis Cluster with
/// `THOONK_TEST_REDIS=cluster`) with a feed store on it.
pub struct Env {
    pub redis: TestRedis,
    pub target: RedisTarget,
    pub store: FeedStore,
}

/// Opens a feed store, retrying: the store's client gives up on a reply
/// after a few seconds, which a badly loaded machine can exceed (loading the
/// scripts is idempotent).
async fn open_store(target: &RedisTarget) -> FeedStore {
    let mut attempt = 0;
    loop {
        match FeedStore::open(target, INSTANCE).await {
            Ok(store) => return store,
            Err(err) => {
                attempt += 1;
                assert!(attempt < 5, "open a feed store: {err}");
            }
        }
    }
}

/// A plain connection to the Redis node listening on `port`.
async fn node_conn(port: u16) -> MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("node url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to the redis node on port {port}: {e}"))
}

impl Env {
    pub async fn start() -> Env {
        let redis = TestRedis::start();
        let target = RedisTarget::parse(&redis.url()).expect("redis url");
        let store = open_store(&target).await;
        Env {
            redis,
            target,
            store,
        }
    }

    /// True when the suite runs on a Redis Cluster.
    pub fn on_cluster(&self) -> bool {
        self.redis.is_cluster()
    }

    /// A connection for commands on keys (routed by slot on a cluster).
    /// Commands without keys go to a chosen node: [`Env::hub_node`] or
    /// [`Env::nodes`].
    pub async fn conn(&self) -> RedisConn {
        self.target.connect().await.expect("connect to redis")
    }

    /// A connection to the node the gateways' hubs subscribe on: the server,
    /// or the first node of the cluster (the first of the `--redis` list that
    /// answers). Pub/sub state (`PUBSUB NUMSUB`, `CLIENT KILL TYPE pubsub`)
    /// is per node, so it is asked of this one.
    pub async fn hub_node(&self) -> MultiplexedConnection {
        node_conn(self.redis.port()).await
    }

    /// A connection to every node (every primary of a cluster; the server on
    /// one Redis), for commands that must reach all of them.
    pub async fn nodes(&self) -> Vec<MultiplexedConnection> {
        let mut nodes = Vec::new();
        for port in self.redis.ports() {
            nodes.push(node_conn(port).await);
        }
        nodes
    }

    /// Runs `cmd` on every node (see [`Env::nodes`]).
    pub async fn on_every_node(&self, cmd: &redis::Cmd) {
        for mut node in self.nodes().await {
            let _: redis::Value = cmd
                .query_async(&mut node)
                .await
                .unwrap_or_else(|e| panic!("{cmd:?} on a node: {e}"));
        }
    }

    /// Another feed store on its own connection (for concurrent writers).
    pub async fn other_store(&self) -> FeedStore {
        open_store(&self.target).await
    }

    /// The arguments a gateway on this Redis starts with: `extra`, after the
    /// job queue on a cluster (whose keys need a hash tag: `{changes}`).
    pub fn gateway_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = Vec::new();
        if self.on_cluster() {
            args.push("--queue".to_owned());
            args.push(shard("changes"));
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// Starts a gateway on this Redis without waiting for its hub (see
    /// [`Env::gateway`]).
    pub fn spawn_gateway(&self, extra: &[&str]) -> ThoonkServer {
        let args = self.gateway_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ThoonkServer::start(server_bin(), &self.redis.url(), &args)
    }

    /// Starts a gateway on this Redis (open access unless `extra` has
    /// `--config`) and waits until its hub listens to Redis pub/sub, so no
    /// notice published afterwards can be missed for lack of a subscriber.
    pub async fn gateway(&self, extra: &[&str]) -> ThoonkServer {
        let before = self.hub_subscribers().await;
        let server = self.spawn_gateway(extra);
        self.wait_for_hubs(before + 1).await;
        server
    }

    /// How many connections are subscribed to `newfeed` on the hub node:
    /// one per gateway hub (the hub subscribes to it after the change
    /// channels).
    pub async fn hub_subscribers(&self) -> usize {
        let (_, n): (String, usize) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("newfeed")
            .query_async(&mut self.hub_node().await)
            .await
            .expect("PUBSUB NUMSUB");
        n
    }

    /// Waits until `n` gateway hubs are subscribed.
    pub async fn wait_for_hubs(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.hub_subscribers().await < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} gateway hub(s) did not subscribe to redis within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Feeds that mark a point in the hubs' stream of Redis messages: one on
    /// every node (one on one Redis), named `{prefix}:{mN}` with a hash tag
    /// each (so readable wherever `prefix:…` is). A hub hears one node's
    /// messages in the order they were published there, but a cluster
    /// forwards different nodes' messages in no common order: a change of
    /// one feed only tells that the hub has passed what was published on
    /// that feed's node. See [`Env::pass_markers`].
    pub async fn marker_feeds(&self, prefix: &str) -> Vec<FeedName> {
        let mut markers = Vec::new();
        let mut tag = 0;
        for mut node in self.nodes().await {
            loop {
                let marker = FeedName::new(format!("{prefix}:{{m{tag}}}")).expect("marker name");
                tag += 1;
                // A cluster node answers MOVED for a key of a slot it does not serve.
                let served: redis::RedisResult<i64> = redis::cmd("EXISTS")
                    .arg(marker.as_str())
                    .query_async(&mut node)
                    .await;
                if served.is_ok() {
                    markers.push(marker);
                    break;
                }
            }
        }
        markers
    }

    /// Subscribes `client` to each of `markers` and reads their first state.
    pub async fn follow_markers(&self, client: &mut WsClient, markers: &[FeedName]) {
        for marker in markers {
            let rev = self.store.snapshot(marker).await.expect("snapshot").rev;
            client.subscribe(marker.as_str()).await;
            client.until_rev(marker, rev).await;
        }
    }

    /// Publishes a change to each of `markers` (which `client` follows) and
    /// reads until `client` has every one: each notice and announcement
    /// published before, on any node, has then been handled by the hub and
    /// by the client's session, and any frame it caused is in the log.
    pub async fn pass_markers(&self, client: &mut WsClient, markers: &[FeedName]) {
        for marker in markers {
            let applied = self
                .store
                .publish(marker, Some(&id("mark")), &json!("mark"), None)
                .await
                .expect("publish a marker");
            client.until_rev(marker, applied.rev).await;
        }
    }

    /// Publishes `count` items `{prefix}{i}` (i from `first`) one after the other.
    pub async fn publish_many(&self, feed: &FeedName, prefix: &str, first: usize, count: usize) {
        for i in first..first + count {
            self.store
                .publish(
                    feed,
                    Some(&id(&format!("{prefix}{i}"))),
                    &json!({ "n": i }),
                    None,
                )
                .await
                .expect("publish");
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
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("thoonk-gateway-config-{}-{n}", std::process::id()));
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

/// What a client mirrors of one feed, built only from the frames it received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedMirror {
    pub epoch: Epoch,
    pub rev: Rev,
    pub items: Vec<Item>,
    /// Every change applied since the last snapshot, in the order applied.
    pub events: Vec<FeedEvent>,
    /// Snapshots taken, in order, as (epoch, rev).
    pub snapshots: Vec<(Epoch, Rev)>,
}

impl FeedMirror {
    fn apply(&mut self, feed: &FeedName, epoch: Epoch, event: &FeedEvent) {
        // A snapshot of a feed that did not exist yet reads (0, 0); its first
        // change may then come under any epoch.
        let fresh = self.epoch == 0 && self.rev == 0;
        assert!(
            epoch == self.epoch || fresh,
            "{feed}: change of epoch {epoch} while mirroring epoch {} (rev {}) without a snapshot",
            self.epoch,
            self.rev
        );
        assert_eq!(
            event.rev,
            self.rev + 1,
            "{feed}: revision {} arrived after {} (epoch {epoch}): a gap or a repeat",
            event.rev,
            self.rev
        );
        self.epoch = epoch;
        self.rev = event.rev;
        let change = &event.change;
        let at = self.items.iter().position(|i| i.id == change.id);
        match change.op {
            ChangeOp::Publish | ChangeOp::Edit => {
                let item = Item {
                    id: change.id.clone(),
                    item: change.item.clone().unwrap_or(Value::Null),
                    rev: event.rev,
                };
                match (at, &change.position) {
                    (Some(i), None) => self.items[i] = item,
                    (Some(i), Some(position)) => {
                        self.items.remove(i);
                        self.place(item, position);
                    }
                    (None, position) => {
                        self.place(item, position.as_ref().unwrap_or(&Position::End))
                    }
                }
            }
            ChangeOp::Retract => {
                if let Some(i) = at {
                    self.items.remove(i);
                }
            }
            ChangeOp::Position => {
                let i = at.unwrap_or_else(|| panic!("{feed}: move of unknown item {}", change.id));
                let mut item = self.items.remove(i);
                item.rev = event.rev;
                self.place(item, change.position.as_ref().unwrap_or(&Position::End));
            }
        }
        self.events.push(event.clone());
    }

    fn place(&mut self, item: Item, position: &Position) {
        let index = match position {
            Position::Begin => 0,
            Position::End => self.items.len(),
            Position::Before(rel) => self.index_of(rel),
            Position::After(rel) => self.index_of(rel) + 1,
        };
        self.items.insert(index, item);
    }

    fn index_of(&self, rel: &ItemId) -> usize {
        self.items
            .iter()
            .position(|i| &i.id == rel)
            .unwrap_or(self.items.len())
    }

    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|i| i.id.to_string()).collect()
    }
}

/// Every feed a client mirrors; checks each frame against what came before.
#[derive(Debug, Default)]
pub struct Mirror {
    pub feeds: BTreeMap<FeedName, FeedMirror>,
}

impl Mirror {
    /// Records that the client already mirrors `feed` at `(epoch, rev)` (sent as `known`).
    pub fn assume(&mut self, feed: &FeedName, epoch: Epoch, rev: Rev) {
        let mirror = self.feeds.entry(feed.clone()).or_default();
        mirror.epoch = epoch;
        mirror.rev = rev;
    }

    pub fn get(&self, feed: &FeedName) -> Option<&FeedMirror> {
        self.feeds.get(feed)
    }

    pub fn rev(&self, feed: &FeedName) -> Option<Rev> {
        self.feeds.get(feed).map(|m| m.rev)
    }

    pub fn apply(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::Snapshot {
                feed,
                epoch,
                rev,
                items,
            } => {
                let mirror = self.feeds.entry(feed.clone()).or_default();
                mirror.epoch = *epoch;
                mirror.rev = *rev;
                mirror.items = items.clone();
                mirror.events.clear();
                mirror.snapshots.push((*epoch, *rev));
            }
            ServerMessage::Changes {
                feed,
                epoch,
                events,
            } => {
                let mirror = self.feeds.get_mut(feed).unwrap_or_else(|| {
                    panic!("{feed}: changes before any snapshot or known state")
                });
                for event in events {
                    mirror.apply(feed, *epoch, event);
                }
            }
            ServerMessage::Event {
                feed,
                epoch,
                rev,
                change,
            } => {
                let mirror = self
                    .feeds
                    .get_mut(feed)
                    .unwrap_or_else(|| panic!("{feed}: event before any snapshot or known state"));
                let event = FeedEvent {
                    rev: *rev,
                    change: change.clone(),
                };
                mirror.apply(feed, *epoch, &event);
            }
            _ => {}
        }
    }
}

/// One received frame, or the end of the connection.
#[derive(Debug)]
pub enum Frame {
    Message(ServerMessage),
    Closed(Option<CloseFrame>),
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client of the gateway. Every message it receives is kept (as
/// text in `log`) and applied to `mirror`, which panics on any gap, repeat or
/// epoch mix-up.
pub struct WsClient {
    ws: Socket,
    pub log: Vec<String>,
    pub mirror: Mirror,
    pub closed: Option<Option<CloseFrame>>,
}

impl WsClient {
    /// Opens a WebSocket without sending anything.
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("the websocket handshake finishes")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self::wrap(ws)
    }

    /// Opens a WebSocket with a fixed TCP receive buffer of 256 KiB (no
    /// autotuning up to tens of MiB), so that the server's writes block soon
    /// after this client stops reading. (Far smaller than loopback's 64 KiB
    /// segment size would stall TCP itself.)
    pub async fn connect_small_buffer(url: &str, port: u16) -> WsClient {
        let socket = TcpSocket::new_v4().expect("tcp socket");
        socket.set_recv_buffer_size(256 * 1024).expect("SO_RCVBUF");
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("tcp connect");
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("the websocket handshake finishes")
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self::wrap(ws)
    }

    fn wrap(ws: Socket) -> WsClient {
        WsClient {
            ws,
            log: Vec::new(),
            mirror: Mirror::default(),
            closed: None,
        }
    }

    /// Connects, says hello with `token` and waits for `welcome`.
    pub async fn signed_in(url: &str, token: &str) -> WsClient {
        let mut client = Self::connect(url).await;
        client.hello(token).await;
        client
    }

    /// Sends `hello` and expects `welcome`; returns the user name.
    pub async fn hello(&mut self, token: &str) -> String {
        self.send(&ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            token: token.into(),
            client_id: format!("test-{token}"),
        })
        .await;
        match self.next().await {
            ServerMessage::Welcome {
                protocol,
                user,
                ledger_window_ms,
            } => {
                assert_eq!(protocol, PROTOCOL_VERSION);
                assert!(
                    ledger_window_ms.is_some_and(|w| w > 0),
                    "welcome names the exactly-once window: {ledger_window_ms:?}"
                );
                user
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).expect("client messages serialize");
        self.send_text(text).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.send_message(Message::text(text)).await;
    }

    /// Sends any WebSocket message (binary, say).
    pub async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.ws.send(message))
            .await
            .expect("the frame is sent")
            .expect("send a frame");
    }

    /// Sends a message that the server may refuse by closing the connection.
    pub async fn try_send_message(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Subscribes to `pattern` with no known state. The text is sent as it
    /// is: a pattern written for one Redis goes through [`shard`] first.
    pub async fn subscribe(&mut self, pattern: &str) {
        self.subscribe_known(pattern, &[]).await;
    }

    /// Subscribes to `pattern_text` (sent as it is), telling the server what
    /// the client mirrors.
    pub async fn subscribe_known(&mut self, pattern_text: &str, known: &[(&FeedName, Epoch, Rev)]) {
        for (feed, epoch, rev) in known {
            self.mirror.assume(feed, *epoch, *rev);
        }
        let known = known
            .iter()
            .map(|(feed, epoch, rev)| {
                (
                    (*feed).clone(),
                    FeedPosition {
                        epoch: *epoch,
                        rev: *rev,
                    },
                )
            })
            .collect();
        self.send(&ClientMessage::Subscribe {
            pattern: FeedPattern::new(pattern_text).expect("valid feed pattern"),
            known,
        })
        .await;
    }

    /// The next frame or the end of the connection, within [`WAIT`].
    pub async fn next_frame(&mut self) -> Frame {
        match self.try_next_frame(WAIT).await {
            Some(frame) => frame,
            None => panic!(
                "no frame within {WAIT:?}; received so far: {:#?}",
                self.tail()
            ),
        }
    }

    /// The next frame or the end of the connection; `None` when nothing
    /// comes within `wait`.
    pub async fn try_next_frame(&mut self, wait: Duration) -> Option<Frame> {
        if let Some(close) = &self.closed {
            return Some(Frame::Closed(close.clone()));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            let message = match next {
                None | Some(Err(_)) => {
                    self.closed = Some(None);
                    return Some(Frame::Closed(None));
                }
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    let parsed: ServerMessage = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("undecodable server frame ({e}): {text}"));
                    self.log.push(text.to_string());
                    self.mirror.apply(&parsed);
                    return Some(Frame::Message(parsed));
                }
                Message::Close(frame) => {
                    self.closed = Some(frame.clone());
                    return Some(Frame::Closed(frame));
                }
                Message::Binary(_) => panic!("the server sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Reads until `done(mirror)` holds; false when the connection goes
    /// quiet for [`WAIT`] (or closes) before that.
    pub async fn read_until(&mut self, mut done: impl FnMut(&Mirror) -> bool) -> bool {
        while !done(&self.mirror) {
            match self.try_next_frame(WAIT).await {
                Some(Frame::Message(_)) => {}
                Some(Frame::Closed(_)) | None => return false,
            }
        }
        true
    }

    /// The next message; panics when the connection ends.
    pub async fn next(&mut self) -> ServerMessage {
        match self.next_frame().await {
            Frame::Message(message) => message,
            Frame::Closed(frame) => panic!(
                "the connection closed ({frame:?}); received so far: {:#?}",
                self.tail()
            ),
        }
    }

    /// Reads until a message for which `pick` returns `Some`, within [`WAIT`]
    /// per frame; other messages are kept in the log and mirror.
    pub async fn until<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + STREAM_WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not received within {STREAM_WAIT:?}; received so far: {:#?}",
                self.tail()
            );
            let message = self.next().await;
            if let Some(found) = pick(&message) {
                return found;
            }
        }
    }

    /// Reads until the mirror of `feed` reaches revision `rev` (of any epoch).
    pub async fn until_rev(&mut self, feed: &FeedName, rev: Rev) -> &FeedMirror {
        let deadline = tokio::time::Instant::now() + STREAM_WAIT;
        while self.mirror.rev(feed).is_none_or(|r| r < rev) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{feed}: revision {rev} not reached; mirror at {:?}; last frames: {:#?}",
                self.mirror.rev(feed),
                self.tail()
            );
            self.next().await;
        }
        let mirror = self.mirror.get(feed).expect("mirrored");
        assert_eq!(mirror.rev, rev, "{feed}: went past revision {rev}");
        mirror
    }

    /// Sends `ping` and reads until `pong`: every frame the server sent
    /// before answering is then in the log.
    pub async fn ping(&mut self) {
        self.send(&ClientMessage::Ping).await;
        self.until("pong", |m| matches!(m, ServerMessage::Pong).then_some(()))
            .await;
    }

    /// Expects an `error` frame with `code` next (skipping nothing).
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.next().await {
            ServerMessage::Error { code: got, message } => {
                assert_eq!(got, code, "error code (message: {message})");
                message
            }
            other => panic!("expected an error {code:?}, got {other:?}"),
        }
    }

    /// Expects the server to close the connection next.
    pub async fn expect_closed(&mut self) -> Option<CloseFrame> {
        match self.next_frame().await {
            Frame::Closed(frame) => frame,
            Frame::Message(message) => panic!("expected the connection to close, got {message:?}"),
        }
    }

    /// The last frames received (each cut to 300 bytes), for failure messages.
    pub fn tail(&self) -> Vec<String> {
        let n = self.log.len();
        self.log[n.saturating_sub(20)..]
            .iter()
            .map(|frame| match frame.char_indices().nth(300) {
                Some((cut, _)) => format!("{}…", &frame[..cut]),
                None => frame.clone(),
            })
            .collect()
    }
}

/// Waits until `client` mirrors `feed` exactly as the server holds it
/// (epoch, revision and item order), reading frames meanwhile.
pub async fn until_converged(client: &mut WsClient, store: &FeedStore, feed: &FeedName) {
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    loop {
        let server = store.snapshot(feed).await.expect("snapshot");
        let ids: Vec<String> = server.items.iter().map(|i| i.id.to_string()).collect();
        let mirror = client.mirror.get(feed).map(|m| (m.epoch, m.ids()));
        if mirror == Some((server.epoch, ids.clone()))
            && client.mirror.rev(feed) == Some(server.rev)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{feed}: the client never converged: server ({}, {}) {ids:?}, client {mirror:?}",
            server.epoch,
            server.rev
        );
        let _ = client.try_next_frame(Duration::from_millis(200)).await;
    }
}

/// Upserts item `r<round>` (value `round`) into every feed of `feeds`,
/// retrying while a shard whose primary died refuses writes (until its
/// replica takes over).
pub async fn publish_round_through_failover(store: &FeedStore, feeds: &[FeedName], round: usize) {
    for feed in feeds {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Err(err) = store
            .publish(feed, Some(&id(&format!("r{round}"))), &json!(round), None)
            .await
        {
            assert!(tokio::time::Instant::now() < deadline, "{feed}: {err}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until every node of `ports` but the one at `dead` reports
/// `cluster_state:ok`: all slots are served again, by a promoted replica.
pub async fn until_failed_over(ports: &[u16], dead: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .all(|(_, &p)| thoonk_testkit::cluster_info(p).contains("cluster_state:ok"))
    {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes rounds `rounds` to every feed (through a failover) and waits
/// until `client` mirrors each feed as the server holds it.
pub async fn write_rounds_and_converge(
    store: &FeedStore,
    feeds: &[FeedName],
    client: &mut WsClient,
    rounds: std::ops::Range<usize>,
) {
    for round in rounds {
        publish_round_through_failover(store, feeds, round).await;
    }
    for feed in feeds {
        until_converged(client, store, feed).await;
    }
}
