//! The WebSocket gateway: sessions, fan-out and access rules.

pub mod access;
pub mod clients;
pub mod failover_watch;
pub mod hub;
pub mod limits;
pub mod restart_watch;
pub mod session;
pub mod tag_fanout;

pub use access::{AccessRules, ConfigRules, OpenAccess, User};
pub use clients::ClientOwners;
pub use hub::Hub;
pub use restart_watch::RestartWatch;
pub use session::{SessionLimits, Shared};
pub use tag_fanout::{Fanout, TagSubscriptions};
