//! Decoded answers kept in process in front of the store, so a repeated call is answered
//! without a store round trip and without opening its sealed bytes again.
//!
//! The layer is bounded by `cache.hot_bytes` (the sealed size of what it holds). A copy lives
//! until its entry would expire in the store, and at most [`HOT_FOR`], after which it is read
//! from the store again. Instances sharing Redis stay coherent: every write or delete of an
//! answer is announced on [`EVENTS`], and the others drop their copy; an announcement lost to
//! an outage leaves a copy stale for at most [`HOT_FOR`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use super::entry::Entry;

/// Where instances announce the answers they wrote or deleted.
pub const EVENTS: &str = "thrifty:v1:answers:events";

/// The longest a copy is served without reading the store again.
pub const HOT_FOR: Duration = Duration::from_secs(60);

/// One decoded answer and how long it may be served from here.
pub struct HotEntry {
    pub entry: Arc<Entry>,
    /// Unix milliseconds after which the copy is read from the store again.
    expires_ms: AtomicU64,
    /// When the store's sliding TTL was last extended for it.
    touched_ms: AtomicU64,
    /// Its sealed size, which counts against the bound.
    weight: u32,
}

impl HotEntry {
    /// Whether the store's TTL is due to be extended: at most once per tenth of the TTL,
    /// which keeps the stored entry within 10% of the life a touch per hit would give it.
    pub fn touch_due(&self, now_ms: u64, ttl_ms: u64) -> bool {
        let last = self.touched_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= ttl_ms / 10
            && self
                .touched_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The store's copy now lives until `store_expires_ms`.
    pub fn extended(&self, now_ms: u64, store_expires_ms: u64) {
        self.expires_ms
            .store(hot_expiry(now_ms, store_expires_ms), Ordering::Relaxed);
    }
}

fn hot_expiry(now_ms: u64, store_expires_ms: u64) -> u64 {
    let cap = now_ms.saturating_add(u64::try_from(HOT_FOR.as_millis()).unwrap_or(u64::MAX));
    store_expires_ms.min(cap)
}

pub struct Hot {
    entries: Option<Cache<String, Arc<HotEntry>>>,
    /// Names this instance's announcements, so it ignores its own.
    instance: String,
}

impl Hot {
    /// A layer of at most `bytes` (sealed size); `0` keeps nothing.
    pub fn new(bytes: u64) -> Hot {
        let entries = (bytes > 0).then(|| {
            Cache::builder()
                .weigher(|key: &String, hot: &Arc<HotEntry>| {
                    hot.weight
                        .saturating_add(u32::try_from(key.len()).unwrap_or(u32::MAX))
                })
                .max_capacity(bytes)
                .build()
        });
        Hot {
            entries,
            instance: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Whether the layer keeps anything.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The copy of `key` (a full store key), if one may still be served at `now_ms`.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<Arc<HotEntry>> {
        let entries = self.entries.as_ref()?;
        let hot = entries.get(key)?;
        if hot.expires_ms.load(Ordering::Relaxed) > now_ms {
            return Some(hot);
        }
        entries.invalidate(key);
        None
    }

    /// Keeps `entry` (`sealed` bytes in the store), which the store holds until
    /// `store_expires_ms`.
    pub fn put(
        &self,
        key: String,
        entry: Arc<Entry>,
        sealed: usize,
        now_ms: u64,
        store_expires_ms: u64,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        entries.insert(
            key,
            Arc::new(HotEntry {
                entry,
                expires_ms: AtomicU64::new(hot_expiry(now_ms, store_expires_ms)),
                touched_ms: AtomicU64::new(now_ms),
                weight: u32::try_from(sealed).unwrap_or(u32::MAX),
            }),
        );
    }

    /// Drops the copies of `keys`.
    pub fn forget(&self, keys: &[String]) {
        if let Some(entries) = &self.entries {
            for key in keys {
                entries.invalidate(key);
            }
        }
    }

    /// The announcement that this instance wrote or deleted `keys`.
    pub fn announcement(&self, keys: &[String]) -> String {
        let mut message = self.instance.clone();
        for key in keys {
            message.push('\n');
            message.push_str(key);
        }
        message
    }

    /// Applies another instance's announcement.
    pub fn heard(&self, message: &str) {
        if message.lines().next() == Some(self.instance.as_str()) {
            return;
        }
        if let Some(entries) = &self.entries {
            for key in announced(message) {
                entries.invalidate(key);
            }
        }
    }
}

/// The keys an announcement names, whichever instance made it.
pub fn announced(message: &str) -> impl Iterator<Item = &str> {
    message.lines().skip(1)
}

#[cfg(test)]
mod tests {
    use super::super::entry::Answer;
    use super::*;
    use crate::chat::{Dialect, Endpoint};

    fn entry() -> Arc<Entry> {
        Arc::new(Entry {
            created_ms: 0,
            ttl_ms: 60_000,
            tenant: "t".to_owned(),
            namespace: None,
            model: "m".to_owned(),
            tags: Vec::new(),
            dialect: Dialect::OpenAi,
            endpoint: Endpoint::Chat,
            answer: Answer::Json(serde_json::json!({"a": 1})),
            compressed_away: 0,
            framed: Default::default(),
        })
    }

    #[test]
    fn a_copy_lives_until_the_store_copy_would_expire_and_at_most_hot_for() {
        let hot = Hot::new(1 << 20);
        hot.put("k".to_owned(), entry(), 64, 1_000, 5_000);
        assert!(hot.get("k", 4_999).is_some());
        assert!(hot.get("k", 5_000).is_none(), "expired with the store copy");
        hot.put("k".to_owned(), entry(), 64, 1_000, u64::MAX);
        let cap = 1_000 + HOT_FOR.as_millis() as u64;
        assert!(hot.get("k", cap - 1).is_some());
        assert!(hot.get("k", cap).is_none(), "read again after HOT_FOR");
    }

    #[test]
    fn announcements_of_others_drop_copies_and_our_own_do_not() {
        let (a, b) = (Hot::new(1 << 20), Hot::new(1 << 20));
        for hot in [&a, &b] {
            hot.put("k".to_owned(), entry(), 64, 0, 10_000);
        }
        let said = a.announcement(&["k".to_owned()]);
        a.heard(&said);
        assert!(a.get("k", 1).is_some(), "its own announcement");
        b.heard(&said);
        assert!(b.get("k", 1).is_none(), "another instance wrote k");
    }

    #[test]
    fn touches_are_due_once_per_tenth_of_the_ttl() {
        let hot = Hot::new(1 << 20);
        hot.put("k".to_owned(), entry(), 64, 0, 60_000);
        let copy = hot.get("k", 1).expect("kept");
        assert!(!copy.touch_due(5_000, 60_000));
        assert!(copy.touch_due(6_000, 60_000));
        assert!(!copy.touch_due(6_001, 60_000), "one touch per interval");
        assert!(Hot::new(0).get("k", 0).is_none());
    }
}
