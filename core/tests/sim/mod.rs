//! The deterministic client/server simulation.

pub mod network;
pub mod server;
pub mod world;
