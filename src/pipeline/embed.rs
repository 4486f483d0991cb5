//! Embedding calls: cached inputs are answered from the store, only the rest go upstream.

use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{Body, full};
use crate::cache::controls::Controls;
use crate::cache::{Outcome, embedding};
use crate::chat::{Call, EmbeddingRequest};
use crate::dialect::embedding as embedding_wire;
use crate::error::ProxyError;
use crate::savings as ledger;
use crate::{dialect, headers, reply};

use super::{Exchange, Proxy};

impl Proxy {
    /// Embedding calls: cached inputs are answered from the store, only the rest go upstream.
    pub(super) async fn embed(
        &self,
        exchange: Exchange,
        request: EmbeddingRequest,
        bytes: Bytes,
        controls: Controls,
    ) -> Result<Response<Body>, ProxyError> {
        let dialect = exchange.dialect;
        let upstream = &self.config.upstreams[exchange.upstream].name;
        let plan =
            self.cache
                .plan_embedding(dialect, upstream, &exchange.tenant.id, &request, &controls);
        let stats = self.cache.stats();
        let mut account = self.account(&exchange, request.endpoint(), &request.model);
        let label = |response: &mut Response<Body>, outcome: Outcome| {
            headers::set(response.headers_mut(), "x-thrifty-cache", outcome.as_str());
            tracing::Span::current().record("cache", outcome.as_str());
            stats.record(
                &plan.tenant,
                plan.namespace.as_deref(),
                &request.model,
                outcome,
            );
        };
        if let Some(outcome) = plan.skipped() {
            account.sending();
            let response = match self.forward(&exchange, full(bytes), true).await {
                Ok(response) => response,
                Err(e) => return Err(account.failed(e)),
            };
            let mut response = account.upstream(ledger::Outcome::Bypass, dialect, response);
            label(&mut response, outcome);
            return Ok(response);
        }
        let looking_up = Instant::now();
        let cached = self.cache.lookup_embeddings(&plan).await;
        let lookup = looking_up.elapsed();
        let missing: Vec<usize> = (0..cached.len()).filter(|&i| cached[i].is_none()).collect();
        let cached_tokens: u64 = cached.iter().flatten().map(|e| e.tokens).sum();
        if missing.is_empty() {
            let vectors: Vec<Vec<f64>> = cached.into_iter().flatten().map(|e| e.vector).collect();
            let mut body = embedding_wire::write_answer(
                dialect,
                &request,
                None,
                &request.model,
                &vectors,
                cached_tokens,
            );
            let took = exchange.arrived.elapsed();
            embedding_wire::report_durations(dialect, &request, &mut body, took, lookup);
            let mut response = reply::json(StatusCode::OK, &body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(dialect::stream::json_content_type(dialect)),
            );
            label(&mut response, Outcome::Hit);
            let baseline = ledger::Tokens {
                prompt: cached_tokens,
                ..Default::default()
            };
            account.embedding(
                ledger::Outcome::ExactHit,
                200,
                baseline,
                ledger::Tokens::default(),
                &mut response,
            );
            return Ok(response);
        }
        let partial = missing.len() < cached.len();
        let outbound = if partial {
            let sub = embedding::subset(&request, &missing);
            dialect::encode(dialect, &Call::Embedding(sub))
        } else {
            bytes
        };
        account.sending();
        let response = match self.forward(&exchange, full(outbound), true).await {
            Ok(response) => response,
            Err(e) => return Err(account.failed(e)),
        };
        if !response.status().is_success() {
            let mut response = account.upstream(ledger::Outcome::Miss, dialect, response);
            label(&mut response, Outcome::Miss);
            return Ok(response);
        }
        let (mut head, body) = response.into_parts();
        let raw = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return Err(account.failed(ProxyError::UpstreamUnavailable {
                    upstream: upstream.clone(),
                    reason: format!("embedding answer could not be read: {e}"),
                }));
            }
        };
        let answer: Option<serde_json::Value> = serde_json::from_slice(&raw).ok();
        let vectors = answer
            .as_ref()
            .and_then(|a| embedding_wire::read_answer(dialect, request.legacy, a))
            .filter(|(v, _)| v.len() == missing.len());
        let Some((vectors, tokens)) = vectors else {
            if partial {
                return Err(account.failed(ProxyError::UpstreamUnavailable {
                    upstream: upstream.clone(),
                    reason: "embedding answer did not hold one vector per input".to_owned(),
                }));
            }
            let response = Response::from_parts(head, full(raw));
            let mut response = account.upstream(ledger::Outcome::Miss, dialect, response);
            label(&mut response, Outcome::Miss);
            return Ok(response);
        };
        let billed = ledger::Tokens {
            prompt: tokens,
            ..Default::default()
        };
        let weights: Vec<u64> = missing.iter().map(|&i| plan.weights[i]).collect();
        let parts = embedding::apportion(tokens, &weights);
        let model = &request.model;
        if !partial {
            self.cache
                .put_embeddings(&plan, model, &missing, vectors, &parts)
                .await;
            let mut response = Response::from_parts(head, full(raw));
            label(&mut response, Outcome::Miss);
            account.embedding(ledger::Outcome::Miss, 200, billed, billed, &mut response);
            return Ok(response);
        }
        let mut fresh = vectors.clone().into_iter();
        let merged: Vec<Vec<f64>> = cached
            .into_iter()
            .map(|c| {
                c.map(|e| e.vector)
                    .or_else(|| fresh.next())
                    .unwrap_or_default()
            })
            .collect();
        self.cache
            .put_embeddings(&plan, model, &missing, vectors, &parts)
            .await;
        let body = embedding_wire::write_answer(
            dialect,
            &request,
            answer.as_ref(),
            model,
            &merged,
            cached_tokens + tokens,
        );
        head.headers.remove(CONTENT_LENGTH);
        let mut response = Response::from_parts(head, full(body.to_string()));
        label(&mut response, Outcome::Miss);
        let baseline = ledger::Tokens {
            prompt: cached_tokens + tokens,
            ..Default::default()
        };
        account.embedding(ledger::Outcome::Miss, 200, baseline, billed, &mut response);
        let hits = format!("{}/{}", merged.len() - missing.len(), merged.len());
        headers::set(response.headers_mut(), "x-thrifty-cache-hits", &hits);
        Ok(response)
    }
}
