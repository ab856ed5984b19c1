//! The job layer's functions of the `thoonk` library
//! (`server-stub/lua/job_*.lua`; see [`crate::library`]).

use crate::library::Function;

/// One library function per operation. `apply` reuses the feed layer's
/// writes from the library's prelude.
pub(crate) struct Scripts {
    pub submit: Function,
    pub claim: Function,
    pub finish: Function,
    pub fail: Function,
    pub sweep: Function,
    pub retry: Function,
    pub retract: Function,
    pub edit: Function,
    pub apply: Function,
    pub submit_batch: Function,
    pub apply_batch: Function,
    pub finish_batch: Function,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            submit: Function::new("job_submit"),
            claim: Function::new("job_claim"),
            finish: Function::new("job_finish"),
            fail: Function::new("job_fail"),
            sweep: Function::new("job_sweep"),
            retry: Function::new("job_retry"),
            retract: Function::new("job_retract"),
            edit: Function::new("job_edit"),
            apply: Function::new("job_apply"),
            submit_batch: Function::new("job_submit_batch"),
            apply_batch: Function::new("job_apply_batch"),
            finish_batch: Function::new("job_finish_batch"),
        }
    }
}
