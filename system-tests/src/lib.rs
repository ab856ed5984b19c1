//! Support of the system tests (`tests/`): real `redis-server` (or a local
//! Redis Cluster), real gateway and worker processes, protocol clients that
//! check every frame, the sync core driven as a client, and the accounting
//! of every change against the feeds' change logs and the job ledger.
//!
//! The processes, the WebSocket protocol client, the TCP proxy, waiting and
//! config files come from `thoonk-testkit`, shared with the server's suites;
//! what needs the server crate (a feed store, the job ledger) lives here.

pub mod accounting;
pub mod core_client;
pub mod fault;
pub mod gateway;
