//! The outbox drain through a real gateway and its workers: a `submit_batch`
//! of one feed's changes is answered per change (its ack, then its own
//! outcome), in one `acks` and one `outcomes` frame per batch, fanned out as events in order, remembered per change id
//! (a batch sent again answers from the ledger), stopped by a conflict
//! (the rest unanswered until sent again after it), refused whole when
//! malformed; a single `submit` still works beside it.

use thoonk_system_tests::gateway as support;

use std::collections::BTreeMap;

use serde_json::json;
use support::{name, Env, WsClient};
use thoonk_protocol::{
    Base, ChangeId, ChangeOutcomeOf, ChangeRequest, ClientMessage, ErrorCode, FeedName, ItemId,
    Operation, Outcome, ServerMessage, MAX_BATCH_CHANGES,
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

/// The answers to submitted changes, and the frames that carried them.
#[derive(Debug, Default)]
struct Answers {
    outcomes: BTreeMap<String, Outcome>,
    /// `ack` and `acks` frames.
    ack_frames: usize,
    /// `outcome` and `outcomes` frames.
    outcome_frames: usize,
}

/// Reads until every change of `ids` has its outcome; fails on an
/// outcome of another id. Acks are checked to come before their outcome.
async fn answers(client: &mut WsClient, ids: &[&str]) -> Answers {
    let mut acked = Vec::new();
    let mut got = Answers::default();
    while got.outcomes.len() < ids.len() {
        let finished = match client.next().await {
            ServerMessage::Ack { id } => {
                got.ack_frames += 1;
                acked.push(id.0);
                continue;
            }
            ServerMessage::Acks { ids } => {
                got.ack_frames += 1;
                acked.extend(ids.into_iter().map(|id| id.0));
                continue;
            }
            ServerMessage::Outcome { id, outcome } => vec![ChangeOutcomeOf { id, outcome }],
            ServerMessage::Outcomes { outcomes } => outcomes,
            _ => continue,
        };
        got.outcome_frames += 1;
        for ChangeOutcomeOf { id, outcome } in finished {
            assert!(
                ids.contains(&id.0.as_str()),
                "unexpected outcome of {}",
                id.0
            );
            assert!(acked.contains(&id.0), "{} answered before its ack", id.0);
            got.outcomes.insert(id.0, outcome);
        }
    }
    got
}

/// The outcomes of `ids` (see [`answers`]).
async fn outcomes(client: &mut WsClient, ids: &[&str]) -> BTreeMap<String, Outcome> {
    answers(client, ids).await.outcomes
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
    // The submitter follows the feed too: the echo of its own batch comes
    // in `changes` frames (its runs of consecutive revisions).
    ann.subscribe(feed.as_str()).await;
    ann.until_rev(&feed, 0).await;
    let batch: Vec<ChangeRequest> = (1..=5)
        .map(|n| publish(&format!("test-ann:{n}"), &feed, &format!("t{n}")))
        .collect();
    ann.send(&ClientMessage::SubmitBatch {
        changes: batch.clone(),
    })
    .await;
    let ids: Vec<&str> = batch.iter().map(|c| c.id.0.as_str()).collect();
    let answered = answers(&mut ann, &ids).await;
    assert_eq!(
        (answered.ack_frames, answered.outcome_frames),
        (1, 1),
        "a batch is acknowledged in one frame and its outcomes come in one"
    );
    let got = answered.outcomes;
    let revs: Vec<u64> = ids.iter().map(|id| rev_of(&got[*id], &feed)).collect();
    assert_eq!(revs, [1, 2, 3, 4, 5], "applied in the batch's order");
    let mirror = watcher.until_rev(&feed, 5).await;
    assert_eq!(mirror.ids(), ["t1", "t2", "t3", "t4", "t5"]);
    let own = ann.until_rev(&feed, 5).await;
    assert_eq!(own.ids(), ["t1", "t2", "t3", "t4", "t5"]);

    // A new connection sends the batch again: each change answers with its
    // stored outcome, nothing is applied twice.
    let mut again = WsClient::signed_in(&server.ws_url(), "ann").await;
    again
        .send(&ClientMessage::SubmitBatch {
            changes: batch.clone(),
        })
        .await;
    let answered = answers(&mut again, &ids).await;
    assert_eq!((answered.ack_frames, answered.outcome_frames), (1, 1));
    assert_eq!(answered.outcomes, got);
    // A single submit beside it, as before: an `ack` and an `outcome`.
    again
        .send(&ClientMessage::Submit {
            change: publish("test-ann:6", &feed, "t6"),
        })
        .await;
    let single = answers(&mut again, &["test-ann:6"]).await;
    assert_eq!((single.ack_frames, single.outcome_frames), (1, 1));
    assert_eq!(rev_of(&single.outcomes["test-ann:6"], &feed), 6);
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
