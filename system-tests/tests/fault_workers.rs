//! Worker faults end to end: a client submits through a gateway that runs no
//! workers; a `thoonk-server work` process reaches Redis through a proxy that
//! freezes its connection at the chosen moment, and the worker is killed with
//! SIGKILL there — after it claimed a job, or right after its feed script
//! applied the job but before it finished it. A second worker takes over; every
//! change is applied exactly once and every client learns its outcome.

use thoonk_system_tests::fault as fault_support;

use std::collections::BTreeMap;
use std::time::Duration;

use fault_support::*;
use serde_json::json;

const WORKER: [&str; 4] = ["--concurrency", "1", "--claim-timeout-ms", "1500"];

async fn kill_worker_at(pattern: &[u8], name: &str, applied_at_kill: usize) {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let store = redis.store().await;
    let gateway = start_gateway(&url, Some(redis.port()), &["--workers", "0"]).await;
    let proxy = Proxy::start(redis.port()).await;
    let frozen = proxy.freeze_on(pattern);
    let mut doomed = start_worker(&proxy.url(), &WORKER);

    let feeds: Vec<_> = (0..3).map(|i| feed(&format!("{name}:f{i}"))).collect();
    let mut client = CoreClient::new(name, "ann", &[gateway.ws_url()], &[&format!("{name}:*")]);
    for (i, f) in feeds.iter().enumerate() {
        client.publish(f, &format!("item{i}"), json!({"i": i}));
    }
    let mut frozen = Box::pin(frozen);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        client.pump(Duration::from_millis(20)).await;
        if futures::poll!(frozen.as_mut()).is_ready() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never reached the moment to kill it"
        );
    }
    // The moment: the job is claimed (and, for "applied", its writes are in
    // the change log) but not finished.
    let mut conn = redis.conn().await;
    let claimed: usize = redis::cmd("ZCARD")
        .arg(format!("feed.claimed:{QUEUE}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(claimed, 1, "one job is in flight at the kill");
    let mut applied_before = 0;
    for f in &feeds {
        applied_before += log_jobs(&store, f).await.len();
    }
    assert_eq!(
        applied_before, applied_at_kill,
        "the job's writes at the kill"
    );
    doomed.kill9();
    proxy.cut();
    eprintln!("{name}: worker killed with {applied_before} job(s) applied and unfinished");

    let _rescuer = start_worker(&url, &WORKER);
    quiesce(&store, &mut [&mut client], &feeds).await;
    let acc = account(&store, &[&client], &feeds, &BTreeMap::new()).await;
    acc.assert_clean(name);
    assert_eq!(acc.applied, 3);
    assert_converged(&store, &[&client], &feeds).await;
    let stalled: usize = redis::cmd("SCARD")
        .arg(format!("feed.stalled:{QUEUE}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stalled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_claiming_a_job_loses_nothing() {
    // The claim's reply carries the job payload, with its user.
    kill_worker_at(b"\"user\"", "wclaim", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_its_feed_script_applied_applies_nothing_twice() {
    // job_apply.lua's reply `{'applied', outcome}`: the writes are done, the
    // finish is not.
    kill_worker_at(b"$7\r\napplied\r\n", "wapply", 1).await;
}
