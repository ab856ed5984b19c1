//! Submits: single changes and batches queued as jobs, answered with `ack`
//! and the outcome, and the outcomes of changes in flight looked up again
//! after a resync.

use thoonk_protocol::{
    ChangeId, ChangeOutcomeOf, ChangeRequest, ErrorCode, Outcome, ServerMessage, MAX_BATCH_CHANGES,
};

use super::{Session, SessionEnd, MAX_IN_FLIGHT};
use crate::jobs::Submitted;

impl Session {
    /// Sends the outcomes the ledger holds for changes in flight (published
    /// while this session could not hear them). False when Redis failed.
    pub(super) async fn recover_outcomes(&mut self) -> Result<bool, SessionEnd> {
        let pending: Vec<(ChangeId, usize)> = self
            .in_flight
            .iter()
            .take(MAX_IN_FLIGHT)
            .map(|(id, q)| (id.clone(), *q))
            .collect();
        for (id, queue) in pending {
            match self.shared.jobs.outcome_in(queue, &id).await {
                Ok(Some(outcome)) => {
                    self.in_flight.remove(&id);
                    self.send(&ServerMessage::Outcome { id, outcome }).await?;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "cannot look up outcomes in flight; retrying");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// A batch: one client's changes to one feed, queued as one job. The
    /// changes are answered as single submits would be (an ack, and the
    /// stored outcome when it finished before), in one `acks` and one
    /// `outcomes` frame, except a change deferred because one before it is
    /// still queued or ended in a conflict: it gets no answer, and the
    /// client sends it again after the outcomes before it.
    pub(super) async fn on_submit_batch(
        &mut self,
        changes: Vec<ChangeRequest>,
    ) -> Result<(), SessionEnd> {
        let refusal = batch_refusal(&self.client_id, &changes);
        if let Some((code, message)) = refusal {
            return self.send_error(code, message).await;
        }
        let user = self.user().clone();
        match self.shared.jobs.submit_batch(&user, &changes).await {
            Ok(answers) => {
                // One `acks` frame for the changes queued (or finished
                // before), then one `outcomes` frame for those finished.
                let mut acks = Vec::new();
                let mut finished = Vec::new();
                for (change, answer) in changes.iter().zip(answers) {
                    let id = change.id.clone();
                    match answer {
                        Submitted::Queued | Submitted::AlreadyQueued => {
                            let queue = self.shared.jobs.index_for(change);
                            self.in_flight.insert(id.clone(), queue);
                            acks.push(id);
                        }
                        Submitted::Finished(outcome) => {
                            acks.push(id.clone());
                            finished.push(ChangeOutcomeOf { id, outcome });
                        }
                        Submitted::Deferred => {}
                    }
                }
                if !acks.is_empty() {
                    self.send(&ServerMessage::Acks { ids: acks }).await?;
                }
                self.send_outcomes(finished).await
            }
            Err(err) if err.is_caller_error() => {
                let outcomes = changes
                    .into_iter()
                    .map(|change| ChangeOutcomeOf {
                        id: change.id,
                        outcome: Outcome::Rejected {
                            code: err.code(),
                            message: err.to_string(),
                        },
                    })
                    .collect();
                self.send_outcomes(outcomes).await
            }
            Err(err) => self.internal(err).await,
        }
    }

    /// Sends outcomes: none, one `outcome`, or one `outcomes` frame for
    /// several (in order).
    pub(super) async fn send_outcomes(
        &mut self,
        mut outcomes: Vec<ChangeOutcomeOf>,
    ) -> Result<(), SessionEnd> {
        match outcomes.len() {
            0 => Ok(()),
            1 => {
                let ChangeOutcomeOf { id, outcome } = outcomes.remove(0);
                self.send(&ServerMessage::Outcome { id, outcome }).await
            }
            _ => self.send(&ServerMessage::Outcomes { outcomes }).await,
        }
    }

    pub(super) async fn on_submit(&mut self, change: ChangeRequest) -> Result<(), SessionEnd> {
        let id = change.id.clone();
        if !owns(&self.client_id, &id) {
            let message = not_owned(&self.client_id, &id);
            return self.send_error(ErrorCode::Forbidden, message).await;
        }
        let user = self.user().clone();
        match self.shared.jobs.submit(&user, &change).await {
            Ok(Submitted::Queued | Submitted::AlreadyQueued) => {
                let queue = self.shared.jobs.index_for(&change);
                self.in_flight.insert(id.clone(), queue);
                self.send(&ServerMessage::Ack { id }).await
            }
            Ok(Submitted::Finished(outcome)) => {
                self.send(&ServerMessage::Ack { id: id.clone() }).await?;
                self.send(&ServerMessage::Outcome { id, outcome }).await
            }
            // A single change is never deferred (only a batch defers).
            Ok(Submitted::Deferred) => Ok(()),
            Err(err) if err.is_caller_error() => {
                let outcome = Outcome::Rejected {
                    code: err.code(),
                    message: err.to_string(),
                };
                self.send(&ServerMessage::Outcome { id, outcome }).await
            }
            Err(err) => self.internal(err).await,
        }
    }
}

/// True when change id `id` is client `client_id`'s (`<client_id>:<rest>`).
pub(super) fn owns(client_id: &str, id: &ChangeId) -> bool {
    id.0.strip_prefix(client_id)
        .is_some_and(|rest| rest.starts_with(':') && rest.len() > 1)
}

/// The refusal of a change id that is not the connection's client's.
fn not_owned(client_id: &str, id: &ChangeId) -> String {
    format!(
        "change id {} does not start with this connection's client id `{client_id}:`",
        id.0
    )
}

/// Why a batch is refused whole, if it is: its size, a change of another
/// client, or changes to more than one feed.
pub(super) fn batch_refusal(
    client_id: &str,
    changes: &[ChangeRequest],
) -> Option<(ErrorCode, String)> {
    let feed = changes.first().and_then(|c| c.op.feed());
    if changes.is_empty() || changes.len() > MAX_BATCH_CHANGES {
        Some((
            ErrorCode::BadRequest,
            format!(
                "a batch holds 1 to {MAX_BATCH_CHANGES} changes, not {}",
                changes.len()
            ),
        ))
    } else if let Some(c) = changes.iter().find(|c| !owns(client_id, &c.id)) {
        Some((ErrorCode::Forbidden, not_owned(client_id, &c.id)))
    } else if changes.iter().any(|c| c.op.feed() != feed) {
        Some((
            ErrorCode::BadRequest,
            "a batch holds changes to one feed only (publish, edit, retract, move)".into(),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, feed: &str) -> ChangeRequest {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "op": {"kind": "publish", "feed": feed, "id": "t1", "item": {}},
        }))
        .unwrap()
    }

    #[test]
    fn a_change_id_is_its_clients_when_it_starts_with_the_id_and_a_colon() {
        assert!(owns("tab", &ChangeId("tab:1".into())));
        assert!(!owns("tab", &ChangeId("tab:".into())));
        assert!(!owns("tab", &ChangeId("tabby:1".into())));
        assert!(!owns("tab", &ChangeId("other:1".into())));
    }

    #[test]
    fn a_batch_of_one_clients_changes_to_one_feed_is_accepted() {
        let batch = [change("tab:1", "a"), change("tab:2", "a")];
        assert_eq!(batch_refusal("tab", &batch), None);
    }

    #[test]
    fn batches_empty_too_long_foreign_or_of_several_feeds_are_refused() {
        let code = |batch: &[ChangeRequest]| batch_refusal("tab", batch).map(|(code, _)| code);
        assert_eq!(code(&[]), Some(ErrorCode::BadRequest));
        let long: Vec<_> = (0..=MAX_BATCH_CHANGES)
            .map(|n| change(&format!("tab:{n}"), "a"))
            .collect();
        assert_eq!(code(&long), Some(ErrorCode::BadRequest));
        let foreign = [change("tab:1", "a"), change("other:2", "a")];
        assert_eq!(code(&foreign), Some(ErrorCode::Forbidden));
        let two_feeds = [change("tab:1", "a"), change("tab:2", "b")];
        assert_eq!(code(&two_feeds), Some(ErrorCode::BadRequest));
    }
}
