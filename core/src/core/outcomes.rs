//! Outcomes and conflicts: settling a change when the server answers, when
//! it can never be sent, or when the mirror shows it applied.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use thoonk_protocol::{
    Base, ChangeId, ChangeRequest, ErrorCode, FeedName, ItemId, Operation, Outcome, MAX_FRAME_BYTES,
};

use crate::effects::Notification;
use crate::error::CoreError;
use crate::outbox::{frame_len, item_of};
use crate::outcome::{ChangeOutcome, ConflictCase, OutcomeRecord, ResolutionKind};
use crate::resolver::Resolution;
use crate::store::{AcceptedRecord, FeedHead, OutboxRecord};

use super::SyncCore;

/// A change is given up when its age reaches the ledger window less this
/// fraction of it (1/10): room for a resend in flight to arrive while the
/// server still remembers the id.
const LEDGER_MARGIN: u64 = 10;

impl SyncCore {
    /// Forgets a stored outcome (the app has shown it); an item it marked
    /// rejected goes back to its confirmed state.
    pub fn dismiss_outcome(&mut self, id: &ChangeId, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if let Some(record) = self.outcomes.remove(id) {
            self.journal.outcomes.insert(id.clone());
            if let Some(feed) = record.op.feed() {
                self.journal.views.insert(feed.clone());
            }
        }
        self.finish(now);
        Ok(())
    }

    pub(super) fn on_outcome(
        &mut self,
        wire: &ChangeId,
        outcome: Outcome,
        now: u64,
    ) -> Result<(), CoreError> {
        let Some(seq) = self.outbox.seq_of_wire(wire) else {
            return Ok(());
        };
        let entry = self.outbox.get(seq).expect("found above");
        if entry.record.accepted.is_some() {
            return Ok(());
        }
        match outcome {
            Outcome::Accepted {
                result,
                revs,
                epochs: told,
            } => {
                let final_outcome = match entry.record.resolution {
                    None => ChangeOutcome::Accepted {
                        result,
                        revs: revs.clone(),
                    },
                    Some(resolution) => ChangeOutcome::ConflictResolved {
                        resolution,
                        result,
                        revs: revs.clone(),
                    },
                };
                // The epochs the server names (a late outcome may be of an
                // epoch the mirror has left), else the mirror's.
                let epochs = revs
                    .keys()
                    .filter_map(|f| {
                        let epoch = told
                            .get(f)
                            .copied()
                            .or_else(|| self.mirror.head(f).map(|h| h.epoch))?;
                        Some((f.clone(), epoch))
                    })
                    .collect();
                self.record_outcome(seq, final_outcome, now);
                for later in self.outbox.rebase_after(seq, &revs, &epochs) {
                    self.journal.outbox.insert(later);
                }
                self.outbox.release_after(seq, false);
                let entry = self.outbox.get_mut(seq).expect("found above");
                entry.record.accepted = Some(AcceptedRecord { revs, epochs });
                self.journal.outbox.insert(seq);
                Ok(())
            }
            Outcome::Rejected { code, message } => {
                self.record_outcome(seq, ChangeOutcome::Rejected { code, message }, now);
                self.outbox.release_after(seq, false);
                self.drop_entry(seq);
                Ok(())
            }
            Outcome::Conflict {
                feed,
                id,
                base,
                unknown_base,
                epoch,
                current,
                rev,
                ..
            } => {
                // A server that does not name the epoch: the mirror's, if any.
                let epoch = match epoch {
                    0 => self.mirror.head(&feed).map_or(0, |h| h.epoch),
                    e => e,
                };
                // The server did not attempt the changes after it in its batch.
                self.outbox.release_after(seq, true);
                let conflict = Conflict {
                    base: (!unknown_base).then_some(base),
                    current,
                    at: FeedHead { epoch, rev },
                };
                self.on_conflict(seq, feed, id, conflict, now)
            }
        }
    }

    fn on_conflict(
        &mut self,
        seq: u64,
        feed: FeedName,
        id: ItemId,
        conflict: Conflict,
        now: u64,
    ) -> Result<(), CoreError> {
        let Conflict { base, current, at } = conflict;
        let rev = at.rev;
        let record = self.outbox.get(seq).expect("caller checked").record.clone();
        let ours = match &record.op {
            Operation::Publish { item, .. } | Operation::Edit { item, .. } => Some(item.clone()),
            Operation::Retract { .. } => None,
            Operation::Move { .. } | Operation::Action { .. } => current.clone(),
        };
        let case = ConflictCase {
            change: record.id.clone(),
            feed: feed.clone(),
            id: id.clone(),
            unknown_base: base.is_none(),
            base: base.flatten(),
            ours,
            theirs: current.clone(),
            rev,
        };
        let unresolved = |case: ConflictCase, reason: String| ChangeOutcome::Unresolved {
            conflict: case,
            reason,
        };
        if record.conflicts + 1 > self.config.max_conflict_rounds {
            let reason = format!("ran into {} conflicts in a row", record.conflicts + 1);
            self.record_outcome(seq, unresolved(case, reason), now);
            self.drop_entry(seq);
            return Ok(());
        }
        let resolution = match &record.op {
            Operation::Action { .. } => {
                Resolution::Unresolved("a named action is not merged".into())
            }
            Operation::Move { .. } => Resolution::KeepOurs,
            _ if item_of(&record.op) != Some((&feed, &id)) => {
                Resolution::Unresolved("the conflict names another item".into())
            }
            _ => match self.resolver.resolve(&case) {
                Ok(resolution) => resolution,
                Err(err) => {
                    self.record_outcome(seq, unresolved(case, err.to_string()), now);
                    self.drop_entry(seq);
                    return Err(err.into());
                }
            },
        };
        let settled = |resolution| ChangeOutcome::ConflictResolved {
            resolution,
            result: Value::Null,
            revs: BTreeMap::new(),
        };
        let (value, kind) = match resolution {
            Resolution::KeepTheirs => {
                self.record_outcome(seq, settled(ResolutionKind::KeptTheirs), now);
                self.drop_entry(seq);
                return Ok(());
            }
            Resolution::DropOurs => {
                self.record_outcome(seq, settled(ResolutionKind::DroppedOurs), now);
                self.drop_entry(seq);
                return Ok(());
            }
            Resolution::Unresolved(reason) => {
                self.record_outcome(seq, unresolved(case, reason), now);
                self.drop_entry(seq);
                return Ok(());
            }
            Resolution::KeepOurs => (case.ours.clone(), ResolutionKind::KeptOurs),
            Resolution::Merged(value) => (value, ResolutionKind::Merged),
        };
        let op = match (&record.op, value) {
            (Operation::Move { .. }, _) => record.op.clone(),
            (Operation::Publish { position, .. }, Some(item)) => Operation::Publish {
                feed: feed.clone(),
                id,
                item,
                position: position.clone(),
            },
            (_, Some(item)) if current.is_some() => Operation::Edit {
                feed: feed.clone(),
                id,
                item,
            },
            (_, Some(item)) => Operation::Publish {
                feed: feed.clone(),
                id,
                item,
                position: None,
            },
            (_, None) if current.is_some() => Operation::Retract {
                feed: feed.clone(),
                id,
            },
            (_, None) => {
                self.record_outcome(seq, settled(ResolutionKind::KeptTheirs), now);
                self.drop_entry(seq);
                return Ok(());
            }
        };
        let base = BTreeMap::from([(feed.clone(), Base::at(at.epoch, at.rev))]);
        // Measured with the longest id the resubmission can get: a value the
        // server would refuse to read settles now instead of being resent forever.
        let bytes = ChangeRequest {
            id: ChangeId::new(&self.client_id, u64::MAX),
            op: op.clone(),
            base: base.clone(),
        }
        .submit_frame_len();
        if bytes > MAX_FRAME_BYTES {
            let reason = format!(
                "too_large: the resolved change needs {bytes} bytes, over the \
                 {MAX_FRAME_BYTES}-byte frame limit"
            );
            self.record_outcome(seq, unresolved(case, reason), now);
            self.drop_entry(seq);
            return Ok(());
        }
        let wire_seq = self.allocate_seq();
        let wire_id = ChangeId::new(&self.client_id, wire_seq);
        let entry = self.outbox.get_mut(seq).expect("caller checked");
        entry.record.wire_id = wire_id;
        entry.record.op = op;
        entry.record.base = base;
        entry.record.conflicts += 1;
        entry.record.resolution = Some(kind);
        entry.send = crate::outbox::SendState::Unsent;
        self.journal.outbox.insert(seq);
        self.journal.views.insert(feed);
        Ok(())
    }

    /// Settles the changes that must not be sent (again): one whose `submit`
    /// frame exceeds the frame limit (the server would not read it, so it
    /// could never get an outcome), and one queued longer than the server's
    /// exactly-once window (the ledger may have forgotten its id, and a
    /// resend could apply it twice). Accepted changes are never resent, so
    /// they stay.
    /// True when it settled something.
    pub(super) fn settle_unsendable(&mut self, now: u64) -> bool {
        let window = self.ledger_window;
        // Only what is about to be sent is measured (a serialization each).
        let due: BTreeSet<u64> = self
            .outbox
            .due(now, self.config.max_batch)
            .into_iter()
            .collect();
        let doomed: Vec<(u64, ChangeOutcome)> = self
            .outbox
            .iter()
            .filter(|e| e.record.accepted.is_none())
            .filter_map(|e| {
                let r = &e.record;
                let bytes = if due.contains(&r.seq) {
                    frame_len(r)
                } else {
                    0
                };
                let age = now.saturating_sub(r.created_at);
                let (code, reason, case) = if bytes > MAX_FRAME_BYTES {
                    (
                        ErrorCode::TooLarge,
                        format!(
                            "too_large: the change needs {bytes} bytes, over the \
                             {MAX_FRAME_BYTES}-byte frame limit"
                        ),
                        // A resolved value is reported with its conflict.
                        r.resolution.and_then(|_| self.case_of(r)),
                    )
                } else if window.is_some_and(|w| age >= w - w / LEDGER_MARGIN) {
                    (
                        ErrorCode::Expired,
                        format!(
                            "expired: queued {age} ms ago, too close to the server's \
                             exactly-once window ({} ms): it may or may not have been \
                             applied, and resending could apply it twice",
                            window.unwrap_or_default()
                        ),
                        self.case_of(r),
                    )
                } else {
                    return None;
                };
                Some((r.seq, unsendable(code, reason, case)))
            })
            .collect();
        let settled = !doomed.is_empty();
        for (seq, outcome) in doomed {
            self.record_outcome(seq, outcome, now);
            self.drop_entry(seq);
        }
        settled
    }

    /// A `too_large` error names the size of the frame the server would not
    /// read (`frame of <n> bytes exceeds …`): a change whose `submit` frame
    /// has that size can never get an outcome, so it settles `too_large`
    /// instead of holding its lane forever (a server whose limit is below
    /// `MAX_FRAME_BYTES`).
    pub(super) fn settle_refused_frame(&mut self, message: &str, now: u64) {
        let Some(bytes) = message
            .strip_prefix("frame of ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let refused: Vec<u64> = self
            .outbox
            .iter()
            .filter(|e| e.record.accepted.is_none())
            .filter(|e| frame_len(&e.record) == bytes)
            .map(|e| e.record.seq)
            .collect();
        for seq in refused {
            let record = self.outbox.get(seq).expect("listed above").record.clone();
            let reason = format!("too_large: the server refused its {bytes}-byte frame: {message}");
            let case = record.resolution.and_then(|_| self.case_of(&record));
            self.record_outcome(seq, unsendable(ErrorCode::TooLarge, reason, case), now);
            self.drop_entry(seq);
        }
    }

    /// The case an item change that cannot be sent is reported with: its
    /// value against the mirror's, on an unknown base. `None` for a change
    /// that writes no single item (a named action: reported rejected).
    fn case_of(&self, record: &OutboxRecord) -> Option<ConflictCase> {
        let (feed, id) = item_of(&record.op)?;
        let mirrored = self.mirror.feeds.get(feed);
        Some(ConflictCase {
            change: record.id.clone(),
            feed: feed.clone(),
            id: id.clone(),
            base: None,
            unknown_base: true,
            ours: match &record.op {
                Operation::Publish { item, .. } | Operation::Edit { item, .. } => {
                    Some(item.clone())
                }
                _ => None,
            },
            theirs: mirrored.and_then(|m| m.items.get(id).map(|i| i.value.clone())),
            rev: self.mirror.head(feed).map_or(0, |h| h.rev),
        })
    }

    fn record_outcome(&mut self, seq: u64, outcome: ChangeOutcome, now: u64) {
        let record = &self.outbox.get(seq).expect("caller checked").record;
        let stored = OutcomeRecord {
            id: record.id.clone(),
            seq,
            wire_id: record.wire_id.clone(),
            op: record.op.clone(),
            outcome: outcome.clone(),
            at: now,
        };
        if let Some(feed) = record.op.feed() {
            self.journal.views.insert(feed.clone());
        }
        self.effects.notify.push(Notification::Outcome {
            change: stored.id.clone(),
            outcome,
        });
        self.journal.outcomes.insert(stored.id.clone());
        self.outcomes.insert(stored.id.clone(), stored);
    }

    pub(super) fn drop_entry(&mut self, seq: u64) {
        if let Some(entry) = self.outbox.remove(seq) {
            self.journal.outbox.insert(seq);
            if let Some(feed) = entry.record.op.feed() {
                self.journal.views.insert(feed.clone());
            }
        }
    }

    /// Accepted changes leave the overlay once the mirror shows them: it
    /// reached the revisions they produced, or moved to another epoch.
    pub(super) fn settle_accepted(&mut self) {
        let done: Vec<u64> = self
            .outbox
            .iter()
            .filter_map(|e| {
                let accepted = e.record.accepted.as_ref()?;
                let shown = accepted
                    .revs
                    .iter()
                    .all(|(feed, rev)| match self.mirror.head(feed) {
                        Some(head) => {
                            head.rev >= *rev || accepted.epochs.get(feed) != Some(&head.epoch)
                        }
                        None => !self.follows(feed),
                    });
                shown.then_some(e.record.seq)
            })
            .collect();
        for seq in done {
            self.drop_entry(seq);
        }
    }
}

/// The outcome of a change that must not be sent: unresolved with its
/// conflict case when it has one, else rejected with `code`.
fn unsendable(code: ErrorCode, reason: String, case: Option<ConflictCase>) -> ChangeOutcome {
    match case {
        Some(conflict) => ChangeOutcome::Unresolved { conflict, reason },
        None => ChangeOutcome::Rejected {
            code,
            message: reason,
        },
    }
}

/// What a `conflict` outcome says, as the core uses it.
struct Conflict {
    /// The item at the base: `None` when the base is unknown.
    base: Option<Option<Value>>,
    /// The item now (`None`: absent).
    current: Option<Value>,
    /// The feed's epoch and revision the current value is of.
    at: FeedHead,
}
