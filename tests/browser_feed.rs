//! One feed end to end in a real browser: a client publishes through the
//! server (job queue, worker, Lua script in Redis, Redis pub/sub, the
//! gateway), another client receives the item, writes it to IndexedDB, and
//! still has it after its database was closed and reopened with no server
//! reachable.
//!
//! Run by `scripts/test`, which starts redis-server and thoonk-server first and
//! passes the WebSocket URL in `THOONK_TEST_WS_URL` at compile time.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn published_item_reaches_indexeddb_and_survives_reopen() {
    let url = ws_url();
    let feed = unique("skeleton:feed");
    let reader_db = unique("thoonk-test-reader-");

    let reader = open_client(url, "reader", &reader_db).await;
    let changes = Recorder::default();
    let _unsubscribe = reader.subscribe(feed.clone(), changes.callback()).unwrap();
    wait_until("the reader's first sync", || {
        reader.rev(feed.clone()).unwrap().is_some()
    })
    .await;

    let writer = open_client(url, "writer", &unique("thoonk-test-writer-")).await;
    let item = js_sys::JSON::parse(r#"{"title":"hello from the writer"}"#).unwrap();
    let pending = await_promise(
        writer
            .publish(feed.clone(), item, Some("item-1".into()), None)
            .unwrap(),
    )
    .await;
    let outcome = await_promise(get(&pending, "outcome")).await;
    assert_eq!(
        get(&outcome, "status").as_string().as_deref(),
        Some("accepted")
    );

    // The view updates first; the callback follows once the change is in IndexedDB.
    wait_until("the change event at the reader", || {
        changes.saw_item("item-1")
    })
    .await;
    assert_eq!(item_ids(&reader, &feed), ["item-1"]);
    assert_eq!(reader.rev(feed.clone()).unwrap(), Some(1.0));
    reader.close();
    writer.close();

    // Reopen with no reachable server: what it shows comes from IndexedDB alone.
    let offline = open_client("ws://127.0.0.1:9/ws", "reader", &reader_db).await;
    assert_eq!(item_ids(&offline, &feed), ["item-1"]);
    let items: js_sys::Array = offline.items(feed.clone()).unwrap().unchecked_into();
    let first = items.get(0);
    assert_eq!(
        get(&get(&first, "item"), "title").as_string().as_deref(),
        Some("hello from the writer")
    );
    assert_eq!(
        get(&first, "state").as_string().as_deref(),
        Some("confirmed")
    );
    assert_eq!(offline.rev(feed).unwrap(), Some(1.0));
    offline.close();
}
