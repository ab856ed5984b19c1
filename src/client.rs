//! The JavaScript API (wasm-bindgen): `Client` and the types of its events.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation, Position};
use thoonk_sync_core::{CoreError, ItemState, ItemView};
use wasm_bindgen::prelude::*;

use crate::tab_client::{Tab, TabOptions};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** Any JSON value: what a feed item or an action payload may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** Options of `Client.open`. Give `token`, or `getToken` to fetch (and refresh) one. */
export interface ClientOptions {
  /** The server's WebSocket URL, e.g. `ws://localhost:8080/ws`. */
  url: string;
  /** The bearer token. */
  token?: string;
  /** Called for a token at start and whenever the server refuses the current one. */
  getToken?: () => string | Promise<string>;
  /** The IndexedDB database holding this client's mirror and outbox. */
  dbName: string;
  /** Settles conflicts the default three-way merge cannot. */
  resolveConflict?: (conflict: Conflict) => Resolution | undefined;
  /** Opens without connecting, as after `setOnline(false)`: nothing is sent until `setOnline(true)`. */
  offline?: boolean;
  /** The most queued changes of one feed sent together in one frame (default and most 500; 1 sends one change per round trip, as clients before batches did). */
  maxBatch?: number;
}
/** An item as the app sees it; `T` is the app's type of its value. */
export interface Item<T = unknown> {
  /** The item's id: what `edit`, `retract` and `move` take. */
  id: string;
  item: T;
  /** The feed revision of its last confirmed change (0 while only local). */
  rev: number;
  state: "confirmed" | "pending" | "rejected";
  /** The ids of the local changes laid over it (pending) or of the one that failed (rejected). */
  changes: string[];
}
/** What changed in one feed. */
export interface FeedChange<T = unknown> {
  feed: string;
  /** Items that appeared or changed (value or state). */
  changed: Item<T>[];
  /** Ids of items that disappeared. */
  removed: string[];
  /** The full order of ids, when it changed other than by appends and removals. */
  order: string[] | null;
}
export type Position = "begin" | "end" | { before: string } | { after: string };
/** Why the server refused a change (the protocol's error codes). */
export type RejectionCode =
  | "unauthorized" | "forbidden" | "bad_request" | "too_large" | "unsupported_version"
  | "rate_limited" | "not_found" | "internal" | "expired";
export type Outcome =
  | { status: "accepted"; result: unknown; revs: Record<string, number> }
  | { status: "rejected"; code: RejectionCode; message: string }
  | { status: "conflict_resolved"; resolution: "kept_theirs" | "kept_ours" | "merged" | "dropped_ours"; result: unknown; revs: Record<string, number> }
  | { status: "unresolved"; conflict: Conflict; reason: string };
export interface Conflict {
  change: string; feed: string; id: string;
  base: unknown | null; ours: unknown | null; theirs: unknown | null; rev: number;
}
/** What a conflict resolver returns: keep the server's value, keep ours, a merged value, drop ours, or leave it unresolved. */
export type Resolution = "theirs" | "ours" | "drop" | { merged: unknown } | { unresolved: string };
/** A change the client made: durably queued; `outcome` settles when the server decided. */
export interface PendingChange {
  /** The change's id (what `onOutcome`, `dismissOutcome` and `outbox()` name), not an item id. */
  id: string;
  outcome: Promise<Outcome>;
}
/** What `publish` gives: the change, and the id of the item it creates. */
export interface PublishedChange extends PendingChange {
  /** The new item's id: what `edit`, `retract`, `move` and `items()` use. */
  itemId: string;
}
export interface OutcomeEvent { id: string; outcome: Outcome; }
export interface Status {
  connection: "offline" | "connecting" | "online" | "unauthorized" | "stopped";
  /** Why the client is offline (`connection` is `"offline"`): the app chose it (`setOnline(false)` or `offline: true`), the browser has no network, or the server did not answer. `null` otherwise. */
  offlineReason: "user" | "network" | "unreachable" | null;
  /** Whether the server can reach its storage: while `unavailable`, changes stay pending (the user's own offline mode is `connection`). */
  server: "available" | "unavailable";
  /** Local changes not yet confirmed. */
  pending: number;
  /** Each mirrored feed's epoch and revision. */
  feeds: Record<string, { epoch: number; rev: number }>;
  /** The last storage failure, if any (e.g. quota). */
  storageError: string | null;
  /** Set when IndexedDB was found empty although this browser ran a client on it before; kept across reloads until `dismissStorageWiped()`. */
  storageWiped: StorageWiped | null;
  /** Whether this tab holds the database and connection (`leader`), goes through the tab that does (`follower`), or was closed. */
  tab: "leader" | "follower" | "closed";
}
/** The database was wiped (e.g. evicted by the browser, or site data cleared) since an earlier run. */
export interface StorageWiped {
  /** The client id the (last) lost database belonged to. */
  previousClientId: string;
  /** Changes that were not yet confirmed by the server when it was last seen: lost unless the server got them. */
  lostChanges: string[];
}
export interface OutboxEntry { id: string; op: unknown; createdAt: number; conflicts: number; accepted: boolean; }
/** The `code` of an error the client throws or a promise of it rejects with. */
export type ErrorCode =
  | "bad_request" | "storage" | "server" | "unsupported_version" | "resolver" | "too_large" | "closed";
/** What the client throws: an `Error` with a machine-readable `code` (see `isSyncError`). */
export interface SyncError extends Error { code: ErrorCode; }
export interface Client {
  /**
   * Follows a feed or pattern (`team:353:member:*:tasks`); `onChange` hears
   * every change of a matching feed. Returns a function that unsubscribes.
   * `T` is the app's type of the items' values (not checked at run time).
   */
  subscribe<T = unknown>(pattern: string, onChange: (change: FeedChange<T>) => void): () => void;
  /**
   * The items of `feed` as the app should show them: confirmed values with
   * pending local changes laid over them, in feed order.
   */
  items<T = unknown>(feed: string): Item<T>[];
  /**
   * Publishes `item` to `feed` under `id` (generated when absent), at
   * `position` (the end when absent). Resolves once the change is durably
   * queued, with the change's id and the new item's `itemId`.
   */
  publish<T>(feed: string, item: T, id?: string | null, position?: Position | null): Promise<PublishedChange>;
  /** Replaces the value of item `id` in `feed`. */
  edit<T>(feed: string, id: string, item: T): Promise<PendingChange>;
  /**
   * Submits the named application action `name` with `payload` (a worker on
   * the server validates it and applies it to one or more feeds atomically).
   */
  action<P>(name: string, payload: P): Promise<PendingChange>;
  /**
   * The items of the feeds `feedOrPattern` names, as a store for UI
   * frameworks (React's `useSyncExternalStore(view.subscribe, view.getSnapshot)`,
   * Svelte stores). Its functions work unbound.
   */
  view<T = unknown>(feedOrPattern: string): FeedView<T>;
  /**
   * The same as `close()`, which is the one to call: stops syncing (another
   * tab takes over). Safe in any order with `close()` and
   * `[Symbol.dispose]()`, any number of times.
   */
  free(): void;
  /**
   * Calls `close()`: what `using client = await Client.open(…)` runs at the
   * end of its block. Safe in any order with `close()` and `free()`.
   */
  [Symbol.dispose](): void;
}
/** Each matching feed's items, frozen; a new object only when some item changed. */
export type ViewSnapshot<T = unknown> = Readonly<Record<string, readonly Readonly<Item<T>>[]>>;
/** What `client.view` returns. */
export interface FeedView<T = unknown> {
  /** Calls `listener` after each change of the snapshot; returns the function that stops it. */
  subscribe(listener: () => void): () => void;
  /** The current snapshot: the same object until the items change. */
  getSnapshot(): ViewSnapshot<T>;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `ClientOptions` in TypeScript.
    #[wasm_bindgen(typescript_type = "ClientOptions")]
    pub type ClientOptions;
    /// `(change: FeedChange) => void` in TypeScript.
    #[wasm_bindgen(typescript_type = "(change: FeedChange) => void")]
    pub type OnChange;
    /// `() => void` in TypeScript.
    #[wasm_bindgen(typescript_type = "() => void")]
    pub type Unsubscribe;
    /// `Promise<PendingChange>` in TypeScript.
    #[wasm_bindgen(typescript_type = "Promise<PendingChange>")]
    pub type PendingChangePromise;
    /// `Position` in TypeScript.
    #[wasm_bindgen(typescript_type = "Position")]
    pub type PositionJs;
    /// `Status` in TypeScript.
    #[wasm_bindgen(typescript_type = "Status")]
    pub type StatusJs;
    /// `(status: Status) => void` in TypeScript.
    #[wasm_bindgen(typescript_type = "(status: Status) => void")]
    pub type OnStatus;
    /// `(event: OutcomeEvent) => void` in TypeScript.
    #[wasm_bindgen(typescript_type = "(event: OutcomeEvent) => void")]
    pub type OnOutcome;
    /// `OutboxEntry[]` in TypeScript.
    #[wasm_bindgen(typescript_type = "OutboxEntry[]")]
    pub type OutboxEntries;
    /// `Promise<Client>` in TypeScript.
    #[wasm_bindgen(typescript_type = "Promise<Client>")]
    pub type ClientPromise;
}

/// Builds a JS `Error` carrying a machine-readable `code`.
pub(crate) fn js_error(code: &str, message: impl std::fmt::Display) -> JsValue {
    debug_assert!(
        ERROR_CODES.contains(&code),
        "error code {code} is not in ErrorCode"
    );
    let error = js_sys::Error::new(&message.to_string());
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

/// The codes of the errors the client throws (`ErrorCode` in TypeScript).
const ERROR_CODES: [&str; 7] = [
    "bad_request",
    "storage",
    "server",
    "unsupported_version",
    "resolver",
    "too_large",
    "closed",
];

/// Whether `error` is an error the client threw (or rejected a promise
/// with): an `Error` whose `code` is one of `ErrorCode`.
#[wasm_bindgen(js_name = isSyncError, unchecked_return_type = "error is SyncError")]
pub fn is_sync_error(#[wasm_bindgen(unchecked_param_type = "unknown")] error: JsValue) -> bool {
    error.is_instance_of::<js_sys::Error>()
        && js_sys::Reflect::get(&error, &"code".into())
            .ok()
            .and_then(|code| code.as_string())
            .is_some_and(|code| ERROR_CODES.contains(&code.as_str()))
}

/// A core error as a JS `Error` with its code.
pub(crate) fn core_error(err: CoreError) -> JsValue {
    let code = match &err {
        CoreError::Usage(_) => "bad_request",
        CoreError::Storage(_) => "storage",
        CoreError::Server(_) => "server",
        CoreError::ProtocolMismatch { .. } => "unsupported_version",
        CoreError::Resolver(_) => "resolver",
        CoreError::TooLarge { .. } => "too_large",
    };
    js_error(code, err)
}

/// A Rust value as plain JS data, through JSON text: one serde path (the
/// one the store and the wire use already) keeps the wasm module small, and
/// `JSON.parse` builds large objects faster than property-by-property calls.
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    serde_json::to_string(value)
        .ok()
        .and_then(|text| js_sys::JSON::parse(&text).ok())
        .unwrap_or(JsValue::NULL)
}

/// A JS value the app gave, read as JSON (`JSON.stringify` rules: functions
/// and `undefined` properties are left out).
pub(crate) fn from_js<T: for<'de> Deserialize<'de>>(
    value: JsValue,
    what: &str,
) -> Result<T, JsValue> {
    let text = js_sys::JSON::stringify(&value)
        .ok()
        .and_then(|text| text.as_string())
        .ok_or_else(|| js_error("bad_request", format!("{what}: not a JSON value")))?;
    serde_json::from_str(&text).map_err(|err| js_error("bad_request", format!("{what}: {err}")))
}

fn feed_name(feed: String) -> Result<FeedName, JsValue> {
    FeedName::new(feed).map_err(|err| js_error("bad_request", err))
}

fn item_id(id: String) -> Result<ItemId, JsValue> {
    ItemId::new(id).map_err(|err| js_error("bad_request", err))
}

/// An item as the JS API shows it.
#[derive(Serialize)]
pub(crate) struct ItemJs<'a> {
    id: &'a ItemId,
    item: &'a Value,
    rev: u64,
    state: &'static str,
    changes: Vec<&'a ChangeId>,
}

impl<'a> From<&'a ItemView> for ItemJs<'a> {
    fn from(view: &'a ItemView) -> Self {
        let (state, changes) = match &view.state {
            ItemState::Confirmed => ("confirmed", vec![]),
            ItemState::Pending { changes } => ("pending", changes.iter().collect()),
            ItemState::Rejected { change } => ("rejected", vec![change]),
        };
        Self {
            id: &view.id,
            item: &view.value,
            rev: view.rev,
            state,
            changes,
        }
    }
}

/// A `FeedChange` as the JS API shows it.
#[derive(Serialize)]
pub(crate) struct FeedChangeJs<'a> {
    pub feed: &'a FeedName,
    pub changed: Vec<ItemJs<'a>>,
    pub removed: &'a [ItemId],
    pub order: &'a Option<Vec<ItemId>>,
}

/// Asks the app's `getToken` for a token.
pub(crate) async fn call_get_token(get_token: &js_sys::Function) -> Result<String, JsValue> {
    let value = get_token.call0(&JsValue::NULL)?;
    let value = match value.dyn_ref::<js_sys::Promise>() {
        Some(promise) => wasm_bindgen_futures::JsFuture::from(promise.clone()).await?,
        None => value,
    };
    value
        .as_string()
        .ok_or_else(|| js_error("bad_request", "getToken must return a string"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    url: String,
    #[serde(default)]
    token: Option<String>,
    db_name: String,
    #[serde(default)]
    offline: bool,
    #[serde(default)]
    max_batch: Option<usize>,
}

/// 64 random bits from the browser.
pub(crate) fn random_seed() -> u64 {
    let high = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let low = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (high << 32) | low
}

/// A sync client: mirrors subscribed feeds in IndexedDB, keeps them live over
/// a WebSocket, and queues the user's changes durably until the server decides.
///
/// Clients of several tabs on one database share it: one tab leads (holds
/// the database and the connection), the others go through it, and another
/// takes over when the leader closes or stops answering.
#[wasm_bindgen]
pub struct Client {
    tab: Rc<Tab>,
}

#[wasm_bindgen]
impl Client {
    /// Opens the local database, loads the mirror and the outbox, and starts
    /// syncing (or, when another tab of this database leads, follows it).
    #[wasm_bindgen(unchecked_return_type = "Client")]
    pub async fn open(options: ClientOptions) -> Result<Client, JsValue> {
        let raw: JsValue = options.into();
        let function = |name: &str| {
            js_sys::Reflect::get(&raw, &name.into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        };
        let get_token = function("getToken");
        let resolver = function("resolveConflict");
        let options: Options = from_js(raw, "Client.open options")?;
        let token = match (&options.token, &get_token) {
            (Some(token), _) => token.clone(),
            (None, Some(get_token)) => call_get_token(get_token).await?,
            (None, None) => {
                return Err(js_error(
                    "bad_request",
                    "Client.open needs `token` or `getToken`",
                ))
            }
        };
        let tab = Tab::open(TabOptions {
            url: options.url,
            db_name: options.db_name,
            token: RefCell::new(token),
            get_token,
            resolver,
            offline: options.offline,
            max_batch: options.max_batch,
        })
        .await?;
        if options.offline {
            // A following tab asks the leading one (which holds the connection).
            tab.set_paused(true);
        }
        Ok(Client { tab })
    }

    /// Follows a feed or pattern (`team:353:member:*:tasks`); `onChange` hears
    /// every change of a matching feed. Returns a function that unsubscribes.
    /// (Typed, generic over the item, in the `Client` interface above.)
    #[wasm_bindgen(skip_typescript)]
    pub fn subscribe(&self, pattern: String, on_change: OnChange) -> Result<Unsubscribe, JsValue> {
        let pattern = FeedPattern::new(pattern).map_err(|err| js_error("bad_request", err))?;
        let on_change: js_sys::Function = JsValue::from(on_change)
            .dyn_into()
            .map_err(|_| js_error("bad_request", "onChange must be a function"))?;
        let id = self.tab.callbacks.add_listener(pattern.clone(), on_change);
        self.tab.subscribe(pattern)?;
        let tab = Rc::downgrade(&self.tab);
        let unsubscribe = Closure::once_into_js(move || {
            if let Some(tab) = tab.upgrade() {
                if let Some(unused) = tab.callbacks.remove_listener(id) {
                    tab.unsubscribe(unused);
                }
            }
        });
        Ok(unsubscribe.unchecked_into())
    }

    /// The items of `feed` as the app should show them: confirmed values with
    /// pending local changes laid over them, in feed order.
    #[wasm_bindgen(skip_typescript)]
    pub fn items(&self, feed: String) -> Result<JsValue, JsValue> {
        let feed = feed_name(feed)?;
        Ok(self.tab.items_js(&feed))
    }

    /// The items of the feeds `pattern` names as a store for UI frameworks
    /// (`{ subscribe, getSnapshot }`, typed in the `Client` interface above).
    #[wasm_bindgen(skip_typescript)]
    pub fn view(&self, pattern: String) -> Result<JsValue, JsValue> {
        let pattern = FeedPattern::new(pattern).map_err(|err| js_error("bad_request", err))?;
        Ok(crate::view::view(&self.tab, pattern))
    }

    /// The mirrored revision of `feed`, or `undefined` when it is not mirrored yet.
    pub fn rev(&self, feed: String) -> Result<Option<f64>, JsValue> {
        let feed = feed_name(feed)?;
        Ok(self.tab.rev(&feed).map(|rev| rev as f64))
    }

    /// Publishes `item` to `feed` under `id` (generated when absent), at
    /// `position` (the end when absent). Resolves with the change's `id` and
    /// the new item's `itemId`.
    #[wasm_bindgen(skip_typescript)]
    pub fn publish(
        &self,
        feed: String,
        item: JsValue,
        id: Option<String>,
        position: Option<PositionJs>,
    ) -> Result<PendingChangePromise, JsValue> {
        let feed = feed_name(feed)?;
        let item: Value = from_js(item, "item")?;
        let id = match id {
            Some(id) => item_id(id)?,
            None => item_id(format!("i{:016x}", random_seed()))?,
        };
        let position = position
            .map(|p| from_js::<Position>(p.into(), "position"))
            .transpose()?;
        let item_id = id.as_str().to_owned();
        self.submit(
            Operation::Publish {
                feed,
                id,
                item,
                position,
            },
            Some(item_id),
        )
    }

    /// Replaces the value of item `id` in `feed`.
    #[wasm_bindgen(skip_typescript)]
    pub fn edit(
        &self,
        feed: String,
        id: String,
        item: JsValue,
    ) -> Result<PendingChangePromise, JsValue> {
        let op = Operation::Edit {
            feed: feed_name(feed)?,
            id: item_id(id)?,
            item: from_js(item, "item")?,
        };
        self.change(op)
    }

    /// Removes item `id` from `feed`.
    pub fn retract(&self, feed: String, id: String) -> Result<PendingChangePromise, JsValue> {
        let op = Operation::Retract {
            feed: feed_name(feed)?,
            id: item_id(id)?,
        };
        self.change(op)
    }

    /// Moves item `id` of a sorted feed to `position`.
    #[wasm_bindgen(js_name = "move")]
    pub fn move_item(
        &self,
        feed: String,
        id: String,
        position: PositionJs,
    ) -> Result<PendingChangePromise, JsValue> {
        let op = Operation::Move {
            feed: feed_name(feed)?,
            id: item_id(id)?,
            position: from_js(position.into(), "position")?,
        };
        self.change(op)
    }

    /// Submits the named application action `name` with `payload` (a worker on
    /// the server validates it and applies it to one or more feeds atomically).
    #[wasm_bindgen(skip_typescript)]
    pub fn action(&self, name: String, payload: JsValue) -> Result<PendingChangePromise, JsValue> {
        let op = Operation::Action {
            name,
            payload: from_js(payload, "payload")?,
        };
        self.change(op)
    }

    fn change(&self, op: Operation) -> Result<PendingChangePromise, JsValue> {
        self.submit(op, None)
    }

    /// Queues `op`; the promise resolves with `{ id, outcome }` (and
    /// `itemId`, when given) once it is durably queued.
    fn submit(
        &self,
        op: Operation,
        item_id: Option<String>,
    ) -> Result<PendingChangePromise, JsValue> {
        let tab = self.tab.clone();
        let promise = wasm_bindgen_futures::future_to_promise(async move {
            let id = tab.change(op).await?;
            let outcome = tab.outcome(id.clone());
            let outcome = wasm_bindgen_futures::future_to_promise(async move {
                let outcome = outcome.await.map_err(|_| {
                    js_error("closed", "the client closed before the outcome arrived")
                })?;
                Ok(to_js(&outcome))
            });
            let pending = js_sys::Object::new();
            js_sys::Reflect::set(&pending, &"id".into(), &id.0.as_str().into())?;
            js_sys::Reflect::set(&pending, &"outcome".into(), &outcome)?;
            if let Some(item_id) = item_id {
                js_sys::Reflect::set(&pending, &"itemId".into(), &item_id.into())?;
            }
            Ok(pending.into())
        });
        Ok(promise.unchecked_into())
    }

    /// Connection state, pending count and each feed's revision.
    pub fn status(&self) -> StatusJs {
        to_js(&self.tab.status()).unchecked_into()
    }

    /// Calls `callback(status)` whenever [`Client::status`] changes.
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(&self, callback: OnStatus) -> Result<(), JsValue> {
        let callback: js_sys::Function = JsValue::from(callback)
            .dyn_into()
            .map_err(|_| js_error("bad_request", "onStatus needs a function"))?;
        self.tab
            .callbacks
            .status_listeners
            .borrow_mut()
            .push(callback);
        Ok(())
    }

    /// Calls `callback({ id, outcome })` for every change that ends, including
    /// outcomes kept from before a reload until they are dismissed.
    #[wasm_bindgen(js_name = onOutcome)]
    pub fn on_outcome(&self, callback: OnOutcome) -> Result<(), JsValue> {
        let callback: js_sys::Function = JsValue::from(callback)
            .dyn_into()
            .map_err(|_| js_error("bad_request", "onOutcome needs a function"))?;
        for event in self.tab.stored_outcomes() {
            if let Err(err) = callback.call1(&JsValue::NULL, &to_js(&event)) {
                web_sys::console::error_2(&"thoonk-sync: a callback threw".into(), &err);
            }
        }
        self.tab
            .callbacks
            .outcome_listeners
            .borrow_mut()
            .push(callback);
        Ok(())
    }

    /// Forgets a stored outcome once the app has shown it.
    #[wasm_bindgen(js_name = dismissOutcome)]
    pub fn dismiss_outcome(&self, id: String) -> Result<(), JsValue> {
        self.tab.dismiss_outcome(ChangeId(id))
    }

    /// Drops the report of a database wiped since an earlier run
    /// (`status().storageWiped`) once the app has shown it. Until then it is
    /// kept across reloads, in every tab of this database.
    #[wasm_bindgen(js_name = dismissStorageWiped)]
    pub fn dismiss_storage_wiped(&self) {
        self.tab.dismiss_storage_wiped();
    }

    /// The local changes not yet confirmed, oldest first.
    pub fn outbox(&self) -> OutboxEntries {
        to_js(&self.tab.outbox()).unchecked_into()
    }

    /// `false` works offline: the connection closes and stays closed while
    /// changes keep queueing durably; `true` reconnects at once. (It applies
    /// to the tab that holds the connection, so to every tab of this database.)
    #[wasm_bindgen(js_name = setOnline)]
    pub fn set_online(&self, online: bool) {
        self.tab.set_paused(!online);
    }

    /// Stops syncing and closes the database; another tab of this database
    /// takes over when this one led. The one to call when done; calling it
    /// again, or `free()` or `[Symbol.dispose]()` before or after it, does
    /// nothing more.
    pub fn close(&self) {
        self.tab.close();
    }

    /// The same as `close()`. (It replaces wasm-bindgen's `free()`, which
    /// would release the handle while the client kept running, and which
    /// `[Symbol.dispose]`, hence `using`, calls: so `using` closes the
    /// client. The handle's few bytes go with the garbage collector.)
    #[wasm_bindgen(js_name = free, skip_typescript)]
    pub fn free_client(&self) {
        self.tab.close();
    }
}
