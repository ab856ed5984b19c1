//! The WebSocket gateway: sessions, fan-out and access rules.

pub mod access;
pub mod clients;
pub mod hub;
pub mod session;

pub use access::{AccessRules, ConfigRules, OpenAccess, User};
pub use clients::ClientOwners;
pub use hub::Hub;
pub use session::{SessionLimits, Shared};
