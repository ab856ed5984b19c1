//! The store API the gateway uses: publish, snapshot, changes since, registry.

mod feeds_support;

use feeds_support::{id, name, Env};
use serde_json::json;
use thoonk_protocol::{ChangeOp, FeedPosition, Position};
use thoonk_server::feeds::{change_channel, ChangeNotice, Since, Snapshot};

#[tokio::test]
async fn publish_creates_the_feed_and_snapshot_reads_it_back() {
    let env = Env::start().await;
    let feed = name("team:1:tasks");

    let empty = env.store.snapshot(&feed).await.unwrap();
    assert_eq!(
        empty,
        Snapshot {
            epoch: 0,
            rev: 0,
            items: vec![]
        }
    );

    let a = env
        .store
        .publish(&feed, Some(&id("a")), &json!({"title": "A"}), Some("c1:1"))
        .await
        .unwrap();
    assert_eq!(a.rev, 1);
    assert!(a.epoch > 0 && a.epoch < 1 << 53, "epoch {}", a.epoch);
    let b = env
        .store
        .publish(&feed, None, &json!([1, 2.5, "x"]), None)
        .await
        .unwrap();
    assert_eq!((b.epoch, b.rev), (a.epoch, 2));
    let edit = env
        .store
        .publish(&feed, Some(&id("a")), &json!({"title": "A2"}), None)
        .await
        .unwrap();
    assert_eq!(edit.rev, 3);

    let snap = env.store.snapshot(&feed).await.unwrap();
    assert_eq!((snap.epoch, snap.rev), (a.epoch, 3));
    let items: Vec<_> = snap
        .items
        .iter()
        .map(|i| (i.id.as_str().to_owned(), i.item.clone(), i.rev))
        .collect();
    // The edit of a time-ordered feed moves the item to the end, as classic does.
    assert_eq!(
        items,
        vec![
            (b.id.as_str().to_owned(), json!([1, 2.5, "x"]), 2),
            ("a".to_owned(), json!({"title": "A2"}), 3),
        ]
    );
    assert_eq!(env.store.feeds().await.unwrap(), vec![feed]);
}

#[tokio::test]
async fn changes_since_serves_the_log_or_resets() {
    let env = Env::start().await;
    let feed = name("f");
    let mut last = None;
    for n in 0..5 {
        last = Some(
            env.store
                .publish(&feed, Some(&id(&format!("i{n}"))), &json!(n), Some("job"))
                .await
                .unwrap(),
        );
    }
    let epoch = last.unwrap().epoch;

    let Since::Changes { epoch: e, events } = env
        .store
        .changes_since(&feed, FeedPosition { epoch, rev: 2 })
        .await
        .unwrap()
    else {
        panic!("expected changes");
    };
    assert_eq!(e, epoch);
    assert_eq!(events.iter().map(|e| e.rev).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(events[0].change.op, ChangeOp::Publish);
    assert_eq!(events[0].change.id, id("i2"));
    assert_eq!(events[0].change.item, Some(json!(2)));
    assert_eq!(events[0].change.position, Some(Position::End));
    assert_eq!(events[0].change.job.as_deref(), Some("job"));

    let up_to_date = env
        .store
        .changes_since(&feed, FeedPosition { epoch, rev: 5 })
        .await
        .unwrap();
    assert_eq!(
        up_to_date,
        Since::Changes {
            epoch,
            events: vec![]
        }
    );

    let snapshot = env.store.snapshot(&feed).await.unwrap();
    for stale in [
        FeedPosition {
            epoch: epoch - 1,
            rev: 2,
        },
        FeedPosition { epoch, rev: 6 },
        FeedPosition { epoch: 0, rev: 0 },
    ] {
        assert_eq!(
            env.store.changes_since(&feed, stale).await.unwrap(),
            Since::Reset(snapshot.clone()),
            "from {stale:?}"
        );
    }
}

#[tokio::test]
async fn foreign_items_that_are_not_json_read_as_strings() {
    let env = Env::start().await;
    let feed = name("legacy");
    env.store
        .publish(&feed, Some(&id("a")), &json!(1), None)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("feed.items:{}", name("legacy")))
        .arg("a")
        .arg("plain text, not JSON")
        .query_async(&mut env.conn().await)
        .await
        .unwrap();
    let snap = env.store.snapshot(&feed).await.unwrap();
    assert_eq!(snap.items[0].item, json!("plain text, not JSON"));
    // Its previous value in the change log and notices reads the same way.
    let mut rec = env.listen(&[change_channel(&feed)], &[]).await;
    env.store
        .publish(&feed, Some(&id("a")), &json!(2), None)
        .await
        .unwrap();
    let history = env.store.history(&feed, 1, 10).await.unwrap();
    assert_eq!(
        history.events[0].change.prev,
        Some(json!("plain text, not JSON"))
    );
    let notices = rec.drain().await;
    assert_eq!(notices.len(), 1);
    let notice: ChangeNotice = serde_json::from_slice(&notices[0].1).unwrap();
    assert_eq!(notice.feed, feed);
    assert_eq!((notice.epoch, notice.rev), (history.epoch, 2));
    assert_eq!(notice.change, history.events[0].change);
}

#[tokio::test]
async fn snapshots_of_large_feeds_are_complete() {
    const ITEMS: usize = 12_345;
    let env = Env::start().await;
    let feed = name("large");
    env.store
        .create(
            &feed,
            &thoonk_server::feeds::FeedSettings::new(thoonk_server::feeds::FeedType::SortedFeed),
        )
        .await
        .unwrap();
    // Filled the classic way (no revisions), in one pipeline.
    let mut pipe = redis::pipe();
    for n in 0..ITEMS {
        pipe.rpush(format!("feed.ids:{}", name("large")), format!("i{n}"))
            .hset(
                format!("feed.items:{}", name("large")),
                format!("i{n}"),
                n.to_string(),
            )
            .ignore()
            .ignore();
    }
    let _: () = pipe.query_async(&mut env.conn().await).await.unwrap();
    let last = env
        .store
        .publish(&feed, Some(&id("last")), &json!("end"), None)
        .await
        .unwrap();

    let snap = env.store.snapshot(&feed).await.unwrap();
    assert_eq!(snap.items.len(), ITEMS + 1);
    for (n, item) in snap.items[..ITEMS].iter().enumerate() {
        assert_eq!(
            (item.id.as_str(), &item.item, item.rev),
            (format!("i{n}").as_str(), &json!(n), 0)
        );
    }
    assert_eq!(snap.items[ITEMS].rev, last.rev);
}
