//! `ProxyError`: what can go wrong with a request, grouped by whose fault it is.
//!
//! The error only says what happened; `dialect` renders it in the caller's wire format.

use std::time::Duration;

use http::StatusCode;

/// Whose fault an error is, in pingora's sense: downstream is the client, upstream the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("rate limit reached for {tenant}: {limit} requests per minute")]
    RateLimited {
        tenant: String,
        limit: u32,
        retry_after: Duration,
        /// Until the bucket is full again.
        reset: Duration,
    },
    #[error("upstream {upstream} is unreachable: {reason}")]
    UpstreamUnavailable { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer within {after:?}")]
    UpstreamTimeout { upstream: String, after: Duration },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ProxyError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn missing_field(field: &'static str) -> Self {
        ProxyError::BadRequest {
            message: format!("missing required parameter: '{field}'"),
            param: Some(field),
        }
    }

    pub fn invalid_field(field: &'static str, expected: &str) -> Self {
        ProxyError::BadRequest {
            message: format!("invalid type for '{field}': expected {expected}"),
            param: Some(field),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::Unauthorized(_)
            | ProxyError::NotFound(_)
            | ProxyError::RateLimited { .. } => Fault::Downstream,
            ProxyError::UpstreamUnavailable { .. } | ProxyError::UpstreamTimeout { .. } => {
                Fault::Upstream
            }
            ProxyError::Internal(_) => Fault::Internal,
        }
    }

    /// OpenAI's `type` field for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::NotFound(_) => "invalid_request_error",
            ProxyError::Unauthorized(_) => "authentication_error",
            ProxyError::RateLimited { .. } => "requests",
            ProxyError::UpstreamUnavailable { .. } | ProxyError::UpstreamTimeout { .. } => {
                "upstream_error"
            }
            ProxyError::Internal(_) => "server_error",
        }
    }

    /// OpenAI's `code` field for this error.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            ProxyError::PayloadTooLarge { .. } => Some("request_too_large"),
            ProxyError::Unauthorized(_) => Some("invalid_api_key"),
            ProxyError::NotFound(_) => Some("not_found"),
            ProxyError::RateLimited { .. } => Some("rate_limit_exceeded"),
            ProxyError::UpstreamUnavailable { .. } => Some("upstream_unavailable"),
            ProxyError::UpstreamTimeout { .. } => Some("upstream_timeout"),
            ProxyError::BadRequest { .. } | ProxyError::Internal(_) => None,
        }
    }

    pub fn param(&self) -> Option<&'static str> {
        match self {
            ProxyError::BadRequest { param, .. } => *param,
            _ => None,
        }
    }
}
