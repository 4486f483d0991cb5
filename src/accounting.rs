//! The savings stage: turns what happened to a request into a `UsageRecord`
//! for the ledger, and sets `x-thrifty-tokens-saved` / `x-thrifty-cost-saved`.
//!
//! Answers from the upstream are tapped as they stream to the client; the
//! record is written when the body ends, from the usage the upstream reported,
//! or, when it reported none, from thrifty's own token count (marked `estimated`).
//! A body that breaks off before its end (the upstream failed, or the connection was
//! cut at shutdown) is recorded as an `error` marked `partial`, with the tokens seen.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;

use crate::auth::Tenant;
use crate::body::{Body, Ending, Tap};
use crate::chat::{Call, Dialect, Endpoint};
use crate::compress::{Encoding, TokenCounter};
use crate::dialect::observe::{Observed, observe};
use crate::dialect::{self, stream};
use crate::error::ProxyError;
use crate::headers::Labels;
use crate::headers::names;
use crate::savings::{Ledger, Outcome, Tokens, UsageRecord, money};

/// What a recorded answer cost when it was asked for: what a hit on it is billed against.
#[derive(Clone, Copy, Debug, Default)]
pub struct Replayed {
    /// The usage the upstream reported with it.
    pub usage: Option<Tokens>,
    /// Prompt tokens compression removed before it was asked for (thrifty's count).
    pub compressed_away: u64,
}

/// The most of an answer kept to read its usage from.
pub const ANSWER_TAP_LIMIT: usize = 16 * 1024 * 1024;

/// The most of an error answer kept: it carries no usage, so only enough to count it.
const ERROR_TAP_LIMIT: usize = 64 * 1024;

/// A request's record before its tokens are known.
pub struct Account {
    ledger: Arc<Ledger>,
    endpoint: Endpoint,
    record: UsageRecord,
    started: Instant,
    /// Prompt tokens compression removed before forwarding, counted by thrifty's tokenizer.
    compressed_away: Option<u64>,
    /// The client's call, counted with the tokenizer and the model's encoding when the
    /// upstream reports no usage.
    call: Option<(Arc<Call>, TokenCounter, Encoding)>,
    /// When the first upstream attempt was sent.
    sent: Option<Instant>,
    /// How many more prompt tokens a semantic hit's question has than the recorded one.
    reworded: i64,
    /// The record was handed to the ledger.
    done: bool,
}

/// The status of a call dropped before its answer came back (nginx's "client closed request").
const DROPPED: u16 = 499;

impl Drop for Account {
    /// A call dropped after it went upstream but before its answer came back (its client
    /// left, or shutdown cut it) may still be billed for its prompt: it is recorded as a
    /// partial error with thrifty's count of that prompt.
    fn drop(&mut self) {
        if self.done || self.sent.is_none() {
            return;
        }
        let prompt = match &self.call {
            Some((call, counter, encoding)) => prompt_of(counter, *encoding, call),
            None => 0,
        };
        let tokens = Tokens {
            prompt: prompt as u64,
            ..Tokens::default()
        };
        let mut baseline = tokens;
        baseline.prompt += self.compressed_away.unwrap_or(0);
        self.record.partial = true;
        self.write(Outcome::Error, DROPPED, baseline, tokens, true);
    }
}

/// The most tags a record keeps.
const MAX_TAGS: usize = 16;

/// `x-thrifty-tags: a,b` (projects and apps, for reports), at most [`MAX_TAGS`] of 64 bytes.
fn tags(headers: &HeaderMap) -> Vec<String> {
    headers
        .get(names::TAGS)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() <= 64)
                .take(MAX_TAGS)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Account {
    #[expect(
        clippy::too_many_arguments,
        reason = "one record's fields, named at the call site"
    )]
    pub fn new(
        ledger: Arc<Ledger>,
        started: Instant,
        at_ms: u64,
        tenant: &Tenant,
        headers: &HeaderMap,
        dialect: Dialect,
        endpoint: Endpoint,
        model: &str,
        upstream: &str,
    ) -> Account {
        Account {
            ledger,
            endpoint,
            started,
            compressed_away: None,
            call: None,
            sent: None,
            reworded: 0,
            done: false,
            record: UsageRecord {
                at_ms,
                tenant: tenant.id.clone(),
                key_name: tenant.key_name.clone(),
                team: tenant.team.clone(),
                tags: tags(headers),
                dialect: dialect.as_str().to_owned(),
                endpoint: endpoint.as_str().to_owned(),
                model: model.to_owned(),
                upstream: upstream.to_owned(),
                outcome: Outcome::Miss,
                status: 200,
                latency_ms: 0.0,
                upstream_ms: None,
                baseline: Tokens::default(),
                actual: Tokens::default(),
                overhead: Tokens::default(),
                overhead_model: None,
                embed_calls: 0,
                estimated: false,
                partial: false,
            },
        }
    }

    /// Notes that compression removed `tokens` prompt tokens: the baseline is the billed
    /// prompt plus what was removed.
    pub fn compressed(&mut self, tokens: u64) {
        self.compressed_away = Some(tokens);
    }

    /// Notes that the call goes upstream now: the record's upstream time runs from here
    /// to the end of the answer's body.
    pub fn sending(&mut self) {
        self.sent.get_or_insert_with(Instant::now);
    }

    /// A semantic hit's prompt is worded differently from the recorded one: its baseline
    /// is the recorded prompt's billed size plus the difference the tokenizer counts
    /// between the two questions.
    pub fn reworded(
        &mut self,
        counter: &TokenCounter,
        encoding: Encoding,
        asked: &str,
        recorded: &str,
    ) {
        let difference =
            counter.text(encoding, asked) as i64 - counter.text(encoding, recorded) as i64;
        self.reworded = difference;
    }

    /// Keeps the client's call, and the counter and encoding to count it with, in case the
    /// upstream reports no usage.
    pub fn estimate_from(&mut self, call: Arc<Call>, counter: &TokenCounter, encoding: Encoding) {
        self.call = Some((call, counter.clone(), encoding));
    }

    /// Adds what thrifty itself spent on this request (a summarizer call) at `model`'s price.
    pub fn overhead(&mut self, tokens: Tokens, model: &str) {
        self.record.overhead += tokens;
        if self.record.model != model {
            self.record.overhead_model = Some(model.to_owned());
        }
    }

    /// A compressed request's saved headers, known before its answer: the prompt tokens
    /// compression removed, and their cost net of what the summarizer spent.
    pub fn compressed_labels(&self, labels: &mut Labels) {
        let Some(removed) = self.compressed_away else {
            return;
        };
        let mut record = self.record.clone();
        record.baseline = Tokens {
            prompt: removed,
            ..Tokens::default()
        };
        record.actual = Tokens::default();
        saved_labels(&self.ledger, &record, labels);
    }

    /// Counts one local embedding made for the semantic stage.
    pub fn embedded(&mut self) {
        self.record.embed_calls += 1;
    }

    fn finish(
        mut self,
        outcome: Outcome,
        status: u16,
        baseline: Tokens,
        actual: Tokens,
        estimated: bool,
    ) -> UsageRecord {
        self.write(outcome, status, baseline, actual, estimated)
    }

    fn write(
        &mut self,
        outcome: Outcome,
        status: u16,
        baseline: Tokens,
        actual: Tokens,
        estimated: bool,
    ) -> UsageRecord {
        self.done = true;
        self.record.outcome = if status >= 400 {
            Outcome::Error
        } else {
            outcome
        };
        self.record.status = status;
        self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.record.upstream_ms = self.sent.map(|sent| sent.elapsed().as_secs_f64() * 1000.0);
        self.record.baseline = baseline;
        self.record.actual = actual;
        self.record.estimated = estimated;
        self.ledger.record(self.record.clone());
        self.record.clone()
    }

    /// A call that failed before an answer came back (the upstream unreachable or silent):
    /// nothing billed but what thrifty itself spent. Returns the error for the caller.
    pub fn failed(self, error: ProxyError) -> ProxyError {
        self.finish(
            Outcome::Error,
            error.status().as_u16(),
            Tokens::default(),
            Tokens::default(),
            false,
        );
        error
    }

    /// A hit: nothing billed; the baseline is what the recorded answer cost.
    pub fn hit(self, outcome: Outcome, replayed: Replayed, labels: &mut Labels) {
        let (baseline, estimated) = self.hit_baseline(outcome, replayed);
        let ledger = self.ledger.clone();
        let record = self.finish(outcome, 200, baseline, Tokens::default(), estimated);
        saved_labels(&ledger, &record, labels);
    }

    /// A call that followed an identical call's stream as it came: nothing billed, and the
    /// baseline is what the shared answer cost once it is recorded. With no recorded answer
    /// (it broke off, or was not storable) the record is a partial error that billed nothing.
    pub fn followed(mut self, replayed: Option<Replayed>) {
        match replayed {
            Some(replayed) => {
                let (baseline, estimated) = self.hit_baseline(Outcome::ExactHit, replayed);
                self.finish(
                    Outcome::ExactHit,
                    200,
                    baseline,
                    Tokens::default(),
                    estimated,
                );
            }
            None => {
                self.record.partial = true;
                self.finish(
                    Outcome::Error,
                    502,
                    Tokens::default(),
                    Tokens::default(),
                    false,
                );
            }
        }
    }

    /// What a hit on a recorded answer would have cost, and whether that is thrifty's
    /// estimate.
    fn hit_baseline(&self, outcome: Outcome, replayed: Replayed) -> (Tokens, bool) {
        let Replayed {
            usage,
            compressed_away,
        } = replayed;
        // A semantic hit answers a differently worded prompt: its size is the recorded one's.
        // A compressed answer's baseline adds back what thrifty counted as removed.
        let estimated = usage.is_none() || outcome == Outcome::SemanticHit || compressed_away > 0;
        let mut baseline = usage.unwrap_or_default();
        baseline.prompt += compressed_away;
        baseline.prompt = baseline.prompt.saturating_add_signed(self.reworded);
        (baseline, estimated)
    }

    /// An embedding call answered partly or wholly from the cache.
    pub fn embedding(
        self,
        outcome: Outcome,
        status: u16,
        baseline: Tokens,
        actual: Tokens,
        labels: &mut Labels,
    ) {
        let ledger = self.ledger.clone();
        let record = self.finish(outcome, status, baseline, actual, false);
        if outcome == Outcome::ExactHit || baseline != actual {
            saved_labels(&ledger, &record, labels);
        }
    }

    /// An answer from the upstream: recorded when its body ends, from the usage it reports.
    /// A compressed request's baseline adds back the prompt tokens compression removed.
    pub fn upstream(
        self,
        outcome: Outcome,
        dialect: Dialect,
        response: Response<Body>,
    ) -> Response<Body> {
        let status = response.status().as_u16();
        let streamed = stream::is_stream(response.headers());
        let limit = if status >= 400 {
            ERROR_TAP_LIMIT
        } else {
            ANSWER_TAP_LIMIT
        };
        response.map(|body| {
            Tap::new(
                body,
                limit,
                Box::new(move |bytes, ending| {
                    self.settle_behind(outcome, status, (dialect, streamed), bytes, ending, |_| {});
                }),
            )
            .boxed_unsync()
        })
    }

    /// Settles once the answer has gone: reading the answer's bytes (`dialect`, whether
    /// `streamed`) and writing the record run on a task of their own, after the last bytes are
    /// on their way to the client, so neither delays them; then `then` gets what was read.
    /// Until the record is handed over the ledger counts it as promised, so a report asked for
    /// meanwhile waits for it. Outside a runtime (a body dropped at shutdown) it settles at once.
    pub fn settle_behind(
        self,
        outcome: Outcome,
        status: u16,
        (dialect, streamed): (Dialect, bool),
        bytes: Bytes,
        ending: Ending,
        then: impl FnOnce(Observed) + Send + 'static,
    ) {
        let promise = self.ledger.promise();
        let endpoint = self.endpoint;
        let work = move || {
            let observed = observe(dialect, endpoint, streamed, &bytes);
            self.settle(outcome, status, &observed, ending);
            drop(promise);
            then(observed);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { work() });
            }
            Err(_) => work(),
        }
    }

    /// Writes the record of an upstream answer once its body ended: billed from the usage it
    /// reported, else counted with thrifty's tokenizer. A compressed request's baseline adds
    /// back the prompt tokens compression removed.
    pub fn settle(mut self, outcome: Outcome, status: u16, observed: &Observed, ending: Ending) {
        let outcome = match self.compressed_away {
            Some(_) => Outcome::Compressed,
            None => outcome,
        };
        // A client that hangs up right after a stream's terminal event got it all.
        let complete = ending.clean || (observed.streamed && ending.whole && observed.complete);
        let broken = !complete;
        let outcome = if broken { Outcome::Error } else { outcome };
        let reported = observed.usage();
        let counted = match (&reported, &self.call) {
            (None, Some((call, counter, encoding))) if status < 400 => {
                Some(estimate(counter, *encoding, call, observed))
            }
            _ => None,
        };
        // A compressed request's baseline is partly thrifty's own count.
        let estimated = counted.is_some() || self.compressed_away.is_some();
        let billed = reported.or(counted).unwrap_or_default();
        let mut baseline = billed;
        if let Some(removed) = self.compressed_away {
            baseline.prompt += removed;
        }
        self.record.partial = broken;
        self.finish(outcome, status, baseline, billed, estimated);
    }
}

/// Counts a call and its answer with thrifty's tokenizer in the model's encoding.
fn estimate(counter: &TokenCounter, encoding: Encoding, call: &Call, answer: &Observed) -> Tokens {
    let prompt = prompt_of(counter, encoding, call);
    let completion = counter.text(encoding, &answer.text());
    Tokens {
        prompt: prompt as u64,
        cached_prompt: 0,
        completion: completion as u64,
    }
}

/// A call's prompt counted with thrifty's tokenizer (embedding inputs are not counted).
fn prompt_of(counter: &TokenCounter, encoding: Encoding, call: &Call) -> usize {
    match call {
        Call::Chat(chat) | Call::Responses(chat) => counter.request(encoding, chat).total(),
        Call::Completion(c) => prompt_tokens(counter, encoding, &c.prompt),
        Call::Embedding(_) => 0,
    }
}

/// A legacy prompt's tokens: its texts counted, its token ids one each.
fn prompt_tokens(counter: &TokenCounter, encoding: Encoding, prompt: &serde_json::Value) -> usize {
    let prompt = dialect::legacy_prompt(prompt);
    let texts: usize = prompt.texts.iter().map(|t| counter.text(encoding, t)).sum();
    texts + prompt.token_ids
}

fn saved_labels(ledger: &Ledger, record: &UsageRecord, labels: &mut Labels) {
    let saved = record
        .baseline
        .total()
        .saturating_sub(record.actual.total());
    labels.tokens_saved = Some(saved);
    if let Some(costs) = ledger.pricing().quote(record).costs {
        labels.cost_saved = Some(money::decimal(costs.net_saved()));
    }
}
