//! The IndexedDB store of the sync core.
//!
//! Implements the core's storage contract ("load everything at start, apply
//! one batch atomically") over IndexedDB with the `idb` crate, the layer rexie
//! is built on, because batches that hold outbox writes ask for
//! `durability: "strict"`, which rexie cannot pass.
//!
//! Schema (version 2): object stores `meta`, `subscriptions`, `heads`,
//! `mirror` (key `[feed, id]`), `outbox` (key `seq`) and `outcomes` (key
//! change id), each value a JSON text of the core's record (the mirror's
//! texts are joined into one JSON array by the browser at load, and parsed
//! at once). Version 1 held only
//! a cache of feeds (`feeds`, `items`), which the upgrade drops; no migration
//! ever drops `outbox` or `outcomes`.
//!
//! Fencing: `meta` also holds the token of the tab that leads (see
//! `crate::tab_transport`). A store that claimed leadership checks, inside each batch's
//! transaction, that the token is still its own; a tab that lost the lead
//! while frozen therefore cannot write (or, since the core writes before it
//! sends, send) anything once another tab took over.

use std::future::IntoFuture;

use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use idb::{KeyRange, Query, TransactionResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thoonk_protocol::{FeedName, FeedPattern};
use thoonk_sync_core::{
    ClientMeta, FeedHead, OutboxRecord, OutcomeRecord, StoreBatch, StoreWrite, StoredItem,
    StoredState,
};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use web_sys::IdbDatabase;

const SCHEMA_VERSION: u32 = 2;
const META: &str = "meta";
const SUBSCRIPTIONS: &str = "subscriptions";
const HEADS: &str = "heads";
const MIRROR: &str = "mirror";
const OUTBOX: &str = "outbox";
const OUTCOMES: &str = "outcomes";
const STORES: [&str; 6] = [META, SUBSCRIPTIONS, HEADS, MIRROR, OUTBOX, OUTCOMES];
const META_KEY: &str = "client";
const LEADER_KEY: &str = "leader";

/// The browser's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The browser's storage quota is used up: the write was not made.
    #[error("browser storage is full ({0}); free space or evict cached feeds")]
    QuotaExceeded(String),
    /// IndexedDB refused or failed a request (private mode, blocked upgrade, closed database).
    #[error("IndexedDB failed: {0}; check the browser's storage permissions")]
    IndexedDb(String),
    /// A stored record does not have the expected shape: the database was
    /// written by another program or version; delete it to start over.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Another tab took over this database (this one was frozen or too slow):
    /// nothing was written; this tab must follow the new leader.
    #[error("another tab leads this database now; this tab follows it")]
    Fenced,
    /// The connection was closed under the page (the database was deleted,
    /// the site's data cleared, or another tab upgrades it): nothing was
    /// written; [`IdbStore::reopen`] opens it again.
    #[error("the database connection was closed: {0}")]
    Closed(String),
}

impl StoreError {
    fn from_idb(err: idb::Error) -> Self {
        let text = err.to_string();
        if text.contains("QuotaExceeded") {
            Self::QuotaExceeded(text)
        } else {
            Self::IndexedDb(text)
        }
    }
}

fn text<T: Serialize>(value: &T) -> JsValue {
    JsValue::from_str(&serde_json::to_string(value).expect("store records always serialize"))
}

fn parse<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, StoreError> {
    let text = value
        .as_string()
        .ok_or_else(|| StoreError::Corrupt(format!("a {what} record is not text")))?;
    serde_json::from_str(&text)
        .map_err(|err| StoreError::Corrupt(format!("a {what} record: {err}")))
}

/// Every record of `store` (JSON texts), parsed: the texts are joined into one
/// JSON array by the browser and parsed at once, so one string crosses into
/// wasm instead of one per record.
async fn all_records<T: DeserializeOwned>(
    tx: &Tx,
    store: &str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let failed = |err: JsValue| StoreError::IndexedDb(format!("reading {what} records: {err:?}"));
    let call = |target: &JsValue, method: &str, arg: Option<&JsValue>| {
        let function: js_sys::Function = js_sys::Reflect::get(target, &method.into())
            .map_err(failed)?
            .unchecked_into();
        match arg {
            Some(arg) => function.call1(target, arg),
            None => function.call0(target),
        }
        .map_err(failed)
    };
    let object_store = call(&tx.raw, "objectStore", Some(&store.into()))?;
    let request: web_sys::EventTarget = call(&object_store, "getAll", None)?.unchecked_into();
    let done = js_sys::Promise::new(&mut |resolve, reject| {
        let _ = js_sys::Reflect::set(&request, &"onsuccess".into(), &resolve);
        let _ = js_sys::Reflect::set(&request, &"onerror".into(), &reject);
    });
    wasm_bindgen_futures::JsFuture::from(done)
        .await
        .map_err(failed)?;
    let records: js_sys::Array = js_sys::Reflect::get(&request, &"result".into())
        .map_err(failed)?
        .unchecked_into();
    if records.length() == 0 {
        return Ok(Vec::new());
    }
    let joined = String::from(records.join(","));
    let parsed: Vec<T> = serde_json::from_str(&format!("[{joined}]"))
        .map_err(|err| StoreError::Corrupt(format!("a {what} record: {err}")))?;
    // A record that is not one JSON text (not text, or several) shows here.
    if parsed.len() != records.length() as usize {
        return Err(StoreError::Corrupt(format!(
            "the {what} records are not one JSON text each"
        )));
    }
    Ok(parsed)
}

/// The ids and JSON texts of a batch's item records, written in wasm into
/// one string that crosses into JS once; each id and text is then a
/// substring of it (one cheap call per record instead of a text conversion
/// per record, which a snapshot of thousands of items pays thousands of
/// times).
struct ItemTexts {
    all: js_sys::JsString,
    /// Per `PutItem` in order: where its id starts, where its text starts
    /// and where it ends, in UTF-16 code units (JavaScript string indices).
    spans: Vec<[u32; 3]>,
}

impl ItemTexts {
    fn of(batch: &StoreBatch) -> Self {
        let mut text = String::new();
        let mut spans = Vec::new();
        // The length of `part` in UTF-16 code units.
        let units = |part: &str| {
            (if part.is_ascii() {
                part.len()
            } else {
                part.encode_utf16().count()
            }) as u32
        };
        let mut at = 0u32;
        for write in &batch.writes {
            if let StoreWrite::PutItem { item } = write {
                let value = serde_json::to_string(item).expect("store records always serialize");
                let id = item.id.as_str();
                let id_end = at + units(id);
                let end = id_end + units(&value);
                text.push_str(id);
                text.push_str(&value);
                spans.push([at, id_end, end]);
                at = end;
            }
        }
        let all = if spans.is_empty() {
            js_sys::JsString::from("")
        } else {
            js_sys::JsString::from(text.as_str())
        };
        Self { all, spans }
    }

    /// Each item record's id and JSON text, in the batch's order.
    fn records(&self) -> impl Iterator<Item = (JsValue, JsValue)> + '_ {
        self.spans.iter().map(|&[start, id_end, end]| {
            (
                self.all.substring(start, id_end).into(),
                self.all.substring(id_end, end).into(),
            )
        })
    }
}

fn item_key(feed: &FeedName, id: &str) -> JsValue {
    js_sys::Array::of2(&feed.as_str().into(), &id.into()).into()
}

/// Every `[feed, id]` key of one feed: `[feed]` < `[feed, id]` < `[feed, []]`.
fn feed_range(feed: &FeedName) -> Result<Query, StoreError> {
    let lower = js_sys::Array::of1(&feed.as_str().into());
    let upper = js_sys::Array::of2(&feed.as_str().into(), &js_sys::Array::new());
    let range =
        KeyRange::bound(&lower, &upper, Some(false), Some(false)).map_err(StoreError::from_idb)?;
    Ok(range.into())
}

/// A transaction, with a handle to read why it aborted.
struct Tx {
    tx: idb::Transaction,
    raw: web_sys::IdbTransaction,
}

impl Tx {
    fn store(&self, name: &str) -> Result<idb::ObjectStore, StoreError> {
        self.tx.object_store(name).map_err(StoreError::from_idb)
    }

    /// Waits for the commit; an abort reports its cause (a full quota
    /// becomes [`StoreError::QuotaExceeded`]).
    async fn commit(self, what: &str) -> Result<(), StoreError> {
        match self.tx.await.map_err(StoreError::from_idb)? {
            TransactionResult::Committed => Ok(()),
            TransactionResult::Aborted => Err(match self.raw.error() {
                Some(e) if e.name() == "QuotaExceededError" => {
                    StoreError::QuotaExceeded(e.message())
                }
                Some(e) => StoreError::IndexedDb(format!("{what} was aborted: {}", e.message())),
                None => StoreError::IndexedDb(format!("{what} was aborted")),
            }),
        }
    }

    /// Commits when every request was queued (`queued` is `Ok`); aborts on
    /// any error, so that the requests queued before it never commit.
    async fn commit_or_abort(
        self,
        queued: Result<(), StoreError>,
        what: &str,
    ) -> Result<(), StoreError> {
        match queued {
            Ok(()) => self.commit(what).await,
            Err(err) => {
                self.abort();
                Err(err)
            }
        }
    }

    fn abort(self) {
        let _ = self.tx.abort();
    }
}

/// One IndexedDB database holding a client's whole sync state.
pub struct IdbStore {
    name: String,
    db: std::cell::RefCell<IdbDatabase>,
    /// The leadership token this store writes under, once claimed.
    leader: std::cell::RefCell<Option<String>>,
    /// Closes this connection when another tab upgrades the schema (or
    /// deletes the database), so that it is not blocked; kept alive as long
    /// as the store.
    on_version_change: std::cell::RefCell<Closure<dyn FnMut()>>,
}

impl IdbStore {
    /// Opens (creating or upgrading) the database `name`.
    pub async fn open(name: &str) -> Result<Self, StoreError> {
        let (db, on_version_change) = Self::connect(name).await?;
        Ok(Self {
            name: name.to_owned(),
            db: std::cell::RefCell::new(db),
            leader: std::cell::RefCell::default(),
            on_version_change: std::cell::RefCell::new(on_version_change),
        })
    }

    async fn connect(name: &str) -> Result<(IdbDatabase, Closure<dyn FnMut()>), StoreError> {
        let mut builder = DatabaseBuilder::new(name).version(SCHEMA_VERSION);
        for store in STORES {
            builder = builder.add_object_store(ObjectStoreBuilder::new(store));
        }
        let db: IdbDatabase = builder.build().await.map_err(StoreError::from_idb)?.into();
        let to_close = db.clone();
        let on_version_change = Closure::<dyn FnMut()>::new(move || to_close.close());
        db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
        Ok((db, on_version_change))
    }

    /// Opens the database again after its connection was closed under the
    /// page ([`StoreError::Closed`]), creating it when it was deleted. A
    /// store that leads claims the new database when no other tab did.
    /// True when the database came back empty (it was deleted).
    pub async fn reopen(&self) -> Result<bool, StoreError> {
        let (db, on_version_change) = Self::connect(&self.name).await?;
        let old = self.db.replace(db);
        old.set_onversionchange(None);
        old.close();
        *self.on_version_change.borrow_mut() = on_version_change;
        let tx = self.transaction("readwrite", true)?;
        let result = async {
            let meta = tx.store(META)?;
            let empty = meta
                .get(JsValue::from_str(META_KEY))
                .map_err(StoreError::from_idb)?
                .await
                .map_err(StoreError::from_idb)?
                .is_none();
            let leader = self.leader.borrow().clone();
            if let Some(token) = leader {
                let current = meta
                    .get(JsValue::from_str(LEADER_KEY))
                    .map_err(StoreError::from_idb)?
                    .await
                    .map_err(StoreError::from_idb)?;
                if current.is_none() {
                    meta.put(&token.as_str().into(), Some(&LEADER_KEY.into()))
                        .map_err(StoreError::from_idb)?;
                }
            }
            Ok(empty)
        }
        .await;
        let empty = result.as_ref().is_ok_and(|empty| *empty);
        tx.commit_or_abort(result.map(drop), "opening the database again")
            .await
            .map(|()| empty)
    }

    /// Makes `token` the database's leader: from now on every batch of this
    /// store checks that no other tab claimed it since (see [`StoreError::Fenced`]).
    pub async fn claim_leadership(&self, token: &str) -> Result<(), StoreError> {
        // Default durability: a later transaction of any connection sees the
        // claim once it committed, flushed to disk or not; a claim a crash
        // lost is made again by the next leader.
        let tx = self.transaction("readwrite", false)?;
        let queued = tx
            .store(META)
            .and_then(|meta| {
                meta.put(&token.into(), Some(&LEADER_KEY.into()))
                    .map_err(StoreError::from_idb)
            })
            .map(drop);
        tx.commit_or_abort(queued, "claiming the lead").await?;
        *self.leader.borrow_mut() = Some(token.to_owned());
        Ok(())
    }

    /// Loads everything, in one read-only transaction.
    pub async fn load(&self) -> Result<StoredState, StoreError> {
        let tx = self.transaction("readonly", false)?;
        // Each request is awaited as soon as it is made: a request's future
        // only hears its result if it is listening when the result comes.
        let store = |name: &str| tx.store(name);
        let mut state = StoredState::default();
        let values = |name: &'static str| async move {
            store(name)?
                .get_all(None, None)
                .map_err(StoreError::from_idb)?
                .await
                .map_err(StoreError::from_idb)
        };
        let meta = store(META)?
            .get(JsValue::from_str(META_KEY))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        if let Some(value) = meta {
            state.meta = Some(parse::<ClientMeta>(value, "meta")?);
        }
        for value in values(SUBSCRIPTIONS).await? {
            state
                .subscriptions
                .insert(parse::<FeedPattern>(value, "subscription")?);
        }
        let heads = values(HEADS).await?;
        let head_keys = store(HEADS)?
            .get_all_keys(None, None)
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        for (key, value) in head_keys.into_iter().zip(heads) {
            let feed = key
                .as_string()
                .and_then(|k| FeedName::new(k).ok())
                .ok_or_else(|| {
                    StoreError::Corrupt("a feed head's key is not a feed name".into())
                })?;
            state
                .feeds
                .insert(feed, parse::<FeedHead>(value, "feed head")?);
        }
        for item in all_records::<StoredItem>(&tx, MIRROR, "item").await? {
            state
                .items
                .insert((item.feed.clone(), item.id.clone()), item);
        }
        for value in values(OUTBOX).await? {
            let entry = parse::<OutboxRecord>(value, "outbox")?;
            state.outbox.insert(entry.seq, entry);
        }
        for value in values(OUTCOMES).await? {
            let outcome = parse::<OutcomeRecord>(value, "outcome")?;
            state.outcomes.insert(outcome.id.clone(), outcome);
        }
        Ok(state)
    }

    /// Applies one batch in one read-write transaction: every write or none.
    /// Batches that touch the outbox or outcomes ask for strict durability.
    pub async fn apply(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let strict = batch.writes.iter().any(|w| {
            matches!(
                w,
                StoreWrite::PutOutbox { .. }
                    | StoreWrite::DeleteOutbox { .. }
                    | StoreWrite::PutOutcome { .. }
                    | StoreWrite::PutMeta { .. }
            )
        });
        let tx = self.transaction("readwrite", strict)?;
        let queued = self.queue_writes(&tx, batch).await;
        tx.commit_or_abort(queued, "a write").await
    }

    /// Queues every write of `batch` in `tx` behind a read of the lead, and
    /// fails with [`StoreError::Fenced`] (the caller aborts) when another tab
    /// claimed it. The writes are queued without waiting for that read: the
    /// transaction runs its requests in order and commits only once all of
    /// them finished, so the read's answer (heard before any write finishes)
    /// aborts it in time.
    async fn queue_writes(&self, tx: &Tx, batch: &StoreBatch) -> Result<(), StoreError> {
        let store = |name: &str| tx.store(name);
        let (meta, subscriptions, heads, mirror, outbox, outcomes) = (
            store(META)?,
            store(SUBSCRIPTIONS)?,
            store(HEADS)?,
            store(MIRROR)?,
            store(OUTBOX)?,
            store(OUTCOMES)?,
        );
        let token = self.leader.borrow().clone();
        let lead = match &token {
            Some(_) => Some(
                meta.get(JsValue::from_str(LEADER_KEY))
                    .map_err(StoreError::from_idb)?
                    .into_future(),
            ),
            None => None,
        };
        // Requests are queued without awaiting each: the transaction runs them
        // in order and commits all or, on the first failure, none. A request
        // that throws at once aborts the transaction here: the requests
        // queued before it never commit, and the read of the lead is awaited
        // to its end (its callbacks must outlive its answer).
        if let Err(err) = Self::queue_requests(
            batch,
            [&meta, &subscriptions, &heads, &mirror, &outbox, &outcomes],
        ) {
            let _ = tx.raw.abort();
            if let Some(lead) = lead {
                let _ = lead.await;
            }
            return Err(err);
        }
        if let (Some(lead), Some(token)) = (lead, token) {
            let current = lead.await.map_err(StoreError::from_idb)?;
            if current.and_then(|v| v.as_string()).as_deref() != Some(token.as_str()) {
                return Err(StoreError::Fenced);
            }
        }
        Ok(())
    }

    /// Queues the requests of `batch` in the stores of one transaction
    /// (meta, subscriptions, heads, mirror, outbox, outcomes), stopping at
    /// the first request that throws.
    fn queue_requests(
        batch: &StoreBatch,
        stores: [&idb::ObjectStore; 6],
    ) -> Result<(), StoreError> {
        let [meta, subscriptions, heads, mirror, outbox, outcomes] = stores;
        let texts = ItemTexts::of(batch);
        let mut items = texts.records();
        // The last feed name handed to JS, reused for the keys of its items.
        let mut feed_js: Option<(&FeedName, JsValue)> = None;
        for write in &batch.writes {
            let queued = match write {
                StoreWrite::PutMeta { meta: value } => {
                    meta.put(&text(value), Some(&META_KEY.into())).map(drop)
                }
                StoreWrite::PutSubscription { pattern } => subscriptions
                    .put(&text(pattern), Some(&pattern.as_str().into()))
                    .map(drop),
                StoreWrite::DeleteSubscription { pattern } => subscriptions
                    .delete(JsValue::from_str(pattern.as_str()))
                    .map(drop),
                StoreWrite::ClearFeed { feed } => {
                    heads
                        .delete(JsValue::from_str(feed.as_str()))
                        .map_err(StoreError::from_idb)?;
                    mirror.delete(feed_range(feed)?).map(drop)
                }
                StoreWrite::PutFeed { feed, head } => heads
                    .put(&text(head), Some(&feed.as_str().into()))
                    .map(drop),
                StoreWrite::PutItem { item } => {
                    let (id, value) = items.next().expect("one text per item record");
                    let feed = match &feed_js {
                        Some((name, value)) if *name == &item.feed => value.clone(),
                        _ => {
                            let value = JsValue::from_str(item.feed.as_str());
                            feed_js = Some((&item.feed, value.clone()));
                            value
                        }
                    };
                    let key = js_sys::Array::of2(&feed, &id);
                    mirror.put(&value, Some(&key)).map(drop)
                }
                StoreWrite::DeleteItem { feed, id } => {
                    mirror.delete(item_key(feed, id.as_str())).map(drop)
                }
                StoreWrite::PutOutbox { entry } => outbox
                    .put(&text(entry), Some(&JsValue::from_f64(entry.seq as f64)))
                    .map(drop),
                StoreWrite::DeleteOutbox { seq } => {
                    outbox.delete(JsValue::from_f64(*seq as f64)).map(drop)
                }
                StoreWrite::PutOutcome { outcome } => outcomes
                    .put(&text(outcome), Some(&outcome.id.0.as_str().into()))
                    .map(drop),
                StoreWrite::DeleteOutcome { id } => {
                    outcomes.delete(JsValue::from_str(&id.0)).map(drop)
                }
            };
            queued.map_err(StoreError::from_idb)?;
        }
        Ok(())
    }

    /// Drops every cached feed (items and heads) to free space, leaving the
    /// outbox, outcomes, meta and subscriptions.
    pub async fn evict_feeds(&self) -> Result<(), StoreError> {
        let tx = self.transaction("readwrite", true)?;
        let queued = async {
            if !self.still_leads(&tx.store(META)?).await? {
                return Err(StoreError::Fenced);
            }
            tx.store(MIRROR)?.clear().map_err(StoreError::from_idb)?;
            tx.store(HEADS)?.clear().map_err(StoreError::from_idb)?;
            Ok(())
        }
        .await;
        tx.commit_or_abort(queued, "dropping the cached feeds")
            .await
    }

    /// Inside a transaction: false when this store claimed the lead and
    /// another tab claimed it since (see [`StoreError::Fenced`]).
    async fn still_leads(&self, meta: &idb::ObjectStore) -> Result<bool, StoreError> {
        let leader = self.leader.borrow().clone();
        let Some(token) = leader else {
            return Ok(true);
        };
        let current = meta
            .get(JsValue::from_str(LEADER_KEY))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        Ok(current.and_then(|v| v.as_string()).as_deref() == Some(token.as_str()))
    }

    /// A transaction over every store; `durability: "strict"` when asked.
    /// (web-sys gates the options argument behind an unstable cfg, so the
    /// call goes through `Reflect`.)
    fn transaction(&self, mode: &str, strict: bool) -> Result<Tx, StoreError> {
        let failed =
            |err: JsValue| StoreError::IndexedDb(format!("cannot start a transaction: {err:?}"));
        let names = js_sys::Array::new();
        for name in STORES {
            names.push(&name.into());
        }
        let options = js_sys::Object::new();
        let durability = if strict { "strict" } else { "default" };
        js_sys::Reflect::set(&options, &"durability".into(), &durability.into()).map_err(failed)?;
        let db = self.db.borrow();
        let method: js_sys::Function = js_sys::Reflect::get(&db, &"transaction".into())
            .map_err(failed)?
            .unchecked_into();
        let raw: web_sys::IdbTransaction = method
            .call3(&db, &names, &mode.into(), &options)
            .map_err(|err| {
                // "The database connection is closing": deleted or closed under the page.
                match err.dyn_ref::<web_sys::DomException>() {
                    Some(e) if e.name() == "InvalidStateError" => StoreError::Closed(e.message()),
                    _ => failed(err),
                }
            })?
            .unchecked_into();
        Ok(Tx {
            tx: raw.clone().into(),
            raw,
        })
    }

    /// Closes the database connection.
    pub fn close(&self) {
        self.db.borrow().close();
    }
}
