//! thoonk-sync: an offline-first sync client for feed-shaped web apps.
//!
//! The app subscribes to feeds by name or pattern; the client mirrors them in
//! IndexedDB and keeps them live over a WebSocket to a thoonk-server, applying
//! each feed's changes strictly in revision order and asking for a replay when
//! it sees a gap.

pub mod mirror;

#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod store;

#[cfg(target_arch = "wasm32")]
pub use client::Client;
