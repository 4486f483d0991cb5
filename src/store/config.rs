//! What the store is told by the configuration: where it lives, how long it may take, when
//! its breaker opens.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// The store's settings, validated by `config` (`[store]` and `[cache]`).
#[derive(Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// The budget of one bulk or background store call (a batch of keys, a key walk, a
    /// ledger batch); requests never wait on it.
    pub bulk_timeout: Duration,
    /// Consecutive failures after which store calls are skipped until a probe answers.
    pub breaker_failures: NonZeroU32,
    /// The first pause between probes of a skipped store; it doubles up to a cap.
    pub breaker_backoff: Duration,
    pub redis_url: Option<Secret<String>>,
    pub redis_cluster: bool,
}
