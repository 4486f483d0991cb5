//! Chat and completion calls: the exact cache, then the semantic cache, then the upstream,
//! with the answer recorded as it streams back.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;

use crate::body::{Body, Rewrite, RewriteFn};
use crate::cache::controls::Controls;
use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;
use crate::cache::record::{OnStored, Recording, recorder};
use crate::cache::{Lookup, Outcome, Plan, replay};
use crate::chat::Call;
use crate::dialect::sse::UsageStripper;
use crate::error::ProxyError;
use crate::savings as ledger;
use crate::semantic;
use crate::{dialect, headers};

use super::{Exchange, Proxy};

/// How many guarded semantic candidates are tried, best first, before going upstream.
const SEMANTIC_CANDIDATES: usize = 3;

/// A recorded answer to a question that means the same, and the two wordings.
struct SemanticHit {
    entry: Arc<Entry>,
    key: CacheKey,
    similarity: f32,
    asked: String,
    recorded: String,
}

impl Proxy {
    /// Chat and completion calls: exact cache lookup, then upstream, recording the answer.
    pub(super) async fn answer(
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
        let (semantic_hit, question) = self.semantic_stage(&plan, &call, upstream).await;
        if semantic_hit.is_some() || question.as_ref().is_some_and(|q| q.vector.is_some()) {
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
            let encoding = self.compressor.encoding(call.model());
            account.reworded(self.compressor.counter(), encoding, &asked, &recorded);
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
        let encoding = self.compressor.encoding(call.model());
        account.estimate_from(call.clone(), self.compressor.counter(), encoding);
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
                let on_stored = match (&self.semantic, question) {
                    (Some(semantic), Some(question)) => {
                        let semantic = semantic.clone();
                        let remember: OnStored = Box::new(move |key, ttl| {
                            semantic.remember_later(question, key, ttl);
                            Box::pin(std::future::ready(()))
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

    /// The semantic stage: a recorded answer to a question that means the same, in the same
    /// context, or the question to remember once this call's answer is recorded. Nothing is
    /// embedded here unless a hit is possible (see [`semantic::SemanticCache::lookup`]).
    async fn semantic_stage(
        &self,
        plan: &Plan,
        call: &Call,
        upstream: &str,
    ) -> (Option<SemanticHit>, Option<semantic::Question>) {
        let (Some(semantic), Call::Chat(chat)) = (&self.semantic, call) else {
            return (None, None);
        };
        if !plan.controls.semantic || plan.key.is_none() {
            return (None, None);
        }
        let Some(mut question) = semantic.question(&plan.scope, plan.dialect, upstream, chat)
        else {
            return (None, None);
        };
        if !plan.mode.read() {
            return (None, Some(question));
        }
        let threshold = plan.controls.semantic_threshold;
        let semantic::Lookup::Searched(hits) = semantic
            .lookup(&mut question, threshold, SEMANTIC_CANDIDATES)
            .await
        else {
            return (None, Some(question));
        };
        // The best answer may have expired since it was indexed; the next one may serve.
        for hit in hits {
            match self.cache.read(plan, &hit.answer, call).await {
                Some(entry) => {
                    let hit = SemanticHit {
                        entry,
                        key: hit.answer,
                        similarity: hit.similarity,
                        asked: question.text,
                        recorded: hit.question,
                    };
                    return (Some(hit), None);
                }
                None if self.cache.exists(&hit.answer).await == Some(false) => {
                    semantic.forget(&question.partition, &hit.answer.0).await;
                }
                None => {}
            }
        }
        (None, Some(question))
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
