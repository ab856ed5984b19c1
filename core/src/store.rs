//! What the core persists, the batches of writes it emits, and the storage trait.
//!
//! A store is "load everything at start" plus "apply one batch atomically": the
//! core keeps its whole state in memory, emits a [`StoreBatch`] after each
//! input, and the shell applies it in one transaction before sending that
//! input's messages. [`StoredState::apply`] is the reference meaning of every
//! write; [`crate::conformance`] checks an implementation against it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thoonk_protocol::{
    Base, ChangeId, Epoch, FeedName, FeedPattern, ItemId, Operation, Rev, SortedMap,
};

use crate::outcome::{OutcomeRecord, ResolutionKind};

/// The client's identity and change counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMeta {
    /// The client's stable id, the prefix of its change ids.
    pub client_id: String,
    /// The sequence number the next change id takes; never reused.
    pub next_seq: u64,
}

/// What the client mirrors of a feed's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHead {
    /// The feed's epoch.
    pub epoch: Epoch,
    /// The last revision applied.
    pub rev: Rev,
}

/// One mirrored item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredItem {
    /// The feed it belongs to.
    pub feed: FeedName,
    /// Its id.
    pub id: ItemId,
    /// Its value.
    pub value: Value,
    /// The revision of its last change.
    pub rev: Rev,
    /// Its order key: a feed's items sort by ascending key.
    pub order: u64,
}

/// The server accepted a change; it stays in the outbox (and in the overlay)
/// until the mirror has caught up with the revisions it produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcceptedRecord {
    /// The revision each written feed reached.
    pub revs: BTreeMap<FeedName, Rev>,
    /// The epoch of each of those revisions: as the server named it, else
    /// the mirror's epoch of the feed when the outcome came.
    pub epochs: BTreeMap<FeedName, Epoch>,
}

/// One outbox entry: a local change not yet confirmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Order of creation; the outbox is sent in this order.
    pub seq: u64,
    /// The change id the app was given.
    pub id: ChangeId,
    /// The id it is submitted under: `id`, or a fresh id after a conflict resubmission.
    pub wire_id: ChangeId,
    /// What to do (after a conflict: the resolved operation).
    pub op: Operation,
    /// The epoch and revision of each feed it was made (or resolved)
    /// against. A record stored before bases carried their epoch loads with
    /// a bare revision, which the core treats as an unknown base.
    pub base: BTreeMap<FeedName, Base>,
    /// When the app made it.
    pub created_at: u64,
    /// How many conflicts it has run into.
    pub conflicts: u32,
    /// How its last conflict was settled, when it had one.
    pub resolution: Option<ResolutionKind>,
    /// Set once the server accepted it.
    pub accepted: Option<AcceptedRecord>,
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreWrite {
    /// Replace the client meta.
    PutMeta {
        /// The new meta.
        meta: ClientMeta,
    },
    /// Remember a subscription.
    PutSubscription {
        /// The pattern.
        pattern: FeedPattern,
    },
    /// Forget a subscription.
    DeleteSubscription {
        /// The pattern.
        pattern: FeedPattern,
    },
    /// Delete a feed's head and every item of it.
    ClearFeed {
        /// The feed.
        feed: FeedName,
    },
    /// Replace a feed's head.
    PutFeed {
        /// The feed.
        feed: FeedName,
        /// Its new head.
        head: FeedHead,
    },
    /// Insert or replace one item (keyed by feed and id).
    PutItem {
        /// The item.
        item: StoredItem,
    },
    /// Delete one item.
    DeleteItem {
        /// The feed.
        feed: FeedName,
        /// The item.
        id: ItemId,
    },
    /// Insert or replace an outbox entry (keyed by `seq`).
    PutOutbox {
        /// The entry.
        entry: OutboxRecord,
    },
    /// Delete an outbox entry.
    DeleteOutbox {
        /// Its `seq`.
        seq: u64,
    },
    /// Insert or replace an outcome (keyed by change id).
    PutOutcome {
        /// The outcome.
        outcome: OutcomeRecord,
    },
    /// Delete an outcome.
    DeleteOutcome {
        /// The change id.
        id: ChangeId,
    },
}

/// Writes to apply in one atomic transaction, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreBatch {
    /// The writes, in the order they must take effect.
    pub writes: Vec<StoreWrite>,
}

impl StoreBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes of this batch that the server cannot give back: everything
    /// but the cached feeds (items and heads). When storage is full, a store
    /// may drop every cached feed and write just these; the core is then
    /// reopened from the store and fetches the feeds again.
    pub fn without_cache(&self) -> StoreBatch {
        StoreBatch {
            writes: self
                .writes
                .iter()
                .filter(|w| !w.is_cache())
                .cloned()
                .collect(),
        }
    }
}

impl StoreWrite {
    /// True for a write of the feeds' cache (items, heads), which the server
    /// can always send again.
    pub fn is_cache(&self) -> bool {
        matches!(
            self,
            Self::ClearFeed { .. }
                | Self::PutFeed { .. }
                | Self::PutItem { .. }
                | Self::DeleteItem { .. }
        )
    }
}

/// Everything a store holds, as loaded at start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    /// The client meta (absent in a new store).
    pub meta: Option<ClientMeta>,
    /// The subscribed patterns.
    pub subscriptions: BTreeSet<FeedPattern>,
    /// Feed heads.
    pub feeds: SortedMap<FeedName, FeedHead>,
    /// Items by feed and id.
    pub items: BTreeMap<(FeedName, ItemId), StoredItem>,
    /// Outbox entries by `seq` (loaded and written back in `seq` order,
    /// which a `SortedMap` appends).
    pub outbox: SortedMap<u64, OutboxRecord>,
    /// Outcomes by change id.
    pub outcomes: BTreeMap<ChangeId, OutcomeRecord>,
}

impl StoredState {
    /// Applies a batch: the reference meaning of every write.
    pub fn apply(&mut self, batch: &StoreBatch) {
        for write in &batch.writes {
            self.apply_write(write);
        }
    }

    fn apply_write(&mut self, write: &StoreWrite) {
        match write {
            StoreWrite::PutMeta { meta } => self.meta = Some(meta.clone()),
            StoreWrite::PutSubscription { pattern } => {
                self.subscriptions.insert(pattern.clone());
            }
            StoreWrite::DeleteSubscription { pattern } => {
                self.subscriptions.remove(pattern);
            }
            StoreWrite::ClearFeed { feed } => {
                self.feeds.remove(feed);
                self.items.retain(|(f, _), _| f != feed);
            }
            StoreWrite::PutFeed { feed, head } => {
                self.feeds.insert(feed.clone(), *head);
            }
            StoreWrite::PutItem { item } => {
                self.items
                    .insert((item.feed.clone(), item.id.clone()), item.clone());
            }
            StoreWrite::DeleteItem { feed, id } => {
                self.items.remove(&(feed.clone(), id.clone()));
            }
            StoreWrite::PutOutbox { entry } => {
                self.outbox.insert(entry.seq, entry.clone());
            }
            StoreWrite::DeleteOutbox { seq } => {
                self.outbox.remove(seq);
            }
            StoreWrite::PutOutcome { outcome } => {
                self.outcomes.insert(outcome.id.clone(), outcome.clone());
            }
            StoreWrite::DeleteOutcome { id } => {
                self.outcomes.remove(id);
            }
        }
    }

    /// The stored items of one feed, in feed order.
    pub fn feed_items(&self, feed: &FeedName) -> Vec<&StoredItem> {
        let mut items: Vec<&StoredItem> = self
            .items
            .range((feed.clone(), min_item_id())..)
            .take_while(|((f, _), _)| f == feed)
            .map(|(_, item)| item)
            .collect();
        items.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
        items
    }

    /// The operations waiting in the outbox, oldest first.
    pub fn pending_ops(&self) -> impl Iterator<Item = &Operation> {
        self.outbox.values().map(|entry| &entry.op)
    }
}

fn min_item_id() -> ItemId {
    ItemId::new("\u{1}").expect("a one-byte id is valid")
}

/// Durable storage for the core: load everything once, then apply batches atomically.
///
/// `apply` must either make every write of the batch durable or none of them.
pub trait Store {
    /// The store's own error (quota exceeded, storage closed, ...).
    type Error: std::error::Error + 'static;

    /// Loads the whole stored state.
    fn load(&mut self) -> Result<StoredState, Self::Error>;

    /// Applies one batch in one transaction.
    fn apply(&mut self, batch: &StoreBatch) -> Result<(), Self::Error>;
}

/// An in-memory store failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemoryStoreError {
    /// The batch would have grown the store past its write quota; nothing was written.
    #[error("quota exceeded: the store holds at most {limit} items and outbox entries")]
    QuotaExceeded {
        /// The configured limit.
        limit: usize,
    },
}

/// A store that keeps its state in memory: the reference implementation, used
/// by the tests and by the simulation (where it survives client restarts).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: StoredState,
    quota: Option<usize>,
}

impl MemoryStore {
    /// An empty store without a quota.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that refuses batches which would leave it holding more
    /// than `limit` items and outbox entries together.
    pub fn with_quota(limit: usize) -> Self {
        Self {
            state: StoredState::default(),
            quota: Some(limit),
        }
    }

    /// The current state, without cloning.
    pub fn state(&self) -> &StoredState {
        &self.state
    }
}

impl Store for MemoryStore {
    type Error = MemoryStoreError;

    fn load(&mut self) -> Result<StoredState, Self::Error> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, batch: &StoreBatch) -> Result<(), Self::Error> {
        let Some(limit) = self.quota else {
            self.state.apply(batch);
            return Ok(());
        };
        let mut next = self.state.clone();
        next.apply(batch);
        if next.items.len() + next.outbox.len() > limit {
            return Err(MemoryStoreError::QuotaExceeded { limit });
        }
        self.state = next;
        Ok(())
    }
}
