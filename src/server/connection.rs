//! One connection from accept to close: the TLS handshake, then HTTP until the client leaves.
//! A connection that has not sent its first request's headers by its deadline (counted from
//! accept, the handshake included) is closed, so silent sockets cannot pile up; so is one
//! that has had no request in flight (a response still streaming counts) for the idle
//! timeout, whichever protocol it speaks.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::Http;
use crate::body::{Body, BoxError};
use crate::pipeline::Proxy;

/// A connection just accepted, holding one of the server's connection slots.
pub(super) struct Accepted {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    /// When the first request's headers must have arrived.
    pub(super) deadline: Instant,
    pub(super) slot: OwnedSemaphorePermit,
}

pub(super) async fn serve(
    accepted: Accepted,
    tls: Option<TlsAcceptor>,
    builder: Arc<Http>,
    proxy: Arc<Proxy>,
    watcher: Watcher,
) {
    let Accepted {
        stream,
        peer,
        deadline,
        slot,
    } = accepted;
    match tls {
        None => http(builder, stream, deadline, proxy, watcher).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => http(builder, stream, deadline, proxy, watcher).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
            Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
        },
    }
    drop(slot);
}

/// Serves HTTP on `stream`; closes it at `deadline` unless a request has arrived by then, and
/// later once no request has been in flight for the idle timeout.
async fn http<S>(
    builder: Arc<Http>,
    stream: S,
    deadline: Instant,
    proxy: Arc<Proxy>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = proxy.config().idle_timeout;
    let first = Arc::new(Notify::new());
    let arrived = first.clone();
    let activity = Arc::new(Activity::default());
    let requests = activity.clone();
    let service = service_fn(move |request| {
        arrived.notify_one();
        let busy = Busy::new(&requests);
        let proxy = proxy.clone();
        async move {
            let response = crate::door::handle(&proxy, request).await;
            Ok::<_, std::convert::Infallible>(response.map(|inner| Held { inner, _busy: busy }))
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let connection = watcher.watch(connection.into_owned());
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = &mut connection => ended,
        waited = tokio::time::timeout_at(deadline, first.notified()) => match waited {
            Ok(()) => tokio::select! {
                ended = &mut connection => ended,
                () = activity.idle_for(idle) => {
                    tracing::debug!("no request in flight for the idle timeout: connection closed");
                    return;
                }
            },
            Err(_) => {
                tracing::debug!("no request before the header read timeout: connection closed");
                return;
            }
        },
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// How many of a connection's requests are in flight, and a signal each time that changes.
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so no change between the two is missed.
            changed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                if tokio::time::timeout(idle, changed).await.is_err() {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in flight, from its arrival until its response body ends or is dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_waiters();
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it is done.
    struct Held {
        #[pin]
        inner: Body,
        _busy: Busy,
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
