//! The IndexedDB store passes the sync core's store conformance suite in a
//! real browser, keeps what it wrote across close and reopen, and commits
//! nothing of a batch in which a request throws.
#![cfg(target_arch = "wasm32")]

mod browser_support;

use browser_support::unique;
use thoonk_sync::idb::IdbStore;
use thoonk_sync_core::conformance::cases;
use thoonk_sync_core::StoredState;
use wasm_bindgen::JsValue;
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

/// A request that throws while a batch is being queued aborts the whole
/// transaction: the writes queued before it never commit on their own. (No
/// record the core writes makes IndexedDB throw today, so the fault is
/// injected: `put` into the `outcomes` store throws, as it would for a key
/// or value the browser refuses.)
#[wasm_bindgen_test]
async fn a_request_that_throws_mid_batch_commits_nothing_of_the_batch() {
    use thoonk_protocol::{ChangeId, ErrorCode, FeedName, ItemId, Operation};
    use thoonk_sync_core::{ChangeOutcome, ClientMeta, OutcomeRecord, StoreBatch, StoreWrite};

    let install = js_sys::Function::new_no_args(
        "const proto = IDBObjectStore.prototype;
         const put = proto.put;
         proto.put = function (...args) {
           if (this.name === 'outcomes') throw new DOMException('injected', 'DataError');
           return put.apply(this, args);
         };
         return () => { proto.put = put; };",
    );
    let store = IdbStore::open(&unique("thoonk-throw-")).await.unwrap();
    let id = ChangeId("c:1".into());
    let batch = StoreBatch {
        writes: vec![
            StoreWrite::PutMeta {
                meta: ClientMeta {
                    client_id: "c".into(),
                    next_seq: 2,
                },
            },
            StoreWrite::PutOutcome {
                outcome: OutcomeRecord {
                    id: id.clone(),
                    seq: 1,
                    wire_id: id,
                    op: Operation::Retract {
                        feed: FeedName::new("team:1:tasks").unwrap(),
                        id: ItemId::new("a").unwrap(),
                    },
                    outcome: ChangeOutcome::Rejected {
                        code: ErrorCode::Forbidden,
                        message: "no".into(),
                    },
                    at: 0,
                },
            },
        ],
    };
    let restore: js_sys::Function = install.call0(&JsValue::NULL).unwrap().into();
    let failed = store.apply(&batch).await;
    restore.call0(&JsValue::NULL).unwrap();
    assert!(failed.is_err(), "the throwing request fails the batch");
    assert_eq!(
        store.load().await.unwrap(),
        StoredState::default(),
        "nothing of the batch was written"
    );
    store.close();
}

/// A store whose lead another store claimed since writes nothing: the batch
/// (a large one, whose writes are queued behind the read of the lead) fails
/// as fenced and none of it commits; the new leader's batches commit.
#[wasm_bindgen_test]
async fn a_store_another_claimed_writes_nothing_of_its_batch() {
    use thoonk_protocol::{FeedName, ItemId};
    use thoonk_sync::idb::StoreError;
    use thoonk_sync_core::{FeedHead, StoreBatch, StoreWrite, StoredItem};

    let name = unique("thoonk-fenced-");
    let feed = FeedName::new("team:1:tasks").unwrap();
    let mut batch = StoreBatch {
        writes: vec![StoreWrite::PutFeed {
            feed: feed.clone(),
            head: FeedHead { epoch: 1, rev: 500 },
        }],
    };
    batch
        .writes
        .extend((0..500u64).map(|n| StoreWrite::PutItem {
            item: StoredItem {
                feed: feed.clone(),
                id: ItemId::new(format!("i{n}")).unwrap(),
                value: serde_json::json!({ "n": n }),
                rev: n + 1,
                order: n,
            },
        }));
    let old = IdbStore::open(&name).await.unwrap();
    old.claim_leadership("old").await.unwrap();
    let new = IdbStore::open(&name).await.unwrap();
    new.claim_leadership("new").await.unwrap();
    let fenced = old.apply(&batch).await;
    assert!(
        matches!(fenced, Err(StoreError::Fenced)),
        "the old leader is fenced: {fenced:?}"
    );
    assert_eq!(
        new.load().await.unwrap(),
        StoredState::default(),
        "nothing of the fenced batch was written"
    );
    new.apply(&batch).await.unwrap();
    assert_eq!(new.load().await.unwrap().items.len(), 500);
    old.close();
    new.close();
}
