//! Records on their way to the ledger. An upstream answer's record is made after the
//! answer's last bytes have gone out, on a task of its own (see `Account::settle_behind` in
//! `accounting.rs`); until it is handed over, a flush (a report,
//! the audit log, `/metrics`) waits for it, so a client that reads its answer and then asks
//! for a report finds the answer in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// How many records are promised and not yet handed over.
#[derive(Default)]
pub struct Expected {
    count: AtomicUsize,
    arrived: Notify,
}

/// One promised record; dropping it says the record was handed over (or will never be).
pub struct Promise(Arc<Expected>);

impl Expected {
    pub fn promise(self: &Arc<Self>) -> Promise {
        self.count.fetch_add(1, Ordering::SeqCst);
        Promise(self.clone())
    }

    /// Waits until no record is promised.
    pub async fn arrived(&self) {
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.arrived.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn arrived_waits_for_every_promise() {
        let expected = Arc::new(Expected::default());
        expected.arrived().await;
        let first = expected.promise();
        let second = expected.promise();
        let waiting = tokio::spawn({
            let expected = expected.clone();
            async move { expected.arrived().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one promise is still out");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken once the last promise is kept")
            .expect("the waiting task");
    }
}
