//! Maps a request's method and path to a `Route`; knows nothing of bodies.

use http::Method;

use crate::chat::{Dialect, Endpoint};
use crate::dialect;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: the process is alive.
    Health,
    /// `GET /readyz`: config loaded and stores reachable.
    Ready,
    /// An intercepted call that goes through every pipeline stage.
    Api {
        dialect: Dialect,
        endpoint: Endpoint,
    },
    /// Any other path of a dialect's API, forwarded untouched.
    Passthrough {
        dialect: Dialect,
    },
    /// `/admin/*`, `/dashboard`, `/metrics`: thrifty's own management API.
    Admin,
    NotFound,
}

impl Route {
    /// The dialect errors on this route are rendered in.
    pub fn dialect(&self) -> Dialect {
        match self {
            Route::Api { dialect, .. } | Route::Passthrough { dialect } => *dialect,
            _ => Dialect::OpenAi,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Api { endpoint, .. } => endpoint.as_str(),
            Route::Passthrough { .. } => "passthrough",
            Route::Admin => "admin",
            Route::NotFound => "not_found",
        }
    }
}

pub fn route(method: &Method, path: &str) -> Route {
    match (method, path) {
        (&Method::GET, "/healthz") => return Route::Health,
        (&Method::GET, "/readyz") => return Route::Ready,
        // Ollama clients probe the server root ("Ollama is running").
        (&Method::GET | &Method::HEAD, "/") => {
            return Route::Passthrough {
                dialect: Dialect::Ollama,
            };
        }
        _ => {}
    }
    if strip_prefix(path, "/admin").is_some() || path == "/dashboard" || path == "/metrics" {
        return Route::Admin;
    }
    for dialect in [Dialect::OpenAi, Dialect::Ollama] {
        let Some(rest) = strip_prefix(path, dialect::prefix(dialect)) else {
            continue;
        };
        if method == Method::POST {
            if let Some(endpoint) = dialect::endpoint_for(dialect, rest) {
                return Route::Api { dialect, endpoint };
            }
        }
        return Route::Passthrough { dialect };
    }
    Route::NotFound
}

/// The path after `prefix`, when `prefix` is a whole leading segment.
pub fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercepted_paths_need_post() {
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions"),
            Route::Api {
                dialect: Dialect::OpenAi,
                endpoint: Endpoint::Chat
            }
        );
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions"),
            Route::Passthrough {
                dialect: Dialect::OpenAi
            }
        );
        assert_eq!(
            route(&Method::POST, "/api/embeddings"),
            Route::Api {
                dialect: Dialect::Ollama,
                endpoint: Endpoint::LegacyEmbedding
            }
        );
    }

    #[test]
    fn other_paths_pass_through_or_are_not_found() {
        assert_eq!(
            route(&Method::GET, "/v1/models"),
            Route::Passthrough {
                dialect: Dialect::OpenAi
            }
        );
        assert_eq!(
            route(&Method::POST, "/api/pull"),
            Route::Passthrough {
                dialect: Dialect::Ollama
            }
        );
        assert_eq!(route(&Method::GET, "/v1beta/models"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/apix"), Route::NotFound);
    }
}
