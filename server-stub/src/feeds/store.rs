//! [`FeedStore`]: the feed operations over the Lua scripts.

use std::sync::Arc;

use crate::redis_target::{RedisConn, RedisTarget};
use redis::{AsyncCommands, RedisError, Value};
use serde_json::Value as Json;
use thoonk_protocol::{FeedEvent, FeedName, FeedPosition, ItemId, Position, Rev};

use super::decode::{item_value, Decoder, Page, PagePin};
use super::error::FeedError;
use super::keys::{feed_keys, REGISTRY};
use super::model::{
    Applied, ConfigChange, FeedInfo, FeedSettings, FeedType, History, ItemRead, ItemVersion, Since,
    Snapshot, DEFAULT_RETENTION,
};
use super::scripts::{json_text, position_args, Scripts};
use crate::library::{self, Function};
use thoonk_protocol::{Epoch, Item};

/// How often a publish retries after creating its missing feed (the feed
/// may be deleted again in between).
const CREATE_ATTEMPTS: usize = 3;

/// The feed store: every feed operation, each one atomic Lua script in Redis.
///
/// Cheap to clone; clones share one multiplexed, auto-reconnecting connection.
#[derive(Clone)]
pub struct FeedStore {
    conn: RedisConn,
    scripts: Arc<Scripts>,
    instance: Arc<str>,
}

/// What a failing script call was about, to name it in the error.
struct Ctx<'a> {
    feed: &'a FeedName,
    id: Option<&'a ItemId>,
    what: &'static str,
}

impl Ctx<'_> {
    fn error(&self, err: RedisError) -> FeedError {
        let feed = self.feed.clone();
        let detail = err.detail().unwrap_or_default().to_owned();
        match err.code() {
            Some("NOFEED") => FeedError::FeedNotFound { feed },
            Some("FEEDTYPE") => FeedError::WrongFeedType {
                feed,
                kind: detail.split_whitespace().next().unwrap_or("").to_owned(),
                what: self.what,
            },
            Some("NOITEM") => match self.id {
                Some(id) => FeedError::ItemNotFound {
                    feed,
                    id: id.clone(),
                },
                None => FeedError::BadArgument {
                    feed,
                    reason: detail,
                },
            },
            Some("EXISTS") => match self.id {
                Some(id) => FeedError::ItemExists {
                    feed,
                    id: id.clone(),
                },
                None => FeedError::BadArgument {
                    feed,
                    reason: detail,
                },
            },
            Some("BADPOS" | "NOREL") => FeedError::BadPosition {
                feed,
                reason: detail,
            },
            Some("BADARG" | "BADKEYS" | "BADNAME") => FeedError::BadArgument {
                feed,
                reason: detail,
            },
            Some("KEYTYPE" | "WRONGTYPE") => FeedError::Corrupt {
                feed: feed.to_string(),
                reason: detail,
            },
            _ => FeedError::Redis(err),
        }
    }
}

/// Ids (or change-log entries) one call of a read returns at most: a few
/// ms of Redis time, so that reading a large feed never blocks Redis for
/// long (docs/REDIS.md, "Reads").
pub const SNAPSHOT_PAGE: u64 = 500;

/// Times a paged snapshot starts over because the feed changed between its
/// pages before it is read whole in one call.
pub const PAGE_RESTARTS: usize = 4;

/// One step of a paged read of the changes after a position
/// ([`FeedStore::changes_page`]).
#[derive(Debug)]
pub enum SinceStep {
    /// Changes after the position asked, dense and in order.
    Changes {
        /// The feed's epoch.
        epoch: u64,
        /// At most [`SNAPSHOT_PAGE`] changes (none: the position is the feed's revision).
        events: Vec<FeedEvent>,
        /// The page was full: more may follow its last change.
        more: bool,
    },
    /// The log cannot serve the position: the feed's whole snapshot.
    Reset(Snapshot),
}

/// One reply of `since.lua`.
enum SincePage {
    Changes { epoch: u64, events: Vec<FeedEvent> },
    Reset(Page),
}

impl FeedStore {
    /// Connects and loads the function library (loaded again by a call that
    /// finds a node without it).
    /// `instance` is this process's id in the classic `newfeed`/`delfeed`/`conffeed` payloads.
    pub async fn open(
        redis: impl Into<RedisTarget>,
        instance: &str,
    ) -> Result<FeedStore, FeedError> {
        let mut conn = redis.into().connect().await?;
        let scripts = Scripts::new();
        library::load(&mut conn).await?;
        Ok(FeedStore {
            conn,
            scripts: Arc::new(scripts),
            instance: instance.into(),
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn invoke(
        &self,
        script: &Function,
        feed: &FeedName,
        args: &[&str],
    ) -> Result<Value, RedisError> {
        let mut invocation = script.prepare_invoke();
        for key in feed_keys(feed) {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await
    }

    async fn registry(&self, script: &Function, args: &[&str]) -> Result<bool, FeedError> {
        let mut invocation = script.prepare_invoke();
        invocation.key(REGISTRY);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let changed: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(changed == 1)
    }

    /// Creates the feed unless it exists, then registers it (`feeds` set,
    /// `newfeed` and `conffeed` when new). Returns whether it was created
    /// and its type.
    async fn ensure(
        &self,
        feed: &FeedName,
        settings: &FeedSettings,
    ) -> Result<(bool, String, Epoch), FeedError> {
        let ctx = Ctx {
            feed,
            id: None,
            what: "it cannot be created as a feed",
        };
        let max_length = settings
            .max_length
            .map(|n| n.to_string())
            .unwrap_or_default();
        let retention = settings
            .retention
            .map(|n| n.to_string())
            .unwrap_or_default();
        let reply = self
            .invoke(
                &self.scripts.create,
                feed,
                &[settings.kind.as_str(), &max_length, &retention],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        let d = Decoder { feed };
        let parts = d.array(&reply, "create reply")?;
        let [created, kind, epoch] = parts else {
            return Err(FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "create reply: expected 3 parts".into(),
            });
        };
        let created = d.number(created, "created flag")? == 1;
        let kind = d.required_text(kind, "type")?;
        let epoch = d.number(epoch, "epoch")?;
        let announce = if created { "1" } else { "0" };
        self.registry(
            &self.scripts.register,
            &[feed.as_str(), &self.instance, announce],
        )
        .await?;
        Ok((created, kind, epoch))
    }

    /// Adds an existing feed to the registry (`feeds` set), announcing it
    /// on `newfeed` and `conffeed` if it was missing: the repair after a
    /// crash between a feed's creation and its registration. True when it
    /// was missing.
    pub async fn register(&self, feed: &FeedName) -> Result<bool, FeedError> {
        self.registry(
            &self.scripts.register,
            &[feed.as_str(), &self.instance, "0"],
        )
        .await
    }

    /// Creates a feed (classic keys, registry, `newfeed` + `conffeed`) with a
    /// new epoch. Fails with [`FeedError::FeedExists`] when it exists.
    pub async fn create(
        &self,
        feed: &FeedName,
        settings: &FeedSettings,
    ) -> Result<Epoch, FeedError> {
        if settings.retention == Some(0) {
            return Err(FeedError::BadArgument {
                feed: feed.clone(),
                reason: "retention must be at least 1".into(),
            });
        }
        let (created, kind, epoch) = self.ensure(feed, settings).await?;
        if !created {
            return Err(FeedError::FeedExists {
                feed: feed.clone(),
                kind,
            });
        }
        Ok(epoch)
    }

    /// Changes a feed's settings and publishes `conffeed`; lowering
    /// `max_length` trims the feed at once (retracts with revisions).
    /// Returns the feed's epoch and revision afterwards.
    pub async fn configure(
        &self,
        feed: &FeedName,
        change: &ConfigChange,
    ) -> Result<(Epoch, Rev), FeedError> {
        if change.retention == Some(0) {
            return Err(FeedError::BadArgument {
                feed: feed.clone(),
                reason: "retention must be at least 1".into(),
            });
        }
        let ctx = Ctx {
            feed,
            id: None,
            what: "only feeds and sorted feeds are configured here",
        };
        let max_length = change.max_length.map(|n| n.to_string()).unwrap_or_default();
        let retention = change.retention.map(|n| n.to_string()).unwrap_or_default();
        let reply = self
            .invoke(
                &self.scripts.config,
                feed,
                &[&self.instance, &max_length, &retention],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        let d = Decoder { feed };
        let parts = d.array(&reply, "config reply")?;
        match parts {
            [epoch, rev] => Ok((d.number(epoch, "epoch")?, d.number(rev, "revision")?)),
            _ => Err(FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "config reply: expected 2 parts".into(),
            }),
        }
    }

    /// Deletes a feed's keys, then unregisters it (`delfeed`). Returns
    /// whether it existed. Created again, it starts a new epoch.
    pub async fn delete(&self, feed: &FeedName) -> Result<bool, FeedError> {
        let ctx = Ctx {
            feed,
            id: None,
            what: "delete it with the job commands",
        };
        let existed = self
            .invoke(&self.scripts.delete, feed, &[])
            .await
            .map_err(|e| ctx.error(e))?;
        let existed = Decoder { feed }.number(&existed, "delete reply")? == 1;
        let registered = self
            .registry(&self.scripts.unregister, &[feed.as_str(), &self.instance])
            .await?;
        Ok(existed || registered)
    }

    /// Starts a new epoch of `feed` if its epoch began in another Redis
    /// process, keeping its items and revision; true when it did. For a
    /// Redis that restarted and may have lost acknowledged writes (see
    /// [`crate::gateway::RestartWatch`]); does nothing to a queue, a missing
    /// feed or one without an epoch.
    pub async fn renew_epoch_after_restart(&self, feed: &FeedName) -> Result<bool, FeedError> {
        let ctx = Ctx {
            feed,
            id: None,
            what: "only feeds and sorted feeds have epochs",
        };
        let began = self
            .invoke(&self.scripts.epoch, feed, &[])
            .await
            .map_err(|e| ctx.error(e))?;
        Ok(Decoder { feed }.number(&began, "epoch reply")? == 1)
    }

    /// The feed's settings; `None` when it does not exist.
    pub async fn info(&self, feed: &FeedName) -> Result<Option<FeedInfo>, FeedError> {
        let mut conn = self.conn.clone();
        let fields: std::collections::HashMap<String, String> =
            conn.hgetall(&feed_keys(feed)[0]).await?;
        let Some(kind) = fields.get("type") else {
            return Ok(None);
        };
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        Ok(Some(FeedInfo {
            feed: feed.clone(),
            kind: kind.clone(),
            max_length: number("max_length").unwrap_or(0),
            retention: number("retention").unwrap_or(DEFAULT_RETENTION).max(1),
            epoch: number("epoch").unwrap_or(0),
        }))
    }

    async fn write_item(
        &self,
        feed: &FeedName,
        mode: &str,
        id: Option<&ItemId>,
        item: &Json,
        position: Option<&Position>,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        let ctx = Ctx {
            feed,
            id,
            what: "only feeds and sorted feeds take published items",
        };
        let text = json_text(item);
        let (pos, rel) = position_args(position);
        let id_arg = id.map(ItemId::as_str).unwrap_or("");
        // Only a write a time-ordered feed accepts creates one.
        let may_create = matches!(position, None | Some(Position::End));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reply = self
                .invoke(
                    &self.scripts.publish,
                    feed,
                    &[mode, id_arg, "", &text, pos, rel, job.unwrap_or("")],
                )
                .await;
            match reply {
                Ok(reply) => return Decoder { feed }.applied(&reply),
                Err(err)
                    if may_create && err.code() == Some("NOFEED") && attempt < CREATE_ATTEMPTS =>
                {
                    self.ensure(feed, &FeedSettings::new(FeedType::Feed))
                        .await?;
                }
                Err(err) => return Err(ctx.error(err)),
            }
        }
    }

    /// Publishes (new id) or edits (existing id) an item in a feed; creates
    /// the feed (type `feed`) when missing. `id: None` generates one.
    /// `job`: the change id that caused it, recorded in the change log.
    pub async fn publish(
        &self,
        feed: &FeedName,
        id: Option<&ItemId>,
        item: &Json,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        self.write_item(feed, "upsert", id, item, None, job).await
    }

    /// Like [`FeedStore::publish`], placing a new item at `position` (sorted
    /// feeds; a time-ordered feed accepts only the end). An existing item is
    /// edited in place and the position is ignored. A missing feed is created
    /// (type `feed`) only when the position is the end or none.
    pub async fn publish_at(
        &self,
        feed: &FeedName,
        id: Option<&ItemId>,
        item: &Json,
        position: Option<&Position>,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        self.write_item(feed, "upsert", id, item, position, job)
            .await
    }

    /// Adds a new item at `position`; fails with [`FeedError::ItemExists`]
    /// when the id is taken. Creates a missing feed (type `feed`) when the
    /// position is the end or none.
    pub async fn insert(
        &self,
        feed: &FeedName,
        id: Option<&ItemId>,
        item: &Json,
        position: Option<&Position>,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        self.write_item(feed, "insert", id, item, position, job)
            .await
    }

    /// Replaces an existing item's value (a time-ordered feed also moves it to the end).
    pub async fn edit(
        &self,
        feed: &FeedName,
        id: &ItemId,
        item: &Json,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        let ctx = Ctx {
            feed,
            id: Some(id),
            what: "only feeds and sorted feeds have editable items",
        };
        let reply = self
            .invoke(
                &self.scripts.edit,
                feed,
                &[id.as_str(), &json_text(item), job.unwrap_or("")],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        Decoder { feed }.applied(&reply)
    }

    /// Removes an item.
    pub async fn retract(
        &self,
        feed: &FeedName,
        id: &ItemId,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        let ctx = Ctx {
            feed,
            id: Some(id),
            what: "only feeds and sorted feeds have retractable items",
        };
        let reply = self
            .invoke(
                &self.scripts.retract,
                feed,
                &[id.as_str(), job.unwrap_or("")],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        Decoder { feed }.applied(&reply)
    }

    /// Moves an item of a sorted feed.
    pub async fn move_item(
        &self,
        feed: &FeedName,
        id: &ItemId,
        position: &Position,
        job: Option<&str>,
    ) -> Result<Applied, FeedError> {
        let ctx = Ctx {
            feed,
            id: Some(id),
            what: "only sorted feeds can move items",
        };
        let (pos, rel) = position_args(Some(position));
        let reply = self
            .invoke(
                &self.scripts.move_item,
                feed,
                &[id.as_str(), pos, rel, job.unwrap_or("")],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        Decoder { feed }.applied(&reply)
    }

    /// Items in order + epoch + rev, read atomically. A feed that does not
    /// exist: epoch 0, rev 0, no items.
    ///
    /// A feed of more than [`SNAPSHOT_PAGE`] ids is read in pages, each one
    /// short call, all at the state of the first (its epoch, revision,
    /// number of ids and publish counter, which every write moves; a page
    /// read after a change fails and the read starts over). A feed that
    /// changes faster than [`PAGE_RESTARTS`] reads is read whole in one call.
    pub async fn snapshot(&self, feed: &FeedName) -> Result<Snapshot, FeedError> {
        for _ in 0..PAGE_RESTARTS {
            let Some(first) = self.snapshot_page(feed, 0, SNAPSHOT_PAGE, None).await? else {
                continue;
            };
            if let Some(snapshot) = self.rest_of_snapshot(feed, first).await? {
                return Ok(snapshot);
            }
        }
        let whole = self.snapshot_page(feed, 0, 0, None).await?;
        whole
            .map(|page| page.snapshot)
            .ok_or_else(|| FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "an unpinned snapshot reported a change".into(),
            })
    }

    /// One page of a snapshot: `count` ids from rank `first` (0: all), read
    /// only while the feed is at `pin`. `None`: the feed moved from `pin`.
    async fn snapshot_page(
        &self,
        feed: &FeedName,
        first: u64,
        count: u64,
        pin: Option<PagePin>,
    ) -> Result<Option<Page>, FeedError> {
        let ctx = Ctx {
            feed,
            id: None,
            what: "only feeds and sorted feeds can be read here",
        };
        let mut args = vec![first.to_string(), count.to_string()];
        if let Some(pin) = pin {
            args.extend([pin.epoch, pin.rev, pin.total, pin.publishes].map(|n| n.to_string()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = match self.invoke(&self.scripts.snapshot, feed, &args).await {
            Ok(reply) => reply,
            Err(err) if err.code() == Some("CHANGED") => return Ok(None),
            Err(err) => return Err(ctx.error(err)),
        };
        let d = Decoder { feed };
        d.snapshot_page(d.array(&reply, "snapshot reply")?)
            .map(Some)
    }

    /// The pages after `first`, at the state `first` was read at; `None`
    /// when the feed changed in between.
    async fn rest_of_snapshot(
        &self,
        feed: &FeedName,
        first: Page,
    ) -> Result<Option<Snapshot>, FeedError> {
        let Page {
            mut snapshot,
            ids: mut read,
            pin,
        } = first;
        let Some(pin) = pin else {
            return Ok(Some(snapshot));
        };
        while read < pin.total {
            let Some(next) = self
                .snapshot_page(feed, read, SNAPSHOT_PAGE, Some(pin))
                .await?
            else {
                return Ok(None);
            };
            if next.ids == 0 {
                return Ok(None);
            }
            read += next.ids;
            snapshot.items.extend(next.snapshot.items);
        }
        Ok(Some(snapshot))
    }

    /// The changes after `from.rev` when `from.epoch` is the feed's epoch and
    /// the log still reaches back; otherwise a reset with a snapshot. Both
    /// are read in pages of [`SNAPSHOT_PAGE`] entries or ids (see
    /// [`FeedStore::changes_page`], which a caller that sends as it reads uses).
    pub async fn changes_since(
        &self,
        feed: &FeedName,
        from: FeedPosition,
    ) -> Result<Since, FeedError> {
        let mut from = from;
        let mut gathered: Vec<FeedEvent> = Vec::new();
        loop {
            match self.changes_page(feed, from).await? {
                SinceStep::Changes {
                    epoch,
                    events,
                    more,
                } => {
                    if let Some(last) = events.last() {
                        from = FeedPosition {
                            epoch,
                            rev: last.rev,
                        };
                    }
                    gathered.extend(events);
                    if !more {
                        return Ok(Since::Changes {
                            epoch,
                            events: gathered,
                        });
                    }
                }
                SinceStep::Reset(snapshot) => return Ok(Since::Reset(snapshot)),
            }
        }
    }

    /// One page of [`FeedStore::changes_since`]: at most [`SNAPSHOT_PAGE`]
    /// changes after `from`, dense and in order, and whether to ask again
    /// from the last of them; or, when the log cannot serve `from` (another
    /// epoch, trimmed, reset), the whole snapshot, read in pinned pages. A
    /// caller that asks again from the last change of a page gets the next
    /// one, or a reset when the log moved on meanwhile.
    pub async fn changes_page(
        &self,
        feed: &FeedName,
        from: FeedPosition,
    ) -> Result<SinceStep, FeedError> {
        match self.since_page(feed, from).await? {
            SincePage::Changes { epoch, events } => {
                let more = events.len() as u64 == SNAPSHOT_PAGE;
                Ok(SinceStep::Changes {
                    epoch,
                    events,
                    more,
                })
            }
            SincePage::Reset(first) => {
                let snapshot = match self.rest_of_snapshot(feed, first).await? {
                    Some(snapshot) => snapshot,
                    None => self.snapshot(feed).await?,
                };
                Ok(SinceStep::Reset(snapshot))
            }
        }
    }

    async fn since_page(
        &self,
        feed: &FeedName,
        from: FeedPosition,
    ) -> Result<SincePage, FeedError> {
        let ctx = Ctx {
            feed,
            id: None,
            what: "only feeds and sorted feeds can be read here",
        };
        let reply = self
            .invoke(
                &self.scripts.since,
                feed,
                &[
                    &from.epoch.to_string(),
                    &from.rev.to_string(),
                    &SNAPSHOT_PAGE.to_string(),
                ],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        let d = Decoder { feed };
        let parts = d.array(&reply, "since reply")?;
        let kind = parts
            .first()
            .map(|k| d.required_text(k, "since kind"))
            .transpose()?;
        match (kind.as_deref(), parts) {
            (Some("changes"), [_, epoch, entries]) => Ok(SincePage::Changes {
                epoch: d.number(epoch, "epoch")?,
                events: d.events(entries)?,
            }),
            (Some("reset"), [_, rest @ ..]) => Ok(SincePage::Reset(d.snapshot_page(rest)?)),
            _ => Err(FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "since reply: unknown shape".into(),
            }),
        }
    }

    /// One item with the revision of its last change, and the feed's epoch and revision.
    pub async fn get(&self, feed: &FeedName, id: &ItemId) -> Result<ItemRead, FeedError> {
        let ctx = Ctx {
            feed,
            id: Some(id),
            what: "only feeds and sorted feeds can be read here",
        };
        let reply = self
            .invoke(&self.scripts.get, feed, &[id.as_str()])
            .await
            .map_err(|e| ctx.error(e))?;
        let d = Decoder { feed };
        let [epoch, rev, item, item_rev] = d.array(&reply, "get reply")? else {
            return Err(FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "get reply: expected 4 parts".into(),
            });
        };
        let item = match d.text(item, "item")? {
            None => None,
            Some(text) => Some(Item {
                id: id.clone(),
                item: item_value(&text),
                rev: d.number(item_rev, "item revision")?,
            }),
        };
        Ok(ItemRead {
            epoch: d.number(epoch, "epoch")?,
            rev: d.number(rev, "revision")?,
            item,
        })
    }

    /// An item's value as of revision `at`, rebuilt from the change log.
    /// Fails with [`FeedError::HistoryGone`] when the log no longer reaches
    /// back to `at`, and [`FeedError::FutureRevision`] past the feed's revision.
    pub async fn item_at(
        &self,
        feed: &FeedName,
        id: &ItemId,
        at: Rev,
    ) -> Result<ItemVersion, FeedError> {
        let ctx = Ctx {
            feed,
            id: Some(id),
            what: "only feeds and sorted feeds can be read here",
        };
        let reply = match self
            .invoke(&self.scripts.item_at, feed, &[id.as_str(), &at.to_string()])
            .await
        {
            Ok(reply) => reply,
            Err(err) if err.code() == Some("GONE") => {
                let oldest = err
                    .detail()
                    .and_then(|d| d.trim().parse().ok())
                    .unwrap_or(0);
                return Err(FeedError::HistoryGone {
                    feed: feed.clone(),
                    rev: at,
                    oldest,
                });
            }
            Err(err) if err.code() == Some("FUTURE") => {
                let current = self.snapshot_rev(feed).await?;
                return Err(FeedError::FutureRevision {
                    feed: feed.clone(),
                    rev: at,
                    current,
                });
            }
            Err(err) => return Err(ctx.error(err)),
        };
        let d = Decoder { feed };
        let [epoch, rev, item] = d.array(&reply, "item_at reply")? else {
            return Err(FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "item_at reply: expected 3 parts".into(),
            });
        };
        Ok(ItemVersion {
            epoch: d.number(epoch, "epoch")?,
            at,
            rev: d.number(rev, "revision")?,
            item: d.text(item, "item")?.map(|t| item_value(&t)),
        })
    }

    async fn snapshot_rev(&self, feed: &FeedName) -> Result<Rev, FeedError> {
        let mut conn = self.conn.clone();
        let rev: Option<u64> = conn.get(&feed_keys(feed)[5]).await?;
        Ok(rev.unwrap_or(0))
    }

    /// Up to `limit` change-log entries after revision `after`, oldest first.
    pub async fn history(
        &self,
        feed: &FeedName,
        after: Rev,
        limit: usize,
    ) -> Result<History, FeedError> {
        let ctx = Ctx {
            feed,
            id: None,
            what: "only feeds and sorted feeds can be read here",
        };
        let reply = self
            .invoke(
                &self.scripts.history,
                feed,
                &[&after.to_string(), &limit.max(1).to_string()],
            )
            .await
            .map_err(|e| ctx.error(e))?;
        let d = Decoder { feed };
        let [epoch, rev, oldest, entries] = d.array(&reply, "history reply")? else {
            return Err(FeedError::Corrupt {
                feed: feed.to_string(),
                reason: "history reply: expected 4 parts".into(),
            });
        };
        Ok(History {
            epoch: d.number(epoch, "epoch")?,
            rev: d.number(rev, "revision")?,
            oldest: d.number(oldest, "oldest revision")?,
            events: d.events(entries)?,
        })
    }

    /// Every feed name in the registry (`feeds` set), sorted. Names that are
    /// not valid feed names (written by foreign processes) are skipped.
    pub async fn feeds(&self) -> Result<Vec<FeedName>, FeedError> {
        let mut conn = self.conn.clone();
        let names: Vec<String> = conn.smembers(REGISTRY).await?;
        let mut feeds: Vec<FeedName> = names
            .into_iter()
            .filter_map(|n| FeedName::new(n).ok())
            .collect();
        feeds.sort();
        Ok(feeds)
    }
}
