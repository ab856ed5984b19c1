//! Subscriptions: following and dropping feed patterns, and asking the
//! server for them (again) with the positions already mirrored.

use std::collections::BTreeMap;

use thoonk_protocol::{ClientMessage, FeedName, FeedPattern, FeedPosition};

use crate::error::CoreError;
use crate::mirror::Retry;
use crate::rng::backoff;

use super::{Conn, SyncCore};

impl SyncCore {
    /// Follows a feed name or pattern, now and after restarts.
    pub fn subscribe(&mut self, pattern: FeedPattern, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if self.subscriptions.insert(pattern.clone()) {
            self.journal.subscriptions.insert(pattern.clone());
            if matches!(self.conn, Conn::Online { .. }) {
                self.send_subscribe(pattern, now);
            }
        }
        self.finish(now);
        Ok(())
    }

    /// Stops following a pattern; feeds no other subscription matches are
    /// dropped from the mirror (pending changes to them stay in the outbox).
    pub fn unsubscribe(&mut self, pattern: &FeedPattern, now: u64) -> Result<(), CoreError> {
        self.check_usable()?;
        if self.subscriptions.remove(pattern) {
            self.unanswered.remove(pattern);
            self.journal.subscriptions.insert(pattern.clone());
            if matches!(self.conn, Conn::Online { .. }) {
                self.effects.send.push(ClientMessage::Unsubscribe {
                    pattern: pattern.clone(),
                });
            }
            let dropped: Vec<FeedName> = self
                .mirror
                .feeds
                .keys()
                .filter(|f| !self.follows(f))
                .cloned()
                .collect();
            for feed in dropped {
                self.mirror.feeds.remove(&feed);
                self.journal.clear(&feed);
            }
        }
        self.finish(now);
        Ok(())
    }

    pub(super) fn send_subscribe(&mut self, pattern: FeedPattern, now: u64) {
        let attempt = self.unanswered.get(&pattern).map_or(0, |r| r.attempt + 1);
        let t = &self.config.timing;
        let delay = backoff(
            t.replay_timeout,
            t.replay_timeout_max,
            attempt,
            &mut self.rng,
        );
        self.unanswered.insert(
            pattern.clone(),
            Retry {
                deadline: now + delay,
                attempt,
            },
        );
        // `extend`, not `collect`: collecting into a `BTreeMap` sorts first,
        // and each collected key/value type adds its own sort to the bundle.
        let mut known: BTreeMap<FeedName, FeedPosition> = BTreeMap::new();
        known.extend(
            self.mirror
                .feeds
                .iter()
                .filter(|(f, _)| pattern.matches(f))
                .filter_map(|(f, m)| {
                    m.head.map(|h| {
                        (
                            f.clone(),
                            FeedPosition {
                                epoch: h.epoch,
                                rev: h.rev,
                            },
                        )
                    })
                }),
        );
        self.effects
            .send
            .push(ClientMessage::Subscribe { pattern, known });
    }

    pub(super) fn follows(&self, feed: &FeedName) -> bool {
        self.subscriptions.iter().any(|p| p.matches(feed))
    }
}
