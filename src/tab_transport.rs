//! The browser's side of the tab protocol: the Web Lock (who leads), the
//! BroadcastChannel (what tabs say to each other) and timers. The protocol's
//! rules and decisions are the core's (`thoonk_sync_core::tabs`).

use std::cell::RefCell;
use std::rc::Rc;

use thoonk_sync_core::tabs::{Ask, TabMessage};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

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

/// A one-shot browser timer, cleared on drop.
pub struct Timeout {
    handle: i32,
    _fire: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `fire` once after `ms` milliseconds.
    pub fn after(ms: i32, fire: impl FnOnce() + 'static) -> Option<Self> {
        let mut fire = Some(fire);
        let fire = Closure::<dyn FnMut()>::new(move || {
            if let Some(fire) = fire.take() {
                fire();
            }
        });
        let handle = web_sys::window()?
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                fire.as_ref().unchecked_ref(),
                ms,
            )
            .ok()?;
        Some(Self {
            handle,
            _fire: fire,
        })
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_timeout_with_handle(self.handle);
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
