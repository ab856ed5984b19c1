//! The job layer's Lua scripts (`server-stub/lua/job_*.lua`).

use redis::Script;

use crate::feeds::PRELUDE;

/// One loaded script per operation. The queue scripts are self-contained;
/// `apply` runs behind the feed layer's prelude and reuses its writes.
pub(crate) struct Scripts {
    pub submit: Script,
    pub claim: Script,
    pub finish: Script,
    pub fail: Script,
    pub sweep: Script,
    pub retry: Script,
    pub retract: Script,
    pub edit: Script,
    pub apply: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            submit: Script::new(include_str!("../../lua/job_submit.lua")),
            claim: Script::new(include_str!("../../lua/job_claim.lua")),
            finish: Script::new(include_str!("../../lua/job_finish.lua")),
            fail: Script::new(include_str!("../../lua/job_fail.lua")),
            sweep: Script::new(include_str!("../../lua/job_sweep.lua")),
            retry: Script::new(include_str!("../../lua/job_retry.lua")),
            retract: Script::new(include_str!("../../lua/job_retract.lua")),
            edit: Script::new(include_str!("../../lua/job_edit.lua")),
            apply: Script::new(&format!(
                "{PRELUDE}\n{}",
                include_str!("../../lua/job_apply.lua")
            )),
        }
    }

    pub fn all(&self) -> [&Script; 9] {
        [
            &self.submit,
            &self.claim,
            &self.finish,
            &self.fail,
            &self.sweep,
            &self.retry,
            &self.retract,
            &self.edit,
            &self.apply,
        ]
    }
}
