//! The `thoonk-server job …` admin commands and `thoonk-server work`, as
//! real processes on a Redis set up like the demo's (config/demo.json): the
//! seed's administrator investigates a stalled job, edits it and retries it.
//! On a Redis Cluster (`THOONK_TEST_REDIS=cluster`) the queue and the feeds
//! carry hash tags, as a deployment names them.

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use thoonk_testkit::{eventually_blocking, shard, TestRedis};

const BIN: &str = env!("CARGO_BIN_EXE_thoonk-server");

fn demo_config() -> String {
    format!("{}/../config/demo.json", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `thoonk-server --redis URL job ARGS…`; returns its JSON, or its stderr on failure.
fn job(redis: &TestRedis, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(BIN)
        .args(["--redis", &redis.url(), "job"])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run thoonk-server job");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("job commands print JSON"))
}

/// Runs `redis-cli ARGS…` on the test Redis (in cluster mode, `-c`, which
/// follows redirects to the node of each key's slot); returns its output.
fn redis_cli(redis: &TestRedis, args: &[&str]) -> String {
    let mut cli = Command::new("redis-cli");
    if redis.is_cluster() {
        cli.arg("-c");
    }
    let out = cli
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_admin_investigates_a_stalled_job_edits_it_and_retries_it() {
    let redis = TestRedis::start();
    let queue = shard("changes");
    let queue = queue.as_str();
    let bobs = shard("team:353:member:bob:tasks");
    let bobs = bobs.as_str();
    // Something left a string where bob's task feed's id list belongs.
    redis_cli(&redis, &["SET", &format!("feed.ids:{bobs}"), "junk"]);
    let change = json!({"id": "web:1", "op": {"kind": "action", "name": "create_task",
        "payload": {"feed": bobs, "id": "t1", "task": {"title": "Buy milk"}}}});
    let put = job(
        &redis,
        &["put", queue, "--user", "bob", &change.to_string()],
    )
    .unwrap();
    assert_eq!(put["submitted"], "queued");
    let again = job(
        &redis,
        &["put", queue, "--user", "bob", &change.to_string()],
    )
    .unwrap();
    assert_eq!(again["submitted"], "already_queued");
    let listed = job(&redis, &["list", queue]).unwrap();
    assert_eq!(listed["jobs"][0]["id"], "web:1");
    assert_eq!(listed["jobs"][0]["state"], "available");

    let _worker = demo_worker(
        &redis,
        queue,
        &[
            "--demo-actions",
            "--max-retries",
            "0",
            "--sweep-interval-ms",
            "100",
        ],
    );
    let stalled = eventually_blocking("the job stalls", || {
        let out = job(&redis, &["stalled", queue]).unwrap();
        out["stalled"].as_array().filter(|s| !s.is_empty()).cloned()
    });
    let error = stalled[0]["last_error"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(&format!("feed.ids:{bobs}")),
        "the error names the bad key: {error}"
    );

    // The admin repairs the data, edits the title and retries.
    redis_cli(&redis, &["DEL", &format!("feed.ids:{bobs}")]);
    let mut payload = stalled[0]["payload"].clone();
    payload["op"]["payload"]["task"]["title"] = json!("Buy oat milk");
    job(&redis, &["edit", queue, "web:1", &payload.to_string()]).unwrap();
    let shown = job(&redis, &["show", queue, "web:1"]).unwrap();
    assert_eq!(
        shown["job"]["payload"]["op"]["payload"]["task"]["title"],
        "Buy oat milk"
    );
    job(&redis, &["retry", queue, "web:1"]).unwrap();
    let result = eventually_blocking("the job finishes", || {
        let out = job(&redis, &["result", queue, "web:1"]).unwrap();
        (!out["outcome"].is_null()).then_some(out)
    });
    assert_eq!(result["outcome"]["status"], "accepted", "{result}");
    assert_eq!(result["ledger"]["user"], "bob");
    let item = redis_cli(&redis, &["HGET", &format!("feed.items:{bobs}"), "t1"]);
    let item: Value = serde_json::from_str(&item).unwrap();
    assert_eq!(item, json!({"title": "Buy oat milk", "done": false}));

    // Errors name what to do, and exit non-zero.
    let err = job(&redis, &["retry", queue, "web:1"]).unwrap_err();
    assert!(err.contains("not stalled"), "{err}");
    let nothing = shard("nothing");
    let err = job(&redis, &["list", &nothing]).unwrap_err();
    assert!(err.contains(&format!("no job queue {nothing}")), "{err}");
    // Under the demo's rules, cat may not add to bob's list.
    let foreign = json!({"id": "web:2", "op": {"kind": "action", "name": "create_task",
        "payload": {"feed": bobs, "id": "t2", "task": {"title": "x"}}}});
    job(
        &redis,
        &["put", queue, "--user", "cat", &foreign.to_string()],
    )
    .unwrap();
    let result = eventually_blocking("the rejection", || {
        let out = job(&redis, &["result", queue, "web:2"]).unwrap();
        (!out["outcome"].is_null()).then_some(out)
    });
    assert_eq!(result["outcome"]["status"], "rejected");
    assert_eq!(result["outcome"]["code"], "forbidden");
}

/// Starts `thoonk-server work` with the demo's rules on `queue`, plus `extra`.
fn demo_worker(redis: &TestRedis, queue: &str, extra: &[&str]) -> Worker {
    Worker(
        Command::new(BIN)
            .args(["--redis", &redis.url(), "work", "--config", &demo_config()])
            .args(["--queue", queue, "--poll-interval-ms", "50"])
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("start thoonk-server work"),
    )
}

#[test]
fn the_demos_actions_are_known_only_to_workers_started_with_demo_actions() {
    let redis = TestRedis::start();
    let queue = shard("changes");
    let queue = queue.as_str();
    let bobs = shard("team:353:member:bob:tasks");
    let create = |id: &str| {
        json!({"id": id, "op": {"kind": "action", "name": "create_task",
            "payload": {"feed": bobs, "id": id.replace(':', "-"), "task": {"title": "Buy milk"}}}})
    };
    let outcome_of = |id: &str| {
        eventually_blocking(&format!("{id} finishes"), || {
            let out = job(&redis, &["result", queue, id]).unwrap();
            (!out["outcome"].is_null()).then(|| out["outcome"].clone())
        })
    };

    // A production worker knows the generic feed operations only.
    job(
        &redis,
        &["put", queue, "--user", "bob", &create("web:1").to_string()],
    )
    .unwrap();
    let plain = demo_worker(&redis, queue, &[]);
    let refused = outcome_of("web:1");
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown action")),
        "{refused}"
    );
    drop(plain);

    // Opted in, the same action is applied.
    job(
        &redis,
        &["put", queue, "--user", "bob", &create("web:2").to_string()],
    )
    .unwrap();
    let _demo = demo_worker(&redis, queue, &["--demo-actions"]);
    let applied = outcome_of("web:2");
    assert_eq!(applied["status"], "accepted", "{applied}");
}
