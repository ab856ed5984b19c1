//! The outbox drain through a real gateway and its workers: a `submit_batch`
//! of one feed's changes is answered per change (`ack`, then each change's
//! own `outcome`), fanned out as events in order, remembered per change id
//! (a batch sent again answers from the ledger), stopped by a conflict
//! (the rest unanswered until sent again after it), refused whole when
//! malformed; a single `submit` still works beside it.

use thoonk_system_tests::gateway as support;

use std::collections::BTreeMap;

use serde_json::json;
use support::{name, Env, WsClient};
use thoonk_protocol::{
    Base, ChangeId, ChangeRequest, ClientMessage, ErrorCode, FeedName, ItemId, Operation, Outcome,
    ServerMessage, MAX_BATCH_CHANGES,
};

fn publish(id: &str, feed: &FeedName, item: &str) -> ChangeRequest {
    ChangeRequest {
        id: ChangeId(id.into()),
        op: Operation::Publish {
            feed: feed.clone(),
            id: ItemId::new(item).unwrap(),
            item: json!({"title": item}),
            position: None,
        },
        base: BTreeMap::new(),
    }
}

/// Reads until every change of `ids` has its outcome; fails on an
/// outcome of another id. Acks are checked to come before their outcome.
async fn outcomes(client: &mut WsClient, ids: &[&str]) -> BTreeMap<String, Outcome> {
    let mut acked = Vec::new();
    let mut got = BTreeMap::new();
    while got.len() < ids.len() {
        match client.next().await {
            ServerMessage::Ack { id } => acked.push(id.0),
            ServerMessage::Outcome { id, outcome } => {
                assert!(
                    ids.contains(&id.0.as_str()),
                    "unexpected outcome of {}",
                    id.0
                );
                assert!(acked.contains(&id.0), "{} answered before its ack", id.0);
                got.insert(id.0, outcome);
            }
            _ => {}
        }
    }
    got
}

fn rev_of(outcome: &Outcome, feed: &FeedName) -> u64 {
    match outcome {
        Outcome::Accepted { revs, .. } => revs[feed],
        other => panic!("expected accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_is_answered_and_fanned_out_per_change_and_remembered_by_id() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let feed = name("team:1:member:ann:tasks");
    let mut watcher = WsClient::signed_in(&server.ws_url(), "bob").await;
    watcher.subscribe(feed.as_str()).await;
    watcher.until_rev(&feed, 0).await;

    let mut ann = WsClient::signed_in(&server.ws_url(), "ann").await;
    let batch: Vec<ChangeRequest> = (1..=5)
        .map(|n| publish(&format!("test-ann:{n}"), &feed, &format!("t{n}")))
        .collect();
    ann.send(&ClientMessage::SubmitBatch {
        changes: batch.clone(),
    })
    .await;
    let ids: Vec<&str> = batch.iter().map(|c| c.id.0.as_str()).collect();
    let got = outcomes(&mut ann, &ids).await;
    let revs: Vec<u64> = ids.iter().map(|id| rev_of(&got[*id], &feed)).collect();
    assert_eq!(revs, [1, 2, 3, 4, 5], "applied in the batch's order");
    let mirror = watcher.until_rev(&feed, 5).await;
    assert_eq!(mirror.ids(), ["t1", "t2", "t3", "t4", "t5"]);

    // A new connection sends the batch again: each change answers with its
    // stored outcome, nothing is applied twice.
    let mut again = WsClient::signed_in(&server.ws_url(), "ann").await;
    again
        .send(&ClientMessage::SubmitBatch {
            changes: batch.clone(),
        })
        .await;
    assert_eq!(outcomes(&mut again, &ids).await, got);
    // A single submit beside it, as before.
    again
        .send(&ClientMessage::Submit {
            change: publish("test-ann:6", &feed, "t6"),
        })
        .await;
    let single = outcomes(&mut again, &["test-ann:6"]).await;
    assert_eq!(rev_of(&single["test-ann:6"], &feed), 6);
    watcher.until_rev(&feed, 6).await;
}

#[tokio::test]
async fn a_conflict_in_a_batch_leaves_the_rest_unanswered_until_it_is_resolved() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let feed = name("team:1:member:ann:tasks");
    let mut bob = WsClient::signed_in(&server.ws_url(), "bob").await;
    bob.send(&ClientMessage::Submit {
        change: publish("test-bob:1", &feed, "x"),
    })
    .await;
    let theirs = outcomes(&mut bob, &["test-bob:1"]).await;
    let (epoch, rev) = match &theirs["test-bob:1"] {
        Outcome::Accepted { revs, epochs, .. } => (epochs[&feed], revs[&feed]),
        other => panic!("{other:?}"),
    };

    let mut ann = WsClient::signed_in(&server.ws_url(), "ann").await;
    let stale = Base::at(epoch, rev - 1);
    let mut edit = publish("test-ann:2", &feed, "x");
    edit.base.insert(feed.clone(), stale);
    let batch = vec![
        publish("test-ann:1", &feed, "y"),
        edit,
        publish("test-ann:3", &feed, "z"),
    ];
    ann.send(&ClientMessage::SubmitBatch {
        changes: batch.clone(),
    })
    .await;
    let got = outcomes(&mut ann, &["test-ann:1", "test-ann:2"]).await;
    rev_of(&got["test-ann:1"], &feed);
    assert!(matches!(got["test-ann:2"], Outcome::Conflict { .. }));
    // Sent again: the first two answer from the ledger; the third, after
    // the conflict, is deferred: no answer before the pong.
    let before = ann.log.len();
    ann.send(&ClientMessage::SubmitBatch {
        changes: batch.clone(),
    })
    .await;
    assert_eq!(outcomes(&mut ann, &["test-ann:1", "test-ann:2"]).await, got);
    ann.ping().await;
    assert!(
        !ann.log[before..].iter().any(|f| f.contains("test-ann:3")),
        "nothing of the change after the conflict: {:?}",
        &ann.log[before..]
    );
    // The resolution, then the rest: applied in order.
    let mut resolved = publish("test-ann:4", &feed, "x");
    resolved.base.insert(feed.clone(), Base::at(epoch, rev + 1));
    ann.send(&ClientMessage::SubmitBatch {
        changes: vec![resolved, batch[2].clone()],
    })
    .await;
    let done = outcomes(&mut ann, &["test-ann:4", "test-ann:3"]).await;
    assert!(rev_of(&done["test-ann:4"], &feed) < rev_of(&done["test-ann:3"], &feed));
}

#[tokio::test]
async fn a_malformed_batch_is_refused_whole() {
    let env = Env::start().await;
    let server = env.gateway(&[]).await;
    let feed = name("team:1:member:ann:tasks");
    let other = name("team:1:member:bob:tasks");
    let mut ann = WsClient::signed_in(&server.ws_url(), "ann").await;
    let refusals = [
        (
            vec![
                publish("test-ann:1", &feed, "a"),
                publish("test-ann:2", &other, "b"),
            ],
            ErrorCode::BadRequest,
        ),
        (
            vec![
                publish("test-ann:1", &feed, "a"),
                publish("test-bob:2", &feed, "b"),
            ],
            ErrorCode::Forbidden,
        ),
        (
            (0..=MAX_BATCH_CHANGES)
                .map(|n| publish(&format!("test-ann:{n}"), &feed, "a"))
                .collect(),
            ErrorCode::BadRequest,
        ),
        (Vec::new(), ErrorCode::BadRequest),
    ];
    for (changes, code) in refusals {
        ann.send(&ClientMessage::SubmitBatch { changes }).await;
        ann.expect_error(code).await;
    }
    ann.ping().await;
    assert!(
        !ann.log.iter().any(|frame| frame.contains("\"ack\"")),
        "nothing was queued: {:?}",
        ann.log
    );
}
