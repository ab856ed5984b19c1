//! Processes: the `thoonk-server` binary, free ports, waiting for a
//! process to be ready, stopping it, and `serve` and `work` processes.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace's `thoonk-server` binary, built once per test process (a
/// no-op when it is up to date). Tests of crates other than the server's do
/// not get `CARGO_BIN_EXE_thoonk-server`, so it is found in the target folder
/// (`CARGO_TARGET_DIR` when set).
pub fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_artifact(
            "thoonk-server",
            &["--bin", "thoonk-server"],
            "thoonk-server",
        )
    })
}

/// Runs `cargo build --quiet -p <package> <what>` in the workspace (a no-op
/// when it is up to date) and returns `debug/<artifact>` of the target
/// folder (`CARGO_TARGET_DIR` when set): for binaries and examples a test
/// needs that `cargo test` does not build for it.
pub fn workspace_artifact(package: &str, what: &[&str], artifact: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lies in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package])
        .args(what)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .status()
        .unwrap_or_else(|e| panic!("run cargo build -p {package}: {e}"));
    assert!(status.success(), "cargo build -p {package} {what:?} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                root.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| root.join("target"));
    let built = target.join("debug").join(artifact);
    assert!(built.exists(), "{} was not built", built.display());
    built
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago, and that this
/// process never handed out before: a test that kills a server and starts it
/// again on its port must not find another test's server there (tests of one
/// binary run in parallel threads, and the OS may offer a just-freed port).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port on 127.0.0.1")
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// Polls `ready` every 20 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not become ready within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a process: SIGTERM, then SIGKILL if it is still running after 5 s.
pub fn stop(child: &mut Child) {
    // SIGTERM first so redis can flush; then make sure it is gone.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The access arguments a test's `serve` or `work` process needs besides
/// `extra`: none when `extra` gives rules (`--config`), else `--allow-all`
/// (a development setup: every user may read and write every feed; the
/// server refuses to start with neither).
pub fn access_args(extra: &[&str]) -> &'static [&'static str] {
    if extra.contains(&"--config") {
        &[]
    } else {
        &["--allow-all"]
    }
}

/// Forwards a child's stderr, line by line, to this process's stderr under
/// `[tag]`, so that a failing test shows the server's log.
pub fn forward_log(child: &mut Child, tag: String) {
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
            }
        });
    }
}

/// A `thoonk-server` process, `serve` (a gateway, on a free port) or
/// `work`, stopped when dropped.
pub struct ThoonkServer {
    child: Option<Child>,
    port: u16,
    tag: String,
}

impl ThoonkServer {
    /// Starts `bin serve` against `redis_url` with extra arguments and waits
    /// until it accepts TCP connections. Without `--config` in `extra` it
    /// runs a development setup ([`access_args`]).
    pub fn start(bin: &Path, redis_url: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let server = Self::spawn(bin, "serve", &["--listen", &listen], redis_url, extra, port);
        wait_until("thoonk-server serve", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    /// Like [`ThoonkServer::start`], and waits until the gateway's hub
    /// listens to pub/sub on the Redis at `hub_port` (one more
    /// [`hub_subscribers`] than before), so that no notice published
    /// afterwards can be missed for lack of a subscriber. `hub_port` is the
    /// Redis itself even when `redis_url` leads through a proxy.
    pub async fn start_with_hub(
        bin: &Path,
        redis_url: &str,
        hub_port: u16,
        extra: &[&str],
    ) -> Self {
        let before = hub_subscribers(hub_port);
        let server = Self::start(bin, redis_url, extra);
        crate::eventually("the gateway's hub subscribes", || async {
            (hub_subscribers(hub_port) > before).then_some(())
        })
        .await;
        server
    }

    /// Starts `bin work` (workers of the job queue) against `redis_url` with
    /// extra arguments; without `--config` in `extra`, `--allow-all`.
    pub fn worker(bin: &Path, redis_url: &str, extra: &[&str]) -> Self {
        Self::spawn(bin, "work", &[], redis_url, extra, 0)
    }

    fn spawn(
        bin: &Path,
        command: &str,
        args: &[&str],
        redis_url: &str,
        extra: &[&str],
        port: u16,
    ) -> Self {
        let mut child = Command::new(bin)
            .arg(command)
            .args(args)
            .args(["--redis", redis_url])
            .args(access_args(extra))
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {command}: {e}", bin.display()));
        let tag = match port {
            0 => format!("thoonk-server work:{}", child.id()),
            port => format!("thoonk-server:{port}"),
        };
        forward_log(&mut child, tag.clone());
        Self {
            child: Some(child),
            port,
            tag,
        }
    }

    /// The port it listens on (0 for a `work` process).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The tag its log lines carry.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Its WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ThoonkServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

/// How many connections of the Redis at `port` are subscribed to `newfeed`:
/// one per gateway hub (0 when it does not answer).
pub fn hub_subscribers(port: u16) -> usize {
    // RESP: `*2\r\n$7\r\nnewfeed\r\n:<n>\r\n`.
    let reply = crate::redis::command(port, &["PUBSUB", "NUMSUB", "newfeed"]);
    reply
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
