//! Bad input and security at a real gateway with an access config, beyond
//! what tests/gateway_*.rs cover: wrong field types, invalid feed and item
//! names inside submits, change ids of another client, near-miss tokens,
//! writes to feeds outside the rules, the job queue as a feed, and another
//! user's job results. Each gets a clear error code or a rejected outcome,
//! nothing is written, nothing leaks, and the gateway keeps serving a
//! bystander throughout. A server started without access rules refuses to
//! run unless told it is a development setup, so a forbidden write is
//! rejected whichever process works its job.

use thoonk_system_tests::fault as fault_support;

use fault_support::*;
use serde_json::json;
use thoonk_protocol::{ErrorCode, Outcome, ServerMessage};

fn config() -> ConfigFile {
    ConfigFile::write(&json!({
        "users": [
            { "name": "ann", "token": "tok-ann", "teams": { "353": "admin" } },
            { "name": "bob", "token": "tok-bob", "teams": { "353": "member" } },
            { "name": "eve", "token": "tok-eve" }
        ],
        "read": ["team:<team>:**", "user:<user>:**"],
        "write": ["team:<team>:member:<user>:tasks", "user:<user>:**"],
        "admin": ["team:<admin_team>:**"]
    }))
}

struct Setup {
    redis: RedisServer,
    _config: ConfigFile,
    gateway: ThoonkServer,
}

async fn setup() -> Setup {
    let redis = RedisServer::start_fsync("always");
    let config = config();
    let url = redis.url();
    let gateway = start_gateway(
        &url,
        Some(redis.port()),
        &[
            "--config",
            config.path(),
            "--workers",
            "2",
            "--demo-actions",
        ],
    )
    .await;
    Setup {
        redis,
        _config: config,
        gateway,
    }
}

fn submit(id: &str, op: serde_json::Value) -> String {
    json!({"type": "submit", "change": {"id": id, "op": op}}).to_string()
}

/// Submits change `id` with `op` and reads until its outcome.
async fn outcome_of(client: &mut WsClient, id: &str, op: serde_json::Value) -> Outcome {
    client.send_text(submit(id, op)).await;
    client
        .until("the outcome", |m| match m {
            ServerMessage::Outcome { id: got, outcome } if got.0 == id => Some(outcome.clone()),
            _ => None,
        })
        .await
}

/// A gateway on `redis` with the access rules of `config` and `extra`.
async fn ruled_gateway(redis: &RedisServer, config: &ConfigFile, extra: &[&str]) -> ThoonkServer {
    let url = redis.url();
    let mut args = vec!["--config", config.path()];
    args.extend_from_slice(extra);
    start_gateway(&url, Some(redis.port()), &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_invalid_submits_get_bad_request_and_write_nothing() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let mut bystander = WsClient::signed_in_as(&url, "tok-bob", "bob1").await;
    let mut eve = WsClient::signed_in_as(&url, "tok-eve", "eve1").await;
    let long = "x".repeat(257);
    let glob = ["user:eve:*", "user:eve:a?", "user:eve:[a]", "user:eve:a\\b"];
    let mut cases: Vec<(String, String)> = vec![
        ("wrong type: pattern a number".into(), json!({"type": "subscribe", "pattern": 5}).to_string()),
        ("wrong type: known a list".into(), json!({"type": "subscribe", "pattern": "user:eve:n", "known": []}).to_string()),
        ("wrong type: rev a string".into(), json!({"type": "replay", "feed": "user:eve:n", "from": {"epoch": 1, "rev": "1"}}).to_string()),
        ("wrong type: negative rev".into(), json!({"type": "replay", "feed": "user:eve:n", "from": {"epoch": 1, "rev": -1}}).to_string()),
        ("wrong type: change id a number".into(), json!({"type": "submit", "change": {"id": 7, "op": {"kind": "retract", "feed": "user:eve:n", "id": "a"}}}).to_string()),
        ("unknown op kind".into(), submit("eve1:1", json!({"kind": "truncate", "feed": "user:eve:n"}))),
        ("empty feed name".into(), submit("eve1:2", json!({"kind": "publish", "feed": "", "id": "a", "item": 1}))),
        ("NUL in a feed name".into(), submit("eve1:3", json!({"kind": "publish", "feed": "user:eve:\u{0}", "id": "a", "item": 1}))),
        ("oversized feed name".into(), submit("eve1:4", json!({"kind": "publish", "feed": format!("user:eve:{long}"), "id": "a", "item": 1}))),
        ("empty item id".into(), submit("eve1:5", json!({"kind": "publish", "feed": "user:eve:n", "id": "", "item": 1}))),
        ("NUL in an item id".into(), submit("eve1:6", json!({"kind": "publish", "feed": "user:eve:n", "id": "a\u{0}b", "item": 1}))),
        ("oversized item id".into(), submit("eve1:7", json!({"kind": "publish", "feed": "user:eve:n", "id": long, "item": 1}))),
        ("oversized subscribe".into(), json!({"type": "subscribe", "pattern": format!("user:eve:{long}")}).to_string()),
        ("empty pattern".into(), json!({"type": "subscribe", "pattern": ""}).to_string()),
        ("a bare number".into(), "42".into()),
        ("null".into(), "null".into()),
        ("deep nesting".into(), format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
    ];
    for (i, g) in glob.iter().enumerate() {
        cases.push((
            format!("glob characters in a submit's feed: {g}"),
            submit(
                &format!("eve1:{}", 10 + i),
                json!({"kind": "publish", "feed": g, "id": "a", "item": 1}),
            ),
        ));
    }
    for (what, frame) in cases {
        eve.send_text(frame).await;
        eve.expect_error_for(ErrorCode::BadRequest, &what).await;
        eve.ping().await;
        bystander.ping().await;
    }
    // Nothing was written anywhere: the only keys are the queue's own.
    let mut conn = s.redis.conn().await;
    let feeds: Vec<String> = redis::cmd("SMEMBERS")
        .arg("feeds")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(feeds, vec![QUEUE.to_string()], "no feed was created");
    let jobs: usize = redis::cmd("HLEN")
        .arg(format!("feed.items:{QUEUE}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no job was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_tokens_are_unauthorized() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    for token in [
        "tok-ann ",
        " tok-ann",
        "TOK-ANN",
        "tok-an",
        "tok-ann\u{0}",
        "",
        "ann",
    ] {
        let mut c = WsClient::connect(&url).await;
        c.send_text(
            json!({"type": "hello", "protocol": 1, "token": token, "client_id": "x"}).to_string(),
        )
        .await;
        c.expect_error_for(ErrorCode::Unauthorized, &format!("token {token:?}"))
            .await;
        assert!(
            c.next_message().await.is_none(),
            "closed after unauthorized"
        );
    }
    let mut ann = WsClient::signed_in_as(&url, "tok-ann", "ann1").await;
    ann.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_the_rules_are_rejected_and_change_nothing() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let store = s.redis.store().await;
    let team = feed("team:353:member:bob:tasks");
    store
        .publish(
            &team,
            Some(&thoonk_protocol::ItemId::new("t1").unwrap()),
            &json!({"title": "x"}),
            None,
        )
        .await
        .unwrap();
    let before = store.snapshot(&team).await.unwrap();
    let mut eve = WsClient::signed_in_as(&url, "tok-eve", "eve1").await;
    let ops = [
        json!({"kind": "publish", "feed": "team:353:member:bob:tasks", "id": "t2", "item": {"title": "evil"}}),
        json!({"kind": "edit", "feed": "team:353:member:bob:tasks", "id": "t1", "item": {"title": "evil"}}),
        json!({"kind": "retract", "feed": "team:353:member:bob:tasks", "id": "t1"}),
        json!({"kind": "move", "feed": "team:353:member:bob:tasks", "id": "t1", "position": "begin"}),
        json!({"kind": "publish", "feed": "user:ann:notes", "id": "n", "item": 1}),
        json!({"kind": "publish", "feed": QUEUE, "id": "fake", "item": {"id": "fake", "user": "ann"}}),
        json!({"kind": "action", "name": "delete_task", "payload": {"feed": "team:353:member:bob:tasks", "id": "t1"}}),
    ];
    for (i, op) in ops.iter().enumerate() {
        let id = format!("eve1:{}", i + 1);
        let outcome = outcome_of(&mut eve, &id, op.clone()).await;
        assert!(
            matches!(&outcome, Outcome::Rejected { code, .. } if matches!(code, ErrorCode::Forbidden | ErrorCode::BadRequest)),
            "{op}: {outcome:?}"
        );
    }
    assert_eq!(
        store.snapshot(&team).await.unwrap(),
        before,
        "nothing changed"
    );
    // Subscribing to the job queue (whose items are every user's changes) is refused.
    eve.send_text(json!({"type": "subscribe", "pattern": QUEUE}).to_string())
        .await;
    eve.expect_error_for(ErrorCode::Forbidden, "the queue as a feed")
        .await;
    eve.ping().await;
    assert!(eve
        .log
        .iter()
        .all(|f| !f.contains("evil") || f.contains("\"outcome\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_ids_of_another_client_are_forbidden() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let mut eve = WsClient::signed_in_as(&url, "tok-eve", "eve1").await;
    for id in ["ann1:1", "eve:1", "eve1", "eve1:", "eve10:1", ":1"] {
        eve.send_text(submit(
            id,
            json!({"kind": "publish", "feed": "user:eve:n", "id": "a", "item": 1}),
        ))
        .await;
        eve.expect_error_for(ErrorCode::Forbidden, &format!("change id {id}"))
            .await;
    }
    eve.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_job_results_never_reach_a_client_that_borrows_the_client_id() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    // A client id belongs to the first user who says hello with it.
    let mut ann = WsClient::signed_in_as(&url, "tok-ann", "ann1").await;
    let borrowed = || thoonk_protocol::ClientMessage::Hello {
        protocol: thoonk_protocol::PROTOCOL_VERSION,
        token: "tok-eve".into(),
        client_id: "ann1".into(),
    };
    let mut eve = WsClient::connect(&url).await;
    eve.send(&borrowed()).await;
    eve.expect_error_for(ErrorCode::Forbidden, "eve presenting ann's client id")
        .await;
    assert!(
        eve.next_message().await.is_none(),
        "eve's connection is closed"
    );

    ann.send_text(submit(
        "ann1:1",
        json!({"kind": "publish", "feed": "user:ann:diary", "id": "d1", "item": {"secret": "s3cr3t"}}),
    ))
    .await;
    ann.until("ann's outcome", |m| {
        matches!(m, ServerMessage::Outcome { .. }).then_some(())
    })
    .await;
    // Eve trying again after ann's change is refused the same way and learns nothing.
    let mut eve2 = WsClient::connect(&url).await;
    eve2.send(&borrowed()).await;
    eve2.expect_error_for(ErrorCode::Forbidden, "eve presenting ann's client id again")
        .await;
    let leaked: Vec<&String> = eve
        .log
        .iter()
        .chain(eve2.log.iter())
        .filter(|f| {
            f.contains("user:ann:diary") || f.contains("s3cr3t") || f.contains("\"ann1:1\"")
        })
        .collect();
    assert!(leaked.is_empty(), "eve received ann's results: {leaked:#?}");
    // Ann herself reconnects with her client id.
    WsClient::signed_in_as(&url, "tok-ann", "ann1")
        .await
        .ping()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_items_in_a_submit_are_too_large_and_others_keep_syncing() {
    let s = setup().await;
    let url = s.gateway.ws_url();
    let mut bob = WsClient::signed_in_as(&url, "tok-bob", "bob1").await;
    bob.send_text(json!({"type": "subscribe", "pattern": "user:bob:n"}).to_string())
        .await;
    bob.until("subscribed", |m| {
        matches!(m, ServerMessage::Snapshot { .. }).then_some(())
    })
    .await;
    let mut eve = WsClient::signed_in_as(&url, "tok-eve", "eve1").await;
    let huge = "y".repeat(300 * 1024);
    eve.send_text(submit(
        "eve1:1",
        json!({"kind": "publish", "feed": "user:eve:n", "id": "a", "item": huge}),
    ))
    .await;
    eve.expect_error_for(ErrorCode::TooLarge, "a huge item")
        .await;
    // Bob is still served: his own write comes back as an event.
    bob.send_text(submit(
        "bob1:1",
        json!({"kind": "publish", "feed": "user:bob:n", "id": "b", "item": 1}),
    ))
    .await;
    bob.until("bob's event", |m| {
        matches!(m, ServerMessage::Event { .. }).then_some(())
    })
    .await;
    eve.ping().await;
}

/// Starts `thoonk-server ARGS` exactly as given (no access arguments added,
/// none from the environment but `env`), its stderr captured.
fn spawn_bare_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(server_bin())
        .args(args)
        .env_remove("THOONK_CONFIG")
        .env_remove("THOONK_ALLOW_ALL")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start thoonk-server")
}

/// [`spawn_bare_with`] without environment.
fn spawn_bare(args: &[&str]) -> std::process::Child {
    spawn_bare_with(args, &[])
}

/// Waits for `child` to exit (killing it and failing after [`WAIT`]);
/// returns whether it succeeded and its stderr.
fn exit_of(mut child: std::process::Child, what: &str) -> (bool, String) {
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_work_refuse_to_start_without_access_rules() {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = config();
    for args in [
        vec![
            "--redis",
            url.as_str(),
            "serve",
            "--listen",
            listen.as_str(),
        ],
        vec!["--redis", url.as_str(), "work"],
    ] {
        let (ok, stderr) = exit_of(spawn_bare(&args), &format!("{args:?} without rules"));
        assert!(!ok, "{args:?} started without rules");
        assert!(
            stderr.contains("no access rules")
                && stderr.contains("--config")
                && stderr.contains("--allow-all"),
            "{args:?} says why and what to do: {stderr}"
        );
        // Rules and the development switch together are refused too.
        let mut both = args.clone();
        both.extend(["--config", config.path(), "--allow-all"]);
        let (ok, stderr) = exit_of(spawn_bare(&both), &format!("{both:?}"));
        assert!(!ok && stderr.contains("--allow-all"), "{both:?}: {stderr}");
        // A false THOONK_ALLOW_ALL is no permission.
        let off = spawn_bare_with(&args, &[("THOONK_ALLOW_ALL", "0")]);
        let (ok, stderr) = exit_of(off, &format!("{args:?} with THOONK_ALLOW_ALL=0"));
        assert!(!ok && stderr.contains("no access rules"), "{stderr}");
    }
    // The development switch, from the environment as every flag: the
    // worker runs and creates its queue.
    let mut dev = spawn_bare_with(&["--redis", &url, "work"], &[("THOONK_ALLOW_ALL", "1")]);
    eventually("the development worker creates its queue", || async {
        let kind: Option<String> = redis::cmd("HGET")
            .arg(format!("feed.config:{QUEUE}"))
            .arg("type")
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        (kind.as_deref() == Some("job")).then_some(())
    })
    .await;
    assert!(
        dev.try_wait().unwrap().is_none(),
        "the worker keeps running"
    );
    let _ = dev.kill();
    let _ = dev.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_write_is_rejected_whichever_process_works_it() {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let config = config();
    // The gateway checks nothing itself (no workers); a worker with the rules
    // and one an operator started without any share the queue.
    let gateway = ruled_gateway(&redis, &config, &["--workers", "0"]).await;
    let _worker = start_worker(&url, &["--config", config.path()]);
    let bare = spawn_bare(&["--redis", url.as_str(), "work"]);
    let store = redis.store().await;
    let ann_tasks = feed("team:353:member:ann:tasks");
    let mut bob = WsClient::signed_in_as(&gateway.ws_url(), "tok-bob", "bob1").await;
    for n in 1..=20 {
        let id = format!("bob1:{n}");
        let op = json!({"kind": "publish", "feed": ann_tasks, "id": format!("t{n}"), "item": {"title": "bob's"}});
        let outcome = outcome_of(&mut bob, &id, op).await;
        assert!(
            matches!(
                &outcome,
                Outcome::Rejected {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "write {n}: {outcome:?}"
        );
    }
    let snapshot = store.snapshot(&ann_tasks).await.unwrap();
    assert!(snapshot.items.is_empty(), "ann's feed: {snapshot:?}");
    let (ok, stderr) = exit_of(bare, "work without rules");
    assert!(!ok && stderr.contains("--allow-all"), "{stderr}");
}

/// The Redis server's clock, in milliseconds.
async fn redis_ms(redis: &RedisServer) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    secs * 1000 + micros / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_stays_its_users_while_a_session_uses_it() {
    let redis = RedisServer::start_fsync("always");
    let config = config();
    let gateway = ruled_gateway(&redis, &config, &["--retention-secs", "2"]).await;
    let ws = gateway.ws_url();
    let mut ann = WsClient::signed_in_as(&ws, "tok-ann", "Z").await;
    let hello = redis_ms(&redis).await;
    // Ann stays connected (pinging) well past the binding's 2 s expiry.
    while redis_ms(&redis).await < hello + 3_500 {
        ann.ping().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut bob = WsClient::connect(&ws).await;
    bob.send(&thoonk_protocol::ClientMessage::Hello {
        protocol: thoonk_protocol::PROTOCOL_VERSION,
        token: "tok-bob".into(),
        client_id: "Z".into(),
    })
    .await;
    bob.expect_error_for(ErrorCode::Forbidden, "bob presenting ann's live client id")
        .await;
    assert!(
        bob.next_message().await.is_none(),
        "bob's connection is closed"
    );
    let op = json!({"kind": "publish", "feed": "user:ann:diary", "id": "d1", "item": {"secret": "s3cr3t"}});
    outcome_of(&mut ann, "Z:1", op).await;
    assert!(
        bob.log.iter().all(|f| !f.contains("s3cr3t")),
        "{:#?}",
        bob.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_reach_only_sessions_that_submitted_the_change() {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    let config = config();
    // No workers yet: ann's change waits in the queue.
    let gateway = ruled_gateway(
        &redis,
        &config,
        &["--workers", "0", "--retention-secs", "2"],
    )
    .await;
    let ws = gateway.ws_url();
    let mut ann = WsClient::signed_in_as(&ws, "tok-ann", "Y").await;
    ann.send_text(submit(
        "Y:1",
        json!({"kind": "publish", "feed": "user:ann:diary", "id": "d1", "item": {"secret": "s3cr3t"}}),
    ))
    .await;
    ann.until("ann's ack", |m| {
        matches!(m, ServerMessage::Ack { .. }).then_some(())
    })
    .await;
    drop(ann);
    // Ann gone, her binding runs out; bob may then use the abandoned id.
    eventually("ann's binding of Y expires", || async {
        let exists: bool = redis::cmd("EXISTS")
            .arg("client.owner:Y")
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        (!exists).then_some(())
    })
    .await;
    let mut bob = WsClient::signed_in_as(&ws, "tok-bob", "Y").await;
    // A worker finishes ann's change, then bob's own: the gateway hears the
    // two outcomes in that order, so bob has seen ann's, had it been pushed.
    let _worker = start_worker(&url, &["--config", config.path()]);
    eventually("ann's change finishes", || async {
        let outcome: Option<String> = redis::cmd("HGET")
            .arg(thoonk_server::jobs::ledger_key(QUEUE, "Y:1"))
            .arg("outcome")
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        outcome
    })
    .await;
    let op = json!({"kind": "publish", "feed": "user:bob:notes", "id": "n1", "item": 1});
    outcome_of(&mut bob, "Y:2", op).await;
    let leaked: Vec<&String> = bob
        .log
        .iter()
        .filter(|f| f.contains("\"Y:1\"") || f.contains("s3cr3t") || f.contains("user:ann"))
        .collect();
    assert!(leaked.is_empty(), "bob received ann's outcome: {leaked:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_whose_feed_and_id_join_to_the_same_text_reach_their_own_feed_and_user() {
    let redis = RedisServer::start_fsync("always");
    let url = redis.url();
    // A development setup: any token is a user who may write every feed.
    let gateway = start_gateway(&url, Some(redis.port()), &["--workers", "2"]).await;
    let ws = gateway.ws_url();
    let store = redis.store().await;
    let mut bob = WsClient::signed_in_as(&ws, "bob", "cards").await;
    let mut ann = WsClient::signed_in_as(&ws, "ann", "A").await;
    // "demo:board" + "cards:A:2" and "demo:board:cards" + "A:2" read the
    // same once joined with `:`; then the other way round.
    let steps = [
        ("cards:A:2", "demo:board", true),
        ("A:2", "demo:board:cards", false),
        ("A:3", "demo:board:cards", false),
        ("cards:A:3", "demo:board", true),
    ];
    for (id, target, by_bob) in steps {
        let client = if by_bob { &mut bob } else { &mut ann };
        let op = json!({"kind": "publish", "feed": target, "id": id, "item": {"by": id}});
        let outcome = outcome_of(client, id, op).await;
        let Outcome::Accepted { revs, .. } = &outcome else {
            panic!("{id}: {outcome:?}");
        };
        let feeds: Vec<&str> = revs.keys().map(|f| f.as_str()).collect();
        assert_eq!(feeds, [target], "{id} reports its own feed");
    }
    for target in ["demo:board", "demo:board:cards"] {
        let snapshot = store.snapshot(&feed(target)).await.unwrap();
        assert_eq!(snapshot.items.len(), 2, "{target}: {snapshot:?}");
    }
    bob.ping().await;
    ann.ping().await;
    let foreign = |log: &[String], other: &[&str]| {
        log.iter()
            .filter(|f| other.iter().any(|id| f.contains(&format!("\"{id}\""))))
            .count()
    };
    assert_eq!(foreign(&bob.log, &["A:2", "A:3"]), 0, "{:#?}", bob.log);
    assert_eq!(
        foreign(&ann.log, &["cards:A:2", "cards:A:3"]),
        0,
        "{:#?}",
        ann.log
    );
}
