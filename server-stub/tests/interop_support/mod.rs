//! Shared helpers of the interop tests: a real Redis (or Redis Cluster, with
//! `THOONK_TEST_REDIS=cluster`: thoonk.py then uses redis-py's cluster client), real thoonk.py
//! processes (tests/interop/driver.py in the venv scripts/setup makes), real
//! `thoonk-server` processes, and a replay of change logs.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use thoonk_protocol::{ChangeOp, FeedEvent, FeedName, ItemId, Position};
use thoonk_server::feeds::FeedStore;
use thoonk_server::redis_target::{RedisConn, RedisTarget};
use thoonk_testkit::{shard, TestRedis};
use tokio::sync::mpsc;

/// Upper bound for one awaited line, frame or state: a failure condition
/// (the thing never happened), not a measured speed.
pub const WAIT: Duration = Duration::from_secs(15);

/// The feed (or queue) called `s` on the target: with a hash tag on a
/// cluster (see [`thoonk_testkit::shard`]).
pub fn name(s: &str) -> FeedName {
    FeedName::new(shard(s)).expect("valid feed name")
}

pub fn id(s: &str) -> ItemId {
    ItemId::new(s).expect("valid item id")
}

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server-stub has a parent")
        .to_path_buf()
}

/// The Python of the interop venv; fails the test when scripts/setup has not
/// installed it.
pub fn python() -> PathBuf {
    let python = root().join(".venv-interop/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs thoonk.py for the interop tests)",
        python.display()
    );
    python
}

/// A Redis of its own with a feed store on it.
pub struct Env {
    pub redis: TestRedis,
    pub target: RedisTarget,
    pub store: FeedStore,
}

impl Env {
    pub async fn start() -> Env {
        let redis = TestRedis::start();
        let target = RedisTarget::parse(&redis.url()).expect("redis url");
        let store = FeedStore::open(&target, "interop-tests")
            .await
            .expect("open the feed store");
        Env {
            redis,
            target,
            store,
        }
    }

    /// A connection routed by slot on a cluster.
    pub async fn conn(&self) -> RedisConn {
        self.target.connect().await.expect("connect to redis")
    }

    /// A plain connection to each node (one on a single Redis), for
    /// commands without keys such as `INFO` or `PUBSUB`.
    pub async fn node_conns(&self) -> Vec<redis::aio::MultiplexedConnection> {
        let mut conns = Vec::new();
        for port in self.redis.ports() {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
            conns.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect to a node"),
            );
        }
        conns
    }

    /// A thoonk.py process on this Redis.
    pub async fn py(&self, listen: bool) -> Py {
        Py::start(self.redis.port(), self.redis.is_cluster(), listen).await
    }
}

/// A running tests/interop/driver.py: thoonk.py commands over stdin/stdout.
pub struct Py {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    events: VecDeque<Value>,
}

impl Py {
    /// Starts the driver on the Redis at `port` (a node of a cluster when
    /// `cluster`).
    pub async fn start(port: u16, cluster: bool, listen: bool) -> Py {
        let mut command = Command::new(python());
        command
            .arg(root().join("tests/interop/driver.py"))
            .env("THOONK_REDIS_PORT", port.to_string())
            .env("THOONK_REDIS_HOST", "127.0.0.1")
            .env("THOONK_REDIS_CLUSTER", if cluster { "1" } else { "0" })
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if listen {
            command.arg("--listen");
        }
        let mut child = command.spawn().expect("start the thoonk.py driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("driver wrote {line:?}: {e}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let mut py = Py {
            child,
            stdin,
            lines,
            events: VecDeque::new(),
        };
        let ready = py.line().await;
        assert_eq!(ready, json!({"ready": true}), "driver start-up");
        py
    }

    async fn line(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("a line from the thoonk.py driver in time")
            .expect("the thoonk.py driver exited")
    }

    /// Runs one command; returns its reply (events heard meanwhile are kept).
    /// Runs `command`; its `feed` or `queue` name is the one [`name`] gives.
    pub async fn call(&mut self, mut command: Value) -> Value {
        for field in ["feed", "queue"] {
            if let Some(Value::String(feed)) = command.get_mut(field) {
                *feed = shard(feed);
            }
        }
        let mut text = command.to_string();
        text.push('\n');
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("write to the thoonk.py driver");
        loop {
            let line = self.line().await;
            if let Some(reply) = line.get("reply") {
                return reply.clone();
            }
            if let Some(error) = line.get("error") {
                panic!("thoonk.py failed on {command}: {error}");
            }
            self.events.push_back(line);
        }
    }

    /// The next event thoonk.py's listener heard.
    pub async fn event(&mut self) -> Value {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        let line = self.line().await;
        assert!(
            line.get("event").is_some(),
            "unexpected line from the driver while waiting for an event: {line}"
        );
        line
    }

    /// Events until one for which `pick` is true (returned); the others are dropped.
    pub async fn event_where(&mut self, mut pick: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let event = self.event().await;
            if pick(&event) {
                return event;
            }
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A feed as a reader of its change log sees it: ids in order and values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replayed {
    pub items: Vec<(String, Value)>,
}

impl Replayed {
    /// Applies change-log events in order, as a client would.
    pub fn apply(&mut self, events: &[FeedEvent]) {
        for event in events {
            let c = &event.change;
            let id = c.id.as_str().to_owned();
            let at = self.items.iter().position(|(i, _)| *i == id);
            match c.op {
                ChangeOp::Retract => {
                    if let Some(at) = at {
                        self.items.remove(at);
                    }
                }
                ChangeOp::Edit => {
                    let value = c.item.clone().expect("an edit carries the item");
                    match (at, &c.position) {
                        (Some(at), None) => self.items[at].1 = value,
                        (at, position) => {
                            if let Some(at) = at {
                                self.items.remove(at);
                            }
                            self.place(id, value, position.as_ref());
                        }
                    }
                }
                ChangeOp::Publish => {
                    if let Some(at) = at {
                        self.items.remove(at);
                    }
                    let value = c.item.clone().expect("a publish carries the item");
                    self.place(id, value, c.position.as_ref());
                }
                ChangeOp::Position => {
                    let at = at.expect("a moved item is known");
                    let (_, value) = self.items.remove(at);
                    self.place(id, value, c.position.as_ref());
                }
            }
        }
    }

    fn place(&mut self, id: String, value: Value, position: Option<&Position>) {
        let index = match position {
            None | Some(Position::End) => self.items.len(),
            Some(Position::Begin) => 0,
            Some(Position::Before(rel)) => self.index(rel.as_str()),
            Some(Position::After(rel)) => self.index(rel.as_str()) + 1,
        };
        self.items.insert(index, (id, value));
    }

    fn index(&self, rel: &str) -> usize {
        self.items
            .iter()
            .position(|(i, _)| i == rel)
            .unwrap_or_else(|| panic!("reference item {rel} is unknown to the reader"))
    }

    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|(i, _)| i.clone()).collect()
    }
}

/// The whole change log of a feed, checked dense from revision 1.
pub async fn full_log(store: &FeedStore, feed: &FeedName) -> Vec<FeedEvent> {
    let history = store.history(feed, 0, 100_000).await.expect("history");
    for (i, event) in history.events.iter().enumerate() {
        assert_eq!(event.rev, i as u64 + 1, "revisions of {feed} are dense");
    }
    assert_eq!(history.events.len() as u64, history.rev);
    history.events
}

/// The feed as its snapshot shows it.
pub async fn snapshot_items(store: &FeedStore, feed: &FeedName) -> Vec<(String, Value)> {
    store
        .snapshot(feed)
        .await
        .expect("snapshot")
        .items
        .into_iter()
        .map(|item| (item.id.as_str().to_owned(), item.item))
        .collect()
}

/// The ops of change-log events, as `"op id"` strings.
pub fn ops(events: &[FeedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let op = match e.change.op {
                ChangeOp::Publish => "publish",
                ChangeOp::Edit => "edit",
                ChangeOp::Retract => "retract",
                ChangeOp::Position => "position",
            };
            format!("{op} {}", e.change.id.as_str())
        })
        .collect()
}

/// A WebSocket client of a gateway that checks, frame by frame, that every
/// feed's revisions arrive dense, in order and once, and keeps every event.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Per feed: (epoch, last revision, events received after the snapshot).
    pub feeds: std::collections::BTreeMap<FeedName, (u64, u64, Vec<FeedEvent>)>,
    /// Outcomes received, by change id.
    pub outcomes: Vec<(String, thoonk_protocol::Outcome)>,
}

impl WsClient {
    /// Connects, says hello (open access: any token) as `client_id`.
    pub async fn connect(url: &str, client_id: &str) -> WsClient {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to the gateway");
        let mut client = WsClient {
            socket,
            feeds: Default::default(),
            outcomes: Vec::new(),
        };
        client
            .send(&thoonk_protocol::ClientMessage::Hello {
                protocol: thoonk_protocol::PROTOCOL_VERSION,
                token: "tester".into(),
                client_id: client_id.into(),
            })
            .await;
        match client.next().await {
            thoonk_protocol::ServerMessage::Welcome { .. } => client,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: &thoonk_protocol::ClientMessage) {
        use futures::SinkExt;
        let text = serde_json::to_string(message).unwrap();
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .expect("send a frame");
    }

    /// Subscribes to a feed and reads until its snapshot arrived.
    pub async fn subscribe(&mut self, feed: &FeedName) {
        self.send(&thoonk_protocol::ClientMessage::Subscribe {
            pattern: thoonk_protocol::FeedPattern::new(feed.as_str()).unwrap(),
            known: Default::default(),
        })
        .await;
        while !self.feeds.contains_key(feed) {
            self.next().await;
        }
    }

    /// The next server frame, applied to the client's state.
    pub async fn next(&mut self) -> thoonk_protocol::ServerMessage {
        use futures::StreamExt;
        use thoonk_protocol::ServerMessage;
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame from the gateway in time")
                .expect("the gateway closed the connection")
                .expect("a websocket frame");
            let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
                continue;
            };
            let message: ServerMessage = serde_json::from_str(&text).expect("a server message");
            match &message {
                ServerMessage::Snapshot {
                    feed, epoch, rev, ..
                } => {
                    self.feeds.insert(feed.clone(), (*epoch, *rev, Vec::new()));
                }
                ServerMessage::Event {
                    feed,
                    epoch,
                    rev,
                    change,
                } => self.take(
                    feed,
                    *epoch,
                    &[FeedEvent {
                        rev: *rev,
                        change: change.clone(),
                    }],
                ),
                ServerMessage::Changes {
                    feed,
                    epoch,
                    events,
                } => self.take(feed, *epoch, events),
                ServerMessage::Outcome { id, outcome } => {
                    self.outcomes.push((id.0.clone(), outcome.clone()));
                }
                ServerMessage::Error { code, message } => {
                    panic!("gateway error {code:?}: {message}")
                }
                _ => {}
            }
            return message;
        }
    }

    fn take(&mut self, feed: &FeedName, epoch: u64, events: &[FeedEvent]) {
        let state = self
            .feeds
            .get_mut(feed)
            .unwrap_or_else(|| panic!("an event of {feed} before its snapshot"));
        for event in events {
            let first_of_history = (state.0, state.1) == (0, 0);
            assert!(
                epoch == state.0 || first_of_history,
                "{feed}: event of epoch {epoch}, client at epoch {}",
                state.0
            );
            assert_eq!(
                event.rev,
                state.1 + 1,
                "{feed}: revisions arrive dense and once"
            );
            state.0 = epoch;
            state.1 = event.rev;
            state.2.push(event.clone());
        }
    }

    /// Reads frames until `feed` reached revision `rev`.
    pub async fn until_rev(&mut self, feed: &FeedName, rev: u64) {
        while self.feeds.get(feed).is_none_or(|s| s.1 < rev) {
            self.next().await;
        }
    }

    /// Reads frames until the outcome of change `id` arrived.
    pub async fn until_outcome(&mut self, id: &str) -> thoonk_protocol::Outcome {
        loop {
            if let Some((_, outcome)) = self.outcomes.iter().find(|(i, _)| i == id) {
                return outcome.clone();
            }
            self.next().await;
        }
    }
}

/// Waits until `n` connections listen to `newfeed`: one per gateway hub (the
/// adopter listens with a pattern; it sweeps every feed once subscribed, so
/// nothing made before that escapes it).
pub async fn wait_for_newfeed_listeners(env: &Env, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut count = 0;
        // Each subscriber listens on one node of a cluster.
        for mut node in env.node_conns().await {
            let (_, on_node): (String, usize) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("newfeed")
                .query_async(&mut node)
                .await
                .expect("PUBSUB NUMSUB");
            count += on_node;
        }
        if count >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} newfeed listeners did not subscribe in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a gateway (`thoonk-server serve`) on the env's Redis, with its
/// job queue named for the target.
pub fn gateway(env: &Env, extra: &[&str]) -> thoonk_testkit::ThoonkServer {
    let queue = shard("changes");
    let mut args = vec!["--queue", queue.as_str()];
    args.extend_from_slice(extra);
    thoonk_testkit::ThoonkServer::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_thoonk-server")),
        &env.redis.url(),
        &args,
    )
}
