//! Which keys a store may hold, kept in memory so that a read of a key it cannot hold (every
//! cache miss) answers at once, without a thread hop, a read transaction or a round trip.
//!
//! The set starts unknown: until a walk of the store's keys has finished, every key may be
//! held. From then on a key is known when the walk found it or [`Presence::add`] recorded it
//! since the walk began; whoever writes a key adds it before the write starts (so a read
//! racing the write goes to the store) and again once it has landed (so a walk that began in
//! between keeps it).
//!
//! - The embedded store walks its table once, at open: only this process writes its file.
//! - A shared store (Redis) is written by other instances too, which announce every write
//!   after it has landed; the listener adds what it hears. While it cannot hear (before its
//!   subscription is in place, or once the subscription drops), [`Presence::lost`] makes
//!   every key possible again until a new walk, begun after the subscription is back, ends.
//!   Walks repeat now and then, so keys that expired or were deleted leave the set.
//!
//! A fingerprint is 64 bits of the key's hash: two keys sharing one only cost a read of the
//! store, never a wrong answer. A set over its bound of fingerprints (about 16 bytes each)
//! gives up: every key may be held until the next walk finds fewer.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use parking_lot::Mutex;

pub struct Presence {
    state: Mutex<State>,
    /// The most fingerprints kept; beyond them every key may be held.
    max: usize,
}

impl Default for Presence {
    fn default() -> Self {
        Presence::bounded(usize::MAX)
    }
}

#[derive(Default)]
struct State {
    /// Whether a walk has ended since the set was last unknown.
    ready: bool,
    fingerprints: HashSet<u64>,
    /// The walk under way, if any.
    walk: Option<Walk>,
    /// Numbers walks, so that one begun before the set was lost cannot make it known.
    walks: u64,
    /// How many walks have ended and made the set known.
    ended: u64,
}

struct Walk {
    id: u64,
    /// What was added since the walk began, which the walk may not have seen.
    added: HashSet<u64>,
}

/// A walk begun with [`Presence::begin_walk`], to hand to [`Presence::walked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkId(u64);

impl Presence {
    /// A set of at most `max` fingerprints.
    pub fn bounded(max: usize) -> Presence {
        Presence {
            state: Mutex::new(State::default()),
            max,
        }
    }

    /// Whether the store may hold `key`: false only once a walk has ended and neither it nor
    /// an add since has seen the key.
    pub fn may_hold(&self, key: &str) -> bool {
        let state = self.state.lock();
        !state.ready || state.fingerprints.contains(&Presence::of(key))
    }

    /// Whether the set is known (a walk has ended and nothing lost it since).
    pub fn ready(&self) -> bool {
        self.state.lock().ready
    }

    /// How many fingerprints are held.
    pub fn known(&self) -> usize {
        self.state.lock().fingerprints.len()
    }

    /// How many walks have ended and made the set known.
    pub fn walks_ended(&self) -> u64 {
        self.state.lock().ended
    }

    /// A key written or about to be written.
    pub fn add(&self, key: &str) {
        let fingerprint = Presence::of(key);
        let mut state = self.state.lock();
        if let Some(walk) = &mut state.walk {
            walk.added.insert(fingerprint);
        }
        if state.ready {
            state.fingerprints.insert(fingerprint);
        }
        let added = state.walk.as_ref().map_or(0, |walk| walk.added.len());
        if state.fingerprints.len().max(added) > self.max {
            state.overflow(self.max);
        }
    }

    /// The fingerprints of keys removed from the store.
    pub fn remove(&self, fingerprints: impl IntoIterator<Item = u64>) {
        let mut state = self.state.lock();
        for fingerprint in fingerprints {
            state.fingerprints.remove(&fingerprint);
        }
    }

    /// Writes may have been missed: every key may be held until a walk begun after this ends.
    pub fn lost(&self) {
        self.state.lock().forget();
    }

    /// A walk of the store's keys starts now; what is added from now on is kept beside what it
    /// finds.
    pub fn begin_walk(&self) -> WalkId {
        let mut state = self.state.lock();
        state.walks += 1;
        let id = state.walks;
        state.walk = Some(Walk {
            id,
            added: HashSet::new(),
        });
        WalkId(id)
    }

    /// The fingerprints the walk found: they and what was added since it began become the
    /// set. False, and nothing changes, when the set was lost or another walk began since, or
    /// when they are too many to keep (the set is then unknown).
    pub fn walked(&self, walk: WalkId, found: impl IntoIterator<Item = u64>) -> bool {
        let mut state = self.state.lock();
        let Some(current) = state.walk.take_if(|w| w.id == walk.0) else {
            return false;
        };
        let mut fingerprints = current.added;
        fingerprints.extend(found);
        if fingerprints.len() > self.max {
            state.overflow(self.max);
            return false;
        }
        state.fingerprints = fingerprints;
        state.ready = true;
        state.ended += 1;
        true
    }

    /// The walk failed: the set stays as it was.
    pub fn abandon(&self, walk: WalkId) {
        self.state.lock().walk.take_if(|w| w.id == walk.0);
    }

    /// A key's fingerprint.
    pub fn of(key: &str) -> u64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }
}

impl State {
    /// More than `max` keys to know: the set gives up until the next walk finds fewer.
    fn overflow(&mut self, max: usize) {
        tracing::warn!(max, "too many keys to know; every read goes to the store");
        self.forget();
    }

    fn forget(&mut self) {
        self.ready = false;
        self.fingerprints = HashSet::new();
        self.walk = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(p: &Presence, keys: &[&str]) -> bool {
        let walk = p.begin_walk();
        p.walked(walk, keys.iter().map(|k| Presence::of(k)))
    }

    #[test]
    fn everything_may_be_held_until_the_walk_ends() {
        let p = Presence::default();
        assert!(p.may_hold("a"));
        let walk = p.begin_walk();
        p.add("b");
        assert!(p.walked(walk, [Presence::of("a")]));
        assert!(p.may_hold("a") && p.may_hold("b"));
        assert!(!p.may_hold("c"));
        p.remove([Presence::of("a")]);
        assert!(!p.may_hold("a"));
        p.add("c");
        assert!(p.may_hold("c"));
    }

    #[test]
    fn a_new_walk_drops_what_the_store_no_longer_holds_and_keeps_what_was_added_meanwhile() {
        let p = Presence::default();
        assert!(walked(&p, &["gone", "kept"]));
        let walk = p.begin_walk();
        p.add("written during the walk");
        assert!(p.may_hold("gone"), "the old set serves until the walk ends");
        assert!(p.walked(walk, [Presence::of("kept")]));
        assert!(!p.may_hold("gone"));
        assert!(p.may_hold("kept") && p.may_hold("written during the walk"));
    }

    #[test]
    fn once_lost_every_key_may_be_held_until_a_walk_begun_after_ends() {
        let p = Presence::default();
        assert!(walked(&p, &["a"]));
        let stale = p.begin_walk();
        p.lost();
        assert!(p.may_hold("never written") && !p.ready());
        p.add("heard while lost");
        assert!(
            !p.walked(stale, [Presence::of("a")]),
            "a walk begun before the loss may have missed writes"
        );
        assert!(p.may_hold("never written"));
        assert!(walked(&p, &["a"]));
        assert!(!p.may_hold("never written"));
        let walk = p.begin_walk();
        let newer = p.begin_walk();
        assert!(!p.walked(walk, []), "another walk began since");
        assert!(p.walked(newer, []));
    }

    #[test]
    fn too_many_keys_leave_the_set_unknown() {
        let p = Presence::bounded(2);
        assert!(!walked(&p, &["a", "b", "c"]));
        assert!(p.may_hold("z") && !p.ready());
        assert!(walked(&p, &["a"]));
        assert!(!p.may_hold("z"));
        p.add("b");
        p.add("c");
        assert!(p.may_hold("z") && !p.ready() && p.known() == 0);
    }
}
