//! docs/INTEROP.md's Python example, taken from the document and run with
//! thoonk.py next to a real gateway process, so the two cannot drift.

mod interop_support;

use interop_support::*;
use serde_json::{json, Value};
use thoonk_protocol::Outcome;

/// The fenced block of docs/INTEROP.md that starts with `# interop_example.py`.
fn example() -> String {
    let doc =
        std::fs::read_to_string(root().join("docs/INTEROP.md")).expect("read docs/INTEROP.md");
    let start = doc
        .find("```python\n# interop_example.py")
        .expect("docs/INTEROP.md has the ```python block starting with # interop_example.py");
    let body = &doc[start + "```python\n".len()..];
    let end = body.find("\n```").expect("the example's block is closed");
    body[..end + 1].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_of_the_interop_doc_runs_as_documented() {
    if thoonk_testkit::on_cluster() {
        eprintln!(
            "skipped on a Redis Cluster: the documented example is for one Redis (untagged names)"
        );
        return;
    }
    let env = Env::start().await;
    let _gateway = gateway(&env, &[]);
    wait_for_newfeed_listeners(&env, 1).await;
    let dir = std::env::temp_dir().join(thoonk_testkit::unique_name("thoonk-interop-doc"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("interop_example.py");
    std::fs::write(&script, example()).unwrap();

    let run = tokio::task::spawn_blocking({
        let port = env.redis.port().to_string();
        move || {
            std::process::Command::new(python())
                .arg(&script)
                .env("PYTHONPATH", root().join("tests/interop"))
                .env("THOONK_REDIS_PORT", port)
                .env("THOONK_REDIS_HOST", "127.0.0.1")
                .output()
                .expect("run the example")
        }
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(40), run)
        .await
        .expect("the example finished")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("the example prints JSON lines"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], json!({"tasks_rev": 2}));
    let outcome: Outcome = serde_json::from_value(lines[1]["outcome"].clone())
        .unwrap_or_else(|e| panic!("an outcome in {}: {e}", lines[1]));
    match outcome {
        Outcome::Accepted { revs, .. } => assert_eq!(revs.get(&name("notes")), Some(&1)),
        other => panic!("expected accepted, got {other:?}"),
    }

    // The classic writes were adopted once each; the job applied once.
    let tasks = full_log(&env.store, &name("team:1:tasks")).await;
    assert_eq!(ops(&tasks), ["publish 1", "edit 1"]);
    assert_eq!(
        tasks[1].change.item,
        Some(json!({"title": "write the docs", "done": true}))
    );
    let notes = full_log(&env.store, &name("notes")).await;
    assert_eq!(ops(&notes), ["publish n1"]);
    assert_eq!(notes[0].change.job.as_deref(), Some("py:1"));
}
