//! Local changes waiting to be confirmed, and when to (re)send them.
//!
//! Changes are sent in creation order, one at a time per *lane*: a lane is
//! the feed a change writes (or, for named actions, the action lane). The
//! head of a lane is its oldest change the server has not accepted yet; later
//! changes of the lane wait for its outcome, so a rejected, conflicting or
//! stuck change never holds up another feed. A change that got no `ack` is
//! sent again with backoff and jitter. An acknowledged one is only asked
//! about again when its outcome is overdue (`outcome_timeout`, with backoff),
//! and after a reconnect every change without an outcome is sent again: the
//! server's exactly-once ledger answers a known id with its recorded outcome
//! instead of applying it twice, so a resend is a question, never a second
//! write.

use std::collections::{BTreeMap, BTreeSet};

use thoonk_protocol::{
    Base, ChangeId, ChangeRequest, ClientMessage, Epoch, FeedName, ItemId, Operation, Rev,
};

use crate::config::Timing;
use crate::mirror::Retry;
use crate::rng::{backoff, SplitMix64};
use crate::store::OutboxRecord;

/// Where a change stands on the current connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendState {
    /// Not sent on this connection.
    Unsent,
    /// Sent; sent again at the deadline unless acknowledged.
    InFlight(Retry),
    /// The server has queued it; its outcome is due by the deadline.
    Acked(Retry),
}

/// One outbox entry in memory.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The stored part.
    pub record: OutboxRecord,
    /// The transient part.
    pub send: SendState,
}

/// The lane a change is sent in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Feed(FeedName),
    Actions,
}

fn lane(op: &Operation) -> Lane {
    op.feed().map_or(Lane::Actions, |f| Lane::Feed(f.clone()))
}

/// The item a single-item operation writes.
pub(crate) fn item_of(op: &Operation) -> Option<(&FeedName, &ItemId)> {
    match op {
        Operation::Publish { feed, id, .. }
        | Operation::Edit { feed, id, .. }
        | Operation::Retract { feed, id }
        | Operation::Move { feed, id, .. } => Some((feed, id)),
        Operation::Action { .. } => None,
    }
}

/// The outbox, by seq.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbox {
    entries: BTreeMap<u64, Entry>,
}

impl Outbox {
    /// Adds a change (new or loaded from the store), not yet sent.
    pub fn push(&mut self, record: OutboxRecord) {
        self.entries.insert(
            record.seq,
            Entry {
                record,
                send: SendState::Unsent,
            },
        );
    }

    /// The entry with this seq.
    pub fn get(&self, seq: u64) -> Option<&Entry> {
        self.entries.get(&seq)
    }

    /// The entry with this seq, to change it.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&seq)
    }

    /// Removes an entry.
    pub fn remove(&mut self, seq: u64) -> Option<Entry> {
        self.entries.remove(&seq)
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The seq of the entry currently submitted under `wire_id`.
    pub fn seq_of_wire(&self, wire_id: &ChangeId) -> Option<u64> {
        self.entries
            .values()
            .find(|e| &e.record.wire_id == wire_id)
            .map(|e| e.record.seq)
    }

    /// The seqs `poll_sends` would send at `now`: each lane's head when
    /// unsent or when its wait ran out.
    pub fn due(&self, now: u64) -> Vec<u64> {
        let mut busy = BTreeSet::new();
        self.entries
            .values()
            .filter(|e| e.record.accepted.is_none() && busy.insert(lane(&e.record.op)))
            .filter(|e| match e.send {
                SendState::Unsent => true,
                SendState::InFlight(r) | SendState::Acked(r) => r.deadline <= now,
            })
            .map(|e| e.record.seq)
            .collect()
    }

    /// Sends what is due: each lane's head when unsent or when its wait ran out.
    pub fn poll_sends(
        &mut self,
        now: u64,
        timing: &Timing,
        rng: &mut SplitMix64,
        out: &mut Vec<ClientMessage>,
    ) {
        let mut busy = BTreeSet::new();
        for entry in self.entries.values_mut() {
            if entry.record.accepted.is_some() || !busy.insert(lane(&entry.record.op)) {
                continue;
            }
            let attempt = match entry.send {
                SendState::Unsent => 0,
                SendState::InFlight(r) | SendState::Acked(r) if r.deadline <= now => r.attempt + 1,
                SendState::InFlight(_) | SendState::Acked(_) => continue,
            };
            out.push(ClientMessage::Submit {
                change: ChangeRequest {
                    id: entry.record.wire_id.clone(),
                    op: entry.record.op.clone(),
                    base: entry.record.base.clone(),
                },
            });
            entry.send = SendState::InFlight(Retry {
                deadline: now
                    + backoff(
                        timing.submit_timeout,
                        timing.submit_timeout_max,
                        attempt,
                        rng,
                    ),
                attempt,
            });
        }
    }

    /// Marks the change submitted under `wire_id` as queued by the server:
    /// its outcome is now awaited without resending until `outcome_timeout`.
    pub fn ack(&mut self, wire_id: &ChangeId, now: u64, timing: &Timing, rng: &mut SplitMix64) {
        if let Some(seq) = self.seq_of_wire(wire_id) {
            let entry = self.entries.get_mut(&seq).expect("found above");
            if let SendState::InFlight(r) = entry.send {
                entry.send = SendState::Acked(Retry {
                    deadline: now
                        + backoff(
                            timing.outcome_timeout,
                            timing.submit_timeout_max.max(timing.outcome_timeout),
                            r.attempt,
                            rng,
                        ),
                    attempt: r.attempt,
                });
            }
        }
    }

    /// Forgets what was sent on a connection that is gone.
    pub fn reset_sends(&mut self) {
        for entry in self.entries.values_mut() {
            entry.send = SendState::Unsent;
        }
    }

    /// The earliest resend deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.record.accepted.is_none())
            .filter_map(|e| match e.send {
                SendState::InFlight(r) | SendState::Acked(r) => Some(r.deadline),
                SendState::Unsent => None,
            })
            .min()
    }

    /// After the change `seq` was accepted at `revs`: later changes of its lane
    /// that write the same item were made on top of it, so their base moves up
    /// to the revision it produced. Not done for a change whose accepted value
    /// came out of a conflict resolution (the later change never saw that
    /// value, so it must meet the conflict itself). Returns the seqs changed.
    /// The new base is of the epoch the mirror was in (`epochs`): it only
    /// moves forward, and not at all when the mirror had no epoch.
    pub fn rebase_after(
        &mut self,
        seq: u64,
        revs: &BTreeMap<FeedName, Rev>,
        epochs: &BTreeMap<FeedName, Epoch>,
    ) -> Vec<u64> {
        let Some(accepted) = self.entries.get(&seq) else {
            return Vec::new();
        };
        if accepted.record.resolution.is_some() {
            return Vec::new();
        }
        let Some((feed, id)) = item_of(&accepted.record.op) else {
            return Vec::new();
        };
        let (feed, id) = (feed.clone(), id.clone());
        let Some(&rev) = revs.get(&feed) else {
            return Vec::new();
        };
        let Some(&epoch) = epochs.get(&feed) else {
            return Vec::new();
        };
        let lifted = Base::at(epoch, rev);
        let mut changed = Vec::new();
        for (later, entry) in self.entries.range_mut(seq + 1..) {
            if entry.record.accepted.is_none() && item_of(&entry.record.op) == Some((&feed, &id)) {
                let base = entry.record.base.entry(feed.clone()).or_insert(lifted);
                if (base.epoch().unwrap_or(0), base.rev()) < (epoch, rev) {
                    *base = lifted;
                    changed.push(*later);
                }
            }
        }
        changed
    }

    /// For each feed, the highest revision an accepted change produced and the
    /// mirror has not shown yet, as long as the mirror is in the same epoch.
    pub fn awaited(&self, epoch_of: impl Fn(&FeedName) -> Option<u64>) -> BTreeMap<FeedName, Rev> {
        let mut awaited = BTreeMap::new();
        for entry in self.entries.values() {
            let Some(accepted) = &entry.record.accepted else {
                continue;
            };
            for (feed, rev) in &accepted.revs {
                if epoch_of(feed).is_some() && epoch_of(feed) == accepted.epochs.get(feed).copied()
                {
                    let slot = awaited.entry(feed.clone()).or_insert(0);
                    *slot = (*slot).max(*rev);
                }
            }
        }
        awaited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: u64, feed: &str, id: &str) -> OutboxRecord {
        let feed = FeedName::new(feed).unwrap();
        OutboxRecord {
            seq,
            id: ChangeId::new("c", seq),
            wire_id: ChangeId::new("c", seq),
            op: Operation::Edit {
                feed: feed.clone(),
                id: ItemId::new(id).unwrap(),
                item: json!(seq),
            },
            base: BTreeMap::from([(feed, Base::at(5, 1))]),
            created_at: 0,
            conflicts: 0,
            resolution: None,
            accepted: None,
        }
    }

    fn sent(out: &[ClientMessage]) -> Vec<String> {
        out.iter()
            .map(|m| match m {
                ClientMessage::Submit { change } => change.id.0.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_change_per_lane_in_order() {
        let mut outbox = Outbox::default();
        outbox.push(record(1, "a", "x"));
        outbox.push(record(2, "a", "y"));
        outbox.push(record(3, "b", "x"));
        let (mut rng, t) = (SplitMix64::new(1), Timing::default());
        let mut out = Vec::new();
        outbox.poll_sends(0, &t, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:1", "c:3"]);
        out.clear();
        outbox.poll_sends(1, &t, &mut rng, &mut out);
        assert!(out.is_empty(), "nothing is due before the timeout");
        outbox.ack(&ChangeId::new("c", 1), 0, &t, &mut rng);
        let deadline = outbox.next_deadline().unwrap();
        assert!(
            deadline <= t.submit_timeout,
            "the unacknowledged change is due first"
        );
        outbox.poll_sends(deadline, &t, &mut rng, &mut out);
        assert_eq!(
            sent(&out),
            ["c:3"],
            "the unacknowledged change is sent again, the acked one not"
        );
        out.clear();
        outbox.poll_sends(t.outcome_timeout, &t, &mut rng, &mut out);
        assert_eq!(
            sent(&out),
            ["c:1", "c:3"],
            "an overdue outcome is asked for again"
        );
        out.clear();
        outbox.remove(1);
        outbox.poll_sends(deadline, &t, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:2"], "the lane moves on after an outcome");
        outbox.reset_sends();
        out.clear();
        outbox.poll_sends(deadline, &t, &mut rng, &mut out);
        assert_eq!(
            sent(&out),
            ["c:2", "c:3"],
            "a new connection sends everything again"
        );
    }

    #[test]
    fn accepted_changes_lift_the_base_of_later_changes_to_the_same_item() {
        let mut outbox = Outbox::default();
        outbox.push(record(1, "a", "x"));
        outbox.push(record(2, "a", "x"));
        outbox.push(record(3, "a", "y"));
        let revs = BTreeMap::from([(FeedName::new("a").unwrap(), 7)]);
        let epochs = BTreeMap::from([(FeedName::new("a").unwrap(), 5)]);
        assert_eq!(outbox.rebase_after(1, &revs, &epochs), [2]);
        assert_eq!(
            outbox.get(2).unwrap().record.base.values().next(),
            Some(&Base::at(5, 7))
        );
        assert_eq!(
            outbox.get(3).unwrap().record.base.values().next(),
            Some(&Base::at(5, 1))
        );
    }
}
