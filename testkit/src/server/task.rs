//! Server-owned background jobs (see [`Response::after`](crate::Response::after)).

use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;

/// Handed to a background job started with [`Response::after`](crate::Response::after).
///
/// Lets the job wait without delaying [`TestServer::stop`](crate::TestServer::stop).
pub struct TaskCtx {
    pub(crate) shared: Arc<Shared>,
}

impl TaskCtx {
    /// Sleeps for `d`, or less if the server stops meanwhile.
    /// Returns `false` if the server is stopping (the job should return).
    pub fn sleep(&self, d: Duration) -> bool {
        self.shared.sleep(d, None)
    }

    /// Whether the server is stopping.
    pub fn is_stopping(&self) -> bool {
        self.shared.is_stopping()
    }
}

impl std::fmt::Debug for TaskCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCtx")
            .field("stopping", &self.is_stopping())
            .finish()
    }
}
