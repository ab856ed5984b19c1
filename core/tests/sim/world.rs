//! One simulated world: several clients (each a core over its memory store)
//! editing the same feeds, the server model, and a faulty network between
//! each client and the server, all driven by one seed.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};
use thoonk_protocol::{
    Base, Change, ChangeId, ChangeOp, ClientMessage, ErrorCode, FeedName, FeedPattern, ItemId,
    Operation, Position, ServerMessage, MAX_FRAME_BYTES,
};
use thoonk_sync_core::{
    ChangeOutcome, Config, ConflictCase, FnResolver, ItemState, MemoryStore, Notification,
    Resolution, ResolverError, SplitMix64, Status, Store, SyncCore, Timing,
};

use super::network::{Faults, Pipe};
use super::server::{client_of, SimServer, WorkerFault};

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
    /// Conflicts on an unknown base (another epoch, a log that no longer reaches).
    pub unknown_bases: u64,
    /// Changes given up because they outlived the ledger window.
    pub expired: u64,
    /// Changes or resolved values settled as too large.
    pub too_large: u64,
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
    /// Inputs the clients handled.
    pub inputs: u64,
    /// Store batches that failed (the client was reopened from the store).
    pub storage_failures: u64,
    /// Feeds deleted (and created again by the next write).
    pub deletions: u64,
    /// Workers that died between applying a job and finishing it.
    pub worker_deaths: u64,
    /// Changes placed relative to an item that was gone (`NOREL`).
    pub norel: u64,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Stats) {
        self.changes += other.changes;
        self.applied += other.applied;
        self.rejected += other.rejected;
        self.resolved += other.resolved;
        self.unresolved += other.unresolved;
        self.unknown_bases += other.unknown_bases;
        self.expired += other.expired;
        self.too_large += other.too_large;
        self.replays += other.replays;
        self.snapshots += other.snapshots;
        self.restarts += other.restarts;
        self.disconnects += other.disconnects;
        self.submits += other.submits;
        self.inputs += other.inputs;
        self.storage_failures += other.storage_failures;
        self.deletions += other.deletions;
        self.worker_deaths += other.worker_deaths;
        self.norel += other.norel;
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

/// How a client's app settles conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppResolver {
    /// The core's merge.
    Merge,
    /// Keeps ours (drops ours when theirs is gone).
    KeepOurs,
    /// Throws now and then, else keeps ours.
    Throws,
    /// Returns values that make no sense for the item (and sometimes a retract).
    Garbage,
    /// Returns a value over the frame limit now and then, else keeps ours.
    TooLarge,
}

/// What a world simulates beyond the basics. Regression seeds keep the
/// features of the world they failed in, so that they replay the same story.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Events per `changes` frame on the server.
    pub changes_per_frame: usize,
    /// Store batches fail now and then; the client is reopened from the store.
    pub storage_failures: bool,
    /// Some clients use an app resolver instead of the merge.
    pub resolver_choice: bool,
    /// How many clients edit the feeds.
    pub clients: usize,
    /// Feeds are deleted and recreated, and epochs renewed with the revision
    /// starting over.
    pub epochs: bool,
    /// Jobs are acknowledged when queued and finished later by workers that
    /// die or lose their claim; otherwise answered at once.
    pub queued_jobs: bool,
    /// The ledger forgets change ids after a window of a few seconds.
    pub ledger_expiry: bool,
    /// App resolvers that throw, return garbage or values over the frame limit.
    pub bad_resolvers: bool,
}

impl Features {
    /// Everything the simulation has.
    pub fn all() -> Self {
        Self {
            changes_per_frame: 2,
            storage_failures: true,
            resolver_choice: true,
            clients: 3,
            epochs: true,
            queued_jobs: true,
            ledger_expiry: true,
            bad_resolvers: true,
        }
    }

    /// The first simulated world: one client, one `changes` frame per
    /// replay, no storage failures, always the merge resolver, jobs answered
    /// at once, a ledger that never forgets.
    pub fn first() -> Self {
        Self {
            changes_per_frame: usize::MAX,
            storage_failures: false,
            resolver_choice: false,
            clients: 1,
            epochs: false,
            queued_jobs: false,
            ledger_expiry: false,
            bad_resolvers: false,
        }
    }
}

const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "eps"];
/// Steps of random activity before the world is healed.
pub const STEPS: u32 = 36;

/// One client: its store, its core (while running) and its connection.
struct Peer {
    name: String,
    store: MemoryStore,
    client: Option<SyncCore>,
    up: Pipe<ClientMessage>,
    down: Pipe<ServerMessage>,
    link: Link,
    outage_until: u64,
    made: Vec<ChangeId>,
    notified: BTreeMap<ChangeId, ChangeOutcome>,
    max_rev: BTreeMap<(FeedName, u64), u64>,
    resolver: AppResolver,
    pumps: u64,
    /// The connection number the server knows this client's link by.
    conn: usize,
}

/// The simulated world.
pub struct World {
    seed: u64,
    rng: SplitMix64,
    now: u64,
    server: SimServer,
    peers: Vec<Peer>,
    faults: Faults,
    feeds: Vec<FeedName>,
    stats: Stats,
    trace: VecDeque<String>,
    other_seq: u64,
    next_conn: usize,
    next_work: u64,
    steps: u32,
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

/// The app resolver of `kind` (none for the merge).
fn app_resolver(kind: AppResolver) -> Option<Box<dyn thoonk_sync_core::Resolver>> {
    let keep = |case: &ConflictCase| {
        if case.theirs.is_some() {
            Resolution::KeepOurs
        } else {
            Resolution::DropOurs
        }
    };
    let pick = |case: &ConflictCase| fnv(&case.change.0) % 3;
    Some(match kind {
        AppResolver::Merge => return None,
        AppResolver::KeepOurs => Box::new(FnResolver(move |case: &ConflictCase| Ok(keep(case)))),
        AppResolver::Throws => Box::new(FnResolver(move |case: &ConflictCase| {
            if pick(case) == 0 {
                Err(ResolverError("the app's resolver threw".into()))
            } else {
                Ok(keep(case))
            }
        })),
        AppResolver::Garbage => Box::new(FnResolver(move |case: &ConflictCase| {
            Ok(match pick(case) {
                0 => Resolution::Merged(Some(json!("garbage"))),
                1 => Resolution::Merged(None),
                _ => Resolution::Merged(Some(json!([case.rev, null, {"x": []}]))),
            })
        })),
        AppResolver::TooLarge => Box::new(FnResolver(move |case: &ConflictCase| {
            Ok(if pick(case) == 0 {
                Resolution::Merged(Some(json!("x".repeat(MAX_FRAME_BYTES))))
            } else {
                keep(case)
            })
        })),
    })
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
        let mut server = SimServer::new(&feeds, features.changes_per_frame);
        server.queued_jobs = features.queued_jobs && rng.chance(50);
        if features.ledger_expiry && rng.chance(30) {
            server.ledger_window = 3_000 + rng.below(6_000);
        }
        let mut peers = Vec::new();
        for n in 0..features.clients.max(1) {
            let resolver = if features.resolver_choice && rng.chance(30) {
                if features.bad_resolvers {
                    match rng.below(4) {
                        0 => AppResolver::KeepOurs,
                        1 => AppResolver::Throws,
                        2 => AppResolver::Garbage,
                        _ => AppResolver::TooLarge,
                    }
                } else {
                    AppResolver::KeepOurs
                }
            } else {
                AppResolver::Merge
            };
            peers.push(Peer {
                name: format!("client-{}", n + 1),
                store: MemoryStore::new(),
                client: None,
                up: Pipe::new(),
                down: Pipe::new(),
                link: Link::Down,
                outage_until: 0,
                made: Vec::new(),
                notified: BTreeMap::new(),
                max_rev: BTreeMap::new(),
                resolver,
                pumps: 0,
                conn: 0,
            });
        }
        Self {
            seed,
            rng,
            now: 0,
            server,
            peers,
            faults,
            feeds,
            stats: Stats::default(),
            trace: VecDeque::new(),
            other_seq: 0,
            next_conn: 1,
            next_work: 0,
            steps: STEPS,
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
        if self.trace.len() >= trace_len() {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>7} {line}", self.now));
    }

    fn fail(&self, what: String) -> String {
        format!(
            "seed {}: {what}\nfeatures: {:?}\nfaults: {:?}\nresolvers: {:?}\nlast events:\n{}",
            self.seed,
            self.features,
            self.faults,
            self.peers.iter().map(|p| p.resolver).collect::<Vec<_>>(),
            self.trace
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn client(&mut self, p: usize) -> &mut SyncCore {
        self.peers[p]
            .client
            .as_mut()
            .expect("the client is running")
    }

    /// Runs the whole scenario and checks every invariant.
    pub fn run(mut self) -> Result<Report, String> {
        for p in 0..self.peers.len() {
            self.open_client(p)?;
        }
        for _ in 0..self.steps {
            self.step()?;
            let dt = self.rng.below(150);
            self.run_until(self.now + dt)?;
        }
        self.quiesce()?;
        self.check_final()?;
        let states: Vec<_> = self
            .peers
            .iter()
            .map(|p| (p.client.as_ref().unwrap().stored_state(), &p.notified))
            .collect();
        let digest = fnv(&format!("{states:?}|{:?}", self.server.ledger));
        Ok(Report {
            digest,
            stats: self.stats,
        })
    }

    fn open_client(&mut self, p: usize) -> Result<(), String> {
        let mut config = Config::new(self.peers[p].name.clone(), "token", self.rng.next_u64());
        config.timing = timing();
        let state = self.peers[p].store.load().map_err(|e| e.to_string())?;
        let client =
            SyncCore::open(config, state, self.now).map_err(|e| self.fail(e.to_string()))?;
        self.peers[p].client = Some(client);
        // The app subscribes at every start (a no-op when the store has it).
        let now = self.now;
        self.client(p)
            .subscribe(FeedPattern::new("sim:*").unwrap(), now)
            .map_err(|e| e.to_string())?;
        if let Some(resolver) = app_resolver(self.peers[p].resolver) {
            self.client(p).set_resolver(resolver);
        }
        self.pump(p)
    }

    fn step(&mut self) -> Result<(), String> {
        let p = self.rng.below(self.peers.len() as u64) as usize;
        let roll = self.rng.below(100);
        match roll {
            0..=39 => self.local_change(p),
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
                self.break_link(p, "network drops the connection");
                self.with_client(p, |c, now| c.disconnected(now))
            }
            61..=62 => self.restart(p),
            63..=64 => {
                self.peers[p].outage_until = self.now + 500 + self.rng.below(4_000);
                let until = self.peers[p].outage_until;
                self.log(format!("{} outage until {until}", self.peers[p].name));
                self.break_link(p, "outage");
                self.with_client(p, |c, now| c.disconnected(now))
            }
            65 if self.features.epochs => {
                let f = self.feeds[self.rng.below(3) as usize].clone();
                self.log(format!("server deletes {f}"));
                self.stats.deletions += 1;
                let msgs = self.server.delete(&f);
                self.push_down(msgs);
                Ok(())
            }
            66 if self.features.epochs => {
                let f = self.feeds[self.rng.below(3) as usize].clone();
                self.log(format!("server renews the epoch of {f}, revision from 0"));
                self.server.renew(&f);
                Ok(())
            }
            67..=68 if self.features.ledger_expiry && self.server.ledger_window < u64::MAX => {
                // A long time offline: longer than the ledger remembers.
                let until = self.now + self.server.ledger_window + self.rng.below(2_000);
                self.peers[p].outage_until = until;
                self.log(format!("{} long outage until {until}", self.peers[p].name));
                self.break_link(p, "long outage");
                self.with_client(p, |c, now| c.disconnected(now))
            }
            _ => Ok(()),
        }
    }

    fn restart(&mut self, p: usize) -> Result<(), String> {
        self.log(format!("{} restarts", self.peers[p].name));
        self.stats.restarts += 1;
        self.check_store(p)?;
        self.break_link(p, "restart");
        self.peers[p].client = None;
        self.open_client(p)
    }

    fn break_link(&mut self, p: usize, why: &str) {
        let peer = &mut self.peers[p];
        if peer.link != Link::Down {
            self.stats.disconnects += 1;
            let line = format!("{} link down: {why}", peer.name);
            peer.link = Link::Down;
            self.log(line);
        }
        let peer = &mut self.peers[p];
        peer.up.clear();
        peer.down.clear();
        self.server.drop_session(peer.conn);
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

    fn local_change(&mut self, p: usize) -> Result<(), String> {
        let f = self.feeds[self.rng.below(3) as usize].clone();
        let view = self.client(p).view(&f);
        if *self.client(p).view_ref(&f) != view[..] {
            return Err(self.fail(format!("the borrowed view of {f} is not the view")));
        }
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
        self.log(format!("{} local {}", self.peers[p].name, op_summary(&op)));
        let id = self
            .client(p)
            .change(op, now)
            .map_err(|e| format!("seed {}: local change failed: {e}", self.seed))?;
        self.peers[p].made.push(id);
        self.stats.changes += 1;
        self.pump(p)
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
                let mut value = self.random_value(prev.as_ref());
                value.as_object_mut().map(|o| o.remove("reject"));
                Change {
                    op: if prev.is_some() {
                        ChangeOp::Edit
                    } else {
                        ChangeOp::Publish
                    },
                    position: prev.is_none().then_some(Position::End),
                    id,
                    item: Some(value),
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
                let mut position = self.random_position(&ids);
                if matches!(&position, Position::Before(r) | Position::After(r) if *r == id) {
                    position = Position::End;
                }
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

    /// Sends server frames down the links they are for.
    fn push_down(&mut self, msgs: Vec<(usize, ServerMessage)>) {
        for (conn, msg) in msgs {
            let Some(p) = self
                .peers
                .iter()
                .position(|p| p.conn == conn && p.link == Link::Open)
            else {
                continue;
            };
            if matches!(msg, ServerMessage::Snapshot { .. }) {
                self.stats.snapshots += 1;
            }
            let peer = &mut self.peers[p];
            peer.down.send(msg, self.now, &self.faults, &mut self.rng);
        }
    }

    fn with_client(
        &mut self,
        p: usize,
        input: impl FnOnce(&mut SyncCore, u64) -> Result<(), thoonk_sync_core::CoreError>,
    ) -> Result<(), String> {
        let now = self.now;
        match input(self.client(p), now) {
            Ok(()) => {}
            // The app's resolver failed: the change is reported unresolved.
            Err(thoonk_sync_core::CoreError::Resolver(_))
                if self.peers[p].resolver == AppResolver::Throws => {}
            Err(e) => return Err(self.fail(format!("the client reported an error: {e}"))),
        }
        self.pump(p)
    }

    /// Carries out a client's effects, checking the store and revisions.
    fn pump(&mut self, p: usize) -> Result<(), String> {
        let fx = self.client(p).take_effects();
        if let Some(batch) = &fx.store {
            if self.features.storage_failures && self.rng.below(STORAGE_FAILURE_ODDS) == 0 {
                return self.fail_storage(p);
            }
            self.peers[p]
                .store
                .apply(batch)
                .map_err(|e| e.to_string())?;
        }
        self.peers[p].pumps += 1;
        self.stats.inputs += 1;
        if fx.store.is_some() && self.peers[p].pumps % 64 == 0 {
            self.check_store(p)?;
        }
        if fx.close {
            self.break_link(p, "client closes");
            let now = self.now;
            self.client(p)
                .disconnected(now)
                .map_err(|e| e.to_string())?;
        }
        for msg in fx.send {
            match &msg {
                ClientMessage::Replay { .. } => self.stats.replays += 1,
                ClientMessage::Submit { .. } | ClientMessage::SubmitBatch { .. } => {
                    self.stats.submits += 1
                }
                _ => {}
            }
            if self.peers[p].link == Link::Open {
                self.log(format!(
                    "{} sends {}",
                    self.peers[p].name,
                    client_summary(&msg)
                ));
                let peer = &mut self.peers[p];
                peer.up.send(msg, self.now, &self.faults, &mut self.rng);
            }
        }
        if fx.connect {
            let at = self.now + 1 + self.rng.below(30);
            self.peers[p].link = Link::Connecting { at };
        }
        for n in fx.notify {
            if let Notification::Outcome { change, outcome } = n {
                if let Some(first) = self.peers[p].notified.get(&change) {
                    if first != &outcome {
                        return Err(self.fail(format!(
                            "outcome of {change:?} changed from {first:?} to {outcome:?}"
                        )));
                    }
                }
                self.log(format!(
                    "{} told {change:?}: {}",
                    self.peers[p].name,
                    outcome_summary(&outcome)
                ));
                self.peers[p].notified.insert(change, outcome);
            }
        }
        let peer = &mut self.peers[p];
        let client = peer.client.as_ref().unwrap();
        for f in &self.feeds {
            if let Some(head) = client.position(f) {
                let slot = peer.max_rev.entry((f.clone(), head.epoch)).or_insert(0);
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
    fn fail_storage(&mut self, p: usize) -> Result<(), String> {
        self.log(format!("{}: a store batch fails", self.peers[p].name));
        self.stats.storage_failures += 1;
        self.client(p).storage_failed("injected: quota exceeded");
        let fx = self.client(p).take_effects();
        if !fx.close || !fx.send.is_empty() {
            return Err(self.fail(format!("a failed batch must only close: {fx:?}")));
        }
        self.break_link(p, "storage failed");
        let peer = &mut self.peers[p];
        peer.client = None;
        let state = peer.store.state();
        peer.made.retain(|id| {
            state.outbox.values().any(|e| &e.id == id) || state.outcomes.contains_key(id)
        });
        peer.max_rev.clear();
        self.open_client(p)
    }

    /// The store must hold exactly what the core says it should.
    fn check_store(&self, p: usize) -> Result<(), String> {
        let peer = &self.peers[p];
        let expected = peer.client.as_ref().unwrap().stored_state();
        if &expected != peer.store.state() {
            return Err(self.fail(format!(
                "store and core of {} disagree\n core:  {expected:?}\n store: {:?}",
                peer.name,
                peer.store.state()
            )));
        }
        Ok(())
    }

    /// Advances time to `until`, delivering messages, working jobs and
    /// firing timers.
    fn run_until(&mut self, until: u64) -> Result<(), String> {
        for _ in 0..200_000 {
            let mut next: Option<u64> = None;
            for peer in &self.peers {
                let connect_at = match peer.link {
                    Link::Connecting { at } => Some(at),
                    _ => None,
                };
                let t = [
                    peer.up.next_at(),
                    peer.down.next_at(),
                    peer.client.as_ref().unwrap().poll_timeout(),
                    connect_at,
                ]
                .into_iter()
                .flatten()
                .min();
                next = [next, t].into_iter().flatten().min();
            }
            if self.server.has_jobs() {
                next = [next, Some(self.next_work)].into_iter().flatten().min();
            }
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return Ok(());
            };
            self.now = self.now.max(next);
            if self.server.has_jobs() && self.next_work <= self.now {
                let fault = match self.rng.below(100) {
                    0..=5 => WorkerFault::DiesAfterApply,
                    6..=11 => WorkerFault::ClaimTimeout,
                    _ => WorkerFault::None,
                };
                if fault == WorkerFault::DiesAfterApply {
                    self.stats.worker_deaths += 1;
                }
                self.log(format!("a worker takes a job: {fault:?}"));
                let msgs = self.server.work(fault, self.now);
                self.push_down(msgs);
                self.next_work = self.now + 1 + self.rng.below(40);
            }
            for p in 0..self.peers.len() {
                self.deliver(p)?;
            }
        }
        Err(self.fail("the world does not settle: 200000 events before the deadline".into()))
    }

    /// Everything due for client `p`: connecting, frames both ways, timers.
    fn deliver(&mut self, p: usize) -> Result<(), String> {
        if let Link::Connecting { at } = self.peers[p].link {
            if at <= self.now {
                if self.now < self.peers[p].outage_until {
                    self.peers[p].link = Link::Down;
                    self.log(format!("{} connect fails (outage)", self.peers[p].name));
                    self.with_client(p, |c, now| c.disconnected(now))?;
                } else {
                    let old = self.peers[p].conn;
                    self.server.drop_session(old);
                    self.peers[p].conn = self.next_conn;
                    self.next_conn += 1;
                    self.peers[p].link = Link::Open;
                    self.log(format!("{} connected", self.peers[p].name));
                    self.with_client(p, |c, now| c.connected(now))?;
                }
            }
        }
        while let Some(msg) = self.peers[p].up.pop_due(self.now) {
            let conn = self.peers[p].conn;
            let answers = self.server.handle(conn, msg, self.now);
            self.push_down(answers);
        }
        while let Some(msg) = self.peers[p].down.pop_due(self.now) {
            self.log(format!(
                "{} gets {}",
                self.peers[p].name,
                server_summary(&msg)
            ));
            self.with_client(p, |c, now| c.handle_server(msg, now))?;
        }
        if self.peers[p]
            .client
            .as_ref()
            .unwrap()
            .poll_timeout()
            .is_some_and(|t| t <= self.now)
        {
            self.with_client(p, |c, now| c.handle_timeout(now))?;
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        !self.server.has_jobs()
            && self.peers.iter().all(|peer| {
                let client = peer.client.as_ref().unwrap();
                *client.status() == Status::Online
                    && peer.up.is_empty()
                    && peer.down.is_empty()
                    && client.pending().is_empty()
                    && self.feeds.iter().all(|f| {
                        let s = &self.server.feeds[f];
                        client.position(f).map(|h| (h.epoch, h.rev)) == Some((s.epoch, s.rev))
                    })
            })
    }

    /// Heals the network, writes a marker to every feed (so that a gap at the
    /// end of a feed shows), and runs until everything settles.
    fn quiesce(&mut self) -> Result<(), String> {
        self.faults = Faults::calm();
        for peer in &mut self.peers {
            peer.outage_until = 0;
        }
        self.log("quiesce".into());
        for f in self.feeds.clone() {
            self.other_seq += 1;
            let exists = self.server.feeds[&f]
                .items
                .contains(&ItemId::new("marker").unwrap());
            let change = Change {
                op: if exists {
                    ChangeOp::Edit
                } else {
                    ChangeOp::Publish
                },
                id: ItemId::new("marker").unwrap(),
                item: Some(json!({"marker": self.other_seq})),
                position: (!exists).then_some(Position::End),
                prev: None,
                job: None,
            };
            let events = self.server.other_write(&f, change);
            self.push_down(events);
        }
        for _ in 0..90 {
            let until = self.now + 1_000;
            self.run_until(until)?;
            if self.converged() {
                return Ok(());
            }
        }
        let mut state = String::new();
        for peer in &self.peers {
            let client = peer.client.as_ref().unwrap();
            let heads: Vec<_> = self
                .feeds
                .iter()
                .map(|f| (f.clone(), client.position(f)))
                .collect();
            state.push_str(&format!(
                "\n{}: status {:?}, pending {:?}, heads {heads:?}",
                peer.name,
                client.status(),
                client.pending()
            ));
        }
        let server: Vec<_> = self
            .server
            .feeds
            .iter()
            .map(|(f, s)| (f.clone(), s.epoch, s.rev))
            .collect();
        Err(self.fail(format!(
            "no quiescence after 90 s:{state}\nserver {server:?}, jobs queued: {}",
            self.server.has_jobs()
        )))
    }

    fn check_final(&mut self) -> Result<(), String> {
        if let Some(reused) = &self.server.reused {
            return Err(self.fail(format!("a change id names two changes: {reused}")));
        }
        let mut applied_by_clients = 0;
        for p in 0..self.peers.len() {
            self.check_store(p)?;
            applied_by_clients += self.check_peer(p)?;
        }
        let applied_total: u32 = self
            .server
            .applied
            .iter()
            .filter(|(id, _)| client_of(&id.0).starts_with("client-"))
            .map(|(_, n)| *n)
            .sum();
        if applied_total != applied_by_clients {
            return Err(self.fail(format!(
                "the server applied {applied_total} client changes, the clients report {applied_by_clients}"
            )));
        }
        self.check_no_lost_update()
    }

    /// One client's final state: mirror and view equal the server, every
    /// change has the outcome it was told, applied exactly once when it says
    /// so; returns how many of its changes were applied.
    fn check_peer(&mut self, p: usize) -> Result<u32, String> {
        let peer = &self.peers[p];
        let client = peer.client.as_ref().unwrap();
        for f in &self.feeds {
            let s = &self.server.feeds[f];
            let server_items: Vec<(ItemId, Value, u64)> = s
                .items
                .iter()
                .map(|(id, i)| (id.clone(), i.value.clone(), i.rev))
                .collect();
            if client.confirmed(f) != server_items {
                return Err(self.fail(format!(
                    "{}'s mirror of {f} differs\n client: {:?}\n server: {server_items:?}",
                    peer.name,
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
                return Err(self.fail(format!(
                    "{}'s view of {f} is not the mirror: {view:?}",
                    peer.name
                )));
            }
        }
        let outcomes = client.outcomes();
        let mut applied_by_client = 0;
        let mut stats = Stats::default();
        for id in &peer.made {
            let Some(record) = outcomes.get(id) else {
                return Err(self.fail(format!("change {id:?} has no outcome")));
            };
            if peer.notified.get(id) != Some(&record.outcome) {
                return Err(self.fail(format!(
                    "change {id:?}: the app was told {:?}, the store says {:?}",
                    peer.notified.get(id),
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
            // A change given up past the ledger window may or may not have
            // been applied (once): the client cannot know, and says so.
            let expired = is_expired(&record.outcome);
            if times > 1 || (!expired && applied != (times == 1)) {
                return Err(self.fail(format!(
                    "change {id:?} ({:?}) was applied {times} times by the server",
                    record.outcome
                )));
            }
            applied_by_client += if expired { times } else { u32::from(applied) };
            match &record.outcome {
                ChangeOutcome::Accepted { .. } => stats.applied += 1,
                ChangeOutcome::Rejected { code, message } => {
                    stats.rejected += 1;
                    stats.norel += u64::from(message.starts_with("NOREL"));
                    stats.expired += u64::from(*code == ErrorCode::Expired);
                    stats.too_large += u64::from(*code == ErrorCode::TooLarge);
                }
                ChangeOutcome::ConflictResolved { .. } => stats.resolved += 1,
                ChangeOutcome::Unresolved { conflict, reason } => {
                    stats.unresolved += 1;
                    stats.unknown_bases += u64::from(conflict.unknown_base);
                    stats.expired += u64::from(reason.starts_with("expired"));
                    stats.too_large += u64::from(reason.starts_with("too_large"));
                }
            }
        }
        self.stats.add(&stats);
        let reopened = SyncCore::open(
            Config::new(peer.name.clone(), "token", 0),
            peer.store.state().clone(),
            self.now,
        )
        .map_err(|e| e.to_string())?;
        if reopened.stored_state() != client.stored_state() {
            return Err(self.fail("a core reopened from the store differs".into()));
        }
        Ok(applied_by_client)
    }

    /// No lost update: every write a client change made to an item is either
    /// in the final state, or the next write to that item saw it — it was
    /// made against a base at or after it, or by the same client (whose
    /// later changes are made on top of its earlier ones), or by no client
    /// change at all (another user's write, an action, which the server
    /// applies last-writer-wins by design). A next write that did not see
    /// it would be two concurrent writes applied without a conflict. The one
    /// exception the server's design allows is a write whose check could not
    /// see back to its base (`blind`) onto an item a retraction had removed:
    /// retractions leave no trace once the change log has dropped them.
    fn check_no_lost_update(&self) -> Result<(), String> {
        let writes = &self.server.writes;
        for (i, w) in writes.iter().enumerate() {
            let Some(job) = &w.job else { continue };
            if w.moved {
                continue;
            }
            let next = writes[i + 1..]
                .iter()
                .find(|n| n.feed == w.feed && n.id == w.id && !n.moved);
            match next {
                None => {
                    let now = self.server.feeds[&w.feed].current(&w.id);
                    if now != w.value {
                        return Err(self.fail(format!(
                            "lost update: {} wrote {}/{} = {:?} at {:?}, the last write to it, but \
                             the item is {now:?}",
                            job.0, w.feed, w.id, w.value, w.at
                        )));
                    }
                }
                Some(n) => {
                    let Some(next_job) = &n.job else { continue };
                    let Some(base) = n.base else { continue };
                    let same_client = client_of(&next_job.0) == client_of(&job.0);
                    let saw = match base {
                        Base::At(b) => b.epoch != 0 && (b.epoch, b.rev) >= w.at,
                        Base::Rev(r) => n.at.0 == w.at.0 && r >= w.at.1,
                    };
                    let excused = n.blind && w.value.is_none();
                    if !(same_client || saw || excused) {
                        return Err(self.fail(format!(
                            "lost update: {} wrote {}/{} = {:?} at {:?}; {} replaced it at {:?} \
                             against base {base:?} without seeing it and without a conflict",
                            job.0, w.feed, w.id, w.value, w.at, next_job.0, n.at
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How many events a failure prints: 200, or `THOONK_SIM_TRACE`.
fn trace_len() -> usize {
    std::env::var("THOONK_SIM_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn is_expired(outcome: &ChangeOutcome) -> bool {
    match outcome {
        ChangeOutcome::Rejected { code, .. } => *code == ErrorCode::Expired,
        ChangeOutcome::Unresolved { reason, .. } => reason.starts_with("expired"),
        _ => false,
    }
}

fn outcome_summary(outcome: &ChangeOutcome) -> String {
    match outcome {
        ChangeOutcome::Accepted { revs, .. } => format!("accepted {revs:?}"),
        ChangeOutcome::Rejected { code, .. } => format!("rejected {code:?}"),
        ChangeOutcome::ConflictResolved { resolution, .. } => format!("resolved {resolution:?}"),
        ChangeOutcome::Unresolved { reason, .. } => format!("unresolved: {reason}"),
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
        ClientMessage::SubmitBatch { changes } => {
            let parts: Vec<String> = changes
                .iter()
                .map(|c| format!("{} {} base {:?}", c.id.0, op_summary(&c.op), c.base))
                .collect();
            format!("submit_batch [{}]", parts.join("; "))
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
        ServerMessage::Acks { ids } => format!(
            "acks {}",
            ids.iter()
                .map(|id| id.0.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        ServerMessage::Outcomes { outcomes } => outcomes
            .iter()
            .map(|o| {
                server_summary(&ServerMessage::Outcome {
                    id: o.id.clone(),
                    outcome: o.outcome.clone(),
                })
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => format!("{other:?}"),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
