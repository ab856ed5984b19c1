//! Shared helpers of the interop tests: a real Redis (or Redis Cluster, with
//! `THOONK_TEST_REDIS=cluster`: thoonk.py then uses redis-py's cluster client), real thoonk.py
//! processes (tests/interop/driver.py in the venv scripts/setup makes), real
//! `thoonk-server` processes and the protocol test client (`thoonk-testkit`),
//! and change logs replayed with the reference mirror.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use thoonk_protocol::{ChangeOp, FeedEvent, FeedName, ItemId};
use thoonk_server::feeds::FeedStore;
use thoonk_testkit::shard;
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

#[path = "../redis_env/mod.rs"]
mod redis_env;
#[allow(unused_imports)]
pub use redis_env::Env;

impl Env {
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

#[allow(unused_imports)]
pub use thoonk_testkit::{ReceivedFeed, WsClient};

/// A client of a gateway (open access: any token) as `client_id`, for
/// which any `error` frame fails the test; it checks, frame by frame, that
/// every feed's revisions arrive dense, in order and once.
pub async fn client(url: &str, client_id: &str) -> WsClient {
    let mut client = WsClient::signed_in_as(url, "tester", client_id).await;
    client.errors_fail = true;
    client
}

/// Waits until `n` connections listen to `newfeed`: one per gateway hub (the
/// adopter listens with a pattern; it sweeps every feed once subscribed, so
/// nothing made before that escapes it).
pub async fn wait_for_newfeed_listeners(env: &Env, n: usize) {
    // Each subscriber listens on one node of a cluster.
    thoonk_testkit::eventually(&format!("{n} newfeed listeners subscribe"), || async {
        let count: usize = env
            .redis
            .ports()
            .into_iter()
            .map(thoonk_testkit::hub_subscribers)
            .sum();
        (count >= n).then_some(())
    })
    .await;
}

/// Starts a gateway (`thoonk-server serve`) on the env's Redis, with its
/// job queue named for the target.
pub fn gateway(env: &Env, extra: &[&str]) -> thoonk_testkit::ThoonkServer {
    let args = env.gateway_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    thoonk_testkit::ThoonkServer::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_thoonk-server")),
        &env.url(),
        &args,
    )
}
