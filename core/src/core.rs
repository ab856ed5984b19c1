//! [`SyncCore`]: the sans-IO state machine that ties mirror, outbox, overlay,
//! conflicts and storage together.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use thoonk_protocol::{
    Base, ChangeId, ChangeRequest, ClientMessage, ErrorCode, FeedName, FeedPattern, FeedPosition,
    ItemId, Operation, Outcome, Position, ServerMessage, ServerState, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};

use crate::config::Config;
use crate::effects::{Effects, ItemView, Notification, Status};
use crate::error::{CoreError, ServerFault, StorageFault};
use crate::items::OrderedItems;
use crate::journal::Journal;
use crate::mirror::{FeedMirror, Mirror, Retry};
use crate::outbox::{frame_len, item_of, Outbox};
use crate::outcome::{ChangeOutcome, ConflictCase, OutcomeRecord, ResolutionKind};
use crate::resolver::{MergeResolver, Resolution, Resolver};
use crate::rng::{backoff, SplitMix64};
use crate::store::{
    AcceptedRecord, ClientMeta, FeedHead, OutboxRecord, StoreBatch, StoreWrite, StoredItem,
    StoredState,
};
use crate::view;

/// A change is given up when its age reaches the ledger window less this
/// fraction of it (1/10): room for a resend in flight to arrive while the
/// server still remembers the id.
const LEDGER_MARGIN: u64 = 10;

/// The connection as the core tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    /// No connection; open one at `reconnect_at`.
    Offline { reconnect_at: u64 },
    /// The shell was asked to open a connection.
    Opening,
    /// `hello` sent; `welcome` due by `deadline`.
    Handshake { deadline: u64 },
    /// In session. `ping` is when an unanswered ping was sent.
    Online { last_rx: u64, ping: Option<u64> },
    /// The token was refused; waiting for a new one.
    Unauthorized,
    /// Stopped for good (protocol mismatch or storage failure).
    Halted,
}

/// The client sync core. See the crate documentation for how a shell drives it.
pub struct SyncCore {
    config: Config,
    client_id: String,
    next_seq: u64,
    rng: SplitMix64,
    conn: Conn,
    reconnects: u32,
    status: Status,
    /// What the server last said of its storage on this connection.
    server: ServerState,
    subscriptions: BTreeSet<FeedPattern>,
    /// Subscriptions sent on this connection and not yet answered.
    unanswered: BTreeMap<FeedPattern, Retry>,
    mirror: Mirror,
    outbox: Outbox,
    outcomes: BTreeMap<ChangeId, OutcomeRecord>,
    resolver: Box<dyn Resolver>,
    journal: Journal,
    effects: Effects,
    views: BTreeMap<FeedName, Vec<ItemView>>,
    /// Feeds whose view changed since the effects were last taken.
    dirty_views: BTreeSet<FeedName>,
    storage_error: Option<String>,
    /// The server's exactly-once window (`welcome`), once told.
    ledger_window: Option<u64>,
}

impl SyncCore {
    /// Opens the core over the state loaded from the store (empty for a new
    /// store). The first effects ask the shell to connect and deliver the
    /// stored outcomes again.
    pub fn open(config: Config, state: StoredState, now: u64) -> Result<Self, CoreError> {
        let mut journal = Journal::default();
        let meta = match state.meta.clone() {
            Some(meta) => meta,
            None => {
                journal.meta = true;
                ClientMeta {
                    client_id: config.client_id.clone(),
                    next_seq: 1,
                }
            }
        };
        if meta.client_id.is_empty() {
            return Err(StorageFault::Corrupt("the stored client id is empty".into()).into());
        }
        let mut mirror = Mirror::default();
        for (feed, head) in &state.feeds {
            let keyed = state
                .feed_items(feed)
                .into_iter()
                .map(|i| (i.id.clone(), i.value.clone(), i.rev, i.order));
            let (items, renumbered) = OrderedItems::from_keyed(keyed);
            if renumbered {
                for id in items.ids() {
                    journal.item(feed, &id);
                }
            }
            let m = mirror
                .feeds
                .entry(feed.clone())
                .or_insert_with(FeedMirror::default);
            m.head = Some(*head);
            m.items = items;
        }
        let orphans: BTreeSet<&FeedName> = state
            .items
            .keys()
            .map(|(f, _)| f)
            .filter(|f| !state.feeds.contains_key(*f))
            .collect();
        for feed in orphans {
            journal.cleared.insert(feed.clone());
        }
        let mut outbox = Outbox::default();
        let mut highest = 0;
        for mut record in state.outbox.into_values() {
            highest = highest.max(record.seq);
            // A base stored without its epoch is unknown: epoch 0 is never real.
            let mut legacy = false;
            for base in record.base.values_mut() {
                if let Base::Rev(rev) = *base {
                    *base = Base::at(0, rev);
                    legacy = true;
                }
            }
            if legacy {
                journal.outbox.insert(record.seq);
            }
            outbox.push(record);
        }
        let next_seq = meta.next_seq.max(highest + 1);
        if next_seq != meta.next_seq {
            journal.meta = true;
        }
        let mut effects = Effects {
            connect: true,
            ..Effects::default()
        };
        for record in state.outcomes.values() {
            effects.notify.push(Notification::Outcome {
                change: record.id.clone(),
                outcome: record.outcome.clone(),
            });
        }
        let mut core = Self {
            rng: SplitMix64::new(config.seed),
            config,
            client_id: meta.client_id,
            next_seq,
            conn: Conn::Opening,
            reconnects: 0,
            status: Status::Connecting,
            server: ServerState::Available,
            subscriptions: state.subscriptions,
            unanswered: BTreeMap::new(),
            mirror,
            outbox,
            outcomes: state.outcomes,
            resolver: Box::new(MergeResolver),
            journal,
            effects,
            views: BTreeMap::new(),
            dirty_views: BTreeSet::new(),
            storage_error: None,
            ledger_window: None,
        };
        let feeds: BTreeSet<FeedName> = core
            .mirror
            .feeds
            .keys()
            .cloned()
            .chain(
                core.outbox
                    .iter()
                    .filter_map(|e| e.record.op.feed().cloned()),
            )
            .collect();
        for feed in feeds {
            let built = core.build_view(&feed);
            core.views.insert(feed, built);
        }
        core.journal.views.clear();
        core.finish(now);
        Ok(core)
    }

    /// Replaces the conflict resolver (the default is [`MergeResolver`]).
    pub fn set_resolver(&mut self, resolver: Box<dyn Resolver>) {
        self.resolver = resolver;
    }

    /// The client id (the prefix of every change id).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The connection state.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Whether the server can reach its storage, as it last said on this
    /// connection (`available` until it says otherwise). Independent of
    /// [`SyncCore::status`]: an online client of an unavailable server keeps
    /// its changes pending until the server is back.
    pub fn server_state(&self) -> ServerState {
        self.server
    }

    /// Takes the effects accumulated since the last call (see [`Effects`]).
    pub fn take_effects(&mut self) -> Effects {
        self.notify_views();
        std::mem::take(&mut self.effects)
    }

    /// The next time [`SyncCore::handle_timeout`] has work, in the same
    /// milliseconds as `now`.
    pub fn poll_timeout(&self) -> Option<u64> {
        let online = match self.conn {
            Conn::Offline { reconnect_at } => return Some(reconnect_at),
            Conn::Handshake { deadline } => return Some(deadline),
            Conn::Online { last_rx, ping } => Some(match ping {
                Some(sent) => sent + self.config.timing.pong_timeout,
                None => last_rx + self.config.timing.ping_interval,
            }),
            Conn::Opening | Conn::Unauthorized | Conn::Halted => return None,
        };
        [
            online,
            self.outbox.next_deadline(),
            self.mirror.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- inputs: connection ------------------------------------------------

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

    /// The shell could not apply a store batch. The core stops (nothing more
    /// is sent) and must be reopened from the store, which still holds the
    /// last batch that succeeded, outbox included.
    pub fn storage_failed(&mut self, error: impl Into<String>) {
        let error = error.into();
        self.storage_error = Some(error.clone());
        self.conn = Conn::Halted;
        self.effects = Effects {
            close: true,
            ..Effects::default()
        };
        self.set_status(Status::Stopped {
            reason: format!("local storage failed: {error}"),
        });
    }

    /// The sequence number the next local change gets (its change id is
    /// `"<client_id>:<seq>"`).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// After a reopen from the store: makes sure no sequence number below
    /// `floor` is given again, although the store never heard of it (a change
    /// whose batch failed had it; its id must never name another change).
    /// The raised number is written with the next batch.
    pub fn reserve_seqs_below(&mut self, floor: u64, now: u64) {
        if floor > self.next_seq {
            self.next_seq = floor;
            self.journal.meta = true;
            self.finish(now);
        }
    }

    /// Takes the conflict resolver out (leaving [`MergeResolver`]), to hand
    /// it to the core reopened after a store failure.
    pub fn take_resolver(&mut self) -> Box<dyn Resolver> {
        std::mem::replace(&mut self.resolver, Box::new(MergeResolver))
    }

    /// Timers: reconnect, handshake and keepalive, resends and replay retries.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        match self.conn {
            Conn::Offline { reconnect_at } if reconnect_at <= now => {
                self.conn = Conn::Opening;
                self.effects.connect = true;
                self.set_status(Status::Connecting);
            }
            Conn::Handshake { deadline } if deadline <= now => self.close(now),
            Conn::Online {
                ping: Some(sent), ..
            } if sent + self.config.timing.pong_timeout <= now => self.close(now),
            Conn::Online {
                last_rx,
                ping: None,
            } if last_rx + self.config.timing.ping_interval <= now => {
                self.effects.send.push(ClientMessage::Ping);
                self.conn = Conn::Online {
                    last_rx,
                    ping: Some(now),
                };
            }
            _ => {}
        }
        self.finish(now);
        Ok(())
    }

    // ---- inputs: server ----------------------------------------------------

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

    // ---- inputs: subscriptions ---------------------------------------------

    /// Follows a feed name or pattern, now and after restarts.
    pub fn subscribe(&mut self, pattern: FeedPattern, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if self.subscriptions.insert(pattern.clone()) {
            self.journal.subscriptions.insert(pattern.clone());
            if matches!(self.conn, Conn::Online { .. }) {
                self.send_subscribe(pattern, now);
            }
        }
        self.finish(now);
        Ok(())
    }

    /// Stops following a pattern; feeds no other subscription matches are
    /// dropped from the mirror (pending changes to them stay in the outbox).
    pub fn unsubscribe(&mut self, pattern: &FeedPattern, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if self.subscriptions.remove(pattern) {
            self.unanswered.remove(pattern);
            self.journal.subscriptions.insert(pattern.clone());
            if matches!(self.conn, Conn::Online { .. }) {
                self.effects.send.push(ClientMessage::Unsubscribe {
                    pattern: pattern.clone(),
                });
            }
            let dropped: Vec<FeedName> = self
                .mirror
                .feeds
                .keys()
                .filter(|f| !self.follows(f))
                .cloned()
                .collect();
            for feed in dropped {
                self.mirror.feeds.remove(&feed);
                self.journal.clear(&feed);
            }
        }
        self.finish(now);
        Ok(())
    }

    fn send_subscribe(&mut self, pattern: FeedPattern, now: u64) {
        let attempt = self.unanswered.get(&pattern).map_or(0, |r| r.attempt + 1);
        let t = &self.config.timing;
        let delay = backoff(
            t.replay_timeout,
            t.replay_timeout_max,
            attempt,
            &mut self.rng,
        );
        self.unanswered.insert(
            pattern.clone(),
            Retry {
                deadline: now + delay,
                attempt,
            },
        );
        let known: BTreeMap<FeedName, FeedPosition> = self
            .mirror
            .feeds
            .iter()
            .filter(|(f, _)| pattern.matches(f))
            .filter_map(|(f, m)| {
                m.head.map(|h| {
                    (
                        f.clone(),
                        FeedPosition {
                            epoch: h.epoch,
                            rev: h.rev,
                        },
                    )
                })
            })
            .collect();
        self.effects
            .send
            .push(ClientMessage::Subscribe { pattern, known });
    }

    fn follows(&self, feed: &FeedName) -> bool {
        self.subscriptions.iter().any(|p| p.matches(feed))
    }

    // ---- inputs: local changes ---------------------------------------------

    /// Publishes (adds or replaces) an item at `position` (the end by default).
    pub fn publish(
        &mut self,
        feed: FeedName,
        id: ItemId,
        item: Value,
        position: Option<Position>,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(
            Operation::Publish {
                feed,
                id,
                item,
                position,
            },
            now,
        )
    }

    /// Replaces an item's value.
    pub fn edit(
        &mut self,
        feed: FeedName,
        id: ItemId,
        item: Value,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(Operation::Edit { feed, id, item }, now)
    }

    /// Removes an item.
    pub fn retract(&mut self, feed: FeedName, id: ItemId, now: u64) -> Result<ChangeId, CoreError> {
        self.change(Operation::Retract { feed, id }, now)
    }

    /// Moves an item within its feed.
    pub fn move_item(
        &mut self,
        feed: FeedName,
        id: ItemId,
        position: Position,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(Operation::Move { feed, id, position }, now)
    }

    /// Runs a named server action with a JSON payload.
    pub fn action(
        &mut self,
        name: impl Into<String>,
        payload: Value,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(
            Operation::Action {
                name: name.into(),
                payload,
            },
            now,
        )
    }

    /// Makes any local change: it gets its change id and base revision, goes
    /// into the outbox and the overlay in the same store batch, and is sent
    /// when its lane is free.
    pub fn change(&mut self, op: Operation, now: u64) -> Result<ChangeId, CoreError> {
        self.queue_change(None, op, now)
    }

    /// Makes a local change under an id the caller chose (`"<client_id>:<suffix>"`,
    /// unique among this client's changes), e.g. another tab forwarding a
    /// change it made. Idempotent: when a change with this id is already in the
    /// outbox or has a stored outcome, nothing happens, so a caller that does
    /// not know whether its first attempt was stored may simply try again.
    pub fn change_with_id(
        &mut self,
        id: ChangeId,
        op: Operation,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        let own =
            id.0.strip_prefix(self.client_id.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|suffix| !suffix.is_empty() && suffix.len() <= 64);
        if !own {
            return Err(CoreError::Usage(format!(
                "change id {:?} must be `{}:` followed by 1-64 bytes",
                id.0, self.client_id
            )));
        }
        if self.outcomes.contains_key(&id) || self.outbox.iter().any(|e| e.record.id == id) {
            return Ok(id);
        }
        self.queue_change(Some(id), op, now)
    }

    fn queue_change(
        &mut self,
        id: Option<ChangeId>,
        op: Operation,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.check_usable()?;
        if let Operation::Action { name, .. } = &op {
            if name.is_empty() {
                return Err(CoreError::Usage("an action needs a name".into()));
            }
        }
        let base = op
            .feed()
            .map(|f| {
                let head = self.mirror.head(f).unwrap_or(FeedHead { epoch: 0, rev: 0 });
                BTreeMap::from([(f.clone(), Base::at(head.epoch, head.rev))])
            })
            .unwrap_or_default();
        // Refused now, or it would wait in the outbox for an outcome the
        // server can never give (it does not read the frame). Measured with
        // the longest id the change can get.
        let change = ChangeRequest {
            id: id
                .clone()
                .unwrap_or_else(|| ChangeId::new(&self.client_id, u64::MAX)),
            op,
            base,
        };
        let bytes = change.submit_frame_len();
        if bytes > MAX_FRAME_BYTES {
            return Err(CoreError::TooLarge {
                bytes,
                limit: MAX_FRAME_BYTES,
            });
        }
        let ChangeRequest { op, base, .. } = change;
        let seq = self.allocate_seq();
        let id = id.unwrap_or_else(|| ChangeId::new(&self.client_id, seq));
        if let Some(feed) = op.feed() {
            self.journal.views.insert(feed.clone());
        }
        self.outbox.push(OutboxRecord {
            seq,
            id: id.clone(),
            wire_id: id.clone(),
            op,
            base,
            created_at: now,
            conflicts: 0,
            resolution: None,
            accepted: None,
        });
        self.journal.outbox.insert(seq);
        self.finish(now);
        Ok(id)
    }

    /// Forgets a stored outcome (the app has shown it); an item it marked
    /// rejected goes back to its confirmed state.
    pub fn dismiss_outcome(&mut self, id: &ChangeId, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if let Some(record) = self.outcomes.remove(id) {
            self.journal.outcomes.insert(id.clone());
            if let Some(feed) = record.op.feed() {
                self.journal.views.insert(feed.clone());
            }
        }
        self.finish(now);
        Ok(())
    }

    // ---- reads -------------------------------------------------------------

    /// The app's view of a feed: confirmed items with pending changes laid over them.
    pub fn view(&self, feed: &FeedName) -> Vec<ItemView> {
        self.build_view(feed)
    }

    /// The mirrored `(epoch, rev)` of a feed.
    pub fn position(&self, feed: &FeedName) -> Option<FeedHead> {
        self.mirror.head(feed)
    }

    /// The confirmed items of a feed in order: `(id, value, rev)`.
    pub fn confirmed(&self, feed: &FeedName) -> Vec<(ItemId, Value, u64)> {
        self.mirror
            .feeds
            .get(feed)
            .map(|m| {
                m.items
                    .iter()
                    .map(|(id, i)| (id.clone(), i.value.clone(), i.rev))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The mirrored feeds.
    pub fn feeds(&self) -> Vec<FeedName> {
        self.mirror
            .feeds
            .iter()
            .filter(|(_, m)| m.head.is_some())
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Changes not yet confirmed, oldest first.
    pub fn pending(&self) -> Vec<OutboxRecord> {
        self.outbox.iter().map(|e| e.record.clone()).collect()
    }

    /// Stored outcomes, by change id.
    pub fn outcomes(&self) -> &BTreeMap<ChangeId, OutcomeRecord> {
        &self.outcomes
    }

    /// Everything the store should hold after the last batch: what
    /// [`crate::Store::load`] must give back. Useful to check a store.
    pub fn stored_state(&self) -> StoredState {
        let mut state = StoredState {
            meta: Some(self.meta()),
            subscriptions: self.subscriptions.clone(),
            outcomes: self.outcomes.clone(),
            ..StoredState::default()
        };
        for (feed, m) in &self.mirror.feeds {
            if let Some(head) = m.head {
                state.feeds.insert(feed.clone(), head);
                for (id, _) in m.items.iter() {
                    let item = self.stored_item(feed, id).expect("listed above");
                    state.items.insert((feed.clone(), id.clone()), item);
                }
            }
        }
        for entry in self.outbox.iter() {
            state.outbox.insert(entry.record.seq, entry.record.clone());
        }
        state
    }

    // ---- outcomes and conflicts --------------------------------------------

    fn on_outcome(&mut self, wire: &ChangeId, outcome: Outcome, now: u64) -> Result<(), CoreError> {
        let Some(seq) = self.outbox.seq_of_wire(wire) else {
            return Ok(());
        };
        let entry = self.outbox.get(seq).expect("found above");
        if entry.record.accepted.is_some() {
            return Ok(());
        }
        match outcome {
            Outcome::Accepted {
                result,
                revs,
                epochs: told,
            } => {
                let final_outcome = match entry.record.resolution {
                    None => ChangeOutcome::Accepted {
                        result,
                        revs: revs.clone(),
                    },
                    Some(resolution) => ChangeOutcome::ConflictResolved {
                        resolution,
                        result,
                        revs: revs.clone(),
                    },
                };
                // The epochs the server names (a late outcome may be of an
                // epoch the mirror has left), else the mirror's.
                let epochs = revs
                    .keys()
                    .filter_map(|f| {
                        let epoch = told
                            .get(f)
                            .copied()
                            .or_else(|| self.mirror.head(f).map(|h| h.epoch))?;
                        Some((f.clone(), epoch))
                    })
                    .collect();
                self.record_outcome(seq, final_outcome, now);
                for later in self.outbox.rebase_after(seq, &revs, &epochs) {
                    self.journal.outbox.insert(later);
                }
                self.outbox.release_after(seq, false);
                let entry = self.outbox.get_mut(seq).expect("found above");
                entry.record.accepted = Some(AcceptedRecord { revs, epochs });
                self.journal.outbox.insert(seq);
                Ok(())
            }
            Outcome::Rejected { code, message } => {
                self.record_outcome(seq, ChangeOutcome::Rejected { code, message }, now);
                self.outbox.release_after(seq, false);
                self.drop_entry(seq);
                Ok(())
            }
            Outcome::Conflict {
                feed,
                id,
                base,
                unknown_base,
                epoch,
                current,
                rev,
                ..
            } => {
                // A server that does not name the epoch: the mirror's, if any.
                let epoch = match epoch {
                    0 => self.mirror.head(&feed).map_or(0, |h| h.epoch),
                    e => e,
                };
                // The server did not attempt the changes after it in its batch.
                self.outbox.release_after(seq, true);
                let conflict = Conflict {
                    base: (!unknown_base).then_some(base),
                    current,
                    at: FeedHead { epoch, rev },
                };
                self.on_conflict(seq, feed, id, conflict, now)
            }
        }
    }

    fn on_conflict(
        &mut self,
        seq: u64,
        feed: FeedName,
        id: ItemId,
        conflict: Conflict,
        now: u64,
    ) -> Result<(), CoreError> {
        let Conflict { base, current, at } = conflict;
        let rev = at.rev;
        let record = self.outbox.get(seq).expect("caller checked").record.clone();
        let ours = match &record.op {
            Operation::Publish { item, .. } | Operation::Edit { item, .. } => Some(item.clone()),
            Operation::Retract { .. } => None,
            Operation::Move { .. } | Operation::Action { .. } => current.clone(),
        };
        let case = ConflictCase {
            change: record.id.clone(),
            feed: feed.clone(),
            id: id.clone(),
            unknown_base: base.is_none(),
            base: base.flatten(),
            ours,
            theirs: current.clone(),
            rev,
        };
        let unresolved = |case: ConflictCase, reason: String| ChangeOutcome::Unresolved {
            conflict: case,
            reason,
        };
        if record.conflicts + 1 > self.config.max_conflict_rounds {
            let reason = format!("ran into {} conflicts in a row", record.conflicts + 1);
            self.record_outcome(seq, unresolved(case, reason), now);
            self.drop_entry(seq);
            return Ok(());
        }
        let resolution = match &record.op {
            Operation::Action { .. } => {
                Resolution::Unresolved("a named action is not merged".into())
            }
            Operation::Move { .. } => Resolution::KeepOurs,
            _ if item_of(&record.op) != Some((&feed, &id)) => {
                Resolution::Unresolved("the conflict names another item".into())
            }
            _ => match self.resolver.resolve(&case) {
                Ok(resolution) => resolution,
                Err(err) => {
                    self.record_outcome(seq, unresolved(case, err.to_string()), now);
                    self.drop_entry(seq);
                    return Err(err.into());
                }
            },
        };
        let settled = |resolution| ChangeOutcome::ConflictResolved {
            resolution,
            result: Value::Null,
            revs: BTreeMap::new(),
        };
        let (value, kind) = match resolution {
            Resolution::KeepTheirs => {
                self.record_outcome(seq, settled(ResolutionKind::KeptTheirs), now);
                self.drop_entry(seq);
                return Ok(());
            }
            Resolution::DropOurs => {
                self.record_outcome(seq, settled(ResolutionKind::DroppedOurs), now);
                self.drop_entry(seq);
                return Ok(());
            }
            Resolution::Unresolved(reason) => {
                self.record_outcome(seq, unresolved(case, reason), now);
                self.drop_entry(seq);
                return Ok(());
            }
            Resolution::KeepOurs => (case.ours.clone(), ResolutionKind::KeptOurs),
            Resolution::Merged(value) => (value, ResolutionKind::Merged),
        };
        let op = match (&record.op, value) {
            (Operation::Move { .. }, _) => record.op.clone(),
            (Operation::Publish { position, .. }, Some(item)) => Operation::Publish {
                feed: feed.clone(),
                id,
                item,
                position: position.clone(),
            },
            (_, Some(item)) if current.is_some() => Operation::Edit {
                feed: feed.clone(),
                id,
                item,
            },
            (_, Some(item)) => Operation::Publish {
                feed: feed.clone(),
                id,
                item,
                position: None,
            },
            (_, None) if current.is_some() => Operation::Retract {
                feed: feed.clone(),
                id,
            },
            (_, None) => {
                self.record_outcome(seq, settled(ResolutionKind::KeptTheirs), now);
                self.drop_entry(seq);
                return Ok(());
            }
        };
        let base = BTreeMap::from([(feed.clone(), Base::at(at.epoch, at.rev))]);
        // Measured with the longest id the resubmission can get: a value the
        // server would refuse to read settles now instead of being resent forever.
        let bytes = ChangeRequest {
            id: ChangeId::new(&self.client_id, u64::MAX),
            op: op.clone(),
            base: base.clone(),
        }
        .submit_frame_len();
        if bytes > MAX_FRAME_BYTES {
            let reason = format!(
                "too_large: the resolved change needs {bytes} bytes, over the \
                 {MAX_FRAME_BYTES}-byte frame limit"
            );
            self.record_outcome(seq, unresolved(case, reason), now);
            self.drop_entry(seq);
            return Ok(());
        }
        let wire_seq = self.allocate_seq();
        let wire_id = ChangeId::new(&self.client_id, wire_seq);
        let entry = self.outbox.get_mut(seq).expect("caller checked");
        entry.record.wire_id = wire_id;
        entry.record.op = op;
        entry.record.base = base;
        entry.record.conflicts += 1;
        entry.record.resolution = Some(kind);
        entry.send = crate::outbox::SendState::Unsent;
        self.journal.outbox.insert(seq);
        self.journal.views.insert(feed);
        Ok(())
    }

    /// Settles the changes that must not be sent (again): one whose `submit`
    /// frame exceeds the frame limit (the server would not read it, so it
    /// could never get an outcome), and one queued longer than the server's
    /// exactly-once window (the ledger may have forgotten its id, and a
    /// resend could apply it twice). Accepted changes are never resent, so
    /// they stay.
    /// True when it settled something.
    fn settle_unsendable(&mut self, now: u64) -> bool {
        let window = self.ledger_window;
        // Only what is about to be sent is measured (a serialization each).
        let due: BTreeSet<u64> = self
            .outbox
            .due(now, self.config.max_batch)
            .into_iter()
            .collect();
        let doomed: Vec<(u64, ChangeOutcome)> = self
            .outbox
            .iter()
            .filter(|e| e.record.accepted.is_none())
            .filter_map(|e| {
                let r = &e.record;
                let bytes = if due.contains(&r.seq) {
                    frame_len(r)
                } else {
                    0
                };
                let age = now.saturating_sub(r.created_at);
                let (code, reason, case) = if bytes > MAX_FRAME_BYTES {
                    (
                        ErrorCode::TooLarge,
                        format!(
                            "too_large: the change needs {bytes} bytes, over the \
                             {MAX_FRAME_BYTES}-byte frame limit"
                        ),
                        // A resolved value is reported with its conflict.
                        r.resolution.and_then(|_| self.case_of(r)),
                    )
                } else if window.is_some_and(|w| age >= w - w / LEDGER_MARGIN) {
                    (
                        ErrorCode::Expired,
                        format!(
                            "expired: queued {age} ms ago, too close to the server's \
                             exactly-once window ({} ms): it may or may not have been \
                             applied, and resending could apply it twice",
                            window.unwrap_or_default()
                        ),
                        self.case_of(r),
                    )
                } else {
                    return None;
                };
                Some((r.seq, unsendable(code, reason, case)))
            })
            .collect();
        let settled = !doomed.is_empty();
        for (seq, outcome) in doomed {
            self.record_outcome(seq, outcome, now);
            self.drop_entry(seq);
        }
        settled
    }

    /// A `too_large` error names the size of the frame the server would not
    /// read (`frame of <n> bytes exceeds …`): a change whose `submit` frame
    /// has that size can never get an outcome, so it settles `too_large`
    /// instead of holding its lane forever (a server whose limit is below
    /// `MAX_FRAME_BYTES`).
    fn settle_refused_frame(&mut self, message: &str, now: u64) {
        let Some(bytes) = message
            .strip_prefix("frame of ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let refused: Vec<u64> = self
            .outbox
            .iter()
            .filter(|e| e.record.accepted.is_none())
            .filter(|e| frame_len(&e.record) == bytes)
            .map(|e| e.record.seq)
            .collect();
        for seq in refused {
            let record = self.outbox.get(seq).expect("listed above").record.clone();
            let reason = format!("too_large: the server refused its {bytes}-byte frame: {message}");
            let case = record.resolution.and_then(|_| self.case_of(&record));
            self.record_outcome(seq, unsendable(ErrorCode::TooLarge, reason, case), now);
            self.drop_entry(seq);
        }
    }

    /// The case an item change that cannot be sent is reported with: its
    /// value against the mirror's, on an unknown base. `None` for a change
    /// that writes no single item (a named action: reported rejected).
    fn case_of(&self, record: &OutboxRecord) -> Option<ConflictCase> {
        let (feed, id) = item_of(&record.op)?;
        let mirrored = self.mirror.feeds.get(feed);
        Some(ConflictCase {
            change: record.id.clone(),
            feed: feed.clone(),
            id: id.clone(),
            base: None,
            unknown_base: true,
            ours: match &record.op {
                Operation::Publish { item, .. } | Operation::Edit { item, .. } => {
                    Some(item.clone())
                }
                _ => None,
            },
            theirs: mirrored.and_then(|m| m.items.get(id).map(|i| i.value.clone())),
            rev: self.mirror.head(feed).map_or(0, |h| h.rev),
        })
    }

    fn record_outcome(&mut self, seq: u64, outcome: ChangeOutcome, now: u64) {
        let record = &self.outbox.get(seq).expect("caller checked").record;
        let stored = OutcomeRecord {
            id: record.id.clone(),
            seq,
            wire_id: record.wire_id.clone(),
            op: record.op.clone(),
            outcome: outcome.clone(),
            at: now,
        };
        if let Some(feed) = record.op.feed() {
            self.journal.views.insert(feed.clone());
        }
        self.effects.notify.push(Notification::Outcome {
            change: stored.id.clone(),
            outcome,
        });
        self.journal.outcomes.insert(stored.id.clone());
        self.outcomes.insert(stored.id.clone(), stored);
    }

    fn drop_entry(&mut self, seq: u64) {
        if let Some(entry) = self.outbox.remove(seq) {
            self.journal.outbox.insert(seq);
            if let Some(feed) = entry.record.op.feed() {
                self.journal.views.insert(feed.clone());
            }
        }
    }

    /// Accepted changes leave the overlay once the mirror shows them: it
    /// reached the revisions they produced, or moved to another epoch.
    fn settle_accepted(&mut self) {
        let done: Vec<u64> = self
            .outbox
            .iter()
            .filter_map(|e| {
                let accepted = e.record.accepted.as_ref()?;
                let shown = accepted
                    .revs
                    .iter()
                    .all(|(feed, rev)| match self.mirror.head(feed) {
                        Some(head) => {
                            head.rev >= *rev || accepted.epochs.get(feed) != Some(&head.epoch)
                        }
                        None => !self.follows(feed),
                    });
                shown.then_some(e.record.seq)
            })
            .collect();
        for seq in done {
            self.drop_entry(seq);
        }
    }

    // ---- plumbing ----------------------------------------------------------

    fn allocate_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.journal.meta = true;
        seq
    }

    fn meta(&self) -> ClientMeta {
        ClientMeta {
            client_id: self.client_id.clone(),
            next_seq: self.next_seq,
        }
    }

    fn check_usable(&self) -> Result<(), CoreError> {
        match &self.storage_error {
            Some(e) => Err(StorageFault::BatchFailed(e.clone()).into()),
            None => Ok(()),
        }
    }

    fn set_status(&mut self, status: Status) {
        if self.status != status {
            self.status = status.clone();
            self.effects.notify.push(Notification::Status { status });
        }
    }

    fn set_server_state(&mut self, state: ServerState) {
        if self.server != state {
            self.server = state;
            self.effects.notify.push(Notification::Server { state });
        }
    }

    fn halt(&mut self, reason: String) {
        self.conn = Conn::Halted;
        self.effects.close = true;
        self.outbox.reset_sends();
        self.mirror.forget_requests();
        self.set_status(Status::Stopped { reason });
    }

    fn close(&mut self, now: u64) {
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

    fn stored_item(&self, feed: &FeedName, id: &ItemId) -> Option<StoredItem> {
        let item = self.mirror.feeds.get(feed)?.items.get(id)?;
        Some(StoredItem {
            feed: feed.clone(),
            id: id.clone(),
            value: item.value.clone(),
            rev: item.rev,
            order: item.order,
        })
    }

    fn build_view(&self, feed: &FeedName) -> Vec<ItemView> {
        view::build(
            feed,
            self.mirror.feeds.get(feed).map(|m| &m.items),
            self.outbox.iter(),
            self.outcomes.values(),
        )
    }

    /// Ends an input: sends what is due, then turns the journal into one
    /// store batch and view notifications.
    fn finish(&mut self, now: u64) {
        if matches!(self.conn, Conn::Online { .. }) {
            let due: Vec<FeedPattern> = self
                .unanswered
                .iter()
                .filter(|(_, r)| r.deadline <= now)
                .map(|(p, _)| p.clone())
                .collect();
            for pattern in due {
                self.send_subscribe(pattern, now);
            }
            let timing = self.config.timing.clone();
            let awaited = self
                .outbox
                .awaited(|f| self.mirror.head(f).map(|h| h.epoch));
            self.mirror.poll_requests(
                now,
                &awaited,
                &timing,
                &mut self.rng,
                &mut self.effects.send,
            );
            // Settling a lane's head makes the next one due: measure it too.
            while self.settle_unsendable(now) {}
            self.outbox.poll_sends(
                now,
                &timing,
                self.config.max_batch,
                &mut self.rng,
                &mut self.effects.send,
            );
        }
        let journal = std::mem::take(&mut self.journal);
        let batch = self.batch_from(&journal);
        if !batch.is_empty() {
            match &mut self.effects.store {
                Some(pending) => pending.writes.extend(batch.writes),
                None => self.effects.store = Some(batch),
            }
        }
        // The views are rebuilt when the effects are taken: once for all the
        // inputs of a round (a drain's thousand outcomes, a burst of events),
        // not once per input.
        self.dirty_views.extend(journal.views);
    }

    /// Rebuilds the views of the feeds changed since the last call and
    /// queues their change notifications.
    fn notify_views(&mut self) {
        for feed in std::mem::take(&mut self.dirty_views) {
            let new = self.build_view(&feed);
            let old = self.views.remove(&feed).unwrap_or_default();
            if let Some(n) = view::diff(&feed, &old, &new) {
                self.effects.notify.push(n);
            }
            if !new.is_empty() || self.mirror.feeds.contains_key(&feed) {
                self.views.insert(feed, new);
            }
        }
    }

    fn batch_from(&self, journal: &Journal) -> StoreBatch {
        let mut writes = Vec::new();
        if journal.meta {
            writes.push(StoreWrite::PutMeta { meta: self.meta() });
        }
        for pattern in &journal.subscriptions {
            writes.push(if self.subscriptions.contains(pattern) {
                StoreWrite::PutSubscription {
                    pattern: pattern.clone(),
                }
            } else {
                StoreWrite::DeleteSubscription {
                    pattern: pattern.clone(),
                }
            });
        }
        for feed in &journal.cleared {
            writes.push(StoreWrite::ClearFeed { feed: feed.clone() });
        }
        for feed in &journal.heads {
            match self.mirror.head(feed) {
                Some(head) => writes.push(StoreWrite::PutFeed {
                    feed: feed.clone(),
                    head,
                }),
                None if !journal.cleared.contains(feed) => {
                    writes.push(StoreWrite::ClearFeed { feed: feed.clone() })
                }
                None => {}
            }
        }
        for (feed, id) in &journal.items {
            let mirrored = self.mirror.head(feed).is_some();
            match self.stored_item(feed, id) {
                Some(item) if mirrored => writes.push(StoreWrite::PutItem { item }),
                _ if journal.cleared.contains(feed) => {}
                _ => writes.push(StoreWrite::DeleteItem {
                    feed: feed.clone(),
                    id: id.clone(),
                }),
            }
        }
        for seq in &journal.outbox {
            writes.push(match self.outbox.get(*seq) {
                Some(entry) => StoreWrite::PutOutbox {
                    entry: entry.record.clone(),
                },
                None => StoreWrite::DeleteOutbox { seq: *seq },
            });
        }
        for id in &journal.outcomes {
            writes.push(match self.outcomes.get(id) {
                Some(outcome) => StoreWrite::PutOutcome {
                    outcome: outcome.clone(),
                },
                None => StoreWrite::DeleteOutcome { id: id.clone() },
            });
        }
        StoreBatch { writes }
    }
}

/// The outcome of a change that must not be sent: unresolved with its
/// conflict case when it has one, else rejected with `code`.
fn unsendable(code: ErrorCode, reason: String, case: Option<ConflictCase>) -> ChangeOutcome {
    match case {
        Some(conflict) => ChangeOutcome::Unresolved { conflict, reason },
        None => ChangeOutcome::Rejected {
            code,
            message: reason,
        },
    }
}

/// What a `conflict` outcome says, as the core uses it.
struct Conflict {
    /// The item at the base: `None` when the base is unknown.
    base: Option<Option<Value>>,
    /// The item now (`None`: absent).
    current: Option<Value>,
    /// The feed's epoch and revision the current value is of.
    at: FeedHead,
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
        ServerMessage::Error { .. } => "error",
        ServerMessage::Pong => "pong",
        ServerMessage::Server { .. } => "server",
    }
}
