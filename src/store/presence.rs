//! Which keys the embedded store's table may hold, kept in memory so that a read of a key
//! it cannot hold (every cache miss) answers at once, without a thread hop and a read
//! transaction.
//!
//! Only this process writes the store's file (redb holds it exclusively), so every key on
//! disk either was there at open, which a walk of the table at open adds, or was put since,
//! which [`Presence::add`] records before the put is queued. Without the walk (it failed)
//! every key may be held. A fingerprint is 64 bits of the key's hash: two keys sharing one
//! only cost a read of the disk, never a wrong answer. Deletes and sweeps remove theirs, so
//! the set holds about one fingerprint per key on disk (about 16 bytes each).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use parking_lot::Mutex;

#[derive(Default)]
pub(super) struct Presence(Mutex<State>);

#[derive(Default)]
struct State {
    /// Whether the walk of the keys on disk at open has finished.
    ready: bool,
    fingerprints: HashSet<u64>,
}

impl Presence {
    /// Whether the table may hold `key`: false only once the walk has finished and neither
    /// it nor a put since has seen the key.
    pub(super) fn may_hold(&self, key: &str) -> bool {
        let state = self.0.lock();
        !state.ready || state.fingerprints.contains(&Presence::of(key))
    }

    /// A key about to be written.
    pub(super) fn add(&self, key: &str) {
        self.0.lock().fingerprints.insert(Presence::of(key));
    }

    /// The fingerprints of keys removed from the table.
    pub(super) fn remove(&self, fingerprints: impl IntoIterator<Item = u64>) {
        let mut state = self.0.lock();
        for fingerprint in fingerprints {
            state.fingerprints.remove(&fingerprint);
        }
    }

    /// The keys the walk at open found; from now on an unknown key is not on disk.
    pub(super) fn walked(&self, keys: Vec<u64>) {
        let mut state = self.0.lock();
        state.fingerprints.extend(keys);
        state.ready = true;
    }

    /// A key's fingerprint.
    pub(super) fn of(key: &str) -> u64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_may_be_held_until_the_walk_ends() {
        let p = Presence::default();
        assert!(p.may_hold("a"));
        p.add("b");
        p.walked(vec![Presence::of("a")]);
        assert!(p.may_hold("a") && p.may_hold("b"));
        assert!(!p.may_hold("c"));
        p.remove([Presence::of("a")]);
        assert!(!p.may_hold("a"));
        p.add("c");
        assert!(p.may_hold("c"));
    }
}
