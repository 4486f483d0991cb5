//! Records on their way to the ledger. An upstream answer's record is made after the
//! answer's last bytes have gone out, on a task of its own (see `Account::settle_behind` in
//! `accounting.rs`); until it is handed over, a flush (a report,
//! the audit log, `/metrics`) waits for it, so a client that reads its answer and then asks
//! for a report finds the answer in it.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The records promised and not yet handed over, by the order they were promised in.
#[derive(Default)]
pub struct Expected {
    open: Mutex<Open>,
    kept: Notify,
}

#[derive(Default)]
struct Open {
    next: u64,
    promised: BTreeSet<u64>,
}

/// One promised record; dropping it says the record was handed over (or will never be).
pub struct Promise {
    expected: Arc<Expected>,
    id: u64,
}

impl Expected {
    pub fn promise(self: &Arc<Self>) -> Promise {
        let mut open = self.open.lock();
        let id = open.next;
        open.next += 1;
        open.promised.insert(id);
        Promise {
            expected: self.clone(),
            id,
        }
    }

    /// Waits until every record promised before the call has been handed over. Promises made
    /// meanwhile are not waited for, so a steady stream of answers never keeps it waiting.
    pub async fn arrived(&self) {
        let before = self.open.lock().next;
        loop {
            let kept = self.kept.notified();
            tokio::pin!(kept);
            kept.as_mut().enable();
            if self
                .open
                .lock()
                .promised
                .first()
                .is_none_or(|oldest| *oldest >= before)
            {
                return;
            }
            kept.await;
        }
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        self.expected.open.lock().promised.remove(&self.id);
        self.expected.kept.notify_waiters();
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
        // A promise made after the wait began is not waited for.
        let later = expected.promise();
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken once the last promise made before it is kept")
            .expect("the waiting task");
        drop(later);
    }
}
