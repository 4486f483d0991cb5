//! Chat, Responses and completion calls: the exact cache, then the semantic cache, then the
//! upstream, with the answer recorded as it streams back.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;

use crate::accounting::{ANSWER_TAP_LIMIT, Replayed};
use crate::body::{Body, Rewrite, RewriteFn, Tap, TapEnd};
use crate::cache::controls::Controls;
use crate::cache::entry::Entry;
use crate::cache::feed::{Fanout, Lead, Start};
use crate::cache::key::CacheKey;
use crate::cache::record::Recording;
use crate::cache::{Flight, Lookup, Outcome, Plan, replay};
use crate::chat::{Call, Dialect};
use crate::dialect;
use crate::dialect::sse::Rewriter;
use crate::error::ProxyError;
use crate::savings as ledger;

use super::forward::Sent;
use super::semantic::{Decision, SemanticHit};
use super::{Context, Proxy};

/// A call the exact cache could not answer: how it counts, and the flight its answer is
/// recorded through when it is the leader of identical calls.
struct Missed {
    outcome: Outcome,
    flight: Option<Flight>,
}

impl Proxy {
    /// The stages of a chat, Responses or completion call, in order.
    pub(super) async fn answer(
        &self,
        cx: Context<()>,
        call: Call,
        bytes: Bytes,
        controls: Controls,
    ) -> Result<Response<Body>, ProxyError> {
        let upstream = &self.config.upstreams[cx.exchange.upstream].name;
        let plan = self.cache.plan(
            cx.exchange.dialect,
            upstream,
            &cx.exchange.tenant.id,
            &call,
            controls,
        );
        let mut cx = cx.with_plan(plan);
        let missed = match self.cache.lookup(&cx.plan, &call).await {
            Lookup::Hit { entry, key } => return Ok(self.replay(cx, &call, &entry, &key)),
            Lookup::Follow {
                reader,
                answer,
                key,
            } => {
                self.count(&cx.plan, Outcome::Hit);
                cx.labels.cache = Some(Outcome::Hit.as_str());
                cx.labels.cache_key = Some(key.short().to_owned());
                let response = self.follow(cx.exchange.dialect, &call, reader, answer, cx.account);
                return Ok(cx.labels.written(response));
            }
            Lookup::Miss { outcome, flight } => Missed { outcome, flight },
        };
        let decision = self.semantic_stage(&cx.plan, &call, upstream).await;
        if decision.embedded() {
            cx.account.embedded();
        }
        let Decision {
            hit,
            question,
            verify,
        } = decision;
        if let Some(hit) = hit {
            return Ok(self.serve_semantic(cx, &call, hit));
        }
        self.count(&cx.plan, missed.outcome);
        let call = Arc::new(call);
        let encoding = self.compressor.encoding(call.model());
        cx.account
            .estimate_from(call.clone(), self.compressor.counter(), encoding);
        let (response, sent) = match self
            .upstream_stage(&cx.exchange, &call, bytes, &mut cx.account)
            .await
        {
            Ok(answered) => answered,
            Err(e) => return Err(cx.account.failed(e)),
        };
        let on_stored = self.after_stored(question, verify);
        Ok(self.record_stage(cx, call, response, sent, missed, on_stored))
    }

    /// Counts a call's cache outcome and names it in the request's span.
    fn count(&self, plan: &Plan, outcome: Outcome) {
        let namespace = plan.controls.namespace.as_deref();
        self.counted(&plan.tenant, namespace, &plan.model, outcome);
    }

    /// An exact hit: the recorded answer, replayed in the mode the client asked for.
    fn replay(
        &self,
        cx: Context<Plan>,
        call: &Call,
        entry: &Entry,
        key: &CacheKey,
    ) -> Response<Body> {
        self.serve_recorded(cx, call, entry, key, Outcome::Hit)
    }

    /// A semantic hit: the answer to a question that means the same, and why it was served.
    fn serve_semantic(
        &self,
        mut cx: Context<Plan>,
        call: &Call,
        hit: SemanticHit,
    ) -> Response<Body> {
        cx.labels.similarity = Some(hit.similarity);
        cx.labels.confidence = hit.confidence_header();
        let encoding = self.compressor.encoding(call.model());
        let counter = self.compressor.counter();
        cx.account
            .reworded(counter, encoding, &hit.asked, &hit.recorded);
        self.serve_recorded(cx, call, &hit.entry, &hit.key, Outcome::SemanticHit)
    }

    /// A recorded answer served as this call's: counted, billed as a hit and replayed.
    fn serve_recorded(
        &self,
        cx: Context<Plan>,
        call: &Call,
        entry: &Entry,
        key: &CacheKey,
        outcome: Outcome,
    ) -> Response<Body> {
        self.count(&cx.plan, outcome);
        let Context {
            exchange,
            account,
            mut labels,
            ..
        } = cx;
        replay::labels(entry, key, self.clock.now_ms(), &mut labels);
        labels.cache = Some(outcome.as_str());
        account.hit(
            billed(outcome),
            replayed(exchange.dialect, entry),
            &mut labels,
        );
        labels.written(replay::respond(exchange.dialect, call, entry))
    }

    /// The upstream's answer on its way to the client: billed when it ends, and recorded
    /// (and fanned out to identical streaming calls) when this call leads a flight.
    fn record_stage(
        &self,
        cx: Context<Plan>,
        call: Arc<Call>,
        response: Response<Body>,
        sent: Sent,
        missed: Missed,
        on_stored: Option<crate::cache::record::OnStored>,
    ) -> Response<Body> {
        let Context {
            exchange,
            plan,
            account,
            mut labels,
        } = cx;
        let dialect = exchange.dialect;
        if let Some(outcome) = &sent.compressed {
            labels.compression = Some(outcome.header_value());
            account.compressed_labels(&mut labels);
        }
        let billed = billed(missed.outcome);
        labels.cache = Some(missed.outcome.as_str());
        labels.cache_key = plan.key.as_ref().map(|key| key.short().to_owned());
        let response = labels.written(response);
        let Some(flight) = missed.flight.filter(|_| response.status().is_success()) else {
            let response = account.upstream(billed, dialect, response);
            return strip_usage(response, sent.strips_usage);
        };
        let streamed = dialect::stream::is_stream(response.headers());
        let feed = flight.feed().clone();
        feed.start(Start {
            streamed,
            has_usage: sent.strips_usage || dialect::wants_stream_usage(dialect, &call),
        });
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
        // One read of the answer when it ends, for the savings record and the recorder.
        let status = response.status().as_u16();
        let limit = ANSWER_TAP_LIMIT.max(recording.limit());
        let response = response.map(|body| {
            // Streaming followers read the answer as it comes.
            let body = if streamed {
                Fanout::new(body, feed.clone()).boxed_unsync()
            } else {
                body
            };
            let end: TapEnd = Box::new(move |bytes, ending| {
                let size = bytes.len();
                account.settle_behind(
                    billed,
                    status,
                    (dialect, streamed),
                    bytes,
                    ending,
                    move |observed| {
                        recording.finish(observed, ending, size);
                    },
                );
            });
            Tap::new(body, limit, end).boxed_unsync()
        });
        let response = strip_usage(response, sent.strips_usage);
        if !streamed {
            return response;
        }
        // The client-facing answer: if its client leaves while followers read the feed, the
        // rest of it (and every tap above) goes on for them.
        let tasks = self.tasks.clone();
        response.map(|body| Lead::new(body, feed, tasks).boxed_unsync())
    }
}

/// What a recorded answer cost, for the savings record of a call it answers.
pub(super) fn replayed(dialect: Dialect, entry: &Entry) -> Replayed {
    Replayed {
        usage: entry.usage(dialect),
        compressed_away: entry.compressed_away,
    }
}

/// Takes the usage thrifty asked for back out of a stream whose client did not ask for it.
pub(super) fn strip_usage(response: Response<Body>, strips: bool) -> Response<Body> {
    rewrite_stream(response, dialect::usage_stripper(strips))
}

/// Rewrites a streamed answer as it passes (see [`dialect::sse`], `dialect::ndjson`).
pub(super) fn rewrite_stream(
    response: Response<Body>,
    rewriter: Option<Box<dyn Rewriter>>,
) -> Response<Body> {
    let Some(mut rewriter) = rewriter else {
        return response;
    };
    if !dialect::stream::is_stream(response.headers()) {
        return response;
    }
    let (mut head, body) = response.into_parts();
    head.headers.remove(CONTENT_LENGTH);
    let rewrite: RewriteFn = Box::new(move |piece| match piece {
        Some(piece) => rewriter.push(piece),
        None => rewriter.finish(),
    });
    Response::from_parts(head, Rewrite::new(body, rewrite).boxed_unsync())
}

/// How the ledger counts a call with this cache outcome.
fn billed(outcome: Outcome) -> ledger::Outcome {
    match outcome {
        Outcome::Hit => ledger::Outcome::ExactHit,
        Outcome::SemanticHit => ledger::Outcome::SemanticHit,
        Outcome::Miss => ledger::Outcome::Miss,
        Outcome::Bypass | Outcome::Off => ledger::Outcome::Bypass,
    }
}
