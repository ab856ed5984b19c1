//! The sans-IO sync core of thoonk-sync.
//!
//! No I/O and no clock: inputs are server messages, local changes and `now`;
//! outputs are messages to send, store writes, notifications for the app and
//! the next deadline. The browser shells only move bytes, timers and store batches.
