//! The leading tab: it holds the database and the connection (the shell
//! around the sync core), serves the other tabs' requests and tells them
//! every change.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation};
use thoonk_sync_core::{
    Config, ConflictCase, ItemView, Notification, Resolution, Resolver, ResolverError, Status,
    SyncCore,
};
use wasm_bindgen::prelude::*;

use crate::client::{from_js, js_error, random_seed, to_js, FeedChangeJs, ItemJs};
use crate::follower::Follower;
use crate::idb::IdbStore;
use crate::shell::{AppHooks, Shell};
use crate::tab::{Callbacks, Role, Tab};
use crate::tabs::TabMessage;
use crate::view_cache::ViewCache;

/// What the client last wrote about itself outside IndexedDB (localStorage),
/// so that a database the browser wiped is noticed, with the changes lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageMarker {
    previous_client_id: String,
    lost_changes: Vec<ChangeId>,
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn read_marker(key: &str) -> Option<StorageMarker> {
    let text = local_storage()?.get_item(key).ok()??;
    serde_json::from_str(&text).ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJs {
    connection: &'static str,
    server: &'static str,
    pending: usize,
    feeds: BTreeMap<FeedName, FeedHeadJs>,
    storage_error: Option<String>,
    storage_wiped: Option<StorageMarker>,
    tab: &'static str,
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

/// A whole feed view as one `FeedChange`: every item, and the order.
fn full_view(feed: &FeedName, views: &[ItemView], removed: &[ItemId]) -> Value {
    let order: Vec<ItemId> = views.iter().map(|v| v.id.clone()).collect();
    json_value(&FeedChangeJs {
        feed,
        changed: views.iter().map(ItemJs::from).collect(),
        removed,
        order: &Some(order),
    })
}

fn json_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("API values always serialize")
}

/// The state of the leading tab.
pub struct Leader {
    /// The shell around the sync core.
    pub shell: Rc<Shell>,
    /// The patterns each following tab follows.
    followers: RefCell<BTreeMap<String, BTreeSet<FeedPattern>>>,
    storage_error: RefCell<Option<String>>,
    storage_wiped: Option<StorageMarker>,
    marker_key: String,
    last_marker: RefCell<Option<String>>,
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
        let config = Config::new(format!("c{seed:016x}"), token, seed);
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
        // A database found empty where this browser ran a client before was wiped.
        let marker_key = format!("thoonk-sync:{}", options.db_name);
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
        if tab.paused.get() {
            shell.set_paused(true);
        }
        shell.run(Rc::new(LeaderHooks(Rc::downgrade(tab))));
        let network = NetworkListeners::listen(&shell);
        Ok(Self {
            shell,
            followers: RefCell::default(),
            storage_error: RefCell::default(),
            storage_wiped,
            marker_key,
            last_marker: RefCell::default(),
            last_state: RefCell::default(),
            _network: network,
        })
    }

    /// Takes over from the follower this tab was: its app's subscriptions,
    /// the changes it forwarded without an answer, and the views it showed.
    pub async fn took_over(tab: &Rc<Tab>, follower: Option<Box<Follower>>) {
        let Some(shell) = leader_shell(tab) else {
            return;
        };
        for pattern in tab.callbacks.patterns() {
            let _ = shell.input(|core, now| core.subscribe(pattern, now));
        }
        let (forwarded, cache) = match follower {
            Some(follower) => {
                let follower = *follower;
                (follower.forwarded, follower.cache)
            }
            None => (vec![], ViewCache::default()),
        };
        let mut replies = vec![];
        for change in forwarded {
            let op = change.op;
            let queued = match change.id {
                Some(id) => shell.input(|core, now| core.change_with_id(id, op, now)),
                None => shell.input(|core, now| core.change(op, now)),
            };
            replies.push((queued, change.reply));
        }
        let mark = shell.inputs();
        shell.settled().await;
        for (queued, reply) in replies {
            let answer = match queued {
                Ok(id) if shell.stored(mark) => Ok(id),
                Ok(_) => Err(js_error("storage", "the change could not be stored")),
                Err(err) => Err(crate::client::core_error(err)),
            };
            let _ = reply.send(answer);
        }
        // The app's views as this tab's store has them now.
        let mut feeds: BTreeSet<String> = cache.feeds().map(str::to_owned).collect();
        feeds.extend(
            shell
                .with_core(SyncCore::feeds)
                .into_iter()
                .filter(|feed| tab.callbacks.follows(feed))
                .map(|feed| feed.as_str().to_owned()),
        );
        for feed in feeds {
            let Ok(feed) = FeedName::new(feed) else {
                continue;
            };
            let views = shell.with_core(|core| core.view(&feed));
            let removed: Vec<ItemId> = cache
                .items(feed.as_str())
                .unwrap_or_default()
                .iter()
                .filter_map(|item| item["id"].as_str())
                .filter(|id| !views.iter().any(|v| v.id.as_str() == *id))
                .filter_map(|id| ItemId::new(id).ok())
                .collect();
            tab.callbacks
                .feed_changed(&full_view(&feed, &views, &removed));
        }
        if let Role::Leader(leader) = &*tab.role.borrow() {
            tab.callbacks.settle_known(&leader.outcomes());
        }
        LeaderHooks(Rc::downgrade(tab)).settled();
    }

    /// Answers a follower.
    pub fn serve(tab: &Rc<Tab>, message: TabMessage) {
        let Some(shell) = leader_shell(tab) else {
            return;
        };
        match message {
            TabMessage::Join { tab: from } => {
                let welcome = with_leader(tab, |leader| {
                    leader
                        .followers
                        .borrow_mut()
                        .entry(from.clone())
                        .or_default();
                    TabMessage::Welcome {
                        to: from,
                        client_id: shell.with_core(|core| core.client_id().to_owned()),
                        state: leader.state(),
                        outcomes: leader.outcomes(),
                    }
                });
                if let Some(welcome) = welcome {
                    tab.post(&welcome);
                }
            }
            TabMessage::Leave { tab: from } => {
                with_leader(tab, |leader| leader.followers.borrow_mut().remove(&from));
            }
            TabMessage::Subscribe {
                tab: from,
                req,
                pattern,
            } => {
                with_leader(tab, |leader| {
                    leader
                        .followers
                        .borrow_mut()
                        .entry(from.clone())
                        .or_default()
                        .insert(pattern.clone())
                });
                let _ = shell.input(|core, now| core.subscribe(pattern.clone(), now));
                let feeds = shell.with_core(|core| {
                    core.feeds()
                        .into_iter()
                        .filter(|feed| pattern.matches(feed))
                        .map(|feed| full_view(&feed, &core.view(&feed), &[]))
                        .collect()
                });
                tab.post(&TabMessage::Views {
                    to: from,
                    req,
                    feeds,
                });
            }
            TabMessage::Unsubscribe { tab: from, pattern } => {
                with_leader(tab, |leader| {
                    if let Some(patterns) = leader.followers.borrow_mut().get_mut(&from) {
                        patterns.remove(&pattern);
                    }
                    leader.unsubscribe_if_unused(&tab.callbacks, &pattern);
                });
            }
            TabMessage::Change { tab: from, id, op } => {
                let queued = shell.input(|core, now| core.change_with_id(id.clone(), op, now));
                let mark = shell.inputs();
                let tab = tab.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    shell.settled().await;
                    let answer = match queued {
                        Ok(id) if shell.stored(mark) => TabMessage::Queued { to: from, id },
                        // Closed or fenced first: the next leader hears it again.
                        Ok(_) if shell.is_closed() => return,
                        Ok(id) => TabMessage::Refused {
                            to: from,
                            id,
                            code: "storage".into(),
                            message: "the change could not be stored".into(),
                        },
                        Err(err) => {
                            let error = crate::client::core_error(err);
                            TabMessage::Refused {
                                to: from,
                                id,
                                code: js_sys::Reflect::get(&error, &"code".into())
                                    .ok()
                                    .and_then(|c| c.as_string())
                                    .unwrap_or_default(),
                                message: js_sys::Reflect::get(&error, &"message".into())
                                    .ok()
                                    .and_then(|m| m.as_string())
                                    .unwrap_or_default(),
                            }
                        }
                    };
                    tab.post(&answer);
                });
            }
            TabMessage::Dismiss { id } => {
                let _ = shell.input(|core, now| core.dismiss_outcome(&id, now));
            }
            TabMessage::SetOnline { online } => {
                tab.paused.set(!online);
                shell.set_paused(!online);
            }
            TabMessage::Ping { tab: from } => tab.post(&TabMessage::Pong { to: from }),
            _ => {}
        }
    }

    /// Unsubscribes the core from `pattern` when neither this tab's app nor
    /// a following tab follows it.
    pub fn unsubscribe_if_unused(&self, callbacks: &Callbacks, pattern: &FeedPattern) {
        let used = callbacks.patterns().contains(pattern)
            || self
                .followers
                .borrow()
                .values()
                .any(|p| p.contains(pattern));
        if !used {
            let _ = self.shell.input(|core, now| core.unsubscribe(pattern, now));
        }
    }

    /// The stored outcome events, `{ id, outcome }`.
    pub fn outcomes(&self) -> Vec<Value> {
        self.shell.with_core(|core| {
            core.outcomes()
                .values()
                .map(|r| json!({ "id": r.id, "outcome": r.outcome }))
                .collect()
        })
    }

    /// The status as `status()` shows it.
    pub fn status(&self) -> Value {
        self.shell.with_core(|core| {
            json_value(&StatusJs {
                connection: match core.status() {
                    Status::Offline => "offline",
                    Status::Connecting => "connecting",
                    Status::Online => "online",
                    Status::Unauthorized => "unauthorized",
                    Status::Stopped { .. } => "stopped",
                },
                server: core.server_state().as_str(),
                pending: core.pending().len(),
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
                storage_wiped: self.storage_wiped.clone(),
                tab: "leader",
            })
        })
    }

    /// The pending changes as `outbox()` shows them.
    pub fn outbox(&self) -> Value {
        self.shell.with_core(|core| {
            let entries = core.pending();
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
            json_value(&entries)
        })
    }

    /// Status and outbox, as followers get them.
    fn state(&self) -> Value {
        json!({ "status": self.status(), "outbox": self.outbox() })
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
        let marker = self.shell.with_core(|core| StorageMarker {
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

    /// What a follower starts from when this tab stops leading: the client
    /// id, the state and the views of the feeds the app follows.
    pub fn close_into_follower(self, tab: &Rc<Tab>) -> Follower {
        let mut cache = ViewCache::default();
        let shell = self.shell.clone();
        for feed in shell.with_core(SyncCore::feeds) {
            if tab.callbacks.follows(&feed) {
                let items = self.items(&feed);
                cache.replace(feed.as_str(), items.as_array().cloned().unwrap_or_default());
            }
        }
        let outcomes = self
            .outcomes()
            .into_iter()
            .filter_map(|event| Some((ChangeId(event["id"].as_str()?.to_owned()), event)))
            .collect();
        let client_id = shell.with_core(|core| core.client_id().to_owned());
        let state = self.state();
        self.close();
        Follower::new(tab, Some(client_id), Some(state), cache, outcomes)
    }

    /// Stops the core and lets go of the store.
    pub fn close(self) {
        self.shell.close();
    }
}

fn leader_shell(tab: &Tab) -> Option<Rc<Shell>> {
    match &*tab.role.borrow() {
        Role::Leader(leader) => Some(leader.shell.clone()),
        _ => None,
    }
}

fn with_leader<R>(tab: &Tab, read: impl FnOnce(&Leader) -> R) -> Option<R> {
    match &*tab.role.borrow() {
        Role::Leader(leader) => Some(read(leader)),
        _ => None,
    }
}

fn has_followers(tab: &Tab) -> bool {
    with_leader(tab, |leader| !leader.followers.borrow().is_empty()).unwrap_or(false)
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
                let change = json_value(&FeedChangeJs {
                    feed,
                    changed: changed.iter().map(ItemJs::from).collect(),
                    removed,
                    order,
                });
                tab.callbacks.feed_changed(&change);
                if has_followers(&tab) {
                    tab.post(&TabMessage::Items { change });
                }
            }
            Notification::Outcome { change, outcome } => {
                let event = json!({ "id": change, "outcome": outcome });
                tab.callbacks.outcome(&event);
                if has_followers(&tab) {
                    tab.post(&TabMessage::Outcome { event });
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
            let state = leader.state();
            let text = state.to_string();
            let changed = leader.last_state.borrow().as_deref() != Some(text.as_str());
            *leader.last_state.borrow_mut() = Some(text);
            let followed = !leader.followers.borrow().is_empty();
            (leader.status(), (changed && followed).then_some(state))
        }) else {
            return;
        };
        tab.callbacks.status(&status);
        if let Some(state) = state {
            tab.post(&TabMessage::State { state });
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
    let (Some(get_token), Some(shell)) = (tab.options.get_token.clone(), leader_shell(tab)) else {
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
