//! Several job queues behind one gateway: on a Redis Cluster a queue lives
//! in one slot, so one queue is one shard's worth of job throughput; with a
//! queue per shard (`--queue '{changes-0},{changes-1},{changes-2}'`) the
//! gateway spreads the changes over them by hash tag.
//!
//! A change goes to the queue its routing key picks: the hash tag (or, without
//! one, the name) of the feed it writes, else of the first feed of its base,
//! else its id. The key's cluster slot, in n equal ranges of the 16384
//! slots, picks the n-th queue: with the queues listed in slot order (the
//! i-th queue's tag in the i-th range, as `{changes-0}` … `{changes-2}` are
//! for 3), a job is queued on the primary that holds its feeds, given the
//! default equal slot ranges. The key is a function of the change alone, so
//! every resubmission of a change, through any gateway with the same list,
//! meets its own ledger; and the changes of one team keep one queue, in
//! order.

use thoonk_protocol::{ChangeId, ChangeRequest, Outcome};

use super::{JobError, JobQueue, QueueSettings, Submitted};
use crate::gateway::access::User;
use crate::redis_target::{hash_tag, key_slot, RedisTarget};

/// The queues a gateway submits to, in the order configured.
#[derive(Clone)]
pub struct QueueSet {
    queues: Vec<JobQueue>,
}

impl QueueSet {
    /// Opens (creating when missing) every queue of `names`, which must not
    /// be empty.
    pub async fn open(
        redis: impl Into<RedisTarget>,
        names: &[String],
        settings: QueueSettings,
    ) -> Result<Self, JobError> {
        let redis = redis.into();
        if names.is_empty() {
            return Err(JobError::BadQueueName {
                queue: String::new(),
                reason: "name at least one job queue".into(),
            });
        }
        let mut queues = Vec::with_capacity(names.len());
        for name in names {
            queues.push(JobQueue::open(&redis, name, settings.clone()).await?);
        }
        Ok(Self { queues })
    }

    /// The queue `change` goes to.
    pub fn queue_for(&self, change: &ChangeRequest) -> &JobQueue {
        &self.queues[self.index_for(change)]
    }

    /// The position of the queue `change` goes to, for [`QueueSet::outcome_in`]
    /// (a session remembers it instead of the whole change).
    pub fn index_for(&self, change: &ChangeRequest) -> usize {
        route(change, self.queues.len())
    }

    /// The stored outcome of change `id` in the ledger of the queue at `index`
    /// (from [`QueueSet::index_for`]).
    pub async fn outcome_in(
        &self,
        index: usize,
        id: &ChangeId,
    ) -> Result<Option<Outcome>, JobError> {
        match self.queues.get(index) {
            Some(queue) => queue.outcome(id).await,
            None => Ok(None),
        }
    }

    /// Submits `change` for `user` to its queue (see [`JobQueue::submit`]).
    pub async fn submit(&self, user: &User, change: &ChangeRequest) -> Result<Submitted, JobError> {
        self.queue_for(change).submit(user, change).await
    }

    /// Submits one client's changes to one feed for `user` as one batch job,
    /// to the queue of the first change (all of a batch write one feed, so
    /// they share its route; see [`JobQueue::submit_batch`]).
    pub async fn submit_batch(
        &self,
        user: &User,
        changes: &[ChangeRequest],
    ) -> Result<Vec<Submitted>, JobError> {
        match changes.first() {
            Some(first) => self.queue_for(first).submit_batch(user, changes).await,
            None => Ok(Vec::new()),
        }
    }

    /// The stored outcome of `change`, from its queue's ledger.
    pub async fn outcome(&self, change: &ChangeRequest) -> Result<Option<Outcome>, JobError> {
        self.queue_for(change).outcome(&change.id).await
    }
}

/// The index, below `queues`, of the queue for `change`.
fn route(change: &ChangeRequest, queues: usize) -> usize {
    if queues <= 1 {
        return 0;
    }
    let feed = change
        .op
        .feed()
        .or_else(|| change.base.keys().next())
        .map(|feed| feed.as_str());
    let key = match feed {
        Some(name) => hash_tag(name).unwrap_or(name),
        None => change.id.0.as_str(),
    };
    usize::from(key_slot(key)) * queues / SLOTS
}

/// The number of Redis Cluster slots.
const SLOTS: usize = 16384;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};
    use thoonk_protocol::{Base, ChangeId, FeedName, ItemId, Operation};

    fn publish(id: &str, feed: &str) -> ChangeRequest {
        ChangeRequest {
            id: ChangeId(id.into()),
            op: Operation::Publish {
                feed: FeedName::new(feed).unwrap(),
                id: ItemId::new("i").unwrap(),
                item: json!(1),
                position: None,
            },
            base: BTreeMap::new(),
        }
    }

    #[test]
    fn a_team_keeps_one_queue_and_teams_spread() {
        let of = |id: &str, feed: &str| route(&publish(id, feed), 3);
        let team = of("c:1", "team:{353}:member:ann:tasks");
        assert_eq!(of("c:2", "team:{353}:member:bob:tasks"), team);
        assert_eq!(of("other:9", "team:{353}:notes"), team);
        let used: BTreeSet<usize> = (0..30)
            .map(|n| of("c:1", &format!("team:{{{n}}}:tasks")))
            .collect();
        assert_eq!(used.len(), 3, "30 teams use every queue");
        assert_eq!(route(&publish("c:1", "team:{353}:notes"), 1), 0);
    }

    #[test]
    fn a_team_goes_to_the_queue_of_its_slot_range() {
        // The queues' own tags sit one in each third of the slots, in order.
        for (index, queue) in ["{changes-0}", "{changes-1}", "{changes-2}"]
            .iter()
            .enumerate()
        {
            assert_eq!(usize::from(key_slot(queue)) * 3 / SLOTS, index);
        }
        for team in 0..50 {
            let feed = format!("team:{{{team}}}:tasks");
            let slot = usize::from(key_slot(&feed));
            assert_eq!(route(&publish("c:1", &feed), 3), slot * 3 / SLOTS);
        }
    }

    #[test]
    fn an_action_routes_by_its_base_or_its_id() {
        let action = |id: &str, base: &[&str]| ChangeRequest {
            id: ChangeId(id.into()),
            op: Operation::Action {
                name: "delegate_task".into(),
                payload: json!({}),
            },
            base: base
                .iter()
                .map(|f| (FeedName::new(*f).unwrap(), Base::at(1, 1)))
                .collect(),
        };
        assert_eq!(
            route(&action("c:1", &["team:{7}:member:ann:tasks"]), 5),
            route(&publish("x:2", "team:{7}:notes"), 5)
        );
        assert_eq!(route(&action("c:1", &[]), 5), route(&action("c:1", &[]), 5));
    }
}
