//! Admin commands on job queues (`thoonk-server job …`) and the worker
//! command (`thoonk-server work`). Each admin command prints one JSON value.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use thoonk_protocol::{ChangeId, ChangeRequest};

use super::error::JobError;
use super::handlers::Handlers;
use super::payload::{JobPayload, Priority};
use super::queue::{JobQueue, Submitted};
use super::settings::QueueSettings;
use super::worker::run_workers;
use crate::feeds::FeedStore;
use crate::gateway::access::AccessRules;
use crate::interop::run_adopter;
use crate::redis_target::RedisTarget;

/// A job admin command: investigate a stalled job, edit it, retry it.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum JobCommand {
    /// Every unfinished job: available (next first), claimed, stalled, orphaned.
    List {
        /// The queue.
        queue: String,
    },
    /// The stalled jobs (dead letters) with their last errors.
    Stalled {
        /// The queue.
        queue: String,
    },
    /// One job: state, payload, failures, last error, and its ledger record.
    Show {
        /// The queue.
        queue: String,
        /// The job id (the change id).
        id: String,
    },
    /// Put a stalled job back on the queue with a fresh failure count.
    Retry {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// Remove a job wherever it is; a waiting submitter gets a rejected outcome.
    Retract {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
    },
    /// The stored outcome and ledger record of a change id.
    Result {
        /// The queue.
        queue: String,
        /// The job id (the change id).
        id: String,
    },
    /// Replace the payload of an available or stalled job (JSON, see docs/JOBS.md).
    Edit {
        /// The queue.
        queue: String,
        /// The job id.
        id: String,
        /// The new payload.
        payload: String,
    },
    /// Put a change (a JSON change request `{"id", "op", "base"}`) as a job for a user.
    Put {
        /// The queue (created when missing).
        queue: String,
        /// The user the change is made for.
        #[arg(long)]
        user: String,
        /// The change request.
        change: String,
        /// Serve it next instead of at the back of the queue.
        #[arg(long)]
        high: bool,
    },
    /// Put every claim older than the timeout back on the queue now.
    Sweep {
        /// The queue.
        queue: String,
        /// The claim timeout, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        claim_timeout_ms: u64,
        /// Failures allowed before a job stalls.
        #[arg(long, default_value_t = 3)]
        max_retries: u32,
    },
}

fn submitted(s: Submitted) -> Json {
    match s {
        Submitted::Queued => json!({"submitted": "queued"}),
        Submitted::AlreadyQueued => json!({"submitted": "already_queued"}),
        Submitted::Finished(outcome) => json!({"submitted": "finished", "outcome": outcome}),
        Submitted::Deferred => json!({"submitted": "deferred"}),
    }
}

/// Runs one admin command; returns what it prints.
pub async fn run(cmd: JobCommand, redis: impl Into<RedisTarget>) -> Result<Json, JobError> {
    let client = &redis.into();
    let defaults = QueueSettings::default;
    Ok(match cmd {
        JobCommand::List { queue } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            json!({"queue": queue, "jobs": q.list().await?})
        }
        JobCommand::Stalled { queue } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            let stalled: Vec<_> = q
                .list()
                .await?
                .into_iter()
                .filter(|j| j.state == "stalled")
                .collect();
            json!({"queue": queue, "stalled": stalled})
        }
        JobCommand::Show { queue, id } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            let job = q.show(&id).await?;
            let record = q.record(&id).await?;
            if job.is_none() && record.is_none() {
                return Err(JobError::NoSuchJob { queue, id });
            }
            json!({"queue": queue, "id": id, "job": job, "ledger": record})
        }
        JobCommand::Retry { queue, id } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            q.retry(&id).await?;
            json!({"queue": queue, "id": id, "retried": true})
        }
        JobCommand::Retract { queue, id } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            let state = q.retract(&id).await?;
            if state == "none" {
                return Err(JobError::NoSuchJob { queue, id });
            }
            json!({"queue": queue, "id": id, "retracted_from": state})
        }
        JobCommand::Result { queue, id } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            let Some(record) = q.record(&id).await? else {
                return Err(JobError::NoSuchJob { queue, id });
            };
            let outcome = q.outcome(&ChangeId(id.clone())).await?;
            json!({"queue": queue, "id": id, "outcome": outcome, "ledger": record})
        }
        JobCommand::Edit { queue, id, payload } => {
            let q = JobQueue::attach(client, &queue, defaults()).await?;
            let payload = JobPayload::parse(&payload)?;
            q.edit(&id, &payload).await?;
            json!({"queue": queue, "id": id, "edited": true})
        }
        JobCommand::Put {
            queue,
            user,
            change,
            high,
        } => {
            let q = JobQueue::open(client, &queue, defaults()).await?;
            let change: ChangeRequest =
                serde_json::from_str(&change).map_err(|e| JobError::BadPayload {
                    reason: format!("the change request: {e}"),
                })?;
            let priority = if high {
                Priority::High
            } else {
                Priority::Normal
            };
            let payload = JobPayload::new(&user, &change);
            let mut out = submitted(q.put_payload(&payload, priority).await?);
            out["queue"] = json!(queue);
            out["id"] = json!(change.id);
            out
        }
        JobCommand::Sweep {
            queue,
            claim_timeout_ms,
            max_retries,
        } => {
            let settings = QueueSettings {
                claim_timeout: Duration::from_millis(claim_timeout_ms),
                max_retries,
                ..defaults()
            };
            let q = JobQueue::attach(client, &queue, settings).await?;
            let (requeued, stalled) = q.sweep().await?;
            json!({"queue": queue, "requeued": requeued, "stalled": stalled})
        }
    })
}

/// A queue's settings as command-line options.
#[derive(clap::Args, Debug, Clone)]
pub struct QueueArgs {
    /// A job claimed longer than this goes back to the queue (milliseconds).
    #[arg(long, env = "THOONK_CLAIM_TIMEOUT_MS", default_value_t = 30_000)]
    pub claim_timeout_ms: u64,
    /// Failures allowed before a job stalls.
    #[arg(long, env = "THOONK_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// How long outcomes and the exactly-once ledger are kept (seconds; default 30 days).
    #[arg(long, env = "THOONK_JOB_RETENTION_SECS", default_value_t = 30 * 24 * 3600)]
    pub retention_secs: u64,
    /// How often an idle worker looks for jobs put without a notice (milliseconds).
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// How often to sweep for claims past their timeout (milliseconds).
    #[arg(long, default_value_t = 1000)]
    pub sweep_interval_ms: u64,
}

impl QueueArgs {
    /// The settings these options give.
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            claim_timeout: Duration::from_millis(self.claim_timeout_ms.max(1)),
            max_retries: self.max_retries,
            retention: Duration::from_secs(self.retention_secs.max(1)),
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(1)),
            sweep_interval: Duration::from_millis(self.sweep_interval_ms.max(1)),
        }
    }
}

/// Options of `thoonk-server work`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkArgs {
    /// The job queue to work, or several separated by commas (a queue per
    /// shard on a Redis Cluster); each gets `--concurrency` workers.
    #[arg(
        long,
        env = "THOONK_QUEUE",
        value_delimiter = ',',
        default_value = super::DEFAULT_QUEUE
    )]
    pub queue: Vec<String>,
    /// Jobs worked at once by this process.
    #[arg(long, env = "THOONK_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Also run the adopter here (classic Thoonk writes get revisions), for
    /// deployments whose gateways run `serve --no-adopt`.
    #[arg(long, env = "THOONK_ADOPT")]
    pub adopt: bool,
    /// The queue's settings.
    #[command(flatten)]
    pub settings: QueueArgs,
    /// Which actions the workers know.
    #[command(flatten)]
    pub actions: ActionArgs,
}

/// The named actions a `serve` or `work` process's workers know besides the
/// generic feed operations.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ActionArgs {
    /// Also register the demo's task actions (`create_task`, …,
    /// `delegate_task`; docs/JOBS.md), which the demo page uses. Off by
    /// default: a deployment registers its own actions in its own workers.
    #[arg(long, env = "THOONK_DEMO_ACTIONS")]
    pub demo_actions: bool,
}

impl ActionArgs {
    /// The handlers these arguments ask for.
    pub fn handlers(&self) -> Handlers {
        if self.demo_actions {
            Handlers::with_demo_actions()
        } else {
            Handlers::new()
        }
    }
}

/// `concurrency` workers on each of `queues` (`serve --workers`, `work`),
/// each set ending when `stop` turns true.
pub fn workers_of_queues(
    client: &RedisTarget,
    queues: &[String],
    settings: &QueueSettings,
    actions: &ActionArgs,
    access: &Arc<dyn AccessRules>,
    concurrency: usize,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<impl std::future::Future<Output = Result<(), JobError>>> {
    queues
        .iter()
        .map(|queue| {
            let mut until = stop.clone();
            run_workers(
                client.clone(),
                queue.clone(),
                settings.clone(),
                actions.handlers(),
                access.clone(),
                concurrency,
                async move {
                    let _ = until.wait_for(|stop| *stop).await;
                },
            )
        })
        .collect()
}

/// Runs the workers (with the demo's actions when `--demo-actions`) until
/// Ctrl-C or SIGTERM.
pub async fn work(
    args: WorkArgs,
    client: RedisTarget,
    access: Arc<dyn AccessRules>,
) -> Result<(), JobError> {
    if args.adopt {
        let instance = format!("thoonk-worker-{}", std::process::id());
        let store = FeedStore::open(&client, &instance).await?;
        let adopter = run_adopter(client.clone(), store, std::future::pending());
        tokio::spawn(async move {
            if let Err(err) = adopter.await {
                tracing::error!(%err, "the adopter stopped");
            }
        });
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = workers_of_queues(
        &client,
        &args.queue,
        &args.settings.settings(),
        &args.actions,
        &access,
        args.concurrency,
        &stopped,
    );
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        let _ = stop.send(true);
    });
    futures::future::try_join_all(workers).await.map(drop)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// The commands as the server binary nests them.
    #[derive(Parser)]
    struct Cli {
        #[arg(long, global = true, default_value = "redis://127.0.0.1:6379/")]
        redis: String,
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        #[command(subcommand)]
        Job(JobCommand),
        Work(WorkArgs),
    }

    #[test]
    fn the_commands_parse_as_documented() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["thoonk-server", "job", "retry", "changes", "c1:7"]);
        assert!(matches!(
            cli.command,
            Command::Job(JobCommand::Retry { ref queue, ref id }) if queue == "changes" && id == "c1:7"
        ));
        let cli = Cli::parse_from([
            "thoonk-server",
            "--redis",
            "redis://h:1/",
            "work",
            "--queue",
            "{q:a},{q:b}",
            "--claim-timeout-ms",
            "250",
            "--max-retries",
            "0",
        ]);
        let Command::Work(args) = cli.command else {
            panic!("expected work");
        };
        let settings = args.settings.settings();
        assert_eq!(args.queue, ["{q:a}", "{q:b}"]);
        assert_eq!(settings.claim_timeout, Duration::from_millis(250));
        assert_eq!(settings.max_retries, 0);
        assert_eq!(settings.retention, Duration::from_secs(30 * 24 * 3600));
        let cli = Cli::parse_from(["thoonk-server", "work"]);
        let Command::Work(args) = cli.command else {
            panic!("expected work");
        };
        assert_eq!(args.queue, [crate::jobs::DEFAULT_QUEUE]);
        assert_eq!(args.settings.settings(), QueueSettings::default());
    }
}
