//! The multi-tab protocol as a sans-IO state machine: one [`TabMachine`] per
//! client per tab.
//!
//! Rules. Every client on a database asks for the Web Lock named after it;
//! the holder leads once its store is open and claimed (fencing token): it
//! alone runs the sync core and holds the socket, and it broadcasts feed
//! changes, outcomes and its state. The others follow: they keep a copy of
//! the views their app follows, forward subscriptions, and forward each change
//! under an id they choose, `<client_id>:<tab>-<n>`. `n` comes from one
//! counter that lives as long as the machine, whatever roles it plays, so a
//! tab never names two changes alike (a reload is a new tab id). A forwarded
//! change is sent again, under the same id, to every new leader until one
//! answers; the leader queues it idempotently (`change_with_id`) and answers
//! once it is durable, so it reaches the outbox exactly once. A tab that
//! leads and loses the lock, or whose store answers "fenced", steps aside at
//! once (it may no longer write) and follows. A follower pings the leader
//! every [`PING_INTERVAL_MS`]; after [`MISSED_PINGS_BEFORE_TAKEOVER`]
//! unanswered pings it takes the lock (`steal`), and the store's fencing
//! token keeps the frozen leader from writing when it wakes.
//!
//! Driving it, quinn-proto style: feed inputs ([`TabMachine::heard`],
//! [`TabMachine::lock_granted`], [`TabMachine::store_opened`],
//! [`TabMachine::fenced`], [`TabMachine::queued`], local requests,
//! [`TabMachine::handle_timeout`]) with `now` in milliseconds, then drain
//! [`TabMachine::poll_transmit`] (messages to post) and
//! [`TabMachine::poll_event`] (what the shell must do), and arm a timer for
//! [`TabMachine::poll_timeout`].

mod follow;
mod lead;
mod messages;
mod views;

use std::collections::{BTreeSet, VecDeque};

use thoonk_protocol::{ChangeId, FeedName, FeedPattern, Operation, SortedMap};

pub use self::messages::{
    FeedChange, LeaderStatus, OutboxEntry, OutcomeEvent, Refusal, SharedState, TabMessage,
};
pub use self::views::ViewCache;

/// How often a follower checks that the leader answers (ms).
pub const PING_INTERVAL_MS: u64 = 1000;
/// Unanswered pings after which a follower takes the lead from a leader that
/// holds the lock but no longer answers (a frozen or hung tab).
pub const MISSED_PINGS_BEFORE_TAKEOVER: u32 = 8;
/// Unanswered pings after which a follower shows "connecting".
pub const LEADER_SILENT_AFTER_PINGS: u32 = 3;
/// Every this many pings a follower asks again for what it did not hear
/// back about: `join` until welcomed, then each unanswered change (under its
/// id, so the leader queues it at most once).
pub const RESEND_EVERY_PINGS: u64 = 3;

/// How to ask for the lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Only if no tab leads now.
    IfFree,
    /// Queue behind the current leader.
    Wait,
    /// Take it from the current leader (which stopped answering).
    Steal,
}

/// The role a tab plays for its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Asked whether the lead is free; no answer yet.
    Starting,
    /// Holds the lock; its store is opening.
    Opening,
    /// Holds the lock and a store claimed for it.
    Leading,
    /// Goes through the leader.
    Following,
    /// Closed by the app.
    Closed,
}

/// A change this tab's app made while not leading, known by this handle until
/// the leader answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u64);

/// Where a change to queue comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This tab's app (answered by [`TabEvent::Answer`]).
    Own(Handle),
    /// A following tab (answered by a `queued` / `refused` message).
    Tab(String),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum TabEvent {
    /// Ask for the Web Lock (dropping any earlier request);
    /// answer with [`TabMachine::lock_granted`] / [`TabMachine::lock_taken`].
    AskLock(Ask),
    /// Let go of the lock (or leave its queue).
    ReleaseLock,
    /// Open the store and claim it for this tab, then start the core; answer
    /// with [`TabMachine::store_opened`] or [`TabMachine::store_failed`],
    /// naming this attempt.
    OpenStore {
        /// Which opening this is (an earlier one may still be under way).
        attempt: u64,
    },
    /// Stop the core and let go of the store: this tab may no longer write.
    CloseStore,
    /// This tab leads now: show the app its views from the core.
    Led,
    /// Subscribe the core to a pattern.
    Subscribe(FeedPattern),
    /// Unsubscribe the core from a pattern no tab follows any more.
    Unsubscribe(FeedPattern),
    /// Queue a change in the core under this id (idempotent), then report
    /// with [`TabMachine::queued`] once it is durable or refused.
    Queue {
        /// Who made it.
        origin: Origin,
        /// Its id.
        id: ChangeId,
        /// What to do.
        op: Operation,
    },
    /// Forget a stored outcome in the core.
    Dismiss(ChangeId),
    /// Work offline (`false`) or connect.
    SetOnline(bool),
    /// A follower joined: post [`TabMessage::Welcome`] (see [`TabMachine::welcome`]).
    Welcome {
        /// The follower.
        to: String,
    },
    /// A follower follows a new pattern (the core is subscribed): post
    /// [`TabMessage::Views`] (see [`TabMachine::views`]).
    Views {
        /// The follower.
        to: String,
        /// Its request number.
        req: u64,
        /// The pattern.
        pattern: FeedPattern,
    },
    /// The leader answered a change this tab's app made.
    Answer {
        /// The change.
        handle: Handle,
        /// Its id once durable, or why not.
        result: Result<ChangeId, Refusal>,
    },
    /// Show the app a feed change (followers).
    FeedChanged(FeedChange),
    /// Tell the app an outcome (followers).
    Outcome(OutcomeEvent),
    /// The status a follower shows may have changed.
    StatusChanged,
    /// `Client.open` may resolve: this tab leads, or its leader answered.
    Opened,
    /// The store could not be opened.
    OpenFailed,
}

/// What a local change becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeRoute {
    /// This tab leads: queue it in its own core.
    Direct,
    /// Forwarded to the leader; answered by [`TabEvent::Answer`].
    Forwarded(Handle),
}

/// A local request this tab cannot serve now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TabError {
    /// The app closed the client (or it never started).
    #[error("the client is closed")]
    Closed,
}

#[derive(Clone, Debug)]
struct Forwarded {
    handle: Handle,
    id: Option<ChangeId>,
    op: Operation,
}

/// One client's part in the tab protocol (see the module docs).
#[derive(Debug)]
pub struct TabMachine {
    tab: String,
    role: Role,
    client_id: Option<String>,
    /// Never reset: the `n` of `<client_id>:<tab>-<n>`.
    next_change: u64,
    next_req: u64,
    next_handle: u64,
    open_attempt: u64,
    forwarded: Vec<Forwarded>,
    patterns: BTreeSet<FeedPattern>,
    followers: SortedMap<String, BTreeSet<FeedPattern>>,
    state: Option<SharedState>,
    outcomes: SortedMap<ChangeId, OutcomeEvent>,
    cache: ViewCache,
    missed_pings: u32,
    taking_over: bool,
    next_ping: Option<u64>,
    /// Ping ticks since this tab follows.
    ticks: u64,
    /// The current leader welcomed this tab.
    welcomed: bool,
    opened: bool,
    transmits: VecDeque<TabMessage>,
    events: VecDeque<TabEvent>,
}

impl TabMachine {
    /// A client in tab `tab` (an id unique to this page load): asks whether
    /// the lead is free.
    pub fn new(tab: impl Into<String>) -> Self {
        let mut machine = Self {
            tab: tab.into(),
            role: Role::Starting,
            client_id: None,
            next_change: 0,
            next_req: 0,
            next_handle: 0,
            open_attempt: 0,
            forwarded: vec![],
            patterns: BTreeSet::new(),
            followers: SortedMap::new(),
            state: None,
            outcomes: SortedMap::new(),
            cache: ViewCache::default(),
            missed_pings: 0,
            taking_over: false,
            next_ping: None,
            ticks: 0,
            welcomed: false,
            opened: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        machine.events.push_back(TabEvent::AskLock(Ask::IfFree));
        machine
    }

    /// This tab's id.
    pub fn tab(&self) -> &str {
        &self.tab
    }

    /// The role it plays now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The database's client id, once known.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    // ---- outputs ---------------------------------------------------------

    /// The next message to post to the other tabs.
    pub fn poll_transmit(&mut self) -> Option<TabMessage> {
        self.transmits.pop_front()
    }

    /// The next thing the shell must do.
    pub fn poll_event(&mut self) -> Option<TabEvent> {
        self.events.pop_front()
    }

    /// When [`TabMachine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_ping
    }

    fn post(&mut self, message: TabMessage) {
        self.transmits.push_back(message);
    }

    fn emit(&mut self, event: TabEvent) {
        self.events.push_back(event);
    }

    fn open_done(&mut self) {
        if !std::mem::replace(&mut self.opened, true) {
            self.emit(TabEvent::Opened);
        }
    }

    // ---- timers ----------------------------------------------------------

    /// Pings the leader; takes the lead from one that stopped answering.
    pub fn handle_timeout(&mut self, now: u64) {
        let Some(at) = self.next_ping else {
            return;
        };
        if self.role != Role::Following {
            self.next_ping = None;
            return;
        }
        if now < at {
            return;
        }
        self.next_ping = Some(now + PING_INTERVAL_MS);
        if self.taking_over {
            return;
        }
        self.ticks += 1;
        if self.ticks % RESEND_EVERY_PINGS == 0 {
            if self.welcomed {
                self.resend_unanswered();
            } else {
                self.join();
            }
        }
        self.missed_pings += 1;
        if self.missed_pings > MISSED_PINGS_BEFORE_TAKEOVER {
            self.taking_over = true;
            self.emit(TabEvent::AskLock(Ask::Steal));
            return;
        }
        self.post(TabMessage::Ping {
            tab: self.tab.clone(),
        });
        self.emit(TabEvent::StatusChanged);
    }

    // ---- local requests --------------------------------------------------

    /// The app follows `pattern` (its first listener of it).
    pub fn subscribe(&mut self, pattern: FeedPattern) -> Result<(), TabError> {
        match self.role {
            Role::Closed => return Err(TabError::Closed),
            Role::Leading => self.emit(TabEvent::Subscribe(pattern.clone())),
            Role::Following => self.ask_views(pattern.clone()),
            Role::Starting | Role::Opening => {}
        }
        self.patterns.insert(pattern);
        Ok(())
    }

    /// The app no longer follows `pattern` (its last listener of it left).
    pub fn unsubscribe(&mut self, pattern: &FeedPattern) {
        self.patterns.remove(pattern);
        match self.role {
            Role::Leading => self.unsubscribe_if_unused(pattern),
            Role::Following => {
                let patterns = &self.patterns;
                self.cache
                    .retain(|feed| patterns.iter().any(|p| p.matches(feed)));
                self.post(TabMessage::Unsubscribe {
                    tab: self.tab.clone(),
                    pattern: pattern.clone(),
                });
            }
            Role::Starting | Role::Opening | Role::Closed => {}
        }
    }

    fn unsubscribe_if_unused(&mut self, pattern: &FeedPattern) {
        let used =
            self.patterns.contains(pattern) || self.followers.values().any(|p| p.contains(pattern));
        if !used {
            self.emit(TabEvent::Unsubscribe(pattern.clone()));
        }
    }

    /// True when the app follows `feed`.
    pub fn follows(&self, feed: &FeedName) -> bool {
        self.patterns.iter().any(|p| p.matches(feed))
    }

    /// The app makes a change: queued in this tab's core when it leads,
    /// else forwarded (now, or once the leader is known).
    pub fn change(&mut self, op: Operation) -> Result<ChangeRoute, TabError> {
        match self.role {
            Role::Leading => Ok(ChangeRoute::Direct),
            Role::Starting | Role::Closed => Err(TabError::Closed),
            Role::Following | Role::Opening => {
                self.next_handle += 1;
                let handle = Handle(self.next_handle);
                let id = self.next_id();
                self.forwarded.push(Forwarded {
                    handle,
                    id: id.clone(),
                    op: op.clone(),
                });
                if let (Some(id), Role::Following) = (id, self.role) {
                    self.post(TabMessage::Change {
                        tab: self.tab.clone(),
                        id,
                        op,
                    });
                }
                self.emit(TabEvent::StatusChanged);
                Ok(ChangeRoute::Forwarded(handle))
            }
        }
    }

    /// The app has shown an outcome (a follower tells the leader).
    pub fn dismiss(&mut self, id: &ChangeId) {
        if self.role == Role::Following {
            self.outcomes.remove(id);
            self.post(TabMessage::Dismiss { id: id.clone() });
        }
    }

    /// The app asked to work offline (`false`) or online (a follower tells the leader).
    pub fn set_online(&mut self, online: bool) {
        if self.role == Role::Following {
            self.post(TabMessage::SetOnline { online });
        }
    }

    /// The app closed the client: a leader lets go of store and lock, a
    /// follower says goodbye; unanswered changes are refused as `closed`.
    pub fn close(&mut self) {
        match self.role {
            Role::Leading => self.emit(TabEvent::CloseStore),
            Role::Following => self.post(TabMessage::Leave {
                tab: self.tab.clone(),
            }),
            Role::Starting | Role::Opening | Role::Closed => {}
        }
        self.role = Role::Closed;
        self.next_ping = None;
        self.emit(TabEvent::ReleaseLock);
        for change in std::mem::take(&mut self.forwarded) {
            self.emit(TabEvent::Answer {
                handle: change.handle,
                result: Err(Refusal::new(
                    "closed",
                    "the client closed before the change was queued",
                )),
            });
        }
    }

    // ---- what other tabs say ---------------------------------------------

    /// A message another tab posted.
    pub fn heard(&mut self, message: TabMessage, now: u64) {
        match self.role {
            Role::Leading if !message.is_from_leader() => self.serve(message),
            Role::Following if message.is_from_leader() => self.hear_leader(message, now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
