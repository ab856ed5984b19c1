//! The confirmed state of every followed feed: items in order, `(epoch, rev)`,
//! events buffered ahead of a gap, and replay requests.
//!
//! Rules: revision n+1 is applied only after n; events ahead are buffered; a
//! gap (or an event of another epoch, or a feed not mirrored yet) makes the
//! feed ask for a replay from its last applied position — one request at a
//! time, asked again with backoff when unanswered; a snapshot or an epoch
//! change replaces the feed in one batch (events of the new epoch that
//! arrive before its snapshot are kept and applied after it); duplicates and
//! older revisions are ignored. The server's epochs only grow, so anything of
//! an older epoch than the mirrored one is stale and ignored — except a
//! snapshot of epoch 0, which is how a deleted feed is announced.

use std::collections::BTreeMap;

use thoonk_protocol::{
    Change, ClientMessage, Epoch, FeedEvent, FeedName, FeedPosition, Item, ItemId, Rev, SortedMap,
};

use crate::apply::apply_change;
use crate::config::Timing;
use crate::error::ServerFault;
use crate::items::OrderedItems;
use crate::journal::Journal;
use crate::rng::{backoff, SplitMix64};
use crate::store::FeedHead;

/// A request to the server that is waiting for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// When to ask again.
    pub deadline: u64,
    /// How many times it was asked again already.
    pub attempt: u32,
}

/// The mirror of one feed.
#[derive(Clone, Debug, Default)]
pub(crate) struct FeedMirror {
    /// What is mirrored; `None` until the first snapshot.
    pub head: Option<FeedHead>,
    /// The confirmed items.
    pub items: OrderedItems,
    /// Events of the current epoch received ahead of a gap.
    ahead: BTreeMap<Rev, Change>,
    /// Events of an epoch not mirrored yet (the feed must be reset to it);
    /// kept so that the snapshot of that epoch can be continued with them.
    foreign: Option<(Epoch, BTreeMap<Rev, Change>)>,
    /// A replay (or initial snapshot) is awaited.
    pub request: Option<Retry>,
    /// A deletion (a snapshot of epoch 0) replaced a real epoch: one replay
    /// confirms it, since a deletion has no epoch to order it by (a late
    /// one would otherwise hide a feed created again since).
    confirm_deletion: bool,
    /// A replay was asked with every buffered `foreign` event already here.
    foreign_asked: bool,
    /// The position a deletion replaced: while the feed is deleted, anything
    /// older than it is stale (a late frame), as it would be in that epoch.
    left: Option<FeedHead>,
}

impl FeedMirror {
    /// True when the feed cannot be trusted to be complete: nothing mirrored
    /// yet, events buffered ahead of a gap, an epoch change seen, a deletion
    /// not confirmed yet, or a revision the core knows exists (`awaited`)
    /// not reached.
    pub fn needs_sync(&self, awaited: Rev) -> bool {
        match self.head {
            None => true,
            Some(head) => {
                !self.ahead.is_empty()
                    || self.foreign.is_some()
                    || self.confirm_deletion
                    || awaited > head.rev
            }
        }
    }

    /// The position to replay from; epoch 0 (never a real epoch) asks for a snapshot.
    pub fn position(&self) -> FeedPosition {
        match self.head {
            Some(h) => FeedPosition {
                epoch: h.epoch,
                rev: h.rev,
            },
            None => FeedPosition { epoch: 0, rev: 0 },
        }
    }

    /// True for a message of an epoch older than the mirrored one: the
    /// server's epochs only grow, so it is stale.
    fn is_stale(&self, epoch: Epoch) -> bool {
        match (self.head, self.left) {
            (Some(h), Some(left)) if h.epoch == 0 => epoch != 0 && epoch < left.epoch,
            (Some(h), _) => epoch < h.epoch,
            (None, _) => false,
        }
    }

    fn keep_foreign(&mut self, epoch: Epoch, events: impl IntoIterator<Item = (Rev, Change)>) {
        self.foreign_asked = false;
        match &mut self.foreign {
            Some((e, kept)) if *e == epoch => kept.extend(events),
            Some((e, _)) if *e > epoch => {}
            _ => {
                // Inserted, not collected (a collect sorts: more code in the bundle).
                let mut kept = BTreeMap::new();
                kept.extend(events);
                self.foreign = Some((epoch, kept));
            }
        }
    }

    fn drain(&mut self, feed: &FeedName, journal: &mut Journal, applied_changes: &mut Vec<String>) {
        let Some(head) = self.head.as_mut() else {
            return;
        };
        while let Some(change) = self.ahead.remove(&(head.rev + 1)) {
            head.rev += 1;
            if apply_change(&mut self.items, head.rev, &change) {
                for id in self.items.ids() {
                    journal.item(feed, &id);
                }
            }
            journal.item(feed, &change.id);
            journal.head(feed);
            if let Some(job) = change.job {
                applied_changes.push(job);
            }
        }
    }
}

/// All mirrored feeds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mirror {
    /// The feeds by name.
    pub feeds: SortedMap<FeedName, FeedMirror>,
}

impl Mirror {
    /// Starts following a feed the server listed; its snapshot is expected
    /// as the answer to the subscription, so a request counts as sent.
    pub fn expect(&mut self, feed: &FeedName, now: u64, timing: &Timing) {
        let m = self.feeds.entry(feed.clone()).or_default();
        if m.head.is_none() && m.request.is_none() {
            m.request = Some(Retry {
                deadline: now + timing.replay_timeout,
                attempt: 0,
            });
        }
    }

    /// Applies one live event. The change ids of the jobs it applied (the
    /// client changes whose outcome may now settle) go to `applied_changes`.
    pub fn on_event(
        &mut self,
        feed: &FeedName,
        epoch: Epoch,
        rev: Rev,
        change: Change,
        journal: &mut Journal,
        applied_changes: &mut Vec<String>,
    ) {
        let m = self.feeds.entry(feed.clone()).or_default();
        if m.is_stale(epoch) {
            return;
        }
        match m.head {
            Some(head) if head.epoch == epoch => {
                if rev > head.rev {
                    m.ahead.insert(rev, change);
                    m.drain(feed, journal, applied_changes);
                }
            }
            _ => m.keep_foreign(epoch, [(rev, change)]),
        }
    }

    /// Applies a batch of replayed changes.
    pub fn on_changes(
        &mut self,
        feed: &FeedName,
        epoch: Epoch,
        events: Vec<FeedEvent>,
        journal: &mut Journal,
        applied_changes: &mut Vec<String>,
    ) -> Result<(), ServerFault> {
        let fault = events.windows(2).find_map(|w| {
            (w[1].rev != w[0].rev + 1).then(|| ServerFault::SparseChanges {
                feed: feed.clone(),
                after: w[0].rev,
                got: w[1].rev,
            })
        });
        let m = self.feeds.entry(feed.clone()).or_default();
        if m.is_stale(epoch) {
            return fault.map_or(Ok(()), Err);
        }
        match m.head {
            Some(head) if head.epoch == epoch => {
                for event in events {
                    if event.rev > head.rev {
                        m.ahead.insert(event.rev, event.change);
                    }
                }
                m.drain(feed, journal, applied_changes);
            }
            _ => m.keep_foreign(epoch, events.into_iter().map(|e| (e.rev, e.change))),
        }
        fault.map_or(Ok(()), Err)
    }

    /// Replaces a feed's content with a snapshot (unless it is stale).
    pub fn on_snapshot(
        &mut self,
        feed: &FeedName,
        epoch: Epoch,
        rev: Rev,
        items: Vec<Item>,
        journal: &mut Journal,
        applied_changes: &mut Vec<String>,
    ) -> Result<(), ServerFault> {
        // Ids to places, as the views index them: one map type less in the bundle.
        let mut seen: BTreeMap<&ItemId, usize> = BTreeMap::new();
        let fault = items.iter().enumerate().find_map(|(at, i)| {
            seen.insert(&i.id, at)
                .is_some()
                .then(|| ServerFault::DuplicateItem {
                    feed: feed.clone(),
                    id: i.id.to_string(),
                })
        });
        let m = self.feeds.entry(feed.clone()).or_default();
        if m.is_stale(epoch) && epoch != 0 {
            return fault.map_or(Ok(()), Err);
        }
        if let (Some(head), Some(left)) = (m.head, m.left) {
            if head.epoch == 0 && epoch == left.epoch && rev < left.rev {
                // Older than what this epoch showed before the deletion.
                return fault.map_or(Ok(()), Err);
            }
        }
        if let Some(head) = m.head {
            if head.epoch == epoch && rev <= head.rev {
                if epoch == 0 {
                    // The feed is still deleted (the answer to the replay the
                    // buffered events or the deletion asked for): events that
                    // were here when that replay was asked are of an
                    // incarnation deleted since, and would ask again forever.
                    if m.foreign_asked {
                        m.foreign = None;
                    }
                    m.confirm_deletion = false;
                }
                return fault.map_or(Ok(()), Err);
            }
            if head.epoch != epoch {
                m.ahead.clear();
            }
        }
        match m.foreign.take() {
            Some((e, kept)) if e == epoch => m.ahead.extend(kept),
            Some((e, kept)) if e > epoch => m.foreign = Some((e, kept)),
            _ => {}
        }
        m.ahead.retain(|r, _| *r > rev);
        m.confirm_deletion = epoch == 0 && m.head.is_some_and(|h| h.epoch != 0);
        m.left = match (epoch, m.head) {
            (0, Some(h)) if h.epoch != 0 => Some(h),
            (0, _) => m.left,
            _ => None,
        };
        m.items = OrderedItems::from_ordered(items.into_iter().map(|i| (i.id, i.item, i.rev)));
        m.head = Some(FeedHead { epoch, rev });
        journal.clear(feed);
        for id in m.items.ids() {
            journal.item(feed, &id);
        }
        m.drain(feed, journal, applied_changes);
        fault.map_or(Ok(()), Err)
    }

    /// Sends the replay requests that are due: a feed that needs syncing and
    /// has no request in flight asks now; one whose request timed out asks
    /// again with backoff; a feed in sync drops its request.
    pub fn poll_requests(
        &mut self,
        now: u64,
        awaited: &BTreeMap<FeedName, Rev>,
        timing: &Timing,
        rng: &mut SplitMix64,
        out: &mut Vec<ClientMessage>,
    ) {
        for (feed, m) in &mut self.feeds {
            let wanted = awaited.get(feed).copied().unwrap_or(0);
            if !m.needs_sync(wanted) {
                m.request = None;
                continue;
            }
            let attempt = match m.request {
                Some(r) if r.deadline > now => continue,
                Some(r) => r.attempt + 1,
                None => 0,
            };
            out.push(ClientMessage::Replay {
                feed: feed.clone(),
                from: m.position(),
            });
            m.foreign_asked = m.foreign.is_some();
            m.request = Some(Retry {
                deadline: now
                    + backoff(
                        timing.replay_timeout,
                        timing.replay_timeout_max,
                        attempt,
                        rng,
                    ),
                attempt,
            });
        }
    }

    /// Forgets requests in flight (the connection that carried them is gone).
    pub fn forget_requests(&mut self) {
        for m in self.feeds.values_mut() {
            m.request = None;
        }
    }

    /// The earliest request deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.feeds
            .values()
            .filter_map(|m| m.request.map(|r| r.deadline))
            .min()
    }

    /// The mirrored position of a feed.
    pub fn head(&self, feed: &FeedName) -> Option<FeedHead> {
        self.feeds.get(feed).and_then(|m| m.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use thoonk_protocol::{ChangeOp, ItemId};

    fn feed() -> FeedName {
        FeedName::new("f").unwrap()
    }

    fn publish(id: &str, v: i64) -> Change {
        Change {
            op: ChangeOp::Publish,
            id: ItemId::new(id).unwrap(),
            item: Some(json!(v)),
            position: None,
            prev: None,
            job: Some(format!("job-{id}")),
        }
    }

    fn seeded() -> (Mirror, Journal, Vec<String>) {
        let mut m = Mirror::default();
        let mut j = Journal::default();
        let mut applied_changes = Vec::new();
        m.on_snapshot(&feed(), 1, 2, vec![], &mut j, &mut applied_changes)
            .unwrap();
        (m, Journal::default(), applied_changes)
    }

    fn ids(m: &Mirror) -> Vec<String> {
        m.feeds[&feed()]
            .items
            .ids()
            .iter()
            .map(|i| i.to_string())
            .collect()
    }

    fn replays(m: &mut Mirror, now: u64) -> Vec<ClientMessage> {
        let mut out = Vec::new();
        let mut rng = SplitMix64::new(1);
        m.poll_requests(
            now,
            &BTreeMap::new(),
            &Timing::default(),
            &mut rng,
            &mut out,
        );
        out
    }

    #[test]
    fn events_apply_in_order_and_gaps_buffer() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_event(&feed(), 1, 4, publish("b", 4), &mut j, &mut applied_changes);
        assert_eq!(m.head(&feed()).unwrap().rev, 2, "rev 4 waits for rev 3");
        let asked = replays(&mut m, 0);
        assert_eq!(
            asked,
            [ClientMessage::Replay {
                feed: feed(),
                from: FeedPosition { epoch: 1, rev: 2 }
            }]
        );
        assert!(replays(&mut m, 10).is_empty(), "one request at a time");
        m.on_event(&feed(), 1, 3, publish("a", 3), &mut j, &mut applied_changes);
        assert_eq!(m.head(&feed()).unwrap().rev, 4);
        assert_eq!(ids(&m), ["a", "b"]);
        assert_eq!(applied_changes, ["job-a", "job-b"]);
        assert!(replays(&mut m, 1_000_000).is_empty());
        assert!(m.feeds[&feed()].request.is_none(), "the gap closed");
    }

    #[test]
    fn duplicates_and_old_events_are_ignored() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_event(&feed(), 1, 3, publish("a", 3), &mut j, &mut applied_changes);
        m.on_event(&feed(), 1, 3, publish("x", 3), &mut j, &mut applied_changes);
        m.on_event(&feed(), 1, 1, publish("y", 1), &mut j, &mut applied_changes);
        assert_eq!(ids(&m), ["a"]);
        assert!(replays(&mut m, 0).is_empty());
    }

    #[test]
    fn unanswered_replays_are_asked_again_with_backoff() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_event(&feed(), 1, 9, publish("z", 9), &mut j, &mut applied_changes);
        assert_eq!(replays(&mut m, 0).len(), 1);
        let first = m.feeds[&feed()].request.unwrap().deadline;
        assert!(replays(&mut m, first - 1).is_empty());
        assert_eq!(replays(&mut m, first).len(), 1);
        let second = m.feeds[&feed()].request.unwrap();
        assert_eq!(second.attempt, 1);
        assert!(second.deadline - first >= Timing::default().replay_timeout);
    }

    #[test]
    fn another_epoch_asks_for_a_reset_and_a_snapshot_replaces() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_event(&feed(), 1, 3, publish("a", 3), &mut j, &mut applied_changes);
        m.on_event(&feed(), 2, 1, publish("b", 1), &mut j, &mut applied_changes);
        assert_eq!(replays(&mut m, 0).len(), 1);
        let items = vec![Item {
            id: ItemId::new("c").unwrap(),
            item: json!(1),
            rev: 5,
        }];
        let mut j = Journal::default();
        m.on_snapshot(&feed(), 2, 5, items, &mut j, &mut applied_changes)
            .unwrap();
        assert!(j.cleared.contains(&feed()));
        assert_eq!(ids(&m), ["c"]);
        assert!(replays(&mut m, 0).is_empty());
        m.on_event(
            &feed(),
            1,
            4,
            publish("old", 4),
            &mut j,
            &mut applied_changes,
        );
        m.on_snapshot(&feed(), 1, 9, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(ids(&m), ["c"], "the left epoch is stale");
        assert!(replays(&mut m, 0).is_empty());
    }

    #[test]
    fn stale_snapshots_are_ignored_and_sparse_batches_reported() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_snapshot(&feed(), 1, 1, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(m.head(&feed()).unwrap().rev, 2);
        let events = vec![
            FeedEvent {
                rev: 3,
                change: publish("a", 3),
            },
            FeedEvent {
                rev: 5,
                change: publish("c", 5),
            },
        ];
        let err = m
            .on_changes(&feed(), 1, events, &mut j, &mut applied_changes)
            .unwrap_err();
        assert!(matches!(
            err,
            ServerFault::SparseChanges {
                after: 3,
                got: 5,
                ..
            }
        ));
        assert_eq!(m.head(&feed()).unwrap().rev, 3);
        assert_eq!(replays(&mut m, 0).len(), 1, "the hole is asked for");
    }

    #[test]
    fn events_of_a_new_epoch_wait_for_its_snapshot() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_event(
            &feed(),
            2,
            8,
            publish("late", 8),
            &mut j,
            &mut applied_changes,
        );
        m.on_event(
            &feed(),
            2,
            7,
            publish("early", 7),
            &mut j,
            &mut applied_changes,
        );
        assert_eq!(m.head(&feed()).unwrap().epoch, 1);
        m.on_snapshot(&feed(), 2, 6, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(m.head(&feed()), Some(FeedHead { epoch: 2, rev: 8 }));
        assert_eq!(ids(&m), ["early", "late"]);
        assert!(replays(&mut m, 0).is_empty());
    }

    #[test]
    fn older_epochs_are_stale_but_a_deleted_feed_is_not() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_snapshot(&feed(), 5, 1, vec![], &mut j, &mut applied_changes)
            .unwrap();
        m.on_event(
            &feed(),
            3,
            9,
            publish("stale", 9),
            &mut j,
            &mut applied_changes,
        );
        m.on_changes(
            &feed(),
            1,
            vec![FeedEvent {
                rev: 3,
                change: publish("x", 3),
            }],
            &mut j,
            &mut applied_changes,
        )
        .unwrap();
        m.on_snapshot(&feed(), 4, 9, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(m.head(&feed()), Some(FeedHead { epoch: 5, rev: 1 }));
        assert!(
            replays(&mut m, 0).is_empty(),
            "nothing stale asks for anything"
        );
        m.on_event(
            &feed(),
            8,
            3,
            publish("next", 3),
            &mut j,
            &mut applied_changes,
        );
        m.on_event(
            &feed(),
            7,
            3,
            publish("between", 3),
            &mut j,
            &mut applied_changes,
        );
        m.on_changes(&feed(), 5, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(
            replays(&mut m, 0).len(),
            1,
            "an answer in epoch 5 does not cancel epoch 8"
        );
        m.on_snapshot(&feed(), 8, 2, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(m.head(&feed()), Some(FeedHead { epoch: 8, rev: 3 }));
        assert_eq!(ids(&m), ["next"]);
        m.on_snapshot(&feed(), 0, 0, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert_eq!(
            m.head(&feed()),
            Some(FeedHead { epoch: 0, rev: 0 }),
            "the feed was deleted"
        );
        assert!(ids(&m).is_empty());
    }

    #[test]
    fn newer_events_buffered_before_a_deletion_ask_once_not_forever() {
        let (mut m, mut j, mut applied_changes) = seeded();
        m.on_event(
            &feed(),
            2,
            1,
            publish("gone", 1),
            &mut j,
            &mut applied_changes,
        );
        m.on_snapshot(&feed(), 0, 0, vec![], &mut j, &mut applied_changes)
            .unwrap();
        let asked = replays(&mut m, 0);
        assert_eq!(
            asked,
            [ClientMessage::Replay {
                feed: feed(),
                from: FeedPosition { epoch: 0, rev: 0 }
            }],
            "the events of epoch 2 may be newer than the deletion: ask"
        );
        m.on_snapshot(&feed(), 0, 0, vec![], &mut j, &mut applied_changes)
            .unwrap();
        assert!(
            replays(&mut m, 1_000_000_000).is_empty(),
            "the feed is still deleted: the buffered events are of a deleted incarnation"
        );
        assert!(m.feeds[&feed()].request.is_none());
    }

    #[test]
    fn a_feed_never_mirrored_asks_for_a_snapshot() {
        let mut m = Mirror::default();
        let (mut j, mut applied_changes) = (Journal::default(), Vec::new());
        m.on_event(&feed(), 3, 7, publish("a", 7), &mut j, &mut applied_changes);
        assert_eq!(
            replays(&mut m, 0),
            [ClientMessage::Replay {
                feed: feed(),
                from: FeedPosition { epoch: 0, rev: 0 }
            }]
        );
    }
}
