//! A feed's items in order, each with a stable numeric order key.
//!
//! The order key lets a store keep one row per item (keyed by feed and item id)
//! and still rebuild the order at load time: placing an item between two others
//! takes the midpoint of their keys, so a move or an insert writes one row. When
//! two neighbours have no room left between them, every key of the feed is
//! reassigned ("renumbered") and every item must be written again.

use std::collections::BTreeMap;

use serde_json::Value;
use thoonk_protocol::{ItemId, Position, Rev};

/// Distance between neighbouring keys after a renumbering.
const GAP: u64 = 1 << 32;
/// The key of the first item of an empty feed and of a renumbered feed.
const FIRST: u64 = 1 << 62;

/// One item of an [`OrderedItems`] list.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderedItem {
    /// The item's JSON value.
    pub value: Value,
    /// The feed revision of the item's last change (0 for an unconfirmed local item).
    pub rev: Rev,
    /// The item's order key: items sort by ascending key.
    pub order: u64,
}

/// Where a new key goes: a free key, or a list index that needs a renumbering.
enum Slot {
    Key(u64),
    Index(usize),
}

/// The items of one feed, in feed order, addressable by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderedItems {
    by_order: BTreeMap<u64, ItemId>,
    by_id: BTreeMap<ItemId, OrderedItem>,
}

impl OrderedItems {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from items in order; a repeated id keeps its last value
    /// and the place of its last occurrence.
    pub fn from_ordered(items: impl IntoIterator<Item = (ItemId, Value, Rev)>) -> Self {
        let mut list = Self::new();
        for (id, value, rev) in items {
            list.place(id, value, rev, &Position::End);
        }
        list
    }

    /// Rebuilds a list from stored items with their order keys. Returns the list
    /// and whether the keys had to be reassigned (two items shared a key), in
    /// which case every item must be written back.
    pub fn from_keyed(items: impl IntoIterator<Item = (ItemId, Value, Rev, u64)>) -> (Self, bool) {
        let mut sorted: Vec<(u64, ItemId, Value, Rev)> = items
            .into_iter()
            .map(|(id, value, rev, order)| (order, id, value, rev))
            .collect();
        sorted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut seen = std::collections::BTreeSet::new();
        let mut clash = false;
        let mut list = Self::new();
        let mut ids = Vec::with_capacity(sorted.len());
        for (order, id, value, rev) in sorted.into_iter().rev() {
            if !seen.insert(id.clone()) {
                clash = true;
                continue;
            }
            clash |= list.by_order.insert(order, id.clone()).is_some();
            list.by_id
                .insert(id.clone(), OrderedItem { value, rev, order });
            ids.push(id);
        }
        if clash {
            ids.reverse();
            list.renumber(ids);
        }
        (list, clash)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the feed has no item.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The item with this id.
    pub fn get(&self, id: &ItemId) -> Option<&OrderedItem> {
        self.by_id.get(id)
    }

    /// True when the item is in the list.
    pub fn contains(&self, id: &ItemId) -> bool {
        self.by_id.contains_key(id)
    }

    /// The items in feed order.
    pub fn iter(&self) -> impl Iterator<Item = (&ItemId, &OrderedItem)> + '_ {
        self.by_order.values().map(move |id| (id, &self.by_id[id]))
    }

    /// The item ids in feed order.
    pub fn ids(&self) -> Vec<ItemId> {
        self.by_order.values().cloned().collect()
    }

    /// Removes an item; returns it when it was there.
    pub fn remove(&mut self, id: &ItemId) -> Option<OrderedItem> {
        let item = self.by_id.remove(id)?;
        self.by_order.remove(&item.order);
        Some(item)
    }

    /// Replaces an item's value and revision in place; false when the item is absent.
    pub fn set_value(&mut self, id: &ItemId, value: Value, rev: Rev) -> bool {
        match self.by_id.get_mut(id) {
            Some(item) => {
                item.value = value;
                item.rev = rev;
                true
            }
            None => false,
        }
    }

    /// Puts an item at `position`, removing it first from where it was.
    ///
    /// A position relative to an item that is not in the list (or to the item
    /// itself) means the end. Returns true when every key was reassigned.
    pub fn place(&mut self, id: ItemId, value: Value, rev: Rev, position: &Position) -> bool {
        self.remove(&id);
        match self.slot(position) {
            Slot::Key(order) => {
                self.by_order.insert(order, id.clone());
                self.by_id.insert(id, OrderedItem { value, rev, order });
                false
            }
            Slot::Index(index) => {
                let mut ids: Vec<ItemId> = self.by_order.values().cloned().collect();
                ids.insert(index, id.clone());
                self.by_id.insert(
                    id,
                    OrderedItem {
                        value,
                        rev,
                        order: 0,
                    },
                );
                self.renumber(ids);
                true
            }
        }
    }

    fn index_of(&self, id: &ItemId) -> usize {
        let order = self.by_id[id].order;
        self.by_order.range(..order).count()
    }

    fn slot(&self, position: &Position) -> Slot {
        let anchor = |id: &ItemId| self.by_id.get(id).map(|item| item.order);
        match position {
            Position::End => self.slot_end(),
            Position::Begin => self.slot_begin(),
            Position::After(a) => match anchor(a) {
                None => self.slot_end(),
                Some(ka) => match self.by_order.range(ka + 1..).next() {
                    None => self.slot_end(),
                    Some((&kb, _)) => self.slot_between(ka, kb, || self.index_of(a) + 1),
                },
            },
            Position::Before(b) => match anchor(b) {
                None => self.slot_end(),
                Some(kb) => match self.by_order.range(..kb).next_back() {
                    None => self.slot_begin(),
                    Some((&ka, _)) => self.slot_between(ka, kb, || self.index_of(b)),
                },
            },
        }
    }

    fn slot_end(&self) -> Slot {
        match self.by_order.keys().next_back() {
            None => Slot::Key(FIRST),
            Some(&last) => match last.checked_add(GAP) {
                Some(k) => Slot::Key(k),
                None => Slot::Index(self.len()),
            },
        }
    }

    fn slot_begin(&self) -> Slot {
        match self.by_order.keys().next() {
            None => Slot::Key(FIRST),
            Some(&first) if first > GAP => Slot::Key(first - GAP),
            Some(_) => Slot::Index(0),
        }
    }

    fn slot_between(&self, ka: u64, kb: u64, index: impl FnOnce() -> usize) -> Slot {
        if kb - ka >= 2 {
            Slot::Key(ka + (kb - ka) / 2)
        } else {
            Slot::Index(index())
        }
    }

    fn renumber(&mut self, ids: Vec<ItemId>) {
        self.by_order.clear();
        for (i, id) in ids.into_iter().enumerate() {
            let order = FIRST + (i as u64) * GAP;
            if let Some(item) = self.by_id.get_mut(&id) {
                item.order = order;
            }
            self.by_order.insert(order, id);
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

    fn names(list: &OrderedItems) -> Vec<String> {
        list.ids().iter().map(|i| i.as_str().to_owned()).collect()
    }

    #[test]
    fn positions_place_items() {
        let mut list = OrderedItems::new();
        list.place(id("b"), json!(1), 1, &Position::End);
        list.place(id("a"), json!(2), 2, &Position::Begin);
        list.place(id("d"), json!(3), 3, &Position::End);
        list.place(id("c"), json!(4), 4, &Position::After(id("b")));
        list.place(id("z"), json!(5), 5, &Position::Before(id("a")));
        assert_eq!(names(&list), ["z", "a", "b", "c", "d"]);
        list.place(id("z"), json!(6), 6, &Position::After(id("d")));
        assert_eq!(names(&list), ["a", "b", "c", "d", "z"]);
        list.place(id("q"), json!(7), 7, &Position::Before(id("missing")));
        assert_eq!(names(&list), ["a", "b", "c", "d", "z", "q"]);
        assert_eq!(list.get(&id("z")).unwrap().value, json!(6));
        assert!(list.remove(&id("c")).is_some());
        assert_eq!(names(&list), ["a", "b", "d", "z", "q"]);
    }

    #[test]
    fn crowded_keys_renumber_and_keep_order() {
        let mut list = OrderedItems::new();
        list.place(id("first"), json!(0), 0, &Position::End);
        list.place(id("last"), json!(0), 0, &Position::End);
        let mut renumbered = false;
        for i in 0..40 {
            renumbered |= list.place(
                id(&format!("x{i}")),
                json!(i),
                0,
                &Position::Before(id("last")),
            );
        }
        assert!(renumbered, "40 halvings of a 2^32 gap must exhaust it");
        let order = names(&list);
        assert_eq!(order.first().unwrap(), "first");
        assert_eq!(order.last().unwrap(), "last");
        assert_eq!(order[1], "x0");
        assert_eq!(order[40], "x39");
        let keys: Vec<u64> = list.iter().map(|(_, item)| item.order).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn keyed_rebuild_repairs_clashing_keys() {
        let (list, clash) = OrderedItems::from_keyed([
            (id("b"), json!(1), 1, 10),
            (id("a"), json!(2), 2, 10),
            (id("c"), json!(3), 3, 5),
        ]);
        assert!(clash);
        assert_eq!(names(&list), ["c", "a", "b"]);
        let (again, clash) = OrderedItems::from_keyed(
            list.iter()
                .map(|(i, item)| (i.clone(), item.value.clone(), item.rev, item.order)),
        );
        assert!(!clash);
        assert_eq!(again, list);
    }
}
