//! Admin commands on feeds (`thoonk-server feed …`), in the spirit of thoonk-cli.
//! Each command prints one JSON value.

use serde_json::{json, Value as Json};
use thoonk_protocol::{FeedName, ItemId, Position, Rev};

use super::{ConfigChange, FeedError, FeedSettings, FeedStore, FeedType};

/// Where to put an item; at most one of the flags.
#[derive(clap::Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct PositionArgs {
    /// First in the feed (sorted feeds).
    #[arg(long)]
    pub begin: bool,
    /// Last in the feed.
    #[arg(long)]
    pub end: bool,
    /// Immediately before this item (sorted feeds).
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// Immediately after this item (sorted feeds).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
}

impl PositionArgs {
    fn position(&self) -> Result<Option<Position>, FeedError> {
        Ok(if self.begin {
            Some(Position::Begin)
        } else if self.end {
            Some(Position::End)
        } else if let Some(rel) = &self.before {
            Some(Position::Before(ItemId::new(rel.as_str())?))
        } else if let Some(rel) = &self.after {
            Some(Position::After(ItemId::new(rel.as_str())?))
        } else {
            None
        })
    }
}

/// A feed admin command.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum FeedCommand {
    /// Create a feed.
    Create {
        /// The feed name.
        name: String,
        /// The feed type.
        #[arg(long = "type", value_enum, default_value = "feed")]
        kind: FeedType,
        /// Most items kept (type feed only; older ones are retracted).
        #[arg(long)]
        max_length: Option<u64>,
        /// Change-log entries kept.
        #[arg(long)]
        retention: Option<u64>,
    },
    /// Show or change a feed's settings.
    Config {
        /// The feed name.
        name: String,
        /// New max_length (0: unbounded; type feed only).
        #[arg(long)]
        max_length: Option<u64>,
        /// New change-log retention (>= 1).
        #[arg(long)]
        retention: Option<u64>,
    },
    /// Delete a feed and all its keys.
    Delete {
        /// The feed name.
        name: String,
    },
    /// Publish an item (a new id adds it, an existing id edits it).
    Publish {
        /// The feed name (created as type feed when missing).
        name: String,
        /// The item, as JSON (quote a string: '"text"').
        item: String,
        /// The item id; generated when absent.
        #[arg(long)]
        id: Option<String>,
        /// Where to put a new item.
        #[command(flatten)]
        position: PositionArgs,
        /// The job id to record in the change log.
        #[arg(long)]
        job: Option<String>,
    },
    /// Replace an existing item's value.
    Edit {
        /// The feed name.
        name: String,
        /// The item id.
        id: String,
        /// The new value, as JSON.
        item: String,
        /// The job id to record in the change log.
        #[arg(long)]
        job: Option<String>,
    },
    /// Remove an item.
    Retract {
        /// The feed name.
        name: String,
        /// The item id.
        id: String,
        /// The job id to record in the change log.
        #[arg(long)]
        job: Option<String>,
    },
    /// Move an item of a sorted feed.
    Move {
        /// The feed name.
        name: String,
        /// The item id.
        id: String,
        /// Where to move it (exactly one flag).
        #[command(flatten)]
        position: PositionArgs,
        /// The job id to record in the change log.
        #[arg(long)]
        job: Option<String>,
    },
    /// Show one item with its revision, or its value as of a past revision.
    Get {
        /// The feed name.
        name: String,
        /// The item id.
        id: String,
        /// Show the value as of this revision (from the change log).
        #[arg(long)]
        at: Option<Rev>,
    },
    /// Show a feed's items in order with its epoch and revision.
    Items {
        /// The feed name.
        name: String,
    },
    /// Show a feed's change log.
    History {
        /// The feed name.
        name: String,
        /// Show entries after this revision.
        #[arg(long, default_value_t = 0)]
        after: Rev,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// List every feed in the registry.
    List,
}

fn item_json(feed: &FeedName, text: &str) -> Result<Json, FeedError> {
    serde_json::from_str(text).map_err(|e| FeedError::BadArgument {
        feed: feed.clone(),
        reason: format!("the item is not JSON ({e}); quote a string, e.g. '\"text\"'"),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

fn with_feed(feed: &FeedName, mut value: Json) -> Json {
    if let Json::Object(map) = &mut value {
        map.insert("feed".into(), json!(feed));
    }
    value
}

/// Runs a feed admin command and returns the JSON to print.
pub async fn run(cmd: FeedCommand, store: &FeedStore) -> Result<Json, FeedError> {
    match cmd {
        FeedCommand::Create {
            name,
            kind,
            max_length,
            retention,
        } => {
            let feed = FeedName::new(name)?;
            let settings = FeedSettings {
                kind,
                max_length,
                retention,
            };
            let epoch = store.create(&feed, &settings).await?;
            Ok(json!({"feed": feed, "created": true, "type": kind, "epoch": epoch}))
        }
        FeedCommand::Config {
            name,
            max_length,
            retention,
        } => {
            let feed = FeedName::new(name)?;
            if max_length.is_some() || retention.is_some() {
                store
                    .configure(
                        &feed,
                        &ConfigChange {
                            max_length,
                            retention,
                        },
                    )
                    .await?;
            }
            let info = store
                .info(&feed)
                .await?
                .ok_or(FeedError::FeedNotFound { feed: feed.clone() })?;
            Ok(to_json(&info))
        }
        FeedCommand::Delete { name } => {
            let feed = FeedName::new(name)?;
            let deleted = store.delete(&feed).await?;
            Ok(json!({"feed": feed, "deleted": deleted}))
        }
        FeedCommand::Publish {
            name,
            item,
            id,
            position,
            job,
        } => {
            let feed = FeedName::new(name)?;
            let id = id.map(ItemId::new).transpose()?;
            let item = item_json(&feed, &item)?;
            let applied = store
                .publish_at(
                    &feed,
                    id.as_ref(),
                    &item,
                    position.position()?.as_ref(),
                    job.as_deref(),
                )
                .await?;
            Ok(with_feed(&feed, to_json(&applied)))
        }
        FeedCommand::Edit {
            name,
            id,
            item,
            job,
        } => {
            let feed = FeedName::new(name)?;
            let id = ItemId::new(id)?;
            let item = item_json(&feed, &item)?;
            let applied = store.edit(&feed, &id, &item, job.as_deref()).await?;
            Ok(with_feed(&feed, to_json(&applied)))
        }
        FeedCommand::Retract { name, id, job } => {
            let feed = FeedName::new(name)?;
            let applied = store
                .retract(&feed, &ItemId::new(id)?, job.as_deref())
                .await?;
            Ok(with_feed(&feed, to_json(&applied)))
        }
        FeedCommand::Move {
            name,
            id,
            position,
            job,
        } => {
            let feed = FeedName::new(name)?;
            let position = position.position()?.ok_or_else(|| FeedError::BadPosition {
                feed: feed.clone(),
                reason: "give one of --begin, --end, --before ID, --after ID".into(),
            })?;
            let applied = store
                .move_item(&feed, &ItemId::new(id)?, &position, job.as_deref())
                .await?;
            Ok(with_feed(&feed, to_json(&applied)))
        }
        FeedCommand::Get { name, id, at } => {
            let feed = FeedName::new(name)?;
            let id = ItemId::new(id)?;
            let value = match at {
                Some(at) => to_json(&store.item_at(&feed, &id, at).await?),
                None => to_json(&store.get(&feed, &id).await?),
            };
            Ok(with_feed(&feed, value))
        }
        FeedCommand::Items { name } => {
            let feed = FeedName::new(name)?;
            Ok(with_feed(&feed, to_json(&store.snapshot(&feed).await?)))
        }
        FeedCommand::History { name, after, limit } => {
            let feed = FeedName::new(name)?;
            Ok(with_feed(
                &feed,
                to_json(&store.history(&feed, after, limit).await?),
            ))
        }
        FeedCommand::List => Ok(json!({"feeds": store.feeds().await?})),
    }
}
