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
use crate::body::{Body, Tap};
use crate::chat::{Call, Dialect, Endpoint};
use crate::dialect::stream;

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

/// Wraps an upstream answer so that it is recorded when it ends cleanly and whole.
/// Anything else (an error, a client gone, an answer over `max_entry_bytes`) drops the
/// recording, which releases the followers to go upstream themselves.
pub fn recorder(inner: Body, recording: Recording) -> Tap {
    let limit = recording.flight.cache().config().max_entry_bytes;
    Tap::new(
        inner,
        limit,
        Box::new(move |bytes, ending| {
            // A client may hang up the moment it reads a stream's terminal event, before
            // the upstream's end of body reaches us; such a stream is still complete, and
            // `answer` only accepts streams that carry their terminal event. An upstream that
            // fails instead of ending its body fails the client's body too: not stored.
            if ending.whole && (ending.clean || (recording.streamed && !ending.failed)) {
                finish(recording, &bytes);
            }
        }),
    )
}

/// The answer the recorded bytes hold, if they are a complete success.
fn answer(dialect: Dialect, endpoint: Endpoint, streamed: bool, bytes: &[u8]) -> Option<Answer> {
    if streamed {
        return stream::parse(dialect, endpoint, bytes).map(Answer::Stream);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    stream::is_complete(dialect, endpoint, &value).then_some(Answer::Json(value))
}

fn finish(recording: Recording, bytes: &[u8]) {
    let Recording {
        flight,
        plan,
        call,
        streamed,
        compressed_away,
        on_stored,
    } = recording;
    let Some(answer) = answer(plan.dialect, call.endpoint(), streamed, bytes) else {
        flight.finish(None);
        return;
    };
    let cache = flight.cache().clone();
    let mut entry: Entry = cache.entry_for(&plan, &call, answer);
    entry.compressed_away = compressed_away;
    let tasks = cache.tasks().clone();
    tasks.spawn(async move {
        let entry = Arc::new(entry);
        let stored = cache.put(flight.key(), &entry).await;
        let key = flight.key().clone();
        let ttl = Duration::from_millis(entry.ttl_ms);
        flight.finish(Some(entry.clone()));
        if let (true, Some(on_stored)) = (stored, on_stored) {
            on_stored(key, ttl, entry).await;
        }
    });
}
