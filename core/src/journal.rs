//! What one input changed, so that the core can emit exactly the store writes
//! and view notifications it needs when the input is done.
//!
//! Writes are recorded by key only; the batch is built from the core's state
//! at the end of the input, so several changes to one row make one write.

use std::collections::BTreeSet;

use thoonk_protocol::{ChangeId, FeedName, FeedPattern, ItemId};

/// Keys touched since the last batch.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Feeds whose stored head and items must be deleted first.
    pub cleared: BTreeSet<FeedName>,
    /// Feeds whose head changed.
    pub heads: BTreeSet<FeedName>,
    /// Items that changed or went away.
    pub items: BTreeSet<(FeedName, ItemId)>,
    /// Outbox entries (by seq) that changed or went away.
    pub outbox: BTreeSet<u64>,
    /// Outcomes that changed or went away.
    pub outcomes: BTreeSet<ChangeId>,
    /// Subscriptions added or removed.
    pub subscriptions: BTreeSet<FeedPattern>,
    /// The client meta changed.
    pub meta: bool,
    /// Feeds whose view the app should hear about.
    pub views: BTreeSet<FeedName>,
}

impl Journal {
    /// Records that an item changed (and with it, the feed's view).
    pub fn item(&mut self, feed: &FeedName, id: &ItemId) {
        self.items.insert((feed.clone(), id.clone()));
        self.views.insert(feed.clone());
    }

    /// Records that a feed's head changed.
    pub fn head(&mut self, feed: &FeedName) {
        self.heads.insert(feed.clone());
    }

    /// Records that a feed's stored content is replaced wholesale.
    pub fn clear(&mut self, feed: &FeedName) {
        self.cleared.insert(feed.clone());
        self.heads.insert(feed.clone());
        self.views.insert(feed.clone());
    }
}
