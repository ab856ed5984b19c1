//! The thoonk-sync server: Thoonk-compatible feeds and jobs in Redis, and the
//! WebSocket gateway that browser clients sync through.

pub mod feeds;
pub mod gateway;
pub mod http;
pub mod interop;
pub mod jobs;
pub mod library;
pub mod redis_target;
