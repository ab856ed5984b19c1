//! The feed layer's functions of the `thoonk` library (see
//! [`crate::library`]).

use serde_json::Value as Json;
use thoonk_protocol::Position;

use crate::library::Function;

pub use crate::library::PRELUDE;

/// One library function per operation.
pub(crate) struct Scripts {
    pub create: Function,
    pub register: Function,
    pub unregister: Function,
    pub config: Function,
    pub delete: Function,
    pub publish: Function,
    pub edit: Function,
    pub retract: Function,
    pub move_item: Function,
    pub snapshot: Function,
    pub since: Function,
    pub get: Function,
    pub item_at: Function,
    pub history: Function,
    pub epoch: Function,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            create: Function::new("create"),
            register: Function::new("register"),
            unregister: Function::new("unregister"),
            config: Function::new("config"),
            delete: Function::new("delete"),
            publish: Function::new("publish"),
            edit: Function::new("edit"),
            retract: Function::new("retract"),
            move_item: Function::new("move"),
            snapshot: Function::new("snapshot"),
            since: Function::new("since"),
            get: Function::new("get"),
            item_at: Function::new("item_at"),
            history: Function::new("history"),
            epoch: Function::new("epoch"),
        }
    }
}

/// The `(kind, relative id)` arguments the writing functions take for a
/// position: `("", "")` for none, `begin`, `end`, `before <id>`, `after <id>`.
/// Shared by the feed store and the job applier, which call the same functions.
pub(crate) fn position_args(position: Option<&Position>) -> (&'static str, &str) {
    match position {
        None => ("", ""),
        Some(Position::Begin) => ("begin", ""),
        Some(Position::End) => ("end", ""),
        Some(Position::Before(rel)) => ("before", rel.as_str()),
        Some(Position::After(rel)) => ("after", rel.as_str()),
    }
}

/// An item's JSON text, as the writing functions store it.
pub(crate) fn json_text(item: &Json) -> String {
    // Serializing a serde_json::Value cannot fail.
    serde_json::to_string(item).unwrap_or_else(|_| "null".to_owned())
}
