//! The worker framework's handlers: one per action name, plus the generic
//! feed operations (publish/edit/retract/move with base revisions).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value as Json;
use thoonk_protocol::{Base, ChangeId, ErrorCode, FeedName, Operation, Outcome, Position};

use super::demo;
use super::plan::{FeedWrite, HandlerError, Plan, WriteKind};
use crate::feeds::{FeedSettings, FeedStore, FeedType};
use crate::gateway::access::{AccessRules, User};

/// What a handler knows about the job it works.
#[derive(Clone)]
pub struct JobContext {
    /// The job id: the client's change id.
    pub id: ChangeId,
    /// The acting user.
    pub user: User,
    /// The epoch and revision of each feed the change was made against.
    pub base: BTreeMap<FeedName, Base>,
    /// The access rules to check.
    pub access: Arc<dyn AccessRules>,
    /// The feeds, for reads (writes go into the [`Plan`]).
    pub feeds: FeedStore,
    /// Failures of this job so far (0 on the first attempt).
    pub failures: u64,
}

impl JobContext {
    /// The base the change was made against for `feed`, if given.
    pub fn base_of(&self, feed: &FeedName) -> Option<Base> {
        self.base.get(feed).copied()
    }
}

/// The future a handler returns.
pub type HandlerFuture = BoxFuture<'static, Result<Plan, HandlerError>>;

/// A handler of one action: validates the payload, checks the ACL, reads
/// what it needs and returns the writes to apply atomically.
pub type ActionHandler = Arc<dyn Fn(JobContext, Json) -> HandlerFuture + Send + Sync>;

/// A hook run after a job's writes were applied and before the job is finished.
pub type AfterApply = Arc<dyn Fn(JobContext, Outcome) -> BoxFuture<'static, ()> + Send + Sync>;

/// Action name → handler. Generic feed operations need no registration.
#[derive(Clone, Default)]
pub struct Handlers {
    actions: HashMap<String, ActionHandler>,
    after_apply: Option<AfterApply>,
}

impl Handlers {
    /// No actions: only the generic feed operations.
    pub fn new() -> Self {
        Self::default()
    }

    /// The generic feed operations and the demo's task actions
    /// (`create_task`, `edit_task`, `complete_task`, `uncomplete_task`,
    /// `delete_task`, `reorder_task`, `delegate_task`; see docs/JOBS.md).
    /// `serve` and `work` register them only with `--demo-actions`.
    pub fn with_demo_actions() -> Self {
        let mut handlers = Self::new();
        demo::register(&mut handlers);
        handlers
    }

    /// Registers (or replaces) the handler of action `name`.
    ///
    /// A job may run again after its writes were applied (its worker died
    /// before finishing it), so a handler must plan the same first feed on
    /// every attempt and must not reject because of state an earlier attempt
    /// may have produced: the applied record beside the first feed answers
    /// with the stored outcome before any check.
    pub fn register<F, Fut>(&mut self, name: &str, handler: F)
    where
        F: Fn(JobContext, Json) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Plan, HandlerError>> + Send + 'static,
    {
        self.actions.insert(
            name.to_owned(),
            Arc::new(move |ctx, payload| handler(ctx, payload).boxed()),
        );
    }

    /// Sets a hook that runs after a job's writes were applied (accepted
    /// outcome) and before the job is finished, e.g. for metrics. A process
    /// that dies in it leaves the job claimed; the retry finds the applied
    /// record and finishes with the stored outcome.
    pub fn after_apply<F, Fut>(&mut self, hook: F)
    where
        F: Fn(JobContext, Outcome) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.after_apply = Some(Arc::new(move |ctx, outcome| hook(ctx, outcome).boxed()));
    }

    pub(crate) fn after_apply_hook(&self) -> Option<&AfterApply> {
        self.after_apply.as_ref()
    }

    /// The registered action names, sorted.
    pub fn actions(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.actions.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    /// The plan for `op`: a generic feed operation or a registered action.
    pub(crate) fn plan(&self, ctx: JobContext, op: &Operation) -> HandlerFuture {
        match op {
            Operation::Action { name, payload } => match self.actions.get(name) {
                Some(handler) => handler(ctx, payload.clone()),
                None => {
                    let message = format!("unknown action {name:?}");
                    async move { Err(HandlerError::rejected(ErrorCode::BadRequest, message)) }
                        .boxed()
                }
            },
            other => {
                let result = generic(&ctx, other);
                async move { result }.boxed()
            }
        }
    }
}

/// A generic operation: the user needs `can_write` on the feed. Items are
/// not owned: any writer may change any item of a feed it may write.
fn generic(ctx: &JobContext, op: &Operation) -> Result<Plan, HandlerError> {
    let (feed, id, kind, create) = match op {
        Operation::Publish {
            feed,
            id,
            item,
            position,
        } => {
            // The server's config decides the type of a feed a client
            // creates; without a rule for it, a position asks for a sorted one.
            let create = ctx.access.new_feed(feed).unwrap_or_else(|| {
                let sorted = matches!(position, Some(p) if *p != Position::End);
                FeedSettings::new(if sorted {
                    FeedType::SortedFeed
                } else {
                    FeedType::Feed
                })
            });
            let kind = WriteKind::Upsert {
                item: item.clone(),
                position: position.clone(),
            };
            (feed, id, kind, Some(create))
        }
        Operation::Edit { feed, id, item } => {
            (feed, id, WriteKind::Edit { item: item.clone() }, None)
        }
        Operation::Retract { feed, id } => (feed, id, WriteKind::Retract, None),
        Operation::Move { feed, id, position } => (
            feed,
            id,
            WriteKind::Move {
                position: position.clone(),
            },
            None,
        ),
        Operation::Action { name, .. } => {
            return Err(HandlerError::rejected(
                ErrorCode::BadRequest,
                format!("action {name:?} is not a feed operation"),
            ))
        }
    };
    if !ctx.access.can_write(&ctx.user, feed) {
        return Err(HandlerError::rejected(
            ErrorCode::Forbidden,
            format!("{} may not write feed {feed}", ctx.user.name),
        ));
    }
    Ok(Plan::one(FeedWrite {
        feed: feed.clone(),
        id: id.clone(),
        kind,
        base: ctx.base_of(feed),
        guard: None,
        create,
    }))
}
