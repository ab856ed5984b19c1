//! The IndexedDB store passes the sync core's store conformance suite in a
//! real browser, and keeps what it wrote across close and reopen.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::unique;
use thoonk_sync::idb::IdbStore;
use thoonk_sync_core::conformance::cases;
use thoonk_sync_core::StoredState;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn indexeddb_store_passes_the_conformance_suite() {
    let cases = cases();
    assert!(!cases.is_empty());
    for case in cases {
        let name = unique(&format!("thoonk-conformance-{}-", case.name));
        let store = IdbStore::open(&name).await.unwrap();
        assert_eq!(
            store.load().await.unwrap(),
            StoredState::default(),
            "{}: a new store is empty",
            case.name
        );
        for (i, batch) in case.batches.iter().enumerate() {
            store
                .apply(batch)
                .await
                .unwrap_or_else(|err| panic!("{}: batch {i} failed: {err}", case.name));
        }
        let expected = case.expected();
        assert_eq!(
            store.load().await.unwrap(),
            expected,
            "{}: first load",
            case.name
        );
        assert_eq!(
            store.load().await.unwrap(),
            expected,
            "{}: second load",
            case.name
        );
        store.close();
        let reopened = IdbStore::open(&name).await.unwrap();
        assert_eq!(
            reopened.load().await.unwrap(),
            expected,
            "{}: after reopening",
            case.name
        );
        reopened.close();
    }
}
