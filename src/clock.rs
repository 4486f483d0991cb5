//! Wall-clock time as thrifty reads it: Unix milliseconds from a [`Clock`].
//!
//! Every decision that depends on the date or on an age reads the clock the server was started
//! with (entry TTLs and `max-age`, the embedded store's expiry, the day a savings record counts
//! on, the calibration's decay, summaries' lifetimes, the dashboard cookie). It is the system's
//! clock unless a test starts the server with a [`ManualClock`], which stands still until the
//! test moves it. Durations measured on the request path (latencies, timeouts, pacing) use
//! monotonic `Instant`s and are no business of this room; nor is the expiry Redis applies itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock; cheap to clone, the system's by default.
#[derive(Clone, Debug, Default)]
pub struct Clock(Source);

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    System,
    /// A [`ManualClock`]'s time, in Unix milliseconds.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// Unix time in milliseconds; 0 before 1970, saturating far in the future.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System => system_ms(),
            Source::Manual(at) => at.load(Ordering::Acquire),
        }
    }

    /// Unix time in whole seconds.
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A clock that stands still until it is moved, for tests: the server started with its
/// [`ManualClock::clock`] sees exactly the time the test sets.
///
/// Redis expires keys by its own clock, which a manual clock does not move: a server on Redis
/// whose answers are to expire must run on the system's clock, or its in-process copies of
/// them would outlive the keys.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `at_ms` (Unix milliseconds).
    pub fn at_ms(at_ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(at_ms)))
    }

    /// A clock showing the system's time now.
    pub fn now() -> ManualClock {
        ManualClock::at_ms(system_ms())
    }

    /// The [`Clock`] to hand to the server.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(self.0.clone()))
    }

    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::AcqRel);
    }

    /// Sets the time to `at_ms`, forward or back.
    pub fn set_ms(&self, at_ms: u64) {
        self.0.store(at_ms, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_copy_sees_it() {
        let manual = ManualClock::at_ms(1_000);
        let (a, b) = (manual.clock(), manual.clock().clone());
        assert_eq!((a.now_ms(), b.now_ms()), (1_000, 1_000));
        manual.advance(Duration::from_secs(2));
        assert_eq!((a.now_ms(), b.now_ms(), a.now_secs()), (3_000, 3_000, 3));
        manual.set_ms(500);
        assert_eq!(b.now_ms(), 500);
        let system = Clock::default().now_ms();
        assert!(
            system > 1_600_000_000_000,
            "the default is the system's clock"
        );
    }
}
