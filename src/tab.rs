//! One client in one tab: the app's callbacks, and the role the tab plays for
//! its database (leader or follower, see [`crate::tabs`]), with the moves
//! between them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::Either;
use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedName, FeedPattern, Operation};
use wasm_bindgen::prelude::*;

use crate::client::{core_error, js_error, to_js};
use crate::follower::Follower;
use crate::leader::Leader;
use crate::shell::Shell;
use crate::tabs::{Ask, Channel, LeadRequest, TabMessage};

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
    outcome_waiters: RefCell<HashMap<ChangeId, Vec<oneshot::Sender<Value>>>>,
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

    /// The patterns the app follows.
    pub fn patterns(&self) -> Vec<FeedPattern> {
        let mut patterns: Vec<FeedPattern> = self
            .listeners
            .borrow()
            .iter()
            .map(|l| l.pattern.clone())
            .collect();
        patterns.sort();
        patterns.dedup();
        patterns
    }

    /// True when some listener follows `feed`.
    pub fn follows(&self, feed: &FeedName) -> bool {
        self.listeners
            .borrow()
            .iter()
            .any(|l| l.pattern.matches(feed))
    }

    /// Hands a `FeedChange` to the listeners of its feed.
    pub fn feed_changed(&self, change: &Value) {
        let Some(feed) = change
            .get("feed")
            .and_then(Value::as_str)
            .and_then(|f| FeedName::new(f).ok())
        else {
            return;
        };
        let callbacks: Vec<js_sys::Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|l| l.pattern.matches(&feed))
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
}

/// The role this tab plays for its database.
pub enum Role {
    /// Waiting to learn whether it leads.
    Starting,
    /// Holds the database and the connection.
    Leader(Box<Leader>),
    /// Goes through the leader.
    Follower(Box<Follower>),
    /// Closed by the app.
    Closed,
}

/// How long `Client.open` in a following tab waits for the leader's welcome.
const WELCOME_WAIT_MS: i32 = 3000;

/// What a tab is at one moment (read out of [`Role`] so no borrow is held).
enum Acting {
    Leads(Rc<Shell>),
    Follows,
    Stopped,
}

fn stopped() -> JsValue {
    js_error("closed", "the client is closed")
}

/// This tab's client.
pub struct Tab {
    /// Tells this client's messages apart from other tabs' (and other
    /// clients' in this tab).
    pub id: String,
    /// What the app gave `Client.open`.
    pub options: TabOptions,
    /// What the app registered.
    pub callbacks: Callbacks,
    /// Leader or follower.
    pub role: RefCell<Role>,
    /// The app asked to work offline.
    pub paused: Cell<bool>,
    channel: RefCell<Option<Channel>>,
    lead: RefCell<Option<LeadRequest>>,
    /// Settles `Client.open`: once this tab leads, or follows a leader that answered.
    ready: RefCell<Option<oneshot::Sender<Result<(), JsValue>>>>,
}

impl Tab {
    /// Starts a client: leads when no tab does, else follows.
    pub async fn open(options: TabOptions) -> Result<Rc<Self>, JsValue> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let tab = Rc::new(Self {
            id: format!("t{:012x}", crate::client::random_seed() >> 16),
            options,
            callbacks: Callbacks::default(),
            role: RefCell::new(Role::Starting),
            paused: Cell::new(false),
            channel: RefCell::default(),
            lead: RefCell::default(),
            ready: RefCell::new(Some(ready_tx)),
        });
        let weak = Rc::downgrade(&tab);
        let channel = Channel::open(&tab.lock_name(), move |message| {
            if let Some(tab) = weak.upgrade() {
                tab.hear(message);
            }
        })?;
        *tab.channel.borrow_mut() = Some(channel);
        tab.ask_to_lead(Ask::IfFree)?;
        // A leader waits for its store; a follower waits a little for the
        // leader's welcome (a frozen leader never sends one).
        let timeout = Box::pin(crate::tabs::sleep(WELCOME_WAIT_MS));
        let ready = match futures::future::select(ready_rx, timeout).await {
            Either::Left((ready, _)) => Some(ready),
            Either::Right(((), ready_rx)) if tab.is_starting() => Some(ready_rx.await),
            Either::Right(_) => None,
        };
        if let Some(Ok(Err(err))) = ready {
            return Err(err);
        }
        Ok(tab)
    }

    fn is_starting(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Starting)
    }

    /// What this tab is now: the leader's shell, or how it goes through another tab.
    fn acting(&self) -> Acting {
        match &*self.role.borrow() {
            Role::Leader(leader) => Acting::Leads(leader.shell.clone()),
            Role::Follower(_) => Acting::Follows,
            Role::Starting | Role::Closed => Acting::Stopped,
        }
    }

    fn lock_name(&self) -> String {
        format!("thoonk-sync:{}", self.options.db_name)
    }

    /// Asks for the lead; becoming leader or follower follows from the answer.
    pub fn ask_to_lead(self: &Rc<Self>, ask: Ask) -> Result<(), JsValue> {
        let granted = Rc::downgrade(self);
        let lost = Rc::downgrade(self);
        let request = LeadRequest::ask(
            &self.lock_name(),
            ask,
            move |leads| {
                if let Some(tab) = granted.upgrade() {
                    if leads {
                        wasm_bindgen_futures::spawn_local(async move { tab.lead().await });
                    } else {
                        tab.follow();
                    }
                }
            },
            move || {
                if let Some(tab) = lost.upgrade() {
                    tab.step_down();
                }
            },
        )?;
        match request {
            Some(request) => *self.lead.borrow_mut() = Some(request),
            // No Web Locks in this browser: every client leads alone.
            None => {
                let tab = self.clone();
                wasm_bindgen_futures::spawn_local(async move { tab.lead().await });
            }
        }
        Ok(())
    }

    /// Posts to the other tabs.
    pub fn post(&self, message: &TabMessage) {
        if let Some(channel) = self.channel.borrow().as_ref() {
            channel.post(message);
        }
    }

    fn settle_open(&self, result: Result<(), JsValue>) {
        if let Some(ready) = self.ready.borrow_mut().take() {
            let _ = ready.send(result);
        }
    }

    /// Marks `Client.open` done (a follower heard the leader's welcome).
    pub fn opened(&self) {
        self.settle_open(Ok(()));
    }

    /// This tab got the lead: open the store and run the core, then take
    /// over what this tab forwarded and did not hear back about.
    async fn lead(self: Rc<Self>) {
        if matches!(&*self.role.borrow(), Role::Closed | Role::Leader(_)) {
            return;
        }
        match Leader::start(&self).await {
            Ok(leader) => {
                let lost = self.lead.borrow().as_ref().is_some_and(|l| !l.held());
                if lost || matches!(&*self.role.borrow(), Role::Closed) {
                    // Closed, or another tab took the lead while the store opened.
                    leader.close();
                    if lost {
                        self.follow();
                    }
                    return;
                }
                let previous = std::mem::replace(&mut *self.role.borrow_mut(), Role::Starting);
                let follower = match previous {
                    Role::Follower(follower) => Some(follower),
                    _ => None,
                };
                *self.role.borrow_mut() = Role::Leader(Box::new(leader));
                Leader::took_over(&self, follower).await;
                self.post(&TabMessage::Leader {
                    tab: self.id.clone(),
                });
                self.settle_open(Ok(()));
            }
            Err(err) => {
                web_sys::console::error_2(&"thoonk-sync: cannot lead".into(), &err);
                self.lead.borrow_mut().take();
                self.settle_open(Err(err));
            }
        }
    }

    /// This tab follows: ask to lead later and join the current leader.
    fn follow(self: &Rc<Self>) {
        let previous = std::mem::replace(&mut *self.role.borrow_mut(), Role::Starting);
        let follower = match previous {
            Role::Leader(leader) => leader.close_into_follower(self),
            Role::Starting => {
                Follower::new(self, None, None, Default::default(), Default::default())
            }
            kept @ (Role::Follower(_) | Role::Closed) => {
                *self.role.borrow_mut() = kept;
                return;
            }
        };
        *self.role.borrow_mut() = Role::Follower(Box::new(follower));
        if let Err(err) = self.ask_to_lead(Ask::Wait) {
            web_sys::console::error_2(&"thoonk-sync: cannot queue for the lead".into(), &err);
        }
        Follower::join(self);
    }

    /// The lead was taken from this tab (or its store was fenced): follow.
    pub fn step_down(self: &Rc<Self>) {
        if matches!(&*self.role.borrow(), Role::Leader(_)) {
            web_sys::console::info_1(&"thoonk-sync: another tab leads now".into());
            self.lead.borrow_mut().take();
            self.follow();
        }
    }

    /// A leader that stopped answering: take the lead from it.
    pub fn take_over(self: &Rc<Self>) {
        web_sys::console::warn_1(
            &"thoonk-sync: the leading tab does not answer; taking over".into(),
        );
        if let Err(err) = self.ask_to_lead(Ask::Steal) {
            web_sys::console::error_2(&"thoonk-sync: cannot take the lead".into(), &err);
        }
    }

    fn hear(self: &Rc<Self>, message: TabMessage) {
        let leads = match &*self.role.borrow() {
            Role::Leader(_) => true,
            Role::Follower(_) => false,
            Role::Starting | Role::Closed => return,
        };
        if leads {
            if !message.is_from_leader() {
                Leader::serve(self, message);
            }
        } else if message.is_from_leader() {
            Follower::hear(self, message);
        }
    }

    /// Queues a change: durably in this tab's store when it leads, through
    /// the leader when it follows. Resolves with its id once it is durable.
    pub async fn change(self: &Rc<Self>, op: Operation) -> Result<ChangeId, JsValue> {
        loop {
            let shell = match self.acting() {
                Acting::Leads(shell) => shell,
                Acting::Follows => {
                    let reply = Follower::forward(self, op);
                    return reply.await.map_err(|_| {
                        js_error("closed", "the client closed before the change was queued")
                    })?;
                }
                Acting::Stopped => return Err(stopped()),
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
                return Err(js_error(
                    "closed",
                    "the client closed before the change was stored",
                ));
            }
            if !shell.is_fenced() {
                return Err(js_error(
                    "storage",
                    "the change could not be stored (see status().storageError)",
                ));
            }
            // Another tab took the lead before the change was stored: it
            // goes to that tab, under a new id (this one was never sent).
        }
    }

    /// Resolves with the outcome (as JSON) of change `id`.
    pub fn outcome(&self, id: ChangeId) -> oneshot::Receiver<Value> {
        let known = self.stored_outcomes().into_iter().find(|e| e["id"] == id.0);
        self.callbacks.await_outcome(id, known)
    }

    /// The stored outcome events (`{ id, outcome }`), as this role knows them.
    pub fn stored_outcomes(&self) -> Vec<Value> {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader.outcomes(),
            Role::Follower(follower) => follower.outcomes.values().cloned().collect(),
            Role::Starting | Role::Closed => vec![],
        }
    }

    /// The app follows `pattern` now.
    pub fn subscribe(self: &Rc<Self>, pattern: FeedPattern) -> Result<(), JsValue> {
        match self.acting() {
            Acting::Leads(shell) => shell
                .input(|core, now| core.subscribe(pattern, now))
                .map_err(core_error),
            Acting::Follows => {
                Follower::subscribe(self, pattern);
                Ok(())
            }
            Acting::Stopped => Err(stopped()),
        }
    }

    /// No listener of the app follows `pattern` any more.
    pub fn unsubscribe(self: &Rc<Self>, pattern: FeedPattern) {
        match self.acting() {
            Acting::Leads(_) => {
                if let Role::Leader(leader) = &*self.role.borrow() {
                    leader.unsubscribe_if_unused(&self.callbacks, &pattern);
                }
            }
            Acting::Follows => Follower::unsubscribe(self, pattern),
            Acting::Stopped => {}
        }
    }

    /// Works offline (`true`) or reconnects.
    pub fn set_paused(&self, paused: bool) {
        self.paused.set(paused);
        match self.acting() {
            Acting::Leads(shell) => shell.set_paused(paused),
            Acting::Follows => self.post(&TabMessage::SetOnline { online: !paused }),
            Acting::Stopped => {}
        }
    }

    /// The app's view of `feed` (JSON items).
    pub fn items(&self, feed: &FeedName) -> Value {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader.items(feed),
            Role::Follower(follower) => follower.items(feed),
            Role::Starting | Role::Closed => Value::Array(vec![]),
        }
    }

    /// The mirrored revision of `feed`.
    pub fn rev(&self, feed: &FeedName) -> Option<u64> {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader
                .shell
                .with_core(|core| core.position(feed))
                .map(|h| h.rev),
            Role::Follower(follower) => follower.rev(feed),
            Role::Starting | Role::Closed => None,
        }
    }

    /// The status as `status()` shows it.
    pub fn status(&self) -> Value {
        let leader_status = match &*self.role.borrow() {
            Role::Leader(leader) => Some(leader.status()),
            _ => None,
        };
        leader_status
            .or_else(|| Follower::status(self))
            .unwrap_or_else(|| serde_json::json!({ "connection": "stopped", "server": "available", "pending": 0, "feeds": {}, "storageError": null, "storageWiped": null, "tab": "closed" }))
    }

    /// The pending changes as `outbox()` shows them.
    pub fn outbox(&self) -> Value {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader.outbox(),
            Role::Follower(follower) => follower.outbox(),
            Role::Starting | Role::Closed => Value::Array(vec![]),
        }
    }

    /// Forgets a stored outcome.
    pub fn dismiss_outcome(&self, id: ChangeId) -> Result<(), JsValue> {
        match &mut *self.role.borrow_mut() {
            Role::Leader(leader) => leader
                .shell
                .input(|core, now| core.dismiss_outcome(&id, now))
                .map_err(core_error),
            Role::Follower(follower) => {
                follower.outcomes.remove(&id);
                self.post(&TabMessage::Dismiss { id });
                Ok(())
            }
            Role::Starting | Role::Closed => Ok(()),
        }
    }

    /// Stops: a leader hands the lead to the next tab.
    pub fn close(&self) {
        match std::mem::replace(&mut *self.role.borrow_mut(), Role::Closed) {
            Role::Leader(leader) => leader.close(),
            Role::Follower(_) => self.post(&TabMessage::Leave {
                tab: self.id.clone(),
            }),
            Role::Starting | Role::Closed => {}
        }
        self.lead.borrow_mut().take();
        self.channel.borrow_mut().take();
        self.settle_open(Err(js_error("closed", "the client closed while opening")));
    }
}
