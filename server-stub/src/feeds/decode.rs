//! Decoding of script replies and change-log entries.

use redis::Value;
use serde_json::Value as Json;
use thoonk_protocol::{Change, ChangeOp, FeedEvent, FeedName, Item, ItemId, Position, Rev};

use super::error::FeedError;
use super::model::{Applied, Snapshot};

/// Decodes replies of one feed's scripts, naming the feed in errors.
pub(crate) struct Decoder<'a> {
    pub feed: &'a FeedName,
}

/// A stored item as JSON: its text when that is JSON, else a JSON string of it
/// (an item written by a foreign Thoonk process).
pub fn item_value(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()))
}

impl Decoder<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> FeedError {
        FeedError::Corrupt {
            feed: self.feed.to_string(),
            reason: reason.into(),
        }
    }

    /// The parts of an array reply.
    pub fn array<'v>(&self, value: &'v Value, what: &str) -> Result<&'v [Value], FeedError> {
        match value {
            Value::Array(items) => Ok(items),
            other => Err(self.corrupt(format!("{what}: expected an array, got {other:?}"))),
        }
    }

    /// A string reply; `None` for nil.
    pub fn text(&self, value: &Value, what: &str) -> Result<Option<String>, FeedError> {
        match value {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            Value::SimpleString(s) => Ok(Some(s.clone())),
            Value::Int(n) => Ok(Some(n.to_string())),
            other => Err(self.corrupt(format!("{what}: expected a string, got {other:?}"))),
        }
    }

    /// A string reply that must be present.
    pub fn required_text(&self, value: &Value, what: &str) -> Result<String, FeedError> {
        self.text(value, what)?
            .ok_or_else(|| self.corrupt(format!("{what} is missing")))
    }

    /// A whole number reply (integer or decimal text).
    pub fn number(&self, value: &Value, what: &str) -> Result<u64, FeedError> {
        match value {
            Value::Int(n) => u64::try_from(*n).map_err(|_| self.corrupt(format!("{what} is {n}"))),
            _ => {
                let text = self.required_text(value, what)?;
                text.parse()
                    .map_err(|_| self.corrupt(format!("{what} is {text:?}, not a whole number")))
            }
        }
    }

    /// An item id as stored.
    pub fn item_id(&self, text: String, what: &str) -> Result<ItemId, FeedError> {
        ItemId::new(text).map_err(|e| self.corrupt(format!("{what}: {e}")))
    }

    /// The reply of a write script: `{ epoch, rev, id, op }`.
    pub fn applied(&self, value: &Value) -> Result<Applied, FeedError> {
        let parts = self.array(value, "write reply")?;
        if parts.len() < 3 {
            return Err(self.corrupt("write reply: too short"));
        }
        Ok(Applied {
            epoch: self.number(&parts[0], "epoch")?,
            rev: self.number(&parts[1], "revision")?,
            id: self.item_id(self.required_text(&parts[2], "item id")?, "item id")?,
        })
    }

    /// A snapshot reply: `{ epoch, rev, ids, items, item revs }`, or a page
    /// of one with `total` and `publishes` after them.
    pub fn snapshot_page(&self, parts: &[Value]) -> Result<Page, FeedError> {
        let (epoch, rev, ids, items, revs, pin) = match parts {
            [epoch, rev, ids, items, revs] => (epoch, rev, ids, items, revs, None),
            [epoch, rev, ids, items, revs, total, publishes] => {
                (epoch, rev, ids, items, revs, Some((total, publishes)))
            }
            _ => return Err(self.corrupt("snapshot reply: expected 5 or 7 parts")),
        };
        let ids = self.array(ids, "snapshot ids")?;
        let values = self.array(items, "snapshot items")?;
        let revs = self.array(revs, "snapshot item revisions")?;
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let Some(text) = values
                .get(i)
                .map(|v| self.text(v, "item"))
                .transpose()?
                .flatten()
            else {
                // An id without a value (left behind by a foreign writer): not an item.
                continue;
            };
            out.push(Item {
                id: self.item_id(self.required_text(id, "item id")?, "item id")?,
                item: item_value(&text),
                rev: match revs.get(i) {
                    Some(v) => self.number(v, "item revision")?,
                    None => 0,
                },
            });
        }
        let snapshot = Snapshot {
            epoch: self.number(epoch, "epoch")?,
            rev: self.number(rev, "revision")?,
            items: out,
        };
        let pin = match pin {
            Some((total, publishes)) => Some(PagePin {
                epoch: snapshot.epoch,
                rev: snapshot.rev,
                total: self.number(total, "snapshot total")?,
                publishes: self.number(publishes, "snapshot publishes")?,
            }),
            None => None,
        };
        Ok(Page {
            snapshot,
            ids: ids.len() as u64,
            pin,
        })
    }

    /// Change-log entries as XRANGE returns them.
    pub fn events(&self, value: &Value) -> Result<Vec<FeedEvent>, FeedError> {
        self.array(value, "change log")?
            .iter()
            .map(|entry| self.event(entry))
            .collect()
    }

    fn event(&self, entry: &Value) -> Result<FeedEvent, FeedError> {
        let [id, fields] = self.array(entry, "log entry")? else {
            return Err(self.corrupt("log entry: expected [id, fields]"));
        };
        let id = self.required_text(id, "log entry id")?;
        let rev: Rev = id
            .strip_suffix("-0")
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| self.corrupt(format!("log entry id {id} is not <rev>-0")))?;
        let fields = self.array(fields, "log entry fields")?;
        let mut op = None;
        let mut item_id = None;
        let mut item = None;
        let mut pos = None;
        let mut rel = None;
        let mut prev = None;
        let mut job = None;
        for pair in fields.chunks(2) {
            let [name, value] = pair else {
                return Err(self.corrupt(format!("log entry {id}: odd field list")));
            };
            let name = self.required_text(name, "log field name")?;
            let value = self.required_text(value, "log field value")?;
            match name.as_str() {
                "op" => op = Some(value),
                "id" => item_id = Some(value),
                "item" => item = Some(item_value(&value)),
                "pos" => pos = Some(value),
                "rel" => rel = Some(value),
                "prev" => prev = Some(item_value(&value)),
                "job" => job = Some(value),
                _ => {} // fields added by later versions
            }
        }
        let op = match op.as_deref() {
            Some("publish") => ChangeOp::Publish,
            Some("edit") => ChangeOp::Edit,
            Some("retract") => ChangeOp::Retract,
            Some("position") => ChangeOp::Position,
            other => return Err(self.corrupt(format!("log entry {id}: unknown op {other:?}"))),
        };
        let item_id = self.item_id(
            item_id.ok_or_else(|| self.corrupt(format!("log entry {id}: no item id")))?,
            "log item id",
        )?;
        let position = match pos.as_deref() {
            None => None,
            Some("begin") => Some(Position::Begin),
            Some("end") => Some(Position::End),
            Some(kind @ ("before" | "after")) => {
                let rel = rel.ok_or_else(|| self.corrupt(format!("log entry {id}: no rel")))?;
                let rel = self.item_id(rel, "log reference id")?;
                Some(if kind == "before" {
                    Position::Before(rel)
                } else {
                    Position::After(rel)
                })
            }
            Some(other) => {
                return Err(self.corrupt(format!("log entry {id}: unknown position {other}")))
            }
        };
        Ok(FeedEvent {
            rev,
            change: Change {
                op,
                id: item_id,
                item,
                position,
                prev,
                job,
            },
        })
    }
}

/// One page of a snapshot: its items, how many ids it covered (an id
/// without a value is not an item), and the state every page must be read at.
pub(crate) struct Page {
    pub snapshot: Snapshot,
    pub ids: u64,
    pub pin: Option<PagePin>,
}

/// The feed's state at the first page of a snapshot read in pages.
#[derive(Clone, Copy)]
pub(crate) struct PagePin {
    pub epoch: u64,
    pub rev: u64,
    /// Ids in the feed.
    pub total: u64,
    /// Its `feed.publishes:N` counter (classic writes move it).
    pub publishes: u64,
}
