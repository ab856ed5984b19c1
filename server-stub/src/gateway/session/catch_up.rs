//! Catch-up: subscribing, following a feed and bringing its client up to
//! date (a snapshot, or the changes since a known position), unsubscribing,
//! and catching every followed feed up again after a resync.

use std::collections::{BTreeMap, HashSet};

use thoonk_protocol::{ErrorCode, FeedEvent, FeedName, FeedPattern, FeedPosition, ServerMessage};

use super::{json, Sent, Session, SessionEnd, RESYNC_RETRY};
use tokio::sync::Semaphore;

use crate::feeds::{FeedError, FeedStore, SinceStep};

impl Session {
    pub(super) async fn on_subscribe(
        &mut self,
        pattern: FeedPattern,
        known: BTreeMap<FeedName, FeedPosition>,
    ) -> Result<(), SessionEnd> {
        if !self.patterns.contains(&pattern)
            && self.patterns.len() >= self.shared.limits.max_subscriptions
        {
            let message = format!(
                "at most {} subscriptions per connection: unsubscribe first",
                self.shared.limits.max_subscriptions
            );
            return self.send_error(ErrorCode::RateLimited, message).await;
        }
        if let Err(untagged) = self.shared.hub.check_routable(pattern.as_str()) {
            return self
                .send_error(ErrorCode::BadRequest, untagged.to_string())
                .await;
        }
        let id = self.membership.id;
        let feeds = if pattern.is_concrete() {
            let feed = FeedName::new(pattern.as_str()).expect("a concrete pattern is a feed name");
            if !self.shared.access.can_read(self.user(), &feed) {
                let message = format!("you may not read {feed}");
                return self.send_error(ErrorCode::Forbidden, message).await;
            }
            vec![feed]
        } else {
            // Announcements start before the list is read, so a feed created in
            // between is announced (and deduplicated) rather than missed.
            self.shared.hub.follow_pattern(id, &pattern);
            match self.readable_unfollowed(&pattern).await {
                Ok(feeds) => feeds,
                Err(err) => {
                    self.shared.hub.unfollow_pattern(id, &pattern);
                    return self.internal(err).await;
                }
            }
        };
        self.patterns.insert(pattern.clone());
        self.send(&ServerMessage::Subscribed {
            pattern,
            feeds: feeds.clone(),
        })
        .await?;
        for feed in feeds {
            let from = known.get(&feed).copied();
            self.follow(feed, from).await?;
        }
        Ok(())
    }

    /// The feeds `pattern` matches now that the user may read and this session
    /// does not follow yet.
    pub(super) async fn readable_unfollowed(
        &mut self,
        pattern: &FeedPattern,
    ) -> Result<Vec<FeedName>, crate::feeds::FeedError> {
        let store = self.shared.store.clone();
        let all = store.feeds().await?;
        Ok(all
            .into_iter()
            .filter(|feed| {
                pattern.matches(feed)
                    && !self.feeds.contains_key(feed)
                    && self.shared.access.can_read(self.user(), feed)
            })
            .collect())
    }

    pub(super) fn on_unsubscribe(&mut self, pattern: &FeedPattern) {
        if !self.patterns.remove(pattern) {
            return;
        }
        let id = self.membership.id;
        self.shared.hub.unfollow_pattern(id, pattern);
        for feed in unwanted(self.feeds.keys(), &self.patterns) {
            self.feeds.remove(&feed);
            self.shared.hub.unfollow_feed(id, &feed);
        }
    }

    /// Follows a feed (if not already) and brings the client up to date on it.
    pub(super) async fn follow(
        &mut self,
        feed: FeedName,
        from: Option<FeedPosition>,
    ) -> Result<(), SessionEnd> {
        if let Some(sent) = self.feeds.get(&feed).copied() {
            return match refollow(sent, from) {
                Some(from) => self.catch_up(&feed, from).await,
                None => Ok(()),
            };
        }
        self.shared.hub.follow_feed(self.membership.id, &feed);
        self.catch_up(&feed, from).await
    }

    /// Sends what the client lacks of `feed` after `from` (a snapshot when
    /// `from` is unknown or history no longer reaches back) and records it.
    /// A replay goes out page by page as it is read, each page's frames sent
    /// while the next page is read: the client gets its first frame after
    /// one read, not after the whole log was read.
    pub(super) async fn catch_up(
        &mut self,
        feed: &FeedName,
        from: Option<FeedPosition>,
    ) -> Result<(), SessionEnd> {
        // Changes published after this read must reach the hub (with
        // sharded fan-out: the feed's tag is subscribed first).
        if let Err(err) = self.shared.hub.hear_changes_of(feed).await {
            return self.read_failed(feed, err).await;
        }
        let batch = self.shared.limits.replay_batch.max(1);
        let (store, gate) = (self.shared.store.clone(), self.shared.big_reads.clone());
        let mut page = read_page(&store, &gate, feed, from, batch).await;
        loop {
            let this = match page {
                Ok(this) => this,
                Err(err) => return self.read_failed(feed, err).await,
            };
            self.feeds.insert(feed.clone(), this.sent);
            if !this.more {
                return self.send_frames(this.frames).await;
            }
            let next = Some(FeedPosition {
                epoch: this.sent.epoch,
                rev: this.sent.rev,
            });
            let (sent, next) = tokio::join!(
                self.send_frames(this.frames),
                read_page(&store, &gate, feed, next, batch)
            );
            sent?;
            page = next;
        }
    }

    async fn send_frames(&mut self, frames: Vec<String>) -> Result<(), SessionEnd> {
        for frame in frames {
            self.send_text(frame).await?;
        }
        Ok(())
    }

    /// A catch-up's read failed: remembers the feed is behind (a feed never
    /// sent gets a snapshot) and tries again shortly, rather than leave the
    /// client stale.
    async fn read_failed(
        &mut self,
        feed: &FeedName,
        err: impl std::fmt::Display,
    ) -> Result<(), SessionEnd> {
        self.feeds
            .entry(feed.clone())
            .or_insert(Sent { epoch: 0, rev: 0 });
        self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
        self.internal(err).await
    }

    /// Catches up every followed feed from its change log, and announces the
    /// feeds created meanwhile that a pattern matches (their `newfeed` notice
    /// may have been lost with the rest).
    pub(super) async fn resync_all(&mut self) -> Result<(), SessionEnd> {
        self.tell_server_state().await?;
        if !self.recover_outcomes().await? {
            self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
        }
        let feeds: Vec<(FeedName, Sent)> =
            self.feeds.iter().map(|(f, s)| (f.clone(), *s)).collect();
        for (feed, sent) in feeds {
            let from = FeedPosition {
                epoch: sent.epoch,
                rev: sent.rev,
            };
            self.catch_up(&feed, Some(from)).await?;
        }
        let patterns: Vec<FeedPattern> = self
            .patterns
            .iter()
            .filter(|p| !p.is_concrete())
            .cloned()
            .collect();
        for pattern in patterns {
            let created = match self.readable_unfollowed(&pattern).await {
                Ok(created) => created,
                Err(err) => {
                    self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
                    return self.internal(err).await;
                }
            };
            for feed in created {
                self.send(&ServerMessage::Subscribed {
                    pattern: pattern.clone(),
                    feeds: vec![feed.clone()],
                })
                .await?;
                self.follow(feed, None).await?;
            }
        }
        Ok(())
    }
}

/// What subscribing again to a feed already streamed up to `sent` sends a
/// client that knows `from`: `None` nothing (it is up to date), else a
/// catch-up from the position given (`None`: a snapshot, since the client's
/// position is of another epoch or unknown).
pub(super) fn refollow(sent: Sent, from: Option<FeedPosition>) -> Option<Option<FeedPosition>> {
    let behind = from.is_none_or(|f| f.epoch != sent.epoch || f.rev < sent.rev);
    behind.then(|| from.filter(|f| f.epoch == sent.epoch))
}

/// One page of a catch-up, read and serialized.
struct ReadPage {
    /// What the client has once the frames are sent.
    sent: Sent,
    /// A snapshot, or up to a page of changes in `changes` frames.
    frames: Vec<String>,
    /// A full page of changes: more may follow.
    more: bool,
}

/// Reads one page of a catch-up of `feed` after `from` (`None`: a snapshot)
/// and serializes its frames. Big reads take turns: the permit is held
/// until the page's frames are serialized.
async fn read_page(
    store: &FeedStore,
    gate: &Semaphore,
    feed: &FeedName,
    from: Option<FeedPosition>,
    batch: usize,
) -> Result<ReadPage, FeedError> {
    let _permit = gate.acquire().await.expect("the semaphore is never closed");
    let step = match from {
        Some(at) => store.changes_page(feed, at).await?,
        None => SinceStep::Reset(store.snapshot(feed).await?),
    };
    Ok(match step {
        SinceStep::Reset(snapshot) => ReadPage {
            sent: Sent {
                epoch: snapshot.epoch,
                rev: snapshot.rev,
            },
            frames: vec![json(&ServerMessage::Snapshot {
                feed: feed.clone(),
                epoch: snapshot.epoch,
                rev: snapshot.rev,
                items: snapshot.items,
            })],
            more: false,
        },
        SinceStep::Changes {
            epoch,
            events,
            more,
        } => {
            let base = from.map_or(0, |f| f.rev);
            let rev = events.last().map_or(base, |e| e.rev);
            ReadPage {
                sent: Sent { epoch, rev },
                frames: replay_frames(feed, epoch, events, batch),
                more,
            }
        }
    })
}

/// The `changes` frames of one page of a replay, serialized: its events in
/// order, at most `batch` to a frame.
pub(super) fn replay_frames(
    feed: &FeedName,
    epoch: u64,
    mut events: Vec<FeedEvent>,
    batch: usize,
) -> Vec<String> {
    let mut frames = Vec::with_capacity(events.len().div_ceil(batch));
    while !events.is_empty() {
        let rest = events.split_off(batch.min(events.len()));
        frames.push(json(&ServerMessage::Changes {
            feed: feed.clone(),
            epoch,
            events: std::mem::replace(&mut events, rest),
        }));
    }
    frames
}

/// The feeds among `followed` that no pattern of `patterns` matches any more.
pub(super) fn unwanted<'a>(
    followed: impl Iterator<Item = &'a FeedName>,
    patterns: &HashSet<FeedPattern>,
) -> Vec<FeedName> {
    followed
        .filter(|feed| !patterns.iter().any(|p| p.matches(feed)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::positions::{pos, AT_5};
    use super::*;

    #[test]
    fn a_client_up_to_date_gets_nothing_more() {
        assert_eq!(refollow(AT_5, Some(pos(7, 5))), None);
        // Ahead of what this session sent: the live stream brings the rest.
        assert_eq!(refollow(AT_5, Some(pos(7, 6))), None);
    }

    #[test]
    fn a_client_behind_gets_the_changes_after_its_position() {
        assert_eq!(refollow(AT_5, Some(pos(7, 2))), Some(Some(pos(7, 2))));
    }

    #[test]
    fn a_client_of_another_epoch_or_without_position_gets_a_snapshot() {
        assert_eq!(refollow(AT_5, Some(pos(6, 9))), Some(None));
        assert_eq!(refollow(AT_5, None), Some(None));
    }

    #[test]
    fn a_page_of_a_replay_goes_out_in_order_in_frames_of_at_most_the_batch() {
        let feed = FeedName::new("a:1").unwrap();
        let events: Vec<FeedEvent> = (11..=17)
            .map(|rev| {
                serde_json::from_value(serde_json::json!({
                    "rev": rev,
                    "change": {"op": "retract", "id": format!("i{rev}")},
                }))
                .unwrap()
            })
            .collect();
        let frames: Vec<(u64, Vec<u64>)> = replay_frames(&feed, 3, events, 3)
            .iter()
            .map(|text| match serde_json::from_str(text).unwrap() {
                ServerMessage::Changes { epoch, events, .. } => {
                    (epoch, events.iter().map(|e| e.rev).collect())
                }
                other => panic!("not a changes frame: {other:?}"),
            })
            .collect();
        assert_eq!(
            frames,
            vec![(3, vec![11, 12, 13]), (3, vec![14, 15, 16]), (3, vec![17])]
        );
        assert!(replay_frames(&feed, 3, Vec::new(), 3).is_empty());
    }

    #[test]
    fn feeds_no_pattern_matches_are_dropped() {
        let feed = |n: &str| FeedName::new(n).unwrap();
        let followed = [feed("a:1"), feed("a:2"), feed("b:1")];
        let patterns: HashSet<FeedPattern> = [FeedPattern::new("a:*").unwrap()].into();
        assert_eq!(unwanted(followed.iter(), &patterns), vec![feed("b:1")]);
        assert_eq!(unwanted(followed.iter(), &HashSet::new()).len(), 3);
    }
}
