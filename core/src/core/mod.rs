//! [`SyncCore`]: the sans-IO state machine that ties mirror, outbox, overlay,
//! conflicts and storage together.

use std::collections::{BTreeMap, BTreeSet};

use thoonk_protocol::SortedMap;

use thoonk_protocol::{Base, ChangeId, ClientMessage, FeedName, FeedPattern, ServerState};

use crate::config::Config;
use crate::effects::{Effects, ItemView, Notification, Status};
use crate::error::{CoreError, StorageFault};
use crate::items::OrderedItems;
use crate::journal::Journal;
use crate::mirror::{FeedMirror, Mirror, Retry};
use crate::outbox::Outbox;
use crate::outcome::OutcomeRecord;
use crate::resolver::{MergeResolver, Resolver};
use crate::rng::SplitMix64;
use crate::store::{ClientMeta, StoredItem, StoredState};
use crate::view;

mod changes;
mod connection;
mod outcomes;
mod persist;
mod reads;
mod subscriptions;

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
    unanswered: SortedMap<FeedPattern, Retry>,
    mirror: Mirror,
    outbox: Outbox,
    outcomes: BTreeMap<ChangeId, OutcomeRecord>,
    resolver: Box<dyn Resolver>,
    journal: Journal,
    effects: Effects,
    views: SortedMap<FeedName, Vec<ItemView>>,
    /// Feeds whose view changed since the effects were last taken: their
    /// notifications are built once, when the effects are taken, however
    /// many inputs changed them (a replay of many `changes` frames).
    stale_views: BTreeSet<FeedName>,
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
        // Items are moved into the mirror, not copied (a cold start on a
        // large cache spends its time here).
        let mut by_feed: SortedMap<FeedName, Vec<StoredItem>> = SortedMap::new();
        let mut orphans: BTreeSet<FeedName> = BTreeSet::new();
        for ((feed, _), item) in state.items {
            if state.feeds.contains_key(&feed) {
                by_feed.entry(feed).or_default().push(item);
            } else {
                orphans.insert(feed);
            }
        }
        let mut mirror = Mirror::default();
        for (feed, head) in &state.feeds {
            let keyed = by_feed
                .remove(feed)
                .unwrap_or_default()
                .into_iter()
                .map(|i| (i.id, i.value, i.rev, i.order));
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
        journal.cleared.extend(orphans);
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
            unanswered: SortedMap::new(),
            mirror,
            outbox,
            outcomes: state.outcomes,
            resolver: Box::new(MergeResolver),
            journal,
            effects,
            views: SortedMap::new(),
            stale_views: BTreeSet::new(),
            storage_error: None,
            ledger_window: None,
        };
        // Inserted, not collected: collecting into a `BTreeSet` sorts first,
        // and each collected type adds its own sort to the bundle.
        let mut feeds = BTreeSet::new();
        feeds.extend(
            core.mirror.feeds.keys().cloned().chain(
                core.outbox
                    .iter()
                    .filter_map(|e| e.record.op.feed().cloned()),
            ),
        );
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

    /// Takes the conflict resolver out (leaving [`MergeResolver`]), to hand
    /// it to the core reopened after a store failure.
    pub fn take_resolver(&mut self) -> Box<dyn Resolver> {
        std::mem::replace(&mut self.resolver, Box::new(MergeResolver))
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
    /// The view notifications are built now: one per feed whose view
    /// changed since the last call, however many inputs changed it.
    pub fn take_effects(&mut self) -> Effects {
        for feed in std::mem::take(&mut self.stale_views) {
            let new = self.build_view(&feed);
            let old = self.views.remove(&feed).unwrap_or_default();
            if let Some(n) = view::diff(&feed, &old, &new) {
                self.effects.notify.push(n);
            }
            if !new.is_empty() || self.mirror.feeds.contains_key(&feed) {
                self.views.insert(feed, new);
            }
        }
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
}
