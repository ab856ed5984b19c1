//! A database wiped between two runs (as when the browser evicts storage) is
//! detected, with the unconfirmed changes that were lost, and reported at
//! every start until the app dismisses the report; one deleted while
//! the page runs is created again from memory, and its changes go on.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Deletes database `name`, as clearing the site's data does.
async fn delete_database(name: &str) {
    idb::Factory::new()
        .unwrap()
        .delete(name)
        .unwrap()
        .await
        .unwrap();
}

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

    delete_database(&db).await;

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

    // The report stays, at the next start too, until the app dismisses it.
    let third = open_client("ws://127.0.0.1:9/ws", "wiped-user", &db).await;
    let kept = get(&third.status(), "storageWiped");
    assert_eq!(
        js_sys::JSON::stringify(&kept).unwrap(),
        js_sys::JSON::stringify(&wiped).unwrap(),
        "the report outlives a reload"
    );
    third.dismiss_storage_wiped();
    assert!(get(&third.status(), "storageWiped").is_null());
    third.close();

    // Dismissed, it is gone for good; the database was not wiped again.
    let fourth = open_client("ws://127.0.0.1:9/ws", "wiped-user", &db).await;
    assert!(get(&fourth.status(), "storageWiped").is_null());
    fourth.close();
}

#[wasm_bindgen_test]
async fn a_database_deleted_while_open_is_written_back_and_its_changes_go_on() {
    let db = unique("thoonk-test-deleted-");
    let feed = unique("deleted:feed");
    let client = open_client(ws_url(), "deleted-user", &db).await;
    client.set_online(false);
    let _unsubscribe = client
        .subscribe(feed.clone(), Recorder::default().callback())
        .unwrap();
    for n in 1..=2 {
        let item = js_sys::JSON::parse(&format!(r#"{{"n":{n}}}"#)).unwrap();
        await_promise(
            client
                .publish(feed.clone(), item, Some(format!("item-{n}")), None)
                .unwrap(),
        )
        .await;
    }

    // The site's data is cleared while the page runs with two pending changes.
    delete_database(&db).await;

    // The next write finds the database gone: it is created again and
    // written back from memory, and the change is stored.
    let item = js_sys::JSON::parse(r#"{"n":3}"#).unwrap();
    await_promise(
        client
            .publish(feed.clone(), item, Some("item-3".into()), None)
            .unwrap(),
    )
    .await;
    let status = client.status();
    assert!(
        get(&status, "storageError").as_string().is_some(),
        "the loss is reported"
    );
    assert_ne!(
        get(&status, "connection").as_string().as_deref(),
        Some("stopped")
    );
    let outbox: js_sys::Array = client.outbox().unchecked_into();
    assert_eq!(outbox.length(), 3);

    // Back online, every change is sent and confirmed.
    client.set_online(true);
    wait_until("the outbox to drain", || {
        let outbox: js_sys::Array = client.outbox().unchecked_into();
        outbox.length() == 0 && client.rev(feed.clone()).unwrap() == Some(3.0)
    })
    .await;
    client.close();

    // And the recreated database holds them after a reload.
    let again = open_client(ws_url(), "deleted-user", &db).await;
    assert!(get(&again.status(), "storageWiped").is_null());
    assert_eq!(item_ids(&again, &feed), ["item-1", "item-2", "item-3"]);
    let outbox: js_sys::Array = again.outbox().unchecked_into();
    assert_eq!(outbox.length(), 0);
    again.close();
}
