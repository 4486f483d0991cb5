//! Drives the script through thrifty and derives each request's expected ledger record from
//! what was sent and what reached the fake: a hit must not reach it, anything forwarded reaches
//! it exactly once and is billed by the fake's rule on the body it received.

use std::collections::BTreeMap;

use serde_json::Value;

use super::billing::{self, Tokens};
use super::expect::{Outcome, Record};
use super::script::{Endpoint, Kind, OLLAMA, OPENAI, Step, Wait};
use super::verdict::Verdict;
use super::world::World;
use crate::common::client::Reply;

/// What must match for two questions to be compared by the semantic cache: who asks, in
/// which dialect, and the whole request but the wording of its last message (and whether it
/// streams, which never changes an answer).
fn partition(step: &Step) -> Value {
    let mut body = step.body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("stream");
        object.remove("stream_options");
    }
    if let Some(last) = body["messages"].as_array_mut().and_then(|m| m.last_mut()) {
        last["content"] = Value::Null;
    }
    match &mut body["input"] {
        Value::Array(items) => {
            if let Some(last) = items.last_mut() {
                last["content"] = Value::Null;
            }
        }
        input @ Value::String(_) => *input = Value::Null,
        _ => {}
    }
    serde_json::json!([step.who.name(), format!("{:?}", step.endpoint), body])
}

/// Sends every step in order and returns the record the ledger must hold for each.
///
/// With the semantic cache on, a question is embedded only when its partition already holds
/// an indexed question; so that this is known, every answered question is waited for until
/// it is indexed before the next step.
pub async fn run(world: &World, steps: &[Step], v: &mut Verdict) -> Vec<Record> {
    let mut records: BTreeMap<&str, Record> = BTreeMap::new();
    let mut order = Vec::with_capacity(steps.len());
    let mut indexed: Vec<Value> = Vec::new();
    for step in steps {
        assert!(
            !records.contains_key(step.tag),
            "{}: every step needs a tag of its own",
            step.tag
        );
        let calls = world.fake.calls();
        let reply = world.send(step).await;
        let reached: Vec<Value> = world.fake.requests()[calls..]
            .iter()
            .map(|r| r.json().expect("the fake got JSON"))
            .collect();
        let looked_up = indexed.contains(&partition(step));
        let record = expect(world, step, &reply, &reached, &records, looked_up);
        check_billed(v, step, &reply, &record);
        check_stream(v, step, &reply, &record);
        check_headers(v, step, &reply, &record);
        match step.wait {
            Wait::Nothing => {}
            Wait::Stored | Wait::Indexed => {
                let short = reply
                    .header("x-thrifty-cache-key")
                    .unwrap_or_else(|| panic!("{}: no x-thrifty-cache-key", step.tag));
                world.wait_stored(short).await;
                if step.wait == Wait::Indexed {
                    world.wait_indexed(short).await;
                }
            }
        }
        let remembered =
            reply.header("x-thrifty-cache") == Some("miss") && reply.status.as_u16() < 400;
        if world.semantic && remembered {
            let short = reply
                .header("x-thrifty-cache-key")
                .unwrap_or_else(|| panic!("{}: no x-thrifty-cache-key", step.tag));
            world.wait_stored(short).await;
            world.wait_indexed(short).await;
            indexed.push(partition(step));
        }
        order.push(step.tag);
        records.insert(step.tag, record);
    }
    order
        .into_iter()
        .filter_map(|tag| records.remove(tag))
        .collect()
}

/// The step's record, from what was sent and what the fake received. Panics when thrifty did
/// not do what the step is about (a hit that reached the upstream, say): the figures of the
/// whole script would be meaningless.
fn expect(
    world: &World,
    step: &Step,
    reply: &Reply,
    reached: &[Value],
    earlier: &BTreeMap<&str, Record>,
    looked_up: bool,
) -> Record {
    let tag = step.tag;
    let cache = reply.header("x-thrifty-cache").unwrap_or_default();
    let forwarded = |status_ok: bool| {
        assert_eq!(
            reached.len(),
            1,
            "{tag}: forwarded requests reach the upstream once"
        );
        assert_eq!(
            reply.status.as_u16() < 400,
            status_ok,
            "{tag}: status {} ({})",
            reply.status,
            reply.text()
        );
        &reached[0]
    };
    let from_cache = |expected: &str| {
        assert!(
            reached.is_empty(),
            "{tag}: a hit never reaches the upstream"
        );
        assert_eq!(reply.status, 200, "{tag}: {}", reply.describe());
        assert_eq!(cache, expected, "{tag}: x-thrifty-cache");
    };
    let (outcome, baseline, actual, estimated) = match step.kind {
        Kind::Miss | Kind::Bypass => {
            let upstream = forwarded(true);
            let expected = if step.kind == Kind::Bypass {
                "off"
            } else {
                "miss"
            };
            assert_eq!(cache, expected, "{tag}: x-thrifty-cache");
            let outcome = if step.kind == Kind::Bypass {
                Outcome::Bypass
            } else {
                Outcome::Miss
            };
            let sent = billing::billed(&step.body);
            (outcome, sent, billing::billed(upstream), false)
        }
        Kind::Compressed => {
            let upstream = forwarded(true);
            assert!(
                reply.header("x-thrifty-compression").is_some(),
                "{tag}: the request was compressed"
            );
            let billed = billing::billed(upstream);
            // No upstream counts the prompt it never received: what compression removed is
            // counted with OpenAI's tokenizer, as the provider would have billed it.
            let removed = billing::openai_prompt(&step.body)
                .checked_sub(billing::openai_prompt(upstream))
                .unwrap_or_else(|| panic!("{tag}: compression made the prompt longer"));
            let baseline = Tokens {
                prompt: billed.prompt + removed,
                completion: billed.completion,
            };
            // Estimated, like a semantic hit: part of the baseline is thrifty's own count.
            (Outcome::Compressed, baseline, billed, true)
        }
        Kind::Unreported => {
            forwarded(true);
            assert_eq!(cache, "miss", "{tag}: x-thrifty-cache");
            // No usage came back, so thrifty counts the prompt as sent and the answer it got.
            let counted = billing::stand_in_count(&step.body);
            (Outcome::Miss, counted, counted, true)
        }
        Kind::Error => {
            forwarded(false);
            (Outcome::Error, Tokens::default(), Tokens::default(), false)
        }
        Kind::ExactHit(of) => {
            from_cache("hit");
            let of = &earlier[of];
            // The same prompt as `of`, answered with `of`'s answer.
            (
                Outcome::ExactHit,
                of.baseline,
                Tokens::default(),
                of.estimated,
            )
        }
        Kind::SemanticHit(of) => {
            from_cache("semantic-hit");
            let baseline = Tokens {
                prompt: billing::prompt(&step.body),
                completion: earlier[of].baseline.completion,
            };
            // The upstream never counted the paraphrase.
            (Outcome::SemanticHit, baseline, Tokens::default(), true)
        }
    };
    // A hit embeds its question; anything else only when its partition held a question.
    let embeds = world.semantic
        && match step.kind {
            Kind::ExactHit(_) | Kind::Bypass => false,
            Kind::SemanticHit(_) => true,
            _ => looked_up,
        };
    Record {
        tag: tag.to_owned(),
        key: step.who.name(),
        team: step.who.team(),
        model: step.model().to_owned(),
        outcome,
        baseline,
        actual,
        estimated,
        embed_calls: u64::from(embeds),
        refused: (400..500).contains(&reply.status.as_u16()),
    }
}

/// The usage the fake put in an answer the client got whole (a JSON answer or an Ollama stream)
/// is what the test says the fake billed: the check that the test's rule is the fake's.
fn check_billed(v: &mut Verdict, step: &Step, reply: &Reply, record: &Record) {
    if !matches!(
        record.outcome,
        Outcome::Miss | Outcome::Bypass | Outcome::Compressed
    ) || (step.streams() && step.endpoint == OPENAI)
    {
        return;
    }
    let text = reply.text();
    let last = if step.streams() {
        text.lines().rev().find(|l| !l.trim().is_empty())
    } else {
        Some(text.as_str())
    };
    // A Responses stream ends with its whole response in the `data:` of `response.completed`.
    let last = last.map(|line| line.strip_prefix("data:").unwrap_or(line));
    let answer: Value = last
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let reported = match step.endpoint {
        Endpoint::Responses => {
            let response = answer.get("response").unwrap_or(&answer);
            (
                response["usage"]["input_tokens"].as_u64(),
                response["usage"]["output_tokens"].as_u64(),
            )
        }
        OPENAI => (
            answer["usage"]["prompt_tokens"].as_u64(),
            answer["usage"]["completion_tokens"].as_u64(),
        ),
        OLLAMA => (
            answer["prompt_eval_count"].as_u64(),
            answer["eval_count"].as_u64(),
        ),
    };
    v.eq(
        format!("{}: usage the fake reported to the client", step.tag),
        (Some(record.actual.prompt), Some(record.actual.completion)),
        reported,
    );
}

/// An OpenAI stream carries the usage chunk exactly when the client asked for it, and then it
/// is what the fake billed.
fn check_stream(v: &mut Verdict, step: &Step, reply: &Reply, record: &Record) {
    if !step.streams() || step.endpoint != OPENAI || reply.status != 200 {
        return;
    }
    let usages: Vec<Value> = reply
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter(|chunk| chunk["usage"].is_object())
        .map(|chunk| chunk["usage"].clone())
        .collect();
    let tag = step.tag;
    if !step.wants_usage() {
        v.eq(
            format!("{tag}: usage chunks the client did not ask for"),
            0,
            usages.len(),
        );
        return;
    }
    v.eq(format!("{tag}: usage chunks"), 1, usages.len());
    if let (Some(usage), Outcome::Miss) = (usages.first(), record.outcome) {
        v.eq(
            format!("{tag}: streamed usage"),
            (record.actual.prompt, record.actual.completion),
            (
                usage["prompt_tokens"].as_u64().unwrap_or(0),
                usage["completion_tokens"].as_u64().unwrap_or(0),
            ),
        );
    }
}

/// Hits and compressed requests say what they saved: tokens, and money when the model is priced.
fn check_headers(v: &mut Verdict, step: &Step, reply: &Reply, record: &Record) {
    if !matches!(
        record.outcome,
        Outcome::ExactHit | Outcome::SemanticHit | Outcome::Compressed
    ) {
        return;
    }
    let tag = step.tag;
    if record.outcome == Outcome::Compressed {
        // `before->after`, as OpenAI's tokenizer counts the prompt sent and the prompt forwarded.
        let counts = reply
            .header("x-thrifty-compression")
            .and_then(|h| h.split(';').next())
            .and_then(|h| h.split_once("->"))
            .and_then(|(b, a)| {
                Some((b.trim().parse::<u64>().ok()?, a.trim().parse::<u64>().ok()?))
            });
        v.eq(
            format!("{tag}: prompt tokens x-thrifty-compression says were removed"),
            Some(record.baseline.prompt - record.actual.prompt),
            counts.map(|(before, after)| before.saturating_sub(after)),
        );
    }
    let saved = record.baseline.total() - record.actual.total();
    v.eq(
        format!("{tag}: x-thrifty-tokens-saved"),
        Some(saved.to_string()),
        reply.header("x-thrifty-tokens-saved").map(str::to_owned),
    );
    let cost = record
        .price()
        .map(|p| p.cost(record.baseline) - p.cost(record.actual));
    v.eq(
        format!("{tag}: x-thrifty-cost-saved (pico-units)"),
        cost,
        reply
            .header("x-thrifty-cost-saved")
            .map(|h| super::report::pico(h).unwrap_or(i128::MIN)),
    );
}
