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

use std::collections::BTreeMap;

use thoonk_protocol::{
    batch_frame_len, Base, ChangeId, ChangeRequest, ClientMessage, Epoch, FeedName, ItemId,
    Operation, Rev, MAX_BATCH_CHANGES, MAX_FRAME_BYTES,
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
    /// The server may know this change's id (it was sent before, or was
    /// loaded from the store): a batch change behind it may be deferred.
    known: bool,
    /// Sent behind a change the server may know: the server may have
    /// deferred it (no answer), so an earlier change's outcome releases it.
    /// A change sent behind new changes only is queued in their job or
    /// refused whole: its answer is coming, so it is never sent again early.
    deferrable: bool,
    /// The wire id the server acknowledged (on any connection): it holds
    /// that change queued or finished, so it never defers it.
    acked: Option<ChangeId>,
}

/// The lane a change is sent in. It borrows the feed's name: the outbox is
/// walked by lane at every input (the sends due, the next deadline), and a
/// copy of the name per change made those walks cost more than the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lane<'a> {
    Feed(&'a FeedName),
    Actions,
}

fn lane(op: &Operation) -> Lane<'_> {
    op.feed().map_or(Lane::Actions, Lane::Feed)
}

/// The bytes a `submit` frame has around its change.
const SUBMIT_OVERHEAD: usize = r#"{"type":"submit","change":}"#.len();

/// The length of the `submit` frame that carries `record`.
pub(crate) fn frame_len(record: &OutboxRecord) -> usize {
    ChangeRequest {
        id: record.wire_id.clone(),
        op: record.op.clone(),
        base: record.base.clone(),
    }
    .submit_frame_len()
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
    /// Adds a change loaded from the store, not yet sent on this connection
    /// (the server may know it from an earlier one).
    pub fn push(&mut self, record: OutboxRecord) {
        self.insert(record, true);
    }

    /// Adds a change just made: no server has seen its id.
    pub fn push_new(&mut self, record: OutboxRecord) {
        self.insert(record, false);
    }

    fn insert(&mut self, record: OutboxRecord, known: bool) {
        self.entries.insert(
            record.seq,
            Entry {
                record,
                send: SendState::Unsent,
                known,
                deferrable: known,
                acked: None,
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

    /// The seq of the entry currently submitted under `wire_id`. A change
    /// is first sent under its own id (`<client>:<seq>`): that entry is
    /// looked up by its seq; a resolved conflict's new id is searched for.
    pub fn seq_of_wire(&self, wire_id: &ChangeId) -> Option<u64> {
        let own = wire_id
            .0
            .rsplit_once(':')
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .and_then(|seq| self.entries.get(&seq))
            .filter(|e| &e.record.wire_id == wire_id);
        own.or_else(|| self.entries.values().find(|e| &e.record.wire_id == wire_id))
            .map(|e| e.record.seq)
    }

    /// What `poll_sends` would send at `now`: for each lane whose head (its
    /// oldest change not accepted) is unsent or whose wait ran out, the head
    /// and, for a feed's lane, the changes after it, up to `max_batch` and
    /// the frame limit; with the attempt the head is at.
    fn batches(&self, now: u64, max_batch: usize) -> Vec<(Vec<u64>, u32)> {
        let mut heads: BTreeMap<Lane<'_>, Option<usize>> = BTreeMap::new();
        // Per batch: its seqs, the head's attempt, the batch frame's length
        // so far (0 once the frame is full).
        let mut batches: Vec<(Vec<u64>, u32, usize)> = Vec::new();
        for e in self.entries.values() {
            if e.record.accepted.is_some() {
                continue;
            }
            let lane = lane(&e.record.op);
            match heads.get(&lane) {
                None => {
                    let attempt = match e.send {
                        SendState::Unsent => Some(0),
                        SendState::InFlight(r) | SendState::Acked(r) if r.deadline <= now => {
                            Some(r.attempt + 1)
                        }
                        SendState::InFlight(_) | SendState::Acked(_) => None,
                    };
                    let slot = attempt.map(|attempt| {
                        let bytes = batch_frame_len([frame_len(&e.record)]);
                        batches.push((vec![e.record.seq], attempt, bytes));
                        batches.len() - 1
                    });
                    heads.insert(lane, slot);
                }
                Some(Some(slot)) if matches!(lane, Lane::Feed(_)) => {
                    let (seqs, _, bytes) = &mut batches[*slot];
                    if seqs.len() >= max_batch.min(MAX_BATCH_CHANGES) || *bytes == 0 {
                        continue;
                    }
                    // One more change: its `submit` frame's change and a comma.
                    let more = *bytes + frame_len(&e.record) - SUBMIT_OVERHEAD + 1;
                    if more <= MAX_FRAME_BYTES {
                        seqs.push(e.record.seq);
                        *bytes = more;
                    } else {
                        // Full: the changes after it wait for the next batch.
                        *bytes = 0;
                    }
                }
                Some(_) => {}
            }
        }
        batches
            .into_iter()
            .map(|(seqs, attempt, _)| (seqs, attempt))
            .collect()
    }

    /// The seqs `poll_sends` would send at `now`.
    pub fn due(&self, now: u64, max_batch: usize) -> Vec<u64> {
        self.batches(now, max_batch)
            .into_iter()
            .flat_map(|(seqs, _)| seqs)
            .collect()
    }

    /// Sends what is due: each lane's head when unsent or when its wait ran
    /// out, in one `submit`; for a feed's lane together with the changes
    /// after it, in one `submit_batch` of up to `max_batch` changes (the
    /// server applies them in order and stops at a conflict). Every change
    /// sent waits for its `ack` until the same deadline.
    pub fn poll_sends(
        &mut self,
        now: u64,
        timing: &Timing,
        max_batch: usize,
        rng: &mut SplitMix64,
        out: &mut Vec<ClientMessage>,
    ) {
        for (seqs, attempt) in self.batches(now, max_batch) {
            let retry = Retry {
                deadline: now
                    + backoff(
                        timing.submit_timeout,
                        timing.submit_timeout_max,
                        attempt,
                        rng,
                    ),
                attempt,
            };
            let mut changes = Vec::with_capacity(seqs.len());
            // Whether a change before this one in the frame may be known.
            let mut behind_known = false;
            for seq in seqs {
                let entry = self.entries.get_mut(&seq).expect("listed above");
                entry.deferrable =
                    behind_known && entry.acked.as_ref() != Some(&entry.record.wire_id);
                behind_known |= entry.known;
                entry.known = true;
                changes.push(ChangeRequest {
                    id: entry.record.wire_id.clone(),
                    op: entry.record.op.clone(),
                    base: entry.record.base.clone(),
                });
                entry.send = SendState::InFlight(retry);
            }
            out.push(match <[ChangeRequest; 1]>::try_from(changes) {
                Ok([change]) => ClientMessage::Submit { change },
                Err(changes) => ClientMessage::SubmitBatch { changes },
            });
        }
    }

    /// After an outcome of the change `seq`: the later changes of its lane
    /// that were sent behind a change the server may have known and not
    /// acknowledged (a batch deferred them behind a change still queued or
    /// finished) go back to unsent, so they go out as soon as they lead the
    /// lane. One sent behind new changes only is not: it is in their job,
    /// and its `ack` may come after their outcomes. After a conflict
    /// (`conflict`), every later change of the lane does: the server did
    /// not attempt the changes after it.
    pub fn release_after(&mut self, seq: u64, conflict: bool) {
        let Some(head) = self.entries.get(&seq) else {
            return;
        };
        let feed = head.record.op.feed().cloned();
        for entry in self.entries.range_mut(seq + 1..).map(|(_, e)| e) {
            if entry.record.accepted.is_some() || entry.record.op.feed() != feed.as_ref() {
                continue;
            }
            match entry.send {
                SendState::InFlight(_) if entry.deferrable || conflict => {
                    entry.send = SendState::Unsent;
                }
                SendState::Acked(_) if conflict => entry.send = SendState::Unsent,
                _ => {}
            }
        }
    }

    /// Marks the change submitted under `wire_id` as queued by the server:
    /// its outcome is now awaited without resending until `outcome_timeout`.
    pub fn ack(&mut self, wire_id: &ChangeId, now: u64, timing: &Timing, rng: &mut SplitMix64) {
        if let Some(seq) = self.seq_of_wire(wire_id) {
            let entry = self.entries.get_mut(&seq).expect("found above");
            entry.acked = Some(wire_id.clone());
            entry.deferrable = false;
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

    /// The earliest resend deadline: of a lane's head (the changes behind
    /// it in its batch are resent with it, never alone).
    pub fn next_deadline(&self) -> Option<u64> {
        let mut heads = std::collections::BTreeSet::new();
        self.entries
            .values()
            .filter(|e| e.record.accepted.is_none() && heads.insert(lane(&e.record.op)))
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
                ClientMessage::SubmitBatch { changes } => changes
                    .iter()
                    .map(|c| c.id.0.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_lane_sends_its_changes_in_one_batch_in_order_and_an_action_alone() {
        let mut outbox = Outbox::default();
        outbox.push(record(1, "a", "x"));
        outbox.push(record(2, "a", "y"));
        outbox.push(record(3, "b", "x"));
        outbox.push(record(4, "a", "x"));
        let mut action = record(5, "a", "x");
        action.op = Operation::Action {
            name: "bump".into(),
            payload: json!({}),
        };
        outbox.push(action.clone());
        action.seq = 6;
        action.wire_id = ChangeId::new("c", 6);
        outbox.push(action);
        let (mut rng, t) = (SplitMix64::new(1), Timing::default());
        let mut out = Vec::new();
        outbox.poll_sends(0, &t, 500, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:1+c:2+c:4", "c:3", "c:5"]);
        assert!(matches!(out[1], ClientMessage::Submit { .. }));
        out.clear();
        outbox.poll_sends(1, &t, 500, &mut rng, &mut out);
        assert!(out.is_empty(), "nothing is due before the timeout");
        // A batch is capped: the rest of the lane waits for the next one.
        outbox.reset_sends();
        outbox.poll_sends(1, &t, 2, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:1+c:2", "c:3", "c:5"]);
    }

    #[test]
    fn only_a_lanes_head_sets_its_deadline() {
        let mut outbox = Outbox::default();
        outbox.push(record(1, "a", "x"));
        outbox.push(record(2, "a", "y"));
        let (mut rng, t) = (SplitMix64::new(1), Timing::default());
        let mut out = Vec::new();
        outbox.poll_sends(0, &t, 500, &mut rng, &mut out);
        // The head is queued; the change behind it was deferred (no ack).
        outbox.ack(&ChangeId::new("c", 1), 0, &t, &mut rng);
        let deadline = outbox.next_deadline().unwrap();
        assert!(
            deadline >= t.outcome_timeout / 2,
            "the head's outcome wait, not the deferred change's ack wait: {deadline}"
        );
        out.clear();
        outbox.poll_sends(deadline, &t, 500, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:1+c:2"], "at the deadline something is sent");
    }

    #[test]
    fn a_batch_stays_within_the_frame_limit() {
        let mut outbox = Outbox::default();
        for seq in 1..=40 {
            let mut r = record(seq, "a", &format!("i{seq}"));
            r.op = Operation::Edit {
                feed: FeedName::new("a").unwrap(),
                id: ItemId::new(format!("i{seq}")).unwrap(),
                item: json!("x".repeat(10_000)),
            };
            outbox.push(r);
        }
        let (mut rng, t) = (SplitMix64::new(1), Timing::default());
        let mut out = Vec::new();
        outbox.poll_sends(0, &t, 500, &mut rng, &mut out);
        let [ClientMessage::SubmitBatch { changes }] = &out[..] else {
            panic!("one batch expected: {out:?}");
        };
        let frame = serde_json::to_string(&out[0]).unwrap().len();
        assert!(frame <= MAX_FRAME_BYTES, "{frame} bytes");
        assert!(
            frame + 10_100 > MAX_FRAME_BYTES,
            "as many as fit: {}",
            changes.len()
        );
        assert_eq!(changes[0].id, ChangeId::new("c", 1));
    }

    #[test]
    fn after_an_outcome_deferred_changes_go_out_again_and_after_a_conflict_all_do() {
        let mut outbox = Outbox::default();
        for seq in 1..=4 {
            outbox.push(record(seq, "a", &format!("i{seq}")));
        }
        let (mut rng, t) = (SplitMix64::new(1), Timing::default());
        let mut out = Vec::new();
        outbox.poll_sends(0, &t, 500, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:1+c:2+c:3+c:4"]);
        // The server acknowledged 1 and 2 and deferred 3 and 4.
        for seq in [1, 2] {
            outbox.ack(&ChangeId::new("c", seq), 0, &t, &mut rng);
        }
        outbox.release_after(1, false);
        outbox.remove(1);
        out.clear();
        outbox.poll_sends(1, &t, 500, &mut rng, &mut out);
        assert!(out.is_empty(), "2 leads and waits for its outcome");
        // 2 conflicts: nothing after it was attempted.
        outbox.ack(&ChangeId::new("c", 3), 0, &t, &mut rng);
        outbox.release_after(2, true);
        outbox.remove(2);
        outbox.poll_sends(1, &t, 500, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:3+c:4"]);
    }

    #[test]
    fn one_change_per_lane_in_order() {
        let mut outbox = Outbox::default();
        outbox.push(record(1, "a", "x"));
        outbox.push(record(2, "a", "y"));
        outbox.push(record(3, "b", "x"));
        let (mut rng, t) = (SplitMix64::new(1), Timing::default());
        let mut out = Vec::new();
        outbox.poll_sends(0, &t, 1, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:1", "c:3"]);
        out.clear();
        outbox.poll_sends(1, &t, 1, &mut rng, &mut out);
        assert!(out.is_empty(), "nothing is due before the timeout");
        outbox.ack(&ChangeId::new("c", 1), 0, &t, &mut rng);
        let deadline = outbox.next_deadline().unwrap();
        assert!(
            deadline <= t.submit_timeout,
            "the unacknowledged change is due first"
        );
        outbox.poll_sends(deadline, &t, 1, &mut rng, &mut out);
        assert_eq!(
            sent(&out),
            ["c:3"],
            "the unacknowledged change is sent again, the acked one not"
        );
        out.clear();
        outbox.poll_sends(t.outcome_timeout, &t, 1, &mut rng, &mut out);
        assert_eq!(
            sent(&out),
            ["c:1", "c:3"],
            "an overdue outcome is asked for again"
        );
        out.clear();
        outbox.remove(1);
        outbox.poll_sends(deadline, &t, 1, &mut rng, &mut out);
        assert_eq!(sent(&out), ["c:2"], "the lane moves on after an outcome");
        outbox.reset_sends();
        out.clear();
        outbox.poll_sends(deadline, &t, 1, &mut rng, &mut out);
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
