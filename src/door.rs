//! The door every request passes: its id and span, the route it takes, errors in the caller's
//! dialect, thrifty's request id on the way out, and the metrics of the requests no savings
//! record counts.

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tracing::{Instrument, field};

use crate::body::Body;
use crate::error::{Fault, ProxyError};
use crate::headers::{self, names};
use crate::pipeline::{Arrival, Proxy};
use crate::router::{self, Route};
use crate::{admin, reply};

/// Serves one request; never fails, errors become responses in the caller's dialect.
pub async fn handle(proxy: &Proxy, request: Request<Incoming>) -> Response<Body> {
    let arrival = Arrival::now();
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
            Route::Ready => Ok(proxy.readiness().await),
            Route::Admin => admin::handle(proxy, request).await,
            Route::Api { dialect, endpoint } => {
                proxy.intercept(dialect, endpoint, request, &arrival).await
            }
            Route::Passthrough { dialect } => proxy.pass_through(dialect, request, &arrival).await,
            Route::NotFound => Err(ProxyError::NotFound(format!(
                "unknown path {}: thrifty serves /v1/* and /api/*",
                request.uri().path()
            ))),
        };
        let metrics = proxy.ledger().metrics_hooks();
        let mut response = result.unwrap_or_else(|e| {
            if e.fault() != Fault::Downstream {
                tracing::warn!(error = %e, fault = ?e.fault(), "request failed");
            }
            if matches!(e, ProxyError::RateLimited { .. }) {
                metrics.rate_limited();
            }
            reply::error(route.dialect(), &e)
        });
        let h = response.headers_mut();
        // The upstream's own id stays, as its support can look it up; only an answer no
        // upstream gave (a hit, thrifty's own refusal) carries thrifty's id there.
        if !h.contains_key(names::REQUEST_ID) {
            headers::set(h, names::REQUEST_ID, &request_id);
        }
        headers::set(h, names::THRIFTY_REQUEST_ID, &request_id);
        let status = response.status().as_u16();
        let latency_ms = arrival.at.elapsed().as_secs_f64() * 1000.0;
        if !arrival.is_accounted() {
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

/// The client's `x-request-id` when it is reasonable header text, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(names::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}
