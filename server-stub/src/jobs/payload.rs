//! The job payload stored in `feed.items:<queue>`: JSON that any process can write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thoonk_protocol::{Base, ChangeId, ChangeRequest, FeedName, Operation};

use super::error::JobError;

/// One job as stored: the client's change and the user who made it.
///
/// ```json
/// {"id": "c1:7", "user": "alice",
///  "op": {"kind": "action", "name": "complete_task",
///         "payload": {"feed": "team:353:member:alice:tasks", "id": "t1"}},
///  "base": {"team:353:member:alice:tasks": {"epoch": 1764440000123456, "rev": 12}}}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPayload {
    /// The change id, also the job id.
    pub id: ChangeId,
    /// The user the change is made for; the workers check the ACL as this user.
    pub user: String,
    /// What to do.
    pub op: Operation,
    /// The epoch and revision of each feed the change was made against (a
    /// bare revision: in the feed's current epoch); a feed missing here is
    /// written without a conflict check.
    #[serde(default)]
    pub base: BTreeMap<FeedName, Base>,
}

impl JobPayload {
    /// The payload of `change` made by `user`.
    pub fn new(user: &str, change: &ChangeRequest) -> Self {
        Self {
            id: change.id.clone(),
            user: user.to_owned(),
            op: change.op.clone(),
            base: change.base.clone(),
        }
    }

    /// Parses a stored payload.
    pub fn parse(text: &str) -> Result<Self, JobError> {
        serde_json::from_str(text).map_err(|e| JobError::BadPayload {
            reason: e.to_string(),
        })
    }

    /// Parses the payload of job `job_id`. A payload without an `id` takes
    /// the job id (thoonk.py's put chooses the id itself); one with another
    /// id is refused.
    pub fn parse_for(job_id: &str, text: &str) -> Result<Self, JobError> {
        let bad = |reason: String| JobError::BadPayload { reason };
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(fields) = value.as_object_mut() {
            fields
                .entry("id")
                .or_insert_with(|| serde_json::Value::String(job_id.to_owned()));
        }
        let payload: Self = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if payload.id.0 != job_id {
            return Err(bad(format!(
                "its id {} is not the job id {job_id}",
                payload.id.0
            )));
        }
        Ok(payload)
    }

    /// The payload as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where a put job goes in the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// The back of the queue (first in, first out).
    #[default]
    Normal,
    /// The front: served next (last in, first out among high-priority jobs, as in classic Thoonk).
    High,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_takes_the_job_id_when_it_has_none_and_must_match_it_otherwise() {
        let op = r#""op": {"kind": "retract", "feed": "notes", "id": "n1"}"#;
        let without = format!(r#"{{"user": "a", {op}}}"#);
        assert_eq!(
            JobPayload::parse_for("uuid-1", &without).unwrap().id.0,
            "uuid-1"
        );
        let same = format!(r#"{{"id": "c:1", "user": "a", {op}}}"#);
        assert_eq!(JobPayload::parse_for("c:1", &same).unwrap().id.0, "c:1");
        assert!(JobPayload::parse_for("c:2", &same).is_err());
        assert!(JobPayload::parse_for("c:1", "not json").is_err());
        assert!(JobPayload::parse_for("c:1", r#"{"user": "a"}"#).is_err());
    }
}
