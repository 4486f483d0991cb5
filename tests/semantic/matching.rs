//! What matches: a paraphrase of a cached question in the same context is answered without the
//! upstream; unrelated questions, near-misses, other conversations, other system prompts, other
//! tenants and namespaces, other speakers, tool results and images are not; the per-request
//! controls only ever narrow it.

use rstest::rstest;
use serde_json::{Value, json};

use crate::world::{Headers, headers};
use crate::{
    Backend, Dialect, NO_HEADERS, PARAPHRASE, QUESTION, Reply, SYSTEM, Turn, World, bearer, echo,
};

/// Sends `body` and checks that it went upstream as a miss; returns the reply.
pub async fn assert_upstream(
    w: &World,
    dialect: Dialect,
    body: &Value,
    headers: &[(String, String)],
    what: &str,
) -> Reply {
    let path = dialect.chat_path();
    let calls = w.fake.calls_to(path);
    let reply = w.api.ask(dialect, body, headers).await;
    reply.assert_cache("miss", what);
    assert_eq!(
        w.fake.calls_to(path),
        calls + 1,
        "{what}: the upstream answered"
    );
    let asked = w.fake.last_request().expect("the fake saw the request");
    let last = asked.json().expect("a JSON request")["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("messages");
    assert_eq!(
        Some(&last),
        body["messages"].as_array().and_then(|m| m.last()),
        "{what}: the upstream got this request"
    );
    reply
}

/// Sends `body` and checks that it is a semantic hit on the answer to `cached`, not upstream.
pub async fn assert_semantic_hit(
    w: &World,
    dialect: Dialect,
    body: &Value,
    headers: &[(String, String)],
    cached: &str,
    what: &str,
) -> f32 {
    let path = dialect.chat_path();
    let calls = w.fake.calls_to(path);
    let reply = w.api.ask(dialect, body, headers).await;
    reply.assert_cache("semantic-hit", what);
    let similarity = reply.similarity();
    assert!(
        similarity >= w.threshold() && similarity <= 1.0001,
        "{what}: similarity {similarity} is not between the threshold {} and 1",
        w.threshold()
    );
    assert_eq!(
        dialect.text(&reply),
        echo(cached),
        "{what}: the cached answer"
    );
    assert_eq!(
        w.fake.calls_to(path),
        calls,
        "{what}: a semantic hit never goes upstream"
    );
    similarity
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paraphrase_is_answered_from_the_cache_in_json_and_streams(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let w = World::start(backend).await;
    let miss = w
        .api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    assert_eq!(dialect.text(&miss), echo(QUESTION), "{what}");
    let calls = w.fake.calls_to(dialect.chat_path());

    for stream in [false, true] {
        let what = format!("{what} stream={stream}");
        let body = dialect.chat(PARAPHRASE, stream);
        let hit = w.api.ask(dialect, &body, &NO_HEADERS).await;
        hit.assert_cache("semantic-hit", &what);
        let similarity = hit.similarity();
        assert!(
            similarity >= w.threshold() && similarity <= 1.0001,
            "{what}: similarity {similarity} below the threshold {}",
            w.threshold()
        );
        assert_eq!(hit.is_stream(), stream, "{what}: {}", hit.describe());
        if stream {
            dialect.assert_stream_ends(&hit, &what);
        }
        assert_eq!(
            dialect.text(&hit),
            echo(QUESTION),
            "{what}: the first answer"
        );
    }
    assert_eq!(
        w.fake.calls_to(dialect.chat_path()),
        calls,
        "{what}: the paraphrases never went upstream"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_question_goes_upstream(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Embedded).await;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    let unrelated = [
        ("What is the boiling point of water at sea level?", false),
        ("Write a limerick about a cat", true),
    ];
    for (text, stream) in unrelated {
        let body = dialect.chat(text, stream);
        let reply = assert_upstream(&w, dialect, &body, &[], &what).await;
        assert_eq!(dialect.text(&reply), echo(text), "{what}: its own answer");
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_misses_go_upstream(#[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect) {
    // Cosine similarity with this model: 0.957, 0.948 and 0.839; the first two are above the
    // threshold and must be stopped by the guard.
    let pairs = [
        ("turn dark mode on", "turn dark mode off"),
        ("give me 3 ideas for dinner", "give me 5 ideas for dinner"),
        ("say good morning in Spanish", "say good morning in French"),
    ];
    let w = World::start(Backend::Embedded).await;
    for (cached, asked) in pairs {
        let what = format!("{dialect:?}: {asked:?} after {cached:?}");
        w.api
            .fill(dialect, &dialect.chat(cached, false), &NO_HEADERS)
            .await;
        let body = dialect.chat(asked, false);
        let reply = assert_upstream(&w, dialect, &body, &[], &what).await;
        assert_eq!(dialect.text(&reply), echo(asked), "{what}: its own answer");
    }
}

/// A first question, its answer and a follow-up, under the [`SYSTEM`] prompt.
fn conversation<'a>(about: &'a str, answer: &'a str, follow_up: &'a str) -> [Turn<'a>; 4] {
    [
        Turn::System(SYSTEM),
        Turn::User(about),
        Turn::Assistant(answer),
        Turn::User(follow_up),
    ]
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_matches_only_within_its_own_conversation(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Embedded).await;
    let paris = conversation(
        "Tell me about Paris",
        "Paris is the capital of France.",
        "and in French?",
    );
    w.api
        .fill(dialect, &dialect.conversation(&paris, false), &NO_HEADERS)
        .await;

    let rome = conversation(
        "Tell me about Rome",
        "Rome is the capital of Italy.",
        "and in French?",
    );
    assert_upstream(
        &w,
        dialect,
        &dialect.conversation(&rome, false),
        &[],
        &format!("{what}: the same follow-up in another conversation"),
    )
    .await;

    let paraphrased = conversation(
        "Tell me about Paris",
        "Paris is the capital of France.",
        // Cosine 0.946 with "and in French?".
        "and in French too?",
    );
    assert_semantic_hit(
        &w,
        dialect,
        &dialect.conversation(&paraphrased, false),
        &[],
        "and in French?",
        &format!("{what}: a paraphrased follow-up in the same conversation"),
    )
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_system_prompt_never_matches(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Embedded).await;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    let pirate = dialect.conversation(
        &[
            Turn::System("Answer like a pirate."),
            Turn::User(PARAPHRASE),
        ],
        false,
    );
    assert_upstream(
        &w,
        dialect,
        &pirate,
        &[],
        &format!("{what}: another system prompt"),
    )
    .await;
    let none = dialect.conversation(&[Turn::User(PARAPHRASE)], false);
    assert_upstream(
        &w,
        dialect,
        &none,
        &[],
        &format!("{what}: no system prompt"),
    )
    .await;
    assert_semantic_hit(
        &w,
        dialect,
        &dialect.chat(PARAPHRASE, false),
        &[],
        QUESTION,
        &format!("{what}: the same system prompt"),
    )
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_get_each_others_semantic_hits(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let w = World::start(backend).await;
    let one = headers(&[bearer("sk-tenant-one")]);
    let two = headers(&[bearer("sk-tenant-two")]);
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &one)
        .await;

    let paraphrase = dialect.chat(PARAPHRASE, false);
    assert_upstream(
        &w,
        dialect,
        &paraphrase,
        &two,
        &format!("{what}: another tenant"),
    )
    .await;
    assert_upstream(
        &w,
        dialect,
        &paraphrase,
        &[],
        &format!("{what}: no token is a tenant too"),
    )
    .await;
    let mut other_namespace = one.clone();
    other_namespace.push(("x-thrifty-cache-namespace".to_owned(), "team-b".to_owned()));
    assert_upstream(
        &w,
        dialect,
        &paraphrase,
        &other_namespace,
        &format!("{what}: the same tenant in another namespace"),
    )
    .await;
    assert_semantic_hit(
        &w,
        dialect,
        &paraphrase,
        &one,
        QUESTION,
        &format!("{what}: the tenant that asked first"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speakers_name_must_match_too() {
    // OpenAI's `name` tells the model who is speaking; Ollama's messages have no such field.
    let dialect = Dialect::OpenAi;
    let w = World::start(Backend::Embedded).await;
    let asking = |name: &str, text: &str| {
        dialect.request(
            vec![
                json!({"role": "system", "content": SYSTEM}),
                json!({"role": "user", "name": name, "content": text}),
            ],
            false,
        )
    };
    w.api
        .fill(dialect, &asking("alice", QUESTION), &NO_HEADERS)
        .await;
    assert_upstream(
        &w,
        dialect,
        &asking("bob", PARAPHRASE),
        &[],
        "another speaker asks the paraphrase",
    )
    .await;
    assert_semantic_hit(
        &w,
        dialect,
        &asking("alice", PARAPHRASE),
        &[],
        QUESTION,
        "the same speaker asks the paraphrase",
    )
    .await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_and_images_skip_the_semantic_stage(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    // Two different images (base64 of "a red square" and "a blue circle"; nobody decodes them).
    const IMAGE_A: &str = "YSByZWQgc3F1YXJl";
    const IMAGE_B: &str = "YSBibHVlIGNpcmNsZQ==";
    let w = World::start(Backend::Embedded).await;
    let system = json!({"role": "system", "content": SYSTEM});
    let question = json!({"role": "user", "content": "What's the weather in Paris?"});
    let tool = |result: &str| {
        let mut messages = vec![system.clone(), question.clone()];
        messages.extend(dialect.tool_exchange(result));
        dialect.request(messages, false)
    };
    let image = |text: Option<&str>, image: &str| {
        dialect.request(
            vec![system.clone(), dialect.image_message(text, image)],
            false,
        )
    };
    // Each second request reads like the first; only skipping the stage keeps the first's
    // answer from it.
    let cases = [
        (
            "a tool result",
            tool("It is 22 degrees and sunny in Paris."),
            tool("It's 22 degrees and sunny in Paris"),
        ),
        ("an image alone", image(None, IMAGE_A), image(None, IMAGE_B)),
        (
            "text with an image",
            image(Some("What is in this picture?"), IMAGE_A),
            image(Some("What's in this picture?"), IMAGE_B),
        ),
    ];
    for (name, cached, asked) in &cases {
        let what = format!("{dialect:?}: {name}");
        w.api.fill_exact(dialect, cached).await;
        assert_upstream(&w, dialect, asked, &[], &what).await;
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_turn_the_stage_off_or_raise_the_threshold(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start(Backend::Embedded).await;
    assert!(w.threshold() < 0.95, "{what}: the default threshold");
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;

    // Cosine 0.980: above the configured threshold, below the requested one.
    assert_upstream(
        &w,
        dialect,
        &dialect.chat(PARAPHRASE, false),
        &header("x-thrifty-semantic-threshold", "0.999"),
        &format!("{what}: x-thrifty-semantic-threshold 0.999"),
    )
    .await;
    // Cosine 0.967.
    assert_upstream(
        &w,
        dialect,
        &dialect.chat("how could I reset my password", false),
        &header("x-thrifty-semantic", "off"),
        &format!("{what}: x-thrifty-semantic off"),
    )
    .await;
    // Cosine 0.988: a raised threshold it still clears.
    let similarity = assert_semantic_hit(
        &w,
        dialect,
        &dialect.chat("How do I reset my password", false),
        &header("x-thrifty-semantic-threshold", "0.95"),
        QUESTION,
        &format!("{what}: x-thrifty-semantic-threshold 0.95"),
    )
    .await;
    assert!(similarity >= 0.95, "{what}: similarity {similarity}");

    for bad in ["1.5", "high"] {
        let reply = w
            .api
            .ask(
                dialect,
                &dialect.chat(PARAPHRASE, false),
                &header("x-thrifty-semantic-threshold", bad),
            )
            .await;
        assert_eq!(
            reply.status,
            reqwest::StatusCode::BAD_REQUEST,
            "{what}: threshold {bad:?}: {}",
            reply.describe()
        );
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_header_never_lowers_the_configured_threshold(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}");
    let w = World::start_with(Backend::Embedded, |raw| raw.semantic.threshold = 0.985).await;
    w.api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    // Cosine 0.980: it would clear the requested 0.9, not the configured 0.985.
    assert_upstream(
        &w,
        dialect,
        &dialect.chat(PARAPHRASE, false),
        &header("x-thrifty-semantic-threshold", "0.9"),
        &format!("{what}: a threshold header below the configured one"),
    )
    .await;
    // Cosine 0.988 clears the configured threshold whatever the header says.
    let similarity = assert_semantic_hit(
        &w,
        dialect,
        &dialect.chat("How do I reset my password", false),
        &header("x-thrifty-semantic-threshold", "0.5"),
        QUESTION,
        &format!("{what}: above the configured threshold"),
    )
    .await;
    assert!(similarity >= 0.985, "{what}: similarity {similarity}");
}

/// One request header.
fn header(name: &str, value: &str) -> Headers {
    vec![(name.to_owned(), value.to_owned())]
}

/// The recorded answer's billed tokens, from its usage in either dialect.
fn billed_total(dialect: Dialect, answer: &Value) -> u64 {
    match dialect {
        Dialect::OpenAi => answer["usage"]["total_tokens"].as_u64(),
        Dialect::Ollama => Some(
            answer["prompt_eval_count"].as_u64().unwrap_or(0)
                + answer["eval_count"].as_u64().unwrap_or(0),
        ),
    }
    .expect("the fill reports usage")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semantic_hit_saves_the_recorded_answer_resized_to_the_paraphrase(
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{dialect:?}: tokens saved by a semantic hit");
    let w = World::start(Backend::Embedded).await;
    let fill = w
        .api
        .fill(dialect, &dialect.chat(QUESTION, false), &NO_HEADERS)
        .await;
    let recorded = billed_total(dialect, &fill.json());
    let reply = w
        .api
        .ask(dialect, &dialect.chat(PARAPHRASE, false), &NO_HEADERS)
        .await;
    reply.assert_cache("semantic-hit", &what);
    // gpt-4o-mini counts in o200k_base; other models in cl100k_base, as thrifty says.
    let bpe = match dialect {
        Dialect::OpenAi => tiktoken_rs::o200k_base_singleton(),
        Dialect::Ollama => tiktoken_rs::cl100k_base_singleton(),
    };
    let tokens = |text: &str| bpe.encode_ordinary(text).len() as i64;
    let difference = tokens(PARAPHRASE) - tokens(QUESTION);
    assert_ne!(difference, 0, "{what}: the pair differs in size");
    let expected = (recorded as i64 + difference).to_string();
    assert_eq!(
        reply.header("x-thrifty-tokens-saved"),
        Some(expected.as_str()),
        "{what}: recorded {recorded}, paraphrase differs by {difference}"
    );
}
