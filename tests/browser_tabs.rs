//! Several clients on one database (tabs; here two clients in one page, which
//! share Web Locks and BroadcastChannel the same way): one leads and holds the
//! connection, the other goes through it; both see every change; when the
//! leader closes, the other takes over with nothing lost or applied twice.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::*;
use thoonk_sync::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn role(client: &Client) -> String {
    let status: JsValue = client.status().into();
    get(&status, "tab").as_string().unwrap()
}

fn connection(client: &Client) -> String {
    let status: JsValue = client.status().into();
    get(&status, "connection").as_string().unwrap()
}

fn publish(client: &Client, feed: &str, id: &str) -> js_sys::Promise {
    let item = js_sys::JSON::parse(&format!(r#"{{"title":"{id}"}}"#)).unwrap();
    client
        .publish(feed.into(), item, Some(id.into()), None)
        .unwrap()
        .unchecked_into()
}

async fn accepted(pending: js_sys::Promise) -> String {
    let pending = await_promise(pending).await;
    let outcome = await_promise(get(&pending, "outcome")).await;
    assert_eq!(
        get(&outcome, "status").as_string().as_deref(),
        Some("accepted"),
        "{:?}",
        js_sys::JSON::stringify(&outcome)
    );
    get(&pending, "id").as_string().unwrap()
}

/// The feed's revision as a client on its own database sees it: the number
/// of changes the server applied.
async fn server_rev(feed: &str) -> f64 {
    let observer = open_client(ws_url(), "tab-user", &unique("thoonk-test-observer-")).await;
    let _unsubscribe = observer
        .subscribe(feed.into(), Recorder::default().callback())
        .unwrap();
    wait_until("the observer's sync", || {
        observer.rev(feed.into()).unwrap().is_some()
    })
    .await;
    let rev = observer.rev(feed.into()).unwrap().unwrap();
    observer.close();
    rev
}

#[wasm_bindgen_test]
async fn two_tabs_share_one_connection_and_see_each_others_changes() {
    let db = unique("thoonk-test-tabs-");
    let feed = unique("tabs:shared:");
    let leader = open_client(ws_url(), "tab-user", &db).await;
    let follower = open_client(ws_url(), "tab-user", &db).await;
    assert_eq!(role(&leader), "leader");
    assert_eq!(role(&follower), "follower");

    let seen_by_leader = Recorder::default();
    let seen_by_follower = Recorder::default();
    let _a = leader
        .subscribe(feed.clone(), seen_by_leader.callback())
        .unwrap();
    let _b = follower
        .subscribe(feed.clone(), seen_by_follower.callback())
        .unwrap();
    wait_until("the follower to hear the leader's status", || {
        connection(&follower) == "online"
    })
    .await;

    let id = accepted(publish(&follower, &feed, "from-follower")).await;
    assert!(
        id.contains(":t"),
        "a follower's change id names its tab: {id}"
    );
    accepted(publish(&leader, &feed, "from-leader")).await;
    wait_until("both changes in both tabs", || {
        seen_by_leader.saw_item("from-follower")
            && seen_by_follower.saw_item("from-leader")
            && item_ids(&follower, &feed) == ["from-follower", "from-leader"]
            && follower.rev(feed.clone()).unwrap() == Some(2.0)
    })
    .await;
    assert_eq!(item_ids(&leader, &feed), ["from-follower", "from-leader"]);
    let items: js_sys::Array = follower.items(feed.clone()).unwrap().unchecked_into();
    assert_eq!(
        get(&get(&items.get(1), "item"), "title")
            .as_string()
            .as_deref(),
        Some("from-leader")
    );
    leader.close();
    follower.close();
    assert_eq!(server_rev(&feed).await, 2.0);
}

#[wasm_bindgen_test]
async fn closing_the_leader_hands_over_without_loss_or_duplicates() {
    let db = unique("thoonk-test-handover-");
    let feed = unique("tabs:handover:");
    let leader = open_client(ws_url(), "tab-user", &db).await;
    let follower = open_client(ws_url(), "tab-user", &db).await;
    let _a = leader
        .subscribe(feed.clone(), Recorder::default().callback())
        .unwrap();
    let seen = Recorder::default();
    let _b = follower.subscribe(feed.clone(), seen.callback()).unwrap();
    wait_until("the follower to hear the leader", || {
        connection(&follower) == "online"
    })
    .await;

    // Changes in flight from the follower when the leader goes away: some
    // are stored by the old leader, some reach nobody; all are sent again to
    // the new leader (this tab), which queues each exactly once.
    let mut in_flight: Vec<js_sys::Promise> = (0..6)
        .map(|n| publish(&follower, &feed, &format!("item-{n}")))
        .collect();
    sleep(5).await;
    in_flight.extend((6..12).map(|n| publish(&follower, &feed, &format!("item-{n}"))));
    leader.close();
    let mut ids = vec![];
    for pending in in_flight {
        ids.push(accepted(pending).await);
    }
    assert_eq!(role(&follower), "leader");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    wait_until("the new leader's view", || {
        item_ids(&follower, &feed).len() == 12 && follower.rev(feed.clone()).unwrap() == Some(12.0)
    })
    .await;
    assert!(seen.saw_item("item-11"));

    // A third client on the database follows the new leader.
    let third = open_client(ws_url(), "tab-user", &db).await;
    assert_eq!(role(&third), "follower");
    accepted(publish(&third, &feed, "from-third")).await;
    follower.close();
    third.close();
    assert_eq!(
        server_rev(&feed).await,
        13.0,
        "every change applied exactly once"
    );
}
