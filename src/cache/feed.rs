//! A leader's stream, shared live with the identical calls that follow it.
//!
//! The leader's upstream body passes through [`Fanout`], which appends each piece to the
//! flight's [`Feed`]; a follower that asked for a stream holds a [`Reader`] and reads the feed
//! from its start, then each piece as it arrives, instead of waiting for the recorded entry.
//!
//! The leader's client may leave before the end. Its answer is wrapped in [`Lead`]: dropped
//! while any follower still reads the feed, it goes on in a task of its own (on the server's
//! [`Tasks`], which shutdown cuts like a connection), so the followers get the whole answer and
//! every tap on it (the savings record, the recorder) sees the upstream's own end. It stops at
//! the upstream's end or failure (its idle timeout included), when the feed breaks, or when
//! the last follower leaves; with no follower left the upstream call is cancelled, as a call
//! nobody reads is.
//!
//! The feed holds at most the cache's `max_entry_bytes`: past that, or when the leader's
//! upstream fails, or when the leader's answer is dropped with nobody following it, the feed
//! breaks and every follower's body fails, as the leader's did. It must not know the wire
//! formats: the pieces are bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, StreamBody};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::sync::watch;

use crate::body::{Body, BoxError};
use crate::tasks::Tasks;

/// How a leader's answer began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The answer is a stream (SSE or NDJSON).
    pub streamed: bool,
    /// The stream carries its usage (the leader or thrifty asked for it).
    pub has_usage: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct State {
    start: Option<Start>,
    pieces: usize,
    /// `Some(true)` once the body ended whole, `Some(false)` once it broke.
    end: Option<bool>,
}

/// The pieces of one leader's answer so far.
pub struct Feed {
    /// The pieces, and how many bytes they hold.
    pieces: Mutex<(Vec<Bytes>, usize)>,
    limit: usize,
    state: watch::Sender<State>,
    /// How many followers hold a [`Reader`] of it.
    readers: watch::Sender<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("the shared upstream answer broke off")]
pub struct Broken;

impl Feed {
    pub fn new(limit: usize) -> Arc<Feed> {
        Arc::new(Feed {
            pieces: Mutex::new((Vec::new(), 0)),
            limit,
            state: watch::channel(State::default()).0,
            readers: watch::channel(0).0,
        })
    }

    /// A follower's hold on the feed, taken as soon as it joins the flight: while one is
    /// held, a leader whose client left goes on (see [`Lead`]).
    pub fn reader(self: &Arc<Self>) -> Reader {
        self.readers.send_modify(|n| *n += 1);
        Reader(self.clone())
    }

    /// Whether any follower holds a reader of it.
    fn followed(&self) -> bool {
        *self.readers.borrow() > 0
    }

    /// The leader's answer has its head.
    pub fn start(&self, start: Start) {
        self.state.send_modify(|s| s.start = Some(start));
    }

    fn push(&self, piece: &Bytes) {
        let mut pieces = self.pieces.lock();
        if self.state.borrow().end.is_some() {
            return;
        }
        pieces.1 += piece.len();
        if pieces.1 > self.limit {
            drop(pieces);
            self.end(false);
            return;
        }
        pieces.0.push(piece.clone());
        self.state.send_modify(|s| s.pieces += 1);
    }

    /// The answer ended, whole or not; the first verdict stands.
    pub fn end(&self, whole: bool) {
        self.state.send_if_modified(|s| {
            if s.end.is_some() {
                return false;
            }
            s.end = Some(whole);
            true
        });
    }

    /// Whether the leader's answer has already ended whole: all of it is here, and its record
    /// is on its way.
    pub fn ended_whole(&self) -> bool {
        self.state.borrow().end == Some(true)
    }

    /// Whether the leader's answer broke off (past the limit, or failed): it records nothing.
    pub fn broken(&self) -> bool {
        self.state.borrow().end == Some(false)
    }

    /// How the leader's answer began, if it has.
    pub fn begun(&self) -> Option<Start> {
        self.state.borrow().start
    }

    /// Waits until the leader's answer has its head (`Some`) or ended without one (`None`).
    pub async fn started(&self) -> Option<Start> {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| s.start.is_some() || s.end.is_some())
            .await
            .ok()?;
        state.start
    }
}

/// One follower's hold on a leader's feed; reads it as a deref of [`Feed`].
pub struct Reader(Arc<Feed>);

impl std::ops::Deref for Reader {
    type Target = Feed;

    fn deref(&self) -> &Feed {
        &self.0
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.readers.send_modify(|n| *n -= 1);
    }
}

impl Reader {
    /// Every piece from the first, then each as it arrives; fails if the answer breaks off.
    pub fn body(self) -> Body {
        let rx = self.0.state.subscribe();
        let pieces = futures_util::stream::unfold(
            (self, 0usize, rx, false),
            |(reader, at, mut rx, over)| async move {
                if over {
                    return None;
                }
                loop {
                    let state = *rx.borrow_and_update();
                    if at < state.pieces {
                        let piece = reader.0.pieces.lock().0[at].clone();
                        return Some((Ok(Frame::data(piece)), (reader, at + 1, rx, false)));
                    }
                    match state.end {
                        Some(true) => return None,
                        Some(false) => {
                            // Pause once first: a server that meets a body's error in the same
                            // write as its head would close the connection without sending
                            // either, and the follower's client would see no answer at all
                            // instead of the start of one that broke off.
                            tokio::task::yield_now().await;
                            let broken: BoxError = Box::new(Broken);
                            return Some((Err(broken), (reader, at, rx, true)));
                        }
                        None => {}
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        );
        StreamBody::new(pieces).boxed_unsync()
    }
}

pin_project! {
    /// Passes the leader's upstream body through, appending each piece to its feed.
    pub struct Fanout {
        #[pin]
        inner: Body,
        feed: Arc<Feed>,
    }
}

impl Fanout {
    pub fn new(inner: Body, feed: Arc<Feed>) -> Self {
        Fanout { inner, feed }
    }
}

impl HttpBody for Fanout {
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
                if let Some(data) = frame.data_ref() {
                    this.feed.push(data);
                }
                // Hyper stops polling once a body says it has ended, so end here too.
                if this.inner.is_end_stream() {
                    this.feed.end(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.feed.end(false),
            Poll::Ready(None) => this.feed.end(true),
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

/// A leader's answer on its way to its client; see the module's doc for what happens when it
/// is dropped before its end.
pub struct Lead {
    /// The answer, until it ended or went on without its client.
    inner: Option<Body>,
    feed: Arc<Feed>,
    tasks: Tasks,
}

impl Lead {
    pub fn new(inner: Body, feed: Arc<Feed>, tasks: Tasks) -> Self {
        Lead {
            inner: Some(inner),
            feed,
            tasks,
        }
    }
}

impl HttpBody for Lead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.inner = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Lead {
    /// The leader's client left before the end: with followers still reading, the answer goes
    /// on without it; without them, dropping it cancels the upstream call.
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) there is nobody to go on for.
        if inner.is_end_stream()
            || !self.feed.followed()
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        tracing::debug!("the leader's client left: its answer goes on for its followers");
        self.tasks.spawn(go_on(inner, self.feed.clone()));
    }
}

/// Reads a leader's answer whose client left, for its followers: to its end or failure, or
/// until the feed breaks or the last follower leaves, whichever comes first. Dropping the
/// answer early cancels the upstream call; either way its taps see how it ended.
async fn go_on(mut answer: Body, feed: Arc<Feed>) {
    let mut readers = feed.readers.subscribe();
    let mut state = feed.state.subscribe();
    let abandoned = async {
        tokio::select! {
            _ = readers.wait_for(|n| *n == 0) => {}
            _ = state.wait_for(|s| s.end == Some(false)) => {}
        }
    };
    tokio::pin!(abandoned);
    loop {
        tokio::select! {
            biased;
            () = &mut abandoned => return,
            frame = answer.frame() => {
                if !matches!(frame, Some(Ok(_))) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    async fn read_all(body: Body) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_follower_gets_what_came_before_it_and_what_comes_after() {
        let feed = Feed::new(1 << 20);
        feed.push(&Bytes::from_static(b"one "));
        let follower = tokio::spawn(read_all(feed.reader().body()));
        tokio::task::yield_now().await;
        feed.push(&Bytes::from_static(b"two"));
        feed.end(true);
        assert_eq!(follower.await.unwrap().unwrap(), b"one two");
        // A late follower still reads it all.
        assert_eq!(read_all(feed.reader().body()).await.unwrap(), b"one two");
    }

    #[tokio::test]
    async fn a_broken_or_oversized_answer_fails_the_followers() {
        let feed = Feed::new(1 << 20);
        let follower = tokio::spawn(read_all(feed.reader().body()));
        feed.push(&Bytes::from_static(b"half"));
        feed.end(false);
        feed.end(true);
        assert!(follower.await.unwrap().is_err(), "the first verdict stands");

        // A follower that arrives after the break still gets the pieces, then a pause (when
        // its head and pieces go out), and only then the error.
        let mut late = feed.reader().body();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let first = Pin::new(&mut late).poll_frame(&mut cx);
        assert!(
            matches!(&first, Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(|d| d == "half")),
            "{first:?}"
        );
        assert!(Pin::new(&mut late).poll_frame(&mut cx).is_pending());
        assert!(matches!(
            Pin::new(&mut late).poll_frame(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));

        let small = Feed::new(4);
        small.push(&Bytes::from_static(b"12345"));
        assert!(read_all(small.reader().body()).await.is_err());
    }

    /// A leader's answer whose pieces the test sends, and the sender.
    fn leading(feed: &Arc<Feed>, tasks: &Tasks) -> (Lead, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
            let piece = rx.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(piece)), rx))
        });
        let answer = Fanout::new(StreamBody::new(pieces).boxed_unsync(), feed.clone());
        let lead = Lead::new(answer.boxed_unsync(), feed.clone(), tasks.clone());
        (lead, tx)
    }

    #[tokio::test]
    async fn a_lead_dropped_midway_goes_on_while_a_follower_reads() {
        let tasks = Tasks::default();
        let feed = Feed::new(1 << 20);
        let (lead, tx) = leading(&feed, &tasks);
        let follower = tokio::spawn(read_all(feed.reader().body()));
        tx.send(Bytes::from_static(b"one ")).await.unwrap();
        drop(lead);
        tx.send(Bytes::from_static(b"two")).await.unwrap();
        drop(tx);
        assert_eq!(follower.await.unwrap().unwrap(), b"one two");
    }

    #[tokio::test]
    async fn a_lead_dropped_midway_stops_when_nobody_or_nobody_left_follows() {
        let tasks = Tasks::default();
        // Nobody follows: the answer is dropped with the lead.
        let feed = Feed::new(1 << 20);
        let (lead, tx) = leading(&feed, &tasks);
        drop(lead);
        assert!(tx.is_closed());

        // The last follower leaves after the leader's client did.
        let feed = Feed::new(1 << 20);
        let (lead, tx) = leading(&feed, &tasks);
        let follower = feed.reader().body();
        drop(lead);
        tx.send(Bytes::from_static(b"one")).await.unwrap();
        assert!(!tx.is_closed());
        drop(follower);
        tx.closed().await;

        // Shutdown cuts it like a connection.
        let feed = Feed::new(1 << 20);
        let (lead, tx) = leading(&feed, &tasks);
        let _follower = feed.reader().body();
        drop(lead);
        tasks.cut().await;
        assert!(tx.is_closed());
    }
}
