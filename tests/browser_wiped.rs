//! A database wiped between two runs (as when the browser evicts storage) is
//! detected, with the unconfirmed changes that were lost.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn a_wiped_database_is_reported_with_its_lost_changes() {
    let db = unique("thoonk-test-wiped-");
    let feed = unique("wiped:feed");
    let first = open_client("ws://127.0.0.1:9/ws", "wiped-user", &db).await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        let item = js_sys::JSON::parse(&format!(r#"{{"n":{n}}}"#)).unwrap();
        let pending = await_promise(first.publish(feed.clone(), item, None, None).unwrap()).await;
        ids.push(get(&pending, "id").as_string().unwrap());
    }
    let status = first.status();
    assert!(get(&status, "storageWiped").is_null());
    first.close();

    idb::Factory::new()
        .unwrap()
        .delete(&db)
        .unwrap()
        .await
        .unwrap();

    let second = open_client("ws://127.0.0.1:9/ws", "wiped-user", &db).await;
    let wiped = get(&second.status(), "storageWiped");
    assert!(!wiped.is_null(), "the wipe is reported");
    let lost: Vec<String> = js_sys::Array::from(&get(&wiped, "lostChanges"))
        .iter()
        .map(|id| id.as_string().unwrap())
        .collect();
    assert_eq!(lost, ids);
    assert!(get(&wiped, "previousClientId").as_string().is_some());
    second.close();

    // A database that was not wiped reports nothing.
    let third = open_client("ws://127.0.0.1:9/ws", "wiped-user", &db).await;
    assert!(get(&third.status(), "storageWiped").is_null());
    third.close();
}
