//! thrifty: an OpenAI- and Ollama-compatible reverse proxy that makes LLM APIs cheaper.
//!
//! The rooms, in the order a request meets them:
//!
//! - [`server`]: accept loop, TLS, HTTP/1.1 + HTTP/2, graceful shutdown; [`tasks`]: the
//!   tracked tasks it serves connections on, which shutdown cuts.
//! - [`router`]: `(method, path)` to a [`router::Route`]; [`door`]: each route to its handler,
//!   request ids, errors in the caller's dialect.
//! - [`pipeline`]: the stage order for every intercepted request, and nothing else.
//! - [`dialect`]: the only code that knows OpenAI and Ollama wire JSON.
//! - [`chat`]: canonical request types the stages work on.
//! - [`auth`]: client keys and tenant ids. [`ratelimit`]: per-tenant limits.
//! - [`upstream`]: the pooled client with its timeouts. [`headers`]: hop-by-hop hygiene,
//!   header names and the `x-thrifty-*` labels.
//! - [`body`], [`reply`], [`error`]: bodies, self-made responses, errors by fault.
//! - [`cache`]: exact answers and embeddings; [`semantic`]: answers to questions that mean the same.
//! - [`compress`]: token counting and conversation compression before forwarding.
//! - [`accounting`], [`savings`]: what each request cost and saved, the ledger and its reports.
//! - [`store`]: Redis or the embedded store behind all of them; [`admin`]: the admin API;
//!   [`fleet`]: the statistics every instance on one Redis reports alike.
//! - [`config`]: file + environment to a validated [`config::Config`]; [`table`]: the data
//!   tables it reads; [`clock`]: the wall clock every date and age is read from; [`secret`],
//!   [`tls`], [`telemetry`]; [`digest`]: digests as hex text.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

/// Every program linking thrifty (the binary, its tests and benches) allocates through
/// mimalloc: per-thread free lists keep the many short-lived buffers of a request, and the
/// store's page buffers freed on other threads, off the system allocator's locks and out of
/// its heap growing and trimming (see README, "Where thrifty's CPU goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub(crate) mod accounting;
pub(crate) mod admin;
pub mod auth;
pub(crate) mod body;
pub(crate) mod cache;
pub mod chat;
pub mod clock;
pub mod compress;
pub mod config;
pub(crate) mod dialect;
pub(crate) mod digest;
pub(crate) mod door;
pub(crate) mod error;
pub(crate) mod fleet;
pub(crate) mod headers;
pub(crate) mod pipeline;
pub(crate) mod ratelimit;
pub(crate) mod reply;
pub(crate) mod router;
pub mod savings;
pub(crate) mod secret;
pub mod semantic;
pub(crate) mod server;
pub mod store;
pub(crate) mod summarizer;
pub(crate) mod table;
pub(crate) mod tasks;
pub mod telemetry;
pub mod tls;
pub(crate) mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use clock::{Clock, ManualClock};
pub use config::Config;

/// How often idle rate-limit buckets are forgotten.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot set up upstream TLS: {0}")]
    UpstreamTls(#[from] rustls::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
}

/// How often expired entries are removed from the embedded store.
const STORE_SWEEP: Duration = Duration::from_secs(600);
/// How often this instance adds its counters to the totals shared through Redis.
const STATS_PUBLISH: Duration = Duration::from_secs(1);
/// How often cache writes committed without an `fsync` are made durable.
const STORE_PERSIST: Duration = Duration::from_secs(1);

/// Opens Redis when a URL is configured, the embedded store otherwise, its entries expiring by
/// `clock`.
pub fn open_store(
    config: &config::StoreConfig,
    clock: &Clock,
) -> Result<Arc<store::Store>, store::StoreError> {
    store::Store::open(config, clock)
}

/// How long serving waits for an embedded store another holder is still closing: a restart's
/// previous process, or in one process the server before it, may let go a moment later.
const STORE_OPEN_WAIT: Duration = Duration::from_secs(10);

/// [`open_store`], waiting up to [`STORE_OPEN_WAIT`] while the embedded store is in use.
async fn open_store_waiting(
    config: &config::StoreConfig,
    clock: &Clock,
) -> Result<Arc<store::Store>, store::StoreError> {
    let deadline = tokio::time::Instant::now() + STORE_OPEN_WAIT;
    loop {
        match open_store(config, clock) {
            Err(store::StoreError::InUse) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened => return opened,
        }
    }
}

/// Serves thrifty on an already-bound listener until `shutdown` resolves, then
/// lets in-flight requests finish within the configured grace period.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_with_clock(listener, config, Clock::system(), shutdown).await
}

/// [`run`], reading the date and every age from `clock`: a test hands in a [`ManualClock`]'s
/// and moves it instead of waiting.
pub async fn run_with_clock(
    listener: TcpListener,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
            &files.cert,
            &files.key,
        )?)),
        None => None,
    };
    let store = open_store_waiting(&config.store, &clock).await?;
    let proxy = Arc::new(pipeline::Proxy::new(Arc::new(config), store, clock)?);
    let mut background = tokio::task::JoinSet::new();
    let limiter_proxy = proxy.clone();
    background.spawn(async move {
        let mut tick = tokio::time::interval(LIMITER_SWEEP);
        loop {
            tick.tick().await;
            limiter_proxy.limiter().forget_idle();
        }
    });
    let indexer = proxy.semantic().map(|semantic| {
        background.spawn(semantic.clone().sync());
        background.spawn(semantic.clone().renew_stale());
        tokio::spawn(semantic.clone().index_questions())
    });
    let sweep_store = proxy.cache().store().clone();
    background.spawn(async move {
        let mut tick = tokio::time::interval(STORE_SWEEP);
        loop {
            tick.tick().await;
            sweep_store.sweep().await;
        }
    });
    background.spawn(proxy.cache().clone().listen());
    if proxy.fleet().is_some() {
        let stats_proxy = proxy.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(STATS_PUBLISH);
            loop {
                tick.tick().await;
                stats_proxy.publish_stats().await;
            }
        });
    }
    let persist_store = proxy.cache().store().clone();
    background.spawn(async move {
        let mut tick = tokio::time::interval(STORE_PERSIST);
        loop {
            tick.tick().await;
            persist_store.persist().await;
        }
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "thrifty listening");
    }
    // Returns once every connection is gone: the ones still running when the grace period
    // ended were cut, and their answers recorded as partial, before the ledger stops below.
    server::serve(listener, proxy.clone(), tls, shutdown).await;
    // Every request recorded so far reaches the store before the process goes.
    let grace = proxy.config().shutdown_grace;
    // Answers recorded just before shutdown are still being written: let them land.
    let tasks = proxy.cache().tasks();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("cache writes not finished at shutdown");
    }
    // Questions answered before shutdown are indexed and their vectors persisted.
    if let (Some(semantic), Some(indexer)) = (proxy.semantic(), indexer) {
        semantic.close_queue();
        let abort = indexer.abort_handle();
        if tokio::time::timeout(grace, indexer).await.is_err() {
            abort.abort();
            tracing::warn!("questions not yet indexed at shutdown");
        }
    }
    if !proxy.ledger().shutdown(grace).await {
        tracing::warn!(
            pending = proxy.ledger().pending(),
            "savings records not yet written at shutdown"
        );
    }
    background.shutdown().await;
    // What this instance counted last is added to the totals the other instances report.
    let _ = tokio::time::timeout(grace, proxy.publish_stats()).await;
    proxy.cache().store().close().await;
    Ok(())
}
