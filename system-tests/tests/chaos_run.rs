//! A seeded chaos run: real Redis, two gateways and a worker process, four
//! real clients (sync core + durable store + WebSocket) making random
//! changes while the run kills gateways, workers and Redis with SIGKILL,
//! reloads clients mid-flush, takes them offline and makes them stop reading.
//! At the end everything heals, the clients settle, and every change is
//! accounted for against the change logs: lost, duplicated and unexpected
//! must be 0, and every client's mirror must equal the server.
//!
//! Short by default (the test command). `scripts/chaos` runs it long:
//! `THOONK_CHAOS_SECS` (run time), `THOONK_CHAOS_SEED` (first seed),
//! `THOONK_CHAOS_RUNS` (seeds one after the other). A failure prints its seed.

use thoonk_system_tests::fault as fault_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fault_support::*;
use serde_json::json;
use thoonk_protocol::FeedName;

const GATEWAY: [&str; 4] = ["--workers", "1", "--claim-timeout-ms", "1500"];
const WORKER: [&str; 4] = ["--concurrency", "2", "--claim-timeout-ms", "1500"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Default)]
struct Tally {
    steps: u64,
    changes: u64,
    reloads: u64,
    offline: u64,
    stalls: u64,
    gateway_kills: u64,
    worker_kills: u64,
    redis_kills: u64,
}

async fn run_seed(seed: u64, secs: u64) -> (Tally, Accounting) {
    eprintln!("[chaos] seed {seed}: {secs} s (replay: THOONK_CHAOS_SEED={seed} THOONK_CHAOS_SECS={secs} cargo test --test chaos_run -- --nocapture)");
    let mut rng = SplitMix64::new(seed);
    let mut redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let store = redis.store().await;
    let mut gateways = vec![
        start_gateway(&url, Some(redis.port()), &GATEWAY).await,
        start_gateway(&url, Some(redis.port()), &GATEWAY).await,
    ];
    let mut worker = start_worker(&url, &WORKER);
    let urls = |gws: &[ThoonkServer], first: usize| -> Vec<String> {
        (0..gws.len())
            .map(|i| gws[(i + first) % gws.len()].ws_url())
            .collect()
    };
    let feeds: Vec<FeedName> = (0..4).map(|i| feed(&format!("chaos:f{i}"))).collect();
    let mut clients: Vec<CoreClient> = ["ann", "bob", "cat", "dan"]
        .iter()
        .enumerate()
        .map(|(i, user)| {
            CoreClient::new(
                &format!("x{seed}{user}"),
                user,
                &urls(&gateways, i),
                &["chaos:*"],
            )
        })
        .collect();
    // Every feed exists before the faults start.
    for (i, f) in feeds.iter().enumerate() {
        let c = &mut clients[i % 4];
        let id = format!("{}-seed", c.client_id);
        c.publish(f, &id, json!({"seed": true}));
    }
    quiesce(&store, &mut clients.iter_mut().collect::<Vec<_>>(), &feeds).await;

    let mut tally = Tally::default();
    let mut live: Vec<BTreeSet<(usize, String)>> = vec![BTreeSet::new(); clients.len()];
    let mut next_item = 0u64;
    let mut restore_at: BTreeMap<usize, u64> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tally.steps += 1;
        let roll = rng.below(1000);
        let who = rng.below(clients.len() as u64) as usize;
        match roll {
            0..=549 => {
                tally.changes += 1;
                let f = rng.below(feeds.len() as u64) as usize;
                let c = &mut clients[who];
                let mine: Vec<(usize, String)> = live[who]
                    .iter()
                    .filter(|(fi, _)| *fi == f)
                    .cloned()
                    .collect();
                if mine.is_empty() || rng.chance(45) {
                    next_item += 1;
                    let id = format!("{}-{next_item}", c.client_id);
                    c.publish(&feeds[f], &id, json!({"n": next_item, "by": c.client_id}));
                    live[who].insert((f, id));
                } else {
                    let pick = mine[rng.below(mine.len() as u64) as usize].clone();
                    if rng.chance(70) {
                        c.edit(&feeds[f], &pick.1, json!({"edited": rng.below(1000)}));
                    } else {
                        c.retract(&feeds[f], &pick.1);
                        live[who].remove(&pick);
                    }
                }
            }
            550..=599 => {
                tally.reloads += 1;
                clients[who].crash_after_store();
            }
            600..=629 if !clients[who].offline => {
                tally.offline += 1;
                clients[who].offline = true;
                clients[who].drop_connection();
                restore_at.insert(who, tally.steps + 5 + rng.below(40));
            }
            630..=659 if !clients[who].stalled => {
                tally.stalls += 1;
                clients[who].stalled = true;
                restore_at.insert(who, tally.steps + 5 + rng.below(40));
            }
            660..=674 => {
                tally.gateway_kills += 1;
                let g = rng.below(gateways.len() as u64) as usize;
                gateways[g].kill9();
                gateways[g] = start_gateway(&url, None, &GATEWAY).await;
                for (i, c) in clients.iter_mut().enumerate() {
                    c.urls = urls(&gateways, i);
                }
            }
            675..=689 => {
                tally.worker_kills += 1;
                worker.kill9();
                worker = start_worker(&url, &WORKER);
            }
            690..=696 => {
                tally.redis_kills += 1;
                redis.kill9();
                pump_for(
                    &mut clients.iter_mut().collect::<Vec<_>>(),
                    Duration::from_millis(rng.below(400)),
                )
                .await;
                redis.restart();
            }
            _ => {}
        }
        for (&who, &at) in restore_at.clone().iter() {
            if tally.steps >= at {
                clients[who].offline = false;
                clients[who].stalled = false;
                restore_at.remove(&who);
            }
        }
        pump_for(
            &mut clients.iter_mut().collect::<Vec<_>>(),
            Duration::from_millis(20),
        )
        .await;
    }
    for c in clients.iter_mut() {
        c.offline = false;
        c.stalled = false;
    }
    quiesce(&store, &mut clients.iter_mut().collect::<Vec<_>>(), &feeds).await;
    let refs: Vec<&CoreClient> = clients.iter().collect();
    let acc = account(&store, &refs, &feeds, &BTreeMap::new()).await;
    assert_converged(&store, &refs, &feeds).await;
    let faults: Vec<&String> = clients.iter().flat_map(|c| c.core_faults.iter()).collect();
    eprintln!(
        "[chaos] seed {seed}: {tally:?}; core faults reported: {}",
        faults.len()
    );
    (tally, acc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short() {
    let secs = env_u64("THOONK_CHAOS_SECS", 20);
    let first = env_u64("THOONK_CHAOS_SEED", 20261129);
    let runs = env_u64("THOONK_CHAOS_RUNS", 1);
    let mut total = Accounting::default();
    for seed in first..first + runs {
        let (_, acc) = run_seed(seed, secs).await;
        acc.report(&format!("chaos seed {seed}"));
        assert!(
            acc.lost == 0 && acc.duplicated == 0 && acc.unexpected == 0,
            "chaos seed {seed} failed: {:#?}",
            acc.problems
        );
        total.made += acc.made;
        total.applied += acc.applied;
        total.refused += acc.refused;
        total.recovered += acc.recovered;
    }
    total.assert_clean(&format!(
        "chaos, {runs} seed(s) from {first}, {secs} s each"
    ));
}
