//! The app's view of a feed: confirmed items with pending changes laid over
//! them, each marked confirmed, pending or rejected; and the difference
//! between two views, which is what the app is notified of.

use std::collections::BTreeMap;

use thoonk_protocol::{ChangeId, FeedName, ItemId};

use crate::apply::apply_operation;
use crate::effects::{ItemState, ItemView, Notification};
use crate::items::OrderedItems;
use crate::outbox::{item_of, Entry};
use crate::outcome::OutcomeRecord;

/// Builds the view of `feed` from its confirmed items, the outbox (oldest
/// first) and the stored outcomes.
pub(crate) fn build<'a>(
    feed: &FeedName,
    confirmed: Option<&OrderedItems>,
    outbox: impl Iterator<Item = &'a Entry>,
    outcomes: impl Iterator<Item = &'a OutcomeRecord>,
) -> Vec<ItemView> {
    let ours: Vec<&Entry> = outbox
        .filter(|e| e.record.op.feed() == Some(feed))
        .collect();
    let overlaid;
    let items = match (confirmed, ours.is_empty()) {
        (Some(items), true) => items,
        (confirmed, _) => {
            let mut items = confirmed.cloned().unwrap_or_default();
            for entry in &ours {
                apply_operation(&mut items, &entry.record.op);
            }
            overlaid = items;
            &overlaid
        }
    };
    // The maps below, and those of `diff`, all map an item id to a place in a
    // list: one map type for all of them keeps the bundle small.
    let mut pending_at: BTreeMap<&ItemId, usize> = BTreeMap::new();
    let mut pending: Vec<Vec<ChangeId>> = Vec::new();
    for entry in &ours {
        if let Some((_, id)) = item_of(&entry.record.op) {
            let at = *pending_at.entry(id).or_insert_with(|| {
                pending.push(Vec::new());
                pending.len() - 1
            });
            pending[at].push(entry.record.id.clone());
        }
    }
    let mut latest_at: BTreeMap<&ItemId, usize> = BTreeMap::new();
    let mut latest: Vec<&OutcomeRecord> = Vec::new();
    for record in outcomes {
        if let Some((f, id)) = item_of(&record.op) {
            if f != feed {
                continue;
            }
            match latest_at.get(id) {
                Some(&at) if latest[at].seq < record.seq => latest[at] = record,
                Some(_) => {}
                None => {
                    latest_at.insert(id, latest.len());
                    latest.push(record);
                }
            }
        }
    }
    items
        .iter()
        .map(|(id, item)| {
            let pending = pending_at.get(id).map(|&at| &pending[at]);
            let latest = latest_at.get(id).map(|&at| latest[at]);
            let state = match (pending, latest) {
                (Some(changes), _) => ItemState::Pending {
                    changes: changes.clone(),
                },
                (None, Some(r)) if r.outcome.is_failure() => ItemState::Rejected {
                    change: r.id.clone(),
                },
                _ => ItemState::Confirmed,
            };
            ItemView {
                id: id.clone(),
                value: item.value.clone(),
                rev: item.rev,
                state,
            }
        })
        .collect()
}

/// The notification that takes the app from view `old` to view `new`, if any.
pub(crate) fn diff(feed: &FeedName, old: &[ItemView], new: &[ItemView]) -> Option<Notification> {
    let old_at = places(old.iter().map(|v| &v.id).collect());
    let new_ids = places(new.iter().map(|v| &v.id).collect());
    let changed: Vec<ItemView> = new
        .iter()
        .filter(|v| old_at.get(&v.id).map(|&at| &old[at]) != Some(v))
        .cloned()
        .collect();
    let removed: Vec<ItemId> = old
        .iter()
        .filter(|v| !new_ids.contains_key(&v.id))
        .map(|v| v.id.clone())
        .collect();
    let kept = old
        .iter()
        .filter(|v| new_ids.contains_key(&v.id))
        .map(|v| &v.id);
    let added = new
        .iter()
        .filter(|v| !old_at.contains_key(&v.id))
        .map(|v| &v.id);
    let appended_only = kept.chain(added).eq(new.iter().map(|v| &v.id));
    if changed.is_empty() && removed.is_empty() && appended_only {
        return None;
    }
    Some(Notification::Items {
        feed: feed.clone(),
        changed,
        removed,
        order: (!appended_only).then(|| new.iter().map(|v| v.id.clone()).collect()),
    })
}

/// Each id's place in `ids` (the last, for an id listed twice). The one
/// function that collects such a map: each collecting call site would add
/// its own sort to the bundle.
pub(crate) fn places(ids: Vec<&ItemId>) -> BTreeMap<&ItemId, usize> {
    ids.into_iter()
        .enumerate()
        .map(|(at, id)| (id, at))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(id: &str, v: i64) -> ItemView {
        ItemView {
            id: ItemId::new(id).unwrap(),
            value: json!(v),
            rev: 1,
            state: ItemState::Confirmed,
        }
    }

    #[test]
    fn diffs_report_changes_removals_and_reorders() {
        let feed = FeedName::new("f").unwrap();
        let old = vec![view("a", 1), view("b", 1), view("c", 1)];
        assert_eq!(diff(&feed, &old, &old), None);
        let new = vec![view("a", 1), view("c", 2), view("d", 1)];
        let Some(Notification::Items {
            changed,
            removed,
            order,
            ..
        }) = diff(&feed, &old, &new)
        else {
            panic!("a change was expected")
        };
        assert_eq!(changed, [view("c", 2), view("d", 1)]);
        assert_eq!(removed, [ItemId::new("b").unwrap()]);
        assert_eq!(order, None);
        let moved = vec![view("c", 1), view("a", 1), view("b", 1)];
        let Some(Notification::Items { changed, order, .. }) = diff(&feed, &old, &moved) else {
            panic!("a move was expected")
        };
        assert!(changed.is_empty());
        assert_eq!(order.unwrap().len(), 3);
        let prepended = vec![view("z", 1), view("a", 1), view("b", 1), view("c", 1)];
        let Some(Notification::Items { order, .. }) = diff(&feed, &old, &prepended) else {
            panic!("an insert was expected")
        };
        assert!(
            order.is_some(),
            "an insert before existing items changes the order"
        );
    }
}
