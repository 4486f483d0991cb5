//! The traffic that seeds the ledger, and the figures it must produce.
//!
//! The figures are computed here from what the test sent and from the fake upstream's
//! documented billing (prompt: the words of each message plus 3 per message; completion: the
//! words of `"Echo: " + the last user text`), priced with the test's own price table. Nothing
//! is read back from thrifty's reports; thrifty's answers only say which calls were hits, and
//! the fake's call counter confirms it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thrifty::config::{RawConfig, RawKey};

use crate::common::dialect::Dialect;
use crate::common::fake_llm::FakeLlm;

/// The model the price table prices: one cent a prompt token, two cents a completion token.
pub const PRICED_MODEL: &str = "dash-gpt";
/// A model the price table leaves out, so its requests are unpriced.
pub const UNPRICED_MODEL: &str = "dash-llama";
const PROMPT_CENTS: i128 = 1;
const COMPLETION_CENTS: i128 = 2;
/// The price table's only version.
pub const PRICE_EFFECTIVE: &str = "2024-01-01";

/// One of thrifty's client keys, with the team reports group it under.
pub struct Key {
    pub name: &'static str,
    pub team: &'static str,
    secret: &'static str,
}

pub const ALICE: Key = Key {
    name: "alice",
    team: "research",
    secret: "sk-thrifty-alice",
};

pub const BOB: Key = Key {
    name: "bob",
    team: "support",
    secret: "sk-thrifty-bob",
};

/// One request as sent, what the fake billed for it, and whether the cache answered it.
#[derive(Clone, Debug)]
pub struct Call {
    pub key: &'static str,
    pub team: &'static str,
    pub model: &'static str,
    pub prompt: i128,
    pub completion: i128,
    pub hit: bool,
}

impl Call {
    fn priced(&self) -> bool {
        self.model == PRICED_MODEL
    }

    /// What the request would have cost without thrifty, in cents (0 when unpriced).
    fn baseline_cents(&self) -> i128 {
        if self.priced() {
            self.prompt * PROMPT_CENTS + self.completion * COMPLETION_CENTS
        } else {
            0
        }
    }
}

/// Sums over a group of calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub requests: i128,
    pub hits: i128,
    pub priced: i128,
    pub baseline_tokens: i128,
    pub saved_tokens: i128,
    pub baseline_cents: i128,
    pub actual_cents: i128,
}

impl Figures {
    pub fn of<'a>(calls: impl IntoIterator<Item = &'a Call>) -> Figures {
        let mut f = Figures::default();
        for call in calls {
            let tokens = call.prompt + call.completion;
            f.requests += 1;
            f.priced += i128::from(call.priced());
            f.baseline_tokens += tokens;
            f.baseline_cents += call.baseline_cents();
            if call.hit {
                f.hits += 1;
                f.saved_tokens += tokens;
            } else {
                f.actual_cents += call.baseline_cents();
            }
        }
        f
    }

    pub fn misses(&self) -> i128 {
        self.requests - self.hits
    }

    /// Net saved in cents; thrifty spent nothing (no summaries, no paid embeddings).
    pub fn net_cents(&self) -> i128 {
        self.baseline_cents - self.actual_cents
    }
}

/// A config with the two keys and the test's price table, written in `fake`'s scratch space.
pub fn configure(raw: &mut RawConfig, fake: &FakeLlm) {
    raw.keys = [ALICE, BOB]
        .iter()
        .map(|k| RawKey {
            name: k.name.to_owned(),
            team: Some(k.team.to_owned()),
            sha256: hex::encode(Sha256::digest(k.secret.as_bytes())),
            rate_limit: None,
        })
        .collect();
    let dir = fake.scratch_dir("prices");
    let table = format!(
        "[[price]]\nmodel = \"{PRICED_MODEL}\"\ninput = {}\noutput = {}\ncurrency = \"USD\"\n\
         effective = \"{PRICE_EFFECTIVE}\"\nsource = \"the dashboard test\"\n",
        PROMPT_CENTS * 10_000,
        COMPLETION_CENTS * 10_000,
    );
    std::fs::write(dir.join("pricing.toml"), table).expect("write the price table");
    raw.savings.pricing = Some(dir.join("pricing.toml"));
}

/// Sends the scripted mix through thrifty and returns every call made.
pub async fn seed(thrifty: &str, fake: &FakeLlm) -> Vec<Call> {
    let script = [
        (
            &ALICE,
            Dialect::OpenAi,
            PRICED_MODEL,
            "How much did the alpha project spend on tokens last week?",
            2,
        ),
        (
            &BOB,
            Dialect::OpenAi,
            PRICED_MODEL,
            "Summarise the beta invoice",
            1,
        ),
        (
            &BOB,
            Dialect::Ollama,
            UNPRICED_MODEL,
            "Tell me about gamma rays in plain words",
            1,
        ),
    ];
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for (key, wire, model, text, hits) in script {
        let mut seen_hits = 0;
        // The answer is stored just after its body ends, so a repeat may still miss: every
        // call counts, as what it was.
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen_hits < hits {
            assert!(Instant::now() < deadline, "no cache hit for {text:?}");
            let call = send(&client, thrifty, key, wire, model, text).await;
            seen_hits += usize::from(call.hit);
            calls.push(call);
        }
    }
    let misses = calls.iter().filter(|c| !c.hit).count();
    assert_eq!(fake.calls(), misses, "only misses reach the upstream");
    calls
}

async fn send(
    client: &reqwest::Client,
    thrifty: &str,
    key: &Key,
    wire: Dialect,
    model: &'static str,
    text: &str,
) -> Call {
    let messages = json!([{"role": "user", "content": text}]);
    let body = match wire {
        Dialect::OpenAi => json!({"model": model, "messages": messages}),
        Dialect::Ollama => json!({"model": model, "messages": messages, "stream": false}),
    };
    let path = wire.chat_path();
    let response = client
        .post(format!("{thrifty}{path}"))
        .bearer_auth(key.secret)
        .json(&body)
        .send()
        .await
        .expect("thrifty answers");
    assert_eq!(response.status(), 200, "{path} {model}");
    let cache = response
        .headers()
        .get("x-thrifty-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cache == "hit" || cache == "miss",
        "x-thrifty-cache: {cache:?}"
    );
    let answer: Value = response.json().await.expect("a JSON answer");
    let words = |t: &str| t.split_whitespace().count() as i128;
    let call = Call {
        key: key.name,
        team: key.team,
        model,
        prompt: words(text) + 3,
        completion: words(&format!("Echo: {text}")),
        hit: cache == "hit",
    };
    let billed = match wire {
        Dialect::OpenAi => (
            &answer["usage"]["prompt_tokens"],
            &answer["usage"]["completion_tokens"],
        ),
        Dialect::Ollama => (&answer["prompt_eval_count"], &answer["eval_count"]),
    };
    assert_eq!(
        (billed.0.as_i64(), billed.1.as_i64()),
        (
            i64::try_from(call.prompt).ok(),
            i64::try_from(call.completion).ok()
        ),
        "the fake billed what its documentation says: {answer}"
    );
    call
}
