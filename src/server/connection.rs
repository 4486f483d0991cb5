//! One connection from accept to close: the TLS handshake, then HTTP until the client leaves.
//! A connection that has not sent its first request's headers by its deadline (counted from
//! accept, the handshake included) is closed, so silent sockets cannot pile up.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::Http;
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

/// Serves HTTP on `stream`; closes it at `deadline` unless a request has arrived by then.
async fn http<S>(
    builder: Arc<Http>,
    stream: S,
    deadline: Instant,
    proxy: Arc<Proxy>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = Arc::new(Notify::new());
    let arrived = first.clone();
    let service = service_fn(move |request| {
        arrived.notify_one();
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::door::handle(&proxy, request).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let connection = watcher.watch(connection.into_owned());
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = &mut connection => ended,
        waited = tokio::time::timeout_at(deadline, first.notified()) => match waited {
            Ok(()) => connection.await,
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
