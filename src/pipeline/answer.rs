//! Chat, Responses and completion calls: the exact cache, then the semantic cache, then the
//! upstream, with the answer recorded as it streams back.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;

use crate::body::{Body, Rewrite, RewriteFn};
use crate::cache::controls::Controls;
use crate::cache::feed::{Fanout, Start};
use crate::cache::record::{Recording, recorder};
use crate::cache::{Lookup, Outcome, replay};
use crate::chat::Call;
use crate::dialect::sse::UsageStripper;
use crate::error::ProxyError;
use crate::savings as ledger;
use crate::{dialect, headers};

use super::semantic::{Decision, SemanticHit};
use super::{Exchange, Proxy};

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
        let mut account = self.account(&exchange, call.endpoint(), call.model());
        let counted = |outcome: Outcome| {
            let namespace = plan.controls.namespace.as_deref();
            stats.record(&plan.tenant, namespace, &plan.model, outcome);
            tracing::Span::current().record("cache", outcome.as_str());
        };
        let (outcome, flight) = match self.cache.lookup(&plan, &call).await {
            Lookup::Hit { entry, key } => {
                counted(Outcome::Hit);
                let mut response = replay::respond(exchange.dialect, &call, &entry, &key);
                account.hit(
                    ledger::Outcome::ExactHit,
                    exchange.dialect,
                    &entry,
                    &mut response,
                );
                return Ok(response);
            }
            Lookup::Follow { feed, answer, key } => {
                counted(Outcome::Hit);
                return Ok(self.follow(exchange.dialect, &call, feed, answer, &key, account));
            }
            Lookup::Miss { outcome, flight } => (outcome, flight),
        };
        let Decision {
            hit: semantic_hit,
            question,
            verify,
        } = self.semantic_stage(&plan, &call, upstream).await;
        let embedded = verify.is_some() || question.as_ref().is_some_and(|q| q.vector.is_some());
        if semantic_hit.is_some() || embedded {
            account.embedded();
        }
        if let Some(hit) = semantic_hit {
            let confidence = hit.confidence_header();
            let SemanticHit {
                entry,
                key,
                similarity,
                asked,
                recorded,
                ..
            } = hit;
            counted(Outcome::SemanticHit);
            let mut response = replay::respond(exchange.dialect, &call, &entry, &key);
            let h = response.headers_mut();
            headers::set(h, "x-thrifty-cache", Outcome::SemanticHit.as_str());
            headers::set(h, "x-thrifty-similarity", &format!("{similarity:.4}"));
            if let Some(confidence) = &confidence {
                headers::set(h, "x-thrifty-confidence", confidence);
            }
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
        counted(outcome);
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
                let feed = flight.feed().clone();
                feed.start(Start {
                    streamed,
                    has_usage: sent.strips_usage || dialect::wants_stream_usage(dialect, &call),
                });
                let on_stored = self.after_stored(question, verify);
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
                let response = response.map(|body| {
                    // Streaming followers read the answer as it comes.
                    let body = if streamed {
                        Fanout::new(body, feed).boxed_unsync()
                    } else {
                        body
                    };
                    recorder(body, recording).boxed_unsync()
                });
                Ok(strip_usage(response, sent.strips_usage))
            }
            _ => Ok(strip_usage(response, sent.strips_usage)),
        }
    }
}

/// Takes the usage thrifty asked for back out of a stream whose client did not ask for it.
pub(super) fn strip_usage(response: Response<Body>, strips: bool) -> Response<Body> {
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
