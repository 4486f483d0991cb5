//! The summarize strategy's model call: the configured summarizer model, reached through
//! thrifty's own upstream routing as an OpenAI-style chat completion (Ollama upstreams
//! answer it on their `/v1`), with the tokens it spent kept for the savings ledger.

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request};
use http_body_util::BodyExt;
use parking_lot::Mutex;

use crate::body::{Body, full};
use crate::chat::{Dialect, Endpoint, Message};
use crate::compress::conversations::Conversation;
use crate::compress::{Summarizer, SummaryFuture};
use crate::config::Upstream;
use crate::dialect::{self, usage};
use crate::savings::Tokens;
use crate::upstream::UpstreamClient;

/// One request's summarizer: where the summarizer model is routed and how it authenticates.
pub struct UpstreamSummarizer<'a> {
    pub model: &'a str,
    pub upstream: &'a Upstream,
    pub client: &'a UpstreamClient,
    /// The upstream's configured key, or the client's own credentials when the summarizer
    /// shares the request's upstream in pass-through mode; never a key meant for another host.
    pub authorization: Option<HeaderValue>,
    /// The tenant the summaries belong to, and the conversation the client named.
    pub tenant: &'a str,
    pub conversation: Option<Conversation>,
    spent: Mutex<Tokens>,
}

impl<'a> UpstreamSummarizer<'a> {
    pub fn new(
        model: &'a str,
        upstream: &'a Upstream,
        client: &'a UpstreamClient,
        authorization: Option<HeaderValue>,
        tenant: &'a str,
    ) -> Self {
        UpstreamSummarizer {
            model,
            upstream,
            client,
            authorization,
            tenant,
            conversation: None,
            spent: Mutex::new(Tokens::default()),
        }
    }

    /// The tokens every call so far cost, as the summarizer's upstream reported them.
    pub fn spent(&self) -> Tokens {
        *self.spent.lock()
    }

    fn request(&self, prompt: &[Message], max_tokens: u64) -> Result<Request<Body>, String> {
        let root = self.upstream.root_for(Dialect::OpenAi).ok_or_else(|| {
            format!(
                "upstream '{}' does not serve the OpenAI API",
                self.upstream.name
            )
        })?;
        let body = dialect::own_chat_request(self.upstream.dialect, self.model, prompt, max_tokens);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "{root}{}",
                dialect::path_of(Dialect::OpenAi, Endpoint::Chat).unwrap_or_default()
            ))
            .header(CONTENT_TYPE, "application/json")
            .body(full(body))
            .map_err(|e| format!("cannot build the summarizer request: {e}"))?;
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        Ok(request)
    }

    async fn call(&self, prompt: &[Message], max_tokens: u64) -> Result<(String, u64), String> {
        let request = self.request(prompt, max_tokens)?;
        let response = self
            .client
            .send(self.upstream, request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("cannot read the summarizer's answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(format!("summarizer answered {status}: {text}"));
        }
        let tokens = usage::from_bytes(Dialect::OpenAi, false, &bytes).unwrap_or_default();
        *self.spent.lock() += tokens;
        let text = usage::answer_text(Dialect::OpenAi, false, &bytes);
        let text = Some(text.trim())
            .filter(|t| !t.is_empty())
            .ok_or("the summarizer's answer holds no text")?;
        Ok((text.to_owned(), tokens.prompt + tokens.completion))
    }
}

impl Summarizer for UpstreamSummarizer<'_> {
    fn summarize<'a>(&'a self, prompt: &'a [Message], max_tokens: u64) -> SummaryFuture<'a> {
        Box::pin(self.call(prompt, max_tokens))
    }

    fn tenant(&self) -> &str {
        self.tenant
    }

    fn conversation(&self) -> Option<&Conversation> {
        self.conversation.as_ref()
    }
}
