//! Settings of a core instance.

/// Delays of the core's timers, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// First reconnect delay after a lost connection (doubles per failure).
    pub reconnect_base: u64,
    /// Longest reconnect delay.
    pub reconnect_max: u64,
    /// How long to wait for `welcome` after `hello` before giving up on the connection.
    pub handshake_timeout: u64,
    /// First wait for an `ack` or outcome before a submitted change is sent again.
    pub submit_timeout: u64,
    /// Longest such wait.
    pub submit_timeout_max: u64,
    /// How long an acknowledged change may wait for its outcome before the
    /// core asks again (by submitting the same id: the server's ledger
    /// answers with the recorded outcome and never applies it twice).
    pub outcome_timeout: u64,
    /// First wait for the answer to a replay request before asking again.
    pub replay_timeout: u64,
    /// Longest such wait.
    pub replay_timeout_max: u64,
    /// Silence after which the core sends a `ping`.
    pub ping_interval: u64,
    /// How long a `ping` may stay unanswered before the connection is given up.
    pub pong_timeout: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            reconnect_base: 500,
            reconnect_max: 30_000,
            handshake_timeout: 10_000,
            submit_timeout: 5_000,
            submit_timeout_max: 60_000,
            outcome_timeout: 30_000,
            replay_timeout: 5_000,
            replay_timeout_max: 60_000,
            ping_interval: 25_000,
            pong_timeout: 10_000,
        }
    }
}

/// How a core instance is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The client id to use when the store holds none yet (a fresh store). Must
    /// be unique per browser profile and database, e.g. a random UUID.
    pub client_id: String,
    /// The bearer token sent in `hello`.
    pub token: String,
    /// Seed of the jitter generator (any value; a random one in production).
    pub seed: u64,
    /// Timer settings.
    pub timing: Timing,
    /// How many conflicts one change may run into before it is reported unresolved.
    pub max_conflict_rounds: u32,
    /// The most changes of one feed's lane sent together in one
    /// `submit_batch` frame (1: one `submit` per change, each waiting for
    /// the outcome of the one before; at most
    /// [`thoonk_protocol::MAX_BATCH_CHANGES`]).
    pub max_batch: usize,
}

impl Config {
    /// A configuration with default timing.
    pub fn new(client_id: impl Into<String>, token: impl Into<String>, seed: u64) -> Self {
        Self {
            client_id: client_id.into(),
            token: token.into(),
            seed,
            timing: Timing::default(),
            max_conflict_rounds: 5,
            max_batch: thoonk_protocol::MAX_BATCH_CHANGES,
        }
    }
}
