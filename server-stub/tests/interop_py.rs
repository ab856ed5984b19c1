//! The other direction: our writes as thoonk.py reads and hears them, and a
//! change a browser client submits through the gateway, worked by a thoonk.py
//! worker whose classic write is adopted.

mod interop_support;

use interop_support::*;
use serde_json::{json, Value};
use thoonk_protocol::{ChangeId, ChangeRequest, Operation, Outcome, Position};
use thoonk_server::feeds::{FeedSettings, FeedType};
use thoonk_server::interop::run_adopter;

fn heard(event: &Value) -> String {
    let e = event["event"].as_str().unwrap();
    match e {
        "publish" | "edit" => format!(
            "{e} {} {}",
            event["id"].as_str().unwrap(),
            event["item"].as_str().unwrap()
        ),
        "retract" => format!("retract {}", event["id"].as_str().unwrap()),
        "position" => format!(
            "position {} {}",
            event["id"].as_str().unwrap(),
            event["pos"].as_str().unwrap()
        ),
        _ => format!("{e} {}", event["feed"].as_str().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_writes_are_what_thoonk_py_reads_and_hears() {
    let env = Env::start().await;
    let (notes, tasks) = (name("notes"), name("tasks"));
    env.store
        .create(&tasks, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    env.store
        .create(&notes, &FeedSettings::new(FeedType::Feed))
        .await
        .unwrap();
    // The listener subscribes to the feeds that exist when it starts.
    let mut py = env.py(true).await;
    // An adopter runs meanwhile: it must not adopt any of our writes.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let adopter = tokio::spawn(run_adopter(env.target.clone(), env.store.clone(), async {
        let _ = stopped.await;
    }));

    let s = &env.store;
    s.publish(&notes, Some(&id("a")), &json!({"x": 1}), None)
        .await
        .unwrap();
    s.publish(&notes, Some(&id("a")), &json!({"x": 2}), None)
        .await
        .unwrap();
    s.publish(&notes, Some(&id("b")), &json!("b"), None)
        .await
        .unwrap();
    s.retract(&notes, &id("b"), None).await.unwrap();
    s.insert(&tasks, Some(&id("t1")), &json!({"t": 1}), None, None)
        .await
        .unwrap();
    s.insert(
        &tasks,
        Some(&id("t2")),
        &json!({"t": 2}),
        Some(&Position::Begin),
        None,
    )
    .await
    .unwrap();
    s.insert(
        &tasks,
        Some(&id("t3")),
        &json!({"t": 3}),
        Some(&Position::After(id("t1"))),
        None,
    )
    .await
    .unwrap();
    s.edit(&tasks, &id("t2"), &json!({"t": 22}), None)
        .await
        .unwrap();
    s.move_item(&tasks, &id("t1"), &Position::Before(id("t2")), None)
        .await
        .unwrap();
    s.retract(&tasks, &id("t3"), None).await.unwrap();
    s.create(&name("later"), &FeedSettings::new(FeedType::Feed))
        .await
        .unwrap();

    let later = name("later");
    let (n, t) = (notes.as_str(), tasks.as_str());
    let expected = [
        (n, "publish a {\"x\":1}"),
        (n, "edit a {\"x\":2}"),
        (n, "publish b \"b\""),
        (n, "retract b"),
        (t, "publish t1 {\"t\":1}"),
        (t, "position t1 :end"),
        (t, "publish t2 {\"t\":2}"),
        (t, "position t2 begin:"),
        (t, "publish t3 {\"t\":3}"),
        (t, "position t3 t1:"),
        // The classic contract announces a sorted feed's edit on feed.publish.
        (t, "publish t2 {\"t\":22}"),
        (t, "position t1 :t2"),
        (t, "retract t3"),
        (later.as_str(), &format!("create {later}")),
    ]
    .map(|(feed, text)| (feed.to_owned(), text.to_owned()));
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let event = py.event().await;
        got.push((event["feed"].as_str().unwrap().to_owned(), heard(&event)));
    }
    if env.redis.is_cluster() {
        // A cluster forwards each node's messages in order, but feeds on
        // different nodes interleave as they arrive: the order is per feed.
        let of = |all: &[(String, String)], feed: &str| -> Vec<String> {
            all.iter()
                .filter(|(f, _)| f == feed)
                .map(|(_, text)| text.clone())
                .collect()
        };
        for feed in [n, t, later.as_str()] {
            assert_eq!(of(&got, feed), of(&expected, feed), "{feed}");
        }
    } else {
        assert_eq!(got, expected);
    }

    // thoonk.py reads what our snapshots show.
    for feed in [&notes, &tasks] {
        let snapshot = snapshot_items(s, feed).await;
        let ids = py.call(json!({"op": "ids", "feed": feed.as_str()})).await;
        let want: Vec<&str> = snapshot.iter().map(|i| i.0.as_str()).collect();
        assert_eq!(ids, json!(want), "{feed}: order");
        let items = py.call(json!({"op": "items", "feed": feed.as_str()})).await;
        for (item_id, value) in &snapshot {
            let text = items[item_id].as_str().unwrap();
            assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), value);
        }
    }

    // A thoonk.py write after ours is adopted after them; ours never are.
    py.call(json!({"op": "append", "feed": "tasks", "item": "{\"t\":4}"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while full_log(s, &tasks).await.len() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the append was not adopted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = full_log(s, &tasks).await;
    assert_eq!(
        ops(&log),
        [
            "publish t1",
            "publish t2",
            "publish t3",
            "edit t2",
            "position t1",
            "retract t3",
            "publish 1"
        ]
    );
    assert_eq!(full_log(s, &notes).await.len(), 4);
    let _ = stop.send(());
    adopter.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_submitted_through_the_gateway_is_worked_by_thoonk_py() {
    let env = Env::start().await;
    let mut py = env.py(false).await;
    py.call(json!({"op": "create", "feed": "notes", "type": "feed"}))
        .await;
    // No workers of ours: only the thoonk.py worker takes the job.
    let g = gateway(&env, &["--workers", "0"]);
    wait_for_newfeed_listeners(&env, 1).await;
    let notes = name("notes");
    let mut client = client(&g.ws_url(), "web").await;
    client.follow(&notes).await;
    let change = ChangeRequest {
        id: ChangeId("web:1".into()),
        op: Operation::Publish {
            feed: notes.clone(),
            id: id("n1"),
            item: json!({"text": "hello"}),
            position: None,
        },
        base: Default::default(),
    };
    client
        .send(&thoonk_protocol::ClientMessage::Submit { change })
        .await;

    // The thoonk.py worker: take the job, apply it with a classic publish,
    // finish it with an outcome.
    let job = py
        .call(json!({"op": "get", "queue": "changes", "timeout": 10}))
        .await;
    assert_eq!(job[0], "web:1");
    let payload: Value = serde_json::from_str(job[1].as_str().unwrap()).unwrap();
    assert_eq!(payload["user"], "tester");
    assert_eq!(payload["op"]["kind"], "publish");
    let item = payload["op"]["item"].to_string();
    py.call(json!({"op": "publish", "feed": "notes", "id": "n1", "item": item}))
        .await;
    let outcome = json!({"status": "accepted", "result": {"worked_by": "thoonk.py"}, "revs": {}});
    py.call(
        json!({"op": "finish", "queue": "changes", "id": "web:1", "result": outcome.to_string()}),
    )
    .await;

    let got = client.until_outcome("web:1").await;
    assert_eq!(got, serde_json::from_value::<Outcome>(outcome).unwrap());
    // The classic publish was adopted: the client has it with a revision.
    client.until_rev(&notes, 1).await;
    let event = &client.mirror.get(&notes).unwrap().events[0];
    assert_eq!(event.change.id, id("n1"));
    assert_eq!(event.change.item, Some(json!({"text": "hello"})));
}
