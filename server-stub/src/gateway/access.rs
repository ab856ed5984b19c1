//! Who may connect, and which feeds each user may read, write and administer.
//!
//! The gateway and the job workers ask an [`AccessRules`] implementation; an
//! application replaces the rule engine with its own by implementing the trait.
//! [`ConfigRules`] is the built-in engine: users, tokens, teams and rules from
//! a JSON file (see `docs/ACCESS.md`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use thoonk_protocol::FeedName;

use crate::feeds::{FeedSettings, FeedType};

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's name, as shown in `welcome` and passed to job handlers.
    pub name: String,
}

/// The server's authentication and authorization rules.
pub trait AccessRules: Send + Sync + 'static {
    /// The user a bearer token belongs to, or `None` when the token is not valid.
    fn authenticate(&self, token: &str) -> Option<User>;
    /// The user called `name`, if it exists (e.g. the target of a delegation).
    fn find_user(&self, name: &str) -> Option<User>;
    /// True when `user` may read `feed` (subscribe, replay, receive its events).
    fn can_read(&self, user: &User, feed: &FeedName) -> bool;
    /// True when `user` may write `feed`.
    fn can_write(&self, user: &User, feed: &FeedName) -> bool;
    /// True when `user` may change anybody's items in `feed` (e.g. a team admin).
    fn can_admin(&self, user: &User, feed: &FeedName) -> bool;
    /// The type and settings `feed` gets when a client's change creates it
    /// (its first publish). `None`, the default: a time-ordered `feed`, or a
    /// `sorted_feed` when that publish names a position other than the end.
    fn new_feed(&self, feed: &FeedName) -> Option<FeedSettings> {
        let _ = feed;
        None
    }
}

/// Rules for local development without a config file: every non-empty token
/// is a user of that name who may read, write and administer every feed.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAccess;

impl AccessRules for OpenAccess {
    fn authenticate(&self, token: &str) -> Option<User> {
        self.find_user(token)
    }

    fn find_user(&self, name: &str) -> Option<User> {
        (!name.is_empty()).then(|| User {
            name: name.to_owned(),
        })
    }

    fn can_read(&self, _: &User, _: &FeedName) -> bool {
        true
    }

    fn can_write(&self, _: &User, _: &FeedName) -> bool {
        true
    }

    fn can_admin(&self, _: &User, _: &FeedName) -> bool {
        true
    }
}

/// A user's role in a team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamRole {
    /// A member.
    Member,
    /// A member who may also change other members' items.
    Admin,
}

/// One user of the config file.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The user's name.
    pub name: String,
    /// The bearer token that signs the user in.
    pub token: String,
    /// The user's teams and role in each.
    #[serde(default)]
    pub teams: BTreeMap<String, TeamRole>,
}

/// The access config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The users.
    pub users: Vec<UserEntry>,
    /// Feed patterns a user may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Feed patterns a user may write.
    #[serde(default)]
    pub write: Vec<String>,
    /// Feed patterns in which a user may change other users' items.
    #[serde(default)]
    pub admin: Vec<String>,
    /// The type and settings of the feeds that clients create, by pattern
    /// (the first that matches applies).
    #[serde(default)]
    pub feeds: Vec<FeedRule>,
}

/// The type and settings a feed created by a client's change gets, for the
/// feeds whose names match `pattern`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedRule {
    /// Feed names it applies to: `:`-separated segments, each a literal,
    /// `*` (any one) or `**` (last only: one or more); no placeholders.
    pub pattern: String,
    /// `feed` (time-ordered) or `sorted_feed` (explicit order: `move`).
    #[serde(rename = "type")]
    pub kind: FeedType,
    /// Most items kept (time-ordered feeds only); older items are retracted.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// Change-log entries kept at least (≥ 1); absent: the default.
    #[serde(default)]
    pub retention: Option<u64>,
}

impl FeedRule {
    /// The rule's pattern and settings, checked.
    fn parse(&self) -> Result<(RulePattern, FeedSettings), AccessConfigError> {
        let bad = |reason: &str| AccessConfigError::Rule {
            rule: self.pattern.clone(),
            reason: reason.to_owned(),
        };
        let pattern = RulePattern::parse(&self.pattern)?;
        if pattern
            .0
            .iter()
            .any(|s| matches!(s, Segment::User | Segment::Team | Segment::AdminTeam))
        {
            return Err(bad("a feed type applies to every user: no placeholders"));
        }
        if self.max_length.is_some() && self.kind != FeedType::Feed {
            return Err(bad(
                "max_length applies to time-ordered feeds (type feed) only",
            ));
        }
        if self.retention == Some(0) {
            return Err(bad("retention must be at least 1"));
        }
        let settings = FeedSettings {
            kind: self.kind,
            max_length: self.max_length,
            retention: self.retention,
        };
        Ok((pattern, settings))
    }
}

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessConfigError {
    /// The file could not be read.
    #[error("cannot read the access config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the documented shape.
    #[error("the access config {path} is invalid: {source} (see docs/ACCESS.md)")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A rule pattern is malformed.
    #[error("access rule {rule:?}: {reason}")]
    Rule {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two users share a name or a token.
    #[error("two users share the {what} {value:?}: names and tokens must be unique")]
    Duplicate {
        /// `name` or `token`.
        what: &'static str,
        /// The shared value.
        value: String,
    },
}

/// One segment of a rule pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*`: any one segment.
    Any,
    /// `**` (last only): any number of segments, at least one.
    Rest,
    /// `<user>`: the user's own name.
    User,
    /// `<team>`: any team the user belongs to.
    Team,
    /// `<admin_team>`: any team in which the user is an admin.
    AdminTeam,
}

/// A rule pattern such as `team:<team>:**` or `user:<user>:inbox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulePattern(Vec<Segment>);

impl RulePattern {
    /// Parses a rule pattern: `:`-separated segments, each a literal, `*`,
    /// `**` (last segment only), `<user>`, `<team>` or `<admin_team>`.
    pub fn parse(rule: &str) -> Result<Self, AccessConfigError> {
        let bad = |reason: &str| AccessConfigError::Rule {
            rule: rule.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = rule.split(':').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "" => return Err(bad("empty segment")),
                "*" => Segment::Any,
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err(bad("`**` may only be the last segment")),
                "<user>" => Segment::User,
                "<team>" => Segment::Team,
                "<admin_team>" => Segment::AdminTeam,
                p if p.contains(['<', '>', '*']) => {
                    return Err(bad("placeholders and wildcards must be whole segments"))
                }
                p => Segment::Literal(p.to_owned()),
            });
        }
        Ok(Self(segments))
    }

    /// True when `feed` matches for `user`. A segment that is a whole Redis
    /// Cluster hash tag (`team:{353}:notes`) matches as its text (`353`):
    /// the braces say where the feed lives, not what it is.
    /// Placeholders match nothing without a user.
    fn matches(&self, user: Option<&UserEntry>, feed: &FeedName) -> bool {
        let names: Vec<&str> = feed.as_str().split(':').map(without_hash_tag).collect();
        let mut i = 0;
        for segment in &self.0 {
            if *segment == Segment::Rest {
                return i < names.len();
            }
            let Some(name) = names.get(i) else {
                return false;
            };
            let ok = match segment {
                Segment::Literal(text) => text == name,
                Segment::Any => true,
                Segment::User => user.is_some_and(|u| *name == u.name),
                Segment::Team => user.is_some_and(|u| u.teams.contains_key(*name)),
                Segment::AdminTeam => {
                    user.is_some_and(|u| u.teams.get(*name) == Some(&TeamRole::Admin))
                }
                Segment::Rest => unreachable!("handled above"),
            };
            if !ok {
                return false;
            }
            i += 1;
        }
        i == names.len()
    }
}

/// `{text}` → `text`; any other segment as it is.
fn without_hash_tag(segment: &str) -> &str {
    segment
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|text| !text.is_empty())
        .unwrap_or(segment)
}

/// The built-in rule engine: users, tokens, teams and rules from a config file.
#[derive(Clone, Debug)]
pub struct ConfigRules {
    users: Vec<UserEntry>,
    read: Vec<RulePattern>,
    write: Vec<RulePattern>,
    admin: Vec<RulePattern>,
    feeds: Vec<(RulePattern, FeedSettings)>,
}

impl ConfigRules {
    /// Builds the engine from a parsed config.
    pub fn new(config: AccessConfig) -> Result<Self, AccessConfigError> {
        for (i, user) in config.users.iter().enumerate() {
            for other in &config.users[..i] {
                if other.name == user.name {
                    return Err(AccessConfigError::Duplicate {
                        what: "name",
                        value: user.name.clone(),
                    });
                }
                if other.token == user.token {
                    return Err(AccessConfigError::Duplicate {
                        what: "token",
                        value: user.token.clone(),
                    });
                }
            }
        }
        let parse = |rules: &[String]| {
            rules
                .iter()
                .map(|r| RulePattern::parse(r))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            read: parse(&config.read)?,
            write: parse(&config.write)?,
            admin: parse(&config.admin)?,
            feeds: config
                .feeds
                .iter()
                .map(FeedRule::parse)
                .collect::<Result<_, _>>()?,
            users: config.users,
        })
    }

    /// Reads and parses the JSON config file at `path`.
    pub fn load(path: &Path) -> Result<Self, AccessConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AccessConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config = serde_json::from_str(&text).map_err(|source| AccessConfigError::Parse {
            path: shown,
            source,
        })?;
        Self::new(config)
    }

    /// The configured users (the demo offers them in its sign-in picker).
    pub fn users(&self) -> &[UserEntry] {
        &self.users
    }

    fn entry(&self, user: &User) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.name == user.name)
    }

    fn allowed(&self, rules: &[RulePattern], user: &User, feed: &FeedName) -> bool {
        self.entry(user)
            .is_some_and(|entry| rules.iter().any(|rule| rule.matches(Some(entry), feed)))
    }
}

impl AccessRules for ConfigRules {
    fn authenticate(&self, token: &str) -> Option<User> {
        let entry = self
            .users
            .iter()
            .find(|u| !token.is_empty() && u.token == token)?;
        Some(User {
            name: entry.name.clone(),
        })
    }

    fn find_user(&self, name: &str) -> Option<User> {
        let entry = self.users.iter().find(|u| u.name == name)?;
        Some(User {
            name: entry.name.clone(),
        })
    }

    fn can_read(&self, user: &User, feed: &FeedName) -> bool {
        self.allowed(&self.read, user, feed)
    }

    fn can_write(&self, user: &User, feed: &FeedName) -> bool {
        self.allowed(&self.write, user, feed)
    }

    fn can_admin(&self, user: &User, feed: &FeedName) -> bool {
        self.allowed(&self.admin, user, feed)
    }

    fn new_feed(&self, feed: &FeedName) -> Option<FeedSettings> {
        self.feeds
            .iter()
            .find(|(pattern, _)| pattern.matches(None, feed))
            .map(|(_, settings)| settings.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ConfigRules {
        let config: AccessConfig = serde_json::from_value(serde_json::json!({
            "users": [
                {"name": "ann", "token": "t-ann", "teams": {"353": "admin"}},
                {"name": "bob", "token": "t-bob", "teams": {"353": "member", "7": "member"}},
                {"name": "eve", "token": "t-eve"}
            ],
            "read": ["team:<team>:**", "user:<user>:**"],
            "write": ["team:<team>:member:<user>:tasks"],
            "admin": ["team:<admin_team>:**"]
        }))
        .unwrap();
        ConfigRules::new(config).unwrap()
    }

    fn feed(name: &str) -> FeedName {
        FeedName::new(name).unwrap()
    }

    #[test]
    fn tokens_identify_users() {
        let rules = rules();
        assert_eq!(rules.authenticate("t-bob").unwrap().name, "bob");
        assert!(rules.authenticate("").is_none());
        assert!(rules.authenticate("t-nobody").is_none());
    }

    #[test]
    fn placeholders_bind_to_the_users_teams() {
        let rules = rules();
        let bob = rules.find_user("bob").unwrap();
        let eve = rules.find_user("eve").unwrap();
        assert!(rules.can_read(&bob, &feed("team:353:member:ann:tasks")));
        assert!(rules.can_read(&bob, &feed("team:7:anything:at:all")));
        assert!(!rules.can_read(&bob, &feed("team:354:member:bob:tasks")));
        assert!(
            !rules.can_read(&bob, &feed("team:353")),
            "`**` needs at least one segment"
        );
        assert!(!rules.can_read(&eve, &feed("team:353:member:ann:tasks")));
        assert!(rules.can_read(&eve, &feed("user:eve:inbox")));
        assert!(!rules.can_read(&eve, &feed("user:bob:inbox")));
        assert!(rules.can_write(&bob, &feed("team:353:member:bob:tasks")));
        assert!(!rules.can_write(&bob, &feed("team:353:member:ann:tasks")));
        let ann = rules.find_user("ann").unwrap();
        assert!(rules.can_admin(&ann, &feed("team:353:member:bob:tasks")));
        assert!(!rules.can_admin(&bob, &feed("team:353:member:ann:tasks")));
    }

    #[test]
    fn hash_tagged_segments_match_as_their_text() {
        let rules = rules();
        let bob = rules.find_user("bob").unwrap();
        assert!(rules.can_read(&bob, &feed("team:{353}:member:ann:tasks")));
        assert!(rules.can_write(&bob, &feed("team:{353}:member:{bob}:tasks")));
        assert!(!rules.can_read(&bob, &feed("team:{354}:member:bob:tasks")));
        assert!(rules.can_read(&bob, &feed("{user}:bob:inbox")));
        // Only a whole segment is a tag; `{}` and half braces are text.
        assert!(!rules.can_read(&bob, &feed("team:{353:x")));
        assert!(!rules.can_read(&bob, &feed("team:{}:x")));
    }

    #[test]
    fn glob_looking_names_are_literals() {
        let rules = rules();
        let eve = rules.find_user("eve").unwrap();
        // Feed names cannot hold glob characters, and a placeholder never matches across segments.
        assert!(FeedName::new("user:*:inbox").is_err());
        assert!(!rules.can_read(&eve, &feed("user:eve")));
    }

    #[test]
    fn feed_rules_give_new_feeds_their_type_first_match_first() {
        let config: AccessConfig = serde_json::from_value(serde_json::json!({
            "users": [],
            "feeds": [
                {"pattern": "team:*:member:*:tasks", "type": "sorted_feed", "retention": 500},
                {"pattern": "team:**", "type": "feed", "max_length": 100}
            ]
        }))
        .unwrap();
        let rules = ConfigRules::new(config).unwrap();
        let tasks = rules
            .new_feed(&feed("team:{353}:member:bob:tasks"))
            .unwrap();
        assert_eq!(
            (tasks.kind, tasks.max_length, tasks.retention),
            (FeedType::SortedFeed, None, Some(500))
        );
        let notes = rules.new_feed(&feed("team:353:notes")).unwrap();
        assert_eq!((notes.kind, notes.max_length), (FeedType::Feed, Some(100)));
        assert_eq!(rules.new_feed(&feed("user:bob:inbox")), None);
        assert_eq!(OpenAccess.new_feed(&feed("team:353:notes")), None);
    }

    #[test]
    fn bad_feed_rules_are_refused_with_reasons() {
        for rule in [
            serde_json::json!({"pattern": "team:<team>:tasks", "type": "sorted_feed"}),
            serde_json::json!({"pattern": "tasks", "type": "sorted_feed", "max_length": 5}),
            serde_json::json!({"pattern": "tasks", "type": "feed", "retention": 0}),
            serde_json::json!({"pattern": "a:**:b", "type": "feed"}),
        ] {
            let config: AccessConfig =
                serde_json::from_value(serde_json::json!({"users": [], "feeds": [rule]})).unwrap();
            assert!(
                matches!(
                    ConfigRules::new(config),
                    Err(AccessConfigError::Rule { .. })
                ),
                "{rule}"
            );
        }
        let unknown = serde_json::json!({"users": [], "feeds": [{"pattern": "x", "type": "job"}]});
        assert!(serde_json::from_value::<AccessConfig>(unknown).is_err());
    }

    #[test]
    fn bad_configs_are_refused_with_reasons() {
        assert!(RulePattern::parse("team:**:x").is_err());
        assert!(RulePattern::parse("team:a<team>").is_err());
        assert!(RulePattern::parse("team::x").is_err());
        let dup: AccessConfig = serde_json::from_value(serde_json::json!({
            "users": [{"name": "a", "token": "t"}, {"name": "b", "token": "t"}]
        }))
        .unwrap();
        assert!(matches!(
            ConfigRules::new(dup),
            Err(AccessConfigError::Duplicate { what: "token", .. })
        ));
    }
}
