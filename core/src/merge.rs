//! Three-way JSON merge of an item: base (the common ancestor), ours (the local
//! change) and theirs (the server's current value).
//!
//! `None` stands for "no item" (not yet published, or retracted). The rules,
//! applied recursively from the root:
//!
//! 1. If ours equals theirs, that is the result.
//! 2. If one side equals the base, the other side's value wins (it is the only change).
//! 3. Both sides changed the value differently:
//!    - two objects merge key by key, each key by these same rules, with the
//!      base's key as its base (an absent key is `None`; a base that is not an
//!      object counts as `{}`); a key removed on one side and unchanged on the
//!      other is removed;
//!    - two arrays merge only when both merely appended to the base array
//!      (the base is a prefix of each, a missing base counts as `[]`): the
//!      result is the base, then their appended elements, then ours;
//!      any other pair of array edits is a conflict (arrays are not diffed
//!      element by element: their elements have no identity);
//!    - anything else (two different scalars, a type change on both sides, a
//!      removal against a change) is a conflict at that path.
//!
//! A conflicting path takes theirs in the returned value and is listed in
//! `conflicts` as a JSON pointer (`""` is the whole item), so the caller can
//! decide: the default resolver reports such a change as unresolved.

use serde_json::{Map, Value};

/// The result of a three-way merge.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// The merged item (`None`: no item); conflicting paths hold theirs.
    pub value: Option<Value>,
    /// JSON pointers of the paths both sides changed differently, in document order.
    pub conflicts: Vec<String>,
}

impl Merged {
    /// True when both sides' changes combined without a conflict.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// Merges `ours` and `theirs`, both derived from `base`, following the module's rules.
pub fn merge3(base: Option<&Value>, ours: Option<&Value>, theirs: Option<&Value>) -> Merged {
    let mut conflicts = Vec::new();
    let value = merge_at(String::new(), base, ours, theirs, &mut conflicts);
    Merged { value, conflicts }
}

fn merge_at(
    path: String,
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
    conflicts: &mut Vec<String>,
) -> Option<Value> {
    if ours == theirs {
        return ours.cloned();
    }
    if ours == base {
        return theirs.cloned();
    }
    if theirs == base {
        return ours.cloned();
    }
    match (ours, theirs) {
        (Some(Value::Object(o)), Some(Value::Object(t))) => {
            let empty = Map::new();
            let b = match base {
                Some(Value::Object(b)) => b,
                _ => &empty,
            };
            Some(Value::Object(merge_objects(&path, b, o, t, conflicts)))
        }
        (Some(Value::Array(o)), Some(Value::Array(t))) => {
            let b: &[Value] = match base {
                Some(Value::Array(b)) => b,
                None => &[],
                Some(_) => {
                    conflicts.push(path);
                    return theirs.cloned();
                }
            };
            if o.starts_with(b) && t.starts_with(b) {
                let mut out = b.to_vec();
                out.extend_from_slice(&t[b.len()..]);
                out.extend_from_slice(&o[b.len()..]);
                Some(Value::Array(out))
            } else {
                conflicts.push(path);
                theirs.cloned()
            }
        }
        _ => {
            conflicts.push(path);
            theirs.cloned()
        }
    }
}

fn merge_objects(
    path: &str,
    base: &Map<String, Value>,
    ours: &Map<String, Value>,
    theirs: &Map<String, Value>,
    conflicts: &mut Vec<String>,
) -> Map<String, Value> {
    let mut keys: Vec<&String> = theirs.keys().collect();
    keys.extend(ours.keys().filter(|k| !theirs.contains_key(*k)));
    keys.extend(
        base.keys()
            .filter(|k| !theirs.contains_key(*k) && !ours.contains_key(*k)),
    );
    let mut out = Map::new();
    for key in keys {
        let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
        if let Some(v) = merge_at(
            child,
            base.get(key),
            ours.get(key),
            theirs.get(key),
            conflicts,
        ) {
            out.insert(key.clone(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(base: Value, ours: Value, theirs: Value) -> Merged {
        merge3(Some(&base), Some(&ours), Some(&theirs))
    }

    #[test]
    fn disjoint_field_edits_combine() {
        let m = merge(
            json!({"title": "a", "done": false, "n": 1}),
            json!({"title": "b", "done": false, "n": 1}),
            json!({"title": "a", "done": true, "n": 1}),
        );
        assert!(m.is_clean());
        assert_eq!(m.value, Some(json!({"title": "b", "done": true, "n": 1})));
    }

    #[test]
    fn same_field_changed_differently_conflicts_and_keeps_theirs() {
        let m = merge(
            json!({"t": "a", "x": 1}),
            json!({"t": "b", "x": 2}),
            json!({"t": "c", "x": 1}),
        );
        assert_eq!(m.conflicts, ["/t"]);
        assert_eq!(m.value, Some(json!({"t": "c", "x": 2})));
    }

    #[test]
    fn same_change_on_both_sides_is_clean() {
        let m = merge(json!({"t": "a"}), json!({"t": "b"}), json!({"t": "b"}));
        assert!(m.is_clean());
        assert_eq!(m.value, Some(json!({"t": "b"})));
    }

    #[test]
    fn nested_objects_merge_deeply() {
        let m = merge(
            json!({"meta": {"a": 1, "b": 1}, "k": 0}),
            json!({"meta": {"a": 2, "b": 1}, "k": 0}),
            json!({"meta": {"a": 1, "b": 3, "c": 4}, "k": 0}),
        );
        assert!(m.is_clean());
        assert_eq!(
            m.value,
            Some(json!({"meta": {"a": 2, "b": 3, "c": 4}, "k": 0}))
        );
    }

    #[test]
    fn key_removal_against_no_change_removes_and_against_change_conflicts() {
        let m = merge(
            json!({"a": 1, "b": 1}),
            json!({"b": 1}),
            json!({"a": 1, "b": 2}),
        );
        assert!(m.is_clean());
        assert_eq!(m.value, Some(json!({"b": 2})));
        let m = merge(json!({"a": 1}), json!({}), json!({"a": 2}));
        assert_eq!(m.conflicts, ["/a"]);
        assert_eq!(m.value, Some(json!({"a": 2})));
    }

    #[test]
    fn keys_added_on_both_sides_merge_or_conflict() {
        let m = merge(json!({}), json!({"x": 1}), json!({"y": 2}));
        assert_eq!(m.value, Some(json!({"y": 2, "x": 1})));
        let m = merge(json!({}), json!({"x": 1}), json!({"x": 2}));
        assert_eq!(m.conflicts, ["/x"]);
    }

    #[test]
    fn appends_to_an_array_on_both_sides_concatenate_theirs_first() {
        let m = merge(
            json!({"tags": ["a"]}),
            json!({"tags": ["a", "ours"]}),
            json!({"tags": ["a", "theirs"]}),
        );
        assert!(m.is_clean());
        assert_eq!(m.value, Some(json!({"tags": ["a", "theirs", "ours"]})));
    }

    #[test]
    fn other_array_edits_on_both_sides_conflict() {
        let m = merge(json!(["a", "b"]), json!(["b"]), json!(["a", "b", "c"]));
        assert_eq!(m.conflicts, [""]);
        assert_eq!(m.value, Some(json!(["a", "b", "c"])));
        let m = merge(json!(["a", "b"]), json!(["b", "a"]), json!(["a", "b"]));
        assert!(m.is_clean(), "one side unchanged: the reorder wins");
        assert_eq!(m.value, Some(json!(["b", "a"])));
    }

    #[test]
    fn retract_against_edit_conflicts_and_retract_against_nothing_retracts() {
        let base = json!({"t": 1});
        let edited = json!({"t": 2});
        let m = merge3(Some(&base), None, Some(&edited));
        assert_eq!(m.conflicts, [""]);
        assert_eq!(m.value, Some(edited.clone()));
        let m = merge3(Some(&base), Some(&edited), None);
        assert_eq!(m.conflicts, [""]);
        assert_eq!(m.value, None);
        let m = merge3(Some(&base), None, Some(&base));
        assert!(m.is_clean());
        assert_eq!(m.value, None);
        assert_eq!(merge3(Some(&base), None, None).value, None);
    }

    #[test]
    fn publish_on_both_sides_merges_against_an_empty_base() {
        let m = merge3(
            None,
            Some(&json!({"a": 1, "s": 1})),
            Some(&json!({"b": 2, "s": 1})),
        );
        assert!(m.is_clean());
        assert_eq!(m.value, Some(json!({"b": 2, "s": 1, "a": 1})));
    }

    #[test]
    fn type_changes_on_both_sides_conflict() {
        let m = merge(json!({"v": 1}), json!({"v": "one"}), json!({"v": [1]}));
        assert_eq!(m.conflicts, ["/v"]);
        let m = merge(json!(1), json!({"a": 1}), json!({"b": 1}));
        assert!(m.is_clean(), "a scalar base counts as an empty object");
        assert_eq!(m.value, Some(json!({"b": 1, "a": 1})));
    }

    #[test]
    fn pointer_escapes_special_characters() {
        let m = merge(
            json!({"a/b": {"~": 0}}),
            json!({"a/b": {"~": 1}}),
            json!({"a/b": {"~": 2}}),
        );
        assert_eq!(m.conflicts, ["/a~1b/~0"]);
    }
}
