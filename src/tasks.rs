//! The tasks serving connections, and the leaders' answers that go on for their followers
//! after their own client left (see [`crate::cache::feed`]): every one is tracked, so shutdown
//! can cut the ones still running when the grace period ends and wait until they are gone. It
//! is also the executor hyper spawns HTTP/2 streams on, so no response body outlives the cut.
//! It must not know what its tasks do.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns tracked tasks that end early when [`Tasks::cut`] is called.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl Tasks {
    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cut.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Drops every task still running (their connections close, their response bodies are
    /// dropped and record what they carried), then waits until all of them are gone.
    pub async fn cut(&self) {
        self.cut.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl<F> hyper::rt::Executor<F> for Tasks
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(future);
    }
}
