//! The demo's task actions. A task feed is `team:<team>:member:<user>:tasks`
//! (a sorted feed), its items are JSON tasks `{"title", "done", …}`.
//!
//! ACL: only team members write a team's feeds (a member may add tasks to
//! feeds it may write, an admin to any of the team's); only the assignee
//! (the member whose feed holds the task) or a team admin edits, completes,
//! deletes, reorders or delegates a task; a task is delegated only to a
//! member of the same team.

use serde::Deserialize;
use serde_json::{Map, Value as Json};
use thoonk_protocol::{ErrorCode, FeedName, ItemId, Position};

use super::handlers::{Handlers, JobContext};
use super::plan::{FeedWrite, HandlerError, Plan, WriteKind};
use crate::feeds::FeedType;
use crate::gateway::access::User;

/// Longest task title, in characters.
const MAX_TITLE: usize = 500;

/// A task feed's team and member, parsed from its name.
struct TaskFeed {
    name: FeedName,
    team: String,
    member: String,
}

impl TaskFeed {
    fn parse(name: &str) -> Result<Self, HandlerError> {
        let bad = || {
            HandlerError::rejected(
                ErrorCode::BadRequest,
                format!("{name:?} is not a task feed (team:<team>:member:<user>:tasks)"),
            )
        };
        let feed = FeedName::new(name).map_err(|_| bad())?;
        let parts: Vec<&str> = name.split(':').collect();
        match parts.as_slice() {
            ["team", team, "member", member, "tasks"] => Ok(Self {
                team: (*team).to_owned(),
                member: (*member).to_owned(),
                name: feed,
            }),
            _ => Err(bad()),
        }
    }

    /// The same team's task feed of `member`.
    fn of_member(&self, member: &str) -> Result<Self, HandlerError> {
        Self::parse(&format!("team:{}:member:{member}:tasks", self.team))
    }
}

fn item_id(id: &str) -> Result<ItemId, HandlerError> {
    ItemId::new(id).map_err(|e| HandlerError::rejected(ErrorCode::BadRequest, e.to_string()))
}

fn args<T: for<'de> Deserialize<'de>>(action: &str, payload: Json) -> Result<T, HandlerError> {
    serde_json::from_value(payload).map_err(|e| {
        HandlerError::rejected(
            ErrorCode::BadRequest,
            format!("invalid {action} payload: {e}"),
        )
    })
}

/// Checks a task's fields: a non-empty `title`, a boolean `done`.
fn check_task(task: &Map<String, Json>) -> Result<(), HandlerError> {
    let bad = |m: &str| HandlerError::rejected(ErrorCode::BadRequest, m.to_owned());
    match task.get("title") {
        Some(Json::String(t)) if !t.trim().is_empty() && t.chars().count() <= MAX_TITLE => {}
        Some(Json::String(t)) if !t.trim().is_empty() => {
            return Err(bad("a task title may be at most 500 characters long"))
        }
        _ => return Err(bad("a task needs a non-empty title")),
    }
    match task.get("done") {
        None | Some(Json::Bool(_)) => Ok(()),
        Some(_) => Err(bad("a task's done must be true or false")),
    }
}

/// Team members may add tasks.
fn check_member(ctx: &JobContext, feed: &TaskFeed) -> Result<(), HandlerError> {
    let access = &ctx.access;
    if access.can_write(&ctx.user, &feed.name) || access.can_admin(&ctx.user, &feed.name) {
        return Ok(());
    }
    Err(HandlerError::rejected(
        ErrorCode::Forbidden,
        format!(
            "{} may not add tasks to {}'s list in team {}",
            ctx.user.name, feed.member, feed.team
        ),
    ))
}

/// Only the assignee or a team admin changes a task.
fn check_assignee(ctx: &JobContext, feed: &TaskFeed) -> Result<(), HandlerError> {
    let access = &ctx.access;
    let assignee = feed.member == ctx.user.name && access.can_write(&ctx.user, &feed.name);
    if assignee || access.can_admin(&ctx.user, &feed.name) {
        return Ok(());
    }
    Err(HandlerError::rejected(
        ErrorCode::Forbidden,
        format!(
            "only {} (the assignee) or an admin of team {} may change this task",
            feed.member, feed.team
        ),
    ))
}

/// A task as stored now: its fields and item revision; `None` when absent.
async fn read_task(
    ctx: &JobContext,
    feed: &TaskFeed,
    id: &ItemId,
) -> Result<Option<(Map<String, Json>, u64)>, HandlerError> {
    let read = ctx.feeds.get(&feed.name, id).await.or_else(|e| match e {
        crate::feeds::FeedError::FeedNotFound { .. } => Ok(crate::feeds::ItemRead {
            epoch: 0,
            rev: 0,
            item: None,
        }),
        e => Err(HandlerError::from(e)),
    })?;
    match read.item {
        None => Ok(None),
        Some(item) => match item.item {
            Json::Object(fields) => Ok(Some((fields, item.rev))),
            _ => Err(HandlerError::rejected(
                ErrorCode::BadRequest,
                format!("item {id} of {} is not a task", feed.name),
            )),
        },
    }
}

fn write(feed: &TaskFeed, id: &ItemId, kind: WriteKind, ctx: &JobContext) -> FeedWrite {
    FeedWrite {
        feed: feed.name.clone(),
        id: id.clone(),
        kind,
        base: ctx.base_of(&feed.name),
        guard: None,
        create: None,
    }
}

#[derive(Deserialize)]
struct CreateArgs {
    feed: String,
    id: String,
    task: Map<String, Json>,
    #[serde(default)]
    position: Option<Position>,
}

async fn create_task(ctx: JobContext, payload: Json) -> Result<Plan, HandlerError> {
    let a: CreateArgs = args("create_task", payload)?;
    let feed = TaskFeed::parse(&a.feed)?;
    let id = item_id(&a.id)?;
    check_member(&ctx, &feed)?;
    let mut task = a.task;
    check_task(&task)?;
    task.entry("done").or_insert(Json::Bool(false));
    Ok(Plan {
        writes: vec![FeedWrite {
            create: Some(FeedType::SortedFeed.into()),
            base: None,
            ..write(
                &feed,
                &id,
                WriteKind::Insert {
                    item: Json::Object(task),
                    position: a.position,
                },
                &ctx,
            )
        }],
        result: serde_json::json!({ "id": id }),
    })
}

#[derive(Deserialize)]
struct TaskArgs {
    feed: String,
    id: String,
}

#[derive(Deserialize)]
struct EditArgs {
    feed: String,
    id: String,
    fields: Map<String, Json>,
}

/// Read-modify-write of a task's fields; a missing task still yields an
/// edit, so the script reports a conflict (deleted after the base) or not_found.
async fn update_task(
    ctx: JobContext,
    feed: &str,
    id: &str,
    fields: Map<String, Json>,
) -> Result<Plan, HandlerError> {
    let feed = TaskFeed::parse(feed)?;
    let id = item_id(id)?;
    check_assignee(&ctx, &feed)?;
    let (task, guard) = match read_task(&ctx, &feed, &id).await? {
        Some((mut task, rev)) => {
            task.extend(fields);
            check_task(&task)?;
            (Json::Object(task), Some(rev))
        }
        None => (Json::Null, None),
    };
    Ok(Plan::one(FeedWrite {
        guard,
        ..write(&feed, &id, WriteKind::Edit { item: task }, &ctx)
    }))
}

async fn edit_task(ctx: JobContext, payload: Json) -> Result<Plan, HandlerError> {
    let a: EditArgs = args("edit_task", payload)?;
    update_task(ctx, &a.feed, &a.id, a.fields).await
}

async fn set_done(ctx: JobContext, payload: Json, done: bool) -> Result<Plan, HandlerError> {
    let a: TaskArgs = args(
        if done {
            "complete_task"
        } else {
            "uncomplete_task"
        },
        payload,
    )?;
    let fields = Map::from_iter([("done".to_owned(), Json::Bool(done))]);
    update_task(ctx, &a.feed, &a.id, fields).await
}

async fn delete_task(ctx: JobContext, payload: Json) -> Result<Plan, HandlerError> {
    let a: TaskArgs = args("delete_task", payload)?;
    let feed = TaskFeed::parse(&a.feed)?;
    let id = item_id(&a.id)?;
    check_assignee(&ctx, &feed)?;
    Ok(Plan::one(write(&feed, &id, WriteKind::Retract, &ctx)))
}

#[derive(Deserialize)]
struct ReorderArgs {
    feed: String,
    id: String,
    position: Position,
}

async fn reorder_task(ctx: JobContext, payload: Json) -> Result<Plan, HandlerError> {
    let a: ReorderArgs = args("reorder_task", payload)?;
    let feed = TaskFeed::parse(&a.feed)?;
    let id = item_id(&a.id)?;
    check_assignee(&ctx, &feed)?;
    Ok(Plan::one(write(
        &feed,
        &id,
        WriteKind::Move {
            position: a.position,
        },
        &ctx,
    )))
}

#[derive(Deserialize)]
struct DelegateArgs {
    feed: String,
    id: String,
    to: String,
}

/// Moves a task from one member's feed to another's in one script: the
/// retract and the insert both happen or neither does.
async fn delegate_task(ctx: JobContext, payload: Json) -> Result<Plan, HandlerError> {
    let a: DelegateArgs = args("delegate_task", payload)?;
    let from = TaskFeed::parse(&a.feed)?;
    let id = item_id(&a.id)?;
    check_assignee(&ctx, &from)?;
    if a.to == from.member {
        return Err(HandlerError::rejected(
            ErrorCode::BadRequest,
            format!("the task is already {}'s", a.to),
        ));
    }
    let to = from.of_member(&a.to)?;
    let Some(target): Option<User> = ctx.access.find_user(&a.to) else {
        return Err(HandlerError::rejected(
            ErrorCode::NotFound,
            format!("there is no user {}", a.to),
        ));
    };
    if !ctx.access.can_write(&target, &to.name) {
        return Err(HandlerError::rejected(
            ErrorCode::Forbidden,
            format!("{} is not a member of team {}", a.to, from.team),
        ));
    }
    let Some((mut task, rev)) = read_task(&ctx, &from, &id).await? else {
        // Let the script tell a conflict (deleted after the base) from not_found.
        return Ok(Plan::one(write(&from, &id, WriteKind::Retract, &ctx)));
    };
    task.insert(
        "delegated_by".to_owned(),
        Json::String(ctx.user.name.clone()),
    );
    Ok(Plan {
        writes: vec![
            FeedWrite {
                guard: Some(rev),
                ..write(&from, &id, WriteKind::Retract, &ctx)
            },
            FeedWrite {
                base: None,
                create: Some(FeedType::SortedFeed.into()),
                ..write(
                    &to,
                    &id,
                    WriteKind::Insert {
                        item: Json::Object(task),
                        position: None,
                    },
                    &ctx,
                )
            },
        ],
        result: serde_json::json!({ "feed": to.name }),
    })
}

/// Registers the demo's actions.
pub(crate) fn register(handlers: &mut Handlers) {
    handlers.register("create_task", create_task);
    handlers.register("edit_task", edit_task);
    handlers.register("complete_task", |ctx, p| set_done(ctx, p, true));
    handlers.register("uncomplete_task", |ctx, p| set_done(ctx, p, false));
    handlers.register("delete_task", delete_task);
    handlers.register("reorder_task", reorder_task);
    handlers.register("delegate_task", delegate_task);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_feeds_are_parsed_by_segment_and_keep_hash_tags() {
        let feed = TaskFeed::parse("team:353:member:bob:tasks").unwrap();
        assert_eq!((feed.team.as_str(), feed.member.as_str()), ("353", "bob"));
        let tagged = TaskFeed::parse("team:{353}:member:bob:tasks").unwrap();
        let other = tagged.of_member("cat").unwrap();
        assert_eq!(other.name.as_str(), "team:{353}:member:cat:tasks");
        for bad in [
            "team:353:tasks",
            "team:353:member:bob:notes",
            "x:353:member:bob:tasks",
            "team:353:member:*:tasks",
        ] {
            assert!(TaskFeed::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tasks_need_a_title_and_a_boolean_done() {
        let task = |v: Json| v.as_object().unwrap().clone();
        assert!(check_task(&task(serde_json::json!({"title": "x"}))).is_ok());
        assert!(check_task(&task(
            serde_json::json!({"title": "x", "done": true, "due": 3})
        ))
        .is_ok());
        assert!(check_task(&task(serde_json::json!({"title": "  "}))).is_err());
        assert!(check_task(&task(serde_json::json!({"done": false}))).is_err());
        assert!(check_task(&task(serde_json::json!({"title": "x", "done": "yes"}))).is_err());
        let long = "x".repeat(MAX_TITLE + 1);
        assert!(check_task(&task(serde_json::json!({ "title": long }))).is_err());
    }
}
