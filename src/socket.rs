//! The WebSocket shell: one connection, as frames in and frames out, on the
//! browser's `WebSocket` and its four events.
//!
//! A connection reports `Opened` only on the socket's `open` event, and
//! `Closed` once, on its first `error` or `close` event: a connection that
//! could not be made (refused: `error` then `close`; blocked by the page's
//! Content Security Policy: `error` alone) reaches the core as a closed
//! connection, whose reconnect timer then runs. A frame
//! is only ever handed to an open socket; one given while the socket is
//! closing or closed is dropped (the core sends everything again after it
//! reconnects), so the browser never logs "WebSocket is already in CLOSING
//! or CLOSED state.".

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};

/// What a connection reports to its owner.
pub enum SocketEvent {
    /// The connection is open: frames can flow.
    Opened,
    /// A text frame arrived.
    Frame(String),
    /// The connection closed, or could not be opened; nothing more comes from it.
    Closed,
}

/// An open (or opening) connection. Dropping it closes the socket and
/// silences its events.
pub struct Connection {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_end: Closure<dyn FnMut()>,
}

impl Connection {
    /// Opens a WebSocket to `url`; `on_event` hears what happens to it.
    pub fn open(url: &str, on_event: Rc<dyn Fn(SocketEvent)>) -> Result<Self, String> {
        let socket = WebSocket::new(url).map_err(|err| {
            err.dyn_ref::<js_sys::Error>()
                .map(|err| String::from(err.message()))
                .unwrap_or_else(|| format!("{err:?}"))
        })?;
        let opened = on_event.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || opened(SocketEvent::Opened));
        let framed = on_event.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            // Text frames only: the protocol sends no binary ones.
            if let Some(text) = event.data().as_string() {
                framed(SocketEvent::Frame(text));
            }
        });
        let ended = Cell::new(false);
        let on_end = Closure::<dyn FnMut()>::new(move || {
            if !ended.replace(true) {
                on_event(SocketEvent::Closed);
            }
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onerror(Some(on_end.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_end.as_ref().unchecked_ref()));
        Ok(Self {
            socket,
            _on_open: on_open,
            _on_message: on_message,
            _on_end: on_end,
        })
    }

    /// Sends a text frame when the socket is open; drops it otherwise (a
    /// closed socket reports `Closed`, and the core resends after reconnecting).
    pub fn send(&self, text: String) {
        if self.socket.ready_state() == WebSocket::OPEN {
            let _ = self.socket.send_with_str(&text);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onerror(None);
        self.socket.set_onclose(None);
        match self.socket.ready_state() {
            // Closing a socket still connecting makes the browser warn that
            // it "is closed before the connection is established": close it
            // once it opens instead (a connect that fails just ends).
            WebSocket::CONNECTING => {
                let socket = self.socket.clone();
                let close_when_open = Closure::once_into_js(move || {
                    let _ = socket.close();
                });
                self.socket
                    .set_onopen(Some(close_when_open.unchecked_ref()));
            }
            WebSocket::OPEN => {
                let _ = self.socket.close();
            }
            _ => {}
        }
    }
}
