//! Builds the responses thrifty answers itself: errors in the caller's dialect, JSON.

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{Body, full};
use crate::chat::Dialect;
use crate::dialect;
use crate::error::ProxyError;
use crate::headers;
use crate::ratelimit::openai_duration;

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Renders an error the way the caller's dialect does, with rate-limit headers on 429.
pub fn error(dialect: Dialect, error: &ProxyError) -> Response<Body> {
    let mut response = Response::new(full(dialect::error_body(dialect, error)));
    *response.status_mut() = error.status();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let ProxyError::RateLimited {
        limit,
        retry_after,
        reset,
        ..
    } = error
    {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        headers::set(h, "x-ratelimit-limit-requests", &limit.to_string());
        headers::set(h, "x-ratelimit-remaining-requests", "0");
        headers::set(h, "x-ratelimit-reset-requests", &openai_duration(*reset));
    }
    response
}
