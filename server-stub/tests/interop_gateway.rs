//! thoonk.py writes, two gateway processes adopt: WebSocket clients of both
//! gateways see every change once, with dense revisions, and the change log
//! holds each change exactly once.

mod interop_support;

use interop_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thoonk_py_changes_reach_clients_of_two_gateways_once_with_dense_revisions() {
    let env = Env::start().await;
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "notes", "type": "feed"}))
        .await;
    py.call(json!({"op": "create", "feed": "team:1:tasks", "type": "sorted_feed"}))
        .await;
    let g1 = gateway(&env, &["--workers", "0"]);
    let g2 = gateway(&env, &["--workers", "0"]);
    wait_for_newfeed_listeners(&env, 2).await;
    let (notes, tasks) = (name("notes"), name("team:1:tasks"));
    let mut c1 = client(&g1.ws_url(), "one").await;
    let mut c2 = client(&g2.ws_url(), "two").await;
    for client in [&mut c1, &mut c2] {
        client.follow(&notes).await;
        client.follow(&tasks).await;
    }

    // Each step: one thoonk.py call, then the change it must produce.
    let steps: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"op": "publish", "feed": "notes", "id": "a", "item": "{\"n\":1}"}),
            "publish a",
        ),
        (
            json!({"op": "publish", "feed": "notes", "id": "b", "item": "text, not JSON"}),
            "publish b",
        ),
        (
            json!({"op": "publish", "feed": "notes", "id": "a", "item": "{\"n\":2}"}),
            "edit a",
        ),
        (
            json!({"op": "retract", "feed": "notes", "id": "b"}),
            "retract b",
        ),
        (
            json!({"op": "append", "feed": "team:1:tasks", "item": "{\"t\":\"one\"}"}),
            "publish 1",
        ),
        (
            json!({"op": "append", "feed": "team:1:tasks", "item": "{\"t\":\"two\"}"}),
            "publish 2",
        ),
        (
            json!({"op": "prepend", "feed": "team:1:tasks", "item": "{\"t\":\"zero\"}"}),
            "publish 3",
        ),
        (
            json!({"op": "after", "feed": "team:1:tasks", "rel": "3", "item": "{\"t\":\"half\"}"}),
            "publish 4",
        ),
        (
            json!({"op": "edit", "feed": "team:1:tasks", "id": "1", "item": "{\"t\":\"ONE\"}"}),
            "edit 1",
        ),
        (
            json!({"op": "move", "feed": "team:1:tasks", "pos": ":end", "id": "3"}),
            "position 3",
        ),
        (
            json!({"op": "move", "feed": "team:1:tasks", "pos": ":4", "id": "2"}),
            "position 2",
        ),
        (
            json!({"op": "retract", "feed": "team:1:tasks", "id": "4"}),
            "retract 4",
        ),
    ];
    let (mut n_rev, mut t_rev) = (0, 0);
    for (command, _) in &steps {
        let feed = if command["feed"] == "notes" {
            n_rev += 1;
            (&notes, n_rev)
        } else {
            t_rev += 1;
            (&tasks, t_rev)
        };
        py.call(command.clone()).await;
        c1.until_rev(feed.0, feed.1).await;
        c2.until_rev(feed.0, feed.1).await;
    }

    let expected_notes: Vec<&str> = steps[..4].iter().map(|s| s.1).collect();
    let expected_tasks: Vec<&str> = steps[4..].iter().map(|s| s.1).collect();
    for (feed, expected) in [(&notes, &expected_notes), (&tasks, &expected_tasks)] {
        let log = full_log(&env.store, feed).await;
        assert_eq!(&ops(&log), expected, "{feed}: each change adopted once");
        for client in [&c1, &c2] {
            assert_eq!(
                client.mirror.get(feed).unwrap().events,
                log,
                "{feed}: clients got the log"
            );
        }
        let replayed = ReceivedFeed::replayed(feed, &log);
        assert_eq!(replayed.values(), snapshot_items(&env.store, feed).await);
    }
    let tasks_now = snapshot_items(&env.store, &tasks).await;
    let ids: Vec<&str> = tasks_now.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(ids, ["2", "1", "3"]);

    // Later sweeps and runs of both gateways add nothing: a change made
    // through our scripts meanwhile gets the next revision.
    env.store
        .publish(&notes, Some(&id("c")), &json!({"ours": true}), None)
        .await
        .unwrap();
    c1.until_rev(&notes, n_rev + 1).await;
    c2.until_rev(&notes, n_rev + 1).await;
    assert_eq!(full_log(&env.store, &notes).await.len() as u64, n_rev + 1);
    drop((g1, g2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_no_gateway_ran_are_adopted_when_one_starts() {
    let env = Env::start().await;
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "offline", "type": "sorted_feed"}))
        .await;
    for i in 0..3 {
        py.call(json!({"op": "prepend", "feed": "offline", "item": format!("{i}")}))
            .await;
    }
    py.call(json!({"op": "move", "feed": "offline", "pos": ":end", "id": "3"}))
        .await;
    let feed = name("offline");
    assert_eq!(env.store.snapshot(&feed).await.unwrap().rev, 0);
    let g = gateway(&env, &["--workers", "0"]);
    // The start-up sweep adopts them: a client sees them as revisions.
    let mut client = client(&g.ws_url(), "late").await;
    client.follow(&feed).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut log = full_log(&env.store, &feed).await;
    while log.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not adopted in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        log = full_log(&env.store, &feed).await;
    }
    assert_eq!(
        ops(&log),
        ["publish 2", "publish 1", "publish 3"],
        "in the classic order"
    );
    client.until_rev(&feed, 3).await;
    let replayed = ReceivedFeed::replayed(&feed, &log);
    let snapshot = snapshot_items(&env.store, &feed).await;
    assert_eq!(replayed.values(), snapshot);
    let ids: Vec<&str> = snapshot.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(ids, ["2", "1", "3"]);
}
