//! The upstream client: a pooled hyper-util client per upstream over rustls
//! (webpki and native roots, HTTP/1.1 and HTTP/2 by ALPN) with connect,
//! first-byte and idle-between-chunks timeouts. Every call through it, the pipeline's and the
//! summarizer's, counts its failures in the metrics.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use crate::body::{Body, IdleTimeout, boxed};
use crate::config::Upstream;
use crate::error::ProxyError;
/// Told of every failed upstream call: the upstream's name and the kind of failure
/// (`rate_limited`, `server_error`, `timeout`, …), for the metrics.
pub type OnFailure = Arc<dyn Fn(&str, &str) + Send + Sync>;

pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    on_failure: OnFailure,
}

/// Roots trusted for upstream TLS: Mozilla's webpki set plus the system's own.
pub fn root_store() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    roots
}

impl UpstreamClient {
    pub fn new(
        upstream: &Upstream,
        roots: Arc<RootCertStore>,
        on_failure: OnFailure,
    ) -> Result<Self, rustls::Error> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(upstream.connect_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(UpstreamClient { client, on_failure })
    }

    /// Sends a request and waits for the response head within the first-byte timeout.
    /// The response body fails if the upstream goes quiet for the idle timeout. Failures
    /// are counted by kind: unreachable, timeout, and 429 or 5xx answers.
    pub async fn send(
        &self,
        upstream: &Upstream,
        request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let sent = tokio::time::timeout(upstream.first_byte_timeout, self.client.request(request));
        let (kind, error) = match sent.await {
            Ok(Ok(response)) => {
                match response.status().as_u16() {
                    429 => (self.on_failure)(&upstream.name, "rate_limited"),
                    500.. => (self.on_failure)(&upstream.name, "server_error"),
                    _ => {}
                }
                return Ok(response
                    .map(|body: Incoming| boxed(IdleTimeout::new(body, upstream.idle_timeout))));
            }
            Ok(Err(e)) => (
                "unreachable",
                ProxyError::UpstreamUnavailable {
                    upstream: upstream.name.clone(),
                    reason: describe(&e),
                },
            ),
            Err(_) => (
                "timeout",
                ProxyError::UpstreamTimeout {
                    upstream: upstream.name.clone(),
                    after: upstream.first_byte_timeout,
                },
            ),
        };
        (self.on_failure)(&upstream.name, kind);
        Err(error)
    }
}

/// The innermost cause of a client error, which is the readable one.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    if error.is_connect() {
        format!("connection failed: {source}")
    } else {
        source.to_string()
    }
}
