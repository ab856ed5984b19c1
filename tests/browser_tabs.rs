//! One client per database at a time: a second client on the same database
//! (another tab) is refused with `locked` instead of sharing its change ids,
//! and can open once the first closed.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::*;
use thoonk_sync::Client;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const UNREACHABLE: &str = "ws://127.0.0.1:9/ws";

#[wasm_bindgen_test]
async fn a_second_client_on_one_database_is_refused_until_the_first_closes() {
    let db = unique("thoonk-test-tabs-");
    let first = open_client(UNREACHABLE, "tab-user", &db).await;

    let options = js_sys::Object::new();
    for (key, value) in [
        ("url", UNREACHABLE),
        ("token", "tab-user"),
        ("dbName", db.as_str()),
    ] {
        js_sys::Reflect::set(&options, &key.into(), &value.into()).unwrap();
    }
    let refused = Client::open(options.clone().unchecked_into())
        .await
        .err()
        .expect("the second open is refused");
    assert_eq!(get(&refused, "code").as_string().as_deref(), Some("locked"));

    first.close();
    let second = Client::open(options.unchecked_into())
        .await
        .expect("opens once the first closed");
    second.close();
}
