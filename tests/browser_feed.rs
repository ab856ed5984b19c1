//! One feed end to end in a real browser: a client publishes through the
//! server (Lua script in Redis, Redis pub/sub, the gateway), another client
//! receives the item, writes it to IndexedDB, and still has it after its
//! database was closed and reopened with no server reachable.
//!
//! Run by `scripts/test`, which starts redis-server and thoonk-server first and
//! passes the WebSocket URL in `THOONK_TEST_WS_URL` at compile time.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use thoonk_sync::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const WS_URL: Option<&str> = option_env!("THOONK_TEST_WS_URL");

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", (js_sys::Math::random() * 1e12) as u64)
}

fn options(url: &str, token: &str, db_name: &str) -> JsValue {
    let options = js_sys::Object::new();
    for (key, value) in [("url", url), ("token", token), ("dbName", db_name)] {
        js_sys::Reflect::set(&options, &key.into(), &value.into()).unwrap();
    }
    options.into()
}

async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

fn item_ids(client: &Client, feed: &str) -> Vec<String> {
    let items: js_sys::Array = client.items(feed.into()).unwrap().unchecked_into();
    items
        .iter()
        .map(|item| {
            js_sys::Reflect::get(&item, &"id".into())
                .unwrap()
                .as_string()
                .unwrap()
        })
        .collect()
}

#[wasm_bindgen_test]
async fn published_item_reaches_indexeddb_and_survives_reopen() {
    let url = WS_URL.expect("THOONK_TEST_WS_URL is set by scripts/test");
    let feed = unique("skeleton:feed");
    let reader_db = unique("thoonk-test-reader-");

    let reader = Client::open(options(url, "reader", &reader_db))
        .await
        .unwrap();
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen_in_callback = seen.clone();
    let on_change = Closure::<dyn Fn(JsValue)>::new(move |event: JsValue| {
        let kind = js_sys::Reflect::get(&event, &"kind".into()).unwrap();
        seen_in_callback
            .borrow_mut()
            .push(kind.as_string().unwrap());
    });
    let _unsubscribe = reader
        .subscribe(
            feed.clone(),
            on_change
                .as_ref()
                .unchecked_ref::<js_sys::Function>()
                .clone(),
        )
        .unwrap();

    // The first frame for a new subscription is the feed's snapshot (empty here).
    for _ in 0..400 {
        if !seen.borrow().is_empty() {
            break;
        }
        sleep(25).await;
    }
    assert_eq!(*seen.borrow(), ["reset"]);

    let writer = Client::open(options(url, "writer", &unique("thoonk-test-writer-")))
        .await
        .unwrap();
    let item = js_sys::JSON::parse(r#"{"title":"hello from the writer"}"#).unwrap();
    let outcome = writer
        .publish(feed.clone(), item, Some("item-1".into()))
        .await
        .unwrap();
    let status = js_sys::Reflect::get(&outcome, &"status".into()).unwrap();
    assert_eq!(status.as_string().as_deref(), Some("accepted"));

    for _ in 0..200 {
        if item_ids(&reader, &feed) == ["item-1"] {
            break;
        }
        sleep(25).await;
    }
    assert_eq!(item_ids(&reader, &feed), ["item-1"]);
    assert!(
        seen.borrow().iter().any(|kind| kind == "publish"),
        "events: {:?}",
        seen.borrow()
    );
    assert_eq!(reader.rev(feed.clone()), Some(1.0));
    reader.close();
    writer.close();

    // Reopen with no reachable server: what it shows comes from IndexedDB alone.
    let offline = Client::open(options("ws://127.0.0.1:9/ws", "reader", &reader_db))
        .await
        .unwrap();
    assert_eq!(item_ids(&offline, &feed), ["item-1"]);
    let items: js_sys::Array = offline.items(feed.clone()).unwrap().unchecked_into();
    let first = items.get(0);
    let title = js_sys::Reflect::get(
        &js_sys::Reflect::get(&first, &"item".into()).unwrap(),
        &"title".into(),
    )
    .unwrap();
    assert_eq!(title.as_string().as_deref(), Some("hello from the writer"));
    assert_eq!(offline.rev(feed), Some(1.0));
    offline.close();
}
