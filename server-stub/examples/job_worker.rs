//! A job worker process for the job layer's process tests: the standard
//! handlers plus actions that hang, fail or panic on purpose, so that tests
//! can kill a worker mid-job (`kill -9`) and watch the queue recover. It
//! runs without access rules (every user may write every feed): a test
//! fixture, not a worker to deploy (`thoonk-server work --config FILE` is).
//!
//! `cargo run -p thoonk-server --example job_worker -- --redis URL [--hang-after-apply] [work options]`

use std::sync::Arc;

use clap::Parser;
use serde::Deserialize;
use serde_json::Value as Json;
use thoonk_protocol::{ErrorCode, FeedName, ItemId};
use thoonk_server::feeds::FeedType;
use thoonk_server::gateway::OpenAccess;
use thoonk_server::jobs::cli::WorkArgs;
use thoonk_server::jobs::{
    run_workers, FeedWrite, HandlerError, Handlers, JobContext, Plan, WriteKind,
};

#[derive(Parser)]
struct Args {
    /// Redis URL.
    #[arg(long)]
    redis: String,
    /// After applying a job's writes on its first attempt, hang instead of finishing it.
    #[arg(long)]
    hang_after_apply: bool,
    #[command(flatten)]
    work: WorkArgs,
}

/// `{"feed", "id", "item", "fail"}`: publish `item` as `id` in `feed`.
#[derive(Deserialize)]
struct TestArgs {
    feed: String,
    id: String,
    item: Json,
    #[serde(default)]
    fail: bool,
}

fn plan(payload: Json) -> Result<(TestArgs, Plan), HandlerError> {
    let args: TestArgs = serde_json::from_value(payload)
        .map_err(|e| HandlerError::rejected(ErrorCode::BadRequest, e.to_string()))?;
    let bad = |e: thoonk_protocol::NameError| {
        HandlerError::rejected(ErrorCode::BadRequest, e.to_string())
    };
    let write = FeedWrite {
        feed: FeedName::new(args.feed.as_str()).map_err(bad)?,
        id: ItemId::new(args.id.as_str()).map_err(bad)?,
        kind: WriteKind::Upsert {
            item: args.item.clone(),
            position: None,
        },
        base: None,
        guard: None,
        create: Some(FeedType::Feed.into()),
    };
    Ok((args, Plan::one(write)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = thoonk_server::redis_target::RedisTarget::parse(&args.redis)?;
    let mut handlers = Handlers::with_demo_actions();
    // Hangs on the first attempt (until the process is killed), publishes on later ones.
    handlers.register(
        "hang_first_attempt",
        |ctx: JobContext, payload| async move {
            if ctx.failures == 0 {
                std::future::pending::<()>().await;
            }
            Ok(plan(payload)?.1)
        },
    );
    // Fails while the payload says so (an administrator edits it and retries).
    handlers.register("fail_while", |_ctx: JobContext, payload| async move {
        let (args, plan) = plan(payload)?;
        if args.fail {
            return Err(HandlerError::Failed("the payload asks to fail".into()));
        }
        Ok(plan)
    });
    handlers.register("panic", |_ctx: JobContext, _payload| async move {
        if true {
            panic!("this handler always panics");
        }
        Ok(Plan::default())
    });
    if args.hang_after_apply {
        handlers.after_apply(|ctx: JobContext, _| async move {
            if ctx.failures == 0 {
                std::future::pending::<()>().await;
            }
        });
    }
    let [queue] = <[String; 1]>::try_from(args.work.queue)
        .map_err(|queues| anyhow::anyhow!("this worker works one queue, not {queues:?}"))?;
    run_workers(
        client,
        queue,
        args.work.settings.settings(),
        handlers,
        Arc::new(OpenAccess),
        args.work.concurrency,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    Ok(())
}
