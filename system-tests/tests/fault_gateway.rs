//! Gateway faults with real processes and real clients (the sync core with a
//! durable store over a WebSocket): a gateway killed with SIGKILL while its
//! clients flush their outboxes (they move to a second gateway), the network
//! between a gateway and Redis cut while clients write, and a slow consumer.
//! Every change is accounted for against the change logs.

use thoonk_system_tests::fault as fault_support;

use fault_support::*;
use serde_json::json;
use thoonk_protocol::FeedName;
use thoonk_server::feeds::FeedStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_flush_loses_and_duplicates_nothing() {
    let redis = RedisServer::start_fsync("always");
    let store = redis.store().await;
    let url = redis.url();
    let feeds: Vec<_> = (0..3).map(|i| feed(&format!("gwkill:f{i}"))).collect();
    kill_a_gateway_mid_flush(
        "gateway killed mid-flush",
        &url,
        redis.port(),
        &[],
        &store,
        &feeds,
        &["gwkill:*"],
    )
    .await;
}

/// The same on a 3-primary Redis Cluster: the feeds live on different
/// shards (one hash tag each), the queue on its own slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_flush_on_a_cluster_loses_and_duplicates_nothing() {
    let cluster = thoonk_testkit::RedisCluster::start(3, 0);
    let target = thoonk_server::redis_target::RedisTarget::parse(&cluster.url()).unwrap();
    let store = FeedStore::open(&target, INSTANCE).await.unwrap();
    // The hubs subscribe on the first node named.
    let hub_node = cluster.ports()[0];
    let feeds: Vec<_> = (0..3).map(|i| feed(&format!("{{gwkill{i}}}:f"))).collect();
    let patterns = ["{gwkill0}:*", "{gwkill1}:*", "{gwkill2}:*"];
    let queue = ["--queue", "{changes}"];
    kill_a_gateway_mid_flush(
        "gateway killed mid-flush (cluster)",
        &cluster.url(),
        hub_node,
        &queue,
        &store,
        &feeds,
        &patterns,
    )
    .await;
}

/// Three clients flush 12 changes each over `feeds` through two gateways on
/// `url`; the first gateway is killed with SIGKILL while changes are in
/// flight, the clients move to the second and make 4 more each. Every
/// change is applied exactly once and the clients converge; `what` names
/// the run in the accounting.
async fn kill_a_gateway_mid_flush(
    what: &str,
    url: &str,
    hub_port: u16,
    extra: &[&str],
    store: &FeedStore,
    feeds: &[FeedName],
    patterns: &[&str],
) {
    let mut args = vec!["--workers", "2", "--claim-timeout-ms", "2000"];
    args.extend_from_slice(extra);
    let mut first = start_gateway(url, Some(hub_port), &args).await;
    let second = start_gateway(url, Some(hub_port), &args).await;
    let urls = vec![first.ws_url(), second.ws_url()];

    let mut a = CoreClient::new("ga", "ann", &urls, patterns);
    let mut b = CoreClient::new("gb", "bob", &urls, patterns);
    let mut c = CoreClient::new("gc", "cat", &urls, patterns);
    pump_until(&mut [&mut a, &mut b, &mut c], "online", WAIT, |cs| {
        cs.iter().all(|c| c.online())
    })
    .await;

    // Each client queues changes on every feed (one lane per feed).
    for (n, client) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        for i in 0..12 {
            let f = &feeds[i % feeds.len()];
            client.publish(
                f,
                &format!("{}-{i}", client.client_id),
                json!({"n": i, "c": n}),
            );
        }
    }
    // Flush a little: some changes are through, some in flight.
    pump_until(
        &mut [&mut a, &mut b, &mut c],
        "the first outcomes",
        WAIT,
        |cs| cs.iter().any(|c| !c.core().outcomes().is_empty()),
    )
    .await;
    let in_flight: usize = [&a, &b, &c].iter().map(|c| c.pending().len()).sum();
    eprintln!("killing the first gateway with {in_flight} changes pending");
    first.kill9();

    // More changes while they fail over.
    for client in [&mut a, &mut b, &mut c] {
        for i in 12..16 {
            let f = &feeds[i % feeds.len()];
            client.edit(
                f,
                &format!("{}-{}", client.client_id, i - 12),
                json!({"edited": i}),
            );
        }
    }
    quiesce(store, &mut [&mut a, &mut b, &mut c], feeds).await;
    let acc = account(store, &[&a, &b, &c], feeds, &Default::default()).await;
    acc.assert_clean(what);
    assert_eq!(acc.made, 48);
    assert_eq!(acc.applied, 48, "every change was valid and must apply");
    assert_converged(store, &[&a, &b, &c], feeds).await;
}
