//! Thoonk classic compatibility: keys, Redis types and event payloads, byte for byte.

mod feeds_support;

use std::collections::HashMap;

use feeds_support::{id, msg, name, Env, INSTANCE};
use redis::AsyncCommands;
use serde_json::json;
use thoonk_protocol::Position;
use thoonk_server::feeds::{
    edit_channel, position_channel, publish_channel, retract_channel, ConfigChange, FeedSettings,
    FeedType, CONFFEED_CHANNEL, DELFEED_CHANNEL, NEWFEED_CHANNEL,
};
use thoonk_server::redis_target::RedisConn;

fn classic_channels(feed: &str) -> Vec<String> {
    let feed = name(feed);
    vec![
        NEWFEED_CHANNEL.to_owned(),
        DELFEED_CHANNEL.to_owned(),
        CONFFEED_CHANNEL.to_owned(),
        publish_channel(&feed),
        edit_channel(&feed),
        retract_channel(&feed),
        position_channel(&feed),
    ]
}

async fn key_type(conn: &mut RedisConn, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn time_ordered_feed_speaks_classic() {
    let env = Env::start().await;
    let feed = name("news");
    let news = feed.as_str();
    let mut rec = env.listen(&classic_channels("news"), &[]).await;
    let mut conn = env.conn().await;
    let announce = format!("{news}\0{INSTANCE}");

    let settings = FeedSettings {
        kind: FeedType::Feed,
        max_length: Some(2),
        retention: None,
    };
    env.store.create(&feed, &settings).await.unwrap();
    assert_eq!(
        rec.drain().await,
        [msg("newfeed", &announce), msg("conffeed", &announce)]
    );

    let before_ms = env.redis_ms().await;
    let s = &env.store;
    s.publish(&feed, Some(&id("a")), &json!({"v": 1}), None)
        .await
        .unwrap();
    s.publish(&feed, Some(&id("b")), &json!({"v": 2}), None)
        .await
        .unwrap();
    // An edit in a full feed trims nothing.
    s.publish(&feed, Some(&id("a")), &json!({"v": 3}), None)
        .await
        .unwrap();
    // A new item in a full feed trims the oldest (b: the edit re-scored a).
    s.publish(&feed, Some(&id("c")), &json!("ünï/\"q\""), None)
        .await
        .unwrap();
    let after_ms = env.redis_ms().await;
    assert_eq!(
        rec.drain().await,
        [
            msg(&format!("feed.publish:{news}"), "a\0{\"v\":1}"),
            msg(&format!("feed.publish:{news}"), "b\0{\"v\":2}"),
            msg(&format!("feed.edit:{news}"), "a\0{\"v\":3}"),
            msg(&format!("feed.retract:{news}"), "b"),
            msg(&format!("feed.publish:{news}"), "c\0\"ünï/\\\"q\\\"\""),
        ]
    );

    assert_eq!(
        key_type(&mut conn, &format!("feed.ids:{news}")).await,
        "zset"
    );
    assert_eq!(
        key_type(&mut conn, &format!("feed.items:{news}")).await,
        "hash"
    );
    assert_eq!(
        key_type(&mut conn, &format!("feed.config:{news}")).await,
        "hash"
    );
    assert_eq!(key_type(&mut conn, "feeds").await, "set");
    let ids: Vec<(String, f64)> = conn
        .zrange_withscores(format!("feed.ids:{news}"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        ids.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );
    for (item, score) in &ids {
        // Scores are Redis server time in milliseconds, bumped by one per
        // write at most when writes share a millisecond.
        assert_eq!(score.fract(), 0.0, "{item}: {score}");
        let score = *score as u64;
        assert!(
            (before_ms..=after_ms + 4).contains(&score),
            "{item}: {score} not in {before_ms}..={after_ms}+4"
        );
    }
    assert!(ids[0].1 < ids[1].1, "publish order is score order: {ids:?}");
    let items: HashMap<String, Vec<u8>> = conn.hgetall(format!("feed.items:{news}")).await.unwrap();
    assert_eq!(
        items,
        HashMap::from([
            ("a".to_owned(), b"{\"v\":3}".to_vec()),
            ("c".to_owned(), "\"ünï/\\\"q\\\"\"".as_bytes().to_vec()),
        ])
    );
    let config: HashMap<String, String> =
        conn.hgetall(format!("feed.config:{news}")).await.unwrap();
    assert_eq!(config["type"], "feed");
    assert_eq!(config["max_length"], "2");
    let publishes: String = conn.get(format!("feed.publishes:{news}")).await.unwrap();
    assert_eq!(publishes, "4");
    let registered: bool = conn.sismember("feeds", news).await.unwrap();
    assert!(registered);

    s.retract(&feed, &id("a"), None).await.unwrap();
    s.configure(
        &feed,
        &ConfigChange {
            max_length: Some(5),
            retention: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        rec.drain().await,
        [
            msg(&format!("feed.retract:{news}"), "a"),
            msg("conffeed", &announce),
        ]
    );
    assert!(s.delete(&feed).await.unwrap());
    assert_eq!(rec.drain().await, [msg("delfeed", &announce)]);
    let left: Vec<String> = conn.keys(format!("*{news}*")).await.unwrap();
    assert_eq!(left, Vec::<String>::new());
    let registered: bool = conn.sismember("feeds", news).await.unwrap();
    assert!(!registered);
}

#[tokio::test]
async fn sorted_feed_speaks_classic() {
    let env = Env::start().await;
    let feed = name("list");
    let list = feed.as_str();
    let mut rec = env.listen(&classic_channels("list"), &[]).await;
    let mut conn = env.conn().await;
    let s = &env.store;

    s.create(&feed, &FeedSettings::new(FeedType::SortedFeed))
        .await
        .unwrap();
    // The registry's messages come from its own node on a cluster.
    let announce = format!("{list}\0{INSTANCE}");
    assert_eq!(
        rec.drain().await,
        [msg("newfeed", &announce), msg("conffeed", &announce)]
    );
    let one = s.publish(&feed, None, &json!("x"), None).await.unwrap();
    assert_eq!(
        one.id,
        id("1"),
        "sorted feeds number their items like classic"
    );
    s.insert(
        &feed,
        Some(&id("top")),
        &json!(1),
        Some(&Position::Begin),
        None,
    )
    .await
    .unwrap();
    s.insert(
        &feed,
        Some(&id("mid")),
        &json!(2),
        Some(&Position::Before(id("1"))),
        None,
    )
    .await
    .unwrap();
    s.insert(
        &feed,
        Some(&id("last")),
        &json!(3),
        Some(&Position::After(id("1"))),
        None,
    )
    .await
    .unwrap();
    s.edit(&feed, &id("mid"), &json!({"m": 2}), None)
        .await
        .unwrap();
    s.move_item(&feed, &id("top"), &Position::After(id("last")), None)
        .await
        .unwrap();
    s.move_item(&feed, &id("last"), &Position::Before(id("mid")), None)
        .await
        .unwrap();
    s.move_item(&feed, &id("1"), &Position::Begin, None)
        .await
        .unwrap();
    s.move_item(&feed, &id("mid"), &Position::End, None)
        .await
        .unwrap();
    s.retract(&feed, &id("last"), None).await.unwrap();

    assert_eq!(
        rec.drain().await,
        [
            msg(&format!("feed.publish:{list}"), "1\0\"x\""),
            msg(&format!("feed.position:{list}"), "1\0:end"),
            msg(&format!("feed.publish:{list}"), "top\u{0}1"),
            msg(&format!("feed.position:{list}"), "top\0begin:"),
            msg(&format!("feed.publish:{list}"), "mid\u{0}2"),
            msg(&format!("feed.position:{list}"), "mid\0:1"),
            msg(&format!("feed.publish:{list}"), "last\u{0}3"),
            msg(&format!("feed.position:{list}"), "last\u{0}1:"),
            // Edits of sorted feeds go to feed.publish, as in the contract and thoonk.py.
            msg(&format!("feed.publish:{list}"), "mid\0{\"m\":2}"),
            msg(&format!("feed.position:{list}"), "top\0last:"),
            msg(&format!("feed.position:{list}"), "last\0:mid"),
            msg(&format!("feed.position:{list}"), "1\0begin:"),
            msg(&format!("feed.position:{list}"), "mid\0:end"),
            msg(&format!("feed.retract:{list}"), "last"),
        ]
    );

    assert_eq!(
        key_type(&mut conn, &format!("feed.ids:{list}")).await,
        "list"
    );
    assert_eq!(
        key_type(&mut conn, &format!("feed.items:{list}")).await,
        "hash"
    );
    let order: Vec<String> = conn
        .lrange(format!("feed.ids:{list}"), 0, -1)
        .await
        .unwrap();
    assert_eq!(order, ["1", "top", "mid"]);
    let items: HashMap<String, String> = conn.hgetall(format!("feed.items:{list}")).await.unwrap();
    assert_eq!(
        items,
        HashMap::from([
            ("1".to_owned(), "\"x\"".to_owned()),
            ("top".to_owned(), "1".to_owned()),
            ("mid".to_owned(), "{\"m\":2}".to_owned()),
        ])
    );
    let idincr: String = conn.get(format!("feed.idincr:{list}")).await.unwrap();
    assert_eq!(idincr, "1");
    let publishes: String = conn.get(format!("feed.publishes:{list}")).await.unwrap();
    assert_eq!(publishes, "5");
    let config: HashMap<String, String> =
        conn.hgetall(format!("feed.config:{list}")).await.unwrap();
    assert_eq!(config["type"], "sorted_feed");
    let snapshot = s.snapshot(&feed).await.unwrap();
    let ids: Vec<&str> = snapshot.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["1", "top", "mid"]);
}

#[tokio::test]
async fn feeds_written_by_classic_peers_are_read_and_extended() {
    let env = Env::start().await;
    let mut conn = env.conn().await;
    let feed = name("py");
    let py = feed.as_str();
    // What thoonk.py does: SADD, HSET config, then publishes with float-second scores.
    let _: () = conn.sadd("feeds", py).await.unwrap();
    let _: () = redis::pipe()
        .hset(format!("feed.config:{py}"), "type", "feed")
        .zadd(format!("feed.ids:{py}"), "old", 1_300_000_000.25)
        .hset(format!("feed.items:{py}"), "old", "not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = env.store.snapshot(&feed).await.unwrap();
    assert_eq!((before.epoch, before.rev), (0, 0));
    assert_eq!(before.items[0].item, json!("not json"));
    assert_eq!(before.items[0].rev, 0);

    let mut rec = env.listen(&classic_channels("py"), &[]).await;
    let applied = env
        .store
        .publish(&feed, Some(&id("new")), &json!(true), None)
        .await
        .unwrap();
    assert!(applied.epoch > 0);
    assert_eq!(applied.rev, 1);
    // The feed existed in the registry: no newfeed, just the item.
    assert_eq!(
        rec.drain().await,
        [msg(&format!("feed.publish:{py}"), "new\0true")]
    );
    let after = env.store.snapshot(&feed).await.unwrap();
    let ids: Vec<&str> = after.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["old", "new"]);
}
