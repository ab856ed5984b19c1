//! thoonk-sync: an offline-first sync client for feed-shaped web apps.
//!
//! The app subscribes to feeds by name or pattern; the client mirrors them in
//! IndexedDB and keeps them live over a WebSocket to a thoonk-server. The sync
//! logic lives in the sans-IO core (`thoonk-sync-core`); this crate holds the
//! browser shells around it (IndexedDB, WebSocket, timers), the coordination
//! of several tabs on one database, and the JS API.

#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
pub mod idb;
#[cfg(target_arch = "wasm32")]
mod leader;
#[cfg(target_arch = "wasm32")]
mod shell;
#[cfg(target_arch = "wasm32")]
mod socket;
#[cfg(target_arch = "wasm32")]
mod tab_client;
#[cfg(target_arch = "wasm32")]
mod tab_transport;
#[cfg(target_arch = "wasm32")]
mod view;

#[cfg(target_arch = "wasm32")]
pub use client::{Client, ClientOptions, OnChange};
