//! The accept loop: plain TCP or rustls, hyper-util's auto HTTP/1.1 + HTTP/2 builder, a cap on
//! connections served at once, and graceful shutdown.
//!
//! Shutdown goes in this order: stop accepting; let in-flight responses finish within
//! `shutdown_grace`; cut whatever still runs, which drops the response bodies so each records
//! what it carried (as a partial `error`); wait until every connection task is gone. Only then
//! does [`crate::run`] drain the ledger, so no record arrives after the ledger has stopped.
//!
//! - [`connection`]: one connection, from accept to close, with its first-request deadline.
//!
//! Connections run on the proxy's [`Tasks`], beside the leaders' answers that go on for their
//! followers after their own client left; shutdown cuts them all alike.

mod connection;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::Proxy;
use crate::tasks::Tasks;

/// The HTTP builder every connection is served with.
pub(crate) type Http = Builder<Tasks>;

pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let tasks = proxy.tasks().clone();
    let header_timeout = proxy.config().header_read_timeout;
    let mut builder = Builder::new(tasks.clone());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(proxy.config().max_connections));
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 {
            tracing::warn!(
                max_connections = proxy.config().max_connections,
                "connection limit reached: new connections wait until one closes"
            );
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let accepted = connection::Accepted {
            stream,
            peer,
            deadline: tokio::time::Instant::now() + header_timeout,
            slot,
        };
        tasks.spawn(connection::serve(
            accepted,
            tls.clone(),
            builder.clone(),
            proxy.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    let grace = proxy.config().shutdown_grace;
    tracing::info!(?grace, "shutting down: waiting for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = tasks.len(),
            "shutdown grace period over: cutting the remaining connections"
        );
    }
    tasks.cut().await;
}
