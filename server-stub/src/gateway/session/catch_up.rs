//! Catch-up: subscribing, following a feed and bringing its client up to
//! date (a snapshot, or the changes since a known position), unsubscribing,
//! and catching every followed feed up again after a resync.

use std::collections::{BTreeMap, HashSet};

use thoonk_protocol::{ErrorCode, FeedName, FeedPattern, FeedPosition, ServerMessage};

use super::{json, Sent, Session, SessionEnd, RESYNC_RETRY};
use crate::feeds::Since;

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
    pub(super) async fn catch_up(
        &mut self,
        feed: &FeedName,
        from: Option<FeedPosition>,
    ) -> Result<(), SessionEnd> {
        // Changes published after this read must reach the hub (with
        // sharded fan-out: the feed's tag is subscribed first). Big reads
        // take turns; the permit is held until the frames are serialized.
        let heard = self.shared.hub.hear_changes_of(feed).await;
        let gate = self.shared.big_reads.clone();
        let permit = gate.acquire().await.expect("the semaphore is never closed");
        let since = match heard {
            Err(err) => Err(err.into()),
            Ok(()) => match from {
                Some(from) => self.shared.store.changes_since(feed, from).await,
                None => self.shared.store.snapshot(feed).await.map(Since::Reset),
            },
        };
        let since = match since {
            Ok(since) => since,
            Err(err) => {
                drop(permit);
                // Remember the feed is behind (a feed never sent gets a snapshot)
                // and try again shortly, rather than leave the client stale.
                self.feeds
                    .entry(feed.clone())
                    .or_insert(Sent { epoch: 0, rev: 0 });
                self.resync_at = Some(tokio::time::Instant::now() + RESYNC_RETRY);
                return self.internal(err).await;
            }
        };
        match since {
            Since::Reset(snapshot) => {
                self.feeds.insert(
                    feed.clone(),
                    Sent {
                        epoch: snapshot.epoch,
                        rev: snapshot.rev,
                    },
                );
                let frame = json(&ServerMessage::Snapshot {
                    feed: feed.clone(),
                    epoch: snapshot.epoch,
                    rev: snapshot.rev,
                    items: snapshot.items,
                });
                drop(permit);
                self.send_text(frame).await
            }
            Since::Changes { epoch, events } => {
                let base = from.map_or(0, |f| f.rev);
                let last = events.last().map_or(base, |e| e.rev);
                self.feeds.insert(feed.clone(), Sent { epoch, rev: last });
                drop(permit);
                let batch = self.shared.limits.replay_batch.max(1);
                for chunk in events.chunks(batch) {
                    self.send(&ServerMessage::Changes {
                        feed: feed.clone(),
                        epoch,
                        events: chunk.to_vec(),
                    })
                    .await?;
                }
                Ok(())
            }
        }
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
    fn feeds_no_pattern_matches_are_dropped() {
        let feed = |n: &str| FeedName::new(n).unwrap();
        let followed = [feed("a:1"), feed("a:2"), feed("b:1")];
        let patterns: HashSet<FeedPattern> = [FeedPattern::new("a:*").unwrap()].into();
        assert_eq!(unwanted(followed.iter(), &patterns), vec![feed("b:1")]);
        assert_eq!(unwanted(followed.iter(), &HashSet::new()).len(), 3);
    }
}
