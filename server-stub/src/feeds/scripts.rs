//! The Lua scripts, each prefixed with the shared prelude.

use redis::Script;

/// The shared Lua library concatenated in front of every feed script.
pub const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// One loaded script per operation.
pub(crate) struct Scripts {
    pub create: Script,
    pub register: Script,
    pub unregister: Script,
    pub config: Script,
    pub delete: Script,
    pub publish: Script,
    pub edit: Script,
    pub retract: Script,
    pub move_item: Script,
    pub snapshot: Script,
    pub since: Script,
    pub get: Script,
    pub item_at: Script,
    pub history: Script,
    pub epoch: Script,
}

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            create: with_prelude(include_str!("../../lua/create.lua")),
            register: Script::new(include_str!("../../lua/register.lua")),
            unregister: Script::new(include_str!("../../lua/unregister.lua")),
            config: with_prelude(include_str!("../../lua/config.lua")),
            delete: with_prelude(include_str!("../../lua/delete.lua")),
            publish: with_prelude(include_str!("../../lua/publish.lua")),
            edit: with_prelude(include_str!("../../lua/edit.lua")),
            retract: with_prelude(include_str!("../../lua/retract.lua")),
            move_item: with_prelude(include_str!("../../lua/move.lua")),
            snapshot: with_prelude(include_str!("../../lua/snapshot.lua")),
            since: with_prelude(include_str!("../../lua/since.lua")),
            get: with_prelude(include_str!("../../lua/get.lua")),
            item_at: with_prelude(include_str!("../../lua/item_at.lua")),
            history: with_prelude(include_str!("../../lua/history.lua")),
            epoch: with_prelude(include_str!("../../lua/epoch.lua")),
        }
    }

    pub fn all(&self) -> [&Script; 15] {
        [
            &self.create,
            &self.register,
            &self.unregister,
            &self.config,
            &self.delete,
            &self.publish,
            &self.edit,
            &self.retract,
            &self.move_item,
            &self.snapshot,
            &self.since,
            &self.get,
            &self.item_at,
            &self.history,
            &self.epoch,
        ]
    }
}
