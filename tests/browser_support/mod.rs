//! Helpers shared by the browser tests (wasm-bindgen-test in headless Chromium).
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use thoonk_sync::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The WebSocket URL of the server `scripts/test` started (baked in at compile time).
pub fn ws_url() -> &'static str {
    match option_env!("THOONK_TEST_WS_URL") {
        Some(url) => url,
        None => {
            panic!("THOONK_TEST_WS_URL is set by scripts/test when it builds the browser tests")
        }
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", (js_sys::Math::random() * 1e12) as u64)
}

/// Reads a property.
pub fn get(value: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(value, &key.into()).unwrap()
}

/// Awaits a JS promise (given as any JS value) and returns its value.
pub async fn await_promise(promise: impl Into<JsValue>) -> JsValue {
    let promise: js_sys::Promise = promise.into().unchecked_into();
    JsFuture::from(promise).await.unwrap()
}

/// Opens a client.
pub async fn open_client(url: &str, token: &str, db_name: &str) -> Client {
    let options = js_sys::Object::new();
    for (key, value) in [("url", url), ("token", token), ("dbName", db_name)] {
        js_sys::Reflect::set(&options, &key.into(), &value.into()).unwrap();
    }
    Client::open(options.unchecked_into()).await.unwrap()
}

/// Waits on the browser's timer.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Polls `ready` until it holds; panics naming `what` after 20 s.
pub async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..800 {
        if ready() {
            return;
        }
        sleep(25).await;
    }
    panic!("timed out waiting for {what}");
}

/// The ids of a feed's items as the client shows them.
pub fn item_ids(client: &Client, feed: &str) -> Vec<String> {
    let items: js_sys::Array = client.items(feed.into()).unwrap().unchecked_into();
    items
        .iter()
        .map(|item| get(&item, "id").as_string().unwrap())
        .collect()
}

/// Records the `FeedChange` events a subscription receives.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Rc<RefCell<Vec<JsValue>>>,
}

impl Recorder {
    /// The callback to pass to `subscribe` (kept alive for the test's duration).
    pub fn callback(&self) -> thoonk_sync::OnChange {
        let events = self.events.clone();
        let closure =
            Closure::<dyn Fn(JsValue)>::new(move |event: JsValue| events.borrow_mut().push(event));
        closure.into_js_value().unchecked_into()
    }

    /// True when some event listed item `id` as changed.
    pub fn saw_item(&self, id: &str) -> bool {
        self.events.borrow().iter().any(|event| {
            let changed: js_sys::Array = get(event, "changed").unchecked_into();
            changed
                .iter()
                .any(|item| get(&item, "id").as_string().as_deref() == Some(id))
        })
    }

    /// The events as JSON text, for failure messages.
    pub fn dump(&self) -> Vec<String> {
        self.events
            .borrow()
            .iter()
            .map(|e| {
                js_sys::JSON::stringify(e)
                    .map(String::from)
                    .unwrap_or_default()
            })
            .collect()
    }
}
