//! Validated feed names, item ids and subscription patterns.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::NameError;

/// Longest accepted feed name, in bytes.
pub const MAX_FEED_NAME_LEN: usize = 256;
/// Longest accepted item id, in bytes.
pub const MAX_ITEM_ID_LEN: usize = 256;

/// Characters that make a name a pattern; concrete feed names may not hold them.
const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '\\'];

fn check_text(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    if value.contains('\0') {
        return Err(NameError::Nul { what });
    }
    Ok(())
}

/// A concrete feed name such as `team:353:member:7:tasks`.
///
/// Non-empty, at most [`MAX_FEED_NAME_LEN`] bytes, no NUL and no glob characters
/// (`* ? [ ] \`). Segments are separated by `:`; a `{hash tag}` picks the Redis
/// Cluster slot of every key of the feed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeedName(String);

impl FeedName {
    /// Validates `name` as a concrete feed name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_text("feed name", &name, MAX_FEED_NAME_LEN)?;
        if let Some(c) = name.chars().find(|c| GLOB_CHARS.contains(c)) {
            return Err(NameError::Glob {
                what: "feed name",
                c,
            });
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FeedName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<FeedName> for String {
    fn from(value: FeedName) -> Self {
        value.0
    }
}

impl fmt::Display for FeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An item id within a feed: non-empty, at most [`MAX_ITEM_ID_LEN`] bytes, no NUL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ItemId(String);

impl ItemId {
    /// Validates `id` as an item id.
    pub fn new(id: impl Into<String>) -> Result<Self, NameError> {
        let id = id.into();
        check_text("item id", &id, MAX_ITEM_ID_LEN)?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ItemId {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ItemId> for String {
    fn from(value: ItemId) -> Self {
        value.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription target: a concrete feed name, or a pattern in which a segment
/// that is exactly `*` matches any one segment (`team:353:member:*:tasks`).
///
/// `*` never matches across a `:`, so `team:*` matches `team:353` but not
/// `team:353:tasks`. No other glob syntax is accepted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeedPattern(String);

impl FeedPattern {
    /// Validates `pattern`.
    pub fn new(pattern: impl Into<String>) -> Result<Self, NameError> {
        let pattern = pattern.into();
        check_text("feed pattern", &pattern, MAX_FEED_NAME_LEN)?;
        for segment in pattern.split(':') {
            if segment != "*" {
                if let Some(c) = segment.chars().find(|c| GLOB_CHARS.contains(c)) {
                    return Err(NameError::Glob {
                        what: "feed pattern segment",
                        c,
                    });
                }
            }
        }
        Ok(Self(pattern))
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the pattern has no wildcard segment and so names one feed.
    pub fn is_concrete(&self) -> bool {
        !self.0.split(':').any(|s| s == "*")
    }

    /// True when `feed` matches this pattern segment by segment.
    pub fn matches(&self, feed: &FeedName) -> bool {
        let mut pattern = self.0.split(':');
        let mut name = feed.as_str().split(':');
        loop {
            match (pattern.next(), name.next()) {
                (None, None) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(n)) if p == n => {}
                _ => return false,
            }
        }
    }
}

impl TryFrom<String> for FeedPattern {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<FeedPattern> for String {
    fn from(value: FeedPattern) -> Self {
        value.0
    }
}

impl From<FeedName> for FeedPattern {
    fn from(value: FeedName) -> Self {
        Self(value.0)
    }
}

impl fmt::Display for FeedPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_names_are_validated() {
        assert!(FeedName::new("team:353:member:7:tasks").is_ok());
        assert!(FeedName::new("{team:353}:tasks").is_ok());
        assert_eq!(
            FeedName::new(""),
            Err(NameError::Empty { what: "feed name" })
        );
        assert_eq!(
            FeedName::new("a\0b"),
            Err(NameError::Nul { what: "feed name" })
        );
        assert!(matches!(
            FeedName::new("team:*"),
            Err(NameError::Glob { c: '*', .. })
        ));
        assert!(matches!(
            FeedName::new("x".repeat(MAX_FEED_NAME_LEN + 1)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn patterns_match_whole_segments() {
        let p = FeedPattern::new("team:353:member:*:tasks").unwrap();
        let name = |s: &str| FeedName::new(s).unwrap();
        assert!(p.matches(&name("team:353:member:7:tasks")));
        assert!(!p.matches(&name("team:353:member:7:notes")));
        assert!(!p.matches(&name("team:353:member:7:x:tasks")));
        assert!(!p.matches(&name("team:354:member:7:tasks")));
        assert!(!FeedPattern::new("team:*")
            .unwrap()
            .matches(&name("team:353:tasks")));
        assert!(FeedPattern::new("team:3*").is_err());
        assert!(!p.is_concrete());
        assert!(FeedPattern::new("team:1:tasks").unwrap().is_concrete());
    }

    #[test]
    fn names_reject_bad_json() {
        let err = serde_json::from_str::<FeedName>("\"a*\"").unwrap_err();
        assert!(err.to_string().contains("glob"), "{err}");
    }
}
