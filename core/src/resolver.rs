//! Settling conflicts: the app's resolver hook and the default three-way merge.

use serde_json::Value;

use crate::merge::merge3;
use crate::outcome::ConflictCase;

/// What to do with a change that ran into a conflict.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Leave the server's value as it is; our change counts as settled.
    KeepTheirs,
    /// Resubmit our value against the server's current revision.
    KeepOurs,
    /// Resubmit this value (`None`: retract the item) against the current revision.
    Merged(Option<Value>),
    /// Withdraw our change.
    DropOurs,
    /// Give up: report the change as unresolved, with this reason.
    Unresolved(String),
}

/// The app's resolver failed; the change is reported as unresolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the app's conflict resolver failed: {0}")]
pub struct ResolverError(pub String);

/// Decides how to settle a conflict. Must be deterministic for the same case.
pub trait Resolver {
    /// Settles one conflict.
    fn resolve(&mut self, case: &ConflictCase) -> Result<Resolution, ResolverError>;
}

/// The default resolver: [`merge3`] of base, ours and theirs.
///
/// A clean merge that equals theirs keeps theirs, one that equals ours keeps
/// ours, any other clean merge is resubmitted; a merge with conflicting paths
/// leaves the change unresolved, naming the paths. An unknown base is never
/// merged: the change is unresolved unless both sides already agree.
#[derive(Clone, Copy, Debug, Default)]
pub struct MergeResolver;

impl Resolver for MergeResolver {
    fn resolve(&mut self, case: &ConflictCase) -> Result<Resolution, ResolverError> {
        if case.unknown_base {
            return Ok(if case.ours == case.theirs {
                Resolution::KeepTheirs
            } else {
                Resolution::Unresolved(
                    "the item's value at the change's base is unknown (the feed's history \
                     restarted or no longer reaches it): nothing to merge against"
                        .into(),
                )
            });
        }
        let merged = merge3(case.base.as_ref(), case.ours.as_ref(), case.theirs.as_ref());
        if !merged.is_clean() {
            return Ok(Resolution::Unresolved(format!(
                "both sides changed {}",
                merged
                    .conflicts
                    .iter()
                    .map(|p| if p.is_empty() {
                        "the whole item"
                    } else {
                        p.as_str()
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(if merged.value == case.theirs {
            Resolution::KeepTheirs
        } else if merged.value == case.ours {
            Resolution::KeepOurs
        } else {
            Resolution::Merged(merged.value)
        })
    }
}

/// A resolver made of a closure.
pub struct FnResolver<F>(pub F);

impl<F> Resolver for FnResolver<F>
where
    F: FnMut(&ConflictCase) -> Result<Resolution, ResolverError>,
{
    fn resolve(&mut self, case: &ConflictCase) -> Result<Resolution, ResolverError> {
        (self.0)(case)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use thoonk_protocol::{ChangeId, FeedName, ItemId};

    fn case(base: Option<Value>, ours: Option<Value>, theirs: Option<Value>) -> ConflictCase {
        ConflictCase {
            change: ChangeId::new("c", 1),
            feed: FeedName::new("f").unwrap(),
            id: ItemId::new("i").unwrap(),
            base,
            unknown_base: false,
            ours,
            theirs,
            rev: 3,
        }
    }

    #[test]
    fn an_unknown_base_is_never_merged_as_an_empty_one() {
        let mut r = MergeResolver;
        let mut c = case(
            None,
            Some(json!(["a", "b", "c"])),
            Some(json!(["a", "b", "d"])),
        );
        c.unknown_base = true;
        assert!(
            matches!(r.resolve(&c), Ok(Resolution::Unresolved(reason)) if reason.contains("unknown")),
            "two arrays are not concatenated against a base nobody knows"
        );
        let mut c = case(None, Some(json!({"a": 1})), Some(json!({"a": 1, "b": 2})));
        c.unknown_base = true;
        assert!(matches!(r.resolve(&c), Ok(Resolution::Unresolved(_))));
        let mut c = case(None, Some(json!({"a": 1})), Some(json!({"a": 1})));
        c.unknown_base = true;
        assert_eq!(r.resolve(&c), Ok(Resolution::KeepTheirs));
    }

    #[test]
    fn merge_resolver_picks_the_narrowest_resolution() {
        let mut r = MergeResolver;
        let c = case(
            Some(json!({"a": 1, "b": 1})),
            Some(json!({"a": 2, "b": 1})),
            Some(json!({"a": 1, "b": 2})),
        );
        assert_eq!(
            r.resolve(&c),
            Ok(Resolution::Merged(Some(json!({"a": 2, "b": 2}))))
        );
        let c = case(
            Some(json!({"a": 1})),
            Some(json!({"a": 2})),
            Some(json!({"a": 2})),
        );
        assert_eq!(r.resolve(&c), Ok(Resolution::KeepTheirs));
        let c = case(
            Some(json!({"a": [1]})),
            Some(json!({"a": [1, 2]})),
            Some(json!({"a": [1]})),
        );
        assert_eq!(r.resolve(&c), Ok(Resolution::KeepOurs));
        let c = case(
            Some(json!({"a": 1})),
            Some(json!({"a": 2})),
            Some(json!({"a": 3})),
        );
        assert_eq!(
            r.resolve(&c),
            Ok(Resolution::Unresolved("both sides changed /a".into()))
        );
        let c = case(Some(json!(1)), None, Some(json!(2)));
        assert_eq!(
            r.resolve(&c),
            Ok(Resolution::Unresolved(
                "both sides changed the whole item".into()
            ))
        );
    }

    #[test]
    fn closures_are_resolvers() {
        let mut r = FnResolver(|c: &ConflictCase| {
            if c.theirs.is_none() {
                Err(ResolverError("no theirs".into()))
            } else {
                Ok(Resolution::DropOurs)
            }
        });
        assert_eq!(
            r.resolve(&case(None, None, Some(json!(1)))),
            Ok(Resolution::DropOurs)
        );
        assert!(r.resolve(&case(None, None, None)).is_err());
    }
}
