//! An in-memory model of the server with the real server's rules: feeds with
//! epochs, revisions and a change log of limited retention; feeds deleted
//! (a snapshot of epoch 0) and recreated under a new epoch, epochs renewed
//! with the revision starting over; jobs acknowledged when queued and
//! finished later by a worker that may die between applying and finishing
//! or lose its claim; an exactly-once ledger by change id that forgets ids
//! after its window; the conflict check of `job_apply.lua` (bases of
//! `(epoch, rev)`, unknown bases, the client's own changes exempt); `NOREL`
//! and `BADPOS` rejections; the frame size limit; one session per
//! connection; batches (`submit_batch`) put as one job, whose changes are
//! applied in order, each with its own applied record (rejections too), a
//! conflict stopping the batch and leaving the rest unattempted and
//! unrecorded, as `job_submit_batch.lua`, `job_apply_batch.lua` and
//! `job_finish_batch.lua` do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{json, Value};
use thoonk_protocol::{
    batch_frame_len, Base, Change, ChangeId, ChangeOp, ChangeOutcomeOf, ChangeRequest,
    ClientMessage, Epoch, ErrorCode, FeedEvent, FeedName, FeedPattern, FeedPosition, Item, ItemId,
    Operation, Outcome, Position, Rev, ServerMessage, MAX_BATCH_CHANGES, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use thoonk_sync_core::{apply_change, OrderedItems};

/// How many changes a feed's log keeps.
pub const RETENTION: usize = 6;

/// One feed on the server.
#[derive(Clone, Debug)]
pub struct ServerFeed {
    /// Current epoch; 0 while the feed is deleted.
    pub epoch: u64,
    /// Current revision.
    pub rev: Rev,
    /// Items in order.
    pub items: OrderedItems,
    /// The retained change log, oldest first.
    pub log: VecDeque<FeedEvent>,
    /// Every value each item had in this epoch: `(rev, value)` (`None`: absent).
    versions: BTreeMap<ItemId, Vec<(Rev, Option<Value>)>>,
}

/// The client id of a change id `<client>:<seq>`.
pub fn client_of(job: &str) -> &str {
    job.rsplit_once(':').map_or(job, |(client, _)| client)
}

/// What the conflict check of one write found.
enum Check {
    /// No conflict. `blind`: the check could not see the item's history
    /// back to the base (the log no longer reaches it, or the base is of
    /// another epoch) and let the write through because the item is absent.
    Clear { blind: bool },
    /// The item changed after a known base.
    Conflict,
    /// The base is of another epoch and the item exists or changed in this one.
    Unknown,
}

impl ServerFeed {
    fn new(epoch: u64) -> Self {
        Self {
            epoch,
            rev: 0,
            items: OrderedItems::new(),
            log: VecDeque::new(),
            versions: BTreeMap::new(),
        }
    }

    fn value_at(&self, id: &ItemId, rev: Rev) -> Option<Value> {
        self.versions
            .get(id)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .and_then(|(_, v)| v.clone())
    }

    /// The item's value now.
    pub fn current(&self, id: &ItemId) -> Option<Value> {
        self.items.get(id).map(|i| i.value.clone())
    }

    /// Replays can start after this revision.
    fn oldest_replayable(&self) -> Rev {
        self.log.front().map_or(self.rev, |e| e.rev - 1)
    }

    /// `changed_since` of `job_apply.lua`: item `id` changed after `base`
    /// by a change that is not `client`'s own. `None` when the log no longer
    /// reaches back and the item is absent (nothing to tell).
    fn changed_since(&self, id: &ItemId, base: Rev, client: &str) -> Option<bool> {
        if base >= self.rev {
            return Some(false);
        }
        let item_rev = self.items.get(id).map(|i| i.rev);
        if item_rev.is_some_and(|r| r <= base) {
            return Some(false);
        }
        if self.log.front().is_none_or(|e| e.rev > base + 1) {
            return item_rev.is_some().then_some(true);
        }
        Some(self.log.iter().filter(|e| e.rev > base).any(|e| {
            e.change.id == *id
                && e.change
                    .job
                    .as_deref()
                    .is_none_or(|j| client_of(j) != client)
        }))
    }

    /// The conflict check of one write with base `base`.
    fn check(&self, id: &ItemId, base: Base, client: &str) -> Check {
        let known = match base {
            Base::Rev(_) => true,
            Base::At(p) => self.epoch != 0 && p.epoch == self.epoch,
        };
        if !known {
            if self.items.contains(id) {
                return Check::Unknown;
            }
            // Absent, and untouched by others as far as this epoch's log
            // reaches: what happened to it before this epoch is out of sight.
            return match self.changed_since(id, 0, client) {
                Some(true) => Check::Unknown,
                Some(false) | None => Check::Clear { blind: true },
            };
        }
        match self.changed_since(id, base.rev(), client) {
            Some(true) => Check::Conflict,
            Some(false) => Check::Clear { blind: false },
            None => Check::Clear { blind: true },
        }
    }

    /// The conflict outcome: the base value when the log still reaches it
    /// (`item_at`), else an unknown base.
    fn conflict(&self, feed: &FeedName, id: &ItemId, base: Option<Rev>) -> Outcome {
        let known = base.filter(|b| *b >= self.oldest_replayable() && *b <= self.rev);
        Outcome::Conflict {
            feed: feed.clone(),
            id: id.clone(),
            base: known.and_then(|b| self.value_at(id, b)),
            unknown_base: known.is_none(),
            epoch: self.epoch,
            current: self.current(id),
            rev: self.rev,
            history: match known {
                Some(b) => self.log.iter().filter(|e| e.rev > b).cloned().collect(),
                None => Vec::new(),
            },
        }
    }

    fn commit(&mut self, change: Change, next_epoch: &mut u64) -> (Rev, Change) {
        if self.epoch == 0 {
            // The first write to a deleted feed creates it under a new epoch.
            self.epoch = *next_epoch;
            *next_epoch += 1;
        }
        self.rev += 1;
        apply_change(&mut self.items, self.rev, &change);
        let value = self.current(&change.id);
        self.versions
            .entry(change.id.clone())
            .or_default()
            .push((self.rev, value));
        self.log.push_back(FeedEvent {
            rev: self.rev,
            change: change.clone(),
        });
        while self.log.len() > RETENTION {
            self.log.pop_front();
        }
        (self.rev, change)
    }

    fn snapshot(&self, feed: &FeedName) -> ServerMessage {
        ServerMessage::Snapshot {
            feed: feed.clone(),
            epoch: self.epoch,
            rev: self.rev,
            items: self
                .items
                .iter()
                .map(|(id, i)| Item {
                    id: id.clone(),
                    item: i.value.clone(),
                    rev: i.rev,
                })
                .collect(),
        }
    }

    /// What a client at `from` needs: the changes since (in frames of at
    /// most `per_frame` events; one empty frame when there are none), or a
    /// snapshot (another epoch, epoch 0, a deleted feed, history trimmed).
    fn catch_up(
        &self,
        feed: &FeedName,
        from: Option<FeedPosition>,
        per_frame: usize,
    ) -> Vec<ServerMessage> {
        match from {
            Some(p)
                if p.epoch != 0
                    && p.epoch == self.epoch
                    && p.rev >= self.oldest_replayable()
                    && p.rev <= self.rev =>
            {
                let events: Vec<FeedEvent> =
                    self.log.iter().filter(|e| e.rev > p.rev).cloned().collect();
                if events.is_empty() {
                    return vec![ServerMessage::Changes {
                        feed: feed.clone(),
                        epoch: self.epoch,
                        events,
                    }];
                }
                events
                    .chunks(per_frame)
                    .map(|chunk| ServerMessage::Changes {
                        feed: feed.clone(),
                        epoch: self.epoch,
                        events: chunk.to_vec(),
                    })
                    .collect()
            }
            _ => vec![self.snapshot(feed)],
        }
    }
}

/// One applied write to an item, in the order the server applied them.
#[derive(Clone, Debug)]
pub struct Write {
    /// The feed.
    pub feed: FeedName,
    /// The item.
    pub id: ItemId,
    /// The epoch and revision it produced.
    pub at: (Epoch, Rev),
    /// The change id of the client change, `None` for another user's write.
    pub job: Option<ChangeId>,
    /// The base it was checked against (`None`: no check, e.g. an action).
    pub base: Option<Base>,
    /// The value it left (`None`: retracted); `None` too for a move.
    pub value: Option<Value>,
    /// True for a move (the value is unchanged).
    pub moved: bool,
    /// The conflict check could not see back to the base (see [`Check`]).
    pub blind: bool,
}

/// A job in the queue: one change, or a batch of one client's changes to
/// one feed (`submit_batch`), applied in order by one worker in one atomic
/// step, as `job_apply_batch.lua` does.
#[derive(Clone, Debug)]
struct Job {
    requests: Vec<ChangeRequest>,
    batch: bool,
}

/// One connection's session.
#[derive(Clone, Debug, Default)]
struct Session {
    client: Option<String>,
    patterns: BTreeSet<FeedPattern>,
    /// The client sent a frame after `hello`, so it has the `welcome`: the
    /// network model reorders frames, a real connection does not, and an
    /// outcome pushed before the `welcome` arrives would be a server fault.
    welcomed: bool,
    /// Changes this connection submitted and was not told the outcome of:
    /// the only outcomes pushed to it, as the real gateway does.
    submitted: BTreeSet<ChangeId>,
}

/// What can go wrong with a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerFault {
    /// The job is applied and finished.
    None,
    /// The worker dies after applying, before finishing: the applied record
    /// stays, the job goes back to the queue.
    DiesAfterApply,
    /// The worker's claim times out before it does anything: the job goes
    /// back to the end of the queue.
    ClaimTimeout,
}

/// The server model.
#[derive(Debug)]
pub struct SimServer {
    /// Feeds by name.
    pub feeds: BTreeMap<FeedName, ServerFeed>,
    /// Recorded outcomes by change id and when they were recorded (the
    /// exactly-once ledger); forgotten after `ledger_window`.
    pub ledger: BTreeMap<ChangeId, (Outcome, u64)>,
    /// Applied records of jobs applied but not finished yet.
    applied_records: BTreeMap<ChangeId, Outcome>,
    /// How many times each change id was applied (more than once only when
    /// a client resent a change the ledger had forgotten).
    pub applied: BTreeMap<ChangeId, u32>,
    /// The operation each change id was first submitted with.
    pub ops: BTreeMap<ChangeId, Operation>,
    /// A change id submitted with two different operations, if any.
    pub reused: Option<String>,
    /// Every write to an item, in order.
    pub writes: Vec<Write>,
    /// How long the ledger remembers a change id.
    pub ledger_window: u64,
    /// Jobs are queued and worked by [`SimServer::work`]; otherwise at once.
    pub queued_jobs: bool,
    queue: VecDeque<Job>,
    next_epoch: u64,
    changes_per_frame: usize,
    sessions: BTreeMap<usize, Session>,
}

impl SimServer {
    /// A server with the given feeds, all empty, that sends at most
    /// `changes_per_frame` events per `changes` frame.
    pub fn new(feeds: &[FeedName], changes_per_frame: usize) -> Self {
        Self {
            feeds: feeds
                .iter()
                .map(|f| (f.clone(), ServerFeed::new(1)))
                .collect(),
            ledger: BTreeMap::new(),
            applied_records: BTreeMap::new(),
            applied: BTreeMap::new(),
            ops: BTreeMap::new(),
            reused: None,
            writes: Vec::new(),
            ledger_window: u64::MAX,
            queued_jobs: false,
            queue: VecDeque::new(),
            next_epoch: 2,
            changes_per_frame,
            sessions: BTreeMap::new(),
        }
    }

    /// Connection `conn` closed: forget its session.
    pub fn drop_session(&mut self, conn: usize) {
        self.sessions.remove(&conn);
    }

    fn follows(&self, conn: usize, feed: &FeedName) -> bool {
        self.sessions
            .get(&conn)
            .is_some_and(|s| s.client.is_some() && s.patterns.iter().any(|p| p.matches(feed)))
    }

    /// A frame to every session following `feed`.
    fn fan_out(&self, feed: &FeedName, msg: ServerMessage) -> Vec<(usize, ServerMessage)> {
        self.sessions
            .keys()
            .filter(|c| self.follows(**c, feed))
            .map(|c| (*c, msg.clone()))
            .collect()
    }

    fn event(&self, feed: &FeedName, rev: Rev, change: Change) -> Vec<(usize, ServerMessage)> {
        let msg = ServerMessage::Event {
            feed: feed.clone(),
            epoch: self.feeds[feed].epoch,
            rev,
            change,
        };
        self.fan_out(feed, msg)
    }

    /// The events of one batch job's run, `out`, with those to the
    /// connections of the client that made the batch (`first`'s) in one
    /// `changes` frame per connection, as the gateway sends the echo of a
    /// client's own changes queued together; other connections get an
    /// `event` each.
    fn echo_in_one_frame(
        &self,
        out: Vec<(usize, ServerMessage)>,
        first: &ChangeId,
    ) -> Vec<(usize, ServerMessage)> {
        let client = first.0.split_once(':').map(|(c, _)| c);
        let mut merged: Vec<(usize, ServerMessage)> = Vec::new();
        for (conn, msg) in out {
            let own = client.is_some()
                && self.sessions.get(&conn).and_then(|s| s.client.as_deref()) == client;
            let ServerMessage::Event {
                feed,
                epoch,
                rev,
                change,
            } = msg
            else {
                merged.push((conn, msg));
                continue;
            };
            let at = merged.iter().position(|(c, m)| {
                own && *c == conn
                    && matches!(m, ServerMessage::Changes { feed: f, epoch: e, events }
                        if *f == feed && *e == epoch && events.last().is_some_and(|l| l.rev + 1 == rev))
            });
            match at {
                Some(i) => {
                    if let ServerMessage::Changes { events, .. } = &mut merged[i].1 {
                        events.push(FeedEvent { rev, change });
                    }
                }
                None if own => merged.push((
                    conn,
                    ServerMessage::Changes {
                        feed,
                        epoch,
                        events: vec![FeedEvent { rev, change }],
                    },
                )),
                None => merged.push((
                    conn,
                    ServerMessage::Event {
                        feed,
                        epoch,
                        rev,
                        change,
                    },
                )),
            }
        }
        merged
    }

    /// An outcome to every connection that submitted the change and has not
    /// been told it (a client that reconnected asks again by resubmitting).
    fn outcome(&mut self, id: &ChangeId, outcome: &Outcome) -> Vec<(usize, ChangeOutcomeOf)> {
        self.sessions
            .iter_mut()
            .filter_map(|(c, s)| (s.welcomed && s.submitted.remove(id)).then_some(*c))
            .map(|c| {
                (
                    c,
                    ChangeOutcomeOf {
                        id: id.clone(),
                        outcome: outcome.clone(),
                    },
                )
            })
            .collect()
    }

    /// Forgets ledger entries older than the window.
    fn expire(&mut self, now: u64) {
        let window = self.ledger_window;
        self.ledger
            .retain(|_, (_, at)| now.saturating_sub(*at) < window);
    }

    /// Handles one frame of connection `conn`; returns the frames to push
    /// back, each with its connection.
    pub fn handle(
        &mut self,
        conn: usize,
        msg: ClientMessage,
        now: u64,
    ) -> Vec<(usize, ServerMessage)> {
        let to_me = |msgs: Vec<ServerMessage>| msgs.into_iter().map(|m| (conn, m)).collect();
        let welcomed = self.sessions.get(&conn).is_some_and(|s| s.client.is_some());
        match msg {
            ClientMessage::Hello {
                protocol,
                client_id,
                ..
            } => {
                assert_eq!(protocol, PROTOCOL_VERSION);
                // A duplicated hello keeps the session's subscriptions.
                self.sessions.entry(conn).or_default().client = Some(client_id);
                to_me(vec![ServerMessage::Welcome {
                    protocol: PROTOCOL_VERSION,
                    user: "sim".into(),
                    ledger_window_ms: Some(self.ledger_window),
                }])
            }
            _ if !welcomed => to_me(vec![ServerMessage::Error {
                code: ErrorCode::BadRequest,
                message: "hello first".into(),
            }]),
            msg if !self.sessions[&conn].welcomed => {
                self.sessions.get_mut(&conn).expect("welcomed").welcomed = true;
                self.handle(conn, msg, now)
            }
            ClientMessage::Subscribe { pattern, known } => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.patterns.insert(pattern.clone());
                }
                let feeds: Vec<FeedName> = self
                    .feeds
                    .keys()
                    .filter(|f| pattern.matches(f))
                    .cloned()
                    .collect();
                let mut out = vec![ServerMessage::Subscribed {
                    pattern,
                    feeds: feeds.clone(),
                }];
                for feed in feeds {
                    out.extend(self.feeds[&feed].catch_up(
                        &feed,
                        known.get(&feed).copied(),
                        self.changes_per_frame,
                    ));
                }
                to_me(out)
            }
            ClientMessage::Unsubscribe { pattern } => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.patterns.remove(&pattern);
                }
                Vec::new()
            }
            ClientMessage::Replay { feed, from } => to_me(match self.feeds.get(&feed) {
                Some(f) if self.follows(conn, &feed) => {
                    f.catch_up(&feed, Some(from), self.changes_per_frame)
                }
                _ => vec![ServerMessage::Error {
                    code: ErrorCode::NotFound,
                    message: format!("no feed {feed}"),
                }],
            }),
            ClientMessage::Submit { change } => self.submit(conn, change, now),
            ClientMessage::SubmitBatch { changes } => self.submit_batch(conn, changes, now),
            ClientMessage::Ping => to_me(vec![ServerMessage::Pong]),
        }
    }

    fn submit(
        &mut self,
        conn: usize,
        request: ChangeRequest,
        now: u64,
    ) -> Vec<(usize, ServerMessage)> {
        let bytes = request.submit_frame_len();
        if bytes > MAX_FRAME_BYTES {
            // The frame is not read: no ack, no outcome.
            return vec![(
                conn,
                ServerMessage::Error {
                    code: ErrorCode::TooLarge,
                    message: format!(
                        "frame of {bytes} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"
                    ),
                },
            )];
        }
        self.record_op(&request);
        let id = request.id.clone();
        self.expire(now);
        let mut out = vec![(conn, ServerMessage::Ack { id: id.clone() })];
        if let Some((outcome, _)) = self.ledger.get(&id) {
            out.push((
                conn,
                ServerMessage::Outcome {
                    id,
                    outcome: outcome.clone(),
                },
            ));
            return out;
        }
        if let Some(session) = self.sessions.get_mut(&conn) {
            session.submitted.insert(id.clone());
        }
        if self.is_queued(&id) {
            return out; // already queued
        }
        self.queue.push_back(Job {
            requests: vec![request],
            batch: false,
        });
        if !self.queued_jobs {
            out.extend(self.work(WorkerFault::None, now));
        }
        out
    }

    fn is_queued(&self, id: &ChangeId) -> bool {
        self.queue
            .iter()
            .any(|j| j.requests.iter().any(|r| &r.id == id))
    }

    fn record_op(&mut self, request: &ChangeRequest) {
        let id = &request.id;
        match self.ops.get(id) {
            Some(op) if op != &request.op && self.reused.is_none() => {
                self.reused = Some(format!(
                    "change id {} named {op:?} and then {:?}",
                    id.0, request.op
                ));
            }
            Some(_) => {}
            None => {
                self.ops.insert(id.clone(), request.op.clone());
            }
        }
    }

    /// `submit_batch`, as the gateway and `job_submit_batch.lua` answer it:
    /// each change in order is finished (ack and its outcome; the new
    /// changes after it are deferred, all of them after a conflict),
    /// already queued (ack; the new changes after it are deferred), new
    /// (ack, queued in the batch's job) or deferred (no answer: the client
    /// sends it again after the outcomes before it).
    fn submit_batch(
        &mut self,
        conn: usize,
        requests: Vec<ChangeRequest>,
        now: u64,
    ) -> Vec<(usize, ServerMessage)> {
        let bytes = batch_frame_len(requests.iter().map(ChangeRequest::submit_frame_len));
        assert!(
            bytes <= MAX_FRAME_BYTES && requests.len() <= MAX_BATCH_CHANGES,
            "the client never sends a batch over the limits"
        );
        let feed = requests.first().and_then(|r| r.op.feed());
        assert!(
            requests
                .iter()
                .all(|r| r.op.feed().is_some() && r.op.feed() == feed),
            "a batch writes one feed"
        );
        self.expire(now);
        let mut out = Vec::new();
        let mut chosen = Vec::new();
        let (mut acks, mut finished) = (Vec::new(), Vec::new());
        let (mut stopped, mut blocked) = (false, false);
        for request in requests {
            self.record_op(&request);
            let id = request.id.clone();
            if stopped {
                continue;
            }
            if let Some((outcome, _)) = self.ledger.get(&id) {
                stopped = matches!(outcome, Outcome::Conflict { .. });
                blocked = true;
                acks.push(id.clone());
                finished.push(ChangeOutcomeOf {
                    id,
                    outcome: outcome.clone(),
                });
                continue;
            }
            let queued = self.is_queued(&id);
            if !queued && blocked {
                continue;
            }
            blocked |= queued;
            if let Some(session) = self.sessions.get_mut(&conn) {
                session.submitted.insert(id.clone());
            }
            acks.push(id);
            if !queued {
                chosen.push(request);
            }
        }
        // One `acks` frame, then one frame of the outcomes known before.
        if !acks.is_empty() {
            out.push((conn, ServerMessage::Acks { ids: acks }));
        }
        out.extend(outcomes_frame(finished).map(|frame| (conn, frame)));
        if !chosen.is_empty() {
            self.queue.push_back(Job {
                requests: chosen,
                batch: true,
            });
            if !self.queued_jobs {
                out.extend(self.work(WorkerFault::None, now));
            }
        }
        out
    }

    /// True when jobs wait in the queue.
    pub fn has_jobs(&self) -> bool {
        !self.queue.is_empty()
    }

    /// A worker takes the first job of the queue.
    pub fn work(&mut self, fault: WorkerFault, now: u64) -> Vec<(usize, ServerMessage)> {
        let Some(job) = self.queue.pop_front() else {
            return Vec::new();
        };
        if fault == WorkerFault::ClaimTimeout {
            self.queue.push_back(job);
            return Vec::new();
        }
        let mut out = Vec::new();
        // Each change's outcome; `None` after a conflict (not attempted).
        let mut outcomes: Vec<Option<Outcome>> = Vec::new();
        // The item writes of this run: a later change of the batch to the
        // same item is checked from the revision the earlier one produced.
        let mut lifted: BTreeMap<(FeedName, ItemId), (Epoch, Rev)> = BTreeMap::new();
        for request in &job.requests {
            let id = request.id.clone();
            if let Some(outcome) = self.applied_records.get(&id) {
                outcomes.push(Some(outcome.clone()));
                continue;
            }
            let mut request = request.clone();
            let item = item_of(&request.op);
            if let Some(&(epoch, rev)) = item.as_ref().and_then(|k| lifted.get(k)) {
                let (feed, _) = item.as_ref().expect("looked up");
                if self.feeds.get(feed).is_some_and(|f| f.epoch == epoch) {
                    request.base.insert(feed.clone(), Base::at(epoch, rev));
                }
            }
            let (outcome, events) = self.run_job(&request);
            out.extend(events);
            match &outcome {
                Outcome::Accepted { revs, epochs, .. } => {
                    *self.applied.entry(id.clone()).or_insert(0) += 1;
                    self.applied_records.insert(id.clone(), outcome.clone());
                    if let Some((feed, item)) = item {
                        if let (Some(&rev), Some(&epoch)) = (revs.get(&feed), epochs.get(&feed)) {
                            lifted.insert((feed, item), (epoch, rev));
                        }
                    }
                }
                // A batch records its rejections too, so that a run again
                // never applies a change after one it refused.
                Outcome::Rejected { .. } if job.batch => {
                    self.applied_records.insert(id.clone(), outcome.clone());
                }
                Outcome::Rejected { .. } => {}
                Outcome::Conflict { .. } => {
                    outcomes.push(Some(outcome));
                    break;
                }
            }
            outcomes.push(Some(outcome));
        }
        if job.batch {
            out = self.echo_in_one_frame(out, &job.requests[0].id);
        }
        if fault == WorkerFault::DiesAfterApply {
            self.queue.push_front(job);
            return out;
        }
        // One job's outcomes go out together, in order (as the gateway
        // sends what `job_finish_batch.lua` publishes in one message).
        let mut told: BTreeMap<usize, Vec<ChangeOutcomeOf>> = BTreeMap::new();
        for (request, outcome) in job.requests.iter().zip(outcomes) {
            let Some(outcome) = outcome else { break };
            let id = &request.id;
            self.applied_records.remove(id);
            self.ledger.insert(id.clone(), (outcome.clone(), now));
            for (conn, of) in self.outcome(id, &outcome) {
                told.entry(conn).or_default().push(of);
            }
        }
        out.extend(
            told.into_iter()
                .filter_map(|(conn, outcomes)| Some((conn, outcomes_frame(outcomes)?))),
        );
        out
    }

    fn run_job(&mut self, request: &ChangeRequest) -> (Outcome, Vec<(usize, ServerMessage)>) {
        let job = Some(request.id.0.clone());
        let client = client_of(&request.id.0).to_owned();
        let reject = |code, message: &str| Outcome::Rejected {
            code,
            message: message.into(),
        };
        let (feed, change, base, blind) = match &request.op {
            Operation::Action { name, payload } => {
                if name != "bump" {
                    return (reject(ErrorCode::BadRequest, "unknown action"), Vec::new());
                }
                let feed = FeedName::new(payload["feed"].as_str().unwrap_or("")).unwrap();
                let id = ItemId::new(payload["id"].as_str().unwrap_or("x")).unwrap();
                let Some(f) = self.feeds.get(&feed) else {
                    return (reject(ErrorCode::NotFound, "no feed"), Vec::new());
                };
                let mut value = f.current(&id).unwrap_or_else(|| json!({}));
                if !value.is_object() {
                    value = json!({});
                }
                let n = value["n"].as_i64().unwrap_or(0);
                value["n"] = json!(n + 1);
                let existed = f.items.contains(&id);
                let change = Change {
                    op: if existed {
                        ChangeOp::Edit
                    } else {
                        ChangeOp::Publish
                    },
                    id: id.clone(),
                    item: Some(value),
                    position: (!existed).then_some(Position::End),
                    prev: f.current(&id),
                    job: job.clone(),
                };
                (feed, change, None, false)
            }
            op => {
                let feed = op.feed().expect("single-feed operation").clone();
                let Some(f) = self.feeds.get(&feed) else {
                    return (reject(ErrorCode::NotFound, "no feed"), Vec::new());
                };
                let (id, value) = match op {
                    Operation::Publish { id, item, .. } | Operation::Edit { id, item, .. } => {
                        (id.clone(), Some(item.clone()))
                    }
                    Operation::Retract { id, .. } | Operation::Move { id, .. } => {
                        (id.clone(), None)
                    }
                    Operation::Action { .. } => unreachable!("handled above"),
                };
                if value
                    .as_ref()
                    .is_some_and(|v| v.get("reject") == Some(&json!(true)))
                {
                    return (
                        reject(ErrorCode::Forbidden, "the worker refuses"),
                        Vec::new(),
                    );
                }
                // Every write kind is checked against its base, as the
                // standard handlers plan it.
                let base = request.base.get(&feed).copied();
                let mut blind = false;
                if let Some(b) = base {
                    match f.check(&id, b, &client) {
                        Check::Clear { blind: b } => blind = b,
                        Check::Conflict => {
                            return (f.conflict(&feed, &id, Some(b.rev())), Vec::new())
                        }
                        Check::Unknown => return (f.conflict(&feed, &id, None), Vec::new()),
                    }
                }
                let exists = f.items.contains(&id);
                // The script's position checks: the refusal's message.
                let place = |position: &Option<Position>| -> Result<Position, &'static str> {
                    match position.clone().unwrap_or(Position::End) {
                        Position::Before(rel) | Position::After(rel) if rel == id => {
                            Err("BADPOS an item cannot be placed relative to itself")
                        }
                        Position::Before(rel) | Position::After(rel) if !f.items.contains(&rel) => {
                            Err("NOREL the reference item does not exist")
                        }
                        position => Ok(position),
                    }
                };
                let change = match op {
                    // A publish of an existing item edits it in place (the
                    // position applies to new items only).
                    Operation::Publish { item, .. } if exists => Change {
                        op: ChangeOp::Edit,
                        id: id.clone(),
                        item: Some(item.clone()),
                        position: None,
                        prev: f.current(&id),
                        job: job.clone(),
                    },
                    Operation::Publish { item, position, .. } => match place(position) {
                        Ok(position) => Change {
                            op: ChangeOp::Publish,
                            id: id.clone(),
                            item: Some(item.clone()),
                            position: Some(position),
                            prev: None,
                            job: job.clone(),
                        },
                        Err(message) => {
                            return (reject(ErrorCode::BadRequest, message), Vec::new())
                        }
                    },
                    _ if !exists => {
                        return (reject(ErrorCode::NotFound, "no such item"), Vec::new())
                    }
                    Operation::Edit { item, .. } => Change {
                        op: ChangeOp::Edit,
                        id: id.clone(),
                        item: Some(item.clone()),
                        position: None,
                        prev: f.current(&id),
                        job: job.clone(),
                    },
                    Operation::Retract { .. } => Change {
                        op: ChangeOp::Retract,
                        id: id.clone(),
                        item: None,
                        position: None,
                        prev: f.current(&id),
                        job: job.clone(),
                    },
                    Operation::Move { position, .. } => match place(&Some(position.clone())) {
                        Ok(position) => Change {
                            op: ChangeOp::Position,
                            id: id.clone(),
                            item: None,
                            position: Some(position),
                            prev: None,
                            job: job.clone(),
                        },
                        Err(message) => {
                            return (reject(ErrorCode::BadRequest, message), Vec::new())
                        }
                    },
                    Operation::Action { .. } => unreachable!("handled above"),
                };
                (feed, change, base, blind)
            }
        };
        let (rev, events) = self.commit(&feed, change, Some(request.id.clone()), base, blind);
        let epoch = self.feeds[&feed].epoch;
        (
            Outcome::Accepted {
                result: json!({"rev": rev}),
                revs: BTreeMap::from([(feed.clone(), rev)]),
                epochs: BTreeMap::from([(feed, epoch)]),
            },
            events,
        )
    }

    fn commit(
        &mut self,
        feed: &FeedName,
        change: Change,
        job: Option<ChangeId>,
        base: Option<Base>,
        blind: bool,
    ) -> (Rev, Vec<(usize, ServerMessage)>) {
        let f = self.feeds.get_mut(feed).expect("known feed");
        let (rev, change) = f.commit(change, &mut self.next_epoch);
        self.writes.push(Write {
            feed: feed.clone(),
            id: change.id.clone(),
            at: (f.epoch, rev),
            job,
            base,
            value: f.current(&change.id),
            moved: change.op == ChangeOp::Position,
            blind,
        });
        (rev, self.event(feed, rev, change))
    }

    /// Another user's change, applied directly; returns the events to push.
    pub fn other_write(&mut self, feed: &FeedName, change: Change) -> Vec<(usize, ServerMessage)> {
        self.commit(feed, change, None, None, false).1
    }

    /// The feed's history is lost: a new epoch, an empty log, same content
    /// and revision.
    pub fn reset(&mut self, feed: &FeedName) {
        self.new_epoch(feed);
    }

    /// The feed's epoch is renewed and its revision starts over (its
    /// revision counter was lost): same content, item revisions 0.
    pub fn renew(&mut self, feed: &FeedName) {
        let Some(f) = self.new_epoch(feed) else {
            return;
        };
        f.rev = 0;
        let items: Vec<(ItemId, Value, Rev)> = f
            .items
            .iter()
            .map(|(id, i)| (id.clone(), i.value.clone(), 0))
            .collect();
        f.items = OrderedItems::from_ordered(items);
    }

    /// Moves an existing feed to a new epoch with an empty log and no old
    /// versions; `None` for a deleted feed (epoch 0), left as it is.
    fn new_epoch(&mut self, feed: &FeedName) -> Option<&mut ServerFeed> {
        let f = self.feeds.get_mut(feed).expect("known feed");
        if f.epoch == 0 {
            return None;
        }
        f.epoch = self.next_epoch;
        self.next_epoch += 1;
        f.log.clear();
        f.versions.clear();
        Some(f)
    }

    /// The feed is deleted: followers get a snapshot of epoch 0; the next
    /// write creates it again under a new epoch, from revision 1.
    pub fn delete(&mut self, feed: &FeedName) -> Vec<(usize, ServerMessage)> {
        let f = self.feeds.get_mut(feed).expect("known feed");
        *f = ServerFeed::new(0);
        let msg = f.snapshot(feed);
        self.writes.retain(|w| &w.feed != feed);
        self.fan_out(feed, msg)
    }
}

/// The feed and item a single-item operation writes.
fn item_of(op: &Operation) -> Option<(FeedName, ItemId)> {
    match op {
        Operation::Publish { feed, id, .. }
        | Operation::Edit { feed, id, .. }
        | Operation::Retract { feed, id }
        | Operation::Move { feed, id, .. } => Some((feed.clone(), id.clone())),
        Operation::Action { .. } => None,
    }
}

/// The frame the gateway sends for outcomes: none, one `outcome`, or one
/// `outcomes` frame for several.
fn outcomes_frame(mut outcomes: Vec<ChangeOutcomeOf>) -> Option<ServerMessage> {
    match outcomes.len() {
        0 => None,
        1 => {
            let ChangeOutcomeOf { id, outcome } = outcomes.remove(0);
            Some(ServerMessage::Outcome { id, outcome })
        }
        _ => Some(ServerMessage::Outcomes { outcomes }),
    }
}
