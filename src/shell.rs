//! Drives the sans-IO core in the browser: applies its store batches to
//! IndexedDB, moves frames over the WebSocket, arms its timer, and hands its
//! notifications to the app.
//!
//! Inputs (a frame, a timer, a local change) go into the core at once; a
//! single "pump" task then carries out the tasks of the durability machine
//! ([`Durable`], which decides when a change is durable and how to recover
//! from a failed or lost store): the store batch first (one transaction),
//! then the frames, so a change is never on the wire before it is durable;
//! a round that only writes the mirror (a cache) is shown first and written
//! after, as the machine hands it out. Frames that arrive while a batch
//! commits are given to the core at once and go into the next round.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use futures::channel::oneshot;
use thoonk_protocol::ServerMessage;
use thoonk_sync_core::{
    Config, CoreError, Durable, Effects, Notification, StoreBatch, StoreFailure, SyncCore, Task,
};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;

use crate::idb::{IdbStore, StoreError};
use crate::socket::{Connection, SocketEvent};

/// Milliseconds since 1970 from the browser's clock: the core's `now`.
pub fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// What the shell tells the app (implemented by the JS API layer).
pub trait AppHooks {
    /// A notification from the core.
    fn notify(&self, notification: &Notification);
    /// The store failed; the core was reopened from what IndexedDB holds.
    fn storage_failed(&self, message: &str);
    /// The pump finished a round (counts such as pending changes may have changed).
    fn settled(&self);
    /// Another tab took the lead: the shell stopped, its core holds what the
    /// store held then, and this tab must follow the new leader.
    fn fenced(&self);
}

struct Timer {
    handle: i32,
    _callback: Closure<dyn FnMut()>,
}

/// The running client: the core (inside its durability machine) and
/// everything around it.
pub struct Shell {
    durable: RefCell<Durable>,
    store: IdbStore,
    url: String,
    connection: RefCell<Option<Connection>>,
    generation: Cell<u64>,
    pumping: Cell<bool>,
    timer: RefCell<Option<Timer>>,
    idle_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    hooks: RefCell<Option<Rc<dyn AppHooks>>>,
    closed: Cell<bool>,
    /// Set by the app ("work offline") or the browser's `offline` event: no socket is opened.
    paused: Cell<bool>,
    /// The store held no client state when the shell started.
    started_fresh: bool,
    /// Stopped because another tab took the lead.
    fenced: Cell<bool>,
}

impl Shell {
    /// Opens the core over what `store` holds and starts it.
    pub async fn start(config: Config, store: IdbStore, url: String) -> Result<Rc<Self>, String> {
        let state = store.load().await.map_err(|err| err.to_string())?;
        let started_fresh = state.meta.is_none();
        let durable = Durable::open(config, state, now()).map_err(|err| err.to_string())?;
        Ok(Rc::new(Self {
            durable: RefCell::new(durable),
            store,
            url,
            connection: RefCell::default(),
            generation: Cell::new(0),
            pumping: Cell::new(false),
            timer: RefCell::default(),
            idle_waiters: RefCell::default(),
            hooks: RefCell::default(),
            closed: Cell::new(false),
            paused: Cell::new(false),
            started_fresh,
            fenced: Cell::new(false),
        }))
    }

    /// Sets who hears notifications, then carries out the core's first effects.
    pub fn run(self: &Rc<Self>, hooks: Rc<dyn AppHooks>) {
        *self.hooks.borrow_mut() = Some(hooks);
        self.schedule_pump();
    }

    /// True when the store held no client state at start (a new or wiped database).
    pub fn started_fresh(&self) -> bool {
        self.started_fresh
    }

    /// Reads the core.
    pub fn with_core<R>(&self, read: impl FnOnce(&SyncCore) -> R) -> R {
        read(self.durable.borrow().core())
    }

    /// Gives the core an input, then lets the pump carry out its effects.
    pub fn input<R>(
        self: &Rc<Self>,
        apply: impl FnOnce(&mut SyncCore, u64) -> Result<R, CoreError>,
    ) -> Result<R, CoreError> {
        let result = self.durable.borrow_mut().input(now(), apply);
        self.schedule_pump();
        result
    }

    /// Resolves once every effect produced so far was carried out (in
    /// particular, once a new change is durably in the outbox).
    pub async fn settled(self: &Rc<Self>) {
        if !self.pumping.get() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.borrow_mut().push(tx);
        let _ = rx.await;
    }

    /// How many inputs the core was given so far: a mark for [`Shell::stored`].
    pub fn inputs(&self) -> u64 {
        self.durable.borrow().mark()
    }

    /// True when the store writes of input number `mark` (and every input
    /// before it) were committed: a change made by that input is durable
    /// (whatever happened to it since: confirmed, dismissed, …).
    pub fn stored(&self, mark: u64) -> bool {
        self.durable.borrow().stored(mark) == Some(true)
    }

    /// True once the shell stopped (closed by the app, or fenced).
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// True once the shell stopped because another tab took the lead.
    pub fn is_fenced(&self) -> bool {
        self.fenced.get()
    }

    /// Works offline (`true`): closes the socket and opens none until called
    /// with `false`, which reconnects at once. Changes keep queueing meanwhile.
    pub fn set_paused(self: &Rc<Self>, paused: bool) {
        if self.paused.replace(paused) == paused || self.closed.get() {
            return;
        }
        if paused {
            self.drop_connection();
            let _ = self.input(|core, now| core.disconnected(now));
        } else {
            self.reconnect_now();
        }
    }

    /// Reconnects at once when offline and not paused (the browser came back
    /// online or the page became visible), instead of waiting for the backoff
    /// (but never before the wait after a store failure is over).
    pub fn reconnect_now(self: &Rc<Self>) {
        if self.paused.get()
            || self.closed.get()
            || self.connection.borrow().is_some()
            || self.durable.borrow().connect_held(now())
        {
            return;
        }
        self.connect();
    }

    /// The browser went offline: drop the socket now rather than wait for it
    /// to time out; the `online` event (or the backoff) reconnects.
    pub fn connection_lost(self: &Rc<Self>) {
        if self.closed.get() || self.connection.borrow().is_none() {
            return;
        }
        self.drop_connection();
        let _ = self.input(|core, now| core.disconnected(now));
    }

    /// Stops: closes the socket, the timer and the database.
    pub fn close(&self) {
        self.closed.set(true);
        self.generation.set(self.generation.get() + 1);
        self.connection.borrow_mut().take();
        self.cancel_timer();
        self.store.close();
    }

    fn schedule_pump(self: &Rc<Self>) {
        if self.pumping.replace(true) || self.closed.get() {
            return;
        }
        let shell = self.clone();
        wasm_bindgen_futures::spawn_local(async move { shell.pump().await });
    }

    /// Carries out the durability machine's tasks until it has none.
    async fn pump(self: Rc<Self>) {
        loop {
            if self.closed.get() {
                break;
            }
            let task = self.durable.borrow_mut().poll(now());
            let Some(task) = task else {
                break;
            };
            match task {
                Task::Write(batch) => {
                    let result = self.write(&batch).await;
                    if result == Err(StoreFailure::Fenced) {
                        self.fenced.set(true);
                        self.drop_connection();
                    }
                    self.durable.borrow_mut().write_done(result);
                }
                Task::Reload => {
                    let state = self.store.load().await.map_err(|err| err.to_string());
                    self.durable.borrow_mut().reloaded(state, now());
                }
                Task::Reopen => {
                    let reopened = self.store.reopen().await.map_err(|err| err.to_string());
                    self.durable.borrow_mut().reopened(reopened);
                }
                Task::Report(message) => {
                    if let Some(hooks) = self.hooks() {
                        hooks.storage_failed(&message);
                    }
                }
                Task::Effects(effects) => self.carry_out(effects),
            }
        }
        self.pumping.set(false);
        for waiter in self.idle_waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
        if self.fenced.get() && !self.closed.get() {
            // Another tab leads now: the core holds what this tab made
            // durable (what followers are told from now on); stop.
            self.close();
            if let Some(hooks) = self.hooks() {
                hooks.fenced();
            }
            return;
        }
        if !self.closed.get() {
            self.arm_timer();
            if let Some(hooks) = self.hooks() {
                hooks.settled();
            }
        }
    }

    fn hooks(&self) -> Option<Rc<dyn AppHooks>> {
        self.hooks.borrow().clone()
    }

    /// Applies one batch, telling its failure as the durability machine
    /// needs it.
    async fn write(&self, batch: &StoreBatch) -> Result<(), StoreFailure> {
        match self.store.apply(batch).await {
            Ok(()) => Ok(()),
            Err(StoreError::Fenced) => Err(StoreFailure::Fenced),
            Err(StoreError::Closed(reason)) => Err(StoreFailure::Lost(reason)),
            Err(StoreError::QuotaExceeded(reason)) if self.make_room(batch).await => {
                // The batch's own changes are stored; the cached feeds
                // made room for them and load again from the server.
                Err(StoreFailure::Evicted(reason))
            }
            Err(err) => Err(StoreFailure::Failed(err.to_string())),
        }
    }

    /// Carries out the effects of a round whose store batch committed.
    fn carry_out(self: &Rc<Self>, effects: Effects) {
        if effects.close {
            self.drop_connection();
            let _ = self
                .durable
                .borrow_mut()
                .input(now(), |core, now| core.disconnected(now));
        }
        if let Some(connection) = self.connection.borrow().as_ref() {
            for message in &effects.send {
                connection.send(
                    serde_json::to_string(message).expect("client messages always serialize"),
                );
            }
        }
        if effects.connect {
            self.connect();
        }
        if let Some(hooks) = self.hooks() {
            for notification in &effects.notify {
                hooks.notify(notification);
            }
        }
    }

    /// Storage is full: drops every cached feed, then writes what of `batch`
    /// the server cannot give back (outbox, outcomes, meta, subscriptions).
    /// False when there is nothing of that kind, or it still does not fit.
    async fn make_room(&self, batch: &StoreBatch) -> bool {
        let keep = batch.without_cache();
        if keep.is_empty() {
            return false;
        }
        web_sys::console::warn_1(
            &"thoonk-sync: storage is full; dropping the cached feeds to keep the unsent changes"
                .into(),
        );
        if self.store.evict_feeds().await.is_err() {
            return false;
        }
        // The browser may count the freed space a moment after the delete
        // commits: a few tries, a little apart.
        for attempt in 0..5 {
            match self.store.apply(&keep).await {
                Ok(()) => return true,
                Err(StoreError::QuotaExceeded(_)) if attempt < 4 => {
                    crate::tab_transport::sleep(200).await;
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn drop_connection(&self) {
        self.generation.set(self.generation.get() + 1);
        self.connection.borrow_mut().take();
    }

    fn connect(self: &Rc<Self>) {
        self.drop_connection();
        if self.paused.get() {
            let _ = self.input(|core, now| core.disconnected(now));
            return;
        }
        let generation = self.generation.get();
        let weak: Weak<Self> = Rc::downgrade(self);
        let on_event: Rc<dyn Fn(SocketEvent)> = Rc::new(move |event| {
            if let Some(shell) = weak.upgrade() {
                if shell.generation.get() == generation {
                    shell.on_socket(event);
                }
            }
        });
        match Connection::open(&self.url, on_event) {
            Ok(connection) => *self.connection.borrow_mut() = Some(connection),
            Err(err) => {
                web_sys::console::warn_1(
                    &format!("thoonk-sync: cannot open {}: {err}", self.url).into(),
                );
                let _ = self.input(|core, now| core.disconnected(now));
            }
        }
    }

    /// The timer fired: the durability machine (and through it the core) hears it.
    fn timeout(self: &Rc<Self>) -> Result<(), CoreError> {
        let result = self.durable.borrow_mut().handle_timeout(now());
        self.schedule_pump();
        result
    }

    fn on_socket(self: &Rc<Self>, event: SocketEvent) {
        let result = match event {
            SocketEvent::Opened => self.input(|core, now| core.connected(now)),
            SocketEvent::Closed => {
                self.connection.borrow_mut().take();
                self.input(|core, now| core.disconnected(now))
            }
            SocketEvent::Frame(text) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(message) => self.input(|core, now| core.handle_server(message, now)),
                Err(err) => {
                    web_sys::console::warn_1(
                        &format!("thoonk-sync: ignoring an unreadable frame: {err}").into(),
                    );
                    Ok(())
                }
            },
        };
        if let Err(err) = result {
            web_sys::console::warn_1(&format!("thoonk-sync: {err}").into());
        }
    }

    fn cancel_timer(&self) {
        if let Some(timer) = self.timer.borrow_mut().take() {
            if let Some(window) = web_sys::window() {
                window.clear_timeout_with_handle(timer.handle);
            }
        }
    }

    fn arm_timer(self: &Rc<Self>) {
        self.cancel_timer();
        let Some(deadline) = self.durable.borrow().poll_timeout() else {
            return;
        };
        let Some(window) = web_sys::window() else {
            return;
        };
        let delay = deadline.saturating_sub(now()).min(i32::MAX as u64) as i32;
        let weak = Rc::downgrade(self);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(shell) = weak.upgrade() {
                if !shell.closed.get() {
                    let _ = shell.timeout();
                }
            }
        });
        if let Ok(handle) = window.set_timeout_with_callback_and_timeout_and_arguments_0(
            callback.as_ref().unchecked_ref(),
            delay,
        ) {
            *self.timer.borrow_mut() = Some(Timer {
                handle,
                _callback: callback,
            });
        }
    }
}
