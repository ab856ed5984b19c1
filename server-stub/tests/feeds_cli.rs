//! The `feed` admin commands: parsed like the binary parses them, run against Redis.

mod feeds_support;

use clap::Parser;
use feeds_support::{name, Env};
use serde_json::{json, Value};
use thoonk_server::feeds::cli::{run, FeedCommand};
use thoonk_server::feeds::FeedError;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: FeedCommand,
}

async fn feed(env: &Env, args: &[&str]) -> Result<Value, FeedError> {
    let cli = Cli::try_parse_from(std::iter::once("feed").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    run(cli.command, &env.store).await
}

#[tokio::test]
async fn admin_commands_print_json() {
    let env = Env::start().await;
    let todo = name("team:1:todo");
    let todo = todo.as_str();
    let created = feed(
        &env,
        &["create", todo, "--type", "sorted_feed", "--retention", "50"],
    )
    .await
    .unwrap();
    assert_eq!(created["created"], json!(true));
    assert_eq!(created["type"], json!("sorted_feed"));
    let epoch = created["epoch"].as_u64().unwrap();
    assert!(epoch > 0);

    let one = feed(
        &env,
        &["publish", todo, r#"{"title":"one"}"#, "--id", "one"],
    )
    .await
    .unwrap();
    assert_eq!(
        one,
        json!({"feed": todo, "epoch": epoch, "rev": 1, "id": "one"})
    );
    let two = feed(
        &env,
        &["publish", todo, r#""two""#, "--begin", "--job", "c:1"],
    )
    .await
    .unwrap();
    assert_eq!(two["id"], json!("1"));
    feed(&env, &["edit", todo, "one", "[1]"]).await.unwrap();
    feed(&env, &["move", todo, "1", "--after", "one"])
        .await
        .unwrap();

    let items = feed(&env, &["items", todo]).await.unwrap();
    assert_eq!(
        items,
        json!({"feed": todo, "epoch": epoch, "rev": 4, "items": [
            {"id": "one", "item": [1], "rev": 3},
            {"id": "1", "item": "two", "rev": 4},
        ]})
    );
    let got = feed(&env, &["get", todo, "one"]).await.unwrap();
    assert_eq!(got["item"], json!({"id": "one", "item": [1], "rev": 3}));
    let old = feed(&env, &["get", todo, "one", "--at", "2"])
        .await
        .unwrap();
    assert_eq!(old["item"], json!({"title": "one"}));

    let history = feed(&env, &["history", todo, "--after", "1", "--limit", "2"])
        .await
        .unwrap();
    assert_eq!(history["oldest"], json!(1));
    assert_eq!(
        history["events"],
        json!([
            {"rev": 2, "change": {"op": "publish", "id": "1", "item": "two", "position": "begin", "job": "c:1"}},
            {"rev": 3, "change": {"op": "edit", "id": "one", "item": [1], "prev": {"title": "one"}}},
        ])
    );

    feed(&env, &["retract", todo, "1"]).await.unwrap();
    let config = feed(&env, &["config", todo, "--retention", "2"])
        .await
        .unwrap();
    assert_eq!(
        config,
        json!({"feed": todo, "type": "sorted_feed", "max_length": 0, "retention": 2, "epoch": epoch})
    );
    assert_eq!(
        feed(&env, &["list"]).await.unwrap(),
        json!({"feeds": [todo]})
    );
    assert_eq!(
        feed(&env, &["delete", todo]).await.unwrap(),
        json!({"feed": todo, "deleted": true})
    );
    assert_eq!(feed(&env, &["list"]).await.unwrap(), json!({"feeds": []}));
}

#[tokio::test]
async fn admin_commands_reject_bad_input_clearly() {
    let env = Env::start().await;
    let err = feed(&env, &["publish", "bad*name", "1"]).await.unwrap_err();
    assert!(matches!(err, FeedError::Name(_)), "{err}");
    let err = feed(&env, &["publish", "f", "not json"]).await.unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
    let err = feed(&env, &["move", "f", "x"]).await.unwrap_err();
    assert!(matches!(err, FeedError::BadPosition { .. }), "{err}");
    let err = feed(&env, &["config", "nothing"]).await.unwrap_err();
    assert!(matches!(err, FeedError::FeedNotFound { .. }), "{err}");
    assert!(Cli::try_parse_from(["feed", "move", "f", "x", "--begin", "--end"]).is_err());
}
