//! The WebSocket shell: one connection, as frames in and frames out (gloo-net).

use std::rc::Rc;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};

/// What a connection reports to its owner.
pub enum SocketEvent {
    /// The connection is open: frames can flow.
    Opened,
    /// A text frame arrived.
    Frame(String),
    /// The connection closed or failed; nothing more comes from it.
    Closed,
}

/// An open (or opening) connection. Dropping it closes the socket.
pub struct Connection {
    outgoing: mpsc::UnboundedSender<String>,
}

impl Connection {
    /// Opens a WebSocket to `url`; `on_event` hears what happens to it.
    pub fn open(url: &str, on_event: Rc<dyn Fn(SocketEvent)>) -> Result<Self, String> {
        let socket = WebSocket::open(url).map_err(|err| err.to_string())?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queued) = mpsc::unbounded::<String>();
        let writer_events = on_event.clone();
        wasm_bindgen_futures::spawn_local(async move {
            // The sink is ready once the socket left the CONNECTING state.
            if futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx))
                .await
                .is_err()
            {
                return;
            }
            writer_events(SocketEvent::Opened);
            while let Some(text) = queued.next().await {
                if sink.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            // The owner dropped the connection: close the socket.
            let _ = sink.close().await;
        });
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => on_event(SocketEvent::Frame(text)),
                    Ok(Message::Bytes(_)) => {}
                    Err(_) => break,
                }
            }
            on_event(SocketEvent::Closed);
        });
        Ok(Self { outgoing })
    }

    /// Queues a text frame.
    pub fn send(&self, text: String) {
        let _ = self.outgoing.unbounded_send(text);
    }
}
