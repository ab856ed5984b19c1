//! Changes made offline survive closing the client (a page reload), and are
//! applied exactly once after reconnecting.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const UNREACHABLE: &str = "ws://127.0.0.1:9/ws";

#[wasm_bindgen_test]
async fn offline_changes_survive_reload_and_apply_exactly_once() {
    let feed = unique("offline:feed");
    let db = unique("thoonk-test-offline-");

    // Offline: the changes show at once as pending and are durably queued.
    let offline = open_client(UNREACHABLE, "offline-user", &db).await;
    for n in 1..=3 {
        let item = js_sys::JSON::parse(&format!(r#"{{"n":{n}}}"#)).unwrap();
        let pending = await_promise(
            offline
                .publish(feed.clone(), item, Some(format!("item-{n}")), None)
                .unwrap(),
        )
        .await;
        assert!(get(&pending, "id").as_string().is_some());
    }
    assert_eq!(item_ids(&offline, &feed), ["item-1", "item-2", "item-3"]);
    let outbox: js_sys::Array = offline.outbox().unchecked_into();
    assert_eq!(outbox.length(), 3);
    let items: js_sys::Array = offline.items(feed.clone()).unwrap().unchecked_into();
    assert!(items
        .iter()
        .all(|item| get(&item, "state").as_string().as_deref() == Some("pending")));
    offline.close();

    // "Reload" with the server reachable: the outbox is sent and confirmed.
    let online = open_client(ws_url(), "offline-user", &db).await;
    assert_eq!(
        item_ids(&online, &feed),
        ["item-1", "item-2", "item-3"],
        "pending changes survive the reload"
    );
    let _unsubscribe = online
        .subscribe(feed.clone(), Recorder::default().callback())
        .unwrap();
    wait_until("the outbox to drain", || {
        let outbox: js_sys::Array = online.outbox().unchecked_into();
        outbox.length() == 0 && online.rev(feed.clone()).unwrap() == Some(3.0)
    })
    .await;
    let items: js_sys::Array = online.items(feed.clone()).unwrap().unchecked_into();
    assert!(items
        .iter()
        .all(|item| get(&item, "state").as_string().as_deref() == Some("confirmed")));
    online.close();

    // A third client sees exactly three items at revision 3: nothing applied twice.
    let observer = open_client(ws_url(), "observer", &unique("thoonk-test-observer-")).await;
    let _unsubscribe = observer
        .subscribe(feed.clone(), Recorder::default().callback())
        .unwrap();
    wait_until("the observer's sync", || {
        observer.rev(feed.clone()).unwrap().is_some()
    })
    .await;
    assert_eq!(observer.rev(feed.clone()).unwrap(), Some(3.0));
    assert_eq!(item_ids(&observer, &feed), ["item-1", "item-2", "item-3"]);
    observer.close();
}
