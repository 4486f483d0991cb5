//! Records an upstream answer while it streams to the client, and stores it
//! only after a clean end: a complete JSON body, or a stream that ended with
//! `[DONE]` / `done: true` and a finish reason. Errors, truncated and
//! client-aborted streams are never stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::entry::{Answer, Entry};
use super::key::CacheKey;
use super::{Flight, Plan};
use crate::body::{Body, BoxError};
use crate::chat::{Call, Dialect};
use crate::dialect::stream;

/// Called with the key and time to live of an answer once it is stored.
pub type OnStored =
    Box<dyn FnOnce(CacheKey, Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What the recorder needs to turn the bytes into an entry.
pub struct Recording {
    pub flight: Flight,
    pub plan: Plan,
    pub call: Arc<Call>,
    pub streamed: bool,
    /// What else should learn of the stored answer (the semantic index).
    pub on_stored: Option<OnStored>,
}

pin_project! {
    pub struct Recorder {
        #[pin]
        inner: Body,
        buffer: Vec<u8>,
        recording: Option<Recording>,
    }
}

impl Recorder {
    pub fn new(inner: Body, recording: Recording) -> Self {
        Recorder {
            inner,
            buffer: Vec::new(),
            recording: Some(recording),
        }
    }
}

/// The answer the recorded bytes hold, if they are a complete success.
fn answer(dialect: Dialect, streamed: bool, bytes: &[u8]) -> Option<Answer> {
    if streamed {
        return stream::parse(dialect, bytes).map(Answer::Stream);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    stream::is_complete(dialect, &value).then_some(Answer::Json(value))
}

fn finish(recording: Recording, bytes: Vec<u8>) {
    let Recording {
        flight,
        plan,
        call,
        streamed,
        on_stored,
    } = recording;
    let Some(answer) = answer(plan.dialect, streamed, &bytes) else {
        flight.finish(None);
        return;
    };
    let cache = flight.cache().clone();
    let entry: Entry = cache.entry_for(&plan, &call, answer);
    let tasks = cache.tasks().clone();
    tasks.spawn(async move {
        let stored = cache.put(flight.key(), &entry).await;
        let key = flight.key().clone();
        let ttl = Duration::from_millis(entry.ttl_ms);
        flight.finish(Some(Arc::new(entry)));
        if let (true, Some(on_stored)) = (stored, on_stored) {
            on_stored(key, ttl).await;
        }
    });
}

impl HttpBody for Recorder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(rec)) = (frame.data_ref(), this.recording.as_ref()) {
                    let limit = rec.flight.cache().config().max_entry_bytes;
                    if this.buffer.len() + data.len() > limit {
                        // Too large to keep: stop recording, release followers.
                        this.recording.take();
                        this.buffer.clear();
                    } else {
                        this.buffer.extend_from_slice(data);
                    }
                }
                // Hyper stops polling once a body says it has ended, so finish here too.
                if this.inner.is_end_stream() {
                    if let Some(rec) = this.recording.take() {
                        finish(rec, std::mem::take(this.buffer));
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(rec) = this.recording.take() {
                    finish(rec, std::mem::take(this.buffer));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.recording.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
