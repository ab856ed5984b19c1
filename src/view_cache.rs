//! A follower tab's copy of the feed views its app shows, kept up to date
//! from the `FeedChange`s the leading tab broadcasts.
//!
//! A `FeedChange` is `{ feed, changed, removed, order }`: items that appeared
//! or changed (new ones go at the end), ids that disappeared, and the full
//! order when it changed other than by appends and removals.

use std::collections::BTreeMap;

use serde_json::Value;

fn id_of(item: &Value) -> Option<&str> {
    item.get("id").and_then(Value::as_str)
}

/// Feed name → the items of its view, in order (each `{ id, item, rev, state, changes }`).
#[derive(Debug, Default)]
pub struct ViewCache {
    feeds: BTreeMap<String, Vec<Value>>,
}

impl ViewCache {
    /// Applies one `FeedChange`; a change without a feed name is ignored.
    pub fn apply(&mut self, change: &Value) {
        let Some(feed) = change.get("feed").and_then(Value::as_str) else {
            return;
        };
        let items = self.feeds.entry(feed.to_owned()).or_default();
        if let Some(removed) = change.get("removed").and_then(Value::as_array) {
            let removed: Vec<&str> = removed.iter().filter_map(Value::as_str).collect();
            items.retain(|item| id_of(item).is_none_or(|id| !removed.contains(&id)));
        }
        for item in change
            .get("changed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = id_of(item);
            match items.iter_mut().find(|old| id_of(old) == id) {
                Some(old) => *old = item.clone(),
                None => items.push(item.clone()),
            }
        }
        if let Some(order) = change.get("order").and_then(Value::as_array) {
            let rank: BTreeMap<&str, usize> = order
                .iter()
                .filter_map(Value::as_str)
                .enumerate()
                .map(|(rank, id)| (id, rank))
                .collect();
            // Stable: ids the order does not list keep their relative place at the end.
            items.sort_by_key(|item| {
                id_of(item)
                    .and_then(|id| rank.get(id).copied())
                    .unwrap_or(usize::MAX)
            });
        }
    }

    /// Replaces a feed's items with the full view `items`.
    pub fn replace(&mut self, feed: &str, items: Vec<Value>) {
        self.feeds.insert(feed.to_owned(), items);
    }

    /// The items of `feed`, when it is cached.
    pub fn items(&self, feed: &str) -> Option<&[Value]> {
        self.feeds.get(feed).map(Vec::as_slice)
    }

    /// The cached feed names.
    pub fn feeds(&self) -> impl Iterator<Item = &str> {
        self.feeds.keys().map(String::as_str)
    }

    /// Forgets feed `feed`.
    pub fn remove(&mut self, feed: &str) {
        self.feeds.remove(feed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(cache: &ViewCache, feed: &str) -> Vec<String> {
        cache
            .items(feed)
            .unwrap_or_default()
            .iter()
            .map(|i| id_of(i).unwrap().to_owned())
            .collect()
    }

    fn item(id: &str, title: &str) -> Value {
        json!({ "id": id, "item": { "title": title }, "rev": 1, "state": "confirmed", "changes": [] })
    }

    #[test]
    fn changes_append_replace_remove_and_reorder() {
        let mut cache = ViewCache::default();
        cache.apply(&json!({ "feed": "f", "changed": [item("a", "A"), item("b", "B")], "removed": [], "order": null }));
        assert_eq!(ids(&cache, "f"), ["a", "b"]);

        cache.apply(&json!({ "feed": "f", "changed": [item("a", "A2"), item("c", "C")], "removed": [], "order": null }));
        assert_eq!(ids(&cache, "f"), ["a", "b", "c"]);
        assert_eq!(cache.items("f").unwrap()[0]["item"]["title"], "A2");

        cache.apply(&json!({ "feed": "f", "changed": [], "removed": ["b"], "order": ["c", "a"] }));
        assert_eq!(ids(&cache, "f"), ["c", "a"]);

        cache.apply(&json!({ "feed": "f", "changed": [item("d", "D")], "removed": [], "order": ["d", "c"] }));
        assert_eq!(
            ids(&cache, "f"),
            ["d", "c", "a"],
            "ids missing from the order keep their place at the end"
        );
    }

    #[test]
    fn replace_and_remove_whole_feeds() {
        let mut cache = ViewCache::default();
        cache.apply(
            &json!({ "feed": "f", "changed": [item("a", "A")], "removed": [], "order": null }),
        );
        cache.replace("f", vec![item("x", "X")]);
        assert_eq!(ids(&cache, "f"), ["x"]);
        assert_eq!(cache.feeds().collect::<Vec<_>>(), ["f"]);
        cache.remove("f");
        assert!(cache.items("f").is_none());
        cache.apply(&json!({ "changed": [item("a", "A")] }));
        assert_eq!(
            cache.feeds().count(),
            0,
            "a change without a feed is ignored"
        );
    }
}
