//! server

pub mod feeds;
