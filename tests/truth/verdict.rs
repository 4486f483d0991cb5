//! Collects every figure that differs from the truth, so one run shows them all rather than the
//! first; the test fails at the end, listing them.

use std::fmt::{Debug, Display};

/// The most differences printed; the rest are counted.
const SHOWN: usize = 150;

#[derive(Default)]
pub struct Verdict {
    failures: Vec<String>,
}

impl Verdict {
    /// Notes a difference when `actual` is not `expected`.
    pub fn eq<T: PartialEq + Debug>(&mut self, what: impl Display, expected: T, actual: T) {
        if expected != actual {
            self.failures
                .push(format!("{what}: expected {expected:?}, got {actual:?}"));
        }
    }

    /// Fails the test when anything differed.
    pub fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let mut text = format!("{} figures differ from the truth:\n", self.failures.len());
        for failure in self.failures.iter().take(SHOWN) {
            text.push_str("  - ");
            text.push_str(failure);
            text.push('\n');
        }
        if self.failures.len() > SHOWN {
            text.push_str(&format!("  ... and {} more\n", self.failures.len() - SHOWN));
        }
        panic!("{text}");
    }
}
