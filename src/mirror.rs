//! The client's in-memory copy of one feed: items in order plus (epoch, rev).

use thoonk_protocol::{Change, ChangeOp, Epoch, FeedEvent, Item, ItemId, Position, Rev};

/// What happened when an event was offered to a mirror.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The change was applied; the mirror is at the event's revision.
    Yes,
    /// The event was already applied (or is older): ignored.
    Stale,
    /// Revisions are missing between the mirror and the event, or the epoch
    /// differs: ask the server for a replay from the mirror's position.
    Gap,
}

/// One feed's mirrored content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedMirror {
    /// The epoch of the mirrored history (0: nothing mirrored yet).
    pub epoch: Epoch,
    /// The last revision applied.
    pub rev: Rev,
    /// The items, in feed order.
    pub items: Vec<Item>,
}

impl FeedMirror {
    /// Replaces the content with a snapshot.
    pub fn reset(&mut self, epoch: Epoch, rev: Rev, items: Vec<Item>) {
        *self = Self { epoch, rev, items };
    }

    /// Applies one event if it is the next revision of the same epoch.
    pub fn apply(&mut self, epoch: Epoch, event: &FeedEvent) -> Applied {
        if epoch == self.epoch && event.rev <= self.rev {
            return Applied::Stale;
        }
        // An empty mirror of a feed that did not exist (epoch 0) takes the
        // first change of any epoch: nothing came before it.
        let fresh = self.epoch == 0 && self.rev == 0;
        if (epoch != self.epoch && !fresh) || event.rev != self.rev + 1 {
            return Applied::Gap;
        }
        self.epoch = epoch;
        self.apply_change(event.rev, &event.change);
        self.rev = event.rev;
        Applied::Yes
    }

    fn index_of(&self, id: &ItemId) -> Option<usize> {
        self.items.iter().position(|item| &item.id == id)
    }

    fn apply_change(&mut self, rev: Rev, change: &Change) {
        let existing = self.index_of(&change.id);
        match change.op {
            ChangeOp::Retract => {
                if let Some(index) = existing {
                    self.items.remove(index);
                }
            }
            ChangeOp::Publish | ChangeOp::Edit | ChangeOp::Position => {
                let value = change
                    .item
                    .clone()
                    .or_else(|| existing.map(|i| self.items[i].item.clone()))
                    .unwrap_or_default();
                let item = Item {
                    id: change.id.clone(),
                    item: value,
                    rev,
                };
                let position = match (&change.position, existing) {
                    (Some(position), _) => position.clone(),
                    (None, Some(index)) => {
                        self.items[index] = item;
                        return;
                    }
                    (None, None) => Position::End,
                };
                if let Some(index) = existing {
                    self.items.remove(index);
                }
                let at = match &position {
                    Position::Begin => 0,
                    Position::End => self.items.len(),
                    Position::Before(other) => self.index_of(other).unwrap_or(self.items.len()),
                    Position::After(other) => {
                        self.index_of(other).map_or(self.items.len(), |i| i + 1)
                    }
                };
                self.items.insert(at, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(s: &str) -> ItemId {
        ItemId::new(s).unwrap()
    }

    fn event(rev: Rev, op: ChangeOp, item_id: &str, position: Option<Position>) -> FeedEvent {
        FeedEvent {
            rev,
            change: Change {
                op,
                id: id(item_id),
                item: matches!(op, ChangeOp::Publish | ChangeOp::Edit).then(|| json!(item_id)),
                position,
                prev: None,
                job: None,
            },
        }
    }

    fn ids(mirror: &FeedMirror) -> Vec<&str> {
        mirror.items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn applies_in_order_and_detects_gaps() {
        let mut m = FeedMirror::default();
        m.reset(5, 0, vec![]);
        assert_eq!(
            m.apply(5, &event(1, ChangeOp::Publish, "a", None)),
            Applied::Yes
        );
        assert_eq!(
            m.apply(5, &event(1, ChangeOp::Publish, "a", None)),
            Applied::Stale
        );
        assert_eq!(
            m.apply(5, &event(3, ChangeOp::Publish, "c", None)),
            Applied::Gap
        );
        assert_eq!(
            m.apply(6, &event(2, ChangeOp::Publish, "c", None)),
            Applied::Gap
        );
        assert_eq!(
            m.apply(5, &event(2, ChangeOp::Publish, "b", Some(Position::Begin))),
            Applied::Yes
        );
        assert_eq!(ids(&m), ["b", "a"]);
        m.apply(
            5,
            &event(3, ChangeOp::Position, "b", Some(Position::After(id("a")))),
        );
        assert_eq!(ids(&m), ["a", "b"]);
        m.apply(5, &event(4, ChangeOp::Edit, "a", None));
        assert_eq!((ids(&m), m.items[0].rev), (vec!["a", "b"], 4));
        m.apply(5, &event(5, ChangeOp::Retract, "a", None));
        assert_eq!((ids(&m), m.rev), (vec!["b"], 5));
    }

    #[test]
    fn a_feed_that_did_not_exist_takes_its_first_change() {
        let mut m = FeedMirror::default();
        assert_eq!(
            m.apply(77, &event(2, ChangeOp::Publish, "b", None)),
            Applied::Gap
        );
        assert_eq!(
            m.apply(77, &event(1, ChangeOp::Publish, "a", None)),
            Applied::Yes
        );
        assert_eq!((m.epoch, m.rev, ids(&m)), (77, 1, vec!["a"]));
        assert_eq!(
            m.apply(78, &event(2, ChangeOp::Publish, "b", None)),
            Applied::Gap
        );
    }
}
