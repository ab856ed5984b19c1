//! `thoonk-server`: the gateway (`serve`) and admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};
use thoonk_server::feeds::{cli::FeedCommand, FeedStore};
use thoonk_server::gateway::{
    AccessRules, ClientOwners, ConfigRules, Fanout, Hub, OpenAccess, RestartWatch, Shared,
    TagSubscriptions,
};
use thoonk_server::http::{router, StaticDir, WebArgs};
use thoonk_server::jobs::cli::{workers_of_queues, ActionArgs, JobCommand, QueueArgs, WorkArgs};
use thoonk_server::jobs::QueueSet;
use thoonk_server::redis_target::RedisTarget;
use tracing_subscriber::EnvFilter;

/// The thoonk-sync server: feeds and jobs in Redis with the Thoonk layout, and
/// a WebSocket gateway for browser clients.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Redis to use: a `redis://host:port/db` URL; for a Redis Cluster,
    /// `redis+cluster://host:port,host:port` (some of its nodes) or several
    /// `redis://` URLs separated by commas.
    #[arg(
        long,
        global = true,
        env = "THOONK_REDIS",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the WebSocket gateway (and serve static files for the demo).
    Serve(ServeArgs),
    /// Run job workers only (no gateway).
    Work(WorkCommand),
    /// Inspect and change feeds; prints JSON.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Inspect jobs: list, stalled, retry, retract, result…; prints JSON.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(clap::Args)]
struct WorkCommand {
    #[command(flatten)]
    work: WorkArgs,
    /// Users and access rules (JSON), as for `serve`. Required, unless
    /// `--allow-all`.
    #[arg(long, env = "THOONK_CONFIG")]
    config: Option<PathBuf>,
    /// Development only: without rules, every user may write every feed.
    /// Without it (or `--config`), `work` refuses to start.
    #[arg(
        long,
        env = "THOONK_ALLOW_ALL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_all: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on for HTTP and WebSocket (`/ws`) connections.
    #[arg(long, env = "THOONK_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Users, tokens and access rules (JSON). Required, unless `--allow-all`.
    #[arg(long, env = "THOONK_CONFIG")]
    config: Option<PathBuf>,
    /// Development only: without rules, every non-empty token is accepted
    /// as a user of that name who may read and write every feed. Without it
    /// (or `--config`), `serve` refuses to start.
    #[arg(
        long,
        env = "THOONK_ALLOW_ALL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_all: bool,
    /// Folder to serve over HTTP: `DIR` at `/`, or `/PREFIX=DIR`. Repeatable.
    #[arg(long = "static", env = "THOONK_STATIC", value_delimiter = ',')]
    statics: Vec<StaticDir>,
    /// Name of this process in the classic `newfeed`/`conffeed` events.
    #[arg(long, env = "THOONK_INSTANCE")]
    instance: Option<String>,
    /// Serve the config's users with their tokens at `/demo/users.json`, for
    /// the demo's sign-in picker. Development only: it gives every token away.
    #[arg(long, requires = "config")]
    demo_users: bool,
    /// The job queue client changes go to; on a Redis Cluster, a queue per
    /// shard spreads the jobs (`'{changes-0},{changes-1}'`): each change
    /// goes to the queue its hash tag picks, and the in-process workers
    /// work every one.
    #[arg(
        long,
        env = "THOONK_QUEUE",
        value_delimiter = ',',
        default_value = thoonk_server::jobs::DEFAULT_QUEUE
    )]
    queue: Vec<String>,
    /// How change notices reach this gateway: `broadcast` (one pattern
    /// subscription to every feed) or, on a Redis Cluster, `sharded` (one
    /// subscription per hash tag its clients follow; names and patterns must
    /// carry a tag). See docs/ARCHITECTURE.md, "Deployment at scale".
    #[arg(long, env = "THOONK_FANOUT", value_enum, default_value_t = Fanout::Broadcast)]
    fanout: Fanout,
    /// Do not adopt classic Thoonk writes in this process (the adopter
    /// listens to every feed's events): run one adopter elsewhere with
    /// `thoonk-server work --adopt`, e.g. when gateways use `--fanout sharded`.
    #[arg(long, env = "THOONK_NO_ADOPT")]
    no_adopt: bool,
    /// Job workers run inside this process (0: only `thoonk-server work` processes work the queue).
    #[arg(long, env = "THOONK_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Which actions the in-process workers know.
    #[command(flatten)]
    actions: ActionArgs,
    #[command(flatten)]
    queue_settings: QueueArgs,
    #[command(flatten)]
    web: WebArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let client = RedisTarget::parse(&cli.redis).with_context(|| {
        format!(
            "{} is not a valid Redis URL or list of cluster nodes",
            cli.redis
        )
    })?;
    match cli.command {
        Command::Serve(args) => serve(client, args).await,
        Command::Work(args) => {
            let access = load_access(args.config.as_deref(), args.allow_all)?;
            Ok(thoonk_server::jobs::cli::work(args.work, client, access).await?)
        }
        Command::Job(command) => {
            let output = thoonk_server::jobs::cli::run(command, &client).await?;
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(())
        }
        Command::Feed(command) => {
            let store = FeedStore::open(&client, &instance_name(None)).await?;
            let output = thoonk_server::feeds::cli::run(command, &store).await?;
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(())
        }
    }
}

/// A token that tells this process from an earlier one with the same pid.
fn boot_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

fn instance_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("thoonk-server-{}", std::process::id()))
}

/// The access rules of `--config`; open access only when the operator said
/// this is a development setup (`--allow-all`), else an error: a process
/// that writes feeds never runs without rules by accident.
fn load_access(
    config: Option<&std::path::Path>,
    allow_all: bool,
) -> anyhow::Result<Arc<dyn AccessRules>> {
    Ok(match (config, allow_all) {
        (Some(_), true) => anyhow::bail!(
            "--config and --allow-all (THOONK_CONFIG and THOONK_ALLOW_ALL) exclude each other: \
             give the rules, or say this is a development setup without any"
        ),
        (Some(path), false) => Arc::new(ConfigRules::load(path)?) as Arc<dyn AccessRules>,
        (None, true) => {
            tracing::warn!(
                "--allow-all (development only): every token is accepted and may read and write every feed"
            );
            Arc::new(OpenAccess)
        }
        (None, false) => anyhow::bail!(
            "no access rules: give them with --config FILE (THOONK_CONFIG; see docs/ACCESS.md), \
             or pass --allow-all (THOONK_ALLOW_ALL=1) to run a development setup in which \
             every user may read and write every feed"
        ),
    })
}

async fn serve(client: RedisTarget, args: ServeArgs) -> anyhow::Result<()> {
    let access = load_access(args.config.as_deref(), args.allow_all)?;
    let settings = args.queue_settings.settings();
    let jobs = QueueSet::open(&client, &args.queue, settings.clone())
        .await
        .context("open the job queue")?;
    let owners = ClientOwners::open(&client, settings.retention)
        .await
        .context("connect to Redis for client ids")?;
    tokio::spawn(owners.clone().run_refresh());
    let store = FeedStore::open(&client, &instance_name(args.instance))
        .await
        .context("open the feed store (is Redis running?)")?;
    let limits = args.web.session_limits();
    let hub = Hub::new(1024, &args.queue);
    if args.fanout == Fanout::Sharded {
        let tags = TagSubscriptions::connect(&client, hub.clone())
            .await
            .context("subscribe for sharded fan-out")?;
        hub.use_sharded_fanout(tags);
    }
    let restarts = Arc::new(RestartWatch::new(store.clone(), client.clone()));
    hub.check_restarts_with(restarts.clone());
    tokio::spawn(hub.clone().run(client.clone()));
    tokio::spawn(restarts.run(hub.clone(), std::time::Duration::from_secs(1)));
    tokio::spawn(thoonk_server::gateway::failover_watch::watch_for_failovers(
        hub.clone(),
        client.clone(),
        std::time::Duration::from_secs(1),
    ));
    tokio::spawn(hub.clone().watch_for_data_loss(
        client.clone(),
        format!("{}-{}", instance_name(None), boot_token()),
        std::time::Duration::from_secs(2),
    ));
    if !args.no_adopt {
        tokio::spawn(thoonk_server::interop::run_adopter(
            client.clone(),
            store.clone(),
            std::future::pending(),
        ));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if args.workers > 0 {
        let workers = workers_of_queues(
            &client,
            &args.queue,
            &settings,
            &args.actions,
            &access,
            args.workers,
            &stopped,
        );
        for workers in workers {
            tokio::spawn(async move {
                if let Err(err) = workers.await {
                    tracing::error!(%err, "job workers stopped");
                }
            });
        }
    }
    let sessions = hub.clone();
    let shared = Shared {
        store,
        jobs,
        owners,
        hub,
        access,
        big_reads: Arc::new(tokio::sync::Semaphore::new(limits.big_reads)),
        limits,
        shutdown: stopped.clone(),
    };
    let demo_users = match (&args.config, args.demo_users) {
        (Some(path), true) => Some(serde_json::to_value(ConfigRules::load(path)?.users())?),
        _ => None,
    };
    let app = router(shared, &args.statics, demo_users, args.web.web_options());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "thoonk-server serving; WebSocket at /ws");
    tokio::spawn(async move {
        thoonk_server::shutdown_signal().await;
        tracing::info!("shutting down: closing sessions");
        let _ = stop.send(true);
    });
    let mut stopped = stopped;
    // Frames go out at once (no Nagle delay behind an unacknowledged frame).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(%err, "cannot set TCP_NODELAY on a connection");
        }
    });
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await?;
    // Upgraded WebSocket sessions are not part of axum's graceful shutdown:
    // give them a moment to send their close frame (1001, reconnect).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while sessions.sessions() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::info!("thoonk-server stopped");
    Ok(())
}
