//! The thoonk-sync server: Thoonk-compatible feeds and jobs in Redis, and the
//! WebSocket gateway that browser clients sync through.

pub mod feeds;
pub mod gateway;
pub mod http;
pub mod interop;
pub mod jobs;
pub mod library;
pub mod redis_target;

/// Resolves on Ctrl-C or SIGTERM: when `serve` and `work` stop. Without a
/// SIGTERM handler (it could not be installed), on Ctrl-C alone.
pub async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
