//! Storage: turning the journal of an input into one store batch, and
//! what the store must hold.

use thoonk_protocol::{FeedName, FeedPattern, ItemId};

use crate::effects::{Effects, Status};
use crate::journal::Journal;
use crate::store::{ClientMeta, StoreBatch, StoreWrite, StoredItem, StoredState};

use super::{Conn, SyncCore};

impl SyncCore {
    /// The shell could not apply a store batch. The core stops (nothing more
    /// is sent) and must be reopened from the store, which still holds the
    /// last batch that succeeded, outbox included.
    pub fn storage_failed(&mut self, error: impl Into<String>) {
        let error = error.into();
        self.storage_error = Some(error.clone());
        self.conn = Conn::Halted;
        self.effects = Effects {
            close: true,
            ..Effects::default()
        };
        self.stale_views.clear();
        self.set_status(Status::Stopped {
            reason: format!("local storage failed: {error}"),
        });
    }

    /// Everything the store should hold after the last batch: what
    /// [`crate::Store::load`] must give back. Useful to check a store.
    pub fn stored_state(&self) -> StoredState {
        let mut state = StoredState {
            meta: Some(self.meta()),
            subscriptions: self.subscriptions.clone(),
            outcomes: self.outcomes.clone(),
            ..StoredState::default()
        };
        for (feed, m) in &self.mirror.feeds {
            if let Some(head) = m.head {
                state.feeds.insert(feed.clone(), head);
                for (id, _) in m.items.iter() {
                    let item = self.stored_item(feed, id).expect("listed above");
                    state.items.insert((feed.clone(), id.clone()), item);
                }
            }
        }
        for entry in self.outbox.iter() {
            state.outbox.insert(entry.record.seq, entry.record.clone());
        }
        state
    }

    fn meta(&self) -> ClientMeta {
        ClientMeta {
            client_id: self.client_id.clone(),
            next_seq: self.next_seq,
        }
    }

    fn stored_item(&self, feed: &FeedName, id: &ItemId) -> Option<StoredItem> {
        let item = self.mirror.feeds.get(feed)?.items.get(id)?;
        Some(StoredItem {
            feed: feed.clone(),
            id: id.clone(),
            value: item.value.clone(),
            rev: item.rev,
            order: item.order,
        })
    }

    /// Ends an input: sends what is due, then turns the journal into one
    /// store batch and marks the views it changed (notified when the
    /// effects are taken).
    pub(super) fn finish(&mut self, now: u64) {
        if matches!(self.conn, Conn::Online { .. }) {
            let due: Vec<FeedPattern> = self
                .unanswered
                .iter()
                .filter(|(_, r)| r.deadline <= now)
                .map(|(p, _)| p.clone())
                .collect();
            for pattern in due {
                self.send_subscribe(pattern, now);
            }
            let timing = self.config.timing.clone();
            let awaited = self
                .outbox
                .awaited(|f| self.mirror.head(f).map(|h| h.epoch));
            self.mirror.poll_requests(
                now,
                &awaited,
                &timing,
                &mut self.rng,
                &mut self.effects.send,
            );
            // Settling a lane's head makes the next one due: measure it too.
            while self.settle_unsendable(now) {}
            self.outbox.poll_sends(
                now,
                &timing,
                self.config.max_batch,
                &mut self.rng,
                &mut self.effects.send,
            );
        }
        let journal = std::mem::take(&mut self.journal);
        let batch = self.batch_from(&journal);
        if !batch.is_empty() {
            match &mut self.effects.store {
                Some(pending) => pending.writes.extend(batch.writes),
                None => self.effects.store = Some(batch),
            }
        }
        self.stale_views.extend(journal.views);
    }

    fn batch_from(&self, journal: &Journal) -> StoreBatch {
        let mut writes = Vec::new();
        if journal.meta {
            writes.push(StoreWrite::PutMeta { meta: self.meta() });
        }
        for pattern in &journal.subscriptions {
            writes.push(if self.subscriptions.contains(pattern) {
                StoreWrite::PutSubscription {
                    pattern: pattern.clone(),
                }
            } else {
                StoreWrite::DeleteSubscription {
                    pattern: pattern.clone(),
                }
            });
        }
        for feed in &journal.cleared {
            writes.push(StoreWrite::ClearFeed { feed: feed.clone() });
        }
        for feed in &journal.heads {
            match self.mirror.head(feed) {
                Some(head) => writes.push(StoreWrite::PutFeed {
                    feed: feed.clone(),
                    head,
                }),
                None if !journal.cleared.contains(feed) => {
                    writes.push(StoreWrite::ClearFeed { feed: feed.clone() })
                }
                None => {}
            }
        }
        for (feed, id) in &journal.items {
            let mirrored = self.mirror.head(feed).is_some();
            match self.stored_item(feed, id) {
                Some(item) if mirrored => writes.push(StoreWrite::PutItem { item }),
                _ if journal.cleared.contains(feed) => {}
                _ => writes.push(StoreWrite::DeleteItem {
                    feed: feed.clone(),
                    id: id.clone(),
                }),
            }
        }
        for seq in &journal.outbox {
            writes.push(match self.outbox.get(*seq) {
                Some(entry) => StoreWrite::PutOutbox {
                    entry: entry.record.clone(),
                },
                None => StoreWrite::DeleteOutbox { seq: *seq },
            });
        }
        for id in &journal.outcomes {
            writes.push(match self.outcomes.get(id) {
                Some(outcome) => StoreWrite::PutOutcome {
                    outcome: outcome.clone(),
                },
                None => StoreWrite::DeleteOutcome { id: id.clone() },
            });
        }
        StoreBatch { writes }
    }
}
