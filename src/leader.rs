//! The leading tab: it holds the database and the connection (the shell
//! around the sync core), carries out what the tab machine asks of a leader
//! (queue a follower's change, answer a join or a subscription) and tells the
//! other tabs every change.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation, SortedMap};
use thoonk_sync_core::{
    Config, ConflictCase, ItemView, Notification, Resolution, Resolver, ResolverError, Status,
    StorageMarker, StorageWiped, SyncCore,
};
use wasm_bindgen::prelude::*;

use thoonk_sync_core::tabs::{
    FeedChange, Origin, OutboxEntry, OutcomeEvent, Refusal, SharedState, TabMachine, TabMessage,
};

use crate::client::{from_js, js_error, random_seed, to_js, ItemJs};
use crate::idb::IdbStore;
use crate::shell::{AppHooks, Shell};
use crate::tab_client::{feed_view_js, outcome_js, Tab};

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The key of the marker a client of `db_name` keeps in localStorage, so
/// that a database the browser wiped is noticed (the rules are the core's:
/// [`StorageMarker`]).
fn marker_key(db_name: &str) -> String {
    format!("thoonk-sync:{db_name}")
}

fn read_marker(key: &str) -> Option<StorageMarker> {
    let text = local_storage()?.get_item(key).ok()??;
    serde_json::from_str(&text).ok()
}

fn store_marker(key: &str, marker: &StorageMarker) {
    if let Some(storage) = local_storage() {
        let text = serde_json::to_string(marker).unwrap_or_default();
        let _ = storage.set_item(key, &text);
    }
}

/// The wipe of `db_name`'s database reported and not dismissed yet (any tab
/// reads it: the marker is shared by the origin's tabs).
pub fn storage_wiped(db_name: &str) -> Option<StorageWiped> {
    read_marker(&marker_key(db_name))?.wiped
}

/// The app has shown the wipe report of `db_name`: it is dropped for good.
pub fn dismiss_storage_wiped(db_name: &str) {
    let key = marker_key(db_name);
    if let Some(marker) = read_marker(&key).filter(|m| m.wiped.is_some()) {
        store_marker(&key, &marker.dismissed());
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJs {
    connection: &'static str,
    server: &'static str,
    pending: usize,
    feeds: SortedMap<FeedName, FeedHeadJs>,
    storage_error: Option<String>,
    storage_wiped: Option<StorageWiped>,
    tab: &'static str,
    offline_reason: Option<&'static str>,
}

/// Why the client is offline, while its `connection` is: the app chose it
/// (`paused`), the browser has no network, or the server did not answer.
fn offline_reason(connection: &str, paused: bool) -> Option<&'static str> {
    if connection != "offline" {
        None
    } else if paused {
        Some("user")
    } else if web_sys::window().is_some_and(|window| !window.navigator().on_line()) {
        Some("network")
    } else {
        Some("unreachable")
    }
}

#[derive(Serialize)]
struct FeedHeadJs {
    epoch: u64,
    rev: u64,
}

/// Listens for the browser coming back online or the page becoming visible
/// (reconnect now) and for the browser going offline (drop the socket now).
struct NetworkListeners {
    wake: Closure<dyn FnMut()>,
    offline: Closure<dyn FnMut()>,
}

impl NetworkListeners {
    fn listen(shell: &Rc<Shell>) -> Option<Self> {
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
        let _ =
            window.add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
        let _ = document
            .add_event_listener_with_callback("visibilitychange", wake.as_ref().unchecked_ref());
        Some(Self { wake, offline })
    }
}

impl Drop for NetworkListeners {
    fn drop(&mut self) {
        let Some(window) = web_sys::window() else {
            return;
        };
        let wake = self.wake.as_ref().unchecked_ref();
        let _ = window.remove_event_listener_with_callback("online", wake);
        let _ = window
            .remove_event_listener_with_callback("offline", self.offline.as_ref().unchecked_ref());
        if let Some(document) = window.document() {
            let _ = document.remove_event_listener_with_callback("visibilitychange", wake);
        }
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
        match from_js::<Answer>(answer, "resolveConflict's answer") {
            Ok(Answer::Merged(value)) => Ok(Resolution::Merged(value)),
            Ok(Answer::Unresolved(reason)) => Ok(Resolution::Unresolved(reason)),
            Err(err) => Err(ResolverError(format!(
                "resolveConflict returned an unknown answer: {err:?}"
            ))),
        }
    }
}

fn json_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("API values always serialize")
}

/// The state of the leading tab.
pub struct Leader {
    /// The shell around the sync core.
    pub shell: Rc<Shell>,
    storage_error: RefCell<Option<String>>,
    marker_key: String,
    last_marker: RefCell<Option<StorageMarker>>,
    last_state: RefCell<Option<String>>,
    _network: Option<NetworkListeners>,
}

impl Leader {
    /// Opens the store, claims it for this tab and starts the core.
    pub async fn start(tab: &Rc<Tab>) -> Result<Self, JsValue> {
        let options = &tab.options;
        let storage = |err: crate::idb::StoreError| js_error("storage", err);
        let store = IdbStore::open(&options.db_name).await.map_err(storage)?;
        store
            .claim_leadership(&format!("{}.{:08x}", tab.id, random_seed() as u32))
            .await
            .map_err(storage)?;
        let seed = random_seed();
        let token = options.token.borrow().clone();
        let mut config = Config::new(format!("c{seed:016x}"), token, seed);
        if let Some(max) = options.max_batch {
            config.max_batch = max.clamp(1, thoonk_protocol::MAX_BATCH_CHANGES);
        }
        let shell = Shell::start(config, store, options.url.clone())
            .await
            .map_err(|err| js_error("storage", err))?;
        if let Some(resolver) = &options.resolver {
            let resolver = JsResolver(resolver.clone());
            let _ = shell.input(|core, _| {
                core.set_resolver(Box::new(resolver));
                Ok(())
            });
        }
        // A database found empty where this browser ran a client before
        // was wiped; the report stays in the marker until dismissed.
        let marker_key = marker_key(&options.db_name);
        let stored = read_marker(&marker_key);
        let wiped_now = shell.started_fresh() && stored.is_some();
        let marker = shell.with_core(|core| {
            StorageMarker::at_start(
                stored,
                shell.started_fresh(),
                core.client_id(),
                core.pending_ids(),
            )
        });
        store_marker(&marker_key, &marker);
        if let (Some(wiped), true) = (&marker.wiped, wiped_now) {
            web_sys::console::warn_1(
                &format!(
                    "thoonk-sync: the local database was wiped since the last run; {} unconfirmed change(s) may be lost",
                    wiped.lost_changes.len()
                )
                .into(),
            );
        }
        if tab.paused.get() {
            shell.set_paused(true);
        }
        shell.run(Rc::new(LeaderHooks(Rc::downgrade(tab))));
        let network = NetworkListeners::listen(&shell);
        Ok(Self {
            shell,
            storage_error: RefCell::default(),
            marker_key,
            last_marker: RefCell::new(Some(marker)),
            last_state: RefCell::default(),
            _network: network,
        })
    }

    /// This tab leads now: shows its app the views as this tab's store has
    /// them (replacing those it showed while following).
    pub fn led(tab: &Rc<Tab>) {
        let Some(shell) = tab.shell() else {
            return;
        };
        let cache = tab.take_follower_cache();
        // Inserted, not collected (a collect sorts: more code in the bundle).
        let mut feeds: BTreeSet<FeedName> = BTreeSet::new();
        feeds.extend(cache.feeds().cloned());
        feeds.extend(
            shell
                .with_core(SyncCore::feeds)
                .into_iter()
                .filter(|feed| tab.callbacks.follows(feed)),
        );
        for feed in feeds {
            let views = shell.with_core(|core| core.view(&feed));
            let removed: Vec<ItemId> = cache
                .items(&feed)
                .unwrap_or_default()
                .iter()
                .map(|item| item.id.clone())
                .filter(|id| !views.iter().any(|v| &v.id == id))
                .collect();
            let order = Some(views.iter().map(|v| v.id.clone()).collect());
            tab.callbacks
                .feed_changed(&feed_view_js(&feed, &views, &removed, &order));
        }
        let known = tab
            .leader
            .borrow()
            .as_ref()
            .map(Leader::outcomes)
            .unwrap_or_default();
        tab.callbacks.settle_known(&known);
        LeaderHooks(Rc::downgrade(tab)).settled();
    }

    /// Queues a change another tab (or this one, before it led) made, under
    /// its id, and tells the machine once it is durable or refused. A leader
    /// closed or fenced first says nothing: the next leader hears it again.
    pub fn queue(tab: &Rc<Tab>, origin: Origin, id: ChangeId, op: Operation) {
        let Some(shell) = tab.shell() else {
            return;
        };
        let queued = shell.input(|core, now| core.change_with_id(id.clone(), op, now));
        let mark = shell.inputs();
        let tab = tab.clone();
        wasm_bindgen_futures::spawn_local(async move {
            shell.settled().await;
            let result = match queued {
                Ok(_) if shell.stored(mark) => Ok(()),
                Ok(_) if shell.is_closed() => return,
                Ok(_) => Err(Refusal::new("storage", "the change could not be stored")),
                Err(err) => {
                    let error = crate::client::core_error(err);
                    let field = |name: &str| {
                        js_sys::Reflect::get(&error, &name.into())
                            .ok()
                            .and_then(|c| c.as_string())
                            .unwrap_or_default()
                    };
                    Err(Refusal::new(field("code"), field("message")))
                }
            };
            tab.queued(origin, id, result);
        });
    }

    /// The views of the feeds `pattern` matches, for a follower that follows it.
    pub fn views(&self, pattern: &FeedPattern) -> Vec<FeedChange> {
        self.shell.with_core(|core| {
            core.feeds()
                .into_iter()
                .filter(|feed| pattern.matches(feed))
                .map(|feed| {
                    let views = core.view(&feed);
                    FeedChange::full(feed, views, vec![])
                })
                .collect()
        })
    }

    /// The views of the feeds the app follows, for the follower this tab becomes.
    pub fn followed_views(&self, machine: &TabMachine) -> Vec<(FeedName, Vec<ItemView>)> {
        self.shell.with_core(|core| {
            core.feeds()
                .into_iter()
                .filter(|feed| machine.follows(feed))
                .map(|feed| {
                    let views = core.view(&feed);
                    (feed, views)
                })
                .collect()
        })
    }

    /// The stored outcomes.
    pub fn outcome_events(&self) -> Vec<OutcomeEvent> {
        self.shell.with_core(|core| {
            core.outcomes()
                .values()
                .map(|r| OutcomeEvent {
                    id: r.id.clone(),
                    outcome: r.outcome.clone(),
                })
                .collect()
        })
    }

    /// The stored outcome events, `{ id, outcome }`.
    pub fn outcomes(&self) -> Vec<Value> {
        self.outcome_events().iter().map(outcome_js).collect()
    }

    /// The status as `status()` shows it (`paused`: the app works offline).
    pub fn status(&self, paused: bool) -> Value {
        self.shell.with_core(|core| {
            let connection = match core.status() {
                Status::Offline => "offline",
                Status::Connecting => "connecting",
                Status::Online => "online",
                Status::Unauthorized => "unauthorized",
                Status::Stopped { .. } => "stopped",
            };
            json_value(&StatusJs {
                connection,
                offline_reason: offline_reason(connection, paused),
                server: core.server_state().as_str(),
                pending: core.pending_len(),
                feeds: core
                    .feeds()
                    .into_iter()
                    .filter_map(|feed| {
                        let head = core.position(&feed)?;
                        let head = FeedHeadJs {
                            epoch: head.epoch,
                            rev: head.rev,
                        };
                        Some((feed, head))
                    })
                    .collect(),
                storage_error: self.storage_error.borrow().clone(),
                storage_wiped: read_marker(&self.marker_key).and_then(|m| m.wiped),
                tab: "leader",
            })
        })
    }

    /// The pending changes as `outbox()` shows them.
    pub fn outbox(&self) -> Value {
        json_value(&self.outbox_entries())
    }

    fn outbox_entries(&self) -> Vec<OutboxEntry> {
        self.shell.with_core(|core| {
            core.pending()
                .into_iter()
                .map(|e| OutboxEntry {
                    accepted: e.accepted.is_some(),
                    id: e.id,
                    op: e.op,
                    created_at: e.created_at,
                    conflicts: e.conflicts,
                })
                .collect()
        })
    }

    /// Status and outbox, as followers get them.
    pub fn shared_state(&self, paused: bool) -> SharedState {
        SharedState {
            status: serde_json::from_value(self.status(paused)).unwrap_or_default(),
            outbox: self.outbox_entries(),
        }
    }

    /// The app's view of `feed` as a JS array (converted straight from the
    /// view, without a JSON value in between).
    pub fn items_js(&self, feed: &FeedName) -> JsValue {
        self.shell.with_core(|core| {
            let views = core.view_ref(feed);
            to_js(&views.iter().map(ItemJs::from).collect::<Vec<_>>())
        })
    }

    /// The app's view of `feed` as JSON items.
    pub fn items(&self, feed: &FeedName) -> Value {
        self.shell.with_core(|core| {
            let views = core.view(feed);
            json_value(&views.iter().map(ItemJs::from).collect::<Vec<_>>())
        })
    }

    /// Records the client id and the unconfirmed changes outside IndexedDB.
    fn write_marker(&self) {
        let marker = self.shell.with_core(|core| {
            StorageMarker::update(
                read_marker(&self.marker_key),
                core.client_id(),
                core.pending_ids(),
            )
        });
        if self.last_marker.borrow().as_ref() == Some(&marker) {
            return;
        }
        store_marker(&self.marker_key, &marker);
        *self.last_marker.borrow_mut() = Some(marker);
    }

    /// Stops the core and lets go of the store.
    pub fn close(self) {
        self.shell.close();
    }
}

fn with_leader<R>(tab: &Tab, read: impl FnOnce(&Leader) -> R) -> Option<R> {
    tab.leader.borrow().as_ref().map(read)
}

/// The shell's hooks: hands notifications to this tab's app and to the other tabs.
struct LeaderHooks(Weak<Tab>);

impl AppHooks for LeaderHooks {
    fn notify(&self, notification: &Notification) {
        let Some(tab) = self.0.upgrade() else {
            return;
        };
        match notification {
            Notification::Items {
                feed,
                changed,
                removed,
                order,
            } => {
                tab.callbacks
                    .feed_changed(&feed_view_js(feed, changed, removed, order));
                if tab.has_followers() {
                    tab.broadcast(TabMessage::Items {
                        change: FeedChange {
                            feed: feed.clone(),
                            changed: changed.clone(),
                            removed: removed.clone(),
                            order: order.clone(),
                        },
                    });
                }
            }
            Notification::Outcome { change, outcome } => {
                let event = OutcomeEvent {
                    id: change.clone(),
                    outcome: outcome.clone(),
                };
                tab.callbacks.outcome(&outcome_js(&event));
                if tab.has_followers() {
                    tab.broadcast(TabMessage::Outcome { event });
                }
            }
            Notification::Status { status } => {
                if *status == Status::Unauthorized {
                    refresh_token(&tab);
                }
            }
            // Shown in `status()`, reported when the batch settles.
            Notification::Server { .. } => {}
            Notification::ServerError { code, message } => {
                web_sys::console::warn_1(
                    &format!("thoonk-sync: server error {}: {message}", code.as_str()).into(),
                );
            }
        }
    }

    fn storage_failed(&self, message: &str) {
        if let Some(tab) = self.0.upgrade() {
            with_leader(&tab, |leader| {
                *leader.storage_error.borrow_mut() = Some(message.to_owned())
            });
        }
        web_sys::console::error_1(&format!("thoonk-sync: {message}").into());
    }

    fn settled(&self) {
        let Some(tab) = self.0.upgrade() else {
            return;
        };
        let Some((status, state)) = with_leader(&tab, |leader| {
            leader.write_marker();
            // The shared state is only for followers: none, nothing to compare.
            let state = if tab.has_followers() {
                let state = leader.shared_state(tab.paused.get());
                let text = serde_json::to_string(&state).unwrap_or_default();
                let changed = leader.last_state.borrow().as_deref() != Some(text.as_str());
                *leader.last_state.borrow_mut() = Some(text);
                changed.then_some(state)
            } else {
                leader.last_state.borrow_mut().take();
                None
            };
            (leader.status(tab.paused.get()), state)
        }) else {
            return;
        };
        tab.callbacks.status(&status);
        if let Some(state) = state {
            tab.broadcast(TabMessage::State { state });
        }
    }

    fn fenced(&self) {
        if let Some(tab) = self.0.upgrade() {
            tab.step_down();
        }
    }
}

/// Asks the app's `getToken` for a new token after the server refused one.
fn refresh_token(tab: &Rc<Tab>) {
    let (Some(get_token), Some(shell)) = (tab.options.get_token.clone(), tab.shell()) else {
        return;
    };
    let tab = tab.clone();
    wasm_bindgen_futures::spawn_local(async move {
        match crate::client::call_get_token(&get_token).await {
            Ok(token) => {
                *tab.options.token.borrow_mut() = token.clone();
                let _ = shell.input(|core, now| core.set_token(token, now));
            }
            Err(err) => web_sys::console::error_2(&"thoonk-sync: getToken failed".into(), &err),
        }
    });
}
