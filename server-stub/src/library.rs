//! The Redis Functions library `thoonk`: every Lua script of the server
//! (`server-stub/lua/<op>.lua`) as one function `thoonk_<op>`, loaded once
//! with `FUNCTION LOAD` (Redis 7.0 or later; see docs/REDIS.md).
//!
//! The library opens with the shared prelude (`lua/prelude.lua`), which runs
//! once at load and defines the helpers every function shares; each script
//! file stays the body of one function, wrapped here as
//!
//! ```lua
//! redis.register_function('thoonk_<op>', function(KEYS, ARGV)
//!   begin_call()
//!   <body of lua/<op>.lua>
//! end)
//! ```
//!
//! so a body reads its keys and arguments from the call, and `begin_call`
//! gives every call a fresh context (server time, queued notices).
//!
//! `FUNCTION LOAD` is routed to every primary of a cluster. A node that lost
//! its functions (restarted without its data, `FUNCTION FLUSH`, a new node)
//! answers `ERR Function not found`; [`Invocation::invoke_async`] then loads
//! the library again and retries once, as `EVALSHA` callers do on `NOSCRIPT`.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisError, RedisResult, ToRedisArgs};

/// The library's name in `FUNCTION LIST`.
pub const LIBRARY_NAME: &str = "thoonk";

/// The shared helpers that open the library.
pub const PRELUDE: &str = include_str!("../lua/prelude.lua");

/// Every function of the library: its operation name (the function is
/// `thoonk_<op>`) and its body, a script of `server-stub/lua/`.
const BODIES: [(&str, &str); 28] = [
    ("create", include_str!("../lua/create.lua")),
    ("register", include_str!("../lua/register.lua")),
    ("unregister", include_str!("../lua/unregister.lua")),
    ("config", include_str!("../lua/config.lua")),
    ("delete", include_str!("../lua/delete.lua")),
    ("publish", include_str!("../lua/publish.lua")),
    ("edit", include_str!("../lua/edit.lua")),
    ("retract", include_str!("../lua/retract.lua")),
    ("move", include_str!("../lua/move.lua")),
    ("snapshot", include_str!("../lua/snapshot.lua")),
    ("since", include_str!("../lua/since.lua")),
    ("get", include_str!("../lua/get.lua")),
    ("item_at", include_str!("../lua/item_at.lua")),
    ("history", include_str!("../lua/history.lua")),
    ("epoch", include_str!("../lua/epoch.lua")),
    ("adopt", include_str!("../lua/adopt.lua")),
    ("job_submit", include_str!("../lua/job_submit.lua")),
    ("job_claim", include_str!("../lua/job_claim.lua")),
    ("job_finish", include_str!("../lua/job_finish.lua")),
    ("job_fail", include_str!("../lua/job_fail.lua")),
    ("job_sweep", include_str!("../lua/job_sweep.lua")),
    ("job_retry", include_str!("../lua/job_retry.lua")),
    ("job_retract", include_str!("../lua/job_retract.lua")),
    ("job_edit", include_str!("../lua/job_edit.lua")),
    ("job_apply", include_str!("../lua/job_apply.lua")),
    (
        "job_submit_batch",
        include_str!("../lua/job_submit_batch.lua"),
    ),
    (
        "job_apply_batch",
        include_str!("../lua/job_apply_batch.lua"),
    ),
    (
        "job_finish_batch",
        include_str!("../lua/job_finish_batch.lua"),
    ),
];

static SOURCE: LazyLock<String> = LazyLock::new(|| {
    let mut source = format!("#!lua name={LIBRARY_NAME}\n{PRELUDE}\n");
    for (op, body) in BODIES {
        source.push_str(&format!(
            "redis.register_function('{LIBRARY_NAME}_{op}', function(KEYS, ARGV)\nbegin_call()\n{body}\nend)\n"
        ));
    }
    source
});

/// The library's source, as given to `FUNCTION LOAD`.
pub fn source() -> &'static str {
    &SOURCE
}

/// Loads (or replaces) the library: on every primary of a cluster.
pub async fn load<C: ConnectionLike>(conn: &mut C) -> RedisResult<()> {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(source())
        .query_async(conn)
        .await?;
    Ok(())
}

/// True when a call failed because the node does not have the library.
fn is_not_loaded(err: &RedisError) -> bool {
    err.detail()
        .is_some_and(|detail| detail.contains("Function not found"))
        || err.to_string().contains("Function not found")
}

/// One function of the library, called like a [`redis::Script`].
#[derive(Clone, Copy, Debug)]
pub struct Function {
    name: &'static str,
}

impl Function {
    /// The function of operation `op` (`thoonk_<op>`).
    ///
    /// # Panics
    /// When the library has no such function.
    pub fn new(op: &'static str) -> Self {
        assert!(
            BODIES.iter().any(|(name, _)| *name == op),
            "no function {op} in the library"
        );
        Self { name: op }
    }

    /// The function's name, as `FCALL` takes it.
    pub fn name(&self) -> String {
        format!("{LIBRARY_NAME}_{}", self.name)
    }

    /// Starts a call: add keys and arguments, then
    /// [`Invocation::invoke_async`].
    pub fn prepare_invoke(&self) -> Invocation {
        Invocation {
            function: *self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// A call of a [`Function`] being built.
#[derive(Clone, Debug)]
pub struct Invocation {
    function: Function,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    /// Adds a key.
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds an argument.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// Calls the function (`FCALL`); when the node answers that it does not
    /// have the library, loads it and calls again.
    pub async fn invoke_async<C: ConnectionLike, T: FromRedisValue>(
        &self,
        conn: &mut C,
    ) -> RedisResult<T> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(self.function.name())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        match cmd.query_async(conn).await {
            Err(err) if is_not_loaded(&err) => {
                load(conn).await?;
                cmd.query_async(conn).await
            }
            result => result,
        }
    }
}
