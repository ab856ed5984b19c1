//! One client per database at a time across the tabs of a browser (Web Locks).
//!
//! Two clients on one IndexedDB database would share a client id and its
//! change counter, and one's changes could be taken for the other's. A client
//! therefore holds an exclusive Web Lock named after its database while it is
//! open; a second `Client.open` on the same database fails with `locked`.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use wasm_bindgen::prelude::*;

/// How long `Client.open` waits for another holder of the database to let go.
const LOCK_WAIT_MS: f64 = 3000.0;

/// A held lock; released on [`TabLock::release`] or drop.
pub struct TabLock {
    release: Option<js_sys::Function>,
    /// The request's rejection handler, kept alive as long as the request may settle.
    _on_timeout: Option<Closure<dyn FnMut(JsValue)>>,
}

impl TabLock {
    /// Takes the lock `name`, waiting up to [`LOCK_WAIT_MS`]: `Ok(None)` when
    /// another tab still holds it then.
    /// Where the browser has no Web Locks, the client runs unguarded.
    pub async fn acquire(name: &str) -> Result<Option<TabLock>, JsValue> {
        let navigator = web_sys::window()
            .map(|w| JsValue::from(w.navigator()))
            .unwrap_or(JsValue::UNDEFINED);
        let locks = js_sys::Reflect::get(&navigator, &"locks".into()).unwrap_or(JsValue::UNDEFINED);
        if locks.is_undefined() {
            web_sys::console::warn_1(
                &"thoonk-sync: no Web Locks here; keep one client per database".into(),
            );
            return Ok(Some(TabLock {
                release: None,
                _on_timeout: None,
            }));
        }
        let request: js_sys::Function =
            js_sys::Reflect::get(&locks, &"request".into())?.dyn_into()?;
        let (granted_tx, granted_rx) = oneshot::channel::<Option<js_sys::Function>>();
        let granted_tx = Rc::new(RefCell::new(Some(granted_tx)));
        let on_grant = granted_tx.clone();
        let callback = Closure::once_into_js(move |_lock: JsValue| -> js_sys::Promise {
            // The lock is held until `release` resolves this promise.
            js_sys::Promise::new(&mut |resolve, _| {
                if let Some(tx) = on_grant.borrow_mut().take() {
                    let _ = tx.send(Some(resolve));
                }
            })
        });
        let on_timeout = Closure::once(move |_err: JsValue| {
            if let Some(tx) = granted_tx.borrow_mut().take() {
                let _ = tx.send(None);
            }
        });
        // Wait a little for a tab that is closing (or a client just closed in
        // this tab) to let go; give up after LOCK_WAIT_MS.
        let abort_signal: js_sys::Function =
            js_sys::Reflect::get(&js_sys::global(), &"AbortSignal".into())?.dyn_into()?;
        let timeout: js_sys::Function =
            js_sys::Reflect::get(&abort_signal, &"timeout".into())?.dyn_into()?;
        let signal = timeout.call1(&abort_signal, &LOCK_WAIT_MS.into())?;
        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"signal".into(), &signal)?;
        let pending: js_sys::Promise = request
            .call3(&locks, &name.into(), &options, &callback)?
            .dyn_into()?;
        let _ = pending.catch(&on_timeout);
        let granted = granted_rx
            .await
            .map_err(|_| JsValue::from_str("the Web Locks request ended without an answer"))?;
        Ok(granted.map(|release| TabLock {
            release: Some(release),
            _on_timeout: Some(on_timeout),
        }))
    }

    /// Releases the lock (idempotent).
    pub fn release(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.call0(&JsValue::NULL);
        }
    }
}

impl Drop for TabLock {
    fn drop(&mut self) {
        self.release();
    }
}
