//! Fan-out: what the hub delivers (live changes, new and deleted feeds,
//! outcomes, the server's state) and the order a feed's events go out in.

use thoonk_protocol::{ChangeOutcomeOf, FeedPattern, FeedPosition, ServerMessage};

use super::{Sent, Session, SessionEnd};
use crate::feeds::ChangeNotice;
use crate::gateway::hub::HubEvent;

impl Session {
    pub(super) async fn on_hub(&mut self, event: HubEvent) -> Result<(), SessionEnd> {
        match event {
            HubEvent::Change(notice) => self.on_change(&notice).await,
            HubEvent::NewFeed(feed) => {
                let matching: Vec<FeedPattern> = self
                    .patterns
                    .iter()
                    .filter(|p| p.matches(&feed))
                    .cloned()
                    .collect();
                if matching.is_empty()
                    || self.feeds.contains_key(&feed)
                    || !self.shared.access.can_read(self.user(), &feed)
                {
                    return Ok(());
                }
                for pattern in matching {
                    self.send(&ServerMessage::Subscribed {
                        pattern,
                        feeds: vec![feed.clone()],
                    })
                    .await?;
                }
                self.follow(feed, None).await
            }
            HubEvent::Deleted(feed) => {
                // The log no longer continues what was sent: the catch-up
                // answers with the feed's state now (epoch 0 while it is gone).
                let Some(sent) = self.feeds.get(&feed).copied() else {
                    return Ok(());
                };
                let from = FeedPosition {
                    epoch: sent.epoch,
                    rev: sent.rev,
                };
                self.catch_up(&feed, Some(from)).await
            }
            HubEvent::Outcomes(outcomes) => {
                // Only the changes submitted here: not another session's,
                // maybe another user's.
                let mine: Vec<ChangeOutcomeOf> = outcomes
                    .iter()
                    .filter(|(id, _)| self.in_flight.remove(id).is_some())
                    .map(|(id, outcome)| ChangeOutcomeOf {
                        id: id.clone(),
                        outcome: outcome.clone(),
                    })
                    .collect();
                self.send_outcomes(mine).await
            }
            HubEvent::Resync => Ok(()),
            HubEvent::ServerState => self.tell_server_state().await,
        }
    }

    pub(super) async fn on_change(&mut self, notice: &ChangeNotice) -> Result<(), SessionEnd> {
        let Some(sent) = self.feeds.get(&notice.feed).copied() else {
            return Ok(());
        };
        match live_step(sent, notice.epoch, notice.rev) {
            LiveStep::Skip => Ok(()),
            LiveStep::Send => {
                self.feeds.insert(
                    notice.feed.clone(),
                    Sent {
                        epoch: notice.epoch,
                        rev: notice.rev,
                    },
                );
                self.send(&ServerMessage::Event {
                    feed: notice.feed.clone(),
                    epoch: notice.epoch,
                    rev: notice.rev,
                    change: notice.change.clone(),
                })
                .await
            }
            LiveStep::CatchUp(from) => self.catch_up(&notice.feed, Some(from)).await,
        }
    }
}

/// What a session does with a live change of a feed it has sent up to `sent`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LiveStep {
    /// Already sent (in a snapshot or replay): dropped.
    Skip,
    /// The next revision: sent as an `event`.
    Send,
    /// A gap or a new epoch: the change log after this position decides
    /// what the client gets.
    CatchUp(FeedPosition),
}

/// Orders a feed's live changes: each is sent only when it directly follows
/// what was sent, so the client sees dense revisions in order.
pub(super) fn live_step(sent: Sent, epoch: u64, rev: u64) -> LiveStep {
    if epoch == sent.epoch && rev <= sent.rev {
        return LiveStep::Skip;
    }
    // (0, 0) stands for a feed that did not exist: the first change of any
    // epoch follows it with nothing missed.
    let next = (epoch == sent.epoch || (sent.epoch, sent.rev) == (0, 0)) && rev == sent.rev + 1;
    if next {
        LiveStep::Send
    } else {
        LiveStep::CatchUp(FeedPosition {
            epoch: sent.epoch,
            rev: sent.rev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::positions::{pos, AT_5};
    use super::*;

    #[test]
    fn the_next_revision_is_sent() {
        assert_eq!(live_step(AT_5, 7, 6), LiveStep::Send);
    }

    #[test]
    fn revisions_already_sent_are_dropped() {
        assert_eq!(live_step(AT_5, 7, 5), LiveStep::Skip);
        assert_eq!(live_step(AT_5, 7, 1), LiveStep::Skip);
    }

    #[test]
    fn a_gap_catches_up_from_what_was_sent() {
        assert_eq!(live_step(AT_5, 7, 8), LiveStep::CatchUp(pos(7, 5)));
    }

    #[test]
    fn a_new_epoch_catches_up_even_at_the_next_revision() {
        assert_eq!(live_step(AT_5, 8, 6), LiveStep::CatchUp(pos(7, 5)));
        assert_eq!(live_step(AT_5, 8, 1), LiveStep::CatchUp(pos(7, 5)));
    }

    #[test]
    fn a_feed_that_did_not_exist_takes_the_first_change_of_any_epoch() {
        let none = Sent { epoch: 0, rev: 0 };
        assert_eq!(live_step(none, 3, 1), LiveStep::Send);
        assert_eq!(live_step(none, 3, 2), LiveStep::CatchUp(pos(0, 0)));
    }
}
