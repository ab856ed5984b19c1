//! Batch jobs: one client's changes to one feed, put by one `submit_batch`
//! and applied in order by one worker in one `job_apply_batch.lua` call.
//!
//! Each change keeps its own change id, ledger record, applied record and
//! outcome. The access rules are checked per change. A rejected change
//! (access rules, a missing item, …) gets its outcome and the batch goes
//! on; a conflict stops it: the changes after the conflicting one are not
//! attempted, get no applied record and lose their ledger record when the
//! job finishes, so the client sends them again, in order, after the
//! conflict is resolved. A batch run again (its worker died, its claim timed
//! out) finds the applied records of what an earlier run did and applies
//! nothing twice.

use std::collections::BTreeSet;

use serde::Deserialize;
use thoonk_protocol::{Base, ChangeId, ErrorCode, FeedName, Outcome};

use super::apply::{conflict, create_feed, rejection, write_args, CREATE_ATTEMPTS};
use super::keys::applied_key;
use super::payload::JobPayload;
use super::plan::{FeedWrite, HandlerError};
use super::scripts::Scripts;
use crate::feeds::{feed_keys, FeedError, FeedStore};
use crate::redis_target::{hash_tag, RedisConn};

/// The prefix of a batch job's id (`batch:<id of its first change>`).
pub const BATCH_JOB_PREFIX: &str = "batch:";

/// A batch job's payload as stored in `feed.items:<queue>`:
/// `{"id": "batch:c1:5", "user": "bob", "batch": [<job payload>, …]}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct BatchPayload {
    /// The user every change is made for.
    pub user: String,
    /// The changes, oldest first.
    pub batch: Vec<JobPayload>,
}

impl BatchPayload {
    /// The payload of batch job `job_id`, when it is one.
    pub fn parse_for(job_id: &str, text: &str) -> Option<Result<Self, String>> {
        if !job_id.starts_with(BATCH_JOB_PREFIX) || !text.contains("\"batch\"") {
            return None;
        }
        Some(serde_json::from_str(text).map_err(|e| e.to_string()))
    }
}

/// One change of a batch, as the worker planned it.
pub(crate) enum Planned {
    /// The write to apply in the batch's script.
    Write(FeedWrite),
    /// Refused before the script (access rules, a change to another feed):
    /// recorded by the script as this change's outcome.
    Rejected(Outcome),
}

impl Planned {
    /// A planned change from a handler's answer for a batch of `feed`: a
    /// plan of exactly one write to `feed`, or a rejection.
    pub fn from_plan(
        feed: &FeedName,
        plan: Result<super::Plan, HandlerError>,
    ) -> Result<Self, String> {
        let plan = match plan {
            Ok(plan) => plan,
            Err(HandlerError::Rejected { code, message }) => {
                return Ok(Self::Rejected(Outcome::Rejected { code, message }))
            }
            Err(HandlerError::Failed(error)) => return Err(error),
        };
        match <[FeedWrite; 1]>::try_from(plan.writes) {
            Ok([write]) if &write.feed == feed => Ok(Self::Write(write)),
            _ => Ok(Self::Rejected(Outcome::Rejected {
                code: ErrorCode::BadRequest,
                message: format!("a batch holds single changes to feed {feed} only"),
            })),
        }
    }
}

/// Applies the planned changes `planned` (ids `ids`) of a batch to `feed`.
/// Returns each change's outcome in order; `None` for the changes after a
/// conflict (not attempted).
pub(crate) async fn apply_batch(
    conn: &RedisConn,
    scripts: &Scripts,
    store: &FeedStore,
    feed: &FeedName,
    ids: &[ChangeId],
    planned: &mut [Planned],
    retention_ms: &str,
) -> Result<Vec<Option<Outcome>>, FeedError> {
    if conn.is_cluster() && hash_tag(feed.as_str()).is_none() {
        // The applied records and the feed must share a slot.
        let message = format!(
            "feed {feed} has no {{hash tag}}, so its changes cannot be applied on a Redis Cluster"
        );
        return Ok(ids
            .iter()
            .map(|_| {
                Some(Outcome::Rejected {
                    code: ErrorCode::BadRequest,
                    message: message.clone(),
                })
            })
            .collect());
    }
    let mut created = 0;
    loop {
        let mut invocation = scripts.apply_batch.prepare_invoke();
        for id in ids {
            invocation.key(applied_key(feed, &id.0));
        }
        for key in feed_keys(feed) {
            invocation.key(key);
        }
        invocation.arg(retention_ms).arg(ids.len());
        for (id, change) in ids.iter().zip(planned.iter()) {
            invocation.arg(&id.0);
            match change {
                Planned::Rejected(outcome) => {
                    let verdict = serde_json::to_string(outcome).unwrap_or_default();
                    invocation.arg(verdict).arg("").arg("").arg("").arg("");
                    invocation.arg("").arg("").arg("");
                }
                Planned::Write(write) => {
                    invocation.arg("");
                    write_args(&mut invocation, write);
                    invocation.arg(if write.create.is_some() { "1" } else { "" });
                }
            }
        }
        let mut c = conn.clone();
        let reply: Vec<String> = invocation
            .invoke_async(&mut c)
            .await
            .map_err(FeedError::Redis)?;
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(ids.len());
        let mut stop = None;
        for pair in reply.chunks(2) {
            let [status, text] = pair else {
                return Err(corrupt(feed, format!("odd reply {reply:?}")));
            };
            let index = outcomes.len();
            let outcome = match status.as_str() {
                "accepted" | "rejected" => serde_json::from_str(text)
                    .map_err(|e| corrupt(feed, format!("outcome {text}: {e}")))?,
                "refused" => {
                    let (code, message) = text.split_once(' ').unwrap_or((text, ""));
                    match planned.get(index) {
                        Some(Planned::Write(write)) => rejection(code, write, message),
                        _ => Outcome::Rejected {
                            code: ErrorCode::BadRequest,
                            message: message.to_owned(),
                        },
                    }
                }
                "stop" => {
                    stop = Some(text.clone());
                    break;
                }
                other => return Err(corrupt(feed, format!("status {other}"))),
            };
            outcomes.push(Some(outcome));
        }
        let Some(stop) = stop else {
            outcomes.resize(ids.len(), None);
            return Ok(outcomes);
        };
        let index = outcomes.len();
        let Some(Planned::Write(write)) = planned.get(index) else {
            return Err(corrupt(feed, format!("stop {stop} at change {index}")));
        };
        let code = stop.split(' ').next().unwrap_or_default();
        match code {
            "CONFLICT" | "UNKNOWNBASE" => {
                let base = write.base.unwrap_or(Base::Rev(0));
                let outcome = conflict(store, feed, &write.id, base, code == "CONFLICT").await?;
                outcomes.push(Some(outcome));
                outcomes.resize(ids.len(), None);
                return Ok(outcomes);
            }
            "NOFEED" if created < CREATE_ATTEMPTS => {
                created += 1;
                create_feed(store, write).await?;
            }
            _ => {
                return Err(corrupt(
                    feed,
                    format!("stopped by {stop} at change {index}"),
                ))
            }
        }
    }
}

fn corrupt(feed: &FeedName, reason: String) -> FeedError {
    FeedError::Corrupt {
        feed: feed.to_string(),
        reason: format!("batch apply: {reason}"),
    }
}

/// The feeds a batch's accepted changes may have created (to register them
/// after a retry, as a single job does).
pub(crate) fn created_feeds(
    planned: &[Planned],
    outcomes: &[Option<Outcome>],
) -> BTreeSet<FeedName> {
    planned
        .iter()
        .zip(outcomes)
        .filter_map(|(p, o)| match (p, o) {
            (Planned::Write(w), Some(Outcome::Accepted { .. })) if w.create.is_some() => {
                Some(w.feed.clone())
            }
            _ => None,
        })
        .collect()
}
