//! The feed layer: Thoonk-compatible feeds and sorted feeds in Redis, with
//! revisions, a change log per feed, and epochs.
//!
//! Every write is one Lua script (`server-stub/lua/`) that reads and checks
//! first, then writes, then publishes; every key it touches is in KEYS and
//! shares the feed name, so a feed with a `{hash tag}` runs on Redis Cluster.
//! The registry (`feeds` set, `newfeed`/`delfeed`) is a separate step.
//! docs/REDIS.md describes the keys, channels and payloads.

pub mod cli;
mod decode;
mod error;
mod keys;
mod model;
mod scripts;
mod store;

pub use decode::item_value;
pub use error::FeedError;
pub use keys::{
    change_channel, edit_channel, feed_keys, feed_of_change_channel, position_channel,
    publish_channel, retract_channel, tag_change_channel, CHANGE_CHANNEL_PATTERN,
    CHANGE_CHANNEL_PREFIX, CONFFEED_CHANNEL, DELFEED_CHANNEL, FEED_KEY_PREFIXES, NEWFEED_CHANNEL,
    REGISTRY, TAG_CHANGE_CHANNEL_PREFIX,
};
pub use model::{
    Applied, ChangeNotice, ConfigChange, FeedInfo, FeedSettings, FeedType, History, ItemRead,
    ItemVersion, Since, Snapshot, DEFAULT_RETENTION,
};
pub use scripts::PRELUDE;
pub(crate) use scripts::{json_text, position_args};
pub use store::{FeedStore, SinceStep, PAGE_RESTARTS, SNAPSHOT_PAGE};
