//! The life of a request, top to bottom. This file orders the stages and nothing else.
//!
//! ```text
//!  downstream ──► route ──► read body ──► decode (dialect) ──► select upstream
//!            ──► authenticate ──► rate limit ──► forward ──► upstream
//!  downstream ◄── response head + x-thrifty-* ◄── stream body (idle timeout) ◄──┘
//! ```
//!
//! Passthrough routes skip reading and decoding: the body streams through untouched.
//! Stages never call each other; each is a function or object this file calls in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::{Instrument, field};

use crate::accounting::Account;
use crate::auth::{Authenticator, Tenant, UpstreamAuth};
use crate::body::{Body, Rewrite, RewriteFn, boxed, full};
use crate::cache::controls::Controls;
use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;
use crate::cache::record::{OnStored, Recording, recorder};
use crate::cache::{Cache, Lookup, Outcome, Plan, embedding, replay};
use crate::chat::{Call, Dialect, EmbeddingRequest, Endpoint};
use crate::compress::conversations::Conversation;
use crate::compress::{self, Compressor, Force};
use crate::config::{Config, Strategy, Upstream};
use crate::dialect::embedding as embedding_wire;
use crate::dialect::sse::UsageStripper;
use crate::error::ProxyError;
use crate::ratelimit::RateLimiter;
use crate::router::{self, Route};
use crate::savings::{self as ledger, Ledger};
use crate::semantic::{self, SemanticCache};
use crate::store::Store;
use crate::summarizer::UpstreamSummarizer;
use crate::upstream::{UpstreamClient, root_store};
use crate::{dialect, headers, reply};

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
    ledger: Arc<Ledger>,
    compressor: Compressor,
}

/// A recorded answer to a question that means the same, and the two wordings.
struct SemanticHit {
    entry: Arc<Entry>,
    key: CacheKey,
    similarity: f32,
    asked: String,
    recorded: String,
}

/// What one attempt sent upstream.
struct Sent {
    bytes: Bytes,
    compressed: Option<compress::Outcome>,
    /// Thrifty asked for the stream's usage chunk, which the client did not ask for.
    strips_usage: bool,
}

/// When a request arrived, and whether a savings record will describe it. `handle` puts it
/// in the request's extensions; `admit` reads the time and `account` raises the flag, so that
/// `handle` counts in the metrics only the requests no record counts.
#[derive(Clone)]
struct Arrival {
    at: Instant,
    accounted: Arc<AtomicBool>,
}

/// One request on its way through the stages.
struct Exchange {
    dialect: Dialect,
    parts: Parts,
    upstream: usize,
    tenant: Tenant,
    upstream_auth: UpstreamAuth,
    arrived: Instant,
}

impl Proxy {
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> Result<Self, rustls::Error> {
        let roots = Arc::new(root_store());
        let clients = config
            .upstreams
            .iter()
            .map(|u| UpstreamClient::new(u, roots.clone()))
            .collect::<Result<_, _>>()?;
        let cache = Cache::new(&config.cache, store);
        Ok(Proxy {
            auth: Authenticator::new(&config.keys),
            limiter: RateLimiter::new(config.rate_limit, &config.keys),
            semantic: SemanticCache::load(&config.semantic, cache.clone()),
            compressor: Compressor::new(config.compression.clone(), cache.store().clone()),
            ledger: Ledger::with_options(
                cache.store().clone(),
                config.savings.pricing.clone(),
                config.savings.ledger,
            ),
            cache,
            clients,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
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

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn compressor(&self) -> &Compressor {
        &self.compressor
    }

    /// Serves one request; never fails, errors become responses in the caller's dialect.
    pub async fn handle(&self, mut request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let accounted = Arc::new(AtomicBool::new(false));
        request.extensions_mut().insert(Arrival {
            at: started,
            accounted: accounted.clone(),
        });
        let request_id = request_id(request.headers());
        let route = router::route(request.method(), request.uri().path());
        let span = tracing::info_span!(
            "request",
            id = %request_id,
            dialect = route.dialect().as_str(),
            route = route.name(),
            model = field::Empty,
            upstream = field::Empty,
            tenant = field::Empty,
            cache = field::Empty,
        );
        async move {
            let result = match route {
                Route::Health => Ok(reply::json(StatusCode::OK, &json!({"status": "ok"}))),
                Route::Ready => Ok(self.readiness().await),
                Route::Admin => crate::admin::handle(self, request).await,
                Route::Api { dialect, endpoint } => {
                    self.intercept(dialect, endpoint, request).await
                }
                Route::Passthrough { dialect } => self.pass_through(dialect, request).await,
                Route::NotFound => Err(ProxyError::NotFound(format!(
                    "unknown path {}: thrifty serves /v1/* and /api/*",
                    request.uri().path()
                ))),
            };
            let metrics = self.ledger.metrics_hooks();
            let mut response = result.unwrap_or_else(|e| {
                if e.fault() != crate::error::Fault::Downstream {
                    tracing::warn!(error = %e, fault = ?e.fault(), "request failed");
                }
                if matches!(e, ProxyError::RateLimited { .. }) {
                    metrics.rate_limited();
                }
                reply::error(route.dialect(), &e)
            });
            let h = response.headers_mut();
            headers::set(h, "x-request-id", &request_id);
            headers::set(h, "x-thrifty-request-id", &request_id);
            let status = response.status().as_u16();
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            if !accounted.load(Ordering::Relaxed) {
                let outcome = match route {
                    _ if status >= 400 => "error",
                    Route::Passthrough { .. } => "passthrough",
                    _ => "none",
                };
                let dialect = route.dialect().as_str();
                metrics.request(route.name(), dialect, outcome, status, latency_ms);
            }
            tracing::info!(status, latency_ms, "served");
            response
        }
        .instrument(span)
        .await
    }

    /// An intercepted call: decoded, checked, then forwarded.
    async fn intercept(
        &self,
        dialect: Dialect,
        endpoint: Endpoint,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(body, &parts.headers, self.config.max_body_bytes).await?;
        self.intercept_bytes(dialect, endpoint, parts, bytes).await
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
        tracing::Span::current().record("model", call.model());
        let exchange = self.admit(dialect, parts, Some(&call))?;
        let controls = Controls::from_headers(&exchange.parts.headers)?;
        match call {
            Call::Embedding(request) => self.embed(exchange, request, bytes, controls).await,
            call => self.answer(exchange, call, bytes, controls).await,
        }
    }

    /// Chat and completion calls: exact cache lookup, then upstream, recording the answer.
    async fn answer(
        &self,
        exchange: Exchange,
        call: Call,
        bytes: Bytes,
        controls: Controls,
    ) -> Result<Response<Body>, ProxyError> {
        let upstream = &self.config.upstreams[exchange.upstream].name;
        let plan = self.cache.plan(
            exchange.dialect,
            upstream,
            &exchange.tenant.id,
            &call,
            controls,
        );
        let stats = self.cache.stats();
        let namespace = plan.controls.namespace.clone();
        let mut account = self.account(&exchange, call.endpoint(), call.model());
        let (outcome, flight) = match self.cache.lookup(&plan, &call).await {
            Lookup::Hit { entry, key } => {
                stats.record(
                    &plan.tenant,
                    namespace.as_deref(),
                    &plan.model,
                    Outcome::Hit,
                );
                tracing::Span::current().record("cache", Outcome::Hit.as_str());
                let mut response = replay::respond(exchange.dialect, &call, &entry, &key);
                account.hit(
                    ledger::Outcome::ExactHit,
                    exchange.dialect,
                    &entry,
                    &mut response,
                );
                return Ok(response);
            }
            Lookup::Miss { outcome, flight } => (outcome, flight),
        };
        let (semantic_hit, query) = self.semantic_stage(&plan, &call, upstream).await;
        if semantic_hit.is_some() || query.is_some() {
            account.embedded();
        }
        if let Some(SemanticHit {
            entry,
            key,
            similarity,
            asked,
            recorded,
        }) = semantic_hit
        {
            stats.record(
                &plan.tenant,
                namespace.as_deref(),
                &plan.model,
                Outcome::SemanticHit,
            );
            tracing::Span::current().record("cache", Outcome::SemanticHit.as_str());
            let mut response = replay::respond(exchange.dialect, &call, &entry, &key);
            let h = response.headers_mut();
            headers::set(h, "x-thrifty-cache", Outcome::SemanticHit.as_str());
            headers::set(h, "x-thrifty-similarity", &format!("{similarity:.4}"));
            account.reworded(self.compressor.counter(), &asked, &recorded);
            account.hit(
                ledger::Outcome::SemanticHit,
                exchange.dialect,
                &entry,
                &mut response,
            );
            return Ok(response);
        }
        stats.record(&plan.tenant, namespace.as_deref(), &plan.model, outcome);
        tracing::Span::current().record("cache", outcome.as_str());
        let key = plan.key.clone();
        let dialect = exchange.dialect;
        let call = Arc::new(call);
        account.estimate_from(call.clone(), self.compressor.counter());
        let (mut response, sent) = match self
            .upstream_stage(&exchange, &call, bytes, &mut account)
            .await
        {
            Ok(answered) => answered,
            Err(e) => return Err(account.failed(e)),
        };
        if let Some(outcome) = &sent.compressed {
            let h = response.headers_mut();
            headers::set(h, "x-thrifty-compression", &outcome.header_value());
            account.compressed_headers(&mut response);
        }
        let billed = match outcome {
            Outcome::Miss => ledger::Outcome::Miss,
            _ => ledger::Outcome::Bypass,
        };
        let mut response = account.upstream(billed, dialect, response);
        let h = response.headers_mut();
        headers::set(h, "x-thrifty-cache", outcome.as_str());
        if let Some(key) = &key {
            headers::set(h, "x-thrifty-cache-key", key.short());
        }
        match flight {
            Some(flight) if response.status().is_success() => {
                let streamed = dialect::stream::is_stream(response.headers());
                let on_stored = match (&self.semantic, query) {
                    (Some(semantic), Some(query)) => {
                        let semantic = semantic.clone();
                        let remember: OnStored = Box::new(move |key, ttl| {
                            Box::pin(async move { semantic.remember(query, &key, ttl).await })
                        });
                        Some(remember)
                    }
                    _ => None,
                };
                let recording = Recording {
                    flight,
                    plan,
                    call,
                    streamed,
                    compressed_away: sent
                        .compressed
                        .as_ref()
                        .map_or(0, |o| o.before.saturating_sub(o.after) as u64),
                    on_stored,
                };
                let response = response.map(|body| recorder(body, recording).boxed_unsync());
                Ok(strip_usage(response, sent.strips_usage))
            }
            _ => Ok(strip_usage(response, sent.strips_usage)),
        }
    }

    /// What goes upstream for a chat or completion miss, and the one retry after the
    /// upstream answered that the prompt exceeds the model's context window.
    async fn upstream_stage(
        &self,
        exchange: &Exchange,
        call: &Call,
        bytes: Bytes,
        account: &mut Account,
    ) -> Result<(Response<Body>, Sent), ProxyError> {
        let sent = self.outbound(exchange, call, bytes, false, account).await;
        account.sending();
        let response = self
            .forward(exchange, full(sent.bytes.clone()), true)
            .await?;
        if !self.may_retry(exchange, call, &response) {
            return Ok((response, sent));
        }
        let (head, body) = response.into_parts();
        let raw = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return Err(ProxyError::UpstreamUnavailable {
                    upstream: self.config.upstreams[exchange.upstream].name.clone(),
                    reason: format!("error answer could not be read: {e}"),
                });
            }
        };
        let original = Response::from_parts(head, full(raw.clone()));
        if !dialect::is_context_overflow(&raw) {
            return Ok((original, sent));
        }
        let retry = self
            .outbound(exchange, call, Bytes::new(), true, account)
            .await;
        if retry.compressed.is_none() {
            return Ok((original, sent));
        }
        tracing::info!("context window exceeded: retrying once, compressed harder");
        let response = self
            .forward(exchange, full(retry.bytes.clone()), true)
            .await?;
        Ok((response, retry))
    }

    /// A chat answered with an error that may say the prompt was too long, and which
    /// compression may still help.
    fn may_retry(&self, exchange: &Exchange, call: &Call, response: &Response<Body>) -> bool {
        let status = response.status();
        matches!(call, Call::Chat(_))
            && self.compressor.config().enabled
            && self.force(exchange) != Force::Off
            && matches!(status.as_u16(), 400 | 413 | 500)
            && !dialect::stream::is_stream(response.headers())
    }

    fn force(&self, exchange: &Exchange) -> Force {
        Force::from_header(
            exchange
                .parts
                .headers
                .get("x-thrifty-compression")
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// The request body sent upstream: the client's call, condensed when it is overlong
    /// (harder on the retry), and asking for the stream usage the ledger needs. The cache
    /// key was taken from the client's own call, so hits do not depend on any of this.
    async fn outbound(
        &self,
        exchange: &Exchange,
        call: &Call,
        bytes: Bytes,
        harder: bool,
        account: &mut Account,
    ) -> Sent {
        let dialect = exchange.dialect;
        let mut changed = None;
        let mut compressed = None;
        let compressing = self.compressor.config().enabled && self.force(exchange) != Force::Off;
        if let (Call::Chat(chat), true) = (call, compressing) {
            let mut chat = chat.clone();
            let output = dialect::max_output_tokens(dialect, call);
            let summarizer = self.summarizer(exchange);
            let scribe = summarizer.as_ref().map(|s| s as &dyn compress::Summarizer);
            let outcome = if harder {
                self.compressor.harder(&mut chat, output, scribe).await
            } else {
                let force = self.force(exchange);
                self.compressor
                    .compress(&mut chat, output, force, scribe)
                    .await
            };
            if let Some(summarizer) = &summarizer {
                let spent = summarizer.spent();
                if spent.total() > 0 {
                    account.overhead(spent, summarizer.model);
                }
            }
            if let Some(outcome) = outcome {
                account.compressed(outcome.before.saturating_sub(outcome.after) as u64);
                compressed = Some(outcome);
                changed = Some(Call::Chat(chat));
            }
        }
        let strips_usage =
            self.config.savings.stream_usage && dialect::lacks_stream_usage(dialect, call);
        if strips_usage {
            dialect::request_stream_usage(changed.get_or_insert_with(|| call.clone()));
        }
        Sent {
            bytes: changed.map_or(bytes, |c| dialect::encode(dialect, &c)),
            compressed,
            strips_usage,
        }
    }

    /// The summarize strategy's model, routed like any request for it. It authenticates
    /// with its upstream's configured key, or with the client's own credentials only when
    /// it shares the client's upstream in pass-through mode.
    fn summarizer<'a>(&'a self, exchange: &'a Exchange) -> Option<UpstreamSummarizer<'a>> {
        let config = self.compressor.config();
        if config.strategy != Strategy::Summarize {
            return None;
        }
        let model = config.summarizer_model.as_deref()?;
        let index = self.select_upstream(Dialect::OpenAi, Some(model));
        let upstream = &self.config.upstreams[index];
        let authorization = match &upstream.api_key {
            Some(key) => HeaderValue::from_str(&format!("Bearer {}", key.expose())).ok(),
            None if index == exchange.upstream
                && exchange.upstream_auth == UpstreamAuth::PassThrough =>
            {
                exchange.parts.headers.get(AUTHORIZATION).cloned()
            }
            None => None,
        }
        .map(|mut value| {
            value.set_sensitive(true);
            value
        });
        let tenant = &exchange.tenant.id;
        let mut summarizer =
            UpstreamSummarizer::new(model, upstream, &self.clients[index], authorization, tenant);
        let named = exchange
            .parts
            .headers
            .get("x-thrifty-chat-id")
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok());
        summarizer.conversation = Conversation::named(named, tenant);
        Some(summarizer)
    }

    /// The savings record of an intercepted call, filled in as the call goes on. Every path
    /// from here on ends in one of its recording methods (`failed` for an error).
    fn account(&self, exchange: &Exchange, endpoint: Endpoint, model: &str) -> Account {
        if let Some(arrival) = exchange.parts.extensions.get::<Arrival>() {
            arrival.accounted.store(true, Ordering::Relaxed);
        }
        Account::new(
            self.ledger.clone(),
            exchange.arrived,
            &exchange.tenant,
            &exchange.parts.headers,
            exchange.dialect,
            endpoint,
            model,
            &self.config.upstreams[exchange.upstream].name,
        )
    }

    /// The semantic stage: a recorded answer to a question that means the same, in the same
    /// context, or the embedded question to remember once this call's answer is recorded.
    async fn semantic_stage(
        &self,
        plan: &Plan,
        call: &Call,
        upstream: &str,
    ) -> (Option<SemanticHit>, Option<semantic::Query>) {
        let (Some(semantic), Call::Chat(chat)) = (&self.semantic, call) else {
            return (None, None);
        };
        if !plan.controls.semantic || plan.key.is_none() {
            return (None, None);
        }
        let Some(query) = semantic
            .prepare(&plan.scope, plan.dialect, upstream, chat)
            .await
        else {
            return (None, None);
        };
        if plan.mode.read() {
            if let Some(hit) = semantic.lookup(&query, plan.controls.semantic_threshold) {
                match self.cache.read(plan, &hit.answer, call).await {
                    Some(entry) => {
                        let hit = SemanticHit {
                            entry,
                            key: hit.answer,
                            similarity: hit.similarity,
                            asked: query.text,
                            recorded: hit.question,
                        };
                        return (Some(hit), None);
                    }
                    None if self.cache.exists(&hit.answer).await == Some(false) => {
                        semantic.forget(&query.partition, &hit.answer.0).await;
                    }
                    None => {}
                }
            }
        }
        (None, Some(query))
    }

    /// Embedding calls: cached inputs are answered from the store, only the rest go upstream.
    async fn embed(
        &self,
        exchange: Exchange,
        request: EmbeddingRequest,
        bytes: Bytes,
        controls: Controls,
    ) -> Result<Response<Body>, ProxyError> {
        let dialect = exchange.dialect;
        let upstream = &self.config.upstreams[exchange.upstream].name;
        let plan =
            self.cache
                .plan_embedding(dialect, upstream, &exchange.tenant.id, &request, &controls);
        let stats = self.cache.stats();
        let mut account = self.account(&exchange, request.endpoint(), &request.model);
        let label = |response: &mut Response<Body>, outcome: Outcome| {
            headers::set(response.headers_mut(), "x-thrifty-cache", outcome.as_str());
            tracing::Span::current().record("cache", outcome.as_str());
            stats.record(
                &plan.tenant,
                plan.namespace.as_deref(),
                &request.model,
                outcome,
            );
        };
        if let Some(outcome) = plan.skipped() {
            account.sending();
            let response = match self.forward(&exchange, full(bytes), true).await {
                Ok(response) => response,
                Err(e) => return Err(account.failed(e)),
            };
            let mut response = account.upstream(ledger::Outcome::Bypass, dialect, response);
            label(&mut response, outcome);
            return Ok(response);
        }
        let cached = self.cache.lookup_embeddings(&plan).await;
        let missing: Vec<usize> = (0..cached.len()).filter(|&i| cached[i].is_none()).collect();
        let cached_tokens: u64 = cached.iter().flatten().map(|e| e.tokens).sum();
        if missing.is_empty() {
            let vectors: Vec<Vec<f64>> = cached.into_iter().flatten().map(|e| e.vector).collect();
            let body = embedding_wire::write_answer(
                dialect,
                &request,
                None,
                &request.model,
                &vectors,
                cached_tokens,
            );
            let mut response = reply::json(StatusCode::OK, &body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(dialect::stream::json_content_type(dialect)),
            );
            label(&mut response, Outcome::Hit);
            let baseline = ledger::Tokens {
                prompt: cached_tokens,
                ..Default::default()
            };
            account.embedding(
                ledger::Outcome::ExactHit,
                200,
                baseline,
                ledger::Tokens::default(),
                &mut response,
            );
            return Ok(response);
        }
        let partial = missing.len() < cached.len();
        let outbound = if partial {
            let sub = embedding::subset(&request, &plan.texts, &missing);
            dialect::encode(dialect, &Call::Embedding(sub))
        } else {
            bytes
        };
        account.sending();
        let response = match self.forward(&exchange, full(outbound), true).await {
            Ok(response) => response,
            Err(e) => return Err(account.failed(e)),
        };
        if !response.status().is_success() {
            let mut response = account.upstream(ledger::Outcome::Miss, dialect, response);
            label(&mut response, Outcome::Miss);
            return Ok(response);
        }
        let (mut head, body) = response.into_parts();
        let raw = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return Err(ProxyError::UpstreamUnavailable {
                    upstream: upstream.clone(),
                    reason: format!("embedding answer could not be read: {e}"),
                });
            }
        };
        let answer: Option<serde_json::Value> = serde_json::from_slice(&raw).ok();
        let vectors = answer
            .as_ref()
            .and_then(|a| embedding_wire::read_answer(dialect, request.legacy, a))
            .filter(|(v, _)| v.len() == missing.len());
        let Some((vectors, tokens)) = vectors else {
            if partial {
                return Err(ProxyError::UpstreamUnavailable {
                    upstream: upstream.clone(),
                    reason: "embedding answer did not hold one vector per input".to_owned(),
                });
            }
            let response = Response::from_parts(head, full(raw));
            let mut response = account.upstream(ledger::Outcome::Miss, dialect, response);
            label(&mut response, Outcome::Miss);
            return Ok(response);
        };
        let billed = ledger::Tokens {
            prompt: tokens,
            ..Default::default()
        };
        let texts: Vec<&str> = missing.iter().map(|&i| plan.texts[i].as_str()).collect();
        let parts = embedding::apportion(tokens, &texts);
        let model = &request.model;
        if !partial {
            self.cache
                .put_embeddings(&plan, model, &missing, vectors, &parts)
                .await;
            let mut response = Response::from_parts(head, full(raw));
            label(&mut response, Outcome::Miss);
            account.embedding(ledger::Outcome::Miss, 200, billed, billed, &mut response);
            return Ok(response);
        }
        let mut fresh = vectors.clone().into_iter();
        let merged: Vec<Vec<f64>> = cached
            .into_iter()
            .map(|c| {
                c.map(|e| e.vector)
                    .or_else(|| fresh.next())
                    .unwrap_or_default()
            })
            .collect();
        self.cache
            .put_embeddings(&plan, model, &missing, vectors, &parts)
            .await;
        let body = embedding_wire::write_answer(
            dialect,
            &request,
            answer.as_ref(),
            model,
            &merged,
            cached_tokens + tokens,
        );
        head.headers.remove(CONTENT_LENGTH);
        let mut response = Response::from_parts(head, full(body.to_string()));
        label(&mut response, Outcome::Miss);
        let baseline = ledger::Tokens {
            prompt: cached_tokens + tokens,
            ..Default::default()
        };
        account.embedding(ledger::Outcome::Miss, 200, baseline, billed, &mut response);
        let hits = format!("{}/{}", merged.len() - missing.len(), merged.len());
        headers::set(response.headers_mut(), "x-thrifty-cache-hits", &hits);
        Ok(response)
    }

    /// `/readyz`: ready when the store answers; degraded (still serving, uncached) when not.
    async fn readiness(&self) -> Response<Body> {
        let store = self.cache.store();
        match store.ping().await {
            Ok(()) => reply::json(
                StatusCode::OK,
                &json!({"status": "ready", "store": store.kind()}),
            ),
            Err(e) => reply::json(
                StatusCode::OK,
                &json!({"status": "degraded", "store": store.kind(), "error": e.to_string()}),
            ),
        }
    }

    /// Any other path of a dialect's API: the body streams through untouched.
    async fn pass_through(
        &self,
        dialect: Dialect,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        let exchange = self.admit(dialect, parts, None)?;
        self.forward(&exchange, boxed(body), false).await
    }

    /// Selects the upstream, authenticates and applies the rate limit.
    fn admit(
        &self,
        dialect: Dialect,
        parts: Parts,
        call: Option<&Call>,
    ) -> Result<Exchange, ProxyError> {
        let upstream = self.select_upstream(dialect, call.map(Call::model));
        let target = &self.config.upstreams[upstream];
        let span = tracing::Span::current();
        span.record("upstream", target.name.as_str());
        let (tenant, upstream_auth) = self.auth.authenticate(&parts.headers, target)?;
        span.record("tenant", tenant.id.as_str());
        self.limiter.check(&tenant)?;
        let arrived = parts
            .extensions
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.at);
        Ok(Exchange {
            dialect,
            parts,
            upstream,
            tenant,
            upstream_auth,
            arrived,
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
        routed.unwrap_or(match dialect {
            Dialect::OpenAi => routing.default_openai,
            Dialect::Ollama => routing.default_ollama,
        })
    }

    /// Sends the exchange upstream and turns the answer into the downstream response.
    async fn forward(
        &self,
        exchange: &Exchange,
        body: Body,
        intercepted: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let upstream: &Upstream = &self.config.upstreams[exchange.upstream];
        let parts = &exchange.parts;
        let root = upstream.root_for(exchange.dialect).ok_or_else(|| {
            ProxyError::bad_request(format!(
                "this request is routed to upstream '{}', which does not serve the {} API",
                upstream.name,
                exchange.dialect.as_str()
            ))
        })?;
        let path = parts.uri.path();
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        // Paths outside the dialect's prefix (Ollama's `GET /` probe) go to the server root.
        let uri = match router::strip_prefix(path, dialect::prefix(exchange.dialect)) {
            Some(rest) => format!("{root}{rest}{query}"),
            None => format!("{}{path}{query}", upstream.base_url),
        };
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(&uri)
            .body(body)
            .map_err(|e| ProxyError::Internal(format!("cannot build upstream request: {e}")))?;
        let h = request.headers_mut();
        *h = headers::upstream_request(&parts.headers);
        if intercepted {
            // Thrifty reads intercepted answers, so it asks for them uncompressed.
            h.remove(ACCEPT_ENCODING);
            h.remove(CONTENT_LENGTH);
        }
        if exchange.upstream_auth == UpstreamAuth::Inject {
            if let Some(key) = &upstream.api_key {
                let value =
                    HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                        ProxyError::Internal("upstream key is not header text".to_owned())
                    })?;
                h.insert(AUTHORIZATION, value);
            }
        }
        let started = Instant::now();
        let metrics = self.ledger.metrics_hooks();
        let response = match self.clients[exchange.upstream]
            .send(upstream, request)
            .await
        {
            Ok(response) => response,
            Err(e) => {
                let kind = match e {
                    ProxyError::UpstreamTimeout { .. } => "timeout",
                    _ => "unreachable",
                };
                metrics.upstream_error(&upstream.name, kind);
                return Err(e);
            }
        };
        match response.status().as_u16() {
            429 => metrics.upstream_error(&upstream.name, "rate_limited"),
            500.. => metrics.upstream_error(&upstream.name, "server_error"),
            _ => {}
        }
        tracing::debug!(
            upstream_ms = started.elapsed().as_secs_f64() * 1000.0,
            "upstream answered"
        );
        let (mut head, body) = response.into_parts();
        head.headers = headers::downstream_response(&head.headers);
        headers::set(&mut head.headers, "x-thrifty-upstream", &upstream.name);
        Ok(Response::from_parts(head, body))
    }
}

/// Takes the usage thrifty asked for back out of a stream whose client did not ask for it.
fn strip_usage(response: Response<Body>, strips: bool) -> Response<Body> {
    if !strips || !dialect::stream::is_stream(response.headers()) {
        return response;
    }
    let (mut head, body) = response.into_parts();
    head.headers.remove(CONTENT_LENGTH);
    let mut stripper = UsageStripper::default();
    let rewrite: RewriteFn = Box::new(move |piece| match piece {
        Some(piece) => stripper.push(piece),
        None => stripper.finish(),
    });
    Response::from_parts(head, Rewrite::new(body, rewrite).boxed_unsync())
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

/// The client's `x-request-id` when it is reasonable header text, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}
