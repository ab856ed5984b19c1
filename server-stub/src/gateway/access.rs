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
    fn matches(&self, user: &UserEntry, feed: &FeedName) -> bool {
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
                Segment::User => *name == user.name,
                Segment::Team => user.teams.contains_key(*name),
                Segment::AdminTeam => user.teams.get(*name) == Some(&TeamRole::Admin),
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
            .is_some_and(|entry| rules.iter().any(|rule| rule.matches(entry, feed)))
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
