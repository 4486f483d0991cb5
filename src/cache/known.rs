//! Which answers a shared Redis server holds, so that a miss reads nothing from it: the
//! lookup of a new question answers from memory instead of a round trip (see [`Presence`]).
//! Not on a cluster, whose announcements may arrive after another instance has asked.
//!
//! The set is fed by this instance's writes, by the announcements every instance makes of
//! its writes (heard by the same listener as the hot layer's), and by a walk of the answer
//! keys each time the subscription is in place again and every [`WALK_EVERY`] after, which
//! also lets go of answers that expired. While the subscription is down, or before its first
//! walk has ended, every lookup reads the store as before.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use super::{ANSWER_PREFIX, Cache, hot};
use crate::store::Heard;
use crate::store::presence::{Presence, WalkId};

/// How often the answer keys are walked again while the subscription holds.
pub const WALK_EVERY: Duration = Duration::from_secs(600);

/// The most answers known (about 16 bytes each); beyond them every lookup reads the store.
pub const MAX_KNOWN: usize = 4_000_000;

/// The set for one Redis server; none for the embedded store, which knows its keys itself,
/// nor for a cluster, where another instance may ask before it hears of a write.
pub fn for_store(announces_in_step: bool) -> Option<Presence> {
    announces_in_step.then(|| Presence::bounded(MAX_KNOWN))
}

impl Cache {
    /// Whether the store may hold the answer under `full` (a full store key): by the set
    /// kept here of what a shared store holds, or by what the store itself knows. The hot
    /// layer holds copies only of what the store holds, so it need not be asked either when
    /// the answer is no.
    pub(super) fn may_hold(&self, full: &str) -> bool {
        self.known.as_ref().is_none_or(|known| known.may_hold(full)) && self.store.may_hold(full)
    }

    /// The answer under `full` is being written, or has been.
    pub(super) fn written(&self, full: &str) {
        if let Some(known) = &self.known {
            known.add(full);
        }
    }

    /// Whether the answers the store holds are known, how many, and how many walks of them
    /// have ended, for `/admin/cache/stats`; none for a store that is not shared.
    pub fn known_answers(&self) -> Option<serde_json::Value> {
        self.known.as_ref().map(
            |k| serde_json::json!({"ready": k.ready(), "answers": k.known(), "walks": k.walks_ended()}),
        )
    }

    /// Drops the hot copies other instances announce they changed and follows which answers
    /// the store holds; runs for thrifty's life.
    pub async fn listen(self: Arc<Self>) {
        let Some(mut events) = self.store.subscribe(hot::EVENTS) else {
            return;
        };
        let mut subscribed = false;
        let mut tick = tokio::time::interval(WALK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                heard = events.recv() => match heard {
                    Some(Heard::Message(message)) => {
                        self.hot.heard(&message);
                        if let Some(known) = &self.known {
                            hot::announced(&message).for_each(|key| known.add(key));
                        }
                    }
                    Some(Heard::Subscribed) => {
                        subscribed = true;
                        self.walk();
                    }
                    Some(Heard::Lost) => {
                        subscribed = false;
                        if let Some(known) = &self.known {
                            known.lost();
                        }
                    }
                    None => return,
                },
                _ = tick.tick(), if subscribed => self.walk(),
            }
        }
    }

    /// Walks the answer keys in the background; what it finds, with what is written meanwhile,
    /// becomes the known set.
    fn walk(self: &Arc<Self>) {
        let Some(known) = &self.known else {
            return;
        };
        let walk = known.begin_walk();
        let cache = self.clone();
        tokio::spawn(async move { cache.walked(walk).await });
    }

    /// Fingerprints the keys as the walk finds them, so it holds at most one more than
    /// [`MAX_KNOWN`] of them, never the keys themselves.
    async fn walked(&self, walk: WalkId) {
        let Some(known) = &self.known else {
            return;
        };
        let mut found = Vec::new();
        let mut fingerprint = |key: String| {
            found.push(Presence::of(&key));
            if found.len() > MAX_KNOWN {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        match self.store.walk_keys(ANSWER_PREFIX, &mut fingerprint).await {
            Ok(()) => {
                // Over the bound, the set is left unknown.
                known.walked(walk, found);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot walk the answer keys; lookups read the store");
                known.abandon(walk);
            }
        }
    }
}
