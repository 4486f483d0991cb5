//! The way upstream: the body sent (condensed when overlong, asking for stream usage), the
//! one harder retry after a context overflow, and the call itself.

use std::time::Instant;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use http::{Request, Response};

use crate::accounting::Account;
use crate::auth::UpstreamAuth;
use crate::body::{Body, Prefix, full, prepend, read_prefix};
use crate::chat::{Call, Dialect, Endpoint};
use crate::compress::conversations::Conversation;
use crate::compress::{self, Force};
use crate::config::{Strategy, Upstream};
use crate::dialect;
use crate::error::ProxyError;
use crate::headers::names;
use crate::headers::{self, Labels};
use crate::router::{self};
use crate::savings::Outcome;
use crate::summarizer::UpstreamSummarizer;

use super::{Exchange, Proxy};

/// The most of an upstream error answer read to see whether it is a context overflow; such
/// errors are a few hundred bytes, and anything longer streams through to the client.
const ERROR_PREFIX: usize = 64 * 1024;

/// How hard a call is condensed: as configured, or harder after the upstream said the
/// prompt exceeds the model's context window.
#[derive(Clone, Copy)]
enum Pressure {
    Usual,
    Harder,
}

/// Whether thrifty reads an upstream answer or passes it through untouched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Read,
    Untouched,
}

/// What one attempt sent upstream.
pub(super) struct Sent {
    pub(super) bytes: Bytes,
    pub(super) compressed: Option<compress::Outcome>,
    /// Thrifty asked for the stream's usage chunk, which the client did not ask for.
    pub(super) strips_usage: bool,
}

impl Proxy {
    /// What goes upstream for a chat or completion miss, and the one retry after the
    /// upstream answered that the prompt exceeds the model's context window.
    pub(super) async fn upstream_stage(
        &self,
        exchange: &Exchange,
        call: &Call,
        bytes: Bytes,
        account: &mut Account,
    ) -> Result<(Response<Body>, Sent), ProxyError> {
        let sent = self
            .outbound(exchange, call, bytes, Pressure::Usual, account)
            .await;
        account.sending();
        let response = self
            .forward_intercepted(exchange, full(sent.bytes.clone()))
            .await?;
        if !self.may_retry(exchange, call, &response) {
            return Ok((response, sent));
        }
        let (head, body) = response.into_parts();
        let raw = match read_prefix(body, ERROR_PREFIX).await {
            Ok(Prefix::Whole(raw)) => raw,
            // An error answer this long is not a context overflow: it streams on, unread.
            Ok(Prefix::Longer(prefix, rest)) => {
                return Ok((Response::from_parts(head, prepend(prefix, rest)), sent));
            }
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
            .outbound(exchange, call, Bytes::new(), Pressure::Harder, account)
            .await;
        if retry.compressed.is_none() {
            return Ok((original, sent));
        }
        tracing::info!("context window exceeded: retrying once, compressed harder");
        let response = self
            .forward_intercepted(exchange, full(retry.bytes.clone()))
            .await?;
        Ok((response, retry))
    }

    /// A JSON body thrifty could not decode as a call of its endpoint: forwarded unchanged,
    /// neither cached nor compressed, so the client gets the upstream's own verdict (or
    /// answer), recorded as a bypass.
    pub(super) async fn undecoded(
        &self,
        exchange: Exchange,
        endpoint: Endpoint,
        bytes: Bytes,
        model: &str,
        refusal: &ProxyError,
    ) -> Result<Response<Body>, ProxyError> {
        tracing::debug!(%refusal, "body not decoded: forwarded as it came");
        let dialect = exchange.dialect;
        let mut account = self.account(&exchange, endpoint, model);
        account.sending();
        let response = match self.forward_intercepted(&exchange, full(bytes)).await {
            Ok(response) => account.upstream(Outcome::Bypass, dialect, response),
            Err(e) => return Err(account.failed(e)),
        };
        let labels = Labels {
            cache: Some(Outcome::Bypass.as_str()),
            ..Labels::default()
        };
        Ok(labels.written(response))
    }

    /// A chat answered with an error that may say the prompt was too long, and which
    /// compression may still help.
    fn may_retry(&self, exchange: &Exchange, call: &Call, response: &Response<Body>) -> bool {
        let status = response.status();
        dialect::whole_conversation(call).is_some()
            && self.compressor.config().enabled
            && self.force(exchange) != Force::Off
            && dialect::may_be_context_overflow(status)
            && !dialect::stream::is_stream(response.headers())
    }

    fn force(&self, exchange: &Exchange) -> Force {
        Force::from_header(
            exchange
                .parts
                .headers
                .get(names::COMPRESSION)
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
        pressure: Pressure,
        account: &mut Account,
    ) -> Sent {
        let dialect = exchange.dialect;
        let mut changed = None;
        let mut compressed = None;
        let compressing = self.compressor.config().enabled && self.force(exchange) != Force::Off;
        let conversation = dialect::whole_conversation(call).filter(|_| compressing);
        if let Some(chat) = conversation {
            let mut chat = chat.clone();
            let output = dialect::max_output_tokens(dialect, call);
            let summarizer = self.summarizer(exchange);
            let scribe = summarizer.as_ref().map(|s| s as &dyn compress::Summarizer);
            let outcome = match pressure {
                Pressure::Harder => self.compressor.harder(&mut chat, output, scribe).await,
                Pressure::Usual => {
                    let force = self.force(exchange);
                    self.compressor
                        .compress(&mut chat, output, force, scribe)
                        .await
                }
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
                changed = Some(call.with_conversation(chat));
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
            .get(names::CHAT_ID)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok());
        summarizer.conversation = Conversation::named(named, tenant);
        Some(summarizer)
    }

    /// Sends an intercepted call upstream: thrifty reads its answer, so it asks for it
    /// uncompressed.
    pub(super) async fn forward_intercepted(
        &self,
        exchange: &Exchange,
        body: Body,
    ) -> Result<Response<Body>, ProxyError> {
        self.forward(exchange, body, Reading::Read).await
    }

    /// Sends a passthrough request upstream; its answer streams back untouched.
    pub(super) async fn forward_untouched(
        &self,
        exchange: &Exchange,
        body: Body,
    ) -> Result<Response<Body>, ProxyError> {
        self.forward(exchange, body, Reading::Untouched).await
    }

    /// Sends the exchange upstream and turns the answer into the downstream response.
    async fn forward(
        &self,
        exchange: &Exchange,
        body: Body,
        reading: Reading,
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
        if reading == Reading::Read {
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
        headers::set(&mut head.headers, names::UPSTREAM, &upstream.name);
        Ok(Response::from_parts(head, body))
    }
}
