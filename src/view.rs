//! `client.view(feedOrPattern)`: the items of the matching feeds as an
//! external store for UI frameworks — `subscribe(listener)` returning an
//! unsubscribe function and `getSnapshot()` returning a frozen snapshot whose
//! identity changes only when the items change (React's
//! `useSyncExternalStore`, Svelte's store contract).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use thoonk_protocol::{FeedName, FeedPattern, SortedMap};
use wasm_bindgen::prelude::*;

use crate::client::to_js;
use crate::tab_client::Tab;

/// One view's state: the snapshot so far and who listens.
struct View {
    tab: Weak<Tab>,
    pattern: FeedPattern,
    /// Each feed's items: their JSON text (to tell a real change) and the frozen array.
    feeds: RefCell<SortedMap<FeedName, (String, JsValue)>>,
    snapshot: RefCell<JsValue>,
    listeners: RefCell<Vec<(u32, js_sys::Function)>>,
    next_listener: Cell<u32>,
    /// The tab listener, while the view has listeners.
    tab_listener: Cell<Option<u32>>,
}

/// Freezes `value` and everything in it.
fn deep_freeze(value: &JsValue) {
    if let Some(object) = value.dyn_ref::<js_sys::Object>() {
        for inner in js_sys::Object::values(object).iter() {
            deep_freeze(&inner);
        }
        js_sys::Object::freeze(object);
    }
}

impl View {
    /// The feeds the view shows: the pattern itself when it names one feed,
    /// and every mirrored feed it matches.
    fn known_feeds(&self, tab: &Tab) -> Vec<FeedName> {
        let mut feeds: Vec<FeedName> = tab.status()["feeds"]
            .as_object()
            .map(|feeds| {
                feeds
                    .keys()
                    .filter_map(|feed| FeedName::new(feed.as_str()).ok())
                    .filter(|feed| self.pattern.matches(feed))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(feed) = FeedName::new(self.pattern.as_str()) {
            if self.pattern.matches(&feed) && !feeds.contains(&feed) {
                feeds.push(feed);
            }
        }
        feeds
    }

    /// Reads `feeds` again; rebuilds the snapshot when one of them changed.
    /// Returns whether it did.
    fn refresh(&self, feeds: &[FeedName]) -> bool {
        let Some(tab) = self.tab.upgrade() else {
            return false;
        };
        let mut changed = false;
        for feed in feeds {
            let items = tab.items(feed);
            let text = items.to_string();
            let same = self
                .feeds
                .borrow()
                .get(feed)
                .is_some_and(|(known, _)| *known == text);
            if !same {
                let array = to_js(&items);
                deep_freeze(&array);
                self.feeds.borrow_mut().insert(feed.clone(), (text, array));
                changed = true;
            }
        }
        if changed {
            let snapshot = js_sys::Object::new();
            for (feed, (_, array)) in self.feeds.borrow().iter() {
                let _ = js_sys::Reflect::set(&snapshot, &feed.as_str().into(), array);
            }
            js_sys::Object::freeze(&snapshot);
            *self.snapshot.borrow_mut() = snapshot.into();
        }
        changed
    }

    fn notify(&self) {
        let listeners: Vec<js_sys::Function> = self
            .listeners
            .borrow()
            .iter()
            .map(|(_, listener)| listener.clone())
            .collect();
        for listener in listeners {
            if let Err(err) = listener.call0(&JsValue::NULL) {
                web_sys::console::error_2(&"thoonk-sync: a view listener threw".into(), &err);
            }
        }
    }

    /// Follows the tab's changes of the pattern (at the first listener).
    fn start(self: &Rc<Self>) {
        let Some(tab) = self.tab.upgrade() else {
            return;
        };
        let view = Rc::downgrade(self);
        let on_change = Closure::<dyn Fn(JsValue)>::new(move |change: JsValue| {
            let Some(view) = view.upgrade() else {
                return;
            };
            let feed = js_sys::Reflect::get(&change, &"feed".into())
                .ok()
                .and_then(|feed| feed.as_string())
                .and_then(|feed| FeedName::new(feed).ok());
            if let Some(feed) = feed {
                if view.refresh(&[feed]) {
                    view.notify();
                }
            }
        })
        .into_js_value();
        let id = tab
            .callbacks
            .add_listener(self.pattern.clone(), on_change.unchecked_into());
        self.tab_listener.set(Some(id));
        if tab.subscribe(self.pattern.clone()).is_err() {
            self.stop();
            return;
        }
        // What changed between the last `getSnapshot` and now.
        if self.refresh(&self.known_feeds(&tab)) {
            self.notify();
        }
    }

    /// Stops following (after the last listener left).
    fn stop(&self) {
        let Some(tab) = self.tab.upgrade() else {
            return;
        };
        if let Some(id) = self.tab_listener.take() {
            if let Some(unused) = tab.callbacks.remove_listener(id) {
                tab.unsubscribe(unused);
            }
        }
    }
}

/// `client.view(pattern)`: a plain object `{ subscribe, getSnapshot }` whose
/// functions work unbound (frameworks call them so).
pub(crate) fn view(tab: &Rc<Tab>, pattern: FeedPattern) -> JsValue {
    let view = Rc::new(View {
        tab: Rc::downgrade(tab),
        pattern,
        feeds: RefCell::default(),
        snapshot: RefCell::new(js_sys::Object::freeze(&js_sys::Object::new()).into()),
        listeners: RefCell::default(),
        next_listener: Cell::new(0),
        tab_listener: Cell::new(None),
    });
    view.refresh(&view.known_feeds(tab));

    let for_snapshot = view.clone();
    let get_snapshot = Closure::<dyn Fn() -> JsValue>::new(move || {
        if for_snapshot.tab_listener.get().is_none() {
            // Not following changes: read the feeds now.
            if let Some(tab) = for_snapshot.tab.upgrade() {
                for_snapshot.refresh(&for_snapshot.known_feeds(&tab));
            }
        }
        for_snapshot.snapshot.borrow().clone()
    })
    .into_js_value();

    let for_subscribe = view.clone();
    let subscribe =
        Closure::<dyn Fn(JsValue) -> Result<JsValue, JsValue>>::new(move |listener: JsValue| {
            let listener: js_sys::Function = listener.dyn_into().map_err(|_| {
                crate::client::js_error("bad_request", "view.subscribe needs a function")
            })?;
            let view = for_subscribe.clone();
            let id = view.next_listener.get() + 1;
            view.next_listener.set(id);
            view.listeners.borrow_mut().push((id, listener));
            if view.tab_listener.get().is_none() {
                view.start();
            }
            let weak = Rc::downgrade(&view);
            Ok(Closure::once_into_js(move || {
                if let Some(view) = weak.upgrade() {
                    view.listeners
                        .borrow_mut()
                        .retain(|(other, _)| *other != id);
                    if view.listeners.borrow().is_empty() {
                        view.stop();
                    }
                }
            }))
        })
        .into_js_value();

    let object = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&object, &"subscribe".into(), &subscribe);
    let _ = js_sys::Reflect::set(&object, &"getSnapshot".into(), &get_snapshot);
    js_sys::Object::freeze(&object);
    object.into()
}
