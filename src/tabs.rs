//! Several tabs, one connection: who leads (Web Locks) and what tabs say to
//! each other (BroadcastChannel).
//!
//! Every client on a database asks for the Web Lock named after it. The tab
//! that holds it leads: it alone opens IndexedDB for writing, runs the sync
//! core and holds the WebSocket. The others follow: they keep a copy of what
//! their app shows, forward their changes to the leader under ids they chose
//! (so that a change sent twice is queued once), and wait in the lock's queue.
//! When the leader closes, the browser hands the lock to the next tab in the
//! queue; when it stops answering (frozen), a follower takes the lock from it
//! (`steal`), and the store's fencing token keeps the old leader from writing.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedPattern, Operation};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// How often a follower checks that the leader answers.
pub const PING_INTERVAL_MS: i32 = 1000;
/// Unanswered pings after which a follower takes the lead from a leader that
/// holds the lock but no longer answers (a frozen or hung tab).
pub const MISSED_PINGS_BEFORE_TAKEOVER: u32 = 8;

/// A message between the tabs of one database.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum TabMessage {
    // ---- follower → leader ----------------------------------------------
    /// A follower asks for the shared state; answered by `Welcome`.
    Join {
        /// The asking tab.
        tab: String,
    },
    /// A follower closed.
    Leave {
        /// The tab that closed.
        tab: String,
    },
    /// A follower's app follows `pattern`; answered by `Views`.
    Subscribe {
        /// The asking tab.
        tab: String,
        /// Matches the answer to the question.
        req: u64,
        /// The feed or pattern.
        pattern: FeedPattern,
    },
    /// A follower's app stopped following `pattern`.
    Unsubscribe {
        /// The tab.
        tab: String,
        /// The feed or pattern.
        pattern: FeedPattern,
    },
    /// A change made in a follower, under the id it chose; answered by
    /// `Queued` once it is durable in the outbox, or `Refused`.
    Change {
        /// The tab that made it.
        tab: String,
        /// Its change id (`<client_id>:<tab>-<n>`).
        id: ChangeId,
        /// What to do.
        op: Operation,
    },
    /// A follower's app has shown an outcome.
    Dismiss {
        /// The change whose outcome to forget.
        id: ChangeId,
    },
    /// A follower's app asked to work offline (`false`) or online again.
    SetOnline {
        /// Whether to connect.
        online: bool,
    },
    /// A follower checks that the leader answers; answered by `Pong`.
    Ping {
        /// The asking tab.
        tab: String,
    },
    // ---- leader → followers ---------------------------------------------
    /// A tab took the lead: followers join it and send again what it did
    /// not answer.
    Leader {
        /// The new leader.
        tab: String,
    },
    /// The shared state, for a follower that joined.
    Welcome {
        /// The joining tab.
        to: String,
        /// The database's client id (the prefix of every change id).
        client_id: String,
        /// Status and outbox, as `State` carries them.
        state: Value,
        /// Stored outcomes, as `Outcome` carries them.
        outcomes: Vec<Value>,
    },
    /// The views of the feeds a follower's new pattern matches.
    Views {
        /// The asking tab.
        to: String,
        /// The `req` of its `Subscribe`.
        req: u64,
        /// One `FeedChange` per matching feed, listing every item and the order.
        feeds: Vec<Value>,
    },
    /// A follower's change is durable in the outbox.
    Queued {
        /// The tab that made it.
        to: String,
        /// Its id.
        id: ChangeId,
    },
    /// A follower's change was refused before it was queued.
    Refused {
        /// The tab that made it.
        to: String,
        /// Its id.
        id: ChangeId,
        /// The error code (as thrown to the app).
        code: String,
        /// What went wrong.
        message: String,
    },
    /// A feed's view changed: a `FeedChange` as the app's callbacks get it.
    Items {
        /// The change.
        change: Value,
    },
    /// A change ended: `{ id, outcome }` as `onOutcome` gets it.
    Outcome {
        /// The event.
        event: Value,
    },
    /// The status or the outbox changed: `{ status, outbox }`.
    State {
        /// The new state.
        state: Value,
    },
    /// The leader answers a `Ping`.
    Pong {
        /// The tab that pinged.
        to: String,
    },
}

impl TabMessage {
    /// True for messages only a leader sends.
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            Self::Leader { .. }
                | Self::Welcome { .. }
                | Self::Views { .. }
                | Self::Queued { .. }
                | Self::Refused { .. }
                | Self::Items { .. }
                | Self::Outcome { .. }
                | Self::State { .. }
                | Self::Pong { .. }
        )
    }
}

/// The BroadcastChannel of one database.
pub struct Channel {
    channel: web_sys::BroadcastChannel,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
}

impl Channel {
    /// Opens the channel `name`; `on_message` hears what other tabs (and
    /// other clients of this tab) post on it.
    pub fn open(name: &str, on_message: impl Fn(TabMessage) + 'static) -> Result<Self, JsValue> {
        let channel = web_sys::BroadcastChannel::new(name)?;
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                let Some(text) = event.data().as_string() else {
                    return;
                };
                match serde_json::from_str::<TabMessage>(&text) {
                    Ok(message) => on_message(message),
                    Err(err) => web_sys::console::warn_1(
                        &format!("thoonk-sync: ignoring a tab message: {err}").into(),
                    ),
                }
            },
        );
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Ok(Self {
            channel,
            _on_message: on_message,
        })
    }

    /// Posts `message` to every other listener of the channel.
    pub fn post(&self, message: &TabMessage) {
        let text = serde_json::to_string(message).expect("tab messages always serialize");
        if let Err(err) = self.channel.post_message(&text.into()) {
            web_sys::console::warn_2(&"thoonk-sync: cannot post to other tabs".into(), &err);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
    }
}

/// How to ask for the lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Only if no tab leads now.
    IfFree,
    /// Queue behind the current leader.
    Wait,
    /// Take it from the current leader (which stopped answering).
    Steal,
}

/// A request for the lead, held or queued. Dropping it releases the lead or
/// leaves the queue.
pub struct LeadRequest {
    /// Resolving it ends the hold.
    release: Rc<RefCell<Option<js_sys::Function>>>,
    abort: Option<web_sys::AbortController>,
}

impl LeadRequest {
    /// Asks for the Web Lock `name`. `on_grant(true)` runs when this tab
    /// leads, `on_grant(false)` when `Ask::IfFree` found it taken;
    /// `on_lost` when the lead was taken from this tab. `None` where the
    /// browser has no Web Locks (then every client leads alone).
    pub fn ask(
        name: &str,
        ask: Ask,
        on_grant: impl FnOnce(bool) + 'static,
        on_lost: impl FnOnce() + 'static,
    ) -> Result<Option<Self>, JsValue> {
        let navigator = web_sys::window()
            .map(|w| JsValue::from(w.navigator()))
            .unwrap_or(JsValue::UNDEFINED);
        let locks = js_sys::Reflect::get(&navigator, &"locks".into()).unwrap_or(JsValue::UNDEFINED);
        if locks.is_undefined() {
            return Ok(None);
        }
        let request: js_sys::Function =
            js_sys::Reflect::get(&locks, &"request".into())?.dyn_into()?;
        let options = js_sys::Object::new();
        let abort = match ask {
            Ask::IfFree => {
                js_sys::Reflect::set(&options, &"ifAvailable".into(), &true.into())?;
                None
            }
            Ask::Steal => {
                js_sys::Reflect::set(&options, &"steal".into(), &true.into())?;
                None
            }
            Ask::Wait => {
                let controller = web_sys::AbortController::new()?;
                js_sys::Reflect::set(&options, &"signal".into(), &controller.signal())?;
                Some(controller)
            }
        };
        let release = Rc::new(RefCell::new(None::<js_sys::Function>));
        let held = release.clone();
        // Both callbacks are owned by JS (each runs at most once, and may
        // run after this request was dropped).
        let granted = Closure::once_into_js(move |lock: JsValue| -> JsValue {
            if lock.is_null() {
                on_grant(false);
                return JsValue::UNDEFINED;
            }
            // The lock is held until this promise resolves.
            let hold = js_sys::Promise::new(&mut |resolve, _| *held.borrow_mut() = Some(resolve));
            on_grant(true);
            hold.into()
        });
        let was_held = release.clone();
        let rejected = Closure::once_into_js(move |_err: JsValue| {
            // Rejected: stolen while held, or aborted while queued (by us).
            if was_held.borrow_mut().take().is_some() {
                on_lost();
            }
        });
        let pending: js_sys::Promise = request
            .call3(&locks, &name.into(), &options, &granted)?
            .dyn_into()?;
        // `Promise::catch` wants a Rust closure; this one is owned by JS.
        js_sys::Reflect::get(&pending, &"catch".into())?
            .unchecked_into::<js_sys::Function>()
            .call1(&pending, &rejected)?;
        Ok(Some(Self { release, abort }))
    }

    /// True while this tab holds the lead through this request.
    pub fn held(&self) -> bool {
        self.release.borrow().is_some()
    }

    /// Lets go of the lead (or leaves the queue).
    pub fn release(&mut self) {
        if let Some(release) = self.release.borrow_mut().take() {
            let _ = release.call0(&JsValue::NULL);
        }
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }
}

impl Drop for LeadRequest {
    fn drop(&mut self) {
        self.release();
    }
}

/// A repeating browser timer, cleared on drop.
pub struct Interval {
    handle: i32,
    _tick: Closure<dyn FnMut()>,
}

impl Interval {
    /// Calls `tick` every `ms` milliseconds.
    pub fn every(ms: i32, tick: impl FnMut() + 'static) -> Option<Self> {
        let tick = Closure::<dyn FnMut()>::new(tick);
        let handle = web_sys::window()?
            .set_interval_with_callback_and_timeout_and_arguments_0(
                tick.as_ref().unchecked_ref(),
                ms,
            )
            .ok()?;
        Some(Self {
            handle,
            _tick: tick,
        })
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_interval_with_handle(self.handle);
        }
    }
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
