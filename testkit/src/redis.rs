//! Redis processes: one `redis-server` (that can be killed, stopped and
//! restarted from its data), a local Redis Cluster, the target a suite runs
//! against, and the names a feed takes on it.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process::{free_port, stop, wait_until};

/// A `redis-server` process of its own, on a free port, with its data in a
/// temporary folder; it can be killed with SIGKILL, stopped, and started
/// again on the same port from the same data (its AOF).
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server (from PATH) with AOF on and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with `appendfsync` as given (`always`,
    /// `everysec`).
    pub fn start_fsync(appendfsync: &str) -> Self {
        Self::start_with(&["--appendfsync", appendfsync])
    }

    /// Like [`RedisServer::start`], with extra `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Like [`RedisServer::start_with`], on `port`.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("thoonk-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the redis data folder");
        let mut server = Self {
            child: None,
            port,
            dir,
            args: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server: is it installed (scripts/setup)?");
        self.child = Some(child);
        wait_until("redis-server", Duration::from_secs(30), || {
            command(self.port, &["PING"]) == "+PONG\r\n"
        });
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its data folder (the AOF is in `appendonlydir/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends it `signal` (a name such as `STOP` or `CONT`).
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Kills it with SIGKILL (a crash: what the AOF did not write yet is gone).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: Redis shuts down cleanly (the AOF is flushed); waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }

    /// Starts it again, killed or stopped, on the same port from its data folder.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill or stop it first");
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one command to the Redis on `port` and returns its raw RESP reply
/// (empty when it does not answer within a second). For the harness's own
/// questions (`PING`, `PUBSUB NUMSUB`); tests use a Redis client.
pub fn command(port: u16, args: &[&str]) -> String {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    if conn.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    // Replies to these commands are short and come in one segment; read
    // until the connection is quiet for a moment or closes.
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.ends_with(b"\r\n") && complete(&reply) {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// True when `reply` ends with the line that closes the replies [`command`]
/// gets: a simple string, an error or an integer (`PUBSUB NUMSUB` ends with
/// its count).
fn complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    let last = text.trim_end_matches("\r\n").rsplit("\r\n").next();
    last.is_some_and(|line| line.starts_with(['+', '-', ':']))
}

/// A local Redis Cluster: `masters` primaries owning all 16384 slots, each
/// with `replicas` replicas, built from Debian's redis-server
/// (`--cluster-enabled yes`) and `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> Self {
        Self::start_with(masters, replicas, &[])
    }

    /// Like [`RedisCluster::start`], with extra `--option value` arguments
    /// for every node.
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> Self {
        // Replicas fail over after a second of silence; a cluster without
        // them waits longer before it calls a busy node failed.
        let node_timeout = if replicas > 0 { "1000" } else { "15000" };
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    node_timeout,
                    // A replica fails over however long ago it last heard its primary.
                    "--cluster-replica-validity-factor",
                    "0",
                    // Replicas get their first copy at once, not after 5 s.
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                args.extend_from_slice(extra);
                RedisServer::start_on(free_cluster_port(), &args)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run redis-cli: is it installed (scripts/setup)?");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        wait_until("the cluster", Duration::from_secs(30), || {
            cluster
                .nodes
                .iter()
                .all(|n| cluster_info(n.port()).contains("cluster_state:ok"))
        });
        // A replica that has not finished its first sync holds nothing yet.
        wait_until("the replicas' first sync", Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let replication = info(n.port(), "replication");
                !replication.contains("role:slave") || replication.contains("master_link_status:up")
            })
        });
        cluster
    }

    /// The `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The ports of the nodes (primaries first, as `redis-cli` assigns them).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Kills node `index` with SIGKILL.
    pub fn kill9(&mut self, index: usize) {
        self.nodes[index].kill9();
    }

    /// Stops node `index` with SIGSTOP (it neither answers nor replicates)
    /// until [`RedisCluster::resume`].
    pub fn pause(&self, index: usize) {
        self.nodes[index].signal("STOP");
    }

    /// Lets a paused node go on (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.nodes[index].signal("CONT");
    }

    /// The index of a replica of the primary at `index`, as the primary
    /// sees it; asked again for up to 10 s, since a replica that finished its
    /// first sync may not yet be flagged in the primary's view of the cluster.
    pub fn replica_of(&self, index: usize) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.replica_in_view_of(index);
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn replica_in_view_of(&self, index: usize) -> Option<usize> {
        let port = self.nodes[index].port().to_string();
        let id = Command::new("redis-cli")
            .args(["-p", &port, "cluster", "myid"])
            .output()
            .ok()?;
        let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        let nodes = Command::new("redis-cli")
            .args(["-p", &port, "cluster", "nodes"])
            .output()
            .ok()?;
        // `<id> <ip:port@bus> <flags> <primary id> …` per node.
        String::from_utf8_lossy(&nodes.stdout)
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let replica =
                    fields.get(2)?.contains("slave") && fields.get(3) == Some(&id.as_str());
                let port: u16 = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                replica
                    .then(|| self.nodes.iter().position(|n| n.port() == port))
                    .flatten()
            })
    }
}

/// A port for a cluster node: free, with its cluster-bus port (port + 10000)
/// free too, both below the OS's ephemeral range (so no outgoing connection
/// holds them), and never handed out before by this process.
pub fn free_cluster_port() -> u16 {
    static NEXT: Mutex<u16> = Mutex::new(0);
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *next == 0 {
        // Processes running at once start at different places.
        *next = 20_000 + (std::process::id() % 2_000) as u16;
    }
    loop {
        let port = *next;
        *next = if port >= 22_700 { 20_000 } else { port + 1 };
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// `INFO <section>` of the node on `port` (empty when it does not answer).
pub fn info(port: u16, section: &str) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", section])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// `CLUSTER INFO` of the node on `port` (empty when it does not answer).
pub fn cluster_info(port: u16) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// The environment variable that picks the Redis the suites run against:
/// `single` (the default) or `cluster` (a local 3-primary Redis Cluster).
pub const TARGET_VAR: &str = "THOONK_TEST_REDIS";

/// True when the suites run against a Redis Cluster (`THOONK_TEST_REDIS=cluster`).
pub fn on_cluster() -> bool {
    match std::env::var(TARGET_VAR).as_deref() {
        Ok("cluster") => true,
        Ok("single") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{TARGET_VAR}={other}: use `single` or `cluster`"),
    }
}

/// The Redis a suite runs against, picked by [`on_cluster`]: one
/// `redis-server`, or a 3-primary cluster without replicas.
pub enum TestRedis {
    /// One server.
    Single(RedisServer),
    /// A local cluster.
    Cluster(RedisCluster),
}

impl TestRedis {
    /// Starts the target [`TARGET_VAR`] names.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`TestRedis::start`], with extra `--option value` arguments for
    /// every node.
    pub fn start_with(extra: &[&str]) -> Self {
        if on_cluster() {
            Self::Cluster(RedisCluster::start_with(3, 0, extra))
        } else {
            Self::Single(RedisServer::start_with(extra))
        }
    }

    /// True for a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The URL `thoonk-server --redis` and the server crate's `RedisTarget::parse` take.
    pub fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// The port of one node (the server, or the cluster's first primary):
    /// for clients that talk to one node, such as a pub/sub listener.
    pub fn port(&self) -> u16 {
        match self {
            Self::Single(server) => server.port(),
            Self::Cluster(cluster) => cluster.ports()[0],
        }
    }

    /// The ports of every node.
    pub fn ports(&self) -> Vec<u16> {
        match self {
            Self::Single(server) => vec![server.port()],
            Self::Cluster(cluster) => cluster.ports(),
        }
    }
}

/// The name a suite gives a feed on its target: unchanged on one Redis; on a
/// cluster, with the hash tag a deployment would give it, so that all keys of
/// the feed share a slot while different teams spread over the shards. The
/// segment after `team:` or `user:` is the tag (`team:{353}:notes`),
/// otherwise the first segment (`{notes}`, `{replay}:timed`). A name (or
/// pattern) that already has braces, or whose tag segment is a wildcard, is
/// left alone. The server's access rules read a `{353}` segment as `353`.
pub fn shard(name: &str) -> String {
    if !on_cluster() {
        return name.to_owned();
    }
    tag_shard_key(name)
}

/// [`shard`]'s mapping, whatever the target.
pub fn tag_shard_key(name: &str) -> String {
    if name.contains('{') {
        return name.to_owned();
    }
    let mut segments: Vec<String> = name.split(':').map(str::to_owned).collect();
    let at = match segments.first().map(String::as_str) {
        Some("team" | "user") if segments.len() > 2 => 1,
        _ => 0,
    };
    if segments[at].contains('*') {
        return name.to_owned();
    }
    segments[at] = format!("{{{}}}", segments[at]);
    segments.join(":")
}
#[cfg(test)]
mod tests {
    use super::tag_shard_key;

    #[test]
    fn shard_keys_are_the_team_the_user_or_the_first_segment() {
        assert_eq!(
            tag_shard_key("team:353:member:bob:tasks"),
            "team:{353}:member:bob:tasks"
        );
        assert_eq!(
            tag_shard_key("team:5:member:*:tasks"),
            "team:{5}:member:*:tasks"
        );
        assert_eq!(tag_shard_key("user:ann:inbox"), "user:{ann}:inbox");
        assert_eq!(tag_shard_key("notes"), "{notes}");
        assert_eq!(tag_shard_key("team:353"), "{team}:353");
        assert_eq!(tag_shard_key("replay:timed"), "{replay}:timed");
        assert_eq!(tag_shard_key("{team:1}:x"), "{team:1}:x");
        assert_eq!(tag_shard_key("*:tasks"), "*:tasks");
    }
}
