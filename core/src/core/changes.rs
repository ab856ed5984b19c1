//! Local changes: publish, edit, retract, move and actions, each queued in
//! the outbox under its own change id.

use std::collections::BTreeMap;

use serde_json::Value;
use thoonk_protocol::{
    Base, ChangeId, ChangeRequest, FeedName, ItemId, Operation, Position, MAX_FRAME_BYTES,
};

use crate::error::CoreError;
use crate::store::{FeedHead, OutboxRecord};

use super::SyncCore;

impl SyncCore {
    /// The sequence number the next local change gets (its change id is
    /// `"<client_id>:<seq>"`).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// After a reopen from the store: makes sure no sequence number below
    /// `floor` is given again, although the store never heard of it (a change
    /// whose batch failed had it; its id must never name another change).
    /// The raised number is written with the next batch.
    pub fn reserve_seqs_below(&mut self, floor: u64, now: u64) {
        if floor > self.next_seq {
            self.next_seq = floor;
            self.journal.meta = true;
            self.finish(now);
        }
    }

    /// Publishes (adds or replaces) an item at `position` (the end by default).
    pub fn publish(
        &mut self,
        feed: FeedName,
        id: ItemId,
        item: Value,
        position: Option<Position>,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(
            Operation::Publish {
                feed,
                id,
                item,
                position,
            },
            now,
        )
    }

    /// Replaces an item's value.
    pub fn edit(
        &mut self,
        feed: FeedName,
        id: ItemId,
        item: Value,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(Operation::Edit { feed, id, item }, now)
    }

    /// Removes an item.
    pub fn retract(&mut self, feed: FeedName, id: ItemId, now: u64) -> Result<ChangeId, CoreError> {
        self.change(Operation::Retract { feed, id }, now)
    }

    /// Moves an item within its feed.
    pub fn move_item(
        &mut self,
        feed: FeedName,
        id: ItemId,
        position: Position,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(Operation::Move { feed, id, position }, now)
    }

    /// Runs a named server action with a JSON payload.
    pub fn action(
        &mut self,
        name: impl Into<String>,
        payload: Value,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.change(
            Operation::Action {
                name: name.into(),
                payload,
            },
            now,
        )
    }

    /// Makes any local change: it gets its change id and base revision, goes
    /// into the outbox and the overlay in the same store batch, and is sent
    /// when its lane is free.
    pub fn change(&mut self, op: Operation, now: u64) -> Result<ChangeId, CoreError> {
        self.queue_change(None, op, now)
    }

    /// Makes a local change under an id the caller chose (`"<client_id>:<suffix>"`,
    /// unique among this client's changes), e.g. another tab forwarding a
    /// change it made. Idempotent: when a change with this id is already in the
    /// outbox or has a stored outcome, nothing happens, so a caller that does
    /// not know whether its first attempt was stored may simply try again.
    pub fn change_with_id(
        &mut self,
        id: ChangeId,
        op: Operation,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        let own =
            id.0.strip_prefix(self.client_id.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|suffix| !suffix.is_empty() && suffix.len() <= 64);
        if !own {
            return Err(CoreError::Usage(format!(
                "change id {:?} must be `{}:` followed by 1-64 bytes",
                id.0, self.client_id
            )));
        }
        if self.outcomes.contains_key(&id) || self.outbox.iter().any(|e| e.record.id == id) {
            return Ok(id);
        }
        self.queue_change(Some(id), op, now)
    }

    fn queue_change(
        &mut self,
        id: Option<ChangeId>,
        op: Operation,
        now: u64,
    ) -> Result<ChangeId, CoreError> {
        self.check_usable()?;
        if let Operation::Action { name, .. } = &op {
            if name.is_empty() {
                return Err(CoreError::Usage("an action needs a name".into()));
            }
        }
        let base = op
            .feed()
            .map(|f| {
                let head = self.mirror.head(f).unwrap_or(FeedHead { epoch: 0, rev: 0 });
                BTreeMap::from([(f.clone(), Base::at(head.epoch, head.rev))])
            })
            .unwrap_or_default();
        // Refused now, or it would wait in the outbox for an outcome the
        // server can never give (it does not read the frame). Measured with
        // the longest id the change can get.
        let change = ChangeRequest {
            id: id
                .clone()
                .unwrap_or_else(|| ChangeId::new(&self.client_id, u64::MAX)),
            op,
            base,
        };
        let bytes = change.submit_frame_len();
        if bytes > MAX_FRAME_BYTES {
            return Err(CoreError::TooLarge {
                bytes,
                limit: MAX_FRAME_BYTES,
            });
        }
        let ChangeRequest { op, base, .. } = change;
        let seq = self.allocate_seq();
        // A chosen id may have reached a server before (another tab's).
        let chosen = id.is_some();
        let id = id.unwrap_or_else(|| ChangeId::new(&self.client_id, seq));
        if let Some(feed) = op.feed() {
            self.journal.views.insert(feed.clone());
        }
        let record = OutboxRecord {
            seq,
            id: id.clone(),
            wire_id: id.clone(),
            op,
            base,
            created_at: now,
            conflicts: 0,
            resolution: None,
            accepted: None,
        };
        if chosen {
            self.outbox.push(record);
        } else {
            self.outbox.push_new(record);
        }
        self.journal.outbox.insert(seq);
        self.finish(now);
        Ok(id)
    }

    pub(super) fn allocate_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.journal.meta = true;
        seq
    }
}
