//! The store's circuit breaker: after a run of consecutive failures the store is skipped
//! (every call is an immediate miss) until a probe finds it answering again.
//!
//! It only keeps the state; the store runs the probe, since only it can reach the backend.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The longest pause between two probes of a skipped store, unless the first is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Breaker {
    threshold: u32,
    backoff: Duration,
    failures: AtomicU32,
    open: AtomicBool,
    skipped: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, backoff: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            backoff,
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether a call may go to the store; a refused call is counted as skipped.
    pub fn admits(&self) -> bool {
        if self.open.load(Ordering::Acquire) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Whether calls are being skipped now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; `true` when it is the one that opened the breaker, whose caller
    /// then starts the probe.
    pub fn failure(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        failures >= self.threshold && !self.open.swap(true, Ordering::AcqRel)
    }

    /// The store answered a probe: calls go to it again.
    pub fn close(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Release);
    }

    /// Calls skipped since start.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The pauses between probes: the configured one, doubling up to a cap.
    pub fn pauses(&self) -> impl Iterator<Item = Duration> + use<> {
        let cap = MAX_BACKOFF.max(self.backoff);
        std::iter::successors(Some(self.backoff), move |d| Some((*d * 2).min(cap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_on_request() {
        let b = Breaker::new(3, Duration::from_millis(100));
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.admits());
        assert!(b.failure(), "the third failure in a row opens it");
        assert!(!b.failure(), "only one caller starts the probe");
        assert!(!b.admits());
        assert_eq!(b.skipped(), 1);
        b.close();
        assert!(b.admits());
        let pauses: Vec<u128> = b.pauses().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
