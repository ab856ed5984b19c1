//! The JavaScript API (wasm-bindgen): `Client` and the types of its events.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation, Position};
use thoonk_sync_core::{
    ChangeOutcome, Config, ConflictCase, CoreError, ItemState, ItemView, Notification, Resolution,
    Resolver, ResolverError, Status,
};
use wasm_bindgen::prelude::*;

use crate::idb::IdbStore;
use crate::shell::{AppHooks, Shell};
use crate::tab_lock::TabLock;

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
}
/** An item as the app sees it. */
export interface Item {
  id: string;
  item: unknown;
  /** The feed revision of its last confirmed change (0 while only local). */
  rev: number;
  state: "confirmed" | "pending" | "rejected";
  /** The local changes laid over it (pending) or the one that failed (rejected). */
  changes: string[];
}
/** What changed in one feed. */
export interface FeedChange {
  feed: string;
  /** Items that appeared or changed (value or state). */
  changed: Item[];
  /** Ids of items that disappeared. */
  removed: string[];
  /** The full order of ids, when it changed other than by appends and removals. */
  order: string[] | null;
}
export type Position = "begin" | "end" | { before: string } | { after: string };
export type Outcome =
  | { status: "accepted"; result: unknown; revs: Record<string, number> }
  | { status: "rejected"; code: string; message: string }
  | { status: "conflict_resolved"; resolution: "kept_theirs" | "kept_ours" | "merged" | "dropped_ours"; result: unknown; revs: Record<string, number> }
  | { status: "unresolved"; conflict: Conflict; reason: string };
export interface Conflict {
  change: string; feed: string; id: string;
  base: unknown | null; ours: unknown | null; theirs: unknown | null; rev: number;
}
/** What a conflict resolver returns: keep the server's value, keep ours, a merged value, drop ours, or leave it unresolved. */
export type Resolution = "theirs" | "ours" | "drop" | { merged: unknown } | { unresolved: string };
/** A change the client made: durably queued; `outcome` settles when the server decided. */
export interface PendingChange { id: string; outcome: Promise<Outcome>; }
export interface OutcomeEvent { id: string; outcome: Outcome; }
export interface Status {
  connection: "offline" | "connecting" | "online" | "unauthorized" | "stopped";
  /** Local changes not yet confirmed. */
  pending: number;
  /** Each mirrored feed's epoch and revision. */
  feeds: Record<string, { epoch: number; rev: number }>;
  /** The last storage failure, if any (e.g. quota). */
  storageError: string | null;
  /** Set when IndexedDB was found empty although this browser ran a client on it before. */
  storageWiped: StorageWiped | null;
}
/** The database was wiped (e.g. evicted by the browser) since the last run. */
export interface StorageWiped {
  /** The client id the lost database belonged to. */
  previousClientId: string;
  /** Changes that were not yet confirmed by the server when it was last seen: lost unless the server got them. */
  lostChanges: string[];
}
export interface OutboxEntry { id: string; op: unknown; createdAt: number; conflicts: number; accepted: boolean; }
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
    /// `Item[]` in TypeScript.
    #[wasm_bindgen(typescript_type = "Item[]")]
    pub type Items;
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
fn js_error(code: &str, message: impl std::fmt::Display) -> JsValue {
    let error = js_sys::Error::new(&message.to_string());
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

fn core_error(err: CoreError) -> JsValue {
    let code = match &err {
        CoreError::Usage(_) => "bad_request",
        CoreError::Storage(_) => "storage",
        CoreError::Server(_) => "server",
        CoreError::ProtocolMismatch { .. } => "unsupported_version",
        CoreError::Resolver(_) => "resolver",
    };
    js_error(code, err)
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

fn from_js<T: for<'de> Deserialize<'de>>(value: JsValue, what: &str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|err| js_error("bad_request", format!("{what}: {err}")))
}

fn feed_name(feed: String) -> Result<FeedName, JsValue> {
    FeedName::new(feed).map_err(|err| js_error("bad_request", err))
}

fn item_id(id: String) -> Result<ItemId, JsValue> {
    ItemId::new(id).map_err(|err| js_error("bad_request", err))
}

/// An item as the JS API shows it.
#[derive(Serialize)]
struct ItemJs<'a> {
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

#[derive(Serialize)]
struct FeedChangeJs<'a> {
    feed: &'a FeedName,
    changed: Vec<ItemJs<'a>>,
    removed: &'a [ItemId],
    order: &'a Option<Vec<ItemId>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJsValue {
    connection: &'static str,
    pending: usize,
    feeds: BTreeMap<FeedName, FeedHeadJs>,
    storage_error: Option<String>,
    storage_wiped: Option<StorageMarker>,
}

/// What the client last wrote about itself outside IndexedDB (localStorage),
/// so that a database the browser wiped is noticed, with the changes lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StorageMarker {
    previous_client_id: String,
    lost_changes: Vec<ChangeId>,
}

fn marker_key(db_name: &str) -> String {
    format!("thoonk-sync:{db_name}")
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn read_marker(key: &str) -> Option<StorageMarker> {
    let text = local_storage()?.get_item(key).ok()??;
    serde_json::from_str(&text).ok()
}

#[derive(Serialize)]
struct FeedHeadJs {
    epoch: u64,
    rev: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutboxEntryJs<'a> {
    id: &'a ChangeId,
    op: &'a Operation,
    created_at: u64,
    conflicts: u32,
    accepted: bool,
}

struct Listener {
    id: u32,
    pattern: FeedPattern,
    on_change: js_sys::Function,
}

/// The app's side of the shell: callbacks registered through the API.
#[derive(Default)]
struct App {
    listeners: RefCell<Vec<Listener>>,
    next_listener: Cell<u32>,
    status_listeners: RefCell<Vec<js_sys::Function>>,
    outcome_listeners: RefCell<Vec<js_sys::Function>>,
    storage_error: RefCell<Option<String>>,
    storage_wiped: Option<StorageMarker>,
    marker_key: String,
    last_marker: RefCell<Option<String>>,
    last_status: RefCell<Option<String>>,
    get_token: Option<js_sys::Function>,
    shell: RefCell<std::rc::Weak<Shell>>,
}

fn call_each(callbacks: &[js_sys::Function], value: &JsValue) {
    for callback in callbacks {
        if let Err(err) = callback.call1(&JsValue::NULL, value) {
            web_sys::console::error_2(&"thoonk-sync: a callback threw".into(), &err);
        }
    }
}

impl App {
    fn status(&self, shell: &Shell) -> StatusJsValue {
        shell.with_core(|core| StatusJsValue {
            connection: match core.status() {
                Status::Offline => "offline",
                Status::Connecting => "connecting",
                Status::Online => "online",
                Status::Unauthorized => "unauthorized",
                Status::Stopped { .. } => "stopped",
            },
            pending: core.pending().len(),
            feeds: core
                .feeds()
                .into_iter()
                .filter_map(|feed| {
                    let head = core.position(&feed)?;
                    Some((
                        feed,
                        FeedHeadJs {
                            epoch: head.epoch,
                            rev: head.rev,
                        },
                    ))
                })
                .collect(),
            storage_error: self.storage_error.borrow().clone(),
            storage_wiped: self.storage_wiped.clone(),
        })
    }

    /// Records the client id and the unconfirmed changes outside IndexedDB.
    fn write_marker(&self, shell: &Shell) {
        let marker = shell.with_core(|core| StorageMarker {
            previous_client_id: core.client_id().to_owned(),
            lost_changes: core.pending().into_iter().map(|entry| entry.id).collect(),
        });
        let text = serde_json::to_string(&marker).unwrap_or_default();
        if self.last_marker.borrow().as_deref() == Some(text.as_str()) {
            return;
        }
        if let Some(storage) = local_storage() {
            let _ = storage.set_item(&self.marker_key, &text);
        }
        *self.last_marker.borrow_mut() = Some(text);
    }

    fn refresh_token(self: &Rc<Self>) {
        let (Some(get_token), Some(shell)) =
            (self.get_token.clone(), self.shell.borrow().upgrade())
        else {
            return;
        };
        wasm_bindgen_futures::spawn_local(async move {
            match call_get_token(&get_token).await {
                Ok(token) => {
                    let _ = shell.input(|core, now| core.set_token(token, now));
                }
                Err(err) => web_sys::console::error_2(&"thoonk-sync: getToken failed".into(), &err),
            }
        });
    }
}

async fn call_get_token(get_token: &js_sys::Function) -> Result<String, JsValue> {
    let value = get_token.call0(&JsValue::NULL)?;
    let value = match value.dyn_ref::<js_sys::Promise>() {
        Some(promise) => wasm_bindgen_futures::JsFuture::from(promise.clone()).await?,
        None => value,
    };
    value
        .as_string()
        .ok_or_else(|| js_error("bad_request", "getToken must return a string"))
}

struct Hooks(Rc<App>);

impl AppHooks for Hooks {
    fn notify(&self, notification: &Notification) {
        let app = &self.0;
        match notification {
            Notification::Items {
                feed,
                changed,
                removed,
                order,
            } => {
                let callbacks: Vec<js_sys::Function> = app
                    .listeners
                    .borrow()
                    .iter()
                    .filter(|l| l.pattern.matches(feed))
                    .map(|l| l.on_change.clone())
                    .collect();
                if callbacks.is_empty() {
                    return;
                }
                let change = FeedChangeJs {
                    feed,
                    changed: changed.iter().map(ItemJs::from).collect(),
                    removed,
                    order,
                };
                call_each(&callbacks, &to_js(&change));
            }
            Notification::Outcome { change, outcome } => {
                let event = to_js(&serde_json::json!({ "id": change, "outcome": outcome }));
                let callbacks = app.outcome_listeners.borrow().clone();
                call_each(&callbacks, &event);
            }
            Notification::Status { status } => {
                if *status == Status::Unauthorized {
                    app.refresh_token();
                }
            }
            Notification::ServerError { code, message } => {
                web_sys::console::warn_1(
                    &format!("thoonk-sync: server error {}: {message}", code.as_str()).into(),
                );
            }
        }
    }

    fn storage_failed(&self, message: &str) {
        *self.0.storage_error.borrow_mut() = Some(message.to_owned());
        web_sys::console::error_1(&format!("thoonk-sync: {message}").into());
    }

    fn settled(&self) {
        let app = &self.0;
        let Some(shell) = app.shell.borrow().upgrade() else {
            return;
        };
        app.write_marker(&shell);
        let status = app.status(&shell);
        let text = serde_json::to_string(&status).unwrap_or_default();
        if app.last_status.borrow().as_deref() == Some(text.as_str()) {
            return;
        }
        *app.last_status.borrow_mut() = Some(text);
        let callbacks = app.status_listeners.borrow().clone();
        call_each(&callbacks, &to_js(&status));
    }
}

/// Calls the app's `resolveConflict` for conflicts the three-way merge leaves.
struct JsResolver(js_sys::Function);

impl Resolver for JsResolver {
    fn resolve(&mut self, case: &ConflictCase) -> Result<Resolution, ResolverError> {
        let answer = self
            .0
            .call1(&JsValue::NULL, &to_js(case))
            .map_err(|err| ResolverError(format!("resolveConflict threw: {err:?}")))?;
        if answer.is_undefined() || answer.is_null() {
            return thoonk_sync_core::MergeResolver.resolve(case);
        }
        if let Some(word) = answer.as_string() {
            return match word.as_str() {
                "theirs" => Ok(Resolution::KeepTheirs),
                "ours" => Ok(Resolution::KeepOurs),
                "drop" => Ok(Resolution::DropOurs),
                other => Err(ResolverError(format!("resolveConflict returned {other:?}"))),
            };
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Answer {
            Merged(Option<Value>),
            Unresolved(String),
        }
        match serde_wasm_bindgen::from_value::<Answer>(answer) {
            Ok(Answer::Merged(value)) => Ok(Resolution::Merged(value)),
            Ok(Answer::Unresolved(reason)) => Ok(Resolution::Unresolved(reason)),
            Err(err) => Err(ResolverError(format!(
                "resolveConflict returned an unknown answer: {err}"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    url: String,
    #[serde(default)]
    token: Option<String>,
    db_name: String,
}

fn random_seed() -> u64 {
    let high = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let low = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (high << 32) | low
}

/// A sync client: mirrors subscribed feeds in IndexedDB, keeps them live over
/// a WebSocket, and queues the user's changes durably until the server decides.
#[wasm_bindgen]
pub struct Client {
    shell: Rc<Shell>,
    app: Rc<App>,
    /// Reconnects at once when the browser comes back online or the page
    /// becomes visible; drops the socket when the browser goes offline.
    wake: RefCell<Option<NetworkListeners>>,
    /// This tab's exclusive hold on the database.
    lock: RefCell<TabLock>,
}

/// Listens for the browser coming back online or the page becoming visible
/// (reconnect now) and for the browser going offline (drop the socket now).
/// The `online`/`visibilitychange` listener and the `offline` listener.
type NetworkListeners = (Closure<dyn FnMut()>, Closure<dyn FnMut()>);

fn listen_for_network(shell: &Rc<Shell>) -> Option<NetworkListeners> {
    let window = web_sys::window()?;
    let weak = Rc::downgrade(shell);
    let wake = Closure::<dyn FnMut()>::new(move || {
        let visible = web_sys::window()
            .and_then(|w| w.document())
            .is_none_or(|d| d.visibility_state() == web_sys::VisibilityState::Visible);
        if let (Some(shell), true) = (weak.upgrade(), visible) {
            shell.reconnect_now();
        }
    });
    let weak = Rc::downgrade(shell);
    let offline = Closure::<dyn FnMut()>::new(move || {
        if let Some(shell) = weak.upgrade() {
            shell.connection_lost();
        }
    });
    let document: web_sys::EventTarget = window.document()?.into();
    let _ = window.add_event_listener_with_callback("online", wake.as_ref().unchecked_ref());
    let _ = window.add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
    let _ = document
        .add_event_listener_with_callback("visibilitychange", wake.as_ref().unchecked_ref());
    Some((wake, offline))
}

#[wasm_bindgen]
impl Client {
    /// Opens the local database, loads the mirror and the outbox, and starts syncing.
    #[wasm_bindgen(unchecked_return_type = "Client")]
    pub async fn open(options: ClientOptions) -> Result<Client, JsValue> {
        let raw: JsValue = options.into();
        let get_token = js_sys::Reflect::get(&raw, &"getToken".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let resolver = js_sys::Reflect::get(&raw, &"resolveConflict".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
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
        let options_db_name = options.db_name.clone();
        let Some(lock) = TabLock::acquire(&format!("thoonk-sync:{}", options.db_name)).await?
        else {
            return Err(js_error(
                "locked",
                format!(
                    "another tab or window has the database {:?} open: one client per database at a time \
                     (close the other, or wait and retry)",
                    options.db_name
                ),
            ));
        };
        let store = IdbStore::open(&options.db_name)
            .await
            .map_err(|err| js_error("storage", err))?;
        let seed = random_seed();
        let config = Config::new(format!("c{seed:016x}"), token, seed);
        let shell = Shell::start(config, store, options.url)
            .await
            .map_err(|err| js_error("storage", err))?;
        if let Some(resolver) = resolver {
            let _ = shell.input(|core, _| {
                core.set_resolver(Box::new(JsResolver(resolver)));
                Ok(())
            });
        }
        // A database found empty where this browser ran a client before was wiped.
        let marker_key = marker_key(&options_db_name);
        let storage_wiped = if shell.started_fresh() {
            read_marker(&marker_key)
        } else {
            None
        };
        if let Some(wiped) = &storage_wiped {
            web_sys::console::warn_1(
                &format!(
                    "thoonk-sync: the local database was wiped since the last run; {} unconfirmed change(s) may be lost",
                    wiped.lost_changes.len()
                )
                .into(),
            );
        }
        let app = Rc::new(App {
            get_token,
            storage_wiped,
            marker_key,
            next_listener: Cell::new(1),
            shell: RefCell::new(Rc::downgrade(&shell)),
            ..App::default()
        });
        shell.run(Rc::new(Hooks(app.clone())));
        // The first round (stored outcomes, the first connect) is carried out
        // before the app can register listeners; `onOutcome` replays what is stored.
        shell.settled().await;
        let wake = RefCell::new(listen_for_network(&shell));
        Ok(Client {
            shell,
            app,
            wake,
            lock: RefCell::new(lock),
        })
    }

    /// Follows a feed or pattern (`team:353:member:*:tasks`); `onChange` hears
    /// every change of a matching feed. Returns a function that unsubscribes.
    pub fn subscribe(&self, pattern: String, on_change: OnChange) -> Result<Unsubscribe, JsValue> {
        let pattern = FeedPattern::new(pattern).map_err(|err| js_error("bad_request", err))?;
        let on_change: js_sys::Function = JsValue::from(on_change)
            .dyn_into()
            .map_err(|_| js_error("bad_request", "onChange must be a function"))?;
        let id = self.app.next_listener.get();
        self.app.next_listener.set(id + 1);
        self.app.listeners.borrow_mut().push(Listener {
            id,
            pattern: pattern.clone(),
            on_change,
        });
        self.shell
            .input(|core, now| core.subscribe(pattern, now))
            .map_err(core_error)?;
        let app = Rc::downgrade(&self.app);
        let shell = Rc::downgrade(&self.shell);
        let unsubscribe = Closure::once_into_js(move || {
            let (Some(app), Some(shell)) = (app.upgrade(), shell.upgrade()) else {
                return;
            };
            let mut listeners = app.listeners.borrow_mut();
            let Some(index) = listeners.iter().position(|l| l.id == id) else {
                return;
            };
            let pattern = listeners.remove(index).pattern;
            if !listeners.iter().any(|l| l.pattern == pattern) {
                drop(listeners);
                let _ = shell.input(|core, now| core.unsubscribe(&pattern, now));
            }
        });
        Ok(unsubscribe.unchecked_into())
    }

    /// The items of `feed` as the app should show them: confirmed values with
    /// pending local changes laid over them, in feed order.
    pub fn items(&self, feed: String) -> Result<Items, JsValue> {
        let feed = feed_name(feed)?;
        let views = self.shell.with_core(|core| core.view(&feed));
        let items: Vec<ItemJs<'_>> = views.iter().map(ItemJs::from).collect();
        Ok(to_js(&items).unchecked_into())
    }

    /// The mirrored revision of `feed`, or `undefined` when it is not mirrored yet.
    pub fn rev(&self, feed: String) -> Result<Option<f64>, JsValue> {
        let feed = feed_name(feed)?;
        Ok(self
            .shell
            .with_core(|core| core.position(&feed))
            .map(|head| head.rev as f64))
    }

    /// Publishes `item` to `feed` under `id` (generated when absent), at
    /// `position` (the end when absent).
    pub fn publish(
        &self,
        feed: String,
        #[wasm_bindgen(unchecked_param_type = "Json")] item: JsValue,
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
        self.change(Operation::Publish {
            feed,
            id,
            item,
            position,
        })
    }

    /// Replaces the value of item `id` in `feed`.
    pub fn edit(
        &self,
        feed: String,
        id: String,
        #[wasm_bindgen(unchecked_param_type = "Json")] item: JsValue,
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
    pub fn action(
        &self,
        name: String,
        #[wasm_bindgen(unchecked_param_type = "Json")] payload: JsValue,
    ) -> Result<PendingChangePromise, JsValue> {
        let op = Operation::Action {
            name,
            payload: from_js(payload, "payload")?,
        };
        self.change(op)
    }

    fn change(&self, op: Operation) -> Result<PendingChangePromise, JsValue> {
        let id = self
            .shell
            .input(|core, now| core.change(op, now))
            .map_err(core_error)?;
        let shell = self.shell.clone();
        let promise = wasm_bindgen_futures::future_to_promise(async move {
            shell.settled().await;
            let outcome = shell.outcome(id.clone());
            let outcome = wasm_bindgen_futures::future_to_promise(async move {
                let outcome: ChangeOutcome = outcome.await.map_err(|_| {
                    js_error("closed", "the client closed before the outcome arrived")
                })?;
                Ok(to_js(&outcome))
            });
            let pending = js_sys::Object::new();
            js_sys::Reflect::set(&pending, &"id".into(), &id.0.as_str().into())?;
            js_sys::Reflect::set(&pending, &"outcome".into(), &outcome)?;
            Ok(pending.into())
        });
        Ok(promise.unchecked_into())
    }

    /// Connection state, pending count and each feed's revision.
    pub fn status(&self) -> StatusJs {
        to_js(&self.app.status(&self.shell)).unchecked_into()
    }

    /// Calls `callback(status)` whenever [`Client::status`] changes.
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(&self, callback: OnStatus) -> Result<(), JsValue> {
        let callback: js_sys::Function = JsValue::from(callback)
            .dyn_into()
            .map_err(|_| js_error("bad_request", "onStatus needs a function"))?;
        self.app.status_listeners.borrow_mut().push(callback);
        Ok(())
    }

    /// Calls `callback({ id, outcome })` for every change that ends, including
    /// outcomes kept from before a reload until they are dismissed.
    #[wasm_bindgen(js_name = onOutcome)]
    pub fn on_outcome(&self, callback: OnOutcome) -> Result<(), JsValue> {
        let callback: js_sys::Function = JsValue::from(callback)
            .dyn_into()
            .map_err(|_| js_error("bad_request", "onOutcome needs a function"))?;
        let stored: Vec<JsValue> = self.shell.with_core(|core| {
            core.outcomes()
                .values()
                .map(|r| to_js(&serde_json::json!({ "id": r.id, "outcome": r.outcome })))
                .collect()
        });
        for event in stored {
            call_each(std::slice::from_ref(&callback), &event);
        }
        self.app.outcome_listeners.borrow_mut().push(callback);
        Ok(())
    }

    /// Forgets a stored outcome once the app has shown it.
    #[wasm_bindgen(js_name = dismissOutcome)]
    pub fn dismiss_outcome(&self, id: String) -> Result<(), JsValue> {
        self.shell
            .input(|core, now| core.dismiss_outcome(&ChangeId(id), now))
            .map_err(core_error)
    }

    /// The local changes not yet confirmed, oldest first.
    pub fn outbox(&self) -> OutboxEntries {
        let entries = self.shell.with_core(|core| core.pending());
        let entries: Vec<OutboxEntryJs<'_>> = entries
            .iter()
            .map(|e| OutboxEntryJs {
                id: &e.id,
                op: &e.op,
                created_at: e.created_at,
                conflicts: e.conflicts,
                accepted: e.accepted.is_some(),
            })
            .collect();
        to_js(&entries).unchecked_into()
    }

    /// `false` works offline: the connection closes and stays closed while
    /// changes keep queueing durably; `true` reconnects at once.
    #[wasm_bindgen(js_name = setOnline)]
    pub fn set_online(&self, online: bool) {
        self.shell.set_paused(!online);
    }

    /// Stops syncing and closes the database.
    pub fn close(&self) {
        self.shell.close();
        if let (Some(window), Some((wake, offline))) =
            (web_sys::window(), self.wake.borrow_mut().take())
        {
            let _ =
                window.remove_event_listener_with_callback("online", wake.as_ref().unchecked_ref());
            let _ = window
                .remove_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
            if let Some(document) = window.document() {
                let _ = document.remove_event_listener_with_callback(
                    "visibilitychange",
                    wake.as_ref().unchecked_ref(),
                );
            }
        }
        self.lock.borrow_mut().release();
    }
}
