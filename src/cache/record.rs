//! Records an upstream answer while it streams to the client, and stores it
//! only after a clean end: a complete JSON body, or a stream that carried its
//! terminal event (`[DONE]` / `done: true`) and a finish reason, even when the
//! client hung up right after it. Errors, truncated and client-aborted streams
//! are never stored, nor is a stream whose upstream failed after its terminal event:
//! its client saw a transport error.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::entry::{Answer, Entry};
use super::key::CacheKey;
use super::{Flight, Plan};
use crate::body::Ending;
use crate::chat::Call;
use crate::dialect::observe::{JsonTexts, Observed};

/// Called with the key, time to live and entry of an answer once it is stored.
pub type OnStored = Box<
    dyn FnOnce(CacheKey, Duration, Arc<Entry>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send,
>;

/// What the recorder needs to turn the bytes into an entry.
pub struct Recording {
    pub flight: Flight,
    pub plan: Plan,
    pub call: Arc<Call>,
    pub streamed: bool,
    /// Prompt tokens compression removed before this answer was asked for.
    pub compressed_away: u64,
    /// What else should learn of the stored answer (the semantic index, the calibration).
    pub on_stored: Option<OnStored>,
}

impl Recording {
    /// The most of an answer this recording keeps.
    pub fn limit(&self) -> usize {
        self.flight.cache().config().max_entry_bytes
    }

    /// The answer's body ended: it is recorded when it ended cleanly and whole (`size` bytes,
    /// within [`Recording::limit`]) and is a complete success. Anything else (an error, a
    /// client gone mid-answer, an answer over the limit) drops the recording, which releases
    /// the followers to go upstream themselves.
    ///
    /// A client may hang up the moment it reads a stream's terminal event, before the
    /// upstream's end of body reaches us; such a stream is still complete. An upstream that
    /// fails instead of ending its body fails the client's body too: not stored.
    pub fn finish(self, observed: Observed, ending: Ending, size: usize) {
        let whole = ending.whole && size <= self.limit();
        if whole && (ending.clean || (self.streamed && !ending.failed)) {
            store(self, observed);
        }
    }
}

/// The answer the observed bytes hold, if they are a complete success, and its values' texts
/// as they parsed.
fn answer(observed: Observed) -> Option<(Answer, Option<JsonTexts>)> {
    if !observed.complete {
        return None;
    }
    if observed.streamed {
        return Some((Answer::Stream(observed.values), observed.texts));
    }
    let value = observed.values.into_iter().next()?;
    Some((Answer::Json(value), observed.texts))
}

fn store(recording: Recording, observed: Observed) {
    let Recording {
        flight,
        plan,
        call,
        streamed: _,
        compressed_away,
        on_stored,
    } = recording;
    let Some((answer, texts)) = answer(observed) else {
        flight.finish(None);
        return;
    };
    let cache = flight.cache().clone();
    let mut entry: Entry = cache.entry_for(&plan, &call, answer);
    entry.compressed_away = compressed_away;
    let tasks = cache.tasks().clone();
    tasks.spawn(async move {
        let entry = Arc::new(entry);
        let stored = cache.put(flight.key(), &entry, texts.as_ref()).await;
        let key = flight.key().clone();
        let ttl = Duration::from_millis(entry.ttl_ms);
        flight.finish(Some(entry.clone()));
        if let (true, Some(on_stored)) = (stored, on_stored) {
            on_stored(key, ttl, entry).await;
        }
    });
}
