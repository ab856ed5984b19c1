//! The IndexedDB copy of the mirrored feeds (rexie).
//!
//! Two object stores: `feeds` (key `feed`: epoch, rev and the item ids in
//! order) and `items` (key `[feed, id]`: the item and its revision). Every
//! update of a feed is one read-write transaction in which nothing but
//! IndexedDB requests is awaited.

use std::collections::HashMap;

use rexie::{KeyRange, ObjectStore, Rexie, TransactionMode};
use serde::{Deserialize, Serialize};
use thoonk_protocol::{Epoch, FeedName, Item, ItemId, Rev};
use wasm_bindgen::JsValue;

use crate::mirror::FeedMirror;

const DB_VERSION: u32 = 1;
const FEEDS: &str = "feeds";
const ITEMS: &str = "items";

/// The browser's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// IndexedDB refused or failed a request (quota, private mode, blocked upgrade).
    #[error("IndexedDB failed: {0}; check the browser's storage permissions and free space")]
    IndexedDb(String),
    /// A stored record does not have the expected shape: the database was
    /// written by another program or version; delete it to start over.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<rexie::Error> for StoreError {
    fn from(err: rexie::Error) -> Self {
        Self::IndexedDb(err.to_string())
    }
}

#[derive(Serialize, Deserialize)]
struct FeedRecord {
    feed: FeedName,
    epoch: Epoch,
    rev: Rev,
    order: Vec<ItemId>,
}

#[derive(Serialize, Deserialize)]
struct ItemRecord {
    feed: FeedName,
    id: ItemId,
    item: serde_json::Value,
    rev: Rev,
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, StoreError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn from_js<T: for<'de> Deserialize<'de>>(value: JsValue) -> Result<T, StoreError> {
    serde_wasm_bindgen::from_value(value).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// The key range of every item of one feed: `[feed]` < `[feed, id]` < `[feed, []]`.
fn feed_range(feed: &FeedName) -> Result<KeyRange, StoreError> {
    let lower = js_sys::Array::of1(&JsValue::from_str(feed.as_str()));
    let upper = js_sys::Array::of2(&JsValue::from_str(feed.as_str()), &js_sys::Array::new());
    KeyRange::bound(&lower, &upper, Some(false), Some(false))
        .map_err(|err| StoreError::IndexedDb(err.to_string()))
}

/// The mirrored feeds in one IndexedDB database.
pub struct MirrorStore {
    db: Rexie,
}

impl MirrorStore {
    /// Opens (and creates or upgrades) the database `name`.
    pub async fn open(name: &str) -> Result<Self, StoreError> {
        let db = Rexie::builder(name)
            .version(DB_VERSION)
            .add_object_store(ObjectStore::new(FEEDS).key_path("feed"))
            .add_object_store(ObjectStore::new(ITEMS).key_path_array(["feed", "id"]))
            .build()
            .await?;
        Ok(Self { db })
    }

    /// Reads every mirrored feed.
    pub async fn load(&self) -> Result<HashMap<FeedName, FeedMirror>, StoreError> {
        let tx = self
            .db
            .transaction(&[FEEDS, ITEMS], TransactionMode::ReadOnly)?;
        let feeds = tx.store(FEEDS)?.get_all(None, None).await?;
        let items_store = tx.store(ITEMS)?;
        let mut mirrors = HashMap::new();
        for value in feeds {
            let record: FeedRecord = from_js(value)?;
            let rows = items_store
                .get_all(Some(feed_range(&record.feed)?), None)
                .await?;
            let mut by_id: HashMap<ItemId, Item> = HashMap::with_capacity(rows.len());
            for row in rows {
                let row: ItemRecord = from_js(row)?;
                by_id.insert(
                    row.id.clone(),
                    Item {
                        id: row.id,
                        item: row.item,
                        rev: row.rev,
                    },
                );
            }
            let items = record
                .order
                .iter()
                .map(|id| {
                    by_id.remove(id).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "feed {} lists item {id} that is not stored",
                            record.feed
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mirror = FeedMirror {
                epoch: record.epoch,
                rev: record.rev,
                items,
            };
            mirrors.insert(record.feed, mirror);
        }
        tx.done().await?;
        Ok(mirrors)
    }

    /// Writes a feed's state in one transaction: its record, the items in
    /// `changed` (put when present in the mirror, deleted otherwise), or all
    /// its items when `replace_all` (after a snapshot).
    pub async fn save(
        &self,
        feed: &FeedName,
        mirror: &FeedMirror,
        changed: &[ItemId],
        replace_all: bool,
    ) -> Result<(), StoreError> {
        let record = to_js(&FeedRecord {
            feed: feed.clone(),
            epoch: mirror.epoch,
            rev: mirror.rev,
            order: mirror.items.iter().map(|i| i.id.clone()).collect(),
        })?;
        let row = |item: &Item| {
            to_js(&ItemRecord {
                feed: feed.clone(),
                id: item.id.clone(),
                item: item.item.clone(),
                rev: item.rev,
            })
        };
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        if replace_all {
            for item in &mirror.items {
                puts.push(row(item)?);
            }
        } else {
            for id in changed {
                match mirror.items.iter().find(|i| &i.id == id) {
                    Some(item) => puts.push(row(item)?),
                    None => deletes.push(js_sys::Array::of2(
                        &JsValue::from_str(feed.as_str()),
                        &JsValue::from_str(id.as_str()),
                    )),
                }
            }
        }
        // Everything is prepared before the transaction opens: only IndexedDB
        // requests are awaited inside it.
        let tx = self
            .db
            .transaction(&[FEEDS, ITEMS], TransactionMode::ReadWrite)?;
        let items = tx.store(ITEMS)?;
        if replace_all {
            items.delete(feed_range(feed)?.into()).await?;
        }
        for key in deletes {
            items.delete(key.into()).await?;
        }
        items
            .put_all(puts.into_iter().map(|value| (value, None)))
            .await?;
        tx.store(FEEDS)?.put(&record, None).await?;
        tx.done().await?;
        Ok(())
    }

    /// Closes the database.
    pub fn close(self) {
        self.db.close();
    }
}
