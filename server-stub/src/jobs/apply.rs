//! Applies a [`Plan`] to the feeds in one `job_apply.lua` run: exactly once
//! (the applied record), with conflict detection against base revisions.

use std::collections::{BTreeMap, BTreeSet};

use redis::RedisError;
use thoonk_protocol::{Base, ErrorCode, FeedName, ItemId, Outcome};

use super::keys::applied_key;
use super::plan::{FeedWrite, Plan, WriteKind};
use super::scripts::Scripts;
use crate::feeds::{feed_keys, json_text, position_args, FeedError, FeedSettings, FeedStore};
use crate::library::Invocation;
use crate::redis_target::{hash_tag, RedisConn};

/// How often a write retries after creating a missing feed.
pub(super) const CREATE_ATTEMPTS: usize = 3;
/// Most change-log entries a conflict carries.
const CONFLICT_HISTORY_LIMIT: usize = 10_000;

/// What applying a plan came to.
#[derive(Debug)]
pub(crate) enum Applied {
    /// Finished: accepted (now or on an earlier attempt), conflict or rejected.
    Done(Outcome),
    /// An item changed between the handler's read and the write: run the handler again.
    Stale,
}

/// The script's base argument: `<epoch>:<rev>`, or a bare `<rev>` for a
/// base that names no epoch.
fn base_arg(base: Base) -> String {
    match base {
        Base::At(p) => format!("{}:{}", p.epoch, p.rev),
        Base::Rev(rev) => rev.to_string(),
    }
}

/// Adds the arguments of one write that `job_apply.lua` and
/// `job_apply_batch.lua` take alike: kind, item id, item JSON text (or ''),
/// position, reference item and base (or '').
pub(super) fn write_args(invocation: &mut Invocation, write: &FeedWrite) {
    let (kind, item, position) = match &write.kind {
        WriteKind::Upsert { item, position } => ("upsert", json_text(item), position.as_ref()),
        WriteKind::Insert { item, position } => ("insert", json_text(item), position.as_ref()),
        WriteKind::Edit { item } => ("edit", json_text(item), None),
        WriteKind::Retract => ("retract", String::new(), None),
        WriteKind::Move { position } => ("move", String::new(), Some(position)),
    };
    let (pos, rel) = position_args(position);
    invocation
        .arg(kind)
        .arg(write.id.as_str())
        .arg(item)
        .arg(pos)
        .arg(rel)
        .arg(write.base.map(base_arg).unwrap_or_default());
}

/// The feeds of a plan in order of first use.
fn feeds_of(plan: &Plan) -> Vec<FeedName> {
    let mut feeds: Vec<FeedName> = Vec::new();
    for write in &plan.writes {
        if !feeds.contains(&write.feed) {
            feeds.push(write.feed.clone());
        }
    }
    feeds
}

/// A script refusal: code, the write it concerns, and the message.
struct Refusal {
    code: String,
    write: usize,
    message: String,
}

fn refusal(err: &RedisError) -> Option<Refusal> {
    let code = err.code()?.to_owned();
    let detail = err.detail().unwrap_or_default().trim();
    let (index, message) = detail.split_once(' ').unwrap_or((detail, ""));
    let write = index.parse::<usize>().ok()?.checked_sub(1)?;
    Some(Refusal {
        code,
        write,
        message: message.to_owned(),
    })
}

/// Applies `plan` for job `job`; the applied record is kept for `retention_ms`.
pub(crate) async fn apply(
    conn: &RedisConn,
    scripts: &Scripts,
    store: &FeedStore,
    job: &str,
    plan: &Plan,
    retention_ms: &str,
) -> Result<Applied, FeedError> {
    for (i, write) in plan.writes.iter().enumerate() {
        let twice = plan.writes[..i]
            .iter()
            .any(|w| w.feed == write.feed && w.id == write.id);
        if twice {
            // The script checks every write against the state before the job.
            return Ok(Applied::Done(Outcome::Rejected {
                code: ErrorCode::Internal,
                message: format!(
                    "the server planned two writes to item {} of feed {}; report this",
                    write.id, write.feed
                ),
            }));
        }
    }
    let feeds = feeds_of(plan);
    if conn.is_cluster() {
        // One script, one slot: every feed of the job needs the same hash tag.
        let tags: BTreeSet<Option<&str>> = feeds.iter().map(|f| hash_tag(f.as_str())).collect();
        if tags.len() > 1 || tags.contains(&None) {
            let names: Vec<&str> = feeds.iter().map(FeedName::as_str).collect();
            return Ok(Applied::Done(Outcome::Rejected {
                code: ErrorCode::BadRequest,
                message: format!(
                    "this change writes feeds {names:?}, which are not on one shard of the Redis \
                     Cluster: a change may only write feeds whose names carry the same {{hash tag}}"
                ),
            }));
        }
    }
    let Some(first) = feeds.first() else {
        return Ok(Applied::Done(Outcome::Accepted {
            result: plan.result.clone(),
            revs: BTreeMap::new(),
            epochs: BTreeMap::new(),
        }));
    };
    let mut invocation = scripts.apply.prepare_invoke();
    invocation.key(applied_key(first, job));
    for feed in &feeds {
        for key in feed_keys(feed) {
            invocation.key(key);
        }
    }
    invocation
        .arg(job)
        .arg(retention_ms)
        .arg(json_text(&plan.result))
        .arg(plan.writes.len());
    for write in &plan.writes {
        let index = feeds.iter().position(|f| *f == write.feed).unwrap_or(0) + 1;
        invocation.arg(index);
        write_args(&mut invocation, write);
        invocation.arg(write.guard.map(|r| r.to_string()).unwrap_or_default());
    }
    let mut created = 0;
    loop {
        let mut c = conn.clone();
        let reply: Result<(String, String), RedisError> = invocation.invoke_async(&mut c).await;
        let err = match reply {
            Ok((_, outcome)) => {
                let outcome = serde_json::from_str(&outcome).map_err(|e| FeedError::Corrupt {
                    feed: first.to_string(),
                    reason: format!("applied record of job {job} is not an outcome: {e}"),
                })?;
                return Ok(Applied::Done(outcome));
            }
            Err(err) => err,
        };
        let Some(refused) = refusal(&err) else {
            return Err(FeedError::Redis(err));
        };
        let Some(write) = plan.writes.get(refused.write) else {
            return Err(FeedError::Redis(err));
        };
        match refused.code.as_str() {
            "STALE" => return Ok(Applied::Stale),
            code @ ("CONFLICT" | "UNKNOWNBASE") => {
                let base = write.base.unwrap_or(Base::Rev(0));
                let known = code == "CONFLICT";
                return Ok(Applied::Done(
                    conflict(store, &write.feed, &write.id, base, known).await?,
                ));
            }
            "NOFEED" if write.create.is_some() && created < CREATE_ATTEMPTS => {
                created += 1;
                create_feed(store, write).await?;
            }
            code => return Ok(Applied::Done(rejection(code, write, &refused.message))),
        }
    }
}

pub(super) async fn create_feed(store: &FeedStore, write: &FeedWrite) -> Result<(), FeedError> {
    let settings = write
        .create
        .clone()
        .unwrap_or_else(|| FeedSettings::new(crate::feeds::FeedType::Feed));
    match store.create(&write.feed, &settings).await {
        Ok(_) | Err(FeedError::FeedExists { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The rejected outcome of a script refusal.
pub(super) fn rejection(code: &str, write: &FeedWrite, message: &str) -> Outcome {
    let (code, message) = match code {
        "NOFEED" => (
            ErrorCode::NotFound,
            format!("feed {} does not exist", write.feed),
        ),
        "NOITEM" => (
            ErrorCode::NotFound,
            format!(
                "item {} does not exist in feed {} (it may have been removed)",
                write.id, write.feed
            ),
        ),
        "EXISTS" => (
            ErrorCode::BadRequest,
            format!(
                "item {} already exists in feed {}: choose another id",
                write.id, write.feed
            ),
        ),
        "FEEDTYPE" => (
            ErrorCode::BadRequest,
            format!(
                "feed {} is a {}: this change does not apply to it",
                write.feed,
                message
                    .split_whitespace()
                    .next()
                    .unwrap_or("different kind")
            ),
        ),
        _ => (ErrorCode::BadRequest, message.to_owned()),
    };
    Outcome::Rejected { code, message }
}

/// The conflict outcome for item `id` of `feed` changed after `base`: its
/// value at `base`, its current value, and the feed's changes since `base`.
/// The base is *unknown* — `unknown_base`, no value, no history, never to be
/// merged against as "no item" — when the script found it of another epoch
/// (`known` false), when the change log no longer reaches it or it is ahead
/// of the feed, or when the feed moved to another epoch since.
pub(crate) async fn conflict(
    store: &FeedStore,
    feed: &FeedName,
    id: &ItemId,
    base: Base,
    known: bool,
) -> Result<Outcome, FeedError> {
    let base_value = if known {
        match store.item_at(feed, id, base.rev()).await {
            Ok(version) if base.epoch().is_none_or(|e| e == version.epoch) => Some(version.item),
            Ok(_) => None,
            Err(FeedError::HistoryGone { .. } | FeedError::FutureRevision { .. }) => None,
            Err(err) => return Err(err),
        }
    } else {
        None
    };
    let base = base.rev();
    let empty = || crate::feeds::History {
        epoch: 0,
        rev: 0,
        oldest: 0,
        events: Vec::new(),
    };
    // Read the history and the current value at the same revision (a write
    // in between makes the pair disagree: read again). An unknown base has
    // no history to read.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let history = match base_value {
            None => empty(),
            Some(_) => match store.history(feed, base, CONFLICT_HISTORY_LIMIT).await {
                Ok(history) => history,
                Err(FeedError::HistoryGone { .. }) => empty(),
                Err(err) => return Err(err),
            },
        };
        let current = store.get(feed, id).await?;
        if base_value.is_none() || current.rev == history.rev || attempt >= 3 {
            return Ok(Outcome::Conflict {
                feed: feed.clone(),
                id: id.clone(),
                unknown_base: base_value.is_none(),
                base: base_value.flatten(),
                epoch: current.epoch,
                current: current.item.map(|item| item.item),
                rev: current.rev,
                history: history.events,
            });
        }
    }
}
