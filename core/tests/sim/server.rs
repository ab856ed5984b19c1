//! An in-memory model of the server: feeds with epochs, revisions and a
//! change log of limited retention; jobs with an exactly-once ledger by change
//! id; conflicts on the base revision; subscriptions of one connection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{json, Value};
use thoonk_protocol::{
    Change, ChangeId, ChangeOp, ChangeRequest, ClientMessage, ErrorCode, FeedEvent, FeedName,
    FeedPattern, FeedPosition, Item, ItemId, Operation, Outcome, Position, Rev, ServerMessage,
    PROTOCOL_VERSION,
};
use thoonk_sync_core::{apply_change, OrderedItems};

/// How many changes a feed's log keeps.
pub const RETENTION: usize = 6;

/// One feed on the server.
#[derive(Clone, Debug)]
pub struct ServerFeed {
    /// Current epoch.
    pub epoch: u64,
    /// Current revision.
    pub rev: Rev,
    /// Items in order.
    pub items: OrderedItems,
    /// The retained change log, oldest first.
    pub log: VecDeque<FeedEvent>,
    /// Every value each item ever had: `(rev, value)` (`None`: absent).
    pub versions: BTreeMap<ItemId, Vec<(Rev, Option<Value>)>>,
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

    fn last_change(&self, id: &ItemId) -> Rev {
        self.versions
            .get(id)
            .and_then(|v| v.last())
            .map_or(0, |(r, _)| *r)
    }

    fn current(&self, id: &ItemId) -> Option<Value> {
        self.items.get(id).map(|i| i.value.clone())
    }

    /// Replays can start after this revision.
    fn oldest_replayable(&self) -> Rev {
        self.log.front().map_or(self.rev, |e| e.rev - 1)
    }

    fn commit(&mut self, change: Change) -> (Rev, Change) {
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
    /// snapshot.
    fn catch_up(
        &self,
        feed: &FeedName,
        from: Option<FeedPosition>,
        per_frame: usize,
    ) -> Vec<ServerMessage> {
        match from {
            Some(p)
                if p.epoch == self.epoch
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

/// The server model.
#[derive(Debug)]
pub struct SimServer {
    /// Feeds by name.
    pub feeds: BTreeMap<FeedName, ServerFeed>,
    /// Recorded outcomes by change id (the exactly-once ledger).
    pub ledger: BTreeMap<ChangeId, Outcome>,
    /// How many times each change id was applied (must never exceed 1).
    pub applied: BTreeMap<ChangeId, u32>,
    next_epoch: u64,
    changes_per_frame: usize,
    welcomed: bool,
    patterns: BTreeSet<FeedPattern>,
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
            applied: BTreeMap::new(),
            next_epoch: 2,
            changes_per_frame,
            welcomed: false,
            patterns: BTreeSet::new(),
        }
    }

    /// The connection closed: forget its session.
    pub fn drop_session(&mut self) {
        self.welcomed = false;
        self.patterns.clear();
    }

    fn follows(&self, feed: &FeedName) -> bool {
        self.welcomed && self.patterns.iter().any(|p| p.matches(feed))
    }

    fn event(&self, feed: &FeedName, rev: Rev, change: Change) -> Vec<ServerMessage> {
        if !self.follows(feed) {
            return Vec::new();
        }
        vec![ServerMessage::Event {
            feed: feed.clone(),
            epoch: self.feeds[feed].epoch,
            rev,
            change,
        }]
    }

    /// Handles one client frame; returns the frames to push back.
    pub fn handle(&mut self, msg: ClientMessage) -> Vec<ServerMessage> {
        match msg {
            ClientMessage::Hello { protocol, .. } => {
                assert_eq!(protocol, PROTOCOL_VERSION);
                self.welcomed = true;
                vec![ServerMessage::Welcome {
                    protocol: PROTOCOL_VERSION,
                    user: "sim".into(),
                }]
            }
            _ if !self.welcomed => vec![ServerMessage::Error {
                code: ErrorCode::BadRequest,
                message: "hello first".into(),
            }],
            ClientMessage::Subscribe { pattern, known } => {
                self.patterns.insert(pattern.clone());
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
                out
            }
            ClientMessage::Unsubscribe { pattern } => {
                self.patterns.remove(&pattern);
                Vec::new()
            }
            ClientMessage::Replay { feed, from } => match self.feeds.get(&feed) {
                Some(f) if self.follows(&feed) => {
                    f.catch_up(&feed, Some(from), self.changes_per_frame)
                }
                _ => vec![ServerMessage::Error {
                    code: ErrorCode::NotFound,
                    message: format!("no feed {feed}"),
                }],
            },
            ClientMessage::Submit { change } => self.submit(change),
            ClientMessage::Ping => vec![ServerMessage::Pong],
        }
    }

    fn submit(&mut self, request: ChangeRequest) -> Vec<ServerMessage> {
        let id = request.id.clone();
        let mut out = vec![ServerMessage::Ack { id: id.clone() }];
        if let Some(outcome) = self.ledger.get(&id) {
            out.push(ServerMessage::Outcome {
                id,
                outcome: outcome.clone(),
            });
            return out;
        }
        let (outcome, events) = self.run_job(&request);
        if matches!(outcome, Outcome::Accepted { .. }) {
            *self.applied.entry(id.clone()).or_insert(0) += 1;
        }
        self.ledger.insert(id.clone(), outcome.clone());
        out.extend(events);
        out.push(ServerMessage::Outcome { id, outcome });
        out
    }

    fn run_job(&mut self, request: &ChangeRequest) -> (Outcome, Vec<ServerMessage>) {
        let job = Some(request.id.0.clone());
        let reject = |code, message: &str| Outcome::Rejected {
            code,
            message: message.into(),
        };
        let (feed, change) = match &request.op {
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
                    position: None,
                    prev: f.current(&id),
                    job: job.clone(),
                };
                (feed, change)
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
                let base = request.base.get(&feed).copied().unwrap_or(0);
                let checks_conflict = !matches!(op, Operation::Move { .. });
                if checks_conflict && f.last_change(&id) > base {
                    let history = f.log.iter().filter(|e| e.rev > base).cloned().collect();
                    return (
                        Outcome::Conflict {
                            feed: feed.clone(),
                            id: id.clone(),
                            base: f.value_at(&id, base),
                            current: f.current(&id),
                            rev: f.rev,
                            history,
                        },
                        Vec::new(),
                    );
                }
                let exists = f.items.contains(&id);
                let change = match op {
                    Operation::Publish { item, position, .. } => Change {
                        op: if exists {
                            ChangeOp::Edit
                        } else {
                            ChangeOp::Publish
                        },
                        id: id.clone(),
                        item: Some(item.clone()),
                        position: Some(position.clone().unwrap_or(Position::End)),
                        prev: f.current(&id),
                        job: job.clone(),
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
                    Operation::Move { position, .. } => Change {
                        op: ChangeOp::Position,
                        id: id.clone(),
                        item: None,
                        position: Some(position.clone()),
                        prev: None,
                        job: job.clone(),
                    },
                    Operation::Action { .. } => unreachable!("handled above"),
                };
                (feed, change)
            }
        };
        let (rev, change) = self.feeds.get_mut(&feed).expect("checked").commit(change);
        let events = self.event(&feed, rev, change);
        (
            Outcome::Accepted {
                result: json!({"rev": rev}),
                revs: BTreeMap::from([(feed, rev)]),
            },
            events,
        )
    }

    /// Another user's change, applied directly; returns the events to push.
    pub fn other_write(&mut self, feed: &FeedName, change: Change) -> Vec<ServerMessage> {
        let (rev, change) = self.feeds.get_mut(feed).expect("known feed").commit(change);
        self.event(feed, rev, change)
    }

    /// The feed's history is lost: a new epoch, an empty log, same content.
    pub fn reset(&mut self, feed: &FeedName) {
        let f = self.feeds.get_mut(feed).expect("known feed");
        f.epoch = self.next_epoch;
        self.next_epoch += 1;
        f.log.clear();
    }
}
