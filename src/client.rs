//! The JavaScript API: `Client.open`, `subscribe`, `items`, `rev`, `publish`, `close`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use serde::{Deserialize, Serialize};
use thoonk_protocol::{
    ChangeId, ChangeRequest, ClientMessage, Epoch, FeedEvent, FeedName, FeedPattern, FeedPosition,
    ItemId, Operation, Outcome, ServerMessage, PROTOCOL_VERSION,
};
use wasm_bindgen::prelude::*;

use crate::mirror::{Applied, FeedMirror};
use crate::store::{MirrorStore, StoreError};

/// Options of `Client.open`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenOptions {
    url: String,
    token: String,
    db_name: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// A change event handed to `subscribe` callbacks.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeEvent<'a> {
    /// `publish`, `edit`, `retract`, `position`, or `reset` (whole feed replaced).
    kind: &'a str,
    feed: &'a FeedName,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a ItemId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<&'a serde_json::Value>,
    rev: u64,
    state: &'a str,
}

/// Builds a JS `Error` carrying a machine-readable `code`.
fn js_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

fn to_js<T: Serialize>(value: &T) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

impl From<StoreError> for JsValue {
    fn from(err: StoreError) -> Self {
        js_error("storage", &err.to_string())
    }
}

struct Subscription {
    id: u32,
    pattern: FeedPattern,
    on_change: js_sys::Function,
}

struct Inner {
    options: OpenOptions,
    client_id: String,
    store: RefCell<Option<Rc<MirrorStore>>>,
    mirrors: RefCell<HashMap<FeedName, FeedMirror>>,
    subscriptions: RefCell<Vec<Subscription>>,
    next_subscription: Cell<u32>,
    outgoing: mpsc::UnboundedSender<ClientMessage>,
    connected: Cell<bool>,
    closed: Cell<bool>,
    seq: Cell<u64>,
    waiting: RefCell<HashMap<ChangeId, oneshot::Sender<Outcome>>>,
    status_listeners: RefCell<Vec<js_sys::Function>>,
}

/// A sync client: mirrors subscribed feeds in IndexedDB and keeps them live
/// over a WebSocket to a thoonk-server.
#[wasm_bindgen]
pub struct Client {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Client {
    /// Opens the local database, loads the mirrored feeds and starts connecting.
    ///
    /// `options`: `{ url, token, dbName, clientId? }`.
    pub async fn open(options: JsValue) -> Result<Client, JsValue> {
        let options: OpenOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|err| js_error("bad_request", &format!("Client.open options: {err}")))?;
        let store = MirrorStore::open(&options.db_name).await?;
        let mirrors = store.load().await?;
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("c{:x}", (js_sys::Math::random() * 2f64.powi(52)) as u64));
        let (outgoing, rx) = mpsc::unbounded();
        let inner = Rc::new(Inner {
            options,
            client_id,
            store: RefCell::new(Some(Rc::new(store))),
            mirrors: RefCell::new(mirrors),
            subscriptions: RefCell::default(),
            next_subscription: Cell::new(1),
            outgoing,
            connected: Cell::new(false),
            closed: Cell::new(false),
            seq: Cell::new(0),
            waiting: RefCell::default(),
            status_listeners: RefCell::default(),
        });
        wasm_bindgen_futures::spawn_local(run_connection(inner.clone(), rx));
        Ok(Client { inner })
    }

    /// Follows a feed or pattern; `onChange(event)` is called for every change
    /// of a matching feed. Returns a function that unsubscribes.
    pub fn subscribe(
        &self,
        pattern: String,
        on_change: js_sys::Function,
    ) -> Result<js_sys::Function, JsValue> {
        let pattern =
            FeedPattern::new(pattern).map_err(|err| js_error("bad_request", &err.to_string()))?;
        let id = self.inner.next_subscription.get();
        self.inner.next_subscription.set(id + 1);
        self.inner.subscriptions.borrow_mut().push(Subscription {
            id,
            pattern: pattern.clone(),
            on_change,
        });
        if self.inner.connected.get() {
            let known = self.inner.known(&pattern);
            let _ = self
                .inner
                .outgoing
                .unbounded_send(ClientMessage::Subscribe { pattern, known });
        }
        let inner = Rc::downgrade(&self.inner);
        let unsubscribe = Closure::once_into_js(move || {
            if let Some(inner) = inner.upgrade() {
                inner.unsubscribe(id);
            }
        });
        Ok(unsubscribe.unchecked_into())
    }

    /// The mirrored items of `feed`, in order: `[{ id, item, rev }]`.
    pub fn items(&self, feed: String) -> Result<JsValue, JsValue> {
        let feed = FeedName::new(feed).map_err(|err| js_error("bad_request", &err.to_string()))?;
        let mirrors = self.inner.mirrors.borrow();
        Ok(match mirrors.get(&feed) {
            Some(mirror) => to_js(&mirror.items),
            None => js_sys::Array::new().into(),
        })
    }

    /// The mirrored revision of `feed`, or `undefined` when it is not mirrored.
    pub fn rev(&self, feed: String) -> Option<f64> {
        let feed = FeedName::new(feed).ok()?;
        self.inner.mirrors.borrow().get(&feed).map(|m| m.rev as f64)
    }

    /// Publishes `item` to `feed` under `id` (generated when absent).
    /// Resolves to the outcome: `{ status: "accepted" | "rejected" | "conflict", … }`.
    pub async fn publish(
        &self,
        feed: String,
        item: JsValue,
        id: Option<String>,
    ) -> Result<JsValue, JsValue> {
        let bad = |err: &dyn std::fmt::Display| js_error("bad_request", &err.to_string());
        let feed = FeedName::new(feed).map_err(|e| bad(&e))?;
        let item: serde_json::Value = serde_wasm_bindgen::from_value(item).map_err(|e| bad(&e))?;
        let seq = self.inner.seq.get() + 1;
        self.inner.seq.set(seq);
        let change_id = ChangeId::new(&self.inner.client_id, seq);
        let item_id =
            ItemId::new(id.unwrap_or_else(|| change_id.0.clone())).map_err(|e| bad(&e))?;
        let base = self
            .inner
            .mirrors
            .borrow()
            .get(&feed)
            .map(|m| BTreeMap::from([(feed.clone(), m.rev)]))
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiting
            .borrow_mut()
            .insert(change_id.clone(), tx);
        let change = ChangeRequest {
            id: change_id,
            op: Operation::Publish {
                feed,
                id: item_id,
                item,
                position: None,
            },
            base,
        };
        self.inner
            .outgoing
            .unbounded_send(ClientMessage::Submit { change })
            .map_err(|_| js_error("closed", "the client is closed"))?;
        let outcome = rx
            .await
            .map_err(|_| js_error("closed", "the client closed before the outcome arrived"))?;
        Ok(to_js(&outcome))
    }

    /// The connection state: `"online"` (connected and signed in),
    /// `"offline"` (connecting or waiting to reconnect) or `"closed"`.
    pub fn status(&self) -> String {
        self.inner.status().into()
    }

    /// Calls `callback(status)` whenever [`Client::status`] changes.
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(&self, callback: js_sys::Function) {
        self.inner.status_listeners.borrow_mut().push(callback);
    }

    /// Stops syncing and closes the database.
    pub fn close(&self) {
        self.inner.closed.set(true);
        self.inner.set_connected(false);
        self.inner.outgoing.close_channel();
        if let Some(store) = self.inner.store.borrow_mut().take() {
            if let Ok(store) = Rc::try_unwrap(store) {
                store.close();
            }
        }
    }
}

impl Inner {
    fn status(&self) -> &'static str {
        match (self.closed.get(), self.connected.get()) {
            (true, _) => "closed",
            (false, true) => "online",
            (false, false) => "offline",
        }
    }

    fn set_connected(&self, connected: bool) {
        let before = self.status();
        self.connected.set(connected);
        let status = self.status();
        if before == status {
            return;
        }
        let listeners = self.status_listeners.borrow().clone();
        for listener in listeners {
            let _ = listener.call1(&JsValue::NULL, &status.into());
        }
    }

    fn known(&self, pattern: &FeedPattern) -> BTreeMap<FeedName, FeedPosition> {
        self.mirrors
            .borrow()
            .iter()
            .filter(|(feed, m)| pattern.matches(feed) && m.epoch != 0)
            .map(|(feed, m)| {
                (
                    feed.clone(),
                    FeedPosition {
                        epoch: m.epoch,
                        rev: m.rev,
                    },
                )
            })
            .collect()
    }

    fn unsubscribe(&self, id: u32) {
        let mut subscriptions = self.subscriptions.borrow_mut();
        let Some(index) = subscriptions.iter().position(|s| s.id == id) else {
            return;
        };
        let pattern = subscriptions.remove(index).pattern;
        if !subscriptions.iter().any(|s| s.pattern == pattern) && self.connected.get() {
            let _ = self
                .outgoing
                .unbounded_send(ClientMessage::Unsubscribe { pattern });
        }
    }

    fn notify(&self, feed: &FeedName, event: &ChangeEvent<'_>) {
        let value = to_js(event);
        let callbacks: Vec<js_sys::Function> = self
            .subscriptions
            .borrow()
            .iter()
            .filter(|s| s.pattern.matches(feed))
            .map(|s| s.on_change.clone())
            .collect();
        for callback in callbacks {
            if let Err(err) = callback.call1(&JsValue::NULL, &value) {
                web_sys::console::error_2(&"thoonk-sync: onChange threw".into(), &err);
            }
        }
    }

    async fn persist(
        &self,
        feed: &FeedName,
        changed: &[ItemId],
        replace_all: bool,
    ) -> Result<(), StoreError> {
        let Some(store) = self.store.borrow().clone() else {
            return Ok(());
        };
        let mirror = self.mirrors.borrow().get(feed).cloned().unwrap_or_default();
        store.save(feed, &mirror, changed, replace_all).await
    }

    /// Handles one server frame; returns the replay request to send, if any.
    async fn on_message(
        &self,
        message: ServerMessage,
    ) -> Result<Option<ClientMessage>, StoreError> {
        match message {
            ServerMessage::Snapshot {
                feed,
                epoch,
                rev,
                items,
            } => {
                self.mirrors
                    .borrow_mut()
                    .entry(feed.clone())
                    .or_default()
                    .reset(epoch, rev, items);
                self.persist(&feed, &[], true).await?;
                let event = ChangeEvent {
                    kind: "reset",
                    feed: &feed,
                    id: None,
                    item: None,
                    rev,
                    state: "confirmed",
                };
                self.notify(&feed, &event);
            }
            ServerMessage::Changes {
                feed,
                epoch,
                events,
            } => {
                for event in &events {
                    if let Some(replay) = self.on_event(&feed, epoch, event).await? {
                        return Ok(Some(replay));
                    }
                }
            }
            ServerMessage::Event {
                feed,
                epoch,
                rev,
                change,
            } => {
                return self
                    .on_event(&feed, epoch, &FeedEvent { rev, change })
                    .await;
            }
            ServerMessage::Outcome { id, outcome } => {
                if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
                    let _ = tx.send(outcome);
                }
            }
            ServerMessage::Error { code, message } => {
                web_sys::console::warn_1(
                    &format!("thoonk-sync: server error {}: {message}", code.as_str()).into(),
                );
            }
            ServerMessage::Welcome { .. }
            | ServerMessage::Subscribed { .. }
            | ServerMessage::Ack { .. }
            | ServerMessage::Pong => {}
        }
        Ok(None)
    }

    async fn on_event(
        &self,
        feed: &FeedName,
        epoch: Epoch,
        event: &FeedEvent,
    ) -> Result<Option<ClientMessage>, StoreError> {
        let applied = self
            .mirrors
            .borrow_mut()
            .entry(feed.clone())
            .or_default()
            .apply(epoch, event);
        match applied {
            Applied::Stale => Ok(None),
            Applied::Gap => {
                let mirrors = self.mirrors.borrow();
                let mirror = mirrors.get(feed).cloned().unwrap_or_default();
                Ok(Some(ClientMessage::Replay {
                    feed: feed.clone(),
                    from: FeedPosition {
                        epoch: mirror.epoch,
                        rev: mirror.rev,
                    },
                }))
            }
            Applied::Yes => {
                self.persist(feed, std::slice::from_ref(&event.change.id), false)
                    .await?;
                let kind = serde_json::to_value(event.change.op).ok();
                let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("change");
                let item = self.mirrors.borrow().get(feed).and_then(|m| {
                    m.items
                        .iter()
                        .find(|i| i.id == event.change.id)
                        .map(|i| i.item.clone())
                });
                let change = ChangeEvent {
                    kind,
                    feed,
                    id: Some(&event.change.id),
                    item: item.as_ref(),
                    rev: event.rev,
                    state: "confirmed",
                };
                self.notify(feed, &change);
                Ok(None)
            }
        }
    }
}

enum Input {
    Server(Option<Result<Message, gloo_net::websocket::WebSocketError>>),
    Local(Option<ClientMessage>),
}

/// Waits `ms` milliseconds on the browser's timer.
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

fn encode(message: &ClientMessage) -> Message {
    Message::Text(serde_json::to_string(message).expect("client messages always serialize"))
}

/// Keeps a connection open while the client lives, reconnecting with
/// exponential backoff and jitter.
async fn run_connection(inner: Rc<Inner>, mut outgoing: mpsc::UnboundedReceiver<ClientMessage>) {
    let mut backoff_ms = 250.0;
    while !inner.closed.get() {
        match WebSocket::open(&inner.options.url) {
            Ok(socket) => {
                if session(&inner, socket, &mut outgoing).await {
                    backoff_ms = 250.0;
                }
            }
            Err(err) => {
                web_sys::console::warn_1(&format!("thoonk-sync: cannot connect: {err}").into())
            }
        }
        inner.set_connected(false);
        if inner.closed.get() {
            break;
        }
        let delay = backoff_ms * (0.5 + js_sys::Math::random());
        sleep(delay as i32).await;
        backoff_ms = (backoff_ms * 2.0).min(10_000.0);
    }
}

/// Runs one connection until it drops; true when it got as far as `welcome`.
async fn session(
    inner: &Inner,
    socket: WebSocket,
    outgoing: &mut mpsc::UnboundedReceiver<ClientMessage>,
) -> bool {
    let (mut sink, stream) = socket.split();
    let hello = ClientMessage::Hello {
        protocol: PROTOCOL_VERSION,
        token: inner.options.token.clone(),
        client_id: inner.client_id.clone(),
    };
    if sink.send(encode(&hello)).await.is_err() {
        return false;
    }
    let mut stream = stream;
    let mut welcomed = false;
    loop {
        let next = futures::future::select(stream.next(), outgoing.next()).await;
        let input = match next {
            futures::future::Either::Left((frame, _)) => Input::Server(frame),
            futures::future::Either::Right((message, _)) => Input::Local(message),
        };
        let reply = match input {
            Input::Local(None) => return welcomed, // closed
            Input::Local(Some(message)) => Some(message),
            Input::Server(None) | Input::Server(Some(Err(_))) => return welcomed,
            Input::Server(Some(Ok(Message::Bytes(_)))) => None,
            Input::Server(Some(Ok(Message::Text(text)))) => {
                let message = match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(message) => message,
                    Err(err) => {
                        web_sys::console::warn_1(
                            &format!("thoonk-sync: ignoring an unreadable frame: {err}").into(),
                        );
                        continue;
                    }
                };
                if let ServerMessage::Welcome { .. } = message {
                    welcomed = true;
                    inner.set_connected(true);
                    let patterns: Vec<FeedPattern> = inner
                        .subscriptions
                        .borrow()
                        .iter()
                        .map(|s| s.pattern.clone())
                        .collect();
                    let mut sent = std::collections::BTreeSet::new();
                    for pattern in patterns {
                        if sent.insert(pattern.clone()) {
                            let known = inner.known(&pattern);
                            if sink
                                .send(encode(&ClientMessage::Subscribe { pattern, known }))
                                .await
                                .is_err()
                            {
                                return welcomed;
                            }
                        }
                    }
                    continue;
                }
                match inner.on_message(message).await {
                    Ok(reply) => reply,
                    Err(err) => {
                        web_sys::console::error_1(&format!("thoonk-sync: {err}").into());
                        None
                    }
                }
            }
        };
        if let Some(message) = reply {
            if sink.send(encode(&message)).await.is_err() {
                return welcomed;
            }
        }
    }
}
