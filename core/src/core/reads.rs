//! What the app reads: views, confirmed items, positions, pending changes
//! and stored outcomes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use thoonk_protocol::{ChangeId, FeedName, ItemId};

use crate::effects::ItemView;
use crate::outcome::OutcomeRecord;
use crate::store::{FeedHead, OutboxRecord};
use crate::view;

use super::SyncCore;

impl SyncCore {
    /// The app's view of a feed: confirmed items with pending changes laid over them.
    pub fn view(&self, feed: &FeedName) -> Vec<ItemView> {
        self.build_view(feed)
    }

    /// The feeds whose view the app was told of (or will be when the
    /// effects are taken).
    pub fn shown_feeds(&self) -> BTreeSet<FeedName> {
        // Inserted, not collected: see `SyncCore::open`.
        let mut feeds = BTreeSet::new();
        feeds.extend(self.views.keys().chain(self.stale_views.iter()).cloned());
        feeds
    }

    /// The same as [`SyncCore::view`], borrowed from the view last notified
    /// when no input changed the feed since the effects were taken (built
    /// otherwise).
    pub fn view_ref(&self, feed: &FeedName) -> Cow<'_, [ItemView]> {
        match self.views.get(feed) {
            Some(view) if !self.stale_views.contains(feed) => Cow::Borrowed(view),
            _ => Cow::Owned(self.build_view(feed)),
        }
    }

    /// The mirrored `(epoch, rev)` of a feed.
    pub fn position(&self, feed: &FeedName) -> Option<FeedHead> {
        self.mirror.head(feed)
    }

    /// The confirmed items of a feed in order: `(id, value, rev)`.
    pub fn confirmed(&self, feed: &FeedName) -> Vec<(ItemId, Value, u64)> {
        self.mirror
            .feeds
            .get(feed)
            .map(|m| {
                m.items
                    .iter()
                    .map(|(id, i)| (id.clone(), i.value.clone(), i.rev))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The mirrored feeds.
    pub fn feeds(&self) -> Vec<FeedName> {
        self.mirror
            .feeds
            .iter()
            .filter(|(_, m)| m.head.is_some())
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Changes not yet confirmed, oldest first.
    pub fn pending(&self) -> Vec<OutboxRecord> {
        self.outbox.iter().map(|e| e.record.clone()).collect()
    }

    /// The ids of the changes not yet confirmed, oldest first: what
    /// [`SyncCore::pending`] lists, without copying each change (a shell
    /// asks for them after every round).
    pub fn pending_ids(&self) -> Vec<ChangeId> {
        self.outbox.iter().map(|e| e.record.id.clone()).collect()
    }

    /// How many changes are not yet confirmed.
    pub fn pending_len(&self) -> usize {
        self.outbox.iter().count()
    }

    /// Stored outcomes, by change id.
    pub fn outcomes(&self) -> &BTreeMap<ChangeId, OutcomeRecord> {
        &self.outcomes
    }

    pub(super) fn build_view(&self, feed: &FeedName) -> Vec<ItemView> {
        view::build(
            feed,
            self.mirror.feeds.get(feed).map(|m| &m.items),
            self.outbox.iter(),
            self.outcomes.values(),
        )
    }
}
