//! Error codes carried by `error` frames and rejected outcomes, and name validation errors.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. New codes may be added in later
/// protocol versions; clients treat an unknown code like `internal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The token is missing, unknown or expired: refresh it and reconnect.
    Unauthorized,
    /// The user may not read or write the feed named in the request.
    Forbidden,
    /// The frame is malformed or names something invalid; the connection stays usable.
    BadRequest,
    /// The frame exceeds the server's size limit.
    TooLarge,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The client sends faster than the server allows; slow down.
    RateLimited,
    /// The feed or item does not exist.
    NotFound,
    /// The server failed; the request may be retried.
    Internal,
    /// A queued change waited longer than the server's exactly-once window
    /// (`welcome`'s `ledger_window_ms`): resending it could apply it twice,
    /// so the client gives it up.
    Expired,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::RateLimited => "rate_limited",
            Self::NotFound => "not_found",
            Self::Internal => "internal",
            Self::Expired => "expired",
        }
    }
}

/// A feed name, item id or pattern that the caller supplied is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The value is empty.
    #[error("{what} is empty: give a non-empty name")]
    Empty {
        /// What was being validated.
        what: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// What was being validated.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The value holds a NUL byte, which Thoonk uses as its field separator.
    #[error("{what} contains a NUL byte, which Thoonk reserves as a separator")]
    Nul {
        /// What was being validated.
        what: &'static str,
    },
    /// The value holds a glob character where a literal is required.
    #[error("{what} contains the glob character {c:?}; only a whole `*` segment is a wildcard, and only in patterns")]
    Glob {
        /// What was being validated.
        what: &'static str,
        /// The offending character.
        c: char,
    },
}
