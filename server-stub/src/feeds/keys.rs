//! Redis key and channel names of a feed (see docs/REDIS.md).

use thoonk_protocol::FeedName;

/// The registry: a set of every feed name (classic).
pub const REGISTRY: &str = "feeds";
/// Classic channel announcing a new feed: `"name\0instance"`.
pub const NEWFEED_CHANNEL: &str = "newfeed";
/// Classic channel announcing a deleted feed: `"name\0instance"`.
pub const DELFEED_CHANNEL: &str = "delfeed";
/// Classic channel announcing a created or reconfigured feed: `"name\0instance"`.
pub const CONFFEED_CHANNEL: &str = "conffeed";

/// Prefix of the channel carrying every change of a feed with its revision.
pub const CHANGE_CHANNEL_PREFIX: &str = "feed.changes:";
/// Pattern matching the change channel of every feed.
pub const CHANGE_CHANNEL_PATTERN: &str = "feed.changes:*";

/// The prefixes of a feed's keys, in the order every feed script takes
/// them in KEYS (the prelude's `feed_at`).
pub const FEED_KEY_PREFIXES: [&str; 8] = [
    "feed.config:",
    "feed.ids:",
    "feed.items:",
    "feed.publishes:",
    "feed.idincr:",
    "feed.rev:",
    "feed.itemrevs:",
    "feed.log:",
];

/// The 8 keys of a feed, in script order.
pub fn feed_keys(feed: &FeedName) -> [String; 8] {
    FEED_KEY_PREFIXES.map(|prefix| format!("{prefix}{feed}"))
}

/// The Redis channel carrying every change of `feed` with its revision,
/// beside the classic ones; its payload is a JSON [`super::ChangeNotice`].
pub fn change_channel(feed: &FeedName) -> String {
    format!("{CHANGE_CHANNEL_PREFIX}{feed}")
}

/// Prefix of the sharded channel carrying every change of the feeds that
/// share a hash tag (`SPUBLISH`, beside the classic notice).
pub const TAG_CHANGE_CHANNEL_PREFIX: &str = "feed.tag.changes:";

/// The sharded channel of every change of the feeds tagged `tag`:
/// `feed.tag.changes:{<tag>}`, in the tag's Redis Cluster slot.
pub fn tag_change_channel(tag: &str) -> String {
    format!("{TAG_CHANGE_CHANNEL_PREFIX}{{{tag}}}")
}

/// The feed a change channel belongs to (`None` for another channel).
pub fn feed_of_change_channel(channel: &str) -> Option<FeedName> {
    channel
        .strip_prefix(CHANGE_CHANNEL_PREFIX)
        .and_then(|name| FeedName::new(name).ok())
}

/// Classic channel: a new item, `"id\0item"`.
pub fn publish_channel(feed: &FeedName) -> String {
    format!("feed.publish:{feed}")
}

/// Classic channel: an edited item of a time-ordered feed, `"id\0item"`.
pub fn edit_channel(feed: &FeedName) -> String {
    format!("feed.edit:{feed}")
}

/// Classic channel: a removed item, `"id"`.
pub fn retract_channel(feed: &FeedName) -> String {
    format!("feed.retract:{feed}")
}

/// Classic channel: a sorted feed item's new place, `"id\0begin:"` etc.
pub fn position_channel(feed: &FeedName) -> String {
    format!("feed.position:{feed}")
}
