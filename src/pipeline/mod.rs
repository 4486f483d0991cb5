//! The life of an intercepted request, top to bottom. This folder orders the stages and
//! nothing else.
//!
//! ```text
//!  door ──► read body ──► decode (dialect) ──► select upstream ──► authenticate
//!       ──► rate limit ──► cache controls ──► savings record (Context)
//!       ──► exact lookup ──hit / follow──► replay
//!       ──► semantic lookup ──hit──► replay
//!       ──► compress, ask for stream usage ──► forward ──► upstream
//!                                      (context overflow: compress harder, once)
//!  client ◄── labels (x-thrifty-*) ◄── savings tap, recorder and fan-out ◄──┘
//! ```
//!
//! Passthrough routes skip reading and decoding: the body streams through untouched.
//! Stages never call each other; each is a function or object these files call in order:
//!
//! - `mod.rs`: admission (upstream, tenant, rate limit), the `Context` every stage gets
//!   and the savings record every intercepted call gets.
//! - `answer.rs`: chat, Responses and completion calls: exact lookup, semantic lookup,
//!   upstream, recording.
//! - `follow.rs`: a streaming call following an identical one in flight, piece by piece.
//! - `semantic.rs`: the semantic stage: serve, or verify the candidate against the fresh answer.
//! - `forward.rs`: what goes upstream (compression, the stream usage request, the one retry
//!   after a context overflow) and the upstream call itself.
//! - `embed.rs`: embedding calls, answered per input from the cache where it can.

mod answer;
mod embed;
mod follow;
mod forward;
mod semantic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::accounting::Account;
use crate::auth::{Authenticator, Tenant, UpstreamAuth};
use crate::body::{Body, boxed};
use crate::cache::controls::Controls;
use crate::cache::{Cache, Outcome};
use crate::chat::{Call, Dialect, Endpoint};
use crate::clock::Clock;
use crate::compress::Compressor;
use crate::config::Config;
use crate::dialect;
use crate::error::ProxyError;
use crate::fleet::{FleetStats, Sources};
use crate::headers::Labels;
use crate::ratelimit::RateLimiter;
use crate::reply;
use crate::savings::Ledger;
use crate::semantic::SemanticCache;
use crate::semantic::calibration::Calibration;
use crate::store::Store;
use crate::tasks::Tasks;
use crate::upstream::{OnFailure, UpstreamClient, root_store};

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the pipeline shares across requests.
pub struct Proxy {
    config: Arc<Config>,
    clients: Vec<UpstreamClient>,
    auth: Authenticator,
    limiter: RateLimiter,
    cache: Arc<Cache>,
    semantic: Option<Arc<SemanticCache>>,
    /// Verified outcomes of semantic candidates, shared through the store.
    calibration: Arc<Calibration>,
    ledger: Arc<Ledger>,
    compressor: Compressor,
    /// The totals every instance on a shared store reports alike.
    fleet: Option<FleetStats>,
    /// The wall clock every date and age is read from.
    clock: Clock,
    /// The tasks the server serves connections on, and leaders' answers go on in after their
    /// client left; shutdown cuts them.
    tasks: Tasks,
}

/// When a request arrived, and whether a savings record describes it: the door makes one,
/// `account` raises the flag, and the door counts in the metrics only the requests no record
/// counts.
#[derive(Clone)]
pub(crate) struct Arrival {
    pub(crate) at: Instant,
    accounted: Arc<AtomicBool>,
}

impl Arrival {
    pub(crate) fn now() -> Arrival {
        Arrival {
            at: Instant::now(),
            accounted: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn is_accounted(&self) -> bool {
        self.accounted.load(Ordering::Relaxed)
    }
}

/// An intercepted call on its way through the stages: who sent it and where it goes
/// (`exchange`), how the cache treats it (`plan`, once made), its savings record and the
/// labels its response gets.
struct Context<P> {
    exchange: Exchange,
    plan: P,
    account: Account,
    labels: Labels,
}

impl Context<()> {
    fn with_plan<P>(self, plan: P) -> Context<P> {
        Context {
            exchange: self.exchange,
            plan,
            account: self.account,
            labels: self.labels,
        }
    }
}

/// One request on its way through the stages.
struct Exchange {
    dialect: Dialect,
    parts: Parts,
    upstream: usize,
    tenant: Tenant,
    upstream_auth: UpstreamAuth,
    arrival: Arrival,
}

impl Proxy {
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        clock: Clock,
    ) -> Result<Self, rustls::Error> {
        let cache = Cache::new(&config.cache, store, clock.clone());
        let ledger = Ledger::with_options(
            cache.store().clone(),
            config.savings.pricing.clone(),
            config.savings.ledger,
        );
        let roots = Arc::new(root_store());
        let metrics = ledger.metrics_hooks().clone();
        let on_failure: OnFailure =
            Arc::new(move |upstream, kind| metrics.upstream_error(upstream, kind));
        let clients = config
            .upstreams
            .iter()
            .map(|u| UpstreamClient::new(u, roots.clone(), on_failure.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Proxy {
            auth: Authenticator::new(&config.keys),
            limiter: RateLimiter::with_store(config.rate_limit, &config.keys, cache.store()),
            semantic: SemanticCache::load(&config.semantic, cache.clone()),
            calibration: Arc::new(Calibration::new(
                &config.semantic,
                Some(cache.store().clone()),
                clock.now_ms(),
                clock.clone(),
            )),
            compressor: Compressor::new(
                config.compression.clone(),
                cache.store().clone(),
                clock.clone(),
            ),
            fleet: FleetStats::new(cache.store()),
            ledger,
            cache,
            clients,
            config,
            clock,
            tasks: Tasks::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The wall clock every date and age is read from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The tasks connections are served on, which shutdown cuts.
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn semantic(&self) -> Option<&Arc<SemanticCache>> {
        self.semantic.as_ref()
    }

    pub fn calibration(&self) -> &Arc<Calibration> {
        &self.calibration
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn fleet(&self) -> Option<&FleetStats> {
        self.fleet.as_ref()
    }

    /// This instance's statistics counters.
    pub fn stat_sources(&self) -> Sources<'_> {
        Sources {
            cache: self.cache.stats(),
            semantic: self.semantic.as_deref(),
            compressor: &self.compressor,
        }
    }

    /// Publishes this instance's counters to the shared totals; called each second and at
    /// shutdown. A failure is the store's to log; the counts wait for the next publish.
    pub async fn publish_stats(&self) {
        if let Some(fleet) = &self.fleet {
            let _ = fleet.publish(self.stat_sources()).await;
        }
    }

    /// An intercepted call: decoded, checked, then forwarded.
    pub(crate) async fn intercept(
        &self,
        dialect: Dialect,
        endpoint: Endpoint,
        request: Request<Incoming>,
        arrival: &Arrival,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(body, &parts.headers, self.config.max_body_bytes).await?;
        let arrival = arrival.clone();
        match dialect::decode(dialect, endpoint, &bytes) {
            Ok(call) => {
                self.intercept_call(dialect, parts, call, bytes, arrival)
                    .await
            }
            // JSON thrifty cannot read as a call is the upstream's to judge, in its own words.
            Err(refusal) => match dialect::json_model(&bytes) {
                Some(model) => {
                    tracing::Span::current().record("model", model.as_str());
                    let exchange = self.admit(dialect, parts, Some(&model), arrival).await?;
                    self.undecoded(exchange, endpoint, bytes, &model, &refusal)
                        .await
                }
                None => Err(refusal),
            },
        }
    }

    /// An intercepted call whose body has been read; the admin API's warm-up enters here.
    pub(crate) async fn intercept_bytes(
        &self,
        dialect: Dialect,
        endpoint: Endpoint,
        parts: Parts,
        bytes: Bytes,
    ) -> Result<Response<Body>, ProxyError> {
        let call = dialect::decode(dialect, endpoint, &bytes)?;
        self.intercept_call(dialect, parts, call, bytes, Arrival::now())
            .await
    }

    /// A decoded call through the stages.
    async fn intercept_call(
        &self,
        dialect: Dialect,
        parts: Parts,
        call: Call,
        bytes: Bytes,
        arrival: Arrival,
    ) -> Result<Response<Body>, ProxyError> {
        tracing::Span::current().record("model", call.model());
        let exchange = self
            .admit(dialect, parts, Some(call.model()), arrival)
            .await?;
        let controls = Controls::from_headers(&exchange.parts.headers)?;
        let account = self.account(&exchange, call.endpoint(), call.model());
        let cx = Context {
            exchange,
            plan: (),
            account,
            labels: Labels::default(),
        };
        match call {
            Call::Embedding(request) => self.embed(cx, request, bytes, controls).await,
            call => self.answer(cx, call, bytes, controls).await,
        }
    }

    /// Counts a call's cache outcome and names it in the request's span.
    fn counted(&self, tenant: &str, namespace: Option<&str>, model: &str, outcome: Outcome) {
        self.cache.stats().record(tenant, namespace, model, outcome);
        tracing::Span::current().record("cache", outcome.as_str());
    }

    /// The savings record of an intercepted call, filled in as the call goes on. Every path
    /// from here on ends in one of its recording methods (`failed` for an error).
    fn account(&self, exchange: &Exchange, endpoint: Endpoint, model: &str) -> Account {
        exchange.arrival.accounted.store(true, Ordering::Relaxed);
        Account::new(
            self.ledger.clone(),
            exchange.arrival.at,
            self.clock.now_ms(),
            &exchange.tenant,
            &exchange.parts.headers,
            exchange.dialect,
            endpoint,
            model,
            &self.config.upstreams[exchange.upstream].name,
        )
    }

    /// `/readyz`: ready when the store answers; degraded (still serving, uncached) when not.
    /// `rate_limits` says whether limits are shared across instances or, with the shared
    /// store unreachable, this instance's own.
    pub(crate) async fn readiness(&self) -> Response<Body> {
        let store = self.cache.store();
        let ping = store.ping().await;
        let rate_limits = self.limiter.mode(ping.is_ok());
        match ping {
            Ok(()) => reply::json(
                StatusCode::OK,
                &json!({"status": "ready", "store": store.kind(), "rate_limits": rate_limits}),
            ),
            Err(e) => reply::json(
                StatusCode::OK,
                &json!({"status": "degraded", "store": store.kind(), "rate_limits": rate_limits, "error": e.to_string()}),
            ),
        }
    }

    /// Any other path of a dialect's API: the body streams through untouched.
    pub(crate) async fn pass_through(
        &self,
        dialect: Dialect,
        request: Request<Incoming>,
        arrival: &Arrival,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        let exchange = self.admit(dialect, parts, None, arrival.clone()).await?;
        self.forward_untouched(&exchange, boxed(body)).await
    }

    /// Selects the upstream, authenticates and applies the rate limit.
    async fn admit(
        &self,
        dialect: Dialect,
        parts: Parts,
        model: Option<&str>,
        arrival: Arrival,
    ) -> Result<Exchange, ProxyError> {
        let upstream = self.select_upstream(dialect, model);
        let target = &self.config.upstreams[upstream];
        let span = tracing::Span::current();
        span.record("upstream", target.name.as_str());
        let (tenant, upstream_auth) = self.auth.authenticate(&parts.headers, target)?;
        span.record("tenant", tenant.id.as_str());
        self.limiter.check(&tenant).await?;
        Ok(Exchange {
            dialect,
            parts,
            upstream,
            tenant,
            upstream_auth,
            arrival,
        })
    }

    /// The first route whose glob matches the model, else the dialect's default upstream.
    fn select_upstream(&self, dialect: Dialect, model: Option<&str>) -> usize {
        let routing = &self.config.routing;
        let routed = model.and_then(|model| {
            routing
                .routes
                .iter()
                .find(|(glob, _)| glob.is_match(model))
                .map(|(_, index)| *index)
        });
        routed.unwrap_or_else(|| routing.default_for(dialect))
    }
}

/// Reads a whole request body within the size limit and the read timeout.
pub(crate) async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ProxyError::bad_request("timed out reading the request body"))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ProxyError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}
