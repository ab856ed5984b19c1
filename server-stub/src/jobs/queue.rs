//! [`JobQueue`]: a classic Thoonk job queue with an exactly-once ledger,
//! stored outcomes, failure counts, stalls and claim timeouts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::redis_target::{hash_tag, RedisConn, RedisTarget};
use redis::{AsyncCommands, RedisError};
use serde::Serialize;
use serde_json::Value as Json;
use thoonk_protocol::{ChangeId, ChangeRequest, ErrorCode, FeedName, Outcome};

use super::error::JobError;
use super::keys::{
    ledger_key, queue_keys, CANCELLED, CLAIMED, ERRORS, IDS, ITEMS, PUBLISHED, STALLED,
};
use super::payload::{JobPayload, Priority};
use super::scripts::Scripts;
use super::settings::QueueSettings;
use crate::feeds::{CONFFEED_CHANNEL, NEWFEED_CHANNEL, REGISTRY};
use crate::gateway::access::User;
use crate::library::{self, Function, Invocation};

/// What became of a submitted change.
#[derive(Clone, Debug, PartialEq)]
pub enum Submitted {
    /// Durably queued now.
    Queued,
    /// The id was queued before and has not finished yet; nothing was added.
    AlreadyQueued,
    /// The id finished before; this is its stored outcome. Nothing was added.
    Finished(Outcome),
    /// Only in a batch: not queued and not recorded, because a change before
    /// it in the batch is still queued or ended in a conflict. The client
    /// sends it again once the changes before it have their outcomes.
    Deferred,
}

/// A claimed job, handed to a worker.
#[derive(Clone, Debug)]
pub(crate) struct Claimed {
    pub id: String,
    pub payload: String,
    pub failures: u64,
    /// The claim time (ms), which identifies this claim.
    pub claimed_at: String,
    /// Ids still available after this claim.
    pub remaining: u64,
}

/// What a failure did to a claimed job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Back on the queue after `failures` failures.
    Retry(u64),
    /// Stalled after `failures` failures.
    Stalled(u64),
    /// Not claimed any more (timed out and taken by the sweep, or retracted).
    Gone,
}

/// One job as the admin commands show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// `available`, `claimed`, `stalled` or `orphaned` (payload without a
    /// place: left by a classic worker that died between pop and claim).
    pub state: &'static str,
    /// When it was put or last retried (ms since 1970), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put: Option<f64>,
    /// When it was claimed (ms since 1970), if in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed: Option<f64>,
    /// Failures since it was put or retried.
    pub failures: u64,
    /// The last failure: `{"error", "failures", "at"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Json>,
    /// The payload (a JSON string when it is not JSON).
    pub payload: Json,
}

/// A job queue in Redis. Cheap to clone; clones share one multiplexed,
/// auto-reconnecting connection.
#[derive(Clone)]
pub struct JobQueue {
    conn: RedisConn,
    scripts: Arc<Scripts>,
    name: Arc<str>,
    keys: Arc<[String; 10]>,
    settings: QueueSettings,
}

fn parse_outcome(queue: &str, text: &str) -> Result<Outcome, JobError> {
    serde_json::from_str(text).map_err(|e| JobError::Corrupt {
        queue: queue.to_owned(),
        reason: format!("stored outcome {text:?} is not an outcome: {e}"),
    })
}

fn json_or_text(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()))
}

/// The classic create of a job queue: separate, idempotent steps.
async fn create_queue(conn: &mut RedisConn, queue: &str) -> Result<(), JobError> {
    let keys = queue_keys(queue);
    let instance = format!("thoonk-server-{}", std::process::id());
    let added: i64 = conn.sadd(REGISTRY, queue).await?;
    let _: () = conn.hset(&keys[0], "type", "job").await?;
    let announce = format!("{queue}\0{instance}");
    if added == 1 {
        let _: () = conn.publish(NEWFEED_CHANNEL, &announce).await?;
    }
    let _: () = conn.publish(CONFFEED_CHANNEL, &announce).await?;
    Ok(())
}

impl JobQueue {
    /// Connects, loads the scripts and creates the queue (classic: `feeds`
    /// set, `feed.config:N` with `type=job`, `newfeed` + `conffeed`) unless it exists.
    pub async fn open(
        redis: impl Into<RedisTarget>,
        queue: &str,
        settings: QueueSettings,
    ) -> Result<JobQueue, JobError> {
        Self::connect(redis.into(), queue, settings, true).await
    }

    /// Connects to an existing queue; fails with [`JobError::NoSuchQueue`]
    /// when there is none (for admin commands, which should not create one).
    pub async fn attach(
        redis: impl Into<RedisTarget>,
        queue: &str,
        settings: QueueSettings,
    ) -> Result<JobQueue, JobError> {
        Self::connect(redis.into(), queue, settings, false).await
    }

    async fn connect(
        redis: RedisTarget,
        queue: &str,
        settings: QueueSettings,
        create: bool,
    ) -> Result<JobQueue, JobError> {
        FeedName::new(queue).map_err(|e| JobError::BadQueueName {
            queue: queue.to_owned(),
            reason: e.to_string(),
        })?;
        if redis.is_cluster() && hash_tag(queue).is_none() {
            return Err(JobError::BadQueueName {
                queue: queue.to_owned(),
                reason: format!(
                    "on a Redis Cluster a queue's keys must share one slot: give it a hash tag, e.g. {{{queue}}}"
                ),
            });
        }
        let mut conn = redis.connect().await?;
        let scripts = Scripts::new();
        library::load(&mut conn).await?;
        let keys = queue_keys(queue);
        let kind: Option<String> = conn.hget(&keys[0], "type").await?;
        match kind.as_deref() {
            Some("job") => {}
            Some(other) => {
                return Err(JobError::NotAQueue {
                    queue: queue.to_owned(),
                    kind: other.to_owned(),
                })
            }
            None if !create => {
                return Err(JobError::NoSuchQueue {
                    queue: queue.to_owned(),
                })
            }
            None => create_queue(&mut conn, queue).await?,
        }
        Ok(JobQueue {
            conn,
            scripts: Arc::new(scripts),
            name: queue.into(),
            keys: Arc::new(keys),
            settings,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub(crate) fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    pub(crate) fn scripts(&self) -> &Scripts {
        &self.scripts
    }

    fn invocation(&self, script: &Function, id: Option<&str>) -> Invocation {
        let mut invocation = script.prepare_invoke();
        for key in self.keys.iter() {
            invocation.key(key);
        }
        if let Some(id) = id {
            invocation.key(ledger_key(&self.name, id));
        }
        invocation
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: Invocation,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await
    }

    /// Calls a submitting function (`submit()` builds the call); when the
    /// queue's config vanished (FLUSHALL, a restore), creates the queue
    /// again and calls once more. `id` names the job in errors.
    async fn submit_creating(
        &self,
        submit: impl Fn() -> Invocation,
        id: &str,
    ) -> Result<Vec<String>, JobError> {
        match self.invoke(submit()).await {
            Err(err)
                if err.code() == Some("NOQUEUE")
                    && err.detail().is_some_and(|d| d.trim() == "missing") =>
            {
                tracing::warn!(queue = %self.name, "the job queue was gone; creating it again");
                create_queue(&mut self.conn.clone(), self.name.as_ref()).await?;
                self.invoke(submit())
                    .await
                    .map_err(|e| self.job_error(id, e))
            }
            other => other.map_err(|e| self.job_error(id, e)),
        }
    }

    fn job_error(&self, id: &str, err: RedisError) -> JobError {
        let queue = self.name.to_string();
        let id = id.to_owned();
        match err.code() {
            Some("NOQUEUE") => JobError::NotAQueue {
                queue,
                kind: err.detail().unwrap_or("missing").trim().to_owned(),
            },
            Some("WRONGUSER") => JobError::WrongUser {
                id,
                owner: err.detail().unwrap_or_default().trim().to_owned(),
            },
            Some("NOTSTALLED") => JobError::NotStalled { queue, id },
            Some("NOJOB") => JobError::NoSuchJob { queue, id },
            Some("CLAIMED") => JobError::InFlight { queue, id },
            _ => JobError::Redis(err),
        }
    }

    /// Durably queues a client change as a job whose id is the change id,
    /// unless that id was seen before (exactly-once ledger, kept for the
    /// queue's retention; records the submitting user: the same id from
    /// another user is refused with [`JobError::WrongUser`]).
    pub async fn submit(&self, user: &User, change: &ChangeRequest) -> Result<Submitted, JobError> {
        self.put(user, change, Priority::Normal).await
    }

    /// Like [`JobQueue::submit`], with a priority.
    pub async fn put(
        &self,
        user: &User,
        change: &ChangeRequest,
        priority: Priority,
    ) -> Result<Submitted, JobError> {
        self.put_payload(&JobPayload::new(&user.name, change), priority)
            .await
    }

    /// Puts a job payload as it is stored (see [`JobPayload`]).
    pub async fn put_payload(
        &self,
        payload: &JobPayload,
        priority: Priority,
    ) -> Result<Submitted, JobError> {
        let id = payload.id.0.as_str();
        let json = payload.to_json();
        let submit = || {
            let mut invocation = self.invocation(&self.scripts.submit, Some(id));
            invocation
                .arg(id)
                .arg(&json)
                .arg(&payload.user)
                .arg(match priority {
                    Priority::High => "high",
                    Priority::Normal => "normal",
                })
                .arg(self.settings.retention_ms());
            invocation
        };
        let reply = self.submit_creating(submit, id).await?;
        match reply.as_slice() {
            [state] if state == "queued" => Ok(Submitted::Queued),
            [state] if state == "already_queued" => Ok(Submitted::AlreadyQueued),
            [state, outcome] if state == "finished" => {
                Ok(Submitted::Finished(parse_outcome(&self.name, outcome)?))
            }
            other => Err(JobError::Corrupt {
                queue: self.name.to_string(),
                reason: format!("submit reply {other:?}"),
            }),
        }
    }

    /// Durably queues one client's changes to one feed, in order, as one
    /// batch job (`job_submit_batch.lua`): each change is checked against
    /// the exactly-once ledger and answered as [`JobQueue::submit`] would,
    /// or [`Submitted::Deferred`] when a change before it is still queued
    /// or ended in a conflict.
    pub async fn submit_batch(
        &self,
        user: &User,
        changes: &[ChangeRequest],
    ) -> Result<Vec<Submitted>, JobError> {
        let first = changes.first().map(|c| c.id.0.as_str()).unwrap_or_default();
        let payloads: Vec<String> = changes
            .iter()
            .map(|c| JobPayload::new(&user.name, c).to_json())
            .collect();
        let submit = || {
            let mut invocation = self.invocation(&self.scripts.submit_batch, None);
            for change in changes {
                invocation.key(ledger_key(&self.name, &change.id.0));
            }
            invocation
                .arg(&user.name)
                .arg("normal")
                .arg(self.settings.retention_ms())
                .arg(changes.len());
            for (change, payload) in changes.iter().zip(&payloads) {
                invocation.arg(&change.id.0).arg(payload);
            }
            invocation
        };
        let reply = self.submit_creating(submit, first).await?;
        let corrupt = || JobError::Corrupt {
            queue: self.name.to_string(),
            reason: format!("submit_batch reply {reply:?}"),
        };
        let Some((_job, states)) = reply.split_first() else {
            return Err(corrupt());
        };
        if states.len() != 2 * changes.len() {
            return Err(corrupt());
        }
        states
            .chunks(2)
            .map(|pair| match (pair[0].as_str(), &pair[1]) {
                ("queued", _) => Ok(Submitted::Queued),
                ("already_queued", _) => Ok(Submitted::AlreadyQueued),
                ("finished", outcome) => {
                    Ok(Submitted::Finished(parse_outcome(&self.name, outcome)?))
                }
                ("deferred", _) => Ok(Submitted::Deferred),
                _ => Err(corrupt()),
            })
            .collect()
    }

    /// Finishes batch job `job` while the claim made at `claimed_at` holds
    /// it (`job_finish_batch.lua`): each change with an outcome has it
    /// stored and published, each change without one (not attempted) loses
    /// its ledger record. False when the job was not held by that claim
    /// (nothing recorded).
    pub(crate) async fn finish_batch(
        &self,
        job: &str,
        claimed_at: &str,
        outcomes: &[(ChangeId, Option<Outcome>)],
    ) -> Result<bool, JobError> {
        let mut invocation = self.invocation(&self.scripts.finish_batch, None);
        for (id, _) in outcomes {
            invocation.key(ledger_key(&self.name, &id.0));
        }
        invocation
            .arg(job)
            .arg(self.settings.retention_ms())
            .arg(claimed_at)
            .arg(outcomes.len());
        for (id, outcome) in outcomes {
            let text = outcome
                .as_ref()
                .map(|o| serde_json::to_string(o).unwrap_or_default())
                .unwrap_or_default();
            invocation.arg(&id.0).arg(text);
        }
        let reply: Vec<String> = self.invoke(invocation).await?;
        Ok(reply.first().is_some_and(|s| s == "finished"))
    }

    /// The stored outcome of a change id, if it finished (for reconnecting clients).
    pub async fn outcome(&self, id: &ChangeId) -> Result<Option<Outcome>, JobError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn.hget(ledger_key(&self.name, &id.0), "outcome").await?;
        text.map(|t| parse_outcome(&self.name, &t)).transpose()
    }

    /// Takes the next available job, atomically marking it claimed.
    pub(crate) async fn claim(&self) -> Result<Option<Claimed>, JobError> {
        let reply: Option<(String, String, u64, String, u64)> = self
            .invoke(self.invocation(&self.scripts.claim, None))
            .await?;
        Ok(
            reply.map(|(id, payload, failures, claimed_at, remaining)| Claimed {
                id,
                payload,
                failures,
                claimed_at,
                remaining,
            }),
        )
    }

    /// Finishes a job with `outcome` (JSON): stores it, publishes it on
    /// `job.finish:N`, but only while the claim made at `claimed_at` still
    /// holds the job; when `claim_next`, also claims the next available job
    /// in the same script. Returns the outcome as stored (the first one
    /// wins; `None` when the job is not on the queue any more or another
    /// claim holds it) and the next job.
    pub(crate) async fn finish_and_claim(
        &self,
        id: &str,
        claimed_at: &str,
        outcome: &str,
        claim_next: bool,
    ) -> Result<(Option<Outcome>, Option<Claimed>), JobError> {
        let mut invocation = self.invocation(&self.scripts.finish, Some(id));
        invocation
            .arg(id)
            .arg(outcome)
            .arg(self.settings.retention_ms())
            .arg(if claim_next { "next" } else { "" })
            .arg(claimed_at);
        let reply: Vec<String> = self.invoke(invocation).await?;
        let (stored, rest) = match reply.as_slice() {
            [state, stored, rest @ ..] if state == "finished" => {
                (Some(parse_outcome(&self.name, stored)?), rest)
            }
            [_, rest @ ..] => (None, rest),
            [] => (None, &[][..]),
        };
        let next = match rest {
            [] => None,
            [id, payload, failures, claimed_at, remaining] => Some(Claimed {
                id: id.clone(),
                payload: payload.clone(),
                failures: failures.parse().unwrap_or(0),
                claimed_at: claimed_at.clone(),
                remaining: remaining.parse().unwrap_or(0),
            }),
            other => {
                return Err(JobError::Corrupt {
                    queue: self.name.to_string(),
                    reason: format!("finish reply: unexpected {other:?}"),
                })
            }
        };
        Ok((stored, next))
    }

    /// Counts a failure of the claim made at `claimed_at` (`None`: any
    /// claim): back on the queue, or stalled past max retries.
    pub(crate) async fn fail(
        &self,
        id: &str,
        claimed_at: Option<&str>,
        error: &str,
    ) -> Result<Failed, JobError> {
        let mut invocation = self.invocation(&self.scripts.fail, None);
        invocation
            .arg(id)
            .arg(error)
            .arg(self.settings.max_retries)
            .arg(claimed_at.unwrap_or(""));
        let reply: (String, u64) = self.invoke(invocation).await?;
        Ok(match reply.0.as_str() {
            "retry" => Failed::Retry(reply.1),
            "stalled" => Failed::Stalled(reply.1),
            _ => Failed::Gone,
        })
    }

    /// Puts every job claimed longer than the claim timeout back on the
    /// queue (or stalls it). Returns the requeued and the stalled ids.
    pub async fn sweep(&self) -> Result<(Vec<String>, Vec<String>), JobError> {
        let mut invocation = self.invocation(&self.scripts.sweep, None);
        invocation
            .arg(self.settings.claim_timeout_ms())
            .arg(self.settings.max_retries)
            .arg(1000);
        Ok(self.invoke(invocation).await?)
    }

    /// Every unfinished job, in queue order: available (next first), claimed, stalled, orphaned.
    pub async fn list(&self) -> Result<Vec<JobInfo>, JobError> {
        let k = &self.keys;
        type Reads = (
            HashMap<String, String>,
            Vec<String>,
            Vec<(String, f64)>,
            HashSet<String>,
            HashMap<String, u64>,
            HashMap<String, String>,
            HashMap<String, f64>,
        );
        let mut conn = self.conn.clone();
        let (items, ids, claimed, stalled, cancelled, errors, published): Reads = redis::pipe()
            .atomic()
            .hgetall(&k[ITEMS])
            .lrange(&k[IDS], 0, -1)
            .zrange_withscores(&k[CLAIMED], 0, -1)
            .smembers(&k[STALLED])
            .hgetall(&k[CANCELLED])
            .hgetall(&k[ERRORS])
            .zrange_withscores(&k[PUBLISHED], 0, -1)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let info = |id: &str, state: &'static str, claimed_at: Option<f64>| {
            let error = errors.get(id).map(|e| json_or_text(e));
            JobInfo {
                id: id.to_owned(),
                state,
                put: published.get(id).copied(),
                claimed: claimed_at,
                // A stall clears the classic count; its last error keeps it.
                failures: match (cancelled.get(id), state) {
                    (Some(n), _) => *n,
                    (None, "stalled") => error
                        .as_ref()
                        .and_then(|e| e.get("failures"))
                        .and_then(Json::as_u64)
                        .unwrap_or(0),
                    (None, _) => 0,
                },
                last_error: error,
                payload: items.get(id).map(|p| json_or_text(p)).unwrap_or(Json::Null),
            }
        };
        for id in ids.iter().rev() {
            if items.contains_key(id) && seen.insert(id.clone()) {
                out.push(info(id, "available", None));
            }
        }
        for (id, at) in &claimed {
            if seen.insert(id.clone()) {
                out.push(info(id, "claimed", Some(*at)));
            }
        }
        let mut stalled: Vec<&String> = stalled.iter().collect();
        stalled.sort();
        for id in stalled {
            if seen.insert(id.clone()) {
                out.push(info(id, "stalled", None));
            }
        }
        let mut rest: Vec<&String> = items.keys().filter(|id| !seen.contains(*id)).collect();
        rest.sort();
        for id in rest {
            out.push(info(id, "orphaned", None));
        }
        Ok(out)
    }

    /// One unfinished job, if it is on the queue.
    pub async fn show(&self, id: &str) -> Result<Option<JobInfo>, JobError> {
        Ok(self.list().await?.into_iter().find(|j| j.id == id))
    }

    /// Puts a stalled job back on the queue with a fresh failure count.
    pub async fn retry(&self, id: &str) -> Result<(), JobError> {
        let mut invocation = self.invocation(&self.scripts.retry, None);
        invocation.arg(id);
        let _: i64 = self
            .invoke(invocation)
            .await
            .map_err(|e| self.job_error(id, e))?;
        Ok(())
    }

    /// Removes a job wherever it is; returns the state it was in (`none`
    /// when it was not on the queue). A submitter still waiting gets a
    /// rejected outcome saying an administrator withdrew the change.
    pub async fn retract(&self, id: &str) -> Result<String, JobError> {
        let outcome = Outcome::Rejected {
            code: ErrorCode::BadRequest,
            message: "an administrator withdrew this change".into(),
        };
        let mut invocation = self.invocation(&self.scripts.retract, Some(id));
        invocation
            .arg(id)
            .arg(serde_json::to_string(&outcome).unwrap_or_default())
            .arg(self.settings.retention_ms());
        self.invoke(invocation)
            .await
            .map_err(|e| self.job_error(id, e))
    }

    /// Replaces the payload of a job that is available or stalled.
    pub async fn edit(&self, id: &str, payload: &JobPayload) -> Result<(), JobError> {
        if payload.id.0 != id {
            return Err(JobError::BadPayload {
                reason: format!("its id {} is not the job id {id}", payload.id.0),
            });
        }
        let mut invocation = self.invocation(&self.scripts.edit, None);
        invocation.arg(id).arg(payload.to_json());
        let _: i64 = self
            .invoke(invocation)
            .await
            .map_err(|e| self.job_error(id, e))?;
        Ok(())
    }

    /// The ledger record of a change id: `{"user", "state", "put", "finished", "outcome"}`
    /// (`None` when unknown or expired).
    pub async fn record(&self, id: &str) -> Result<Option<Json>, JobError> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = conn.hgetall(ledger_key(&self.name, id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut record = serde_json::Map::new();
        for (name, value) in fields {
            let value = match name.as_str() {
                "outcome" => json_or_text(&value),
                "put" | "finished" => value
                    .parse::<u64>()
                    .map(Json::from)
                    .unwrap_or(Json::String(value)),
                _ => Json::String(value),
            };
            record.insert(name, value);
        }
        Ok(Some(Json::Object(record)))
    }
}
