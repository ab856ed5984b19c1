//! Waiting for a state in async tests.

use std::future::Future;
use std::time::{Duration, Instant};

/// Upper bound for a state a test waits for with [`eventually`]: a failure
/// condition (the thing never happened), never a measured speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 20 ms until it returns `Some`, failing the test
/// after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for tests without a runtime: polls `check` every 20 ms
/// until it returns `Some`, failing the test after [`PATIENCE`].
pub fn eventually_blocking<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
