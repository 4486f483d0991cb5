//! Embedding calls: cached inputs are answered from the store, only the rest go upstream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{Body, full};
use crate::cache::Outcome;
use crate::cache::controls::Controls;
use crate::cache::embedding::{self, EmbeddingPlan};
use crate::cache::entry::EmbeddingEntry;
use crate::chat::{Call, EmbeddingRequest, Tokens};
use crate::dialect::embedding as embedding_wire;
use crate::error::ProxyError;
use crate::savings as ledger;
use crate::{dialect, reply};

use super::{Context, Proxy};

/// What the cache held for a batch: one entry per input, `None` where it must go upstream.
struct Looked {
    cached: Vec<Option<EmbeddingEntry>>,
    /// Positions of the inputs the cache did not hold.
    missing: Vec<usize>,
    took: Duration,
}

impl Looked {
    fn cached_tokens(&self) -> u64 {
        self.cached.iter().flatten().map(|e| e.tokens).sum()
    }
}

impl Proxy {
    /// The stages of an embedding call, in order.
    pub(super) async fn embed(
        &self,
        cx: Context<()>,
        request: EmbeddingRequest,
        bytes: Bytes,
        controls: Controls,
    ) -> Result<Response<Body>, ProxyError> {
        let upstream = &self.config.upstreams[cx.exchange.upstream].name;
        let plan = self.cache.plan_embedding(
            cx.exchange.dialect,
            upstream,
            &cx.exchange.tenant.id,
            &request,
            &controls,
        );
        let mut cx = cx.with_plan(plan);
        if let Some(outcome) = cx.plan.skipped() {
            self.count_embedding(&cx, &request, outcome);
            cx.labels.cache = Some(outcome.as_str());
            cx.account.sending();
            return match self.forward_intercepted(&cx.exchange, full(bytes)).await {
                Ok(response) => {
                    let dialect = cx.exchange.dialect;
                    let response = cx
                        .account
                        .upstream(ledger::Outcome::Bypass, dialect, response);
                    Ok(cx.labels.written(response))
                }
                Err(e) => Err(cx.account.failed(e)),
            };
        }
        let started = Instant::now();
        let cached = self.cache.lookup_embeddings(&cx.plan).await;
        let missing = (0..cached.len()).filter(|&i| cached[i].is_none()).collect();
        let looked = Looked {
            cached,
            missing,
            took: started.elapsed(),
        };
        if looked.missing.is_empty() {
            return Ok(self.embeddings_from_cache(cx, &request, looked));
        }
        self.embeddings_upstream(cx, &request, bytes, looked).await
    }

    /// Counts a call's cache outcome and names it in the request's span.
    fn count_embedding(
        &self,
        cx: &Context<EmbeddingPlan>,
        request: &EmbeddingRequest,
        outcome: Outcome,
    ) {
        let namespace = cx.plan.namespace.as_deref();
        self.counted(&cx.plan.tenant, namespace, &request.model, outcome);
    }

    /// Every input was cached: the answer is written here, in the client's dialect.
    fn embeddings_from_cache(
        &self,
        cx: Context<EmbeddingPlan>,
        request: &EmbeddingRequest,
        looked: Looked,
    ) -> Response<Body> {
        self.count_embedding(&cx, request, Outcome::Hit);
        let Context {
            exchange,
            account,
            mut labels,
            ..
        } = cx;
        let dialect = exchange.dialect;
        let tokens = looked.cached_tokens();
        let vectors: Vec<Vec<f64>> = looked
            .cached
            .into_iter()
            .flatten()
            .map(|e| e.vector)
            .collect();
        let mut body =
            embedding_wire::write_answer(dialect, request, None, &request.model, &vectors, tokens);
        let took = exchange.arrival.at.elapsed();
        embedding_wire::report_durations(dialect, request, &mut body, took, looked.took);
        let mut response = reply::json(StatusCode::OK, &body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(dialect::stream::json_content_type(dialect)),
        );
        labels.cache = Some(Outcome::Hit.as_str());
        let baseline = Tokens {
            prompt: tokens,
            ..Default::default()
        };
        account.embedding(
            ledger::Outcome::ExactHit,
            200,
            baseline,
            Tokens::default(),
            &mut labels,
        );
        labels.written(response)
    }

    /// Some inputs were not cached: only those go upstream; their vectors are stored, and
    /// merged with the cached ones in the client's order when the batch was partly cached.
    async fn embeddings_upstream(
        &self,
        cx: Context<EmbeddingPlan>,
        request: &EmbeddingRequest,
        bytes: Bytes,
        looked: Looked,
    ) -> Result<Response<Body>, ProxyError> {
        self.count_embedding(&cx, request, Outcome::Miss);
        let Context {
            exchange,
            plan,
            mut account,
            mut labels,
        } = cx;
        labels.cache = Some(Outcome::Miss.as_str());
        let dialect = exchange.dialect;
        let upstream = &self.config.upstreams[exchange.upstream].name;
        let Looked {
            cached, missing, ..
        } = looked;
        let partial = missing.len() < cached.len();
        let outbound = if partial {
            let sub = embedding::subset(request, &missing);
            dialect::encode(dialect, &Call::Embedding(sub))
        } else {
            bytes
        };
        account.sending();
        let response = match self.forward_intercepted(&exchange, full(outbound)).await {
            Ok(response) => response,
            Err(e) => return Err(account.failed(e)),
        };
        if !response.status().is_success() {
            let response = account.upstream(ledger::Outcome::Miss, dialect, response);
            return Ok(labels.written(response));
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
            let response = account.upstream(ledger::Outcome::Miss, dialect, response);
            return Ok(labels.written(response));
        };
        let billed = Tokens {
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
            let response = Response::from_parts(head, full(raw));
            account.embedding(ledger::Outcome::Miss, 200, billed, billed, &mut labels);
            return Ok(labels.written(response));
        }
        let cached_tokens: u64 = cached.iter().flatten().map(|e| e.tokens).sum();
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
            request,
            answer.as_ref(),
            model,
            &merged,
            cached_tokens + tokens,
        );
        head.headers.remove(CONTENT_LENGTH);
        let response = Response::from_parts(head, full(body.to_string()));
        let baseline = Tokens {
            prompt: cached_tokens + tokens,
            ..Default::default()
        };
        account.embedding(ledger::Outcome::Miss, 200, baseline, billed, &mut labels);
        labels.cache_hits = Some((merged.len() - missing.len(), merged.len()));
        Ok(labels.written(response))
    }
}
