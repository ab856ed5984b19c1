//! A following tab's copy of the feed views its app shows, kept up to date
//! from the [`FeedChange`]s the leading tab broadcasts.

use thoonk_protocol::{FeedName, SortedMap};

use super::messages::FeedChange;
use crate::effects::ItemView;

/// Feed → the items of its view, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewCache {
    feeds: SortedMap<FeedName, Vec<ItemView>>,
}

impl ViewCache {
    /// Applies one change: removals, then changed items in place (new ones
    /// at the end), then the order when the change carries one.
    pub fn apply(&mut self, change: &FeedChange) {
        let items = self.feeds.entry(change.feed.clone()).or_default();
        items.retain(|item| !change.removed.contains(&item.id));
        for item in &change.changed {
            match items.iter_mut().find(|old| old.id == item.id) {
                Some(old) => *old = item.clone(),
                None => items.push(item.clone()),
            }
        }
        if let Some(order) = &change.order {
            let rank = crate::view::places(order.iter().collect());
            // Stable: ids the order does not list keep their relative place at the end.
            items.sort_by_key(|item| rank.get(&item.id).copied().unwrap_or(usize::MAX));
        }
    }

    /// Replaces a feed's items with the full view `items`.
    pub fn replace(&mut self, feed: FeedName, items: Vec<ItemView>) {
        self.feeds.insert(feed, items);
    }

    /// The items of `feed`, when it is cached.
    pub fn items(&self, feed: &FeedName) -> Option<&[ItemView]> {
        self.feeds.get(feed).map(Vec::as_slice)
    }

    /// The cached feeds.
    pub fn feeds(&self) -> impl Iterator<Item = &FeedName> {
        self.feeds.keys()
    }

    /// Keeps only the feeds `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&FeedName) -> bool) {
        self.feeds.retain(|feed, _| keep(feed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::ItemState;
    use serde_json::json;
    use thoonk_protocol::ItemId;

    fn feed() -> FeedName {
        FeedName::new("f").unwrap()
    }

    fn id(id: &str) -> ItemId {
        ItemId::new(id).unwrap()
    }

    fn item(key: &str, title: &str) -> ItemView {
        ItemView {
            id: id(key),
            value: json!({ "title": title }),
            rev: 1,
            state: ItemState::Confirmed,
        }
    }

    fn change(changed: Vec<ItemView>, removed: &[&str], order: Option<&[&str]>) -> FeedChange {
        FeedChange {
            feed: feed(),
            changed,
            removed: removed.iter().map(|r| id(r)).collect(),
            order: order.map(|o| o.iter().map(|r| id(r)).collect()),
        }
    }

    fn ids(cache: &ViewCache) -> Vec<String> {
        cache
            .items(&feed())
            .unwrap_or_default()
            .iter()
            .map(|i| i.id.as_str().to_owned())
            .collect()
    }

    #[test]
    fn changes_append_replace_remove_and_reorder() {
        let mut cache = ViewCache::default();
        cache.apply(&change(vec![item("a", "A"), item("b", "B")], &[], None));
        assert_eq!(ids(&cache), ["a", "b"]);
        cache.apply(&change(vec![item("a", "A2"), item("c", "C")], &[], None));
        assert_eq!(ids(&cache), ["a", "b", "c"]);
        assert_eq!(cache.items(&feed()).unwrap()[0].value["title"], "A2");
        cache.apply(&change(vec![], &["b"], Some(&["c", "a"])));
        assert_eq!(ids(&cache), ["c", "a"]);
        cache.apply(&change(vec![item("d", "D")], &[], Some(&["d", "c"])));
        assert_eq!(
            ids(&cache),
            ["d", "c", "a"],
            "ids missing from the order keep their place at the end"
        );
    }

    #[test]
    fn replace_and_forget_whole_feeds() {
        let mut cache = ViewCache::default();
        cache.apply(&change(vec![item("a", "A")], &[], None));
        cache.replace(feed(), vec![item("x", "X")]);
        assert_eq!(ids(&cache), ["x"]);
        cache.retain(|_| false);
        assert!(cache.items(&feed()).is_none());
    }
}
