//! `thoonk-bench`: the server-side measures of `scripts/bench`.
//!
//! Each subcommand runs one measure against servers the script started and
//! prints one JSON object on stdout; `scripts/bench` collects them into
//! docs/BENCHMARKS.md. Nothing here asserts a speed: these are measures,
//! not tests.
//!
//! ```text
//! thoonk-bench prepare-feed --redis URL --feed F          # creates F, prints the publish script's sha
//! thoonk-bench feed --redis URL --feed F --script publish|trivial --concurrency C --seconds S
//! thoonk-bench spread --redis URL|redis+cluster://… --feeds K --concurrency C --seconds S
//! thoonk-bench jobs --redis URL|redis+cluster://… --jobs N --workers W --op noop|publish [--putters P] [--queues K] [--teams T]
//! thoonk-bench ws-conns --url WS[,WS…] --redis URL --pid PID[,PID…] --conns N --publishes R
//! thoonk-bench tag-fanout --redis redis+cluster://… --url WS,WS --pid PID,PID --mode broadcast|sharded --teams T --follow F --seconds S
//! thoonk-bench ws-latency --url WS --redis URL --samples N
//! thoonk-bench replay --url WS --redis URL --items N --reps R
//! thoonk-bench fill --redis URL --feed F [--retention N | --from A --to B]
//! thoonk-bench slow-readers --url WS --redis URL --pid PID [--conns 20 --rounds 5 --items 24 --hold 15]
//! ```

mod args;
mod cluster;
mod feed;
mod jobs;
mod stats;
mod ws;

use args::Args;

fn usage() -> ! {
    eprintln!(
        "usage: thoonk-bench prepare-feed|feed|spread|jobs|ws-conns|tag-fanout|ws-latency|replay|fill|slow-readers --option value …"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    let Some(command) = argv.next() else { usage() };
    let args = Args::parse(argv)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match command.as_str() {
            "prepare-feed" => feed::prepare(&args).await,
            "feed" => feed::run(&args).await,
            "spread" => feed::spread(&args).await,
            "jobs" => jobs::run(&args).await,
            "ws-conns" => ws::conns(&args).await,
            "tag-fanout" => cluster::tag_fanout(&args).await,
            "ws-latency" => ws::latency(&args).await,
            "replay" => ws::replay(&args).await,
            "fill" => ws::fill(&args).await,
            "slow-readers" => ws::slow_readers(&args).await,
            _ => usage(),
        }
    })?;
    println!("{result}");
    // Connections still open are dropped with the runtime; do not wait for them.
    runtime.shutdown_background();
    Ok(())
}
