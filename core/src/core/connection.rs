//! The connection: `hello` and the handshake, keepalive closes and
//! reconnects, and the dispatch of server frames.

use thoonk_protocol::{
    ChangeId, ClientMessage, ErrorCode, FeedPattern, ServerMessage, ServerState, PROTOCOL_VERSION,
};

use crate::effects::{Notification, Status};
use crate::error::{CoreError, ServerFault};
use crate::rng::backoff;

use super::{Conn, SyncCore};

impl SyncCore {
    /// The connection the core asked for is open: the core sends `hello`.
    pub fn connected(&mut self, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if matches!(self.conn, Conn::Unauthorized | Conn::Halted) {
            return Ok(());
        }
        self.effects.send.push(ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            token: self.config.token.clone(),
            client_id: self.client_id.clone(),
        });
        self.conn = Conn::Handshake {
            deadline: now + self.config.timing.handshake_timeout,
        };
        self.set_status(Status::Connecting);
        self.finish(now);
        Ok(())
    }

    /// The connection closed or could not be opened. Idempotent.
    pub fn disconnected(&mut self, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        self.go_offline(now);
        self.finish(now);
        Ok(())
    }

    /// A new token after [`Status::Unauthorized`] (or at any time, for the next connection).
    pub fn set_token(&mut self, token: impl Into<String>, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        self.config.token = token.into();
        if matches!(self.conn, Conn::Unauthorized) {
            self.conn = Conn::Offline { reconnect_at: now };
            self.set_status(Status::Offline);
        }
        self.finish(now);
        Ok(())
    }

    /// A frame from the server. An `Err` reports a fault of the server or a
    /// protocol mismatch; the state stays consistent either way, and the
    /// effects must still be taken.
    pub fn handle_server(&mut self, msg: ServerMessage, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        let result = self.dispatch(msg, now);
        self.finish(now);
        result
    }

    fn dispatch(&mut self, msg: ServerMessage, now: u64) -> Result<(), CoreError> {
        match self.conn {
            Conn::Online { .. } => {
                self.conn = Conn::Online {
                    last_rx: now,
                    ping: None,
                }
            }
            Conn::Handshake { .. } => {}
            _ => return Ok(()),
        }
        let welcomed = matches!(self.conn, Conn::Online { .. });
        let mut jobs = Vec::new();
        let result = match msg {
            ServerMessage::Welcome {
                protocol,
                ledger_window_ms,
                ..
            } => return self.on_welcome(protocol, ledger_window_ms, now),
            ServerMessage::Error { code, message } => return self.on_error(code, message, now),
            ServerMessage::Pong => Ok(()),
            ServerMessage::Server { state } => {
                self.set_server_state(state);
                Ok(())
            }
            other if !welcomed => Err(ServerFault::BeforeWelcome(frame_name(&other)).into()),
            ServerMessage::Subscribed { pattern, feeds } => {
                self.unanswered.remove(&pattern);
                if self.subscriptions.contains(&pattern) {
                    for feed in feeds.iter().filter(|f| pattern.matches(f)) {
                        self.mirror.expect(feed, now, &self.config.timing);
                    }
                }
                Ok(())
            }
            ServerMessage::Snapshot {
                feed,
                epoch,
                rev,
                items,
            } if self.follows(&feed) => self
                .mirror
                .on_snapshot(&feed, epoch, rev, items, &mut self.journal, &mut jobs)
                .map_err(CoreError::from),
            ServerMessage::Changes {
                feed,
                epoch,
                events,
            } if self.follows(&feed) => self
                .mirror
                .on_changes(&feed, epoch, events, &mut self.journal, &mut jobs)
                .map_err(CoreError::from),
            ServerMessage::Event {
                feed,
                epoch,
                rev,
                change,
            } if self.follows(&feed) => {
                self.mirror
                    .on_event(&feed, epoch, rev, change, &mut self.journal, &mut jobs);
                Ok(())
            }
            ServerMessage::Snapshot { .. }
            | ServerMessage::Changes { .. }
            | ServerMessage::Event { .. } => Ok(()),
            ServerMessage::Ack { id } => {
                self.outbox
                    .ack(&id, now, &self.config.timing, &mut self.rng);
                Ok(())
            }
            ServerMessage::Outcome { id, outcome } => self.on_outcome(&id, outcome, now),
            // A batch's acks and outcomes: each as its own frame would be,
            // in order, in one input (one round, one store batch).
            ServerMessage::Acks { ids } => {
                for id in &ids {
                    self.outbox.ack(id, now, &self.config.timing, &mut self.rng);
                }
                Ok(())
            }
            ServerMessage::Outcomes { outcomes } => {
                // Every outcome is settled even when one fails (a resolver
                // error): the first error is reported.
                let mut result = Ok(());
                for o in outcomes {
                    let settled = self.on_outcome(&o.id, o.outcome, now);
                    if result.is_ok() {
                        result = settled;
                    }
                }
                result
            }
        };
        for job in jobs {
            let wire = ChangeId(job);
            if let Some(seq) = self.outbox.seq_of_wire(&wire) {
                if self
                    .outbox
                    .get(seq)
                    .is_some_and(|e| e.record.accepted.is_some())
                {
                    self.drop_entry(seq);
                }
            }
        }
        self.settle_accepted();
        result
    }

    fn on_welcome(
        &mut self,
        protocol: u32,
        ledger_window: Option<u64>,
        now: u64,
    ) -> Result<(), CoreError> {
        if protocol != PROTOCOL_VERSION {
            self.halt(format!(
                "the server speaks protocol {protocol}, this client {PROTOCOL_VERSION}"
            ));
            return Err(CoreError::ProtocolMismatch {
                client: PROTOCOL_VERSION,
                server: protocol,
            });
        }
        self.conn = Conn::Online {
            last_rx: now,
            ping: None,
        };
        self.reconnects = 0;
        self.ledger_window = ledger_window;
        // A new session starts available; the server says when it is not.
        self.set_server_state(ServerState::Available);
        self.set_status(Status::Online);
        let patterns: Vec<FeedPattern> = self.subscriptions.iter().cloned().collect();
        for pattern in patterns {
            self.send_subscribe(pattern, now);
        }
        Ok(())
    }

    fn on_error(&mut self, code: ErrorCode, message: String, now: u64) -> Result<(), CoreError> {
        match code {
            ErrorCode::Unauthorized => {
                self.effects.close = true;
                self.go_offline(now);
                self.conn = Conn::Unauthorized;
                self.set_status(Status::Unauthorized);
            }
            ErrorCode::TooLarge => self.settle_refused_frame(&message, now),
            ErrorCode::UnsupportedVersion => {
                self.halt(format!(
                    "the server refused the protocol version: {message}"
                ));
                return Err(CoreError::ProtocolMismatch {
                    client: PROTOCOL_VERSION,
                    server: 0,
                });
            }
            _ => {}
        }
        self.effects
            .notify
            .push(Notification::ServerError { code, message });
        Ok(())
    }

    fn halt(&mut self, reason: String) {
        self.conn = Conn::Halted;
        self.effects.close = true;
        self.outbox.reset_sends();
        self.mirror.forget_requests();
        self.set_status(Status::Stopped { reason });
    }

    pub(super) fn close(&mut self, now: u64) {
        self.effects.close = true;
        self.go_offline(now);
    }

    fn go_offline(&mut self, now: u64) {
        if matches!(
            self.conn,
            Conn::Offline { .. } | Conn::Unauthorized | Conn::Halted
        ) {
            return;
        }
        let delay = backoff(
            self.config.timing.reconnect_base,
            self.config.timing.reconnect_max,
            self.reconnects,
            &mut self.rng,
        );
        self.reconnects = self.reconnects.saturating_add(1);
        self.conn = Conn::Offline {
            reconnect_at: now + delay,
        };
        self.outbox.reset_sends();
        self.mirror.forget_requests();
        self.unanswered.clear();
        self.set_status(Status::Offline);
    }
}

fn frame_name(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Welcome { .. } => "welcome",
        ServerMessage::Subscribed { .. } => "subscribed",
        ServerMessage::Snapshot { .. } => "snapshot",
        ServerMessage::Changes { .. } => "changes",
        ServerMessage::Event { .. } => "event",
        ServerMessage::Ack { .. } => "ack",
        ServerMessage::Outcome { .. } => "outcome",
        ServerMessage::Acks { .. } => "acks",
        ServerMessage::Outcomes { .. } => "outcomes",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Pong => "pong",
        ServerMessage::Server { .. } => "server",
    }
}
