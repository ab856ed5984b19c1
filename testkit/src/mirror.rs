//! The reference mirror: what a client holds of each feed, built only from
//! the frames it received (or from a change log) with the sync core's own
//! change rules ([`apply_change`]), checking as it goes that every feed's
//! revisions arrive dense, in order and once, under one epoch between
//! snapshots.

use std::collections::BTreeMap;

use thoonk_protocol::{Epoch, FeedEvent, FeedName, Item, Rev, ServerMessage};
use thoonk_sync_core::{apply_change, OrderedItems};

/// What a client holds of one feed, built only from the frames it received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReceivedFeed {
    /// The epoch of the last snapshot or change.
    pub epoch: Epoch,
    /// The last revision applied.
    pub rev: Rev,
    /// The items, in the feed's order.
    pub items: OrderedItems,
    /// Every change applied since the last snapshot, in the order applied.
    pub events: Vec<FeedEvent>,
    /// Snapshots taken, in order, as (epoch, rev).
    pub snapshots: Vec<(Epoch, Rev)>,
}

impl ReceivedFeed {
    /// A feed built by applying a whole change log from revision 1, as a
    /// reader of the log sees it.
    pub fn replayed(feed: &FeedName, log: &[FeedEvent]) -> Self {
        let mut replayed = Self::default();
        for event in log {
            replayed.apply(feed, 0, event);
        }
        replayed
    }

    /// Applies the change that made revision `event.rev` under `epoch`;
    /// panics on a gap, a repeat or a change of epoch without a snapshot.
    pub fn apply(&mut self, feed: &FeedName, epoch: Epoch, event: &FeedEvent) {
        // A snapshot of a feed that did not exist yet reads (0, 0); its first
        // change may then come under any epoch.
        let fresh = self.epoch == 0 && self.rev == 0;
        assert!(
            epoch == self.epoch || fresh,
            "{feed}: change of epoch {epoch} while mirroring epoch {} (rev {}) without a snapshot",
            self.epoch,
            self.rev
        );
        assert_eq!(
            event.rev,
            self.rev + 1,
            "{feed}: revision {} arrived after {} (epoch {epoch}): a gap or a repeat",
            event.rev,
            self.rev
        );
        self.epoch = epoch;
        self.rev = event.rev;
        apply_change(&mut self.items, event.rev, &event.change);
        self.events.push(event.clone());
    }

    /// The items in order, as the protocol carries them.
    pub fn items(&self) -> Vec<Item> {
        self.items
            .iter()
            .map(|(id, item)| Item {
                id: id.clone(),
                item: item.value.clone(),
                rev: item.rev,
            })
            .collect()
    }

    /// The items in order as (id, value).
    pub fn values(&self) -> Vec<(String, serde_json::Value)> {
        self.items
            .iter()
            .map(|(id, item)| (id.to_string(), item.value.clone()))
            .collect()
    }

    /// The item ids in order.
    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|(id, _)| id.to_string()).collect()
    }
}

/// Every feed a client holds; checks each frame against what came before.
#[derive(Debug, Default)]
pub struct ReceivedFeeds {
    /// Each feed by name.
    pub feeds: BTreeMap<FeedName, ReceivedFeed>,
}

impl ReceivedFeeds {
    /// Records that the client already holds `feed` at `(epoch, rev)` (sent as `known`).
    pub fn assume(&mut self, feed: &FeedName, epoch: Epoch, rev: Rev) {
        let mirror = self.feeds.entry(feed.clone()).or_default();
        mirror.epoch = epoch;
        mirror.rev = rev;
    }

    /// One feed, when the client received anything of it.
    pub fn get(&self, feed: &FeedName) -> Option<&ReceivedFeed> {
        self.feeds.get(feed)
    }

    /// The revision the client holds of `feed`.
    pub fn rev(&self, feed: &FeedName) -> Option<Rev> {
        self.feeds.get(feed).map(|m| m.rev)
    }

    /// Applies a snapshot, changes or an event; other messages change nothing.
    pub fn apply(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::Snapshot {
                feed,
                epoch,
                rev,
                items,
            } => {
                let mirror = self.feeds.entry(feed.clone()).or_default();
                mirror.epoch = *epoch;
                mirror.rev = *rev;
                mirror.items = OrderedItems::from_ordered(
                    items
                        .iter()
                        .map(|item| (item.id.clone(), item.item.clone(), item.rev)),
                );
                mirror.events.clear();
                mirror.snapshots.push((*epoch, *rev));
            }
            ServerMessage::Changes {
                feed,
                epoch,
                events,
            } => {
                let mirror = self.feeds.get_mut(feed).unwrap_or_else(|| {
                    panic!("{feed}: changes before any snapshot or known state")
                });
                for event in events {
                    mirror.apply(feed, *epoch, event);
                }
            }
            ServerMessage::Event {
                feed,
                epoch,
                rev,
                change,
            } => {
                let mirror = self
                    .feeds
                    .get_mut(feed)
                    .unwrap_or_else(|| panic!("{feed}: event before any snapshot or known state"));
                let event = FeedEvent {
                    rev: *rev,
                    change: change.clone(),
                };
                mirror.apply(feed, *epoch, &event);
            }
            _ => {}
        }
    }
}
