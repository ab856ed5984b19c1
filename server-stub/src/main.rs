//! `thoonk-server`: the gateway (`serve`) and admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use thoonk_server::feeds::{cli::FeedCommand, FeedStore};
use thoonk_server::gateway::{AccessRules, ConfigRules, Hub, OpenAccess, SessionLimits, Shared};
use thoonk_server::http::{router, StaticDir};
use tracing_subscriber::EnvFilter;

/// The thoonk-sync server: feeds and jobs in Redis with the Thoonk layout, and
/// a WebSocket gateway for browser clients.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Redis to use, as a `redis://host:port/db` URL.
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
    /// Inspect and change feeds; prints JSON.
    #[command(subcommand)]
    Feed(FeedCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on for HTTP and WebSocket (`/ws`) connections.
    #[arg(long, env = "THOONK_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Users, tokens and access rules (JSON). Without it every non-empty token
    /// is accepted as a user of that name who may read and write every feed.
    #[arg(long, env = "THOONK_CONFIG")]
    config: Option<PathBuf>,
    /// Folder to serve over HTTP: `DIR` at `/`, or `/PREFIX=DIR`. Repeatable.
    #[arg(long = "static", env = "THOONK_STATIC", value_delimiter = ',')]
    statics: Vec<StaticDir>,
    /// Name of this process in the classic `newfeed`/`conffeed` events.
    #[arg(long, env = "THOONK_INSTANCE")]
    instance: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let client = redis::Client::open(cli.redis.as_str())
        .with_context(|| format!("{} is not a valid Redis URL", cli.redis))?;
    match cli.command {
        Command::Serve(args) => serve(client, args).await,
        Command::Feed(command) => {
            let store = FeedStore::open(&client, &instance_name(None)).await?;
            let output = thoonk_server::feeds::cli::run(command, &store).await?;
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(())
        }
    }
}

fn instance_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("thoonk-server-{}", std::process::id()))
}

async fn serve(client: redis::Client, args: ServeArgs) -> anyhow::Result<()> {
    let access: Arc<dyn AccessRules> = match &args.config {
        Some(path) => Arc::new(ConfigRules::load(path)?),
        None => {
            tracing::warn!(
                "no --config: every token is accepted and may read and write every feed"
            );
            Arc::new(OpenAccess)
        }
    };
    let store = FeedStore::open(&client, &instance_name(args.instance))
        .await
        .context("open the feed store (is Redis running?)")?;
    let limits = SessionLimits::default();
    let hub = Hub::new(1024);
    tokio::spawn(hub.clone().run(client));
    let shared = Shared {
        store,
        hub,
        access,
        limits,
    };
    let app = router(shared, &args.statics);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "thoonk-server serving; WebSocket at /ws");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("thoonk-server stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
