//! Fan-out: what the hub delivers (live changes, new and deleted feeds,
//! outcomes, the server's state) and the order a feed's events go out in.

use std::sync::Arc;

use thoonk_protocol::{ChangeOutcomeOf, FeedEvent, FeedPattern, FeedPosition, ServerMessage};

use super::{Sent, Session, SessionEnd};
use crate::feeds::ChangeNotice;
use crate::gateway::hub::HubEvent;

/// The most changes one live `changes` frame holds (as a replay's frame).
const LIVE_RUN: usize = 500;

impl Session {
    pub(super) async fn on_hub(&mut self, event: HubEvent) -> Result<(), SessionEnd> {
        let mut next = Some(event);
        while let Some(event) = next.take() {
            next = match event {
                HubEvent::Change(notice) if self.made_here(&notice) => {
                    self.on_own_changes(notice).await?
                }
                other => {
                    self.on_hub_event(other).await?;
                    None
                }
            };
        }
        Ok(())
    }

    /// True when `notice` is a change made by a job of this session's
    /// client (the echo of its own submits, e.g. a drained batch).
    fn made_here(&self, notice: &ChangeNotice) -> bool {
        notice.change.job.as_deref().is_some_and(|job| {
            job.strip_prefix(self.client_id.as_str())
                .is_some_and(|rest| rest.starts_with(':'))
        })
    }

    /// A change of this client's own, and the changes of its own to the same
    /// feed queued right behind it (up to [`LIVE_RUN`]): their consecutive
    /// revisions go out in one `changes` frame instead of an `event` each
    /// (a batch of 500 changes is echoed in one frame, not 500). Returns the
    /// first queued event that is not part of the run, to be handled next.
    async fn on_own_changes(
        &mut self,
        first: Arc<ChangeNotice>,
    ) -> Result<Option<HubEvent>, SessionEnd> {
        let mut run = vec![first];
        let mut rest = None;
        while run.len() < LIVE_RUN {
            match self.membership.try_recv() {
                Some(HubEvent::Change(n)) if n.feed == run[0].feed && self.made_here(&n) => {
                    run.push(n)
                }
                other => {
                    rest = other;
                    break;
                }
            }
        }
        let feed = run[0].feed.clone();
        let mut next = 0;
        while next < run.len() {
            let Some(sent) = self.feeds.get(&feed).copied() else {
                break;
            };
            let (frames, now_sent, catch_up) = live_frames(sent, &run[next..]);
            self.feeds.insert(feed.clone(), now_sent);
            for frame in &frames {
                self.send(frame).await?;
            }
            let Some((done, from)) = catch_up else {
                break;
            };
            self.catch_up(&feed, Some(from)).await?;
            next += done;
        }
        Ok(rest)
    }

    async fn on_hub_event(&mut self, event: HubEvent) -> Result<(), SessionEnd> {
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

/// The frames for live changes `notices` of one feed sent up to `sent`, in
/// order: each run of changes that directly follow what was sent, in one
/// epoch, as one `changes` frame (an `event` when alone); changes already
/// sent are dropped. Stops at a change that needs a catch-up (a gap, a new
/// epoch): then also returns how many notices it took (that one included)
/// and the position to catch up from. Returns what is sent after the frames.
pub(super) fn live_frames(
    mut sent: Sent,
    notices: &[Arc<ChangeNotice>],
) -> (Vec<ServerMessage>, Sent, Option<(usize, FeedPosition)>) {
    let mut frames = Vec::new();
    let mut events: Vec<FeedEvent> = Vec::new();
    let mut epoch = sent.epoch;
    let mut stop = None;
    for (i, notice) in notices.iter().enumerate() {
        match live_step(sent, notice.epoch, notice.rev) {
            LiveStep::Skip => {}
            LiveStep::Send => {
                if notice.epoch != epoch {
                    frames.extend(live_frame(notice, epoch, std::mem::take(&mut events)));
                    epoch = notice.epoch;
                }
                sent = Sent {
                    epoch: notice.epoch,
                    rev: notice.rev,
                };
                events.push(FeedEvent {
                    rev: notice.rev,
                    change: notice.change.clone(),
                });
            }
            LiveStep::CatchUp(from) => {
                stop = Some((i + 1, from));
                break;
            }
        }
    }
    if let Some(notice) = notices.first() {
        frames.extend(live_frame(notice, epoch, events));
    }
    (frames, sent, stop)
}

/// Consecutive live changes of `notice`'s feed in `epoch`: none, one
/// `event`, or one `changes` frame.
fn live_frame(
    notice: &ChangeNotice,
    epoch: u64,
    mut events: Vec<FeedEvent>,
) -> Option<ServerMessage> {
    let feed = notice.feed.clone();
    match events.len() {
        0 => None,
        1 => {
            let FeedEvent { rev, change } = events.remove(0);
            Some(ServerMessage::Event {
                feed,
                epoch,
                rev,
                change,
            })
        }
        _ => Some(ServerMessage::Changes {
            feed,
            epoch,
            events,
        }),
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

    fn notice(epoch: u64, rev: u64) -> Arc<ChangeNotice> {
        Arc::new(ChangeNotice {
            feed: thoonk_protocol::FeedName::new("f").unwrap(),
            epoch,
            rev,
            change: thoonk_protocol::Change {
                op: thoonk_protocol::ChangeOp::Publish,
                id: thoonk_protocol::ItemId::new(format!("t{rev}")).unwrap(),
                item: Some(serde_json::json!(rev)),
                position: None,
                prev: None,
                job: Some(format!("c1:{rev}")),
            },
            adopted: false,
        })
    }

    /// The revisions of each frame, `event` or `changes`.
    fn revs(frames: &[ServerMessage]) -> Vec<Vec<u64>> {
        frames
            .iter()
            .map(|f| match f {
                ServerMessage::Event { rev, .. } => vec![*rev],
                ServerMessage::Changes { events, .. } => events.iter().map(|e| e.rev).collect(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_run_of_live_changes_goes_out_in_one_changes_frame() {
        let run: Vec<_> = (6..=10).map(|rev| notice(7, rev)).collect();
        let (frames, sent, stop) = live_frames(AT_5, &run);
        assert_eq!(revs(&frames), [vec![6, 7, 8, 9, 10]]);
        assert!(matches!(frames[0], ServerMessage::Changes { epoch: 7, .. }));
        assert_eq!((sent.epoch, sent.rev, stop), (7, 10, None));
        // One change alone is an `event`, as before.
        let (frames, _, _) = live_frames(AT_5, &run[..1]);
        assert!(matches!(frames[..], [ServerMessage::Event { rev: 6, .. }]));
    }

    #[test]
    fn a_run_drops_what_was_sent_and_stops_at_a_gap_to_catch_up() {
        let run = [
            notice(7, 4),
            notice(7, 6),
            notice(7, 7),
            notice(7, 9),
            notice(7, 10),
        ];
        let (frames, sent, stop) = live_frames(AT_5, &run);
        assert_eq!(revs(&frames), [vec![6, 7]]);
        assert_eq!((sent.epoch, sent.rev), (7, 7));
        assert_eq!(stop, Some((4, pos(7, 7))), "rev 9 after 7: catch up from 7");
    }

    #[test]
    fn a_feed_that_did_not_exist_takes_a_run_of_its_first_epoch() {
        let none = Sent { epoch: 0, rev: 0 };
        let run: Vec<_> = (1..=3).map(|rev| notice(3, rev)).collect();
        let (frames, sent, stop) = live_frames(none, &run);
        assert_eq!(revs(&frames), [vec![1, 2, 3]]);
        assert!(matches!(frames[0], ServerMessage::Changes { epoch: 3, .. }));
        assert_eq!((sent.epoch, sent.rev, stop), (3, 3, None));
    }

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
