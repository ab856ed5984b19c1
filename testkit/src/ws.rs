//! The WebSocket protocol client of the tests: speaks the protocol types,
//! keeps every frame it receives (as text in `log`) and applies it to a
//! [`ReceivedFeeds`], which panics on any gap, repeat or epoch mix-up.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use thoonk_protocol::{
    ChangeId, ClientMessage, Epoch, ErrorCode, FeedName, FeedPattern, FeedPosition, Outcome, Rev,
    ServerMessage, PROTOCOL_VERSION,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::mirror::{ReceivedFeed, ReceivedFeeds};

/// Upper bound for one awaited frame or state. A bound is a failure
/// condition (the thing never happened), not a measured speed.
pub const WAIT: Duration = Duration::from_secs(10);

/// Upper bound for a stream of frames that keeps coming (each frame within
/// [`WAIT`]) to reach an expected state.
pub const STREAM_WAIT: Duration = Duration::from_secs(60);

/// One received frame, or the end of the connection.
#[derive(Debug)]
pub enum Frame {
    Message(ServerMessage),
    Closed(Option<CloseFrame>),
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client of the gateway. Every message it receives is kept (as
/// text in `log`) and applied to `mirror`, which panics on any gap, repeat or
/// epoch mix-up.
pub struct WsClient {
    ws: Socket,
    /// Every text frame received, in order.
    pub log: Vec<String>,
    /// Every feed as the received frames built it.
    pub mirror: ReceivedFeeds,
    /// Every outcome received, in order.
    pub outcomes: Vec<(ChangeId, Outcome)>,
    /// How the connection ended, once it did.
    pub closed: Option<Option<CloseFrame>>,
    /// When true, an `error` frame fails the test (for suites in which no
    /// request may be refused).
    pub errors_fail: bool,
}

impl WsClient {
    /// Opens a WebSocket without sending anything.
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("the websocket handshake finishes")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self::wrap(ws)
    }

    /// Opens a WebSocket with a fixed TCP receive buffer of 256 KiB (no
    /// autotuning up to tens of MiB), so that the server's writes block soon
    /// after this client stops reading. (Far smaller than loopback's 64 KiB
    /// segment size would stall TCP itself.)
    pub async fn connect_small_buffer(url: &str, port: u16) -> WsClient {
        let socket = TcpSocket::new_v4().expect("tcp socket");
        socket.set_recv_buffer_size(256 * 1024).expect("SO_RCVBUF");
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("tcp connect");
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("the websocket handshake finishes")
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self::wrap(ws)
    }

    fn wrap(ws: Socket) -> WsClient {
        WsClient {
            ws,
            log: Vec::new(),
            mirror: ReceivedFeeds::default(),
            outcomes: Vec::new(),
            closed: None,
            errors_fail: false,
        }
    }

    /// Connects, says hello with `token` and waits for `welcome`.
    pub async fn signed_in(url: &str, token: &str) -> WsClient {
        let mut client = Self::connect(url).await;
        client.hello(token).await;
        client
    }

    /// Connects and says hello with `token` as `client_id`; waits for `welcome`.
    pub async fn signed_in_as(url: &str, token: &str, client_id: &str) -> WsClient {
        let mut client = Self::connect(url).await;
        client.hello_as(token, client_id).await;
        client
    }

    /// Sends `hello` (client id `test-<token>`) and expects `welcome`;
    /// returns the user name.
    pub async fn hello(&mut self, token: &str) -> String {
        self.hello_as(token, &format!("test-{token}")).await
    }

    /// Sends `hello` as `client_id` and expects `welcome`; returns the user name.
    pub async fn hello_as(&mut self, token: &str, client_id: &str) -> String {
        self.send(&ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            token: token.into(),
            client_id: client_id.into(),
        })
        .await;
        match self.next().await {
            ServerMessage::Welcome {
                protocol,
                user,
                ledger_window_ms,
            } => {
                assert_eq!(protocol, PROTOCOL_VERSION);
                assert!(
                    ledger_window_ms.is_some_and(|w| w > 0),
                    "welcome names the exactly-once window: {ledger_window_ms:?}"
                );
                user
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).expect("client messages serialize");
        self.send_text(text).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.send_message(Message::text(text)).await;
    }

    /// Sends any WebSocket message (binary, say).
    pub async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.ws.send(message))
            .await
            .expect("the frame is sent")
            .expect("send a frame");
    }

    /// Sends a message that the server may refuse by closing the connection.
    pub async fn try_send_message(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Subscribes to `pattern` with no known state. The text is sent as it
    /// is: a pattern written for one Redis goes through [`shard`] first.
    pub async fn subscribe(&mut self, pattern: &str) {
        self.subscribe_known(pattern, &[]).await;
    }

    /// Subscribes to `pattern_text` (sent as it is), telling the server what
    /// the client mirrors.
    pub async fn subscribe_known(&mut self, pattern_text: &str, known: &[(&FeedName, Epoch, Rev)]) {
        for (feed, epoch, rev) in known {
            self.mirror.assume(feed, *epoch, *rev);
        }
        let known = known
            .iter()
            .map(|(feed, epoch, rev)| {
                (
                    (*feed).clone(),
                    FeedPosition {
                        epoch: *epoch,
                        rev: *rev,
                    },
                )
            })
            .collect();
        self.send(&ClientMessage::Subscribe {
            pattern: FeedPattern::new(pattern_text).expect("valid feed pattern"),
            known,
        })
        .await;
    }

    /// The next frame or the end of the connection, within [`WAIT`].
    pub async fn next_frame(&mut self) -> Frame {
        match self.try_next_frame(WAIT).await {
            Some(frame) => frame,
            None => panic!(
                "no frame within {WAIT:?}; received so far: {:#?}",
                self.tail()
            ),
        }
    }

    /// The next frame or the end of the connection; `None` when nothing
    /// comes within `wait`.
    pub async fn try_next_frame(&mut self, wait: Duration) -> Option<Frame> {
        if let Some(close) = &self.closed {
            return Some(Frame::Closed(close.clone()));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            let message = match next {
                None | Some(Err(_)) => {
                    self.closed = Some(None);
                    return Some(Frame::Closed(None));
                }
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    let parsed: ServerMessage = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("undecodable server frame ({e}): {text}"));
                    self.log.push(text.to_string());
                    self.mirror.apply(&parsed);
                    match &parsed {
                        ServerMessage::Outcome { id, outcome } => {
                            self.outcomes.push((id.clone(), outcome.clone()))
                        }
                        ServerMessage::Outcomes { outcomes } => self
                            .outcomes
                            .extend(outcomes.iter().map(|o| (o.id.clone(), o.outcome.clone()))),
                        ServerMessage::Error { code, message } if self.errors_fail => {
                            panic!("the server refused a request: {code:?}: {message}")
                        }
                        _ => {}
                    }
                    return Some(Frame::Message(parsed));
                }
                Message::Close(frame) => {
                    self.closed = Some(frame.clone());
                    return Some(Frame::Closed(frame));
                }
                Message::Binary(_) => panic!("the server sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Reads until `done(mirror)` holds; false when the connection goes
    /// quiet for [`WAIT`] (or closes) before that.
    pub async fn read_until(&mut self, mut done: impl FnMut(&ReceivedFeeds) -> bool) -> bool {
        while !done(&self.mirror) {
            match self.try_next_frame(WAIT).await {
                Some(Frame::Message(_)) => {}
                Some(Frame::Closed(_)) | None => return false,
            }
        }
        true
    }

    /// The next message, or `None` when the connection ended.
    pub async fn next_message(&mut self) -> Option<ServerMessage> {
        match self.next_frame().await {
            Frame::Message(message) => Some(message),
            Frame::Closed(_) => None,
        }
    }

    /// The next message; panics when the connection ends.
    pub async fn next(&mut self) -> ServerMessage {
        match self.next_frame().await {
            Frame::Message(message) => message,
            Frame::Closed(frame) => panic!(
                "the connection closed ({frame:?}); received so far: {:#?}",
                self.tail()
            ),
        }
    }

    /// Reads until a message for which `pick` returns `Some`, within [`WAIT`]
    /// per frame; other messages are kept in the log and mirror.
    pub async fn until<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + STREAM_WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not received within {STREAM_WAIT:?}; received so far: {:#?}",
                self.tail()
            );
            let message = self.next().await;
            if let Some(found) = pick(&message) {
                return found;
            }
        }
    }

    /// Reads until the mirror of `feed` reaches revision `rev` (of any epoch).
    pub async fn until_rev(&mut self, feed: &FeedName, rev: Rev) -> &ReceivedFeed {
        let deadline = tokio::time::Instant::now() + STREAM_WAIT;
        while self.mirror.rev(feed).is_none_or(|r| r < rev) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{feed}: revision {rev} not reached; mirror at {:?}; last frames: {:#?}",
                self.mirror.rev(feed),
                self.tail()
            );
            self.next().await;
        }
        let mirror = self.mirror.get(feed).expect("mirrored");
        assert_eq!(mirror.rev, rev, "{feed}: went past revision {rev}");
        mirror
    }

    /// Subscribes to the one feed `feed` and reads until its first state
    /// (snapshot or changes) is in.
    pub async fn follow(&mut self, feed: &FeedName) {
        self.subscribe(feed.as_str()).await;
        let deadline = tokio::time::Instant::now() + STREAM_WAIT;
        while self.mirror.get(feed).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{feed}: no snapshot; last frames: {:#?}",
                self.tail()
            );
            self.next().await;
        }
    }

    /// Reads until the outcome of change `id` is in (it may already be).
    pub async fn until_outcome(&mut self, id: &str) -> Outcome {
        let deadline = tokio::time::Instant::now() + STREAM_WAIT;
        loop {
            if let Some((_, outcome)) = self.outcomes.iter().find(|(i, _)| i.0 == id) {
                return outcome.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "outcome of {id} not received; last frames: {:#?}",
                self.tail()
            );
            self.next().await;
        }
    }

    /// Sends `ping` and reads until `pong`: every frame the server sent
    /// before answering is then in the log.
    pub async fn ping(&mut self) {
        self.send(&ClientMessage::Ping).await;
        self.until("pong", |m| matches!(m, ServerMessage::Pong).then_some(()))
            .await;
    }

    /// Expects an `error` frame with `code` next (skipping nothing); returns its message.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        self.expect_error_for(code, "the request").await
    }

    /// Like [`WsClient::expect_error`], naming `what` was refused in a failure.
    pub async fn expect_error_for(&mut self, code: ErrorCode, what: &str) -> String {
        match self.next_message().await {
            Some(ServerMessage::Error { code: got, message }) => {
                assert_eq!(got, code, "{what}: error code (message: {message})");
                message
            }
            other => panic!("{what}: expected an error {code:?}, got {other:?}"),
        }
    }

    /// Expects the server to close the connection next.
    pub async fn expect_closed(&mut self) -> Option<CloseFrame> {
        match self.next_frame().await {
            Frame::Closed(frame) => frame,
            Frame::Message(message) => panic!("expected the connection to close, got {message:?}"),
        }
    }

    /// The last frames received (each cut to 300 bytes), for failure messages.
    pub fn tail(&self) -> Vec<String> {
        let n = self.log.len();
        self.log[n.saturating_sub(20)..]
            .iter()
            .map(|frame| match frame.char_indices().nth(300) {
                Some((cut, _)) => format!("{}…", &frame[..cut]),
                None => frame.clone(),
            })
            .collect()
    }
}
