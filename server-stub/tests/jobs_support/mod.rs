//! Helpers shared by the job tests: a real Redis (or Redis Cluster, with
//! `THOONK_TEST_REDIS=cluster`), worker processes, in-process workers, polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use thoonk_protocol::{ChangeId, ChangeRequest, FeedName, Operation, Outcome};
use thoonk_server::feeds::FeedStore;
use thoonk_server::gateway::AccessRules;
use thoonk_server::jobs::{run_workers, Handlers, JobQueue, QueueSettings};
use thoonk_server::redis_target::RedisTarget;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "../redis_env/mod.rs"]
mod redis_env;
#[allow(unused_imports)]
pub use redis_env::Env;

/// The name the suites give the queue or feed called `s` on their target:
/// with a hash tag on a cluster (see [`thoonk_testkit::shard`]).
pub fn shard(s: &str) -> String {
    thoonk_testkit::shard(s)
}

/// The queue every suite works: `changes`, with a hash tag on a cluster.
pub fn queue_name() -> String {
    shard("changes")
}

/// Upper bound for any state a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Settings for tests that are not about claim timeouts: no claim times
/// out, even on a loaded machine, and idle workers notice jobs quickly.
pub fn steady_settings(max_retries: u32) -> QueueSettings {
    QueueSettings {
        claim_timeout: Duration::from_secs(10),
        ..fast_settings(max_retries)
    }
}

/// Settings with short timeouts, so that recovery tests stay fast.
pub fn fast_settings(max_retries: u32) -> QueueSettings {
    QueueSettings {
        claim_timeout: Duration::from_millis(300),
        max_retries,
        retention: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(50),
        sweep_interval: Duration::from_millis(50),
    }
}

#[allow(unused_imports)]
pub use thoonk_testkit::eventually;

/// Waits for the stored outcome of `id`. A failed read counts as "not yet"
/// (a panicking handler's backtrace can hold up a one-thread test runtime
/// past the connection's response timeout).
pub async fn outcome_of(queue: &JobQueue, id: &ChangeId) -> Outcome {
    eventually(&format!("outcome of {}", id.0), || async {
        queue.outcome(id).await.ok().flatten()
    })
    .await
}

/// The feed called `name` on the target (with a hash tag on a cluster, see [`shard`]).
pub fn feed(name: &str) -> FeedName {
    FeedName::new(shard(name)).expect("a valid feed name")
}

pub fn change(id: &str, op: Operation) -> ChangeRequest {
    ChangeRequest {
        id: ChangeId(id.to_owned()),
        op,
        base: Default::default(),
    }
}

/// How many change-log entries of `feed` the job `id` caused.
pub async fn applied_count(store: &FeedStore, feed: &FeedName, id: &str) -> usize {
    store
        .history(feed, 0, 100_000)
        .await
        .expect("read the change log")
        .events
        .iter()
        .filter(|e| e.change.job.as_deref() == Some(id))
        .count()
}

/// Workers running in this process until dropped.
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Starts `concurrency` workers on `queue` of the Redis at `url` (a
    /// `redis://` or `redis+cluster://` URL).
    pub fn start(
        url: &str,
        queue: &str,
        settings: QueueSettings,
        handlers: Handlers,
        access: Arc<dyn AccessRules>,
        concurrency: usize,
    ) -> Self {
        let target = RedisTarget::parse(url).expect("a redis URL");
        let (stop, stopped) = oneshot::channel();
        let queue = queue.to_owned();
        let task = tokio::spawn(async move {
            run_workers(
                target,
                queue,
                settings,
                handlers,
                access,
                concurrency,
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("run the workers");
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the workers and waits until they are done.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the workers end cleanly");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The example worker binary, built once for this test run: `cargo test`
/// builds examples, but `cargo test --test NAME` does not.
fn worker_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        thoonk_testkit::workspace_artifact(
            "thoonk-server",
            &["--example", "job_worker"],
            "examples/job_worker",
        )
    })
}

/// A worker process (`examples/job_worker.rs`), killed with SIGKILL when dropped.
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts the example worker on `queue` of the Redis at `url` (the
    /// test Redis's URL: `redis+cluster://…` on a cluster).
    pub fn start(url: &str, queue: &str, settings: &QueueSettings, extra: &[&str]) -> Self {
        let child = Command::new(worker_binary())
            .args(["--redis", url, "--queue", queue, "--concurrency", "2"])
            .args([
                "--claim-timeout-ms",
                &settings.claim_timeout.as_millis().to_string(),
            ])
            .args(["--max-retries", &settings.max_retries.to_string()])
            .args([
                "--retention-secs",
                &settings.retention.as_secs().to_string(),
            ])
            .args([
                "--poll-interval-ms",
                &settings.poll_interval.as_millis().to_string(),
            ])
            .args([
                "--sweep-interval-ms",
                &settings.sweep_interval.as_millis().to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the job_worker example");
        Self { child }
    }

    /// `kill -9`: the process dies at once, wherever it is.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
