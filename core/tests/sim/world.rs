//! One simulated world: the client core over a memory store, the server
//! model, and the faulty network between them, driven by one seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{json, Value};
use thoonk_protocol::{
    Change, ChangeId, ChangeOp, ClientMessage, FeedName, FeedPattern, ItemId, Operation, Position,
    ServerMessage,
};
use thoonk_sync_core::{
    ChangeOutcome, Config, ConflictCase, FnResolver, ItemState, MemoryStore, Notification,
    Resolution, SplitMix64, Status, Store, SyncCore, Timing,
};

use super::network::{Faults, Pipe};
use super::server::SimServer;

/// Counts of what a run exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Local changes made.
    pub changes: u64,
    /// Changes that ended accepted (also after a resolved conflict).
    pub applied: u64,
    /// Changes rejected by the server.
    pub rejected: u64,
    /// Conflicts settled by the resolver.
    pub resolved: u64,
    /// Conflicts left unresolved.
    pub unresolved: u64,
    /// Replay requests sent.
    pub replays: u64,
    /// Snapshots delivered.
    pub snapshots: u64,
    /// Client restarts.
    pub restarts: u64,
    /// Disconnects.
    pub disconnects: u64,
    /// Submits sent (including resends).
    pub submits: u64,
    /// Inputs the client handled.
    pub inputs: u64,
    /// Store batches that failed (the client was reopened from the store).
    pub storage_failures: u64,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Stats) {
        self.changes += other.changes;
        self.applied += other.applied;
        self.rejected += other.rejected;
        self.resolved += other.resolved;
        self.unresolved += other.unresolved;
        self.replays += other.replays;
        self.snapshots += other.snapshots;
        self.restarts += other.restarts;
        self.disconnects += other.disconnects;
        self.submits += other.submits;
        self.inputs += other.inputs;
        self.storage_failures += other.storage_failures;
    }
}

/// The result of a run that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// A digest of the final client and server state (for determinism checks).
    pub digest: u64,
    /// What the run exercised.
    pub stats: Stats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Down,
    Connecting { at: u64 },
    Open,
}

/// One store batch in this many fails (when the world injects storage failures).
const STORAGE_FAILURE_ODDS: u64 = 300;

/// What a world simulates beyond the basics. Regression seeds keep the
/// features of the world they failed in, so that they replay the same story.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Events per `changes` frame on the server.
    pub changes_per_frame: usize,
    /// Store batches fail now and then; the client is reopened from the store.
    pub storage_failures: bool,
    /// Some seeds use an app resolver that keeps ours instead of the merge.
    pub resolver_choice: bool,
}

impl Features {
    /// Everything the simulation has.
    pub fn all() -> Self {
        Self {
            changes_per_frame: 2,
            storage_failures: true,
            resolver_choice: true,
        }
    }

    /// The first simulated world: one `changes` frame per replay, no storage
    /// failures, always the merge resolver.
    pub fn first() -> Self {
        Self {
            changes_per_frame: usize::MAX,
            storage_failures: false,
            resolver_choice: false,
        }
    }
}

const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "eps"];
/// Steps of random activity before the world is healed.
pub const STEPS: u32 = 36;

/// The simulated world.
pub struct World {
    seed: u64,
    rng: SplitMix64,
    now: u64,
    server: SimServer,
    store: MemoryStore,
    client: Option<SyncCore>,
    up: Pipe<ClientMessage>,
    down: Pipe<ServerMessage>,
    faults: Faults,
    link: Link,
    outage_until: u64,
    feeds: Vec<FeedName>,
    made: Vec<ChangeId>,
    notified: BTreeMap<ChangeId, ChangeOutcome>,
    max_rev: BTreeMap<(FeedName, u64), u64>,
    stats: Stats,
    trace: VecDeque<String>,
    other_seq: u64,
    pumps: u64,
    steps: u32,
    ours_wins: bool,
    features: Features,
}

fn feed(name: &str) -> FeedName {
    FeedName::new(name).unwrap()
}

fn item_id(i: u64) -> ItemId {
    ItemId::new(format!("i{i}")).unwrap()
}

fn timing() -> Timing {
    Timing {
        reconnect_base: 200,
        reconnect_max: 5_000,
        handshake_timeout: 2_000,
        submit_timeout: 300,
        submit_timeout_max: 5_000,
        outcome_timeout: 1_000,
        replay_timeout: 300,
        replay_timeout_max: 5_000,
        ping_interval: 3_000,
        pong_timeout: 1_000,
    }
}

impl World {
    /// A world for `seed` with every feature: its faults and every random
    /// choice follow from the seed.
    pub fn new(seed: u64) -> Self {
        Self::with_features(seed, Features::all())
    }

    /// A world for `seed` with the given features.
    pub fn with_features(seed: u64, features: Features) -> Self {
        let mut rng = SplitMix64::new(seed);
        let feeds = vec![feed("sim:a"), feed("sim:b"), feed("sim:c")];
        let faults = Faults {
            drop_pct: rng.below(12),
            dup_pct: rng.below(8),
            min_delay: 1 + rng.below(10),
            jitter: rng.below(60),
        };
        let ours_wins = features.resolver_choice && rng.chance(30);
        Self {
            seed,
            rng,
            now: 0,
            server: SimServer::new(&feeds, features.changes_per_frame),
            store: MemoryStore::new(),
            client: None,
            up: Pipe::new(),
            down: Pipe::new(),
            faults,
            link: Link::Down,
            outage_until: 0,
            feeds,
            made: Vec::new(),
            notified: BTreeMap::new(),
            max_rev: BTreeMap::new(),
            stats: Stats::default(),
            trace: VecDeque::new(),
            other_seq: 0,
            pumps: 0,
            steps: STEPS,
            ours_wins,
            features,
        }
    }

    /// The same world with another number of random steps (regression seeds
    /// keep the step count they failed with).
    pub fn with_steps(mut self, steps: u32) -> Self {
        self.steps = steps;
        self
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= 200 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>7} {line}", self.now));
    }

    fn fail(&self, what: String) -> String {
        let tail: Vec<&String> = self.trace.iter().rev().take(200).collect();
        let tail: Vec<&String> = tail.into_iter().rev().collect();
        format!(
            "seed {}: {what}\nfaults: {:?}\nlast events:\n{}",
            self.seed,
            self.faults,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn client(&mut self) -> &mut SyncCore {
        self.client.as_mut().expect("the client is running")
    }

    /// Runs the whole scenario and checks every invariant.
    pub fn run(mut self) -> Result<Report, String> {
        self.open_client()?;
        for _ in 0..self.steps {
            self.step()?;
            let dt = self.rng.below(150);
            self.run_until(self.now + dt)?;
        }
        self.quiesce()?;
        self.check_final()?;
        let digest = fnv(&format!(
            "{:?}|{:?}|{:?}",
            self.client.as_ref().unwrap().stored_state(),
            self.server.ledger,
            self.notified
        ));
        Ok(Report {
            digest,
            stats: self.stats,
        })
    }

    fn open_client(&mut self) -> Result<(), String> {
        let mut config = Config::new("client-1", "token", self.rng.next_u64());
        config.timing = timing();
        let state = self.store.load().map_err(|e| e.to_string())?;
        let before: BTreeSet<u64> = state.outbox.keys().copied().collect();
        let client =
            SyncCore::open(config, state, self.now).map_err(|e| self.fail(e.to_string()))?;
        let after: BTreeSet<u64> = client.pending().iter().map(|r| r.seq).collect();
        if before != after {
            return Err(self.fail(format!(
                "outbox changed across a restart: {before:?} -> {after:?}"
            )));
        }
        self.client = Some(client);
        // The app subscribes at every start (a no-op when the store has it).
        let now = self.now;
        self.client()
            .subscribe(FeedPattern::new("sim:*").unwrap(), now)
            .map_err(|e| e.to_string())?;
        if self.ours_wins {
            self.client()
                .set_resolver(Box::new(FnResolver(|case: &ConflictCase| {
                    Ok(if case.theirs.is_some() {
                        Resolution::KeepOurs
                    } else {
                        Resolution::DropOurs
                    })
                })));
        }
        self.pump()
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.below(100);
        match roll {
            0..=39 => self.local_change(),
            40..=54 => {
                self.other_write();
                Ok(())
            }
            55..=56 => {
                let f = self.feeds[self.rng.below(3) as usize].clone();
                self.log(format!("server resets {f}"));
                self.server.reset(&f);
                Ok(())
            }
            57..=60 => {
                self.break_link("network drops the connection");
                self.with_client(|c, now| c.disconnected(now))
            }
            61..=62 => self.restart(),
            63..=64 => {
                self.outage_until = self.now + 500 + self.rng.below(4_000);
                self.log(format!("outage until {}", self.outage_until));
                self.break_link("outage");
                self.with_client(|c, now| c.disconnected(now))
            }
            _ => Ok(()),
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        self.log("client restarts".into());
        self.stats.restarts += 1;
        self.check_store()?;
        self.break_link("restart");
        self.client = None;
        self.open_client()
    }

    fn break_link(&mut self, why: &str) {
        if self.link != Link::Down {
            self.stats.disconnects += 1;
            self.log(format!("link down: {why}"));
        }
        self.link = Link::Down;
        self.up.clear();
        self.down.clear();
        self.server.drop_session();
    }

    fn random_value(&mut self, base: Option<&Value>) -> Value {
        let mut v = base
            .cloned()
            .unwrap_or_else(|| json!({"t": "new", "tags": []}));
        if !v.is_object() {
            v = json!({});
        }
        match self.rng.below(4) {
            0 => v["t"] = json!(WORDS[self.rng.below(5) as usize]),
            1 => v["done"] = json!(self.rng.chance(50)),
            2 => {
                let tag = json!(WORDS[self.rng.below(5) as usize]);
                match v.get_mut("tags").and_then(|t| t.as_array_mut()) {
                    Some(tags) => tags.push(tag),
                    None => v["tags"] = json!([tag]),
                }
            }
            _ => v["p"] = json!(self.rng.below(10)),
        }
        if self.rng.chance(4) {
            v["reject"] = json!(true);
        } else if let Some(o) = v.as_object_mut() {
            o.remove("reject");
        }
        v
    }

    fn random_position(&mut self, ids: &[ItemId]) -> Position {
        if ids.is_empty() {
            return if self.rng.chance(50) {
                Position::Begin
            } else {
                Position::End
            };
        }
        let anchor = ids[self.rng.below(ids.len() as u64) as usize].clone();
        match self.rng.below(4) {
            0 => Position::Begin,
            1 => Position::End,
            2 => Position::After(anchor),
            _ => Position::Before(anchor),
        }
    }

    fn local_change(&mut self) -> Result<(), String> {
        let f = self.feeds[self.rng.below(3) as usize].clone();
        let view = self.client().view(&f);
        let ids: Vec<ItemId> = view.iter().map(|v| v.id.clone()).collect();
        let pick =
            (!view.is_empty()).then(|| view[self.rng.below(view.len() as u64) as usize].clone());
        let now = self.now;
        let op = match (self.rng.below(100), pick) {
            (0..=29, _) | (_, None) => {
                let id = item_id(self.rng.below(8));
                let current = view.iter().find(|v| v.id == id).map(|v| v.value.clone());
                let value = self.random_value(current.as_ref());
                let position = self.rng.chance(50).then(|| self.random_position(&ids));
                Operation::Publish {
                    feed: f.clone(),
                    id,
                    item: value,
                    position,
                }
            }
            (30..=64, Some(v)) => Operation::Edit {
                feed: f.clone(),
                id: v.id.clone(),
                item: self.random_value(Some(&v.value)),
            },
            (65..=74, Some(v)) => Operation::Retract {
                feed: f.clone(),
                id: v.id.clone(),
            },
            (75..=86, Some(v)) => Operation::Move {
                feed: f.clone(),
                id: v.id.clone(),
                position: self.random_position(&ids),
            },
            (87..=96, Some(v)) => Operation::Action {
                name: "bump".into(),
                payload: json!({"feed": f.as_str(), "id": v.id.as_str()}),
            },
            (_, Some(_)) => Operation::Action {
                name: "unknown".into(),
                payload: json!(null),
            },
        };
        self.log(format!("local {}", op_summary(&op)));
        let id = self
            .client()
            .change(op, now)
            .map_err(|e| format!("seed {}: local change failed: {e}", self.seed))?;
        self.made.push(id);
        self.stats.changes += 1;
        self.pump()
    }

    fn other_write(&mut self) {
        let f = self.feeds[self.rng.below(3) as usize].clone();
        let items = self.server.feeds[&f].items.clone();
        let ids = items.ids();
        self.other_seq += 1;
        let job = Some(format!("other:{}", self.other_seq));
        let existing =
            (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize].clone());
        let change = match (self.rng.below(10), existing) {
            (0..=2, _) | (_, None) => {
                let id = item_id(self.rng.below(8));
                let prev = items.get(&id).map(|i| i.value.clone());
                let value = self.random_value(prev.as_ref());
                Change {
                    op: if prev.is_some() {
                        ChangeOp::Edit
                    } else {
                        ChangeOp::Publish
                    },
                    id,
                    item: Some(value),
                    position: Some(Position::End),
                    prev,
                    job,
                }
            }
            (3..=6, Some(id)) => {
                let prev = items.get(&id).map(|i| i.value.clone());
                let mut value = self.random_value(prev.as_ref());
                value.as_object_mut().map(|o| o.remove("reject"));
                Change {
                    op: ChangeOp::Edit,
                    id,
                    item: Some(value),
                    position: None,
                    prev,
                    job,
                }
            }
            (7, Some(id)) => Change {
                op: ChangeOp::Retract,
                prev: items.get(&id).map(|i| i.value.clone()),
                id,
                item: None,
                position: None,
                job,
            },
            (_, Some(id)) => {
                let position = self.random_position(&ids);
                Change {
                    op: ChangeOp::Position,
                    id,
                    item: None,
                    position: Some(position),
                    prev: None,
                    job,
                }
            }
        };
        self.log(format!("other writes {f}: {:?} {}", change.op, change.id));
        let events = self.server.other_write(&f, change);
        self.push_down(events);
    }

    fn push_down(&mut self, msgs: Vec<ServerMessage>) {
        if self.link != Link::Open {
            return;
        }
        for msg in msgs {
            if matches!(msg, ServerMessage::Snapshot { .. }) {
                self.stats.snapshots += 1;
            }
            self.down.send(msg, self.now, &self.faults, &mut self.rng);
        }
    }

    fn with_client(
        &mut self,
        input: impl FnOnce(&mut SyncCore, u64) -> Result<(), thoonk_sync_core::CoreError>,
    ) -> Result<(), String> {
        let now = self.now;
        if let Err(e) = input(self.client(), now) {
            return Err(self.fail(format!("the client reported an error: {e}")));
        }
        self.pump()
    }

    /// Carries out the client's effects, checking the store and revisions.
    fn pump(&mut self) -> Result<(), String> {
        let fx = self.client().take_effects();
        if let Some(batch) = &fx.store {
            if self.features.storage_failures && self.rng.below(STORAGE_FAILURE_ODDS) == 0 {
                return self.fail_storage();
            }
            self.store.apply(batch).map_err(|e| e.to_string())?;
        }
        self.pumps += 1;
        self.stats.inputs += 1;
        if fx.store.is_some() && self.pumps % 64 == 0 {
            self.check_store()?;
        }
        if fx.close {
            self.break_link("client closes");
            let now = self.now;
            self.client().disconnected(now).map_err(|e| e.to_string())?;
        }
        for msg in fx.send {
            match &msg {
                ClientMessage::Replay { .. } => self.stats.replays += 1,
                ClientMessage::Submit { .. } => self.stats.submits += 1,
                _ => {}
            }
            if self.link == Link::Open {
                self.log(format!("client sends {}", client_summary(&msg)));
                self.up.send(msg, self.now, &self.faults, &mut self.rng);
            }
        }
        if fx.connect {
            self.link = Link::Connecting {
                at: self.now + 1 + self.rng.below(30),
            };
        }
        for n in fx.notify {
            if let Notification::Outcome { change, outcome } = n {
                if let Some(first) = self.notified.get(&change) {
                    if first != &outcome {
                        return Err(self.fail(format!(
                            "outcome of {change:?} changed from {first:?} to {outcome:?}"
                        )));
                    }
                }
                self.notified.insert(change, outcome);
            }
        }
        let client = self.client.as_ref().unwrap();
        for f in &self.feeds {
            if let Some(head) = client.position(f) {
                let slot = self.max_rev.entry((f.clone(), head.epoch)).or_insert(0);
                if head.rev < *slot {
                    let msg = format!(
                        "{f} went back from rev {} to {} in epoch {}",
                        slot, head.rev, head.epoch
                    );
                    return Err(self.fail(msg));
                }
                *slot = head.rev;
            }
        }
        Ok(())
    }

    /// A store batch fails (say, over quota): the shell sends nothing of that
    /// round and reopens the core from the store. Changes made since the last
    /// batch that succeeded are gone (they never left the client); everything
    /// stored before, the outbox above all, must survive.
    fn fail_storage(&mut self) -> Result<(), String> {
        self.log("a store batch fails".into());
        self.stats.storage_failures += 1;
        self.client().storage_failed("injected: quota exceeded");
        let fx = self.client().take_effects();
        if !fx.close || !fx.send.is_empty() {
            return Err(self.fail(format!("a failed batch must only close: {fx:?}")));
        }
        self.break_link("storage failed");
        self.client = None;
        let state = self.store.state();
        self.made.retain(|id| {
            state.outbox.values().any(|e| &e.id == id) || state.outcomes.contains_key(id)
        });
        self.max_rev.clear();
        self.open_client()
    }

    /// The store must hold exactly what the core says it should.
    fn check_store(&self) -> Result<(), String> {
        let expected = self.client.as_ref().unwrap().stored_state();
        if &expected != self.store.state() {
            return Err(self.fail(format!(
                "store and core disagree\n core:  {expected:?}\n store: {:?}",
                self.store.state()
            )));
        }
        Ok(())
    }

    /// Advances time to `until`, delivering messages and firing timers.
    fn run_until(&mut self, until: u64) -> Result<(), String> {
        for _ in 0..100_000 {
            let connect_at = match self.link {
                Link::Connecting { at } => Some(at),
                _ => None,
            };
            let next = [
                self.up.next_at(),
                self.down.next_at(),
                self.client.as_ref().unwrap().poll_timeout(),
                connect_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return Ok(());
            };
            self.now = self.now.max(next);
            if connect_at.is_some_and(|at| at <= self.now) {
                if self.now < self.outage_until {
                    self.link = Link::Down;
                    self.log("connect fails (outage)".into());
                    self.with_client(|c, now| c.disconnected(now))?;
                } else {
                    self.link = Link::Open;
                    self.server.drop_session();
                    self.log("connected".into());
                    self.with_client(|c, now| c.connected(now))?;
                }
            }
            while let Some(msg) = self.up.pop_due(self.now) {
                let answers = self.server.handle(msg);
                self.push_down(answers);
            }
            while let Some(msg) = self.down.pop_due(self.now) {
                self.log(format!("client gets {}", server_summary(&msg)));
                self.with_client(|c, now| c.handle_server(msg, now))?;
            }
            if self
                .client
                .as_ref()
                .unwrap()
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.with_client(|c, now| c.handle_timeout(now))?;
            }
        }
        Err(self.fail("the world does not settle: 100000 events before the deadline".into()))
    }

    fn converged(&self) -> bool {
        let client = self.client.as_ref().unwrap();
        *client.status() == Status::Online
            && self.up.is_empty()
            && self.down.is_empty()
            && client.pending().is_empty()
            && self.feeds.iter().all(|f| {
                let s = &self.server.feeds[f];
                client.position(f).map(|h| (h.epoch, h.rev)) == Some((s.epoch, s.rev))
            })
    }

    /// Heals the network, writes a marker to every feed (so that a gap at the
    /// end of a feed shows), and runs until everything settles.
    fn quiesce(&mut self) -> Result<(), String> {
        self.faults = Faults::calm();
        self.outage_until = 0;
        self.log("quiesce".into());
        for f in self.feeds.clone() {
            self.other_seq += 1;
            let change = Change {
                op: ChangeOp::Publish,
                id: ItemId::new("marker").unwrap(),
                item: Some(json!({"marker": self.other_seq})),
                position: Some(Position::End),
                prev: None,
                job: None,
            };
            let events = self.server.other_write(&f, change);
            self.push_down(events);
        }
        for _ in 0..60 {
            let until = self.now + 1_000;
            self.run_until(until)?;
            if self.converged() {
                return Ok(());
            }
        }
        let client = self.client.as_ref().unwrap();
        let heads: Vec<_> = self
            .feeds
            .iter()
            .map(|f| (f.clone(), client.position(f)))
            .collect();
        let server: Vec<_> = self
            .server
            .feeds
            .iter()
            .map(|(f, s)| (f.clone(), s.epoch, s.rev))
            .collect();
        Err(self.fail(format!(
            "no quiescence after 60 s: status {:?}, pending {:?}, client heads {heads:?}, server {server:?}",
            client.status(),
            client.pending()
        )))
    }

    fn check_final(&mut self) -> Result<(), String> {
        self.check_store()?;
        let client = self.client.as_ref().unwrap();
        for f in &self.feeds {
            let s = &self.server.feeds[f];
            let server_items: Vec<(ItemId, Value, u64)> = s
                .items
                .iter()
                .map(|(id, i)| (id.clone(), i.value.clone(), i.rev))
                .collect();
            if client.confirmed(f) != server_items {
                return Err(self.fail(format!(
                    "mirror of {f} differs\n client: {:?}\n server: {server_items:?}",
                    client.confirmed(f)
                )));
            }
            let view = client.view(f);
            let view_items: Vec<(ItemId, Value, u64)> = view
                .iter()
                .map(|v| (v.id.clone(), v.value.clone(), v.rev))
                .collect();
            if view_items != server_items
                || view
                    .iter()
                    .any(|v| matches!(v.state, ItemState::Pending { .. }))
            {
                return Err(self.fail(format!("the view of {f} is not the mirror: {view:?}")));
            }
        }
        let outcomes = client.outcomes();
        let mut applied_by_client = 0;
        for id in &self.made {
            let Some(record) = outcomes.get(id) else {
                return Err(self.fail(format!("change {id:?} has no outcome")));
            };
            if self.notified.get(id) != Some(&record.outcome) {
                return Err(self.fail(format!(
                    "change {id:?}: the app was told {:?}, the store says {:?}",
                    self.notified.get(id),
                    record.outcome
                )));
            }
            let times = self
                .server
                .applied
                .get(&record.wire_id)
                .copied()
                .unwrap_or(0);
            let applied = record.outcome.applied();
            if applied != (times == 1) || times > 1 {
                return Err(self.fail(format!(
                    "change {id:?} ({:?}) was applied {times} times by the server",
                    record.outcome
                )));
            }
            applied_by_client += u32::from(applied);
            match &record.outcome {
                ChangeOutcome::Accepted { .. } => self.stats.applied += 1,
                ChangeOutcome::Rejected { .. } => self.stats.rejected += 1,
                ChangeOutcome::ConflictResolved { .. } => self.stats.resolved += 1,
                ChangeOutcome::Unresolved { .. } => self.stats.unresolved += 1,
            }
        }
        let applied_total: u32 = self
            .server
            .applied
            .iter()
            .filter(|(id, _)| id.0.starts_with("client-1:"))
            .map(|(_, n)| *n)
            .sum();
        if applied_total != applied_by_client {
            return Err(self.fail(format!(
                "the server applied {applied_total} client changes, the client reports {applied_by_client}"
            )));
        }
        let reopened = SyncCore::open(
            Config::new("client-1", "token", 0),
            self.store.load().map_err(|e| e.to_string())?,
            self.now,
        )
        .map_err(|e| e.to_string())?;
        if reopened.stored_state() != client.stored_state() {
            return Err(self.fail("a core reopened from the store differs".into()));
        }
        Ok(())
    }
}

fn client_summary(msg: &ClientMessage) -> String {
    match msg {
        ClientMessage::Submit { change } => {
            format!(
                "submit {} {} base {:?}",
                change.id.0,
                op_summary(&change.op),
                change.base
            )
        }
        ClientMessage::Replay { feed, from } => {
            format!("replay {feed} from {}/{}", from.epoch, from.rev)
        }
        ClientMessage::Subscribe { pattern, known } => {
            format!("subscribe {pattern} known {known:?}")
        }
        other => format!("{other:?}"),
    }
}

fn op_summary(op: &Operation) -> String {
    match op {
        Operation::Publish {
            feed, id, position, ..
        } => format!("publish {feed}/{id} at {position:?}"),
        Operation::Edit { feed, id, .. } => format!("edit {feed}/{id}"),
        Operation::Retract { feed, id } => format!("retract {feed}/{id}"),
        Operation::Move { feed, id, position } => format!("move {feed}/{id} to {position:?}"),
        Operation::Action { name, .. } => format!("action {name}"),
    }
}

fn server_summary(msg: &ServerMessage) -> String {
    match msg {
        ServerMessage::Event {
            feed,
            epoch,
            rev,
            change,
        } => format!(
            "event {feed} {epoch}/{rev} {:?} {} job {:?}",
            change.op, change.id, change.job
        ),
        ServerMessage::Changes {
            feed,
            epoch,
            events,
        } => format!(
            "changes {feed} epoch {epoch} revs {:?}",
            events.iter().map(|e| e.rev).collect::<Vec<_>>()
        ),
        ServerMessage::Snapshot {
            feed,
            epoch,
            rev,
            items,
        } => {
            format!("snapshot {feed} {epoch}/{rev} with {} items", items.len())
        }
        ServerMessage::Outcome { id, outcome } => {
            let kind = match outcome {
                thoonk_protocol::Outcome::Accepted { revs, .. } => format!("accepted {revs:?}"),
                thoonk_protocol::Outcome::Rejected { code, .. } => format!("rejected {code:?}"),
                thoonk_protocol::Outcome::Conflict { id, rev, .. } => {
                    format!("conflict on {id} at {rev}")
                }
            };
            format!("outcome {} {kind}", id.0)
        }
        ServerMessage::Ack { id } => format!("ack {}", id.0),
        other => format!("{other:?}"),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
