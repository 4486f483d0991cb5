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
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tracing::{Instrument, field};

use crate::auth::{Authenticator, Tenant, UpstreamAuth};
use crate::body::{Body, boxed, full};
use crate::chat::{Call, Dialect, Endpoint};
use crate::config::{Config, Upstream};
use crate::error::ProxyError;
use crate::ratelimit::RateLimiter;
use crate::router::{self, Route};
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
}

/// One request on its way through the stages.
struct Exchange {
    dialect: Dialect,
    parts: Parts,
    upstream: usize,
    tenant: Tenant,
    upstream_auth: UpstreamAuth,
}

impl Proxy {
    pub fn new(config: Arc<Config>) -> Result<Self, rustls::Error> {
        let roots = Arc::new(root_store());
        let clients = config
            .upstreams
            .iter()
            .map(|u| UpstreamClient::new(u, roots.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Proxy {
            auth: Authenticator::new(&config.keys),
            limiter: RateLimiter::new(config.rate_limit, &config.keys),
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

    /// Serves one request; never fails, errors become responses in the caller's dialect.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
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
        );
        async move {
            let result = match route {
                Route::Health => Ok(reply::json(StatusCode::OK, &json!({"status": "ok"}))),
                Route::Ready => Ok(reply::json(StatusCode::OK, &json!({"status": "ready"}))),
                Route::Api { dialect, endpoint } => {
                    self.intercept(dialect, endpoint, request).await
                }
                Route::Passthrough { dialect } => self.pass_through(dialect, request).await,
                Route::NotFound => Err(ProxyError::NotFound(format!(
                    "unknown path {}: thrifty serves /v1/* and /api/*",
                    request.uri().path()
                ))),
            };
            let mut response = result.unwrap_or_else(|e| {
                if e.fault() != crate::error::Fault::Downstream {
                    tracing::warn!(error = %e, fault = ?e.fault(), "request failed");
                }
                reply::error(route.dialect(), &e)
            });
            let h = response.headers_mut();
            headers::set(h, "x-request-id", &request_id);
            headers::set(h, "x-thrifty-request-id", &request_id);
            tracing::info!(
                status = response.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "served"
            );
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
        let call = dialect::decode(dialect, endpoint, &bytes)?;
        tracing::Span::current().record("model", call.model());
        let exchange = self.admit(dialect, parts, Some(&call))?;
        self.forward(exchange, full(bytes), true).await
    }

    /// Any other path of a dialect's API: the body streams through untouched.
    async fn pass_through(
        &self,
        dialect: Dialect,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        let exchange = self.admit(dialect, parts, None)?;
        self.forward(exchange, boxed(body), false).await
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
        Ok(Exchange {
            dialect,
            parts,
            upstream,
            tenant,
            upstream_auth,
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
        exchange: Exchange,
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
        let rest = router::strip_prefix(path, dialect::prefix(exchange.dialect)).unwrap_or(path);
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let uri = format!("{root}{rest}{query}");
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
        let response = self.clients[exchange.upstream]
            .send(upstream, request)
            .await?;
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

/// Reads a whole request body within the size limit and the read timeout.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ProxyError> {
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
