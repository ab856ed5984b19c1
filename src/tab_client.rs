//! One client in one tab: the app's callbacks, and the glue between the tab
//! protocol's state machine ([`TabMachine`], in the core) and the browser:
//! the Web Lock, the BroadcastChannel, a timer, and the leader's shell. Every
//! decision (who leads, what to post, when to take over) is the machine's;
//! this file carries out its events and feeds it what happened.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::Either;
use serde_json::{json, Value};
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId, Operation, SortedMap};
use thoonk_sync_core::tabs::{
    Ask, ChangeRoute, FeedChange, Handle, OutcomeEvent, Refusal, Role, TabEvent, TabMachine,
    TabMessage,
};
use thoonk_sync_core::ItemView;
use wasm_bindgen::prelude::*;

use crate::client::{core_error, js_error, to_js, FeedChangeJs, ItemJs};
use crate::leader::Leader;
use crate::shell::{now, Shell};
use crate::tab_transport::{Channel, LeadRequest, Timeout};

/// A change listener registered by `subscribe`.
pub struct Listener {
    /// Its handle, for unsubscribing.
    pub id: u32,
    /// What it follows.
    pub pattern: FeedPattern,
    /// The app's callback.
    pub on_change: js_sys::Function,
}

/// What the app registered, whatever the tab's role.
#[derive(Default)]
pub struct Callbacks {
    /// `subscribe` callbacks.
    pub listeners: RefCell<Vec<Listener>>,
    next_listener: Cell<u32>,
    /// `onStatus` callbacks.
    pub status_listeners: RefCell<Vec<js_sys::Function>>,
    /// `onOutcome` callbacks.
    pub outcome_listeners: RefCell<Vec<js_sys::Function>>,
    /// Promises of outcomes not yet known.
    outcome_waiters: RefCell<SortedMap<ChangeId, Vec<oneshot::Sender<Value>>>>,
    last_status: RefCell<Option<String>>,
}

fn call_each(callbacks: &[js_sys::Function], value: &JsValue) {
    for callback in callbacks {
        if let Err(err) = callback.call1(&JsValue::NULL, value) {
            web_sys::console::error_2(&"thoonk-sync: a callback threw".into(), &err);
        }
    }
}

impl Callbacks {
    /// Registers a change listener and returns its handle.
    pub fn add_listener(&self, pattern: FeedPattern, on_change: js_sys::Function) -> u32 {
        let id = self.next_listener.get() + 1;
        self.next_listener.set(id);
        self.listeners.borrow_mut().push(Listener {
            id,
            pattern,
            on_change,
        });
        id
    }

    /// Removes listener `id`; returns its pattern when no other listener follows it.
    pub fn remove_listener(&self, id: u32) -> Option<FeedPattern> {
        let mut listeners = self.listeners.borrow_mut();
        let index = listeners.iter().position(|l| l.id == id)?;
        let pattern = listeners.remove(index).pattern;
        (!listeners.iter().any(|l| l.pattern == pattern)).then_some(pattern)
    }

    /// True when some listener follows `feed`.
    pub fn follows(&self, feed: &FeedName) -> bool {
        self.listeners
            .borrow()
            .iter()
            .any(|l| l.pattern.matches(feed))
    }

    /// Hands a `FeedChange` to the listeners of its feed (converted to JS
    /// only when there are any).
    pub fn feed_changed(&self, change: &FeedChangeJs) {
        let callbacks: Vec<js_sys::Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|l| l.pattern.matches(change.feed))
            .map(|l| l.on_change.clone())
            .collect();
        if !callbacks.is_empty() {
            call_each(&callbacks, &to_js(change));
        }
    }

    /// Hands an outcome event (`{ id, outcome }`) to the outcome listeners
    /// and to whoever awaits that change's outcome.
    pub fn outcome(&self, event: &Value) {
        if let Some(id) = event.get("id").and_then(Value::as_str) {
            self.settle_waiters(&ChangeId(id.to_owned()), event);
        }
        let callbacks = self.outcome_listeners.borrow().clone();
        call_each(&callbacks, &to_js(event));
    }

    fn settle_waiters(&self, id: &ChangeId, event: &Value) {
        let waiters = self.outcome_waiters.borrow_mut().remove(id);
        for waiter in waiters.unwrap_or_default() {
            let _ = waiter.send(event["outcome"].clone());
        }
    }

    /// Settles the waiters of outcomes that are already known (after a move
    /// between roles, which may have missed the event).
    pub fn settle_known(&self, known: &[Value]) {
        for event in known {
            if let Some(id) = event.get("id").and_then(Value::as_str) {
                self.settle_waiters(&ChangeId(id.to_owned()), event);
            }
        }
    }

    /// Resolves with the outcome of change `id`: at once when `known` has it.
    pub fn await_outcome(&self, id: ChangeId, known: Option<Value>) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        match known {
            Some(event) => {
                let _ = tx.send(event["outcome"].clone());
            }
            None => self
                .outcome_waiters
                .borrow_mut()
                .entry(id)
                .or_default()
                .push(tx),
        }
        rx
    }

    /// Calls the status listeners when `status` differs from the last one.
    pub fn status(&self, status: &Value) {
        let text = status.to_string();
        if self.last_status.borrow().as_deref() == Some(text.as_str()) {
            return;
        }
        *self.last_status.borrow_mut() = Some(text);
        let callbacks = self.status_listeners.borrow().clone();
        call_each(&callbacks, &to_js(status));
    }
}

/// What `Client.open` was given.
pub struct TabOptions {
    /// The server's WebSocket URL.
    pub url: String,
    /// The IndexedDB database.
    pub db_name: String,
    /// The current token.
    pub token: RefCell<String>,
    /// Fetches a new token when the server refuses the current one.
    pub get_token: Option<js_sys::Function>,
    /// The app's conflict resolver.
    pub resolver: Option<js_sys::Function>,
    /// Opens working offline (as after `setOnline(false)`).
    pub offline: bool,
    /// The most changes of one feed sent in one frame (`None`: the core's default).
    pub max_batch: Option<usize>,
}

/// How long `Client.open` in a following tab waits for the leader's welcome.
const WELCOME_WAIT_MS: i32 = 3000;

fn stopped() -> JsValue {
    js_error("closed", "the client is closed")
}

/// A change as the app's `subscribe` callbacks get it.
pub fn feed_change_js(change: &FeedChange) -> FeedChangeJs<'_> {
    feed_view_js(
        &change.feed,
        &change.changed,
        &change.removed,
        &change.order,
    )
}

/// A feed's view change as the app's `subscribe` callbacks get it.
pub fn feed_view_js<'a>(
    feed: &'a FeedName,
    changed: &'a [ItemView],
    removed: &'a [ItemId],
    order: &'a Option<Vec<ItemId>>,
) -> FeedChangeJs<'a> {
    FeedChangeJs {
        feed,
        changed: changed.iter().map(ItemJs::from).collect(),
        removed,
        order,
    }
}

/// An outcome event as `onOutcome` gets it.
pub fn outcome_js(event: &OutcomeEvent) -> Value {
    json!({ "id": event.id, "outcome": event.outcome })
}

/// This tab's client.
pub struct Tab {
    /// Tells this client's messages apart from other tabs' (and other
    /// clients' in this tab): new at every page load.
    pub id: String,
    /// What the app gave `Client.open`.
    pub options: TabOptions,
    /// What the app registered.
    pub callbacks: Callbacks,
    /// The tab protocol's decisions.
    machine: RefCell<TabMachine>,
    /// The store, core and connection, while this tab leads.
    pub leader: RefCell<Option<Leader>>,
    /// The app asked to work offline.
    pub paused: Cell<bool>,
    channel: RefCell<Option<Channel>>,
    lead: RefCell<Option<LeadRequest>>,
    timer: RefCell<Option<(u64, Timeout)>>,
    /// The app's promises of changes forwarded to the leader.
    replies: RefCell<SortedMap<Handle, oneshot::Sender<Result<ChangeId, JsValue>>>>,
    /// Settles `Client.open`: once this tab leads, or follows a leader that answered.
    ready: RefCell<Option<oneshot::Sender<Result<(), JsValue>>>>,
}

impl Tab {
    /// Starts a client: leads when no tab does, else follows.
    pub async fn open(options: TabOptions) -> Result<Rc<Self>, JsValue> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let id = format!("t{:012x}", crate::client::random_seed() >> 16);
        let paused = options.offline;
        let tab = Rc::new(Self {
            machine: RefCell::new(TabMachine::new(id.clone())),
            id,
            options,
            callbacks: Callbacks::default(),
            leader: RefCell::default(),
            paused: Cell::new(paused),
            channel: RefCell::default(),
            lead: RefCell::default(),
            timer: RefCell::default(),
            replies: RefCell::default(),
            ready: RefCell::new(Some(ready_tx)),
        });
        let weak = Rc::downgrade(&tab);
        let channel = Channel::open(&tab.lock_name(), move |message| {
            if let Some(tab) = weak.upgrade() {
                tab.machine.borrow_mut().heard(message, now());
                tab.drive();
            }
        })?;
        *tab.channel.borrow_mut() = Some(channel);
        tab.drive();
        // A leader waits for its store; a follower waits a little for the
        // leader's welcome (a frozen leader never sends one).
        let timeout = Box::pin(crate::tab_transport::sleep(WELCOME_WAIT_MS));
        let ready = match futures::future::select(ready_rx, timeout).await {
            Either::Left((ready, _)) => Some(ready),
            Either::Right(((), ready_rx))
                if matches!(tab.role(), Role::Starting | Role::Opening) =>
            {
                Some(ready_rx.await)
            }
            Either::Right(_) => None,
        };
        if let Some(Ok(Err(err))) = ready {
            return Err(err);
        }
        Ok(tab)
    }

    fn role(&self) -> Role {
        self.machine.borrow().role()
    }

    fn lock_name(&self) -> String {
        format!("thoonk-sync:{}", self.options.db_name)
    }

    /// The leader's shell, while this tab leads.
    pub fn shell(&self) -> Option<Rc<Shell>> {
        self.leader.borrow().as_ref().map(|l| l.shell.clone())
    }

    /// Tells the other tabs, if some follow: `items`, `outcome` or `state`.
    pub fn broadcast(self: &Rc<Self>, message: TabMessage) {
        self.machine.borrow_mut().broadcast(message);
        self.drive();
    }

    /// True when this tab leads and another follows it.
    pub fn has_followers(&self) -> bool {
        self.machine.borrow().has_followers()
    }

    /// Carries out what the machine asks for, then arms its timer.
    fn drive(self: &Rc<Self>) {
        loop {
            let message = self.machine.borrow_mut().poll_transmit();
            if let Some(message) = message {
                if let Some(channel) = self.channel.borrow().as_ref() {
                    channel.post(&message);
                }
                continue;
            }
            let event = self.machine.borrow_mut().poll_event();
            match event {
                Some(event) => self.carry_out(event),
                None => break,
            }
        }
        self.arm_timer();
    }

    /// Arms the timer for the machine's deadline. A timer armed for an
    /// earlier deadline is kept: it fires early, the machine does nothing
    /// yet, and the timer is armed again.
    fn arm_timer(self: &Rc<Self>) {
        let deadline = self.machine.borrow().poll_timeout();
        let armed = self.timer.borrow().as_ref().map(|(at, _)| *at);
        let at = match (deadline, armed) {
            (None, _) => {
                self.timer.borrow_mut().take();
                return;
            }
            (Some(at), Some(armed)) if armed <= at => return,
            (Some(at), _) => at,
        };
        let weak = Rc::downgrade(self);
        let delay = at.saturating_sub(now()).min(i32::MAX as u64) as i32;
        let timeout = Timeout::after(delay, move || {
            // Not inside the timer's own callback: handling it drops the timer.
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(tab) = weak.upgrade() {
                    tab.timer.borrow_mut().take();
                    tab.machine.borrow_mut().handle_timeout(now());
                    tab.drive();
                }
            });
        });
        *self.timer.borrow_mut() = timeout.map(|t| (at, t));
    }

    fn carry_out(self: &Rc<Self>, event: TabEvent) {
        match event {
            TabEvent::AskLock(ask) => self.ask_for_lock(ask),
            TabEvent::ReleaseLock => {
                self.lead.borrow_mut().take();
            }
            TabEvent::OpenStore { attempt } => {
                let tab = self.clone();
                wasm_bindgen_futures::spawn_local(async move { tab.open_store(attempt).await });
            }
            TabEvent::CloseStore => self.close_store(),
            TabEvent::Led => Leader::led(self),
            TabEvent::Subscribe(pattern) => {
                if let Some(shell) = self.shell() {
                    let _ = shell.input(|core, now| core.subscribe(pattern, now));
                }
            }
            TabEvent::Unsubscribe(pattern) => {
                if let Some(shell) = self.shell() {
                    let _ = shell.input(|core, now| core.unsubscribe(&pattern, now));
                }
            }
            TabEvent::Queue { origin, id, op } => Leader::queue(self, origin, id, op),
            TabEvent::Dismiss(id) => {
                if let Some(shell) = self.shell() {
                    let _ = shell.input(|core, now| core.dismiss_outcome(&id, now));
                }
            }
            TabEvent::SetOnline(online) => {
                self.paused.set(!online);
                if let Some(shell) = self.shell() {
                    shell.set_paused(!online);
                }
            }
            TabEvent::Welcome { to } => {
                let answer = self.leader.borrow().as_ref().map(|leader| {
                    let state = leader.shared_state(self.paused.get());
                    (state, leader.outcome_events())
                });
                if let Some((state, outcomes)) = answer {
                    self.machine.borrow_mut().welcome(to, state, outcomes);
                }
            }
            TabEvent::Views { to, req, pattern } => {
                let feeds = self
                    .leader
                    .borrow()
                    .as_ref()
                    .map(|leader| leader.views(&pattern));
                if let Some(feeds) = feeds {
                    self.machine.borrow_mut().views(to, req, feeds);
                }
            }
            TabEvent::Answer { handle, result } => {
                let reply = self.replies.borrow_mut().remove(&handle);
                if let Some(reply) = reply {
                    let _ = reply.send(result.map_err(|r| js_error(&r.code, r.message)));
                }
            }
            TabEvent::FeedChanged(change) => self.callbacks.feed_changed(&feed_change_js(&change)),
            TabEvent::Outcome(event) => self.callbacks.outcome(&outcome_js(&event)),
            TabEvent::StatusChanged => self.callbacks.status(&self.status()),
            TabEvent::Opened => self.settle_open(Ok(())),
            TabEvent::OpenFailed => {}
        }
    }

    /// Asks for the Web Lock; the machine hears the answer.
    fn ask_for_lock(self: &Rc<Self>, ask: Ask) {
        // The earlier request goes first (dropping it lets go of the lock).
        self.lead.borrow_mut().take();
        let granted = Rc::downgrade(self);
        let lost = Rc::downgrade(self);
        let request = LeadRequest::ask(
            &self.lock_name(),
            ask,
            move |leads| {
                if let Some(tab) = granted.upgrade() {
                    if leads {
                        tab.machine.borrow_mut().lock_granted(now());
                    } else {
                        tab.machine.borrow_mut().lock_taken(now());
                    }
                    tab.drive();
                }
            },
            move || {
                if let Some(tab) = lost.upgrade() {
                    web_sys::console::info_1(&"thoonk-sync: another tab leads now".into());
                    tab.machine.borrow_mut().lock_lost(now());
                    tab.drive();
                }
            },
        );
        match request {
            Ok(Some(request)) => *self.lead.borrow_mut() = Some(request),
            // No Web Locks in this browser: every client leads alone.
            Ok(None) => {
                self.machine.borrow_mut().lock_granted(now());
            }
            Err(err) => {
                web_sys::console::error_2(&"thoonk-sync: cannot ask for the lead".into(), &err)
            }
        }
        if ask == Ask::Steal {
            web_sys::console::warn_1(
                &"thoonk-sync: the leading tab does not answer; taking over".into(),
            );
        }
    }

    /// Opens the store for the lead; the machine hears how it went.
    async fn open_store(self: Rc<Self>, attempt: u64) {
        match Leader::start(&self).await {
            Ok(leader) => {
                let client_id = leader.shell.with_core(|core| core.client_id().to_owned());
                let leads = self
                    .machine
                    .borrow_mut()
                    .store_opened(attempt, client_id, now());
                if leads {
                    if let Some(old) = self.leader.borrow_mut().replace(leader) {
                        old.close();
                    }
                } else {
                    leader.close();
                }
            }
            Err(err) => {
                web_sys::console::error_2(&"thoonk-sync: cannot lead".into(), &err);
                self.settle_open(Err(err));
                self.machine.borrow_mut().store_failed(attempt, now());
            }
        }
        self.drive();
    }

    /// Stops leading: what the leader knew goes to the follower this tab becomes.
    fn close_store(self: &Rc<Self>) {
        let Some(leader) = self.leader.borrow_mut().take() else {
            return;
        };
        if self.role() == Role::Following {
            let views = leader.followed_views(&self.machine.borrow());
            let state = leader.shared_state(self.paused.get());
            let outcomes = leader.outcome_events();
            self.machine
                .borrow_mut()
                .stepped_aside(state, outcomes, views);
        }
        leader.close();
    }

    /// The shell was fenced (another tab claimed the store): follow.
    pub fn step_down(self: &Rc<Self>) {
        self.machine.borrow_mut().fenced(now());
        self.drive();
    }

    fn settle_open(&self, result: Result<(), JsValue>) {
        if let Some(ready) = self.ready.borrow_mut().take() {
            let _ = ready.send(result);
        }
    }

    /// The views this tab showed while it followed (a leader takes them over).
    pub fn take_follower_cache(&self) -> thoonk_sync_core::tabs::ViewCache {
        self.machine.borrow_mut().take_cache()
    }

    /// Tells the machine how a queued change ended.
    pub fn queued(
        self: &Rc<Self>,
        origin: thoonk_sync_core::tabs::Origin,
        id: ChangeId,
        result: Result<(), Refusal>,
    ) {
        self.machine.borrow_mut().queued(origin, id, result);
        self.drive();
    }

    /// Queues a change: durably in this tab's store when it leads, through
    /// the leader when it follows. Resolves with its id once it is durable.
    pub async fn change(self: &Rc<Self>, op: Operation) -> Result<ChangeId, JsValue> {
        loop {
            let route = self.machine.borrow_mut().change(op.clone());
            let shell = match route {
                Err(_) => return Err(stopped()),
                Ok(ChangeRoute::Forwarded(handle)) => {
                    let (reply, answer) = oneshot::channel();
                    self.replies.borrow_mut().insert(handle, reply);
                    self.drive();
                    return answer.await.map_err(|_| {
                        js_error("closed", "the client closed before the change was queued")
                    })?;
                }
                Ok(ChangeRoute::Direct) => match self.shell() {
                    Some(shell) => shell,
                    None => return Err(stopped()),
                },
            };
            let id = shell
                .input(|core, now| core.change(op.clone(), now))
                .map_err(core_error)?;
            let mark = shell.inputs();
            shell.settled().await;
            if shell.stored(mark) {
                return Ok(id);
            }
            if !shell.is_fenced() && shell.is_closed() {
                // Closed by the app, or the lock was taken from this tab
                // (whether the change was written is not known: it is not
                // sent again under another id).
                let message = match self.role() {
                    Role::Closed => "the client closed before the change was stored",
                    _ => "this tab stopped leading before the change was stored",
                };
                return Err(js_error("closed", message));
            }
            if !shell.is_fenced() {
                return Err(js_error(
                    "storage",
                    "the change could not be stored (see status().storageError)",
                ));
            }
            // Another tab took the lead before the change was stored: it
            // goes to that tab, under a new id (this one was never sent).
            if self.role() == Role::Leading {
                self.step_down();
            }
        }
    }

    /// Resolves with the outcome (as JSON) of change `id`.
    pub fn outcome(&self, id: ChangeId) -> oneshot::Receiver<Value> {
        let known = self.stored_outcomes().into_iter().find(|e| e["id"] == id.0);
        self.callbacks.await_outcome(id, known)
    }

    /// The stored outcome events (`{ id, outcome }`), as this role knows them.
    pub fn stored_outcomes(&self) -> Vec<Value> {
        if let Some(leader) = self.leader.borrow().as_ref() {
            return leader.outcomes();
        }
        self.machine.borrow().outcomes().map(outcome_js).collect()
    }

    /// The app follows `pattern` now.
    pub fn subscribe(self: &Rc<Self>, pattern: FeedPattern) -> Result<(), JsValue> {
        let result = self.machine.borrow_mut().subscribe(pattern);
        self.drive();
        result.map_err(|_| stopped())
    }

    /// No listener of the app follows `pattern` any more.
    pub fn unsubscribe(self: &Rc<Self>, pattern: FeedPattern) {
        self.machine.borrow_mut().unsubscribe(&pattern);
        self.drive();
    }

    /// Works offline (`true`) or reconnects.
    pub fn set_paused(self: &Rc<Self>, paused: bool) {
        self.paused.set(paused);
        if let Some(shell) = self.shell() {
            shell.set_paused(paused);
        }
        self.machine.borrow_mut().set_online(!paused);
        self.drive();
    }

    /// The app's view of `feed` as a JS array (`items()`).
    pub fn items_js(&self, feed: &FeedName) -> JsValue {
        if let Some(leader) = self.leader.borrow().as_ref() {
            return leader.items_js(feed);
        }
        let machine = self.machine.borrow();
        let items = machine.items(feed).unwrap_or_default();
        to_js(&items.iter().map(ItemJs::from).collect::<Vec<_>>())
    }

    /// The app's view of `feed` as JSON items.
    pub fn items(&self, feed: &FeedName) -> Value {
        if let Some(leader) = self.leader.borrow().as_ref() {
            return leader.items(feed);
        }
        let machine = self.machine.borrow();
        let items = machine.items(feed).unwrap_or_default();
        serde_json::to_value(items.iter().map(ItemJs::from).collect::<Vec<_>>())
            .expect("API values always serialize")
    }

    /// The mirrored revision of `feed`.
    pub fn rev(&self, feed: &FeedName) -> Option<u64> {
        if let Some(shell) = self.shell() {
            return shell.with_core(|core| core.position(feed)).map(|h| h.rev);
        }
        let machine = self.machine.borrow();
        machine.shared_state()?.status.rest.get("feeds")?[feed.as_str()]["rev"].as_u64()
    }

    /// The status as `status()` shows it.
    pub fn status(&self) -> Value {
        if let Some(leader) = self.leader.borrow().as_ref() {
            return leader.status(self.paused.get());
        }
        match self.machine.borrow().follower_status() {
            Some(status) => {
                let mut status = serde_json::to_value(status).expect("a status serializes");
                status["tab"] = "follower".into();
                // The wipe report as the origin's marker has it now (this
                // tab may have dismissed it since the leader's last state).
                status["storageWiped"] =
                    serde_json::to_value(crate::leader::storage_wiped(&self.options.db_name))
                        .expect("a report serializes");
                for (field, default) in [
                    ("feeds", json!({})),
                    ("server", json!("available")),
                    ("storageError", Value::Null),
                    ("storageWiped", Value::Null),
                    ("offlineReason", Value::Null),
                ] {
                    if status.get(field).is_none() {
                        status[field] = default;
                    }
                }
                status
            }
            None => {
                json!({ "connection": "stopped", "offlineReason": null, "server": "available", "pending": 0, "feeds": {}, "storageError": null, "storageWiped": null, "tab": "closed" })
            }
        }
    }

    /// The pending changes as `outbox()` shows them.
    pub fn outbox(&self) -> Value {
        if let Some(leader) = self.leader.borrow().as_ref() {
            return leader.outbox();
        }
        let machine = self.machine.borrow();
        let outbox = machine
            .shared_state()
            .map(|s| s.outbox.clone())
            .unwrap_or_default();
        serde_json::to_value(outbox).expect("an outbox serializes")
    }

    /// Drops the report of a wiped database (`status().storageWiped`) for
    /// good, in every tab, and tells this tab's status listeners.
    pub fn dismiss_storage_wiped(&self) {
        crate::leader::dismiss_storage_wiped(&self.options.db_name);
        self.callbacks.status(&self.status());
    }

    /// Forgets a stored outcome.
    pub fn dismiss_outcome(self: &Rc<Self>, id: ChangeId) -> Result<(), JsValue> {
        if let Some(shell) = self.shell() {
            return shell
                .input(|core, now| core.dismiss_outcome(&id, now))
                .map_err(core_error);
        }
        self.machine.borrow_mut().dismiss(&id);
        self.drive();
        Ok(())
    }

    /// Stops: a leader hands the lead to the next tab.
    pub fn close(self: &Rc<Self>) {
        self.machine.borrow_mut().close();
        self.drive();
        self.timer.borrow_mut().take();
        self.lead.borrow_mut().take();
        self.channel.borrow_mut().take();
        self.settle_open(Err(js_error("closed", "the client closed while opening")));
    }
}
