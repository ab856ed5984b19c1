//! Redis faults with real processes and real clients: Redis killed with
//! SIGKILL and restarted from its AOF (`appendfsync always`: nothing
//! acknowledged is lost; `everysec`: the un-synced tail is lost, clients must
//! still converge), and `FLUSHALL` (every feed starts a new epoch, every
//! client resets, nothing diverges silently). Redis stopped for seconds and
//! started again, or the gateway's subscription cut: the clients are told the
//! server is unavailable, and every change settles soon after Redis is back —
//! the outcomes published while the gateway could not hear them are fetched
//! from the job ledger, not left to the clients' outcome timeout.

use thoonk_system_tests::fault as fault_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fault_support::*;
use serde_json::json;
use thoonk_protocol::{FeedName, ServerState};
use thoonk_sync_core::Timing;

const GATEWAY: [&str; 4] = ["--workers", "2", "--claim-timeout-ms", "2000"];

fn clients(prefix: &str, urls: &[String], pattern: &str) -> Vec<CoreClient> {
    ["ann", "bob", "cat"]
        .iter()
        .map(|user| CoreClient::new(&format!("{prefix}{user}"), user, urls, &[pattern]))
        .collect()
}

fn all(clients: &mut [CoreClient]) -> Vec<&mut CoreClient> {
    clients.iter_mut().collect()
}

fn refs(clients: &[CoreClient]) -> Vec<&CoreClient> {
    clients.iter().collect()
}

/// Each client publishes `count` items of its own, spread over `feeds`.
fn write_some(clients: &mut [CoreClient], feeds: &[FeedName], round: usize, count: usize) {
    for client in clients.iter_mut() {
        for i in 0..count {
            let f = &feeds[i % feeds.len()];
            let id = format!("{}-{round}-{i}", client.client_id);
            client.publish(f, &id, json!({"round": round, "i": i}));
        }
    }
}

async fn epochs(store: &thoonk_server::feeds::FeedStore, feeds: &[FeedName]) -> Vec<u64> {
    let mut out = Vec::new();
    for f in feeds {
        out.push(store.snapshot(f).await.expect("snapshot").epoch);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_with_appendfsync_always_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let gateway = start_gateway(&url, Some(redis.port()), &GATEWAY).await;
    let urls = vec![gateway.ws_url()];
    let feeds: Vec<_> = (0..3).map(|i| feed(&format!("aof:f{i}"))).collect();
    let mut cs = clients("always-", &urls, "aof:*");
    write_some(&mut cs, &feeds, 0, 6);
    {
        let store = redis.store().await;
        quiesce(&store, &mut all(&mut cs), &feeds).await;
    }
    let before = epochs(&redis.store().await, &feeds).await;

    // Kill Redis in the middle of a flush.
    write_some(&mut cs, &feeds, 1, 9);
    pump_until(
        &mut all(&mut cs),
        "some of the round's outcomes",
        WAIT,
        |cs| cs.iter().any(|c| c.core().outcomes().len() > 6),
    )
    .await;
    let acknowledged: usize = cs.iter().map(|c| c.core().outcomes().len()).sum();
    redis.kill9();
    pump_for(&mut all(&mut cs), Duration::from_millis(500)).await;
    write_some(&mut cs, &feeds, 2, 3);
    redis.restart();

    let store = redis.store().await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    let acc = account(&store, &refs(&cs), &feeds, &BTreeMap::new()).await;
    eprintln!("{acknowledged} outcomes were known when Redis was killed");
    acc.assert_clean("redis kill -9, appendfsync always");
    assert_eq!(acc.applied, acc.made, "every change was valid");
    assert_eq!(
        epochs(&store, &feeds).await,
        before,
        "nothing was lost, so no feed starts a new epoch"
    );
    assert_converged(&store, &refs(&cs), &feeds).await;
}

/// The AOF incr file (Redis 7 keeps it in `appendonlydir/`).
fn aof_file(dir: &std::path::Path) -> std::path::PathBuf {
    let aof_dir = dir.join("appendonlydir");
    std::fs::read_dir(&aof_dir)
        .expect("appendonlydir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .expect("an incr AOF file")
}

/// Once a known bug: after Redis lost its last writes a feed kept its epoch
/// with a lower revision, and clients ahead of it skipped the reused
/// revisions (silent divergence). A gateway now starts new epochs for the
/// feeds older than the restarted Redis, and the clients reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_unsynced_tail_with_everysec_leaves_no_divergence() {
    let mut redis = RedisServer::start_fsync("everysec");
    let url = redis.url();
    let gateway = start_gateway(&url, Some(redis.port()), &GATEWAY).await;
    let urls = vec![gateway.ws_url()];
    let feeds: Vec<_> = (0..2).map(|i| feed(&format!("tail:f{i}"))).collect();
    let mut cs = clients("everysec-", &urls, "tail:*");
    write_some(&mut cs, &feeds, 0, 4);
    {
        let store = redis.store().await;
        quiesce(&store, &mut all(&mut cs), &feeds).await;
    }
    // What is on disk now survives; what comes after is the tail that an
    // `everysec` fsync may not have reached when the power went.
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("BGREWRITEAOF")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually("the AOF rewrite finished", || async {
        let mut conn = redis.conn().await;
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut conn)
            .await
            .ok()?;
        info.contains("aof_rewrite_in_progress:0")
            .then_some(())
            .filter(|_| info.contains("aof_rewrite_scheduled:0"))
    })
    .await;
    let aof = aof_file(redis.dir());
    let synced = std::fs::metadata(&aof).unwrap().len();
    write_some(&mut cs, &feeds, 1, 4);
    let store = redis.store().await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    drop(store);
    redis.kill9();
    // The power cut: the un-synced tail of the AOF is gone.
    let file = std::fs::OpenOptions::new().write(true).open(&aof).unwrap();
    file.set_len(synced).unwrap();
    drop(file);
    redis.restart();

    // Clients go on writing; they must end up with what the server has.
    write_some(&mut cs, &feeds, 2, 4);
    let store = redis.store().await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    assert_converged(&store, &refs(&cs), &feeds).await;
    let acc = account(&store, &refs(&cs), &feeds, &BTreeMap::new()).await;
    acc.report("redis tail lost, appendfsync everysec");
    // What may be lost is exactly the acknowledged tail (round 1), never
    // anything made after the restart, and nothing twice.
    assert_eq!(
        (acc.duplicated, acc.unexpected),
        (0, 0),
        "{:#?}",
        acc.problems
    );
    // Each client's changes are numbered in order, 4 a round: round 1 is
    // changes 5 to 8.
    let round_1 = |problem: &String| {
        problem
            .strip_prefix("lost: ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.rsplit_once(':'))
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .is_some_and(|seq| (5..=8).contains(&seq))
    };
    assert!(acc.problems.iter().all(round_1), "{:#?}", acc.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_starts_new_epochs_and_every_client_resets() {
    flushall_run(true, Wipe::Flushall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_after_flushall_are_applied_without_a_restart() {
    flushall_run(false, Wipe::Flushall).await;
}

/// A Redis restarted without its data has lost the function library too
/// (`FLUSHALL` keeps it): the running gateway loads it again on its first
/// call that finds it missing, and every change made after is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_data_gets_the_library_again() {
    flushall_run(false, Wipe::RestartWithoutData).await;
}

/// How the data is lost.
#[derive(Clone, Copy, PartialEq)]
enum Wipe {
    /// `FLUSHALL`: the keys go, the function library stays.
    Flushall,
    /// SIGKILL, the AOF removed, started again: keys and library go.
    RestartWithoutData,
}

async fn flushall_run(restart_worker: bool, wipe: Wipe) {
    let mut redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let gateway = start_gateway(&url, Some(redis.port()), &GATEWAY).await;
    let urls = vec![gateway.ws_url()];
    let feeds: Vec<_> = (0..2).map(|i| feed(&format!("flush:f{i}"))).collect();
    let mut cs = clients("flush-", &urls, "flush:*");
    write_some(&mut cs, &feeds, 0, 4);
    let store = redis.store().await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    let before = epochs(&store, &feeds).await;
    let mut earlier = BTreeMap::new();
    for f in &feeds {
        for (job, n) in log_jobs(&store, f).await {
            *earlier.entry(job).or_default() += n;
        }
    }
    let resets: Vec<u32> = cs.iter().map(|c| c.snapshots.values().sum()).collect();

    match wipe {
        Wipe::Flushall => {
            let mut conn = redis.conn().await;
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        }
        Wipe::RestartWithoutData => {
            redis.kill9();
            std::fs::remove_dir_all(redis.dir().join("appendonlydir")).unwrap();
            redis.restart();
            let mut conn = redis.conn().await;
            let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(libraries.is_empty(), "the restarted Redis has no library");
        }
    }
    // The operator's recovery: a server process started after the flush
    // creates the job queue again (see the ignored test above).
    let _worker = restart_worker.then(|| start_worker(&url, &["--claim-timeout-ms", "2000"]));
    if restart_worker {
        eventually("the worker created the job queue again", || async {
            let mut conn = redis.conn().await;
            let kind: Option<String> = redis::cmd("HGET")
                .arg("feed.config:changes")
                .arg("type")
                .query_async(&mut conn)
                .await
                .ok()?;
            (kind.as_deref() == Some("job")).then_some(())
        })
        .await;
    }
    // After the flush every client writes again, to every feed.
    write_some(&mut cs, &feeds, 1, 4);
    pump_until(&mut all(&mut cs), "outcomes after FLUSHALL", WAIT, |cs| {
        cs.iter().all(|c| c.settled())
    })
    .await;
    for c in &cs {
        for m in &c.made {
            let outcome = c.outcome(&m.id);
            assert!(
                outcome.is_some_and(|o| o.applied()),
                "{} made after FLUSHALL ended {outcome:?}",
                m.id.0
            );
        }
    }
    quiesce(&store, &mut all(&mut cs), &feeds).await;

    let after = epochs(&store, &feeds).await;
    for (b, a) in before.iter().zip(&after) {
        assert!(a > b, "a new epoch after FLUSHALL: {before:?} -> {after:?}");
    }
    for (c, r) in cs.iter().zip(resets) {
        let now: u32 = c.snapshots.values().sum();
        assert!(now > r, "{} took no snapshot after FLUSHALL", c.client_id);
    }
    assert_converged(&store, &refs(&cs), &feeds).await;
    let acc = account(&store, &refs(&cs), &feeds, &earlier).await;
    acc.assert_clean("FLUSHALL");
    assert_eq!(acc.applied, acc.made);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_also_resets_clients_of_feeds_nobody_writes_again() {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let gateway = start_gateway(&url, Some(redis.port()), &GATEWAY).await;
    let urls = vec![gateway.ws_url()];
    let feeds = vec![feed("quiet:f0")];
    let mut cs = clients("quiet-", &urls, "quiet:*");
    write_some(&mut cs, &feeds, 0, 2);
    let store = redis.store().await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // Nobody writes the feed again: the server has nothing, and the clients
    // must not keep showing the old items as if they were current.
    pump_until(
        &mut all(&mut cs),
        "every client dropped the flushed feed",
        WAIT,
        |cs| cs.iter().all(|c| c.core().confirmed(&feeds[0]).is_empty()),
    )
    .await;
}

/// Test timers with an outcome timeout far beyond the bound the tests wait:
/// an outcome that arrives within the bound was not asked for again.
fn long_outcome_timeout(submit_timeout: u64) -> Timing {
    Timing {
        submit_timeout,
        submit_timeout_max: submit_timeout.max(4_000),
        outcome_timeout: 120_000,
        ..test_timing()
    }
}

/// The bound within which changes must settle once Redis is back: far below
/// the outcome timeout above, so no resubmission can be what settles them.
const SETTLE: Duration = Duration::from_secs(20);

fn two_clients(prefix: &str, urls: &[String], pattern: &str, timing: &Timing) -> Vec<CoreClient> {
    ["ann", "bob"]
        .iter()
        .map(|user| {
            let id = format!("{prefix}{user}");
            CoreClient::with_timing(&id, user, urls, &[pattern], timing.clone())
        })
        .collect()
}

/// Pumps until every client was last told `state`.
async fn until_told(cs: &mut [CoreClient], state: ServerState) {
    let what = format!("every client told the server is {}", state.as_str());
    pump_until(&mut all(cs), &what, WAIT, |cs| {
        cs.iter().all(|c| c.server_states.last() == Some(&state))
    })
    .await;
}

/// Waits (pumping the clients) until the job queue holds `count` changes.
async fn until_queued(redis: &RedisServer, cs: &mut [CoreClient], count: usize) {
    let mut conn = redis.conn().await;
    let since = Instant::now();
    loop {
        pump_for(&mut all(cs), Duration::from_millis(100)).await;
        let waiting: usize = redis::cmd("LLEN")
            .arg(format!("feed.ids:{QUEUE}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if waiting == count {
            return;
        }
        assert!(
            since.elapsed() < WAIT,
            "{waiting} of {count} changes queued"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_seconds_settles_every_change_soon_after_it_is_back() {
    let mut redis = RedisServer::start_fsync("always");
    let url = redis.url();
    // The workers run in a process of their own, so that the test decides
    // when changes are worked.
    let gateway = start_gateway(&url, Some(redis.port()), &["--workers", "0"]).await;
    let worker = start_worker(&url, &["--claim-timeout-ms", "2000"]);
    let urls = vec![gateway.ws_url()];
    let feeds: Vec<_> = (0..3).map(|i| feed(&format!("stop:f{i}"))).collect();
    let mut cs = two_clients("stop-", &urls, "stop:*", &long_outcome_timeout(500));
    write_some(&mut cs, &feeds, 0, 3);
    {
        let store = redis.store().await;
        quiesce(&store, &mut all(&mut cs), &feeds).await;
    }
    assert!(cs.iter().all(|c| c.server_states.is_empty()), "no news yet");

    // Changes in flight when Redis stops: queued and acknowledged, not worked yet.
    drop(worker);
    write_some(&mut cs, &feeds, 1, feeds.len());
    until_queued(&redis, &mut cs, 2 * feeds.len()).await;

    // SIGTERM: a clean shutdown (the AOF keeps everything acknowledged).
    redis.stop();
    until_told(&mut cs, ServerState::Unavailable).await;
    assert!(
        cs.iter().all(|c| c.online()),
        "still connected to the gateway"
    );
    // Both users go on making changes for about eight seconds.
    for round in 2..=5 {
        write_some(&mut cs, &feeds, round, 2);
        pump_for(&mut all(&mut cs), Duration::from_secs(2)).await;
    }
    assert!(
        cs.iter().all(|c| !c.settled()),
        "nothing settles while Redis is down"
    );
    // Redis comes back, and with it a worker.
    redis.restart();
    let _worker = start_worker(&url, &["--claim-timeout-ms", "2000"]);

    pump_until(
        &mut all(&mut cs),
        "every change settled after Redis came back",
        SETTLE,
        |cs| cs.iter().all(|c| c.settled()),
    )
    .await;
    until_told(&mut cs, ServerState::Available).await;
    let store = redis.store().await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    assert_converged(&store, &refs(&cs), &feeds).await;
    let acc = account(&store, &refs(&cs), &feeds, &BTreeMap::new()).await;
    acc.assert_clean("redis stopped and started again");
    assert_eq!(acc.applied, acc.made, "every change was valid");
}

/// The outcomes of changes applied while the gateway's subscription was cut
/// were published to nobody: deterministic, since the changes are queued
/// before the cut and only worked while it lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_published_while_the_subscription_was_cut_are_delivered_from_the_ledger() {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let proxy = Proxy::start(redis.port()).await;
    // No workers in the gateway: the changes wait in the queue.
    let gateway = start_gateway(&proxy.url(), Some(redis.port()), &["--workers", "0"]).await;
    let urls = vec![gateway.ws_url()];
    let feeds: Vec<_> = (0..3).map(|i| feed(&format!("cut:f{i}"))).collect();
    // Nothing is submitted twice within the test's bounds.
    let mut cs = two_clients("cut-", &urls, "cut:*", &long_outcome_timeout(120_000));
    // One change per feed (a feed's changes go one at a time): all queued at once.
    write_some(&mut cs, &feeds, 0, feeds.len());
    let made: usize = cs.iter().map(|c| c.made.len()).sum();
    until_queued(&redis, &mut cs, made).await;

    // The gateway loses Redis; a worker elsewhere applies every change.
    proxy.cut();
    until_told(&mut cs, ServerState::Unavailable).await;
    let _worker = start_worker(&url, &["--claim-timeout-ms", "2000"]);
    let store = redis.store().await;
    let ids: Vec<String> = cs
        .iter()
        .flat_map(|c| c.made.iter().map(|m| m.id.0.clone()))
        .collect();
    let applied = Instant::now();
    loop {
        pump_for(&mut all(&mut cs), Duration::from_millis(100)).await;
        let mut logged = BTreeMap::new();
        for f in &feeds {
            logged.extend(log_jobs(&store, f).await);
        }
        if ids.iter().all(|id| logged.contains_key(id)) {
            break;
        }
        assert!(applied.elapsed() < WAIT, "the worker applied every change");
    }
    assert!(
        cs.iter().all(|c| !c.settled()),
        "no outcome reached the clients"
    );

    proxy.heal();
    pump_until(
        &mut all(&mut cs),
        "every change settled after the subscription came back",
        SETTLE,
        |cs| cs.iter().all(|c| c.settled()),
    )
    .await;
    until_told(&mut cs, ServerState::Available).await;
    quiesce(&store, &mut all(&mut cs), &feeds).await;
    let acc = account(&store, &refs(&cs), &feeds, &BTreeMap::new()).await;
    acc.assert_clean("gateway subscription cut while changes were applied");
    assert_eq!(acc.applied, acc.made);
    assert_eq!(acc.recovered, 0, "nothing was submitted twice");
}
