//! A leader's stream, shared live with the identical calls that follow it.
//!
//! The leader's upstream body passes through [`Fanout`], which appends each piece to the
//! flight's [`Feed`]; a follower that asked for a stream reads the feed from its start, then
//! each piece as it arrives, instead of waiting for the recorded entry. The feed holds at most
//! the cache's `max_entry_bytes`: past that, or when the leader's upstream fails or the leader
//! is dropped before its end, the feed breaks and every follower's body fails, as the leader's
//! did.

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
        })
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

    /// Every piece from the first, then each as it arrives; fails if the answer breaks off.
    pub fn body(self: Arc<Self>) -> Body {
        let rx = self.state.subscribe();
        let pieces = futures_util::stream::unfold(
            (self, 0usize, rx, false),
            |(feed, at, mut rx, over)| async move {
                if over {
                    return None;
                }
                loop {
                    let state = *rx.borrow_and_update();
                    if at < state.pieces {
                        let piece = feed.pieces.lock().0[at].clone();
                        return Some((Ok(Frame::data(piece)), (feed, at + 1, rx, false)));
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
                            return Some((Err(broken), (feed, at, rx, true)));
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
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.feed.push(data);
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(body: Body) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_follower_gets_what_came_before_it_and_what_comes_after() {
        let feed = Feed::new(1 << 20);
        feed.push(&Bytes::from_static(b"one "));
        let follower = tokio::spawn(read_all(feed.clone().body()));
        tokio::task::yield_now().await;
        feed.push(&Bytes::from_static(b"two"));
        feed.end(true);
        assert_eq!(follower.await.unwrap().unwrap(), b"one two");
        // A late follower still reads it all.
        assert_eq!(read_all(feed.clone().body()).await.unwrap(), b"one two");
    }

    #[tokio::test]
    async fn a_broken_or_oversized_answer_fails_the_followers() {
        let feed = Feed::new(1 << 20);
        let follower = tokio::spawn(read_all(feed.clone().body()));
        feed.push(&Bytes::from_static(b"half"));
        feed.end(false);
        feed.end(true);
        assert!(follower.await.unwrap().is_err(), "the first verdict stands");

        // A follower that arrives after the break still gets the pieces, then a pause (when
        // its head and pieces go out), and only then the error.
        let mut late = feed.clone().body();
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
        assert!(read_all(small.clone().body()).await.is_err());
    }
}
