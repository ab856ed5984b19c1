//! The whole server on a local Redis Cluster of three primaries: feeds whose
//! names carry a `{hash tag}` live on different shards, a change goes
//! through a tagged job queue and a worker, and two gateways deliver the
//! same ordered streams to pattern subscribers spanning the shards. With a
//! replica per primary, a primary killed with SIGKILL fails over and the
//! clients converge on what the new primary holds.

use thoonk_system_tests::gateway as support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::{
    id, name, publish_round_through_failover, until_converged, until_failed_over,
    write_rounds_and_converge, WsClient,
};
use thoonk_protocol::FeedName;
use thoonk_protocol::ServerMessage;
use thoonk_server::feeds::FeedStore;
use thoonk_server::redis_target::RedisTarget;
use thoonk_testkit::{server_bin, RedisCluster, ThoonkServer};

/// Subscribers of `newfeed` on the first node, where each gateway hub listens.
async fn hubs_on(node: &redis::Client) -> usize {
    let mut conn = node.get_multiplexed_async_connection().await.unwrap();
    let (_, n): (String, usize) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("newfeed")
        .query_async(&mut conn)
        .await
        .unwrap();
    n
}

/// The nodes holding at least one key.
async fn nodes_with_keys(cluster: &RedisCluster) -> usize {
    let mut used = 0;
    for port in cluster.ports() {
        let node = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut conn = node.get_multiplexed_async_connection().await.unwrap();
        let keys: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        used += usize::from(keys > 0);
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_a_redis_cluster_sharded_by_hash_tag() {
    let cluster = RedisCluster::start(3, 0);
    let target = RedisTarget::parse(&cluster.url()).unwrap();
    assert!(target.is_cluster());
    let store = FeedStore::open(&target, "cluster-test").await.unwrap();

    // One feed per team; the `{n}` segment is the shard key.
    let feeds: Vec<_> = (1..=6)
        .map(|n| name(&format!("team:{{{n}}}:tasks")))
        .collect();
    for feed in &feeds {
        store
            .publish(
                feed,
                Some(&id("seed")),
                &json!({ "feed": feed.as_str() }),
                None,
            )
            .await
            .unwrap();
    }
    assert!(
        nodes_with_keys(&cluster).await >= 2,
        "the teams' feeds spread over several primaries"
    );
    // A feed name without a hash tag spreads its keys over several slots:
    // the cluster refuses the script and nothing is written. (Not through
    // `name`, which adds a tag when the suites run on a cluster.)
    let untagged = thoonk_protocol::FeedName::new("team:9:tasks").unwrap();
    let untagged = store
        .publish(&untagged, Some(&id("x")), &json!(1), None)
        .await;
    assert!(
        untagged
            .as_ref()
            .is_err_and(|e| format!("{e:?}").contains("CrossSlot")),
        "{untagged:?}"
    );

    // Two gateways; the job queue's keys share the tag `{changes}`.
    let first_node =
        redis::Client::open(format!("redis://127.0.0.1:{}/", cluster.ports()[0])).unwrap();
    let url = cluster.url();
    let args = ["--queue", "{changes}"];
    let one = ThoonkServer::start(server_bin(), &url, &args);
    let two = ThoonkServer::start(server_bin(), &url, &args);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hubs_on(&first_node).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway hubs never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut clients = Vec::new();
    for server in [&one, &two] {
        let mut client = WsClient::signed_in(&server.ws_url(), "ann").await;
        client.subscribe("team:*:tasks").await;
        for feed in &feeds {
            client.until_rev(feed, 1).await;
        }
        clients.push(client);
    }

    // A change through the gateway: a job on `{changes}`, applied by a
    // worker to the feed's shard, its outcome back to the submitter.
    let submit = json!({"type": "submit", "change": {
        "id": "test-ann:1",
        "op": {"kind": "publish", "feed": "team:{2}:tasks", "id": "from-ws", "item": {"title": "t"}},
        "base": {"team:{2}:tasks": 1},
    }});
    clients[0].send_text(submit.to_string()).await;
    let outcome = clients[0].until_outcome("test-ann:1").await;
    assert!(
        matches!(outcome, thoonk_protocol::Outcome::Accepted { .. }),
        "{outcome:?}"
    );

    // Writes on every shard; both gateways deliver every revision in order.
    for round in 0..5 {
        for feed in &feeds {
            store
                .publish(feed, Some(&id(&format!("r{round}"))), &json!(round), None)
                .await
                .unwrap();
        }
    }
    for client in &mut clients {
        client.until_rev(&feeds[1], 7).await;
        for feed in &feeds {
            client
                .until_rev(feed, if feed == &feeds[1] { 7 } else { 6 })
                .await;
        }
    }
    for feed in &feeds {
        let seen: BTreeSet<Vec<String>> = clients
            .iter()
            .map(|c| c.mirror.get(feed).unwrap().ids())
            .collect();
        assert_eq!(
            seen.len(),
            1,
            "{feed}: both gateways delivered the same items"
        );
        let snapshot = store.snapshot(feed).await.unwrap();
        let ids: Vec<String> = snapshot.items.iter().map(|i| i.id.to_string()).collect();
        assert_eq!(
            seen.into_iter().next().unwrap(),
            ids,
            "{feed}: equal to the server"
        );
    }
}

/// Six teams' feeds `team:{n}:tasks` on `cluster`, three rounds written
/// (`r0`..`r2`), and a gateway whose client follows them all at revision 3.
async fn six_teams_followed(
    cluster: &RedisCluster,
    instance: &str,
) -> (FeedStore, Vec<FeedName>, ThoonkServer, WsClient) {
    let target = RedisTarget::parse(&cluster.url()).unwrap();
    let store = FeedStore::open(&target, instance).await.unwrap();
    let feeds: Vec<_> = (1..=6)
        .map(|n| name(&format!("team:{{{n}}}:tasks")))
        .collect();
    for round in 0..3 {
        publish_round_through_failover(&store, &feeds, round).await;
    }
    let gateway = ThoonkServer::start(server_bin(), &cluster.url(), &["--queue", "{changes}"]);
    let mut client = WsClient::signed_in(&gateway.ws_url(), "ann").await;
    client.subscribe("team:*:tasks").await;
    for feed in &feeds {
        client.until_rev(feed, 3).await;
    }
    (store, feeds, gateway, client)
}

/// `ROLE` of the node on `port`: "master" or "slave".
async fn role(port: u16) -> String {
    let node = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut conn = node.get_multiplexed_async_connection().await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.unwrap();
    match &role[0] {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_fails_over_to_its_replica_and_clients_converge() {
    let mut cluster = RedisCluster::start(3, 1);
    let ports = cluster.ports();
    assert_eq!(role(ports[0]).await, "master");
    let (store, feeds, _gateway, mut client) = six_teams_followed(&cluster, "failover-test").await;
    // Replication is asynchronous: let the replicas catch up before the
    // crash, so that this test sees a failover without lost writes (what a
    // crash may lose is in docs/SECURITY.md).
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.kill9(0);
    until_failed_over(&ports, 0).await;
    // The client converges on the server's state of every feed.
    write_rounds_and_converge(&store, &feeds, &mut client, 3..6).await;
}

/// A job writes in one script, so on a cluster its feeds must share a shard:
/// one that writes two teams' feeds is rejected with `bad_request` and writes
/// nothing; one that writes two feeds of one team applies atomically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_writes_one_shard_atomically_and_one_spanning_shards_is_rejected() {
    use std::sync::Arc;
    use thoonk_protocol::{ChangeId, ChangeRequest, ErrorCode, Operation, Outcome};
    use thoonk_server::gateway::access::{OpenAccess, User};
    use thoonk_server::jobs::{
        run_workers, FeedWrite, Handlers, JobQueue, Plan, QueueSettings, WriteKind,
    };

    let cluster = RedisCluster::start(3, 0);
    let target = RedisTarget::parse(&cluster.url()).unwrap();
    let store = FeedStore::open(&target, "jobs-test").await.unwrap();
    let queue = JobQueue::open(&target, "{jobs}", QueueSettings::default())
        .await
        .unwrap();
    let mut handlers = Handlers::with_demo_actions();
    // Writes item `id` into each feed of `feeds`.
    handlers.register("write_all", |_ctx, payload| async move {
        let id = id(payload["id"].as_str().unwrap_or("x"));
        let writes = payload["feeds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| FeedWrite {
                feed: name(f.as_str().unwrap_or_default()),
                id: id.clone(),
                kind: WriteKind::Upsert {
                    item: json!(1),
                    position: None,
                },
                base: None,
                guard: None,
                create: Some(thoonk_server::feeds::FeedType::Feed.into()),
            })
            .collect();
        Ok(Plan {
            writes,
            result: serde_json::Value::Null,
        })
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = tokio::spawn(run_workers(
        target.clone(),
        "{jobs}".into(),
        QueueSettings::default(),
        handlers,
        Arc::new(OpenAccess),
        1,
        async {
            let _ = stopped.await;
        },
    ));
    let user = User { name: "ann".into() };
    let submit = |id: &str, feeds: serde_json::Value| ChangeRequest {
        id: ChangeId(id.into()),
        op: Operation::Action {
            name: "write_all".into(),
            payload: json!({ "id": id.replace(':', "-"), "feeds": feeds }),
        },
        base: Default::default(),
    };
    let outcome_of = |id: &'static str| {
        let queue = queue.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(outcome)) = queue.outcome(&ChangeId(id.into())).await {
                    return outcome;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no outcome for {id}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let same = submit(
        "c:1",
        json!(["team:{1}:member:ann:tasks", "team:{1}:member:bob:tasks"]),
    );
    queue.submit(&user, &same).await.unwrap();
    assert!(matches!(outcome_of("c:1").await, Outcome::Accepted { .. }));
    for feed in ["team:{1}:member:ann:tasks", "team:{1}:member:bob:tasks"] {
        let items = store.snapshot(&name(feed)).await.unwrap().items;
        assert_eq!(items.len(), 1, "{feed}");
    }

    let spanning = submit(
        "c:2",
        json!(["team:{1}:member:ann:tasks", "team:{2}:member:bob:tasks"]),
    );
    queue.submit(&user, &spanning).await.unwrap();
    match outcome_of("c:2").await {
        Outcome::Rejected { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("hash tag"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        store
            .snapshot(&name("team:{1}:member:ann:tasks"))
            .await
            .unwrap()
            .items
            .len(),
        1,
        "nothing of the rejected job was written"
    );
    let _ = stop.send(());
    workers.await.unwrap().unwrap();
}

/// One queue lives in one slot: with a queue per shard the gateways spread
/// the changes over the queues by hash tag (a team keeps its queue), and a
/// change resubmitted through another gateway meets its own ledger there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_spread_over_a_queue_per_shard_and_apply_once() {
    let cluster = RedisCluster::start(3, 0);
    let target = RedisTarget::parse(&cluster.url()).unwrap();
    let store = FeedStore::open(&target, "queues-test").await.unwrap();
    let queues = ["{changes-0}", "{changes-1}", "{changes-2}"];
    let args = ["--queue", "{changes-0},{changes-1},{changes-2}"];
    let first_node =
        redis::Client::open(format!("redis://127.0.0.1:{}/", cluster.ports()[0])).unwrap();
    let one = ThoonkServer::start(server_bin(), &cluster.url(), &args);
    let two = ThoonkServer::start(server_bin(), &cluster.url(), &args);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hubs_on(&first_node).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no hubs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let teams = 1..=12;
    let mut ann = WsClient::signed_in(&one.ws_url(), "ann").await;
    submit_to_every_team(&mut ann, teams.clone()).await;
    // The same client on the other gateway resubmits them all (as after a
    // lost connection): the ledgers answer, nothing applies twice.
    drop(ann);
    let mut again = WsClient::signed_in(&two.ws_url(), "ann").await;
    submit_to_every_team(&mut again, teams.clone()).await;
    for n in teams {
        let snapshot = store
            .snapshot(&name(&format!("team:{{{n}}}:tasks")))
            .await
            .unwrap();
        assert_eq!((snapshot.rev, snapshot.items.len()), (1, 1), "team {n}");
    }
    let mut conn = target.connect().await.unwrap();
    for queue in queues {
        let ledger: Vec<String> = redis::cmd("KEYS")
            .arg(thoonk_server::jobs::ledger_key(queue, "*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!ledger.is_empty(), "{queue} got no change");
    }
}

/// Submits a publish to `team:{n}:tasks` for every team `n` and waits until
/// each is accepted.
async fn submit_to_every_team(client: &mut WsClient, teams: std::ops::RangeInclusive<u32>) {
    let mut waiting = BTreeSet::new();
    for n in teams {
        let id = format!("test-ann:{n}");
        let frame = json!({"type": "submit", "change": {
            "id": id,
            "op": {"kind": "publish", "feed": format!("team:{{{n}}}:tasks"), "id": "t", "item": {"n": n}},
            "base": {},
        }});
        client.send_text(frame.to_string()).await;
        waiting.insert(id);
    }
    while !waiting.is_empty() {
        let (id, outcome) = client
            .until("an outcome", |m| match m {
                ServerMessage::Outcome { id, outcome } => Some((id.0.clone(), outcome.clone())),
                _ => None,
            })
            .await;
        assert!(
            matches!(outcome, thoonk_protocol::Outcome::Accepted { .. }),
            "{id}: {outcome:?}"
        );
        waiting.remove(&id);
    }
}

/// Replication is asynchronous: a primary killed before its replica received
/// its last writes leaves a promoted replica without them, and new writes
/// reuse their revisions. The feeds of that shard go on under a new epoch,
/// so a client that saw the lost revisions starts over from a snapshot and
/// converges, instead of keeping items the server no longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_loses_acknowledged_writes_resets_clients_instead_of_diverging() {
    let mut cluster = RedisCluster::start(3, 1);
    let replica = cluster
        .replica_of(0)
        .expect("the first primary has a replica");
    let (store, feeds, _gateway, mut client) = six_teams_followed(&cluster, "lost-tail-test").await;
    // Let the replica catch up, then stop it and drop its link: the next
    // writes reach only the primary (and the client).
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.pause(replica);
    let mut primary = redis::Client::open(format!("redis://127.0.0.1:{}/", cluster.ports()[0]))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "replica"])
        .query_async(&mut primary)
        .await
        .unwrap();
    for round in 3..5 {
        publish_round_through_failover(&store, &feeds, round).await;
    }
    for feed in &feeds {
        client.until_rev(feed, 5).await;
    }
    let before: Vec<_> = feeds
        .iter()
        .map(|f| client.mirror.get(f).unwrap().epoch)
        .collect();
    cluster.kill9(0);
    cluster.resume(replica);
    let ports = cluster.ports();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while role(ports[replica]).await != "master" {
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New writes on every shard; on the failed-over one they would reuse the
    // lost revisions 4 and 5.
    for round in 5..8 {
        publish_round_through_failover(&store, &feeds, round).await;
    }
    let mut lost = 0;
    for (feed, epoch) in feeds.iter().zip(before) {
        let server = store.snapshot(feed).await.unwrap();
        if !server.items.iter().any(|i| i.id.as_str() == "r4") {
            lost += 1;
            assert_ne!(server.epoch, epoch, "{feed}: lost writes, same epoch");
        }
        until_converged(&mut client, &store, feed).await;
    }
    assert!(
        lost > 0,
        "the failover lost no write: the test proves nothing"
    );
}
