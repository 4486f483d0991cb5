//! The per-input embedding cache: a batch sends only its uncached inputs upstream and answers
//! with every vector in order, exactly as a direct call would.

use rstest::rstest;
use serde_json::{Value, json};

use crate::common::fake_llm::{FakeLlm, decode_base64_embedding};
use crate::{Api, Backend, Dialect, Harness, NO_HEADERS, Reply, WAIT};

const FOX: &str = "the quick brown fox";
const DOG: &str = "jumps over the lazy dog";
const HELLO: &str = "hello";

/// Asks the fake directly, bypassing thrifty.
async fn direct(fake: &FakeLlm, path: &str, body: &Value) -> Reply {
    let reply = Api::new(fake.url(), WAIT).send(path, body).await;
    reply.assert_ok("direct call");
    reply
}

/// The vectors of an embedding answer in input order; base64 ones decoded.
fn vectors(dialect: Dialect, body: &Value) -> Vec<Vec<f64>> {
    let floats = |v: &Value| -> Vec<f64> {
        match v {
            Value::String(b64) => decode_base64_embedding(b64)
                .unwrap_or_else(|| panic!("not base64 floats: {b64}"))
                .into_iter()
                .map(f64::from)
                .collect(),
            other => other
                .as_array()
                .unwrap_or_else(|| panic!("not a vector: {other}"))
                .iter()
                .map(|x| x.as_f64().expect("a float"))
                .collect(),
        }
    };
    match dialect {
        Dialect::OpenAi => {
            let data = body["data"].as_array().expect("data");
            for (i, item) in data.iter().enumerate() {
                assert_eq!(item["index"], i, "data is in input order: {body}");
                assert_eq!(item["object"], "embedding");
            }
            data.iter().map(|d| floats(&d["embedding"])).collect()
        }
        Dialect::Ollama => body["embeddings"]
            .as_array()
            .expect("embeddings")
            .iter()
            .map(floats)
            .collect(),
    }
}

/// The prompt tokens an embedding answer reports.
fn tokens(dialect: Dialect, body: &Value) -> u64 {
    match dialect {
        Dialect::OpenAi => {
            assert_eq!(
                body["usage"]["total_tokens"],
                body["usage"]["prompt_tokens"]
            );
            body["usage"]["prompt_tokens"].as_u64().expect("usage")
        }
        Dialect::Ollama => body["prompt_eval_count"]
            .as_u64()
            .expect("prompt_eval_count"),
    }
}

/// The inputs of the last embedding request the fake received.
fn forwarded(fake: &FakeLlm) -> Value {
    fake.last_request()
        .and_then(|r| r.json())
        .expect("a JSON request")["input"]
        .clone()
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sends_only_its_uncached_inputs_upstream(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let reference = FakeLlm::start().await;
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.embed_path();
    let check = |reply: &Reply, expected: &Reply, what: &str| {
        reply.assert_ok(what);
        assert_eq!(
            vectors(dialect, &reply.json()),
            vectors(dialect, &expected.json()),
            "{what}: the vectors of a direct call, in order"
        );
        assert_eq!(
            tokens(dialect, &reply.json()),
            tokens(dialect, &expected.json()),
            "{what}: the usage of a direct call"
        );
        if dialect == Dialect::OpenAi {
            assert_eq!(reply.json(), expected.json(), "{what}: the whole answer");
        }
    };

    let first = dialect.embed(&[FOX, DOG]);
    let reply = h.api.send(path, &first).await;
    reply.assert_cache("miss", &what);
    check(&reply, &direct(&reference, path, &first).await, &what);
    assert_eq!(forwarded(&h.fake), json!([FOX, DOG]), "{what}");

    let second = dialect.embed(&[FOX, HELLO, DOG]);
    let reply = h.api.send(path, &second).await;
    reply.assert_cache("miss", &format!("{what}: one new input"));
    assert_eq!(reply.header("x-thrifty-cache-hits"), Some("2/3"), "{what}");
    assert_eq!(
        forwarded(&h.fake),
        json!([HELLO]),
        "{what}: only the uncached input goes upstream"
    );
    check(
        &reply,
        &direct(&reference, path, &second).await,
        &format!("{what}: merged"),
    );

    let third = dialect.embed(&[DOG, HELLO, FOX]);
    let reply = h.api.send(path, &third).await;
    reply.assert_cache("hit", &format!("{what}: every input cached"));
    check(
        &reply,
        &direct(&reference, path, &third).await,
        &format!("{what}: all cached"),
    );
    if dialect == Dialect::Ollama {
        // Ollama says how long an answer took; a cached one says how long thrifty did.
        let body = reply.json();
        let total = body["total_duration"].as_u64().unwrap_or_default();
        let load = body["load_duration"].as_u64().unwrap_or_default();
        assert!(
            total > 0 && load > 0 && load <= total,
            "{what}: durations {body}"
        );
    }

    let single = json!({"model": dialect.embed_model(), "input": HELLO});
    let reply = h.api.send(path, &single).await;
    reply.assert_cache("hit", &format!("{what}: a bare string input"));
    check(
        &reply,
        &direct(&reference, path, &single).await,
        &format!("{what}: single"),
    );
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_embeddings_decode_to_the_same_floats(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let reference = FakeLlm::start().await;
    let dialect = Dialect::OpenAi;
    let what = format!("{backend:?}");
    let h = Harness::start(backend).await;
    let path = dialect.embed_path();
    let base64 = |inputs: &[&str]| {
        let mut body = dialect.embed(inputs);
        body["encoding_format"] = json!("base64");
        body
    };
    for (inputs, outcome) in [
        (vec![FOX, DOG], "miss"),
        (vec![FOX, HELLO, DOG], "miss"),
        (vec![HELLO, DOG], "hit"),
    ] {
        let body = base64(&inputs);
        let reply = h.api.send(path, &body).await;
        reply.assert_cache(outcome, &format!("{what}: {inputs:?}"));
        let expected = direct(&reference, path, &body).await;
        for item in reply.json()["data"].as_array().expect("data") {
            assert!(item["embedding"].is_string(), "{what}: base64 stays base64");
        }
        let (got, want) = (
            vectors(dialect, &reply.json()),
            vectors(dialect, &expected.json()),
        );
        assert_eq!(got.len(), inputs.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            let bits = |v: &[f64]| v.iter().map(|x| (*x as f32).to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(g), bits(w), "{what}: bit for bit");
        }
        assert_eq!(
            tokens(dialect, &reply.json()),
            tokens(dialect, &expected.json())
        );
    }
    assert_eq!(forwarded(&h.fake), json!([HELLO]), "{what}");
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_ollama_embeddings_are_cached(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let reference = FakeLlm::start().await;
    let what = format!("{backend:?}");
    let h = Harness::start(backend).await;
    let path = "/api/embeddings";
    let body = json!({"model": "nomic-embed-text", "prompt": FOX});
    let expected = direct(&reference, path, &body).await.json();
    let miss = h.api.send(path, &body).await;
    miss.assert_cache("miss", &what);
    assert_eq!(miss.json(), expected, "{what}");
    let hit = h.api.send(path, &body).await;
    hit.assert_cache("hit", &what);
    assert_eq!(
        hit.json(),
        expected,
        "{what}: the replay is the direct answer"
    );
    assert_eq!(h.fake.calls_to(path), 1, "{what}");

    // The legacy call and /api/embed keep separate entries: their answers differ in shape.
    let batch = Dialect::Ollama.embed(&[FOX]);
    h.api
        .send("/api/embed", &batch)
        .await
        .assert_cache("miss", &what);
}

/// Token-id inputs (what LangChain's `OpenAIEmbeddings` sends by default) are cached per input
/// like texts, keyed on the ids: a flat array and the same ids in a list are one input.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_array_inputs_are_cached_per_input(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let reference = FakeLlm::start().await;
    let dialect = Dialect::OpenAi;
    let what = format!("{backend:?}");
    let h = Harness::start(backend).await;
    let path = dialect.embed_path();
    let body = |input: Value| json!({"model": dialect.embed_model(), "input": input});
    let ask = |input: Value| {
        let (h, body) = (&h, body(input));
        async move { h.api.post(path, &body, &NO_HEADERS).await }
    };
    let expected = |input: Value| {
        let (reference, body) = (&reference, body(input));
        async move { direct(reference, path, &body).await.json() }
    };

    let first = json!([[1, 2, 3], [4, 5]]);
    let reply = ask(first.clone()).await;
    reply.assert_cache("miss", &what);
    assert_eq!(reply.json(), expected(first.clone()).await, "{what}");
    assert_eq!(forwarded(&h.fake), first, "{what}: forwarded as sent");

    let reply = ask(first.clone()).await;
    reply.assert_cache("hit", &format!("{what}: the same ids again"));
    assert_eq!(
        reply.json(),
        expected(first).await,
        "{what}: from the cache"
    );
    assert_eq!(h.fake.calls_to(path), 1, "{what}");

    let partial = json!([[4, 5], [6, 7, 8], [1, 2, 3]]);
    let reply = ask(partial.clone()).await;
    reply.assert_cache("miss", &format!("{what}: one new input"));
    assert_eq!(reply.header("x-thrifty-cache-hits"), Some("2/3"), "{what}");
    assert_eq!(
        forwarded(&h.fake),
        json!([[6, 7, 8]]),
        "{what}: only the uncached ids go upstream"
    );
    assert_eq!(reply.json(), expected(partial).await, "{what}: merged");

    let flat = json!([4, 5]);
    let reply = ask(flat.clone()).await;
    reply.assert_cache("hit", &format!("{what}: a flat array of cached ids"));
    assert_eq!(reply.json(), expected(flat).await, "{what}: flat");
    assert_eq!(h.fake.calls_to(path), 2, "{what}");
    assert_eq!(h.api.stats().await["entries"]["embeddings"], 3, "{what}");
}

/// The per-request controls apply to embeddings as they do to answers: `x-thrifty-cache-ttl`
/// sets how long a vector lives, and `cache-control: max-age` rejects older ones (below).
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_entries_follow_the_ttl_control(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.embed_path();
    let embeddings = || async {
        h.api.stats().await["entries"]["embeddings"]
            .as_u64()
            .expect("stats count embeddings")
    };

    let short = dialect.embed(&["a short lived vector"]);
    h.api
        .post(path, &short, &[("x-thrifty-cache-ttl", "1")])
        .await
        .assert_cache("miss", &what);
    assert_eq!(embeddings().await, 1, "{what}");
    if backend == crate::Backend::Redis {
        let probe = h.probe().await;
        let keys = probe.keys().await;
        assert_eq!(keys.len(), 1, "{what}: {keys:?}");
        let ttl = probe.pttl(&keys[0]).await;
        assert!(
            ttl > 0 && ttl <= 1000,
            "{what}: a one-second TTL, PTTL is {ttl}"
        );
    }
    crate::poll(
        std::time::Duration::from_secs(5),
        &format!("{what}: the vector expires after its one-second TTL"),
        || async { (embeddings().await == 0).then_some(()) },
    )
    .await;
    h.api.send(path, &short).await.assert_cache("miss", &what);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_entries_follow_the_max_age_control(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
    #[values(Dialect::OpenAi, Dialect::Ollama)] dialect: Dialect,
) {
    let what = format!("{backend:?}/{dialect:?}");
    let h = Harness::start(backend).await;
    let path = dialect.embed_path();
    let aging = dialect.embed(&["an aging vector"]);
    h.api.send(path, &aging).await.assert_cache("miss", &what);
    h.api
        .post(path, &aging, &[("cache-control", "max-age=3600")])
        .await
        .assert_cache("hit", &what);
    let calls = h.fake.calls_to(path);
    // Any entry is older than zero seconds once a millisecond has passed.
    crate::poll(
        std::time::Duration::from_secs(2),
        &format!("{what}: max-age=0 rejects the vector"),
        || async {
            let reply = h
                .api
                .post(path, &aging, &[("cache-control", "max-age=0")])
                .await;
            reply.assert_ok(&what);
            (reply.cache() == "miss").then_some(())
        },
    )
    .await;
    assert_eq!(h.fake.calls_to(path), calls + 1, "{what}");
}

/// A batch of thousands of new inputs is cached whole under the default 100 ms store timeout:
/// its entries are read and written with multi-key commands, not one call per input.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_cached_whole_under_the_default_store_timeout(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    const INPUTS: usize = 2_000;
    let what = format!("{backend:?}");
    let h = Harness::setup(backend)
        .config(|raw| raw.store.timeout = std::time::Duration::from_millis(100))
        .start()
        .await;
    let dialect = Dialect::OpenAi;
    let path = dialect.embed_path();
    let texts: Vec<String> = (0..INPUTS)
        .map(|i| format!("batch input number {i} about topic {}", i * 7919 % 1013))
        .collect();
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let body = dialect.embed(&inputs);

    let first = h.api.send(path, &body).await;
    first.assert_cache("miss", &what);
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: the first call goes upstream"
    );

    let second = h.api.send(path, &body).await;
    second.assert_cache("hit", &format!("{what}: every input was cached"));
    assert_eq!(
        h.fake.calls_to(path),
        1,
        "{what}: the second call never reaches the upstream"
    );
    assert_eq!(
        vectors(dialect, &second.json()),
        vectors(dialect, &first.json()),
        "{what}: the cached vectors are the upstream's, in order"
    );
    let stats = h.api.stats().await;
    assert_eq!(
        stats["store_errors"], 0,
        "{what}: no store call failed: {stats}"
    );
}
