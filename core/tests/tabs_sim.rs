//! Deterministic simulation of the tab protocol: several tabs of one database
//! (real [`TabMachine`]s, each leader running a real [`SyncCore`] on a shared
//! store with a fencing token) over a BroadcastChannel that loses, delays and
//! duplicates messages, a Web Lock with a queue and `steal`, a store whose
//! batches complete later, and tabs that open, close and freeze (and wake up
//! fenced) while their apps make changes.
//!
//! Invariants, checked as the run goes and at its end:
//! - at most one tab writes: a tab the store refused (fenced) no longer leads;
//! - no change id names two different changes;
//! - every change a tab was told is stored is in the store, under that id;
//! - every change reaches the outbox at most once, and every change of a tab
//!   still open at the end was answered and is there exactly once.
//!
//! `cargo test -p thoonk-sync-core --test tabs_sim` runs 2,000 seeds; set
//! `THOONK_TABS_SIM_SEEDS` (and optionally `THOONK_TABS_SIM_FIRST_SEED`) for
//! more, e.g. `THOONK_TABS_SIM_SEEDS=100000`. One seed, with a trace of what
//! each tab hears: `THOONK_TABS_SIM_SEED=<n> THOONK_TABS_SIM_TRACE=1 cargo
//! test -p thoonk-sync-core --test tabs_sim one_seed -- --ignored --nocapture`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::json;
use thoonk_protocol::{ChangeId, FeedName, ItemId, Operation};
use thoonk_sync_core::tabs::{
    Ask, ChangeRoute, Handle, Origin, Refusal, Role, SharedState, TabEvent, TabMachine, TabMessage,
};
use thoonk_sync_core::{Config, SplitMix64, StoreBatch, StoredState, SyncCore};

const DEFAULT_SEEDS: u64 = 2_000;
/// How long tabs open, close, freeze and make changes (ms).
const CHAOS_MS: u64 = 40_000;
/// How long the run goes on after that, with a channel that no longer loses.
const CALM_MS: u64 = 40_000;
const MAX_TABS: usize = 4;
/// The refusal of a change made in a leading tab and not yet stored when
/// the lock was taken from it.
const STEPPED_ASIDE: &str = "stepped_aside";
/// The lock answers in order (the browser calls a request's callbacks in the
/// order its state changed).
const LOCK_DELAY: u64 = 1;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A change an app made: its number (written into the item) and what it became.
#[derive(Clone, Debug, PartialEq)]
enum Fate {
    Waiting,
    Stored(ChangeId),
    Refused(String),
}

fn op(marker: u64) -> Operation {
    Operation::Publish {
        feed: FeedName::new("team:1:tasks").unwrap(),
        id: ItemId::new(format!("i{marker}")).unwrap(),
        item: json!({ "marker": marker }),
        position: None,
    }
}

fn marker_of(op: &Operation) -> Option<u64> {
    match op {
        Operation::Publish { item, .. } => item["marker"].as_u64(),
        _ => None,
    }
}

/// What a queued change is waiting for: its batch (and every earlier one) to complete.
#[derive(Debug)]
struct Pending {
    origin: PendingOrigin,
    id: Option<ChangeId>,
    batch: Option<StoreBatch>,
    marker: u64,
}

#[derive(Debug)]
enum PendingOrigin {
    Queue(Origin),
    Direct,
    Meta,
}

/// The leader side of a tab: its core on the shared store.
struct LeaderSide {
    core: SyncCore,
    token: u64,
    /// Batches in flight, completed in order.
    pending: VecDeque<Pending>,
    told_fenced: bool,
}

struct SimTab {
    machine: TabMachine,
    leader: Option<LeaderSide>,
    /// The generation of the tab's current lock request.
    lock_gen: u64,
    frozen_until: u64,
    /// What arrived while it was frozen, in order.
    postponed: VecDeque<Delivery>,
    closed: bool,
    /// Changes the app made, by handle, while they are forwarded.
    forwarded: BTreeMap<Handle, u64>,
}

#[derive(Debug)]
enum Delivery {
    Message(Box<TabMessage>),
    LockGranted(u64),
    LockTaken(u64),
    LockLost(u64),
    StoreOpened(u64),
    BatchDone,
}

#[derive(Default)]
struct Lock {
    holder: Option<usize>,
    queue: VecDeque<usize>,
}

struct World {
    rng: SplitMix64,
    now: u64,
    tabs: Vec<SimTab>,
    lock: Lock,
    store: StoredState,
    token: u64,
    /// (at, sequence, tab, what)
    deliveries: BTreeMap<(u64, u64), (usize, Delivery)>,
    seq: u64,
    calm: bool,
    next_marker: u64,
    fates: BTreeMap<u64, Fate>,
    /// The tab whose app made each change.
    made_by: BTreeMap<u64, usize>,
    ids: BTreeMap<ChangeId, u64>,
    next_tab: u64,
    stats: Stats,
}

/// What the runs went through (to be sure they exercise the hard cases).
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    changes: u64,
    steals: u64,
    fenced: u64,
    leads: u64,
    forwarded_stored: u64,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.changes += other.changes;
        self.steals += other.steals;
        self.fenced += other.fenced;
        self.leads += other.leads;
        self.forwarded_stored += other.forwarded_stored;
    }
}

type Check = Result<(), String>;

impl World {
    fn new(seed: u64) -> Self {
        let mut world = Self {
            rng: SplitMix64::new(seed),
            now: 0,
            tabs: vec![],
            lock: Lock::default(),
            store: StoredState::default(),
            token: 0,
            deliveries: BTreeMap::new(),
            seq: 0,
            calm: false,
            next_marker: 0,
            fates: BTreeMap::new(),
            made_by: BTreeMap::new(),
            ids: BTreeMap::new(),
            next_tab: 0,
            stats: Stats::default(),
        };
        let first = 1 + world.rng.below(3) as usize;
        for _ in 0..first {
            world.open_tab();
        }
        world
    }

    fn schedule(&mut self, delay: u64, tab: usize, what: Delivery) {
        self.seq += 1;
        self.deliveries
            .insert((self.now + delay, self.seq), (tab, what));
    }

    fn open_tab(&mut self) {
        self.next_tab += 1;
        self.tabs.push(SimTab {
            machine: TabMachine::new(format!("t{}", self.next_tab)),
            leader: None,
            lock_gen: 0,
            frozen_until: 0,
            postponed: VecDeque::new(),
            closed: false,
            forwarded: BTreeMap::new(),
        });
    }

    fn open_tabs(&self) -> Vec<usize> {
        (0..self.tabs.len())
            .filter(|&t| !self.tabs[t].closed)
            .collect()
    }

    // ---- the Web Lock ------------------------------------------------------

    fn lock_release(&mut self, tab: usize) {
        self.lock.queue.retain(|&t| t != tab);
        if self.lock.holder == Some(tab) {
            self.lock.holder = None;
            self.lock_grant_next();
        }
    }

    fn lock_grant_next(&mut self) {
        if self.lock.holder.is_none() {
            if let Some(next) = self.lock.queue.pop_front() {
                self.lock.holder = Some(next);
                let gen = self.tabs[next].lock_gen;
                self.schedule(LOCK_DELAY, next, Delivery::LockGranted(gen));
            }
        }
    }

    fn lock_request(&mut self, tab: usize, ask: Ask) {
        if std::env::var("THOONK_TABS_SIM_TRACE").is_ok() {
            eprintln!(
                "{} tab {tab} asks {ask:?} holder {:?} queue {:?}",
                self.now, self.lock.holder, self.lock.queue
            );
        }
        // A new request replaces the tab's earlier one (dropping it lets go).
        self.lock_release(tab);
        self.tabs[tab].lock_gen += 1;
        let gen = self.tabs[tab].lock_gen;
        let delay = LOCK_DELAY;
        match ask {
            Ask::IfFree => {
                if self.lock.holder.is_none() && self.lock.queue.is_empty() {
                    self.lock.holder = Some(tab);
                    self.schedule(delay, tab, Delivery::LockGranted(gen));
                } else {
                    self.schedule(delay, tab, Delivery::LockTaken(gen));
                }
            }
            Ask::Wait => {
                self.lock.queue.push_back(tab);
                self.lock_grant_next();
            }
            Ask::Steal => {
                self.stats.steals += 1;
                if let Some(old) = self.lock.holder.replace(tab) {
                    let old_gen = self.tabs[old].lock_gen;
                    self.schedule(delay, old, Delivery::LockLost(old_gen));
                }
                self.schedule(delay, tab, Delivery::LockGranted(gen));
            }
        }
    }

    // ---- driving one tab ---------------------------------------------------

    fn drive(&mut self, tab: usize) -> Check {
        loop {
            if let Some(message) = self.tabs[tab].machine.poll_transmit() {
                self.broadcast(tab, message);
                continue;
            }
            let Some(event) = self.tabs[tab].machine.poll_event() else {
                return Ok(());
            };
            self.carry_out(tab, event)?;
        }
    }

    fn broadcast(&mut self, from: usize, message: TabMessage) {
        for to in self.open_tabs() {
            if to == from {
                continue;
            }
            if !self.calm && self.rng.chance(5) {
                continue; // lost
            }
            let copies = if !self.calm && self.rng.chance(5) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self.rng.below(if self.calm { 10 } else { 300 });
                self.schedule(delay, to, Delivery::Message(Box::new(message.clone())));
            }
        }
    }

    fn carry_out(&mut self, tab: usize, event: TabEvent) -> Check {
        let now = self.now;
        match event {
            TabEvent::AskLock(ask) => self.lock_request(tab, ask),
            TabEvent::ReleaseLock => {
                self.tabs[tab].lock_gen += 1;
                self.lock_release(tab);
            }
            TabEvent::OpenStore { attempt } => {
                let delay = 1 + self.rng.below(50);
                self.schedule(delay, tab, Delivery::StoreOpened(attempt));
            }
            TabEvent::CloseStore => {
                // The app's own changes still in flight when the tab stops
                // leading (the lock taken from it) are not written: the shell
                // rejects them (`closed`), as it cannot tell whether they
                // will be.
                let leader = self.tabs[tab].leader.take();
                for pending in leader.into_iter().flat_map(|l| l.pending) {
                    if let PendingOrigin::Direct = pending.origin {
                        self.settle(pending.marker, Fate::Refused(STEPPED_ASIDE.into()))?;
                    }
                }
            }
            TabEvent::Queue { origin, id, op } => {
                let marker = marker_of(&op).expect("sim changes carry a marker");
                let Some(leader) = self.tabs[tab].leader.as_mut() else {
                    return Err(format!("tab {tab} was asked to queue without a store"));
                };
                match leader.core.change_with_id(id.clone(), op, now) {
                    Ok(id) => {
                        let batch = leader.core.take_effects().store;
                        leader.pending.push_back(Pending {
                            origin: PendingOrigin::Queue(origin),
                            id: Some(id),
                            batch,
                            marker,
                        });
                        let delay = 1 + self.rng.below(40);
                        self.schedule(delay, tab, Delivery::BatchDone);
                    }
                    Err(err) => {
                        let refusal = Refusal::new("bad_request", err.to_string());
                        self.tabs[tab].machine.queued(origin, id, Err(refusal));
                    }
                }
            }
            TabEvent::Welcome { to } => {
                let outcomes = vec![];
                self.tabs[tab]
                    .machine
                    .welcome(to, SharedState::default(), outcomes);
            }
            TabEvent::Views { to, req, .. } => self.tabs[tab].machine.views(to, req, vec![]),
            TabEvent::Answer { handle, result } => {
                let Some(marker) = self.tabs[tab].forwarded.remove(&handle) else {
                    return Err(format!("tab {tab}: an answer for unknown {handle:?}"));
                };
                match result {
                    Ok(id) => {
                        self.stats.forwarded_stored += 1;
                        self.told_stored(marker, id)?
                    }
                    Err(refusal) => self.settle(marker, Fate::Refused(refusal.code))?,
                }
            }
            TabEvent::Led
            | TabEvent::Subscribe(_)
            | TabEvent::Unsubscribe(_)
            | TabEvent::Dismiss(_)
            | TabEvent::SetOnline(_)
            | TabEvent::FeedChanged(_)
            | TabEvent::Outcome(_)
            | TabEvent::StatusChanged
            | TabEvent::Opened
            | TabEvent::OpenFailed => {}
        }
        Ok(())
    }

    fn settle(&mut self, marker: u64, fate: Fate) -> Check {
        let old = self.fates.insert(marker, fate.clone());
        if old != Some(Fate::Waiting) {
            return Err(format!(
                "change {marker} settled twice: {old:?} then {fate:?}"
            ));
        }
        Ok(())
    }

    /// The app was told change `marker` is stored as `id`: it must be.
    fn told_stored(&mut self, marker: u64, id: ChangeId) -> Check {
        let stored = self
            .store
            .outbox
            .values()
            .find(|record| record.id == id)
            .and_then(|record| marker_of(&record.op));
        if stored != Some(marker) {
            return Err(format!(
                "change {marker} was reported stored as {id:?}, but the store holds {stored:?} under that id"
            ));
        }
        self.settle(marker, Fate::Stored(id))
    }

    /// The app of `tab` makes a change.
    fn make_change(&mut self, tab: usize) -> Check {
        self.next_marker += 1;
        let marker = self.next_marker;
        self.fates.insert(marker, Fate::Waiting);
        self.made_by.insert(marker, tab);
        self.route_change(tab, marker)
    }

    fn route_change(&mut self, tab: usize, marker: u64) -> Check {
        let now = self.now;
        match self.tabs[tab].machine.change(op(marker)) {
            Ok(ChangeRoute::Forwarded(handle)) => {
                self.tabs[tab].forwarded.insert(handle, marker);
            }
            Ok(ChangeRoute::Direct) => {
                let leader = self.tabs[tab]
                    .leader
                    .as_mut()
                    .ok_or("a leading tab without a store")?;
                let id = leader
                    .core
                    .change(op(marker), now)
                    .map_err(|e| e.to_string())?;
                let batch = leader.core.take_effects().store;
                leader.pending.push_back(Pending {
                    origin: PendingOrigin::Direct,
                    id: Some(id),
                    batch,
                    marker,
                });
                let delay = 1 + self.rng.below(40);
                self.schedule(delay, tab, Delivery::BatchDone);
            }
            Err(_) => self.settle(marker, Fate::Refused("closed".into()))?,
        }
        self.drive(tab)
    }

    /// The store completes the oldest batch of `tab`'s core.
    fn batch_done(&mut self, tab: usize) -> Check {
        let now = self.now;
        let Some(leader) = self.tabs[tab].leader.as_mut() else {
            return Ok(()); // closed meanwhile
        };
        let Some(pending) = leader.pending.pop_front() else {
            return Ok(());
        };
        if leader.token != self.token {
            // Fenced: nothing of it is written, nor of what follows.
            leader.told_fenced = true;
            self.stats.fenced += 1;
            let dropped: Vec<Pending> = std::iter::once(pending)
                .chain(leader.pending.drain(..))
                .collect();
            self.tabs[tab].machine.fenced(now);
            if self.tabs[tab].machine.role() == Role::Leading {
                return Err(format!("tab {tab} still leads after its store was fenced"));
            }
            // The app's own changes go to the next leader (a new id).
            for change in dropped {
                if let PendingOrigin::Direct = change.origin {
                    self.route_change(tab, change.marker)?;
                }
            }
            return self.drive(tab);
        }
        if let Some(batch) = &pending.batch {
            self.store.apply(batch);
            self.check_store()?;
        }
        match pending.origin {
            PendingOrigin::Meta => {}
            PendingOrigin::Direct => {
                let id = pending.id.expect("direct changes have an id");
                self.told_stored(pending.marker, id)?;
            }
            PendingOrigin::Queue(origin) => {
                let id = pending.id.expect("queued changes have an id");
                self.tabs[tab].machine.queued(origin, id, Ok(()));
            }
        }
        self.drive(tab)
    }

    /// No id names two changes; no change is in the outbox twice.
    fn check_store(&mut self) -> Check {
        let mut seen = BTreeSet::new();
        for record in self.store.outbox.values() {
            let marker = marker_of(&record.op).ok_or("an outbox entry without a marker")?;
            if !seen.insert(marker) {
                return Err(format!("change {marker} is in the outbox twice"));
            }
            match self.ids.insert(record.id.clone(), marker) {
                Some(other) if other != marker => {
                    return Err(format!(
                        "change id {:?} names changes {other} and {marker}",
                        record.id
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn store_opened(&mut self, tab: usize, attempt: u64) -> Check {
        let now = self.now;
        // The claim: this tab's token fences every earlier holder.
        self.token += 1;
        let config = Config::new("c1", "tok", self.rng.next_u64());
        let mut core =
            SyncCore::open(config, self.store.clone(), now).map_err(|e| e.to_string())?;
        let batch = core.take_effects().store;
        let client_id = core.client_id().to_owned();
        let mut leader = LeaderSide {
            core,
            token: self.token,
            pending: VecDeque::new(),
            told_fenced: false,
        };
        if batch.is_some() {
            leader.pending.push_back(Pending {
                origin: PendingOrigin::Meta,
                id: None,
                batch,
                marker: 0,
            });
            let delay = 1 + self.rng.below(20);
            self.schedule(delay, tab, Delivery::BatchDone);
        }
        // A store the machine does not lead with is closed at once (its
        // claim stays: it fenced the earlier holder all the same).
        if self.tabs[tab].machine.store_opened(attempt, client_id, now) {
            self.tabs[tab].leader = Some(leader);
            self.stats.leads += 1;
        }
        self.drive(tab)
    }

    fn deliver(&mut self, tab: usize, what: Delivery) -> Check {
        let now = self.now;
        let quiet = matches!(&what, Delivery::Message(m)
            if matches!(**m, TabMessage::Ping { .. } | TabMessage::Pong { .. }));
        if std::env::var("THOONK_TABS_SIM_TRACE").is_ok() && !quiet {
            eprintln!(
                "{now} tab {tab} {:?} hears {:?}",
                self.tabs[tab].machine.role(),
                what
            );
        }
        if self.tabs[tab].closed {
            return Ok(());
        }
        match what {
            Delivery::Message(message) => self.tabs[tab].machine.heard(*message, now),
            Delivery::LockGranted(gen) if gen == self.tabs[tab].lock_gen => {
                self.tabs[tab].machine.lock_granted(now)
            }
            Delivery::LockTaken(gen) if gen == self.tabs[tab].lock_gen => {
                self.tabs[tab].machine.lock_taken(now)
            }
            Delivery::LockLost(gen) if gen == self.tabs[tab].lock_gen => {
                self.tabs[tab].machine.lock_lost(now)
            }
            Delivery::LockGranted(_) | Delivery::LockTaken(_) | Delivery::LockLost(_) => {}
            Delivery::StoreOpened(attempt) => return self.store_opened(tab, attempt),
            Delivery::BatchDone => return self.batch_done(tab),
        }
        self.drive(tab)
    }

    // ---- the run -----------------------------------------------------------

    fn chaos(&mut self) -> Check {
        let open = self.open_tabs();
        let tab = open[self.rng.below(open.len() as u64) as usize];
        match self.rng.below(100) {
            0..=59 => {
                // The app makes changes once `Client.open` resolved (not while starting).
                let started = self.tabs[tab].machine.role() != Role::Starting;
                if started && self.tabs[tab].frozen_until <= self.now {
                    self.make_change(tab)?;
                }
            }
            60..=71 => {
                // Frozen (a hung or backgrounded tab): long enough to be stolen from, often.
                let span = 500 + self.rng.below(15_000);
                // Every tab is awake when the calm starts (so that what it
                // was told while frozen arrives in order).
                let until = self.now.max(self.tabs[tab].frozen_until) + span;
                self.tabs[tab].frozen_until = until.min(CHAOS_MS);
            }
            72..=79 if open.len() > 1 && self.tabs[tab].frozen_until <= self.now => {
                self.tabs[tab].closed = true;
                self.tabs[tab].machine.close();
                let mut events = vec![];
                while let Some(event) = self.tabs[tab].machine.poll_event() {
                    events.push(event);
                }
                while let Some(message) = self.tabs[tab].machine.poll_transmit() {
                    self.broadcast(tab, message);
                }
                for event in events {
                    match event {
                        TabEvent::Answer { handle, result } => {
                            let marker = self.tabs[tab].forwarded.remove(&handle).unwrap();
                            match result {
                                Ok(id) => self.told_stored(marker, id)?,
                                Err(r) => self.settle(marker, Fate::Refused(r.code))?,
                            }
                        }
                        TabEvent::CloseStore => self.tabs[tab].leader = None,
                        TabEvent::ReleaseLock => self.lock_release(tab),
                        _ => {}
                    }
                }
                // Its app's direct changes in flight: the store may still complete them,
                // but the app was told "closed".
                self.tabs[tab].leader = None;
            }
            80..=87 if open.len() < MAX_TABS => {
                self.open_tab();
                let new = self.tabs.len() - 1;
                self.drive(new)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn run(&mut self) -> Check {
        for tab in 0..self.tabs.len() {
            self.drive(tab)?;
        }
        let mut next_chaos = 0;
        let end = CHAOS_MS + CALM_MS;
        while self.now < end {
            self.check_leaders()?;
            if !self.calm && self.now >= CHAOS_MS {
                self.calm = true;
            }
            // The next thing to happen: a delivery, a tab's timer, or the app.
            let mut at = end;
            if let Some((&(when, _), _)) = self.deliveries.iter().next() {
                at = at.min(when);
            }
            for tab in self.open_tabs() {
                if let Some(when) = self.tabs[tab].machine.poll_timeout() {
                    at = at.min(when.max(self.tabs[tab].frozen_until));
                }
                if !self.tabs[tab].postponed.is_empty() {
                    at = at.min(self.tabs[tab].frozen_until);
                }
            }
            if !self.calm {
                at = at.min(next_chaos);
            }
            self.now = self.now.max(at);
            if self.now >= end {
                break;
            }
            let woken = self.open_tabs().into_iter().find(|&t| {
                !self.tabs[t].postponed.is_empty() && self.tabs[t].frozen_until <= self.now
            });
            if let Some(tab) = woken {
                let what = self.tabs[tab].postponed.pop_front().unwrap();
                self.deliver(tab, what)?;
                continue;
            }
            if let Some((&key, _)) = self.deliveries.iter().next() {
                if key.0 <= self.now {
                    let (tab, what) = self.deliveries.remove(&key).unwrap();
                    if self.tabs[tab].frozen_until > self.now
                        || !self.tabs[tab].postponed.is_empty()
                    {
                        // A frozen tab hears nothing until it wakes.
                        self.tabs[tab].postponed.push_back(what);
                    } else {
                        self.deliver(tab, what)?;
                    }
                    continue;
                }
            }
            let mut fired = false;
            for tab in self.open_tabs() {
                let due = self.tabs[tab]
                    .machine
                    .poll_timeout()
                    .is_some_and(|when| when <= self.now);
                if due && self.tabs[tab].frozen_until <= self.now {
                    self.tabs[tab].machine.handle_timeout(self.now);
                    self.drive(tab)?;
                    fired = true;
                }
            }
            if fired {
                continue;
            }
            if !self.calm && self.now >= next_chaos {
                self.chaos()?;
                next_chaos = self.now + 1 + self.rng.below(400);
            }
        }
        self.check_end()
    }

    /// At most one tab writes: a tab its store fenced does not lead.
    fn check_leaders(&self) -> Check {
        for (index, tab) in self.tabs.iter().enumerate() {
            if let Some(leader) = &tab.leader {
                if leader.told_fenced && tab.machine.role() == Role::Leading {
                    return Err(format!("tab {index} leads although its store is fenced"));
                }
            }
        }
        let current = self
            .tabs
            .iter()
            .filter(|t| !t.closed && t.machine.role() == Role::Leading)
            .filter(|t| t.leader.as_ref().is_some_and(|l| l.token == self.token))
            .count();
        if current > 1 {
            return Err(format!("{current} tabs lead with the current token"));
        }
        Ok(())
    }

    fn check_end(&self) -> Check {
        let in_outbox: BTreeMap<u64, ChangeId> = self
            .store
            .outbox
            .values()
            .filter_map(|r| Some((marker_of(&r.op)?, r.id.clone())))
            .collect();
        for (marker, fate) in &self.fates {
            let tab = self.made_by[marker];
            let open = !self.tabs[tab].closed;
            match fate {
                Fate::Stored(id) => {
                    if in_outbox.get(marker) != Some(id) {
                        return Err(format!("change {marker}, told stored as {id:?}, is not"));
                    }
                }
                Fate::Waiting if open => {
                    return Err(format!(
                        "change {marker} of open tab {tab} was never answered ({:?})",
                        self.tabs[tab].machine.role()
                    ));
                }
                Fate::Refused(code) if open && code != STEPPED_ASIDE => {
                    return Err(format!("change {marker} of open tab {tab} refused: {code}"));
                }
                Fate::Waiting | Fate::Refused(_) => {}
            }
        }
        let leaders = self
            .open_tabs()
            .into_iter()
            .filter(|&t| self.tabs[t].machine.role() == Role::Leading)
            .count();
        if leaders != 1 {
            let roles: Vec<String> = self
                .tabs
                .iter()
                .map(|t| {
                    format!(
                        "{:?} closed={} token={:?} gen={}",
                        t.machine.role(),
                        t.closed,
                        t.leader.as_ref().map(|l| l.token),
                        t.lock_gen
                    )
                })
                .collect();
            return Err(format!(
                "{leaders} tabs lead at the end (holder {:?}, queue {:?}, token {}): {roles:?}",
                self.lock.holder, self.lock.queue, self.token
            ));
        }
        Ok(())
    }
}

#[test]
#[ignore]
fn one_seed() {
    run_seed(env_u64("THOONK_TABS_SIM_SEED", 0)).unwrap();
}

fn run_seed(seed: u64) -> Result<Stats, String> {
    let mut world = World::new(seed);
    world
        .run()
        .map_err(|err| format!("seed {seed} at {} ms: {err}", world.now))?;
    world.stats.changes = world.next_marker;
    Ok(world.stats)
}

/// Seeds that failed with a change id reused by a tab that led in between
/// (the counter restarted with each follower period).
#[test]
fn regression_seeds_reused_change_id() {
    for seed in [23, 517, 562, 636, 984, 1402, 1593] {
        if let Err(err) = run_seed(seed) {
            panic!("{err}");
        }
    }
}

/// A seed where a tab granted the lock, stolen from while its store opened
/// and granted again ran two openings: the first to finish made it lead and
/// the second closed the store it led with (a leader without a store).
#[test]
fn regression_seed_two_openings() {
    if let Err(err) = run_seed(17229) {
        panic!("{err}");
    }
}

const SHARDS: u64 = 4;

fn run_shard(shard: u64) {
    let count = env_u64("THOONK_TABS_SIM_SEEDS", DEFAULT_SEEDS);
    let first = env_u64("THOONK_TABS_SIM_FIRST_SEED", 0);
    let mut stats = Stats::default();
    let mut failures = vec![];
    for seed in (first..first + count).filter(|s| s % SHARDS == shard) {
        match run_seed(seed) {
            Ok(seen) => stats.add(seen),
            Err(err) => failures.push(err),
        }
    }
    eprintln!("tabs shard {shard}: {stats:?}");
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stats.changes > 0 && stats.steals > 0 && stats.fenced > 0 && stats.forwarded_stored > 0,
        "the runs did not exercise the protocol: {stats:?}"
    );
}

#[test]
fn tabs_shard_0() {
    run_shard(0);
}

#[test]
fn tabs_shard_1() {
    run_shard(1);
}

#[test]
fn tabs_shard_2() {
    run_shard(2);
}

#[test]
fn tabs_shard_3() {
    run_shard(3);
}
