//! [`Durable`]: the machine that decides when a change is durable, wrapped
//! around [`SyncCore`].
//!
//! Rules. Every input the shell gives the core gets a number, its *mark*
//! (counted from 1). The core's effects are carried out one *round* at a
//! time: the round's store batch first ([`Task::Write`]), then, once it
//! committed, the rest ([`Task::Effects`]); one write is in flight at most,
//! and inputs keep coming while it is. An input is *stored* when every write
//! up to its own committed, and has *failed* when a write failed before that:
//! a failed write fails every input not yet committed — also those given
//! while it was in flight, whose writes the stopped core drops. The core is
//! then reopened from the store ([`Task::Reload`]), and its next sequence
//! number never goes back: a change id once given never names another
//! change. The first connection after a store failure waits 1 s, 2 s, 4 s, …
//! up to a minute (as part of [`Durable::poll_timeout`]), so that a full
//! quota does not fetch the same snapshot again and again. A database lost
//! under the page (deleted or closed by the browser) is reopened
//! ([`Task::Reopen`]); when it comes back empty, the core's whole state is
//! written back from memory — first what the server cannot give back
//! (outbox, outcomes, meta, subscriptions), then the cached feeds — and the
//! round goes on: nothing fails and nothing is reloaded.
//!
//! Show, then commit: a round whose batch only writes the feeds' cache
//! (items and heads, which the server can always send again) hands out its
//! effects *before* its write, so the app sees a change from the server
//! without waiting for the mirror's commit. Its inputs still count as stored
//! only once the write committed. When that write fails, the app was shown
//! what the store does not hold: the core reloads from the store (behind what
//! was shown, so its next subscription asks the server for the changes
//! again) and the app is told every feed it may have been shown as the
//! reloaded core has it (the items it was shown that the store lacks are
//! removed), until the re-fetch brings them back. A round that writes
//! anything the server cannot give back (outbox, outcomes, meta,
//! subscriptions) keeps "store first".
//!
//! A database wiped between two runs (the browser evicted it, the user
//! cleared site data) cannot tell itself: the shell keeps a
//! [`StorageMarker`] outside it (localStorage) naming the client and its
//! unconfirmed changes. A run that finds its database empty where the marker
//! names a client reports the wipe ([`StorageWiped`]: those changes are lost
//! unless the server got them), and the report stays in the marker, across
//! any number of runs, until the app dismisses it; a second wipe before
//! that adds its changes to the report.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use thoonk_protocol::{FeedName, ItemId, SortedMap};

use crate::config::Config;
use crate::core::SyncCore;
use crate::effects::{Effects, Notification};
use crate::error::CoreError;
use crate::store::{StoreBatch, StoreWrite, StoredState};
use thoonk_protocol::ChangeId;

/// How often in a row a lost database is reopened before the loss counts as
/// a plain failure.
const MAX_REOPENS: u32 = 3;

/// Why a store batch was not written, as the shell tells it from its store's error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// Nothing of the batch was written (quota, refused request, …).
    #[error("{0}")]
    Failed(String),
    /// Storage was full: the shell dropped every cached feed and wrote the
    /// rest of the batch (its changes are stored; the feeds load again).
    #[error("browser storage was full ({0}): the cached feeds were dropped to keep the unsent changes; they load again from the server")]
    Evicted(String),
    /// The database was deleted or closed under the page: nothing was
    /// written, and the shell can open it again.
    #[error("the local database was deleted or closed while the page was open ({0})")]
    Lost(String),
    /// Another tab leads the database now: nothing was written.
    #[error("another tab leads the local database now")]
    Fenced,
}

/// What the shell must do next (see [`Durable::poll`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    /// Apply this batch in one transaction, then call [`Durable::write_done`].
    /// (Shared with the machine, which keeps it to write it again after a
    /// lost database: a snapshot's batch of thousands of items is not copied.)
    Write(Arc<StoreBatch>),
    /// Carry out these effects (they never hold a store batch): close, send,
    /// connect, notify, as [`Effects`] documents.
    Effects(Effects),
    /// Load the whole store, then call [`Durable::reloaded`].
    Reload,
    /// Open the database again (creating it when it is gone), then call
    /// [`Durable::reopened`].
    Reopen,
    /// Tell the app that the store failed, and why (its `storageError`).
    Report(String),
}

/// What the machine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Free to hand out the next write or round.
    Idle,
    /// A write, a reload or a reopen was handed out and is not answered yet.
    Busy,
    /// The store must be loaded (after a failure).
    Reload,
    /// The database must be opened again (it was lost).
    Reopen,
    /// Stopped for good: fenced, or the store cannot be read.
    Stopped,
}

/// A round whose store batch is being written.
#[derive(Debug)]
struct Round {
    /// The last input whose effects the round holds.
    through: u64,
    /// Its store batch (written again after a lost database that came back).
    batch: Arc<StoreBatch>,
    /// The rest of its effects, carried out once the batch committed.
    rest: Effects,
    /// The items the app was shown before the batch committed (a round
    /// that only writes the cache), by feed.
    shown: SortedMap<FeedName, BTreeSet<ItemId>>,
}

/// The durability machine: a [`SyncCore`], the bookkeeping of which
/// inputs' writes committed or failed, the recovery after a failed or lost
/// store, and the wait before the next connection after a failure.
///
/// A shell's loop: give inputs with [`Durable::input`] (remember
/// [`Durable::mark`] for a change), then call [`Durable::poll`] until it
/// gives `None`, carrying out each [`Task`] and answering it; arm a timer
/// for [`Durable::poll_timeout`] and call [`Durable::handle_timeout`].
pub struct Durable {
    core: SyncCore,
    config: Config,
    /// Inputs given so far.
    given: u64,
    /// Every input up to this one had its writes committed.
    committed: u64,
    /// Every input up to this one is decided: stored, or failed.
    settled: u64,
    /// Ranges `(after, through]` of inputs whose writes failed.
    failed: Vec<(u64, u64)>,
    /// The lowest sequence number the core may give next.
    seq_floor: u64,
    phase: Phase,
    round: Option<Round>,
    /// Batches to write before the round's own effects (a write-back).
    writes: VecDeque<Arc<StoreBatch>>,
    /// The batches in `writes` are the core's whole state as of this mark.
    image: Option<u64>,
    /// Tasks the shell can carry out at once.
    ready: VecDeque<Task>,
    /// Store failures since a batch of feed data last committed.
    storage_failures: u32,
    /// Lost databases in a row.
    reopens: u32,
    /// No connection before this time (after a store failure).
    connect_at: Option<u64>,
    /// The core asked to connect before `connect_at`: released then.
    held_connect: bool,
    /// Stopped because another tab leads.
    fenced: bool,
    /// Items the app was shown whose cache write failed, by feed: told
    /// again as the reloaded core has them.
    behind: SortedMap<FeedName, BTreeSet<ItemId>>,
}

impl Durable {
    /// Opens the core over the state loaded from the store.
    pub fn open(config: Config, state: StoredState, now: u64) -> Result<Self, CoreError> {
        let core = SyncCore::open(config.clone(), state, now)?;
        Ok(Self {
            seq_floor: core.next_seq(),
            core,
            config,
            given: 0,
            committed: 0,
            settled: 0,
            failed: Vec::new(),
            phase: Phase::Idle,
            round: None,
            writes: VecDeque::new(),
            image: None,
            ready: VecDeque::new(),
            storage_failures: 0,
            reopens: 0,
            connect_at: None,
            held_connect: false,
            fenced: false,
            behind: SortedMap::new(),
        })
    }

    /// Reads the core.
    pub fn core(&self) -> &SyncCore {
        &self.core
    }

    /// Gives the core an input (a local change, a frame, a connection
    /// event, …); it gets the next mark.
    pub fn input<R>(&mut self, now: u64, apply: impl FnOnce(&mut SyncCore, u64) -> R) -> R {
        let result = apply(&mut self.core, now);
        self.given += 1;
        self.seq_floor = self.seq_floor.max(self.core.next_seq());
        result
    }

    /// The mark of the last input given: a change made by that input is
    /// durable once [`Durable::stored`] says so.
    pub fn mark(&self) -> u64 {
        self.given
    }

    /// Whether the writes of input `mark` (and every input before it)
    /// committed: `None` while that is not decided, `Some(false)` when they
    /// failed (the change was never stored) or never will be (the machine
    /// stopped).
    pub fn stored(&self, mark: u64) -> Option<bool> {
        if mark > self.settled {
            // Once stopped, nothing more is ever written.
            return (self.phase == Phase::Stopped).then_some(false);
        }
        Some(
            !self
                .failed
                .iter()
                .any(|&(after, through)| after < mark && mark <= through),
        )
    }

    /// True once another tab took the lead: nothing more is written.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// True once the machine stopped for good (fenced, or the store cannot
    /// be read again): it hands out no more tasks.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// True when no connection may be opened at `now` (the wait after a
    /// store failure is not over).
    pub fn connect_held(&self, now: u64) -> bool {
        self.connect_at.is_some_and(|at| now < at)
    }

    /// The next task, or `None` when there is nothing to do until an answer
    /// or a new input comes.
    pub fn poll(&mut self, now: u64) -> Option<Task> {
        if let Some(task) = self.ready.pop_front() {
            return Some(task);
        }
        match self.phase {
            Phase::Busy | Phase::Stopped => return None,
            Phase::Reload => {
                self.phase = Phase::Busy;
                return Some(Task::Reload);
            }
            Phase::Reopen => {
                self.phase = Phase::Busy;
                return Some(Task::Reopen);
            }
            Phase::Idle => {}
        }
        if let Some(batch) = self.writes.front() {
            self.phase = Phase::Busy;
            return Some(Task::Write(batch.clone()));
        }
        let through = self.given;
        let mut effects = self.core.take_effects();
        if self.held_connect && !self.connect_held(now) {
            // The wait after a store failure is over.
            self.held_connect = false;
            effects.connect = true;
        }
        if effects.connect && self.connect_held(now) {
            effects.connect = false;
            self.held_connect = true;
        }
        if let Some(batch) = effects.store.take() {
            let batch = Arc::new(batch);
            self.writes.push_back(batch.clone());
            self.phase = Phase::Busy;
            if batch.writes.iter().all(StoreWrite::is_cache) && !effects.is_empty() {
                // Show, then commit: the cache can always be fetched again.
                let shown = shown_items(&effects.notify);
                self.round = Some(Round {
                    through,
                    batch: batch.clone(),
                    rest: Effects::default(),
                    shown,
                });
                self.ready.push_back(Task::Write(batch));
                return Some(Task::Effects(effects));
            }
            self.round = Some(Round {
                through,
                batch: batch.clone(),
                rest: effects,
                shown: SortedMap::new(),
            });
            return Some(Task::Write(batch));
        }
        self.committed = through;
        self.settled = through;
        (!effects.is_empty()).then_some(Task::Effects(effects))
    }

    /// The answer to [`Task::Write`].
    pub fn write_done(&mut self, result: Result<(), StoreFailure>) {
        if self.phase != Phase::Busy {
            return;
        }
        self.phase = Phase::Idle;
        match result {
            Ok(()) => {
                let batch = self.writes.pop_front();
                if batch.is_some_and(|b| b.writes.iter().any(StoreWrite::is_cache)) {
                    self.storage_failures = 0;
                }
                if let Some(image) = self.image {
                    // The first part of a write-back holds every change.
                    self.committed = self.committed.max(image);
                }
                if self.writes.is_empty() {
                    self.reopens = 0;
                    self.image = None;
                    self.finish_round();
                }
            }
            Err(StoreFailure::Evicted(reason)) => {
                let through = self.round.as_ref().map_or(self.committed, |r| r.through);
                self.committed = self.committed.max(through);
                self.fail(StoreFailure::Evicted(reason).to_string());
            }
            Err(StoreFailure::Failed(reason)) => self.fail(reason),
            Err(StoreFailure::Lost(reason)) => {
                self.reopens += 1;
                if self.reopens > MAX_REOPENS {
                    self.fail(StoreFailure::Lost(reason).to_string());
                    return;
                }
                self.writes.clear();
                self.phase = Phase::Reopen;
                self.ready.push_back(Task::Report(format!(
                    "{}; it is opened again and written back from memory",
                    StoreFailure::Lost(reason)
                )));
            }
            Err(StoreFailure::Fenced) => {
                self.fenced = true;
                self.fail(StoreFailure::Fenced.to_string());
                self.ready.clear();
            }
        }
    }

    /// The answer to [`Task::Reopen`]: `Ok(true)` when the database came
    /// back empty (it was deleted), `Ok(false)` when it still holds what
    /// was last committed.
    pub fn reopened(&mut self, result: Result<bool, String>) {
        if self.phase != Phase::Busy {
            return;
        }
        self.phase = Phase::Idle;
        match result {
            Ok(empty) if empty || self.image.is_some() => {
                let (kept, cache) = image(&self.core.stored_state());
                self.image = Some(self.given);
                self.writes.clear();
                self.writes.push_back(Arc::new(kept));
                if !cache.is_empty() {
                    self.writes.push_back(Arc::new(cache));
                }
            }
            Ok(_) => {
                self.writes.clear();
                if let Some(round) = &self.round {
                    self.writes.push_back(round.batch.clone());
                }
            }
            Err(reason) => self.fail(format!(
                "the lost local database cannot be opened again: {reason}"
            )),
        }
    }

    /// The answer to [`Task::Reload`]: the core opens again over what the
    /// store holds (keeping its resolver and never going back in sequence
    /// numbers).
    pub fn reloaded(&mut self, result: Result<StoredState, String>, now: u64) {
        if self.phase != Phase::Busy {
            return;
        }
        let opened = result.and_then(|state| {
            SyncCore::open(self.config.clone(), state, now).map_err(|err| err.to_string())
        });
        match opened {
            Ok(mut core) => {
                core.set_resolver(self.core.take_resolver());
                self.tell_reloaded(&core);
                if self.fenced {
                    // Read only from now on: what the store holds is what
                    // followers are told.
                    self.core = core;
                    self.phase = Phase::Stopped;
                    return;
                }
                core.reserve_seqs_below(self.seq_floor, now);
                self.core = core;
                self.phase = Phase::Idle;
                // After a store failure: 1 s, 2 s, 4 s … up to a minute.
                let failures = self.storage_failures.clamp(1, 7);
                self.connect_at = Some(now + (1000u64 << (failures - 1)).min(60_000));
            }
            Err(reason) => {
                self.phase = Phase::Stopped;
                self.ready.push_back(Task::Report(format!(
                    "the local database cannot be read again: {reason}"
                )));
            }
        }
    }

    /// The next time [`Durable::handle_timeout`] has work (a held
    /// connection counts only while nothing is in flight: the answer to what
    /// is leads to the next [`Durable::poll`] anyway).
    pub fn poll_timeout(&self) -> Option<u64> {
        let held = self
            .connect_at
            .filter(|_| self.held_connect && self.phase == Phase::Idle);
        [self.core.poll_timeout(), held].into_iter().flatten().min()
    }

    /// The timer fired: gives the core its timeout (an input). A connection
    /// held back after a store failure is asked for by the next
    /// [`Durable::poll`] once its wait is over.
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), CoreError> {
        self.input(now, |core, now| core.handle_timeout(now))
    }

    /// The round's batch (and any write-back before it) committed: its
    /// inputs are stored, the rest of its effects can be carried out.
    fn finish_round(&mut self) {
        if let Some(round) = self.round.take() {
            self.committed = self.committed.max(round.through);
            if !round.rest.is_empty() {
                self.ready.push_back(Task::Effects(round.rest));
            }
        }
        self.settled = self.settled.max(self.committed);
    }

    /// After a reload: tells the app every feed it may have been shown as
    /// `core` (reloaded from the store) has it — the items it was shown that
    /// the store lacks removed (a mirror write that failed after its items
    /// were shown; a round whose notifications the failure dropped). The
    /// core's next subscription asks the server for what it is behind.
    fn tell_reloaded(&mut self, core: &SyncCore) {
        let behind = std::mem::take(&mut self.behind);
        let mut feeds = self.core.shown_feeds();
        feeds.extend(core.shown_feeds());
        feeds.extend(behind.keys().cloned());
        let notify: Vec<Notification> = feeds
            .into_iter()
            .map(|feed| {
                let changed = core.view(&feed);
                let order: Vec<ItemId> = changed.iter().map(|v| v.id.clone()).collect();
                // Inserted, not collected (a collect sorts: more code in the bundle).
                let mut shown: BTreeSet<ItemId> = BTreeSet::new();
                shown.extend(self.core.view_ref(&feed).iter().map(|v| v.id.clone()));
                shown.extend(behind.get(&feed).into_iter().flatten().cloned());
                let removed = shown.into_iter().filter(|id| !order.contains(id)).collect();
                Notification::Items {
                    feed,
                    changed,
                    removed,
                    order: Some(order),
                }
            })
            .collect();
        if !notify.is_empty() {
            self.ready.push_back(Task::Effects(Effects {
                notify,
                ..Effects::default()
            }));
        }
    }

    /// A write failed: every input not committed failed with it (the core
    /// drops their writes when it stops), and the core reloads.
    fn fail(&mut self, reason: String) {
        if self.given > self.committed {
            self.failed.push((self.committed, self.given));
        }
        self.committed = self.given;
        self.settled = self.given;
        self.seq_floor = self.seq_floor.max(self.core.next_seq());
        self.storage_failures = self.storage_failures.saturating_add(1);
        self.writes.clear();
        self.image = None;
        self.reopens = 0;
        // The reopened core asks to connect again, after a new wait.
        self.held_connect = false;
        if let Some(round) = self.round.take() {
            for (feed, ids) in round.shown {
                self.behind.entry(feed).or_default().extend(ids);
            }
        }
        self.core.storage_failed(reason.clone());
        let stopped = self.core.take_effects();
        self.ready.push_back(Task::Effects(Effects {
            close: stopped.close,
            ..Effects::default()
        }));
        self.ready.push_back(Task::Report(reason));
        self.phase = Phase::Reload;
    }
}

/// The items `notify` shows the app (changed or removed), by feed.
fn shown_items(notify: &[Notification]) -> SortedMap<FeedName, BTreeSet<ItemId>> {
    let mut shown: SortedMap<FeedName, BTreeSet<ItemId>> = SortedMap::new();
    for notification in notify {
        if let Notification::Items {
            feed,
            changed,
            removed,
            ..
        } = notification
        {
            let ids = shown.entry(feed.clone()).or_default();
            ids.extend(changed.iter().map(|v| v.id.clone()));
            ids.extend(removed.iter().cloned());
        }
    }
    shown
}

/// The core's whole state as two batches for an empty store: first what the
/// server cannot give back (outbox first, then outcomes, meta and
/// subscriptions), then the cached feeds.
fn image(state: &StoredState) -> (StoreBatch, StoreBatch) {
    let mut kept = StoreBatch::default();
    kept.writes
        .extend(state.outbox.values().map(|entry| StoreWrite::PutOutbox {
            entry: entry.clone(),
        }));
    kept.writes.extend(
        state
            .outcomes
            .values()
            .map(|outcome| StoreWrite::PutOutcome {
                outcome: outcome.clone(),
            }),
    );
    if let Some(meta) = &state.meta {
        kept.writes.push(StoreWrite::PutMeta { meta: meta.clone() });
    }
    kept.writes.extend(
        state
            .subscriptions
            .iter()
            .map(|pattern| StoreWrite::PutSubscription {
                pattern: pattern.clone(),
            }),
    );
    let mut cache = StoreBatch::default();
    cache
        .writes
        .extend(state.feeds.iter().map(|(feed, head)| StoreWrite::PutFeed {
            feed: feed.clone(),
            head: *head,
        }));
    cache.writes.extend(
        state
            .items
            .values()
            .map(|item| StoreWrite::PutItem { item: item.clone() }),
    );
    (kept, cache)
}

/// A report that the database was wiped since an earlier run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageWiped {
    /// The client id the (last) lost database belonged to.
    pub previous_client_id: String,
    /// The changes that were not confirmed when it was last seen: lost
    /// unless the server got them.
    pub lost_changes: Vec<ChangeId>,
}

/// What the shell keeps about the client outside its database, so that a
/// wiped database is noticed (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageMarker {
    /// The client id of the database when the marker was written.
    pub previous_client_id: String,
    /// Its changes not yet confirmed then.
    pub lost_changes: Vec<ChangeId>,
    /// A wipe reported and not dismissed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiped: Option<StorageWiped>,
}

impl StorageMarker {
    /// The marker at the start of a run: `stored` is the marker found,
    /// `started_fresh` whether the database held no client state. A fresh
    /// database where the marker names a client was wiped: its unconfirmed
    /// changes join the report (kept from earlier runs until dismissed).
    pub fn at_start(
        stored: Option<StorageMarker>,
        started_fresh: bool,
        client_id: &str,
        pending: Vec<ChangeId>,
    ) -> StorageMarker {
        let mut wiped = stored.as_ref().and_then(|m| m.wiped.clone());
        if let (Some(stored), true) = (&stored, started_fresh) {
            let report = wiped.get_or_insert_with(|| StorageWiped {
                previous_client_id: stored.previous_client_id.clone(),
                lost_changes: Vec::new(),
            });
            report.previous_client_id = stored.previous_client_id.clone();
            for id in &stored.lost_changes {
                if !report.lost_changes.contains(id) {
                    report.lost_changes.push(id.clone());
                }
            }
        }
        StorageMarker {
            previous_client_id: client_id.to_owned(),
            lost_changes: pending,
            wiped,
        }
    }

    /// The marker to write now: the client's state, and the report as the
    /// marker `stored` has it (another tab may have dismissed it).
    pub fn update(
        stored: Option<StorageMarker>,
        client_id: &str,
        pending: Vec<ChangeId>,
    ) -> StorageMarker {
        StorageMarker {
            previous_client_id: client_id.to_owned(),
            lost_changes: pending,
            wiped: stored.and_then(|m| m.wiped),
        }
    }

    /// The marker once the app dismissed the report.
    pub fn dismissed(self) -> StorageMarker {
        StorageMarker {
            wiped: None,
            ..self
        }
    }
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<ChangeId> {
        list.iter().map(|id| ChangeId((*id).to_owned())).collect()
    }

    #[test]
    fn a_wipe_is_reported_until_dismissed_across_runs() {
        // Run 1: a new browser, nothing to report.
        let run1 = StorageMarker::at_start(None, true, "c1", vec![]);
        assert_eq!(run1.wiped, None);
        let run1 = StorageMarker::update(Some(run1), "c1", ids(&["c1:1", "c1:2"]));
        // Run 2: the database was wiped with two changes unconfirmed.
        let run2 = StorageMarker::at_start(Some(run1), true, "c2", vec![]);
        let report = StorageWiped {
            previous_client_id: "c1".into(),
            lost_changes: ids(&["c1:1", "c1:2"]),
        };
        assert_eq!(run2.wiped.as_ref(), Some(&report));
        let run2 = StorageMarker::update(Some(run2), "c2", ids(&["c2:1"]));
        assert_eq!(run2.wiped.as_ref(), Some(&report), "kept while running");
        // Run 3: the database is intact; the report is still there.
        let run3 = StorageMarker::at_start(Some(run2), false, "c2", ids(&["c2:1"]));
        assert_eq!(run3.wiped.as_ref(), Some(&report), "kept at the next start");
        // Dismissed: gone, also at the next start.
        let run3 = run3.dismissed();
        let run4 = StorageMarker::at_start(Some(run3), false, "c2", vec![]);
        assert_eq!(run4.wiped, None);
    }

    #[test]
    fn a_second_wipe_before_dismissal_adds_its_changes() {
        let first = StorageMarker {
            previous_client_id: "c2".into(),
            lost_changes: ids(&["c2:1"]),
            wiped: Some(StorageWiped {
                previous_client_id: "c1".into(),
                lost_changes: ids(&["c1:1"]),
            }),
        };
        let again = StorageMarker::at_start(Some(first), true, "c3", vec![]);
        assert_eq!(
            again.wiped,
            Some(StorageWiped {
                previous_client_id: "c2".into(),
                lost_changes: ids(&["c1:1", "c2:1"]),
            })
        );
    }

    #[test]
    fn a_report_dismissed_by_another_tab_is_not_written_back() {
        let stored = StorageMarker {
            previous_client_id: "c2".into(),
            lost_changes: vec![],
            wiped: None,
        };
        assert_eq!(
            StorageMarker::update(Some(stored), "c2", vec![]).wiped,
            None
        );
    }

    #[test]
    fn a_marker_of_earlier_builds_reads_without_a_report() {
        let old: StorageMarker =
            serde_json::from_str(r#"{"previousClientId":"c1","lostChanges":["c1:4"]}"#).unwrap();
        assert_eq!(old.wiped, None);
        let next = StorageMarker::at_start(Some(old), true, "c2", vec![]);
        assert_eq!(next.wiped.unwrap().lost_changes, ids(&["c1:4"]));
    }
}
