//! Builds the responses thrifty answers itself: errors in the caller's dialect, JSON.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{Body, full};
use crate::chat::Dialect;
use crate::dialect;
use crate::error::ProxyError;

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
        dialect::rate_limit_headers(h, *limit, *retry_after, *reset);
    }
    response
}
