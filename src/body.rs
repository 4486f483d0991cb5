//! Body types shared by the server, the upstream client and the stages, and the
//! idle-timeout wrapper that guards streams between chunks.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request and response body thrifty sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into `BoxError`.
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct IdleTimeoutError(pub Duration);

pin_project! {
    /// Fails a body that produces no frame for `idle`.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        idle: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: tokio::time::sleep(idle),
            idle,
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep.as_mut().reset(Instant::now() + *this.idle);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeoutError(*this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a tapped body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// The body reached its end (not an error, not dropped early).
    pub clean: bool,
    /// The body itself failed (the upstream reset the connection, or went silent), as
    /// opposed to being dropped early by its reader.
    pub failed: bool,
    /// Every byte fit under the limit.
    pub whole: bool,
}

/// Called once a tapped body ends, with its bytes (up to the limit).
pub type TapEnd = Box<dyn FnOnce(Bytes, Ending) + Send>;

pin_project! {
    /// Passes a body through unchanged and hands its bytes to `on_end` when it ends, fails,
    /// or is dropped early.
    pub struct Tap {
        #[pin]
        inner: Body,
        buffer: Vec<u8>,
        limit: usize,
        whole: bool,
        on_end: Option<TapEnd>,
    }

    impl PinnedDrop for Tap {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                let ending = Ending { clean: false, failed: false, whole: *this.whole };
                on_end(Bytes::from(std::mem::take(this.buffer)), ending);
            }
        }
    }
}

impl Tap {
    pub fn new(inner: Body, limit: usize, on_end: TapEnd) -> Self {
        Tap {
            inner,
            buffer: Vec::new(),
            limit,
            whole: true,
            on_end: Some(on_end),
        }
    }
}

impl HttpBody for Tap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = this.limit.saturating_sub(this.buffer.len());
                    *this.whole &= data.len() <= room;
                    this.buffer.extend_from_slice(&data[..data.len().min(room)]);
                }
                // Hyper stops polling once a body says it has ended, so end here too.
                this.inner.is_end_stream().then_some(true)
            }
            Poll::Ready(None) => Some(true),
            Poll::Ready(Some(Err(_))) => Some(false),
            Poll::Pending => None,
        };
        if let Some(clean) = ended {
            if let Some(on_end) = this.on_end.take() {
                let ending = Ending {
                    clean,
                    failed: !clean,
                    whole: *this.whole,
                };
                on_end(Bytes::from(std::mem::take(this.buffer)), ending);
            }
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

/// The start of a body, read up to a limit.
pub enum Prefix {
    /// The body ended within the limit: all of it.
    Whole(Bytes),
    /// The body goes on: what was read (at least the limit), and the rest, unread.
    Longer(Bytes, Body),
}

/// Reads `body` until it ends or `limit` bytes have arrived, whichever comes first, so a
/// body can be inspected without holding more than about `limit` of it.
pub async fn read_prefix(mut body: Body, limit: usize) -> Result<Prefix, BoxError> {
    let mut prefix = Vec::new();
    while prefix.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    prefix.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(e),
            None => return Ok(Prefix::Whole(Bytes::from(prefix))),
        }
    }
    if body.is_end_stream() {
        return Ok(Prefix::Whole(Bytes::from(prefix)));
    }
    Ok(Prefix::Longer(Bytes::from(prefix), body))
}

/// A body that sends `prefix` and then the rest of `body`.
pub fn prepend(prefix: Bytes, body: Body) -> Body {
    let first = futures_util::stream::iter([Ok(Frame::data(prefix))]);
    let rest = http_body_util::BodyStream::new(body);
    http_body_util::StreamBody::new(futures_util::StreamExt::chain(first, rest)).boxed_unsync()
}

/// Rewrites a body's data as it streams: `rewrite` gets each piece, then `None` at the end.
pub type RewriteFn = Box<dyn FnMut(Option<&[u8]>) -> Bytes + Send>;

pin_project! {
    /// A body whose data frames pass through `rewrite`; empty results are skipped.
    pub struct Rewrite {
        #[pin]
        inner: Body,
        rewrite: RewriteFn,
        ended: bool,
    }
}

impl Rewrite {
    pub fn new(inner: Body, rewrite: RewriteFn) -> Self {
        Rewrite {
            inner,
            rewrite,
            ended: false,
        }
    }
}

impl HttpBody for Rewrite {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.ended {
                return Poll::Ready(None);
            }
            let frame = match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    *this.ended = true;
                    let rest = (this.rewrite)(None);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let out = (this.rewrite)(Some(&data));
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
