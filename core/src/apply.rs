//! How a change moves a feed from one revision to the next, and how a local
//! operation is laid over the confirmed items.
//!
//! Both the client's mirror and any model of the server apply changes with
//! [`apply_change`], so both sides agree on the order of a feed.

use serde_json::Value;
use thoonk_protocol::{Change, ChangeOp, Operation, Position, Rev};

use crate::items::OrderedItems;

/// Applies one change that produced revision `rev`.
///
/// - `publish` puts the item at `change.position` (the end when absent),
///   replacing an item with the same id;
/// - `edit` replaces the value and, when `change.position` is given, moves the
///   item there (a time-ordered feed moves an edited item to the end); an edit
///   of an unknown item adds it at the end;
/// - `retract` removes the item (nothing when it is absent);
/// - `position` moves the item (nothing when it is absent).
///
/// Returns true when every order key of the feed was reassigned.
pub fn apply_change(items: &mut OrderedItems, rev: Rev, change: &Change) -> bool {
    let id = change.id.clone();
    match change.op {
        ChangeOp::Publish => {
            let value = change.item.clone().unwrap_or(Value::Null);
            let position = change.position.clone().unwrap_or(Position::End);
            items.place(id, value, rev, &position)
        }
        ChangeOp::Edit => {
            let value = change.item.clone().unwrap_or(Value::Null);
            match &change.position {
                Some(position) => items.place(id, value, rev, position),
                None if items.contains(&id) => {
                    items.set_value(&id, value, rev);
                    false
                }
                None => items.place(id, value, rev, &Position::End),
            }
        }
        ChangeOp::Retract => {
            items.remove(&id);
            false
        }
        ChangeOp::Position => match items.get(&id) {
            Some(item) => {
                let value = item.value.clone();
                let position = change.position.clone().unwrap_or(Position::End);
                items.place(id, value, rev, &position)
            }
            None => false,
        },
    }
}

/// Lays a pending local operation over `items` (the optimistic view).
///
/// Publish places the item (the end by default), edit replaces the value in
/// place (ignored when the item is absent), retract removes, move places an
/// existing item; a named action changes nothing locally. The item's revision
/// is kept (0 for an item that exists only locally).
pub fn apply_operation(items: &mut OrderedItems, op: &Operation) {
    match op {
        Operation::Publish {
            id, item, position, ..
        } => {
            let rev = items.get(id).map_or(0, |i| i.rev);
            let position = position.clone().unwrap_or(Position::End);
            items.place(id.clone(), item.clone(), rev, &position);
        }
        Operation::Edit { id, item, .. } => {
            let rev = items.get(id).map_or(0, |i| i.rev);
            items.set_value(id, item.clone(), rev);
        }
        Operation::Retract { id, .. } => {
            items.remove(id);
        }
        Operation::Move { id, position, .. } => {
            if let Some(existing) = items.get(id) {
                let (value, rev) = (existing.value.clone(), existing.rev);
                items.place(id.clone(), value, rev, position);
            }
        }
        Operation::Action { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use thoonk_protocol::{FeedName, ItemId};

    fn id(s: &str) -> ItemId {
        ItemId::new(s).unwrap()
    }

    fn change(op: ChangeOp, i: &str, item: Option<Value>, position: Option<Position>) -> Change {
        Change {
            op,
            id: id(i),
            item,
            position,
            prev: None,
            job: None,
        }
    }

    #[test]
    fn changes_follow_the_documented_rules() {
        let mut items = OrderedItems::new();
        apply_change(
            &mut items,
            1,
            &change(ChangeOp::Publish, "a", Some(json!(1)), None),
        );
        apply_change(
            &mut items,
            2,
            &change(
                ChangeOp::Publish,
                "b",
                Some(json!(2)),
                Some(Position::Begin),
            ),
        );
        assert_eq!(items.ids(), [id("b"), id("a")]);
        apply_change(
            &mut items,
            3,
            &change(ChangeOp::Edit, "b", Some(json!(3)), None),
        );
        assert_eq!(items.ids(), [id("b"), id("a")]);
        assert_eq!(items.get(&id("b")).unwrap().rev, 3);
        apply_change(
            &mut items,
            4,
            &change(ChangeOp::Edit, "b", Some(json!(4)), Some(Position::End)),
        );
        assert_eq!(items.ids(), [id("a"), id("b")]);
        apply_change(
            &mut items,
            5,
            &change(
                ChangeOp::Position,
                "b",
                None,
                Some(Position::Before(id("a"))),
            ),
        );
        assert_eq!(items.ids(), [id("b"), id("a")]);
        assert_eq!(items.get(&id("b")).unwrap().value, json!(4));
        apply_change(
            &mut items,
            6,
            &change(ChangeOp::Position, "zz", None, Some(Position::Begin)),
        );
        apply_change(&mut items, 7, &change(ChangeOp::Retract, "a", None, None));
        assert_eq!(items.ids(), [id("b")]);
    }

    #[test]
    fn operations_lay_over_confirmed_items() {
        let feed = FeedName::new("f").unwrap();
        let mut items = OrderedItems::from_ordered([(id("a"), json!(1), 4)]);
        apply_operation(
            &mut items,
            &Operation::Publish {
                feed: feed.clone(),
                id: id("n"),
                item: json!(9),
                position: Some(Position::Begin),
            },
        );
        apply_operation(
            &mut items,
            &Operation::Edit {
                feed: feed.clone(),
                id: id("a"),
                item: json!(2),
            },
        );
        apply_operation(
            &mut items,
            &Operation::Edit {
                feed: feed.clone(),
                id: id("ghost"),
                item: json!(2),
            },
        );
        assert_eq!(items.ids(), [id("n"), id("a")]);
        assert_eq!(items.get(&id("a")).unwrap().rev, 4);
        assert_eq!(items.get(&id("n")).unwrap().rev, 0);
        apply_operation(
            &mut items,
            &Operation::Move {
                feed: feed.clone(),
                id: id("n"),
                position: Position::End,
            },
        );
        assert_eq!(items.ids(), [id("a"), id("n")]);
        apply_operation(&mut items, &Operation::Retract { feed, id: id("a") });
        assert_eq!(items.ids(), [id("n")]);
    }
}
