//! The sans-IO sync core of thoonk-sync.
//!
//! No I/O and no clock: inputs are server messages, local changes and `now`
//! (milliseconds, from the shell); outputs are [`Effects`] — a [`StoreBatch`]
//! to apply atomically, frames to send, notifications for the app, and
//! whether to open or close the connection — plus the next deadline from
//! [`SyncCore::poll_timeout`]. The browser shells only move bytes, timers and
//! store batches.
//!
//! A shell's loop:
//!
//! 1. `SyncCore::open(config, store.load()?, now)`;
//! 2. after every input (`connected`, `disconnected`, `handle_server`,
//!    `handle_timeout`, `subscribe`, a local change, ...), take
//!    [`SyncCore::take_effects`] and carry them out in the documented order:
//!    store first, then the frames;
//! 3. arm a timer for [`SyncCore::poll_timeout`] and call `handle_timeout`
//!    when it fires.
//!
//! With a store that answers later (IndexedDB), drive the core through
//! [`Durable`], which decides when a change is durable, recovers from a failed
//! or lost store, and holds back the first reconnect after a store failure.
//!
//! `docs/CORE.md` describes the rules (ordering, gaps, outbox lanes, overlay,
//! conflicts, merge) in full.

#![warn(missing_docs)]

mod apply;
mod config;
pub mod conformance;
mod core;
mod durability;
mod effects;
mod error;
mod items;
mod journal;
mod merge;
mod mirror;
mod outbox;
mod outcome;
mod resolver;
mod rng;
mod store;
pub mod tabs;
mod view;

pub use crate::apply::{apply_change, apply_operation};
pub use crate::config::{Config, Timing};
pub use crate::core::SyncCore;
pub use crate::durability::{Durable, StorageMarker, StorageWiped, StoreFailure, Task};
pub use crate::effects::{Effects, ItemState, ItemView, Notification, Status};
pub use crate::error::{CoreError, ServerFault, StorageFault};
pub use crate::items::{OrderedItem, OrderedItems};
pub use crate::merge::{merge3, Merged};
pub use crate::outcome::{ChangeOutcome, ConflictCase, OutcomeRecord, ResolutionKind};
pub use crate::resolver::{FnResolver, MergeResolver, Resolution, Resolver, ResolverError};
pub use crate::rng::{backoff, SplitMix64};
pub use crate::store::{
    AcceptedRecord, ClientMeta, FeedHead, MemoryStore, MemoryStoreError, OutboxRecord, Store,
    StoreBatch, StoreWrite, StoredItem, StoredState,
};
pub use thoonk_protocol::ServerState;
