//! Errors of the core, each naming who is at fault.

use thoonk_protocol::{ErrorCode, FeedName};

use crate::resolver::ResolverError;

/// Something went wrong; the variant says whose fault it is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The server sent something that breaks the protocol's promises. The
    /// core ignored the offending part and stays usable.
    #[error("server misbehaved: {0}")]
    Server(#[from] ServerFault),
    /// Local storage failed or holds data the core cannot use.
    #[error("local storage: {0}")]
    Storage(#[from] StorageFault),
    /// Client and server do not speak the same protocol; no reconnect will help.
    #[error("protocol mismatch: the client speaks version {client}, the server {server}")]
    ProtocolMismatch {
        /// The client's version.
        client: u32,
        /// The server's version.
        server: u32,
    },
    /// The app's conflict resolver failed; the change was reported unresolved.
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    /// The app called the core in a way it does not support.
    #[error("invalid use: {0}")]
    Usage(String),
    /// The app's change would not fit in one frame the server reads; it was
    /// not queued.
    #[error(
        "the change takes {bytes} bytes to send, over the server's limit of {limit}: \
         split it into smaller changes"
    )]
    TooLarge {
        /// The size of its `submit` frame.
        bytes: usize,
        /// The largest frame a server reads.
        limit: usize,
    },
}

/// A server message that breaks the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerFault {
    /// A `changes` batch whose revisions are not consecutive.
    #[error("the changes batch for {feed} is not dense: revision {got} follows {after}")]
    SparseChanges {
        /// The feed.
        feed: FeedName,
        /// The revision before.
        after: u64,
        /// The revision that followed it.
        got: u64,
    },
    /// A snapshot that lists an item id twice.
    #[error("the snapshot of {feed} lists item {id} twice")]
    DuplicateItem {
        /// The feed.
        feed: FeedName,
        /// The repeated id.
        id: String,
    },
    /// A message that only makes sense after `welcome` came before it.
    #[error("a {0} frame arrived before the handshake finished")]
    BeforeWelcome(&'static str),
    /// The server reported an error.
    #[error("the server reported {code:?}: {message}")]
    Reported {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

/// A local storage failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageFault {
    /// The shell could not apply a batch; the core must be reopened from the store.
    #[error("a store batch failed ({0}); reopen the core from the store")]
    BatchFailed(String),
    /// The stored state is inconsistent.
    #[error("the stored state is inconsistent: {0}")]
    Corrupt(String),
}
