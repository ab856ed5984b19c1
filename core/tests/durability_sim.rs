//! Deterministic simulation of the durability machine ([`Durable`]) over an
//! asynchronous store: each batch completes some time after it was handed
//! out, and fails, is cut short by a full quota, finds its database deleted
//! or closed, or is fenced by another tab, while the app keeps making changes.
//!
//! Connections succeed half the time (the server then sends whole feeds as
//! snapshots: rounds that only write the mirror, shown before their write)
//! and nothing is ever answered, so nothing leaves the outbox.
//!
//! Invariants, checked after every step:
//! - every change whose promise resolved as stored is in the store;
//! - no change id ever names two different changes;
//! - when nothing is in flight, the store holds exactly what the core says
//!   (after another tab fenced this one off: its core holds exactly the
//!   store's outbox), and what the app was shown is the core's view (also
//!   after a failed write whose items were shown);
//! - after a store failure no connection is opened before the wait is over.
//!
//! `cargo test -p thoonk-sync-core --test durability_sim` runs 1,000 seeds;
//! set `THOONK_DURABILITY_SEEDS` (and `THOONK_DURABILITY_FIRST_SEED`) for more.

use std::collections::BTreeMap;

use serde_json::json;
use thoonk_protocol::{
    Change, ChangeId, ChangeOp, ClientMessage, FeedName, FeedPattern, FeedPosition, Item, ItemId,
    Operation, ServerMessage, PROTOCOL_VERSION,
};
use thoonk_sync_core::{
    Config, Durable, Effects, MemoryStore, Notification, SplitMix64, Store, StoreBatch,
    StoreFailure, StoreWrite, StoredState, Task,
};

const DEFAULT_SEEDS: u64 = 1_000;
const STEPS: u32 = 80;

/// What the store is doing.
enum Pending {
    Write(std::sync::Arc<StoreBatch>),
    Reload,
    Reopen,
}

struct Sim {
    seed: u64,
    rng: SplitMix64,
    now: u64,
    durable: Durable,
    store: MemoryStore,
    /// The store's current operation and when it completes.
    pending: Option<(Pending, u64)>,
    /// Changes made and not yet decided: (mark, id).
    waiting: Vec<(u64, ChangeId)>,
    /// Every change id the core gave, with the change it named.
    ids: BTreeMap<ChangeId, Operation>,
    /// No connection before this time (after a store failure).
    no_connect_before: u64,
    made: u64,
    stored: u64,
    failed: u64,
    trace: Vec<String>,
    /// The server's items per feed (revision = count); sent whole as snapshots.
    server: BTreeMap<u64, u64>,
    /// What the app was shown: each feed's items, from the notifications.
    app: BTreeMap<FeedName, BTreeMap<ItemId, serde_json::Value>>,
}

fn feed(n: u64) -> FeedName {
    FeedName::new(format!("sim:{n}")).unwrap()
}

impl Sim {
    fn new(seed: u64) -> Self {
        let config = Config::new(format!("c{seed}"), "t", seed);
        let durable = Durable::open(config, StoredState::default(), 0).unwrap();
        Self {
            seed,
            rng: SplitMix64::new(seed),
            now: 0,
            durable,
            store: MemoryStore::new(),
            pending: None,
            waiting: Vec::new(),
            ids: BTreeMap::new(),
            no_connect_before: 0,
            made: 0,
            stored: 0,
            failed: 0,
            trace: Vec::new(),
            server: BTreeMap::new(),
            app: BTreeMap::new(),
        }
    }

    fn log(&mut self, line: String) {
        self.trace.push(format!("{:>6} {line}", self.now));
    }

    fn fail(&self, what: String) -> String {
        let start = self.trace.len().saturating_sub(60);
        format!(
            "seed {}: {what}\nlast events:\n{}",
            self.seed,
            self.trace[start..].join("\n")
        )
    }

    fn run(mut self) -> Result<(u64, u64, u64), String> {
        for _ in 0..STEPS {
            if self.durable.is_stopped() {
                break;
            }
            self.step()?;
            let until = self.now + self.rng.below(40);
            self.advance(until)?;
        }
        // Quiet: no more changes; let every write finish.
        for _ in 0..10_000 {
            if self.pending.is_none() && self.waiting.is_empty() {
                break;
            }
            let until = self.now + 50;
            self.advance(until)?;
        }
        if !self.waiting.is_empty() {
            return Err(self.fail(format!("changes never decided: {:?}", self.waiting)));
        }
        self.check_idle()?;
        Ok((self.made, self.stored, self.failed))
    }

    /// One random input from the app.
    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.below(10);
        if roll < 7 {
            self.made += 1;
            let op = Operation::Publish {
                feed: feed(self.rng.below(3)),
                id: ItemId::new(format!("i{}", self.rng.below(5))).unwrap(),
                item: json!({ "n": self.made }),
                position: None,
            };
            let made = self
                .durable
                .input(self.now, |core, now| core.change(op.clone(), now));
            if let Ok(id) = made {
                self.log(format!("change {} (mark {})", id.0, self.durable.mark()));
                if let Some(earlier) = self.ids.insert(id.clone(), op.clone()) {
                    return Err(self.fail(format!(
                        "change id {} names two changes: {earlier:?} and {op:?}",
                        id.0
                    )));
                }
                self.waiting.push((self.durable.mark(), id));
            }
        } else if roll < 9 && self.rng.chance(50) {
            // The server's feed grows by one item and is sent whole: a
            // round that only writes the mirror.
            let n = self.rng.below(3);
            let rev = self.server.get(&n).copied().unwrap_or(0) + 1;
            self.server.insert(n, rev);
            let items = (1..=rev)
                .map(|r| Item {
                    id: ItemId::new(format!("s{r}")).unwrap(),
                    item: json!({ "r": r }),
                    rev: r,
                })
                .collect();
            let message = ServerMessage::Snapshot {
                feed: feed(n),
                epoch: 1,
                rev,
                items,
            };
            self.log(format!("snapshot of sim:{n} at {rev}"));
            let _ = self
                .durable
                .input(self.now, |core, now| core.handle_server(message, now));
        } else if roll < 8 {
            let pattern = FeedPattern::new(format!("sim:{}", self.rng.below(3))).unwrap();
            let _ = self
                .durable
                .input(self.now, |core, now| core.subscribe(pattern, now));
        } else {
            let _ = self
                .durable
                .input(self.now, |core, now| core.disconnected(now));
        }
        self.pump()
    }

    /// Carries out the machine's tasks; starts at most one store operation.
    fn pump(&mut self) -> Result<(), String> {
        for _ in 0..1_000 {
            if self.pending.is_some() {
                break;
            }
            let Some(task) = self.durable.poll(self.now) else {
                break;
            };
            let done_at = self.now + 1 + self.rng.below(60);
            match task {
                Task::Write(batch) => self.pending = Some((Pending::Write(batch), done_at)),
                Task::Reload => self.pending = Some((Pending::Reload, done_at)),
                Task::Reopen => self.pending = Some((Pending::Reopen, done_at)),
                Task::Report(message) => self.log(format!("report: {message}")),
                Task::Effects(effects) => {
                    if effects.store.is_some() {
                        return Err(self.fail("effects handed out with a store batch".into()));
                    }
                    self.show(&effects);
                    if effects.connect && self.rng.chance(50) {
                        if self.now < self.no_connect_before {
                            return Err(self.fail(format!(
                                "a connection before the wait after a store failure ({}): {effects:?}",
                                self.no_connect_before
                            )));
                        }
                        self.log("connected".into());
                        let welcome = ServerMessage::Welcome {
                            protocol: PROTOCOL_VERSION,
                            user: "u".into(),
                            ledger_window_ms: None,
                        };
                        let _ = self.durable.input(self.now, |core, now| {
                            core.connected(now)?;
                            core.handle_server(welcome, now)
                        });
                    } else if effects.connect {
                        if self.now < self.no_connect_before {
                            return Err(self.fail(format!(
                                "a connection before the wait after a store failure ({}): {effects:?}",
                                self.no_connect_before
                            )));
                        }
                        // The network is down: the connection fails at once.
                        self.log("connect fails".into());
                        let _ = self
                            .durable
                            .input(self.now, |core, now| core.disconnected(now));
                    }
                }
            }
        }
        self.resolve()?;
        if self.pending.is_none() {
            self.check_idle()?;
        }
        Ok(())
    }

    /// The app applies the notifications it is handed.
    fn show(&mut self, effects: &Effects) {
        for notification in &effects.notify {
            if let Notification::Items {
                feed,
                changed,
                removed,
                order,
            } = notification
            {
                let items = self.app.entry(feed.clone()).or_default();
                for id in removed {
                    items.remove(id);
                }
                if let Some(order) = order {
                    items.retain(|id, _| order.contains(id));
                }
                for view in changed {
                    items.insert(view.id.clone(), view.value.clone());
                }
            }
        }
    }

    /// Settles the promises the machine decided, checking the stored ones.
    fn resolve(&mut self) -> Result<(), String> {
        let mut still = Vec::new();
        for (mark, id) in std::mem::take(&mut self.waiting) {
            match self.durable.stored(mark) {
                None => still.push((mark, id)),
                Some(false) => self.failed += 1,
                Some(true) => {
                    self.stored += 1;
                    let op = &self.ids[&id];
                    let state = self.store.state();
                    let present = state.outbox.values().any(|e| e.id == id && &e.op == op)
                        || state.outcomes.contains_key(&id);
                    if !present {
                        return Err(self.fail(format!(
                            "change {} resolved as stored but the store does not hold it",
                            id.0
                        )));
                    }
                }
            }
        }
        self.waiting = still;
        Ok(())
    }

    /// Nothing in flight and nothing to do: memory and store agree.
    fn check_idle(&self) -> Result<(), String> {
        let expected = self.durable.core().stored_state();
        if self.durable.is_stopped() {
            // Fenced: the core holds what the store holds (what followers
            // are told), and writes nothing more.
            if expected.outbox != self.store.state().outbox {
                return Err(self.fail(format!(
                    "a fenced core holds other changes than the store\n core:  {:?}\n store: {:?}",
                    expected.outbox,
                    self.store.state().outbox
                )));
            }
            return Ok(());
        }
        if &expected != self.store.state() {
            return Err(self.fail(format!(
                "store and core disagree\n core:  {expected:?}\n store: {:?}",
                self.store.state()
            )));
        }
        // What the app shows is the core's view (also after a mirror write
        // that failed once the app had been shown its items).
        for n in 0..3 {
            let core: BTreeMap<ItemId, serde_json::Value> = self
                .durable
                .core()
                .view(&feed(n))
                .into_iter()
                .map(|v| (v.id, v.value))
                .collect();
            let app = self.app.get(&feed(n)).cloned().unwrap_or_default();
            if app != core {
                return Err(self.fail(format!(
                    "the app shows sim:{n} otherwise than the core\n app:  {app:?}\n core: {core:?}"
                )));
            }
        }
        Ok(())
    }

    /// Advances time to `until`: completes store operations, fires timers.
    fn advance(&mut self, until: u64) -> Result<(), String> {
        for _ in 0..10_000 {
            let done = self.pending.as_ref().map(|(_, at)| *at);
            let next = [done, self.durable.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return Ok(());
            };
            self.now = self.now.max(next);
            if done.is_some_and(|at| at <= self.now) {
                self.complete()?;
            } else {
                let _ = self.durable.handle_timeout(self.now);
            }
            self.pump()?;
        }
        Err(self.fail("time does not advance".into()))
    }

    /// The store's operation completes, or fails.
    fn complete(&mut self) -> Result<(), String> {
        let Some((pending, _)) = self.pending.take() else {
            return Ok(());
        };
        match pending {
            Pending::Write(batch) => {
                let roll = self.rng.below(100);
                if roll < 10 {
                    self.log("write fails".into());
                    self.after_failure();
                    self.durable
                        .write_done(Err(StoreFailure::Failed("injected".into())));
                } else if roll < 13 && batch.writes.iter().any(|w| !w.is_cache()) {
                    self.log("storage full: the cached feeds are dropped".into());
                    self.evict();
                    self.store.apply(&batch.without_cache()).unwrap();
                    self.after_failure();
                    self.durable
                        .write_done(Err(StoreFailure::Evicted("injected".into())));
                } else if roll < 18 {
                    if self.rng.chance(50) {
                        self.log("the database is deleted".into());
                        self.store = MemoryStore::new();
                    } else {
                        self.log("the database is closed".into());
                    }
                    self.durable
                        .write_done(Err(StoreFailure::Lost("injected".into())));
                } else if roll == 18 && self.rng.chance(10) {
                    self.log("another tab leads: fenced".into());
                    self.durable.write_done(Err(StoreFailure::Fenced));
                } else {
                    self.log(format!("write commits ({} writes)", batch.writes.len()));
                    self.store.apply(&batch).unwrap();
                    self.durable.write_done(Ok(()));
                }
            }
            Pending::Reload => {
                let state = self.store.load().unwrap();
                self.log("reload".into());
                self.durable.reloaded(Ok(state), self.now);
                if self.durable.is_fenced() != self.durable.is_stopped() {
                    return Err(self.fail("a fenced machine must stop after its reload".into()));
                }
                // The first wait after a failure is at least a second.
                self.no_connect_before = self.now + 1_000;
            }
            Pending::Reopen => {
                let empty = self.store.state() == &StoredState::default();
                self.log(format!("reopen (empty: {empty})"));
                self.durable.reopened(Ok(empty));
            }
        }
        Ok(())
    }

    fn after_failure(&mut self) {
        self.no_connect_before = u64::MAX;
    }

    /// Drops every cached feed from the store, as a shell does when full.
    fn evict(&mut self) {
        let state = self.store.state().clone();
        let mut clear = StoreBatch::default();
        for feed in state.feeds.keys() {
            clear
                .writes
                .push(StoreWrite::ClearFeed { feed: feed.clone() });
        }
        self.store.apply(&clear).unwrap();
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn durability_holds_over_an_asynchronous_failing_store() {
    let count = env_u64("THOONK_DURABILITY_SEEDS", DEFAULT_SEEDS);
    let first = env_u64("THOONK_DURABILITY_FIRST_SEED", 0);
    let (mut made, mut stored, mut failed) = (0, 0, 0);
    for seed in first..first + count {
        let (m, s, f) = Sim::new(seed).run().unwrap_or_else(|e| panic!("{e}"));
        made += m;
        stored += s;
        failed += f;
    }
    println!("{count} seeds: {made} changes, {stored} stored, {failed} failed");
    assert!(stored > 0 && failed > 0, "the faults never fired");
}

fn publish(n: u64) -> Operation {
    Operation::Publish {
        feed: feed(0),
        id: ItemId::new(format!("i{n}")).unwrap(),
        item: json!({ "n": n }),
        position: None,
    }
}

/// A change made while the write before it is in flight, which then fails:
/// the change was never written, so it is not reported stored, and its id
/// is never given to another change.
#[test]
fn a_change_made_during_a_failing_write_is_not_reported_stored() {
    let config = Config::new("c", "t", 1);
    let mut store = MemoryStore::new();
    let mut durable = Durable::open(config, StoredState::default(), 0).unwrap();
    let first = durable
        .input(0, |core, now| core.change(publish(1), now))
        .unwrap();
    let first_mark = durable.mark();
    let Some(Task::Write(batch)) = durable.poll(0) else {
        panic!("the first change's batch is written first");
    };
    // While that batch is in flight, the app makes a second change.
    let second = durable
        .input(1, |core, now| core.change(publish(2), now))
        .unwrap();
    let second_mark = durable.mark();
    assert_eq!(durable.poll(1), None, "one write at a time");
    drop(batch);
    durable.write_done(Err(StoreFailure::Failed("quota".into())));
    assert_eq!(durable.stored(first_mark), Some(false));
    assert_eq!(durable.stored(second_mark), Some(false));
    // Carry out the recovery: the core reloads from the (empty) store.
    let mut reported = false;
    while let Some(task) = durable.poll(2) {
        match task {
            Task::Reload => durable.reloaded(Ok(store.load().unwrap()), 2),
            Task::Write(batch) => {
                store.apply(&batch).unwrap();
                durable.write_done(Ok(()));
            }
            Task::Report(_) => reported = true,
            Task::Effects(effects) => assert!(!effects.connect, "no connection before the wait"),
            Task::Reopen => unreachable!(),
        }
    }
    assert!(reported, "the app hears of the failure");
    assert_eq!(durable.stored(second_mark), Some(false), "still not stored");
    // The next change gets a new id, never one of the failed changes'.
    let third = durable
        .input(3, |core, now| core.change(publish(3), now))
        .unwrap();
    assert_ne!(third, first);
    assert_ne!(third, second);
    let third_mark = durable.mark();
    while let Some(task) = durable.poll(3) {
        if let Task::Write(batch) = task {
            store.apply(&batch).unwrap();
            durable.write_done(Ok(()));
        }
    }
    assert_eq!(durable.stored(third_mark), Some(true));
    assert_eq!(store.state().outbox.len(), 1);
    assert!(store.state().outbox.values().all(|e| e.id == third));
    // The wait before the next connection is part of the deadline.
    assert!(durable.poll_timeout().is_some_and(|t| t >= 2 + 1_000));
}

/// Seed 0 reported a change stored that was made while a failing write was
/// in flight, and gave its id to another change after the reload.
#[test]
fn regression_seed_0_changes_made_during_a_failing_write() {
    Sim::new(0).run().unwrap_or_else(|e| panic!("{e}"));
}

/// Carries out every task the machine has, each write committing at once;
/// returns the effects handed out, in order.
fn carry_out(durable: &mut Durable, store: &mut MemoryStore, now: u64) -> Vec<Effects> {
    let mut handed = Vec::new();
    while let Some(task) = durable.poll(now) {
        match task {
            Task::Write(batch) => {
                store.apply(&batch).unwrap();
                durable.write_done(Ok(()));
            }
            Task::Reload => durable.reloaded(Ok(store.load().unwrap()), now),
            Task::Effects(effects) => handed.push(effects),
            Task::Report(_) => {}
            Task::Reopen => unreachable!(),
        }
    }
    handed
}

fn tasks_feed() -> FeedName {
    FeedName::new("team:1:tasks").unwrap()
}

/// An event of `tasks_feed()` at `rev` publishing item `id`.
fn event(rev: u64, id: &str) -> ServerMessage {
    ServerMessage::Event {
        feed: tasks_feed(),
        epoch: 1,
        rev,
        change: Change {
            op: ChangeOp::Publish,
            id: ItemId::new(id).unwrap(),
            item: Some(json!({ "title": id })),
            position: None,
            prev: None,
            job: None,
        },
    }
}

/// Connects (at `now`) and answers the handshake; returns the frames the
/// client sent after `welcome`.
fn handshake(durable: &mut Durable, store: &mut MemoryStore, now: u64) -> Vec<ClientMessage> {
    durable.input(now, |core, now| core.connected(now)).unwrap();
    carry_out(durable, store, now);
    durable
        .input(now, |core, now| {
            core.handle_server(
                ServerMessage::Welcome {
                    protocol: PROTOCOL_VERSION,
                    user: "u".into(),
                    ledger_window_ms: None,
                },
                now,
            )
        })
        .unwrap();
    carry_out(durable, store, now)
        .into_iter()
        .flat_map(|fx| fx.send)
        .collect()
}

/// A machine online, mirroring `tasks_feed()` at revision 1 (item `a`), all stored.
fn mirroring() -> (Durable, MemoryStore) {
    let mut store = MemoryStore::new();
    let config = Config::new("c", "t", 1);
    let mut durable = Durable::open(config, StoredState::default(), 0).unwrap();
    let pattern = FeedPattern::new("team:1:*").unwrap();
    durable
        .input(0, |core, now| core.subscribe(pattern.clone(), now))
        .unwrap();
    carry_out(&mut durable, &mut store, 0);
    handshake(&mut durable, &mut store, 1);
    for message in [
        ServerMessage::Subscribed {
            pattern,
            feeds: vec![tasks_feed()],
        },
        ServerMessage::Snapshot {
            feed: tasks_feed(),
            epoch: 1,
            rev: 1,
            items: vec![Item {
                id: ItemId::new("a").unwrap(),
                item: json!({ "title": "a" }),
                rev: 1,
            }],
        },
    ] {
        durable
            .input(2, |core, now| core.handle_server(message, now))
            .unwrap();
        carry_out(&mut durable, &mut store, 2);
    }
    assert_eq!(store.state(), &durable.core().stored_state());
    (durable, store)
}

/// The ids a notification of `tasks_feed()` shows as changed and removed.
fn shown(effects: &Effects) -> (Vec<String>, Vec<String>, Option<Vec<String>>) {
    let mut out = (Vec::new(), Vec::new(), None);
    for notification in &effects.notify {
        if let Notification::Items {
            changed,
            removed,
            order,
            ..
        } = notification
        {
            out.0
                .extend(changed.iter().map(|v| v.id.as_str().to_owned()));
            out.1
                .extend(removed.iter().map(|id| id.as_str().to_owned()));
            out.2 = order
                .as_ref()
                .map(|o| o.iter().map(|id| id.as_str().to_owned()).collect());
        }
    }
    out
}

/// A round that only writes the cache is shown first and committed after
/// (the mirror is a cache); a round with an outbox write is still stored
/// before anything of it goes out.
#[test]
fn server_changes_are_shown_before_their_mirror_write_but_changes_sent_after_theirs() {
    let (mut durable, mut store) = mirroring();
    durable
        .input(3, |core, now| core.handle_server(event(2, "b"), now))
        .unwrap();
    let mark = durable.mark();
    let Some(Task::Effects(effects)) = durable.poll(3) else {
        panic!("the app is shown the change before the mirror's write");
    };
    assert_eq!(shown(&effects).0, ["b"]);
    let Some(Task::Write(batch)) = durable.poll(3) else {
        panic!("then the mirror's write");
    };
    assert!(batch.writes.iter().all(StoreWrite::is_cache));
    assert_eq!(durable.stored(mark), None, "not stored before it commits");
    store.apply(&batch).unwrap();
    durable.write_done(Ok(()));
    assert_eq!(durable.poll(3), None);
    assert_eq!(durable.stored(mark), Some(true));

    // A local change: its outbox entry is written before its submit goes out.
    durable
        .input(4, |core, now| core.change(publish(9), now))
        .unwrap();
    let Some(Task::Write(batch)) = durable.poll(4) else {
        panic!("a change's outbox entry is written first");
    };
    assert!(batch
        .writes
        .iter()
        .any(|w| matches!(w, StoreWrite::PutOutbox { .. })));
    store.apply(&batch).unwrap();
    durable.write_done(Ok(()));
    let Some(Task::Effects(effects)) = durable.poll(4) else {
        panic!("then its effects");
    };
    assert!(matches!(effects.send[..], [ClientMessage::Submit { .. }]));
}

/// A mirror write that fails after the app was shown its changes: the app
/// is told the feed again as the store has it, and the reloaded core, behind
/// what was shown, asks the server for those changes again.
#[test]
fn a_shown_mirror_write_that_fails_is_told_again_and_fetched_again() {
    let (mut durable, mut store) = mirroring();
    durable
        .input(3, |core, now| core.handle_server(event(2, "b"), now))
        .unwrap();
    let Some(Task::Effects(effects)) = durable.poll(3) else {
        panic!("shown first");
    };
    assert_eq!(shown(&effects).0, ["b"]);
    let Some(Task::Write(_)) = durable.poll(3) else {
        panic!("then written");
    };
    durable.write_done(Err(StoreFailure::Failed("disk error".into())));
    let told = carry_out(&mut durable, &mut store, 4);
    assert!(
        told.iter()
            .any(|fx| shown(fx) == (vec!["a".into()], vec!["b".into()], Some(vec!["a".into()]))),
        "the app hears that b is gone again: {told:?}"
    );
    assert_eq!(
        durable.core().position(&tasks_feed()).map(|h| h.rev),
        Some(1)
    );

    // After the wait, the reloaded core subscribes from what the store holds.
    let now = durable.poll_timeout().expect("a connection after the wait");
    durable.handle_timeout(now).unwrap();
    let connect = carry_out(&mut durable, &mut store, now);
    assert!(connect.iter().any(|fx| fx.connect));
    let sent = handshake(&mut durable, &mut store, now);
    let known = sent.iter().find_map(|frame| match frame {
        ClientMessage::Subscribe { known, .. } => known.get(&tasks_feed()).copied(),
        _ => None,
    });
    assert_eq!(known, Some(FeedPosition { epoch: 1, rev: 1 }));
    durable
        .input(now, |core, now| core.handle_server(event(2, "b"), now))
        .unwrap();
    let told = carry_out(&mut durable, &mut store, now);
    assert!(told.iter().any(|fx| shown(fx).0 == ["b"]));
    assert_eq!(store.state(), &durable.core().stored_state());
    assert_eq!(store.state().items.len(), 2);
}
